//! Assembling a .torrent from a file layout and its piece hashes (the pure half of `create`).

use std::collections::BTreeMap;

use super::{FileLayout, Metainfo, MetainfoError, Version};
use crate::bencode::Bencode;
use crate::hash;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("expected {expected} {kind} piece hashes, got {got}")]
    HashCount {
        kind: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("the built torrent does not parse back: {0}")]
    Invalid(#[from] MetainfoError),
}

/// Everything a .torrent says besides its piece hashes.
///
/// `layout` lists files in torrent order; for multi-file torrents each path starts with `name`,
/// and hybrid layouts carry their pad entries. Pure v2 layouts carry the virtual alignment pads.
#[derive(Debug, Clone)]
pub struct TorrentBuilder {
    pub name: String,
    pub version: Version,
    pub layout: FileLayout,
    /// True for a torrent of a directory, even one holding a single file.
    pub multi_file: bool,
    pub private: bool,
    pub trackers: Vec<Vec<String>>,
    pub web_seeds: Vec<String>,
    pub comment: Option<String>,
    pub created_by: Option<String>,
    pub creation_date: Option<i64>,
}

impl TorrentBuilder {
    /// Encodes the torrent. `v1` holds one SHA-1 per piece (v1 and hybrid); `v2` one BEP 52 piece
    /// hash per piece (v2 and hybrid; see [`hash::v2_piece_hash`]). Returns the bytes and the
    /// parsed result, so the caller learns the info-hash from the same parser everyone else uses.
    pub fn build(
        &self,
        v1: &[[u8; 20]],
        v2: &[[u8; 32]],
    ) -> Result<(Vec<u8>, Metainfo), BuildError> {
        let n = self.layout.num_pieces as usize;
        let check = |kind, got: usize, wanted: bool| {
            if wanted && got != n {
                Err(BuildError::HashCount {
                    kind,
                    expected: n,
                    got,
                })
            } else {
                Ok(())
            }
        };
        check("v1", v1.len(), self.version.has_v1())?;
        check("v2", v2.len(), self.version.has_v2())?;

        let pl = self.layout.piece_length;
        let mut info = Bencode::dict();
        info.insert("name", Bencode::bytes(&self.name));
        info.insert("piece length", Bencode::Int(pl as i64));
        if self.private {
            info.insert("private", Bencode::Int(1));
        }
        let strip = usize::from(self.multi_file);
        let mut piece_layers = BTreeMap::new();

        if self.version.has_v2() {
            let mut tree = Bencode::dict();
            for (_, f) in self.layout.data_files() {
                let mut attrs = Bencode::dict();
                attrs.insert("length", Bencode::Int(f.length as i64));
                if f.executable {
                    attrs.insert("attr", Bencode::bytes("x"));
                }
                if f.length > 0 {
                    let first = (f.offset / pl) as usize;
                    let count = f.length.div_ceil(pl) as usize;
                    let hashes = &v2[first..first + count];
                    let root = if f.length <= pl {
                        hashes[0]
                    } else {
                        let root = hash::root_from_piece_layer(hashes, pl);
                        piece_layers.insert(root.to_vec(), Bencode::Bytes(hashes.concat()));
                        root
                    };
                    attrs.insert("pieces root", Bencode::bytes(root));
                }
                let mut leaf = Bencode::dict();
                leaf.insert("", attrs);
                insert_path(&mut tree, &f.path[strip..], leaf);
            }
            info.insert("file tree", tree);
            info.insert("meta version", Bencode::Int(2));
        }

        if self.version.has_v1() {
            if self.multi_file {
                let files = self
                    .layout
                    .files
                    .iter()
                    .map(|f| {
                        let mut e = Bencode::dict();
                        e.insert("length", Bencode::Int(f.length as i64));
                        e.insert(
                            "path",
                            Bencode::List(f.path[1..].iter().map(Bencode::bytes).collect()),
                        );
                        match (f.pad, f.executable) {
                            (true, _) => e.insert("attr", Bencode::bytes("p")),
                            (false, true) => e.insert("attr", Bencode::bytes("x")),
                            _ => {}
                        }
                        e
                    })
                    .collect();
                info.insert("files", Bencode::List(files));
            } else {
                info.insert("length", Bencode::Int(self.layout.total_length as i64));
            }
            info.insert("pieces", Bencode::Bytes(v1.concat()));
        }

        let mut root = Bencode::dict();
        if let Some(first) = self.trackers.iter().flatten().next() {
            root.insert("announce", Bencode::bytes(first));
            if self.trackers.iter().flatten().count() > 1 {
                let tiers = self
                    .trackers
                    .iter()
                    .filter(|t| !t.is_empty())
                    .map(|t| Bencode::List(t.iter().map(Bencode::bytes).collect()))
                    .collect();
                root.insert("announce-list", Bencode::List(tiers));
            }
        }
        if let Some(c) = &self.comment {
            root.insert("comment", Bencode::bytes(c));
        }
        if let Some(c) = &self.created_by {
            root.insert("created by", Bencode::bytes(c));
        }
        if let Some(d) = self.creation_date {
            root.insert("creation date", Bencode::Int(d));
        }
        root.insert("info", info);
        if !piece_layers.is_empty() {
            root.insert("piece layers", Bencode::Dict(piece_layers));
        }
        match self.web_seeds.as_slice() {
            [] => {}
            [one] => root.insert("url-list", Bencode::bytes(one)),
            many => root.insert(
                "url-list",
                Bencode::List(many.iter().map(Bencode::bytes).collect()),
            ),
        }
        let bytes = root.encode();
        let parsed = Metainfo::from_bytes(&bytes)?;
        Ok((bytes, parsed))
    }
}

fn insert_path(tree: &mut Bencode, path: &[String], leaf: Bencode) {
    let Bencode::Dict(d) = tree else { return };
    match path {
        [] => {}
        [last] => {
            d.insert(last.as_bytes().to_vec(), leaf);
        }
        [dir, rest @ ..] => {
            let sub = d
                .entry(dir.as_bytes().to_vec())
                .or_insert_with(Bencode::dict);
            insert_path(sub, rest, leaf);
        }
    }
}

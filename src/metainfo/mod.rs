//! .torrent files (BEP 3 v1, BEP 52 v2 and hybrid), magnet links and the file layout.
//!
//! Parsing is pure and bounded: it takes bytes, returns a [`Metainfo`] or an error that names the
//! field and what was wrong with it. Every path is validated ([`path`]), every length and count
//! is checked before use, and the info-hash is taken over the raw bytes of the `info` dictionary.

mod build;
pub mod content_layout;
pub mod layout;
pub mod magnet;
pub mod path;
pub mod summary;

use std::collections::{HashMap, HashSet};

use crate::bencode::{self, DecodeError, Kind, Value};
use crate::hash;

pub use build::{BuildError, TorrentBuilder};
pub use content_layout::ContentLayout;
pub use layout::{FileEntry, FileLayout, FileSpan};
pub use magnet::Magnet;

/// Largest .torrent file accepted: 32 MiB. libtorrent loads .torrent files of at most 10 MB
/// (`max_buffer_size`) and takes info dictionaries of at most 30 MiB from peers
/// (`max_metadata_size`, the bound of [`crate::magnet_fetch`] too); this covers both with room
/// for piece layers and trackers. A torrent is read whole into memory, so this is also the most
/// its bytes cost.
pub const MAX_TORRENT_BYTES: usize = 32 << 20;

/// Most tracker URLs kept from one torrent (over all tiers), and most web seeds: the first
/// 1000 of each, the rest dropped. Real torrents list a few, spam-laden ones a few hundred; no
/// client announces to more. Without a bound, each 5-byte `l1:xe` tier of an `announce-list`
/// would become some 80 bytes of tier and `String`, held as long as the torrent.
pub const MAX_URLS: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetainfoError {
    #[error(transparent)]
    Bencode(#[from] DecodeError),
    #[error("torrent data is {0} bytes, more than the {MAX_TORRENT_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("missing required field `{0}`")]
    Missing(String),
    #[error("field `{field}` should be {expected}, found {found}")]
    WrongType {
        field: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("field `{field}`: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("unsafe path {path:?}: {reason}")]
    UnsafePath { path: String, reason: &'static str },
}

/// Why a .torrent file could not be loaded ([`Metainfo::load`]).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading {}", path.display())]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {len} bytes is too large for a .torrent", path.display())]
    TooLarge { path: std::path::PathBuf, len: u64 },
    #[error("{}: not a valid torrent", path.display())]
    Invalid {
        path: std::path::PathBuf,
        #[source]
        source: MetainfoError,
    },
}

/// Which BitTorrent protocol versions a torrent speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Version {
    V1,
    V2,
    Hybrid,
}

impl Version {
    pub fn has_v1(self) -> bool {
        self != Version::V2
    }
    pub fn has_v2(self) -> bool {
        self != Version::V1
    }
}

/// The info-hashes of a torrent: SHA-1 of the info dictionary (v1), SHA-256 of it (v2), or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InfoHash {
    pub v1: Option<[u8; 20]>,
    pub v2: Option<[u8; 32]>,
}

impl InfoHash {
    /// The 20 bytes that identify the torrent in handshakes and tracker requests: the v1 hash, or
    /// the v2 hash truncated (BEP 52).
    pub fn wire_id(&self) -> [u8; 20] {
        match (self.v1, self.v2) {
            (Some(v1), _) => v1,
            (None, Some(v2)) => v2[..20].try_into().unwrap_or([0; 20]),
            (None, None) => [0; 20],
        }
    }
}

/// The `info` dictionary: everything the info-hash covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// The exact bytes of the info dictionary (served to peers by BEP 9).
    pub raw: Vec<u8>,
    pub hash: InfoHash,
    pub name: String,
    pub version: Version,
    pub private: bool,
    pub layout: FileLayout,
    /// v1 piece hashes (empty for pure v2 torrents).
    pub pieces: Vec<[u8; 20]>,
    /// BEP 52 piece layers by `pieces root`, for files longer than one piece. They live outside
    /// the info dictionary, so a torrent from a magnet link starts without them.
    pub piece_layers: HashMap<[u8; 32], Vec<[u8; 32]>>,
}

/// A parsed .torrent file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metainfo {
    pub info: Info,
    /// Tracker tiers (BEP 12); a lone `announce` becomes one tier.
    pub trackers: Vec<Vec<String>>,
    /// Web seeds (BEP 19).
    pub url_list: Vec<String>,
    pub comment: Option<String>,
    pub created_by: Option<String>,
    pub creation_date: Option<i64>,
}

impl Metainfo {
    /// Reads and parses a .torrent file, refusing one over [`MAX_TORRENT_BYTES`] before
    /// reading it.
    pub fn load(path: &std::path::Path) -> Result<Self, LoadError> {
        let read = |source| LoadError::Read {
            path: path.to_path_buf(),
            source,
        };
        let len = std::fs::metadata(path).map_err(read)?.len();
        if len > MAX_TORRENT_BYTES as u64 {
            return Err(LoadError::TooLarge {
                path: path.to_path_buf(),
                len,
            });
        }
        let bytes = std::fs::read(path).map_err(read)?;
        Metainfo::from_bytes(&bytes).map_err(|source| LoadError::Invalid {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Parses a .torrent file.
    pub fn from_bytes(data: &[u8]) -> Result<Self, MetainfoError> {
        if data.len() > MAX_TORRENT_BYTES {
            return Err(MetainfoError::TooLarge(data.len()));
        }
        let root = bencode::decode_with(data, bencode::Limits::TORRENT)?;
        expect_dict(&root, "torrent")?;
        let info_v = required(&root, "info")?;
        let mut info = Info::from_value(info_v, &data[info_v.span.clone()])?;
        if info.version.has_v2() {
            info.piece_layers = parse_piece_layers(&root, &info.layout)?;
        }
        let trackers = parse_trackers(&root)?;
        let url_list = match root.get(b"url-list") {
            None => Vec::new(),
            Some(v) => match &v.kind {
                Kind::Bytes(b) => non_empty_string(b).into_iter().collect(),
                Kind::List(l) => {
                    let mut kept = Vec::new();
                    for u in l.iter() {
                        let b = bytes_of(u, "url-list[]")?;
                        if kept.len() < MAX_URLS
                            && let Some(url) = non_empty_string(b)
                        {
                            kept.push(url);
                        }
                    }
                    kept
                }
                _ => return Err(wrong(v, "url-list", "a string or a list of strings")),
            },
        };
        Ok(Metainfo {
            info,
            trackers,
            url_list,
            comment: optional_string(&root, "comment")?,
            created_by: optional_string(&root, "created by")?,
            creation_date: optional_int(&root, "creation date")?,
        })
    }
}

impl Info {
    /// Parses a bare info dictionary (`raw` must be its exact bytes), as received by BEP 9.
    pub fn from_bytes(raw: &[u8]) -> Result<Self, MetainfoError> {
        if raw.len() > MAX_TORRENT_BYTES {
            return Err(MetainfoError::TooLarge(raw.len()));
        }
        let v = bencode::decode_with(raw, bencode::Limits::TORRENT)?;
        Info::from_value(&v, raw)
    }

    fn from_value(v: &Value<'_>, raw: &[u8]) -> Result<Self, MetainfoError> {
        expect_dict(v, "info")?;
        let meta_version = optional_int(v, "meta version")?;
        let has_v2 = match meta_version {
            None | Some(1) => false,
            Some(2) => true,
            Some(other) => {
                return Err(MetainfoError::Invalid {
                    field: "meta version",
                    reason: format!("version {other} is not supported (1 or 2)"),
                });
            }
        };
        let has_v1 = v.get(b"pieces").is_some() || !has_v2;
        let version = match (has_v1, has_v2) {
            (true, true) => Version::Hybrid,
            (false, true) => Version::V2,
            _ => Version::V1,
        };
        let name_raw = match v.get(b"name.utf-8") {
            Some(n) => bytes_of(n, "name.utf-8")?,
            None => bytes_of(required(v, "name")?, "name")?,
        };
        let name = path::component(name_raw)?;
        let piece_length = int_of(required(v, "piece length")?, "piece length")?;
        let piece_length = u64::try_from(piece_length)
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| MetainfoError::Invalid {
                field: "piece length",
                reason: format!("{piece_length} is not positive"),
            })?;
        if has_v2 && (!piece_length.is_power_of_two() || piece_length < hash::BLOCK_SIZE as u64) {
            return Err(MetainfoError::Invalid {
                field: "piece length",
                reason: format!("{piece_length} must be a power of two of at least 16 KiB for v2"),
            });
        }
        let private = optional_int(v, "private")? == Some(1);

        let v2_files = if has_v2 {
            let tree = required(v, "file tree")?;
            expect_dict(tree, "file tree")?;
            // Counted on the decoded tree first, so a flood of files or of path bytes is
            // refused before any entry is built for it.
            tree_budget(tree, path::cost(name.len()), &mut FileBudget::default())?;
            let mut files = Vec::new();
            walk_file_tree(tree, &mut Vec::new(), &mut files)?;
            if files.is_empty() {
                return Err(MetainfoError::Invalid {
                    field: "file tree",
                    reason: "no files".into(),
                });
            }
            let single = files.len() == 1 && files[0].path.len() == 1;
            if !single {
                for f in &mut files {
                    f.path.insert(0, name.clone());
                }
            }
            Some(files)
        } else {
            None
        };

        let files = if has_v1 {
            let v1_files = parse_v1_files(v, &name)?;
            if let Some(v2_files) = &v2_files {
                merge_hybrid(v1_files, v2_files)?
            } else {
                v1_files
            }
        } else {
            align_v2(v2_files.unwrap_or_default(), piece_length)
        };
        check_unique_paths(&files)?;
        let layout = FileLayout::new(files, piece_length)?;
        if version == Version::Hybrid {
            for f in layout.data_files().map(|(_, f)| f) {
                if f.length > 0 && f.offset % piece_length != 0 {
                    return Err(MetainfoError::Invalid {
                        field: "files",
                        reason: format!(
                            "hybrid torrent file {:?} does not start on a piece boundary",
                            f.path.join("/")
                        ),
                    });
                }
            }
        }

        let pieces = if has_v1 {
            let p = bytes_of(required(v, "pieces")?, "pieces")?;
            if p.len() % 20 != 0 || (p.len() / 20) as u64 != u64::from(layout.num_pieces) {
                return Err(MetainfoError::Invalid {
                    field: "pieces",
                    reason: format!(
                        "{} bytes of hashes, expected 20 × {} pieces",
                        p.len(),
                        layout.num_pieces
                    ),
                });
            }
            p.chunks_exact(20)
                .map(|c| c.try_into().unwrap_or([0; 20]))
                .collect()
        } else {
            Vec::new()
        };

        let hash = InfoHash {
            v1: has_v1.then(|| hash::sha1(raw)),
            v2: has_v2.then(|| hash::sha256(raw)),
        };
        Ok(Info {
            raw: raw.to_vec(),
            hash,
            name,
            version,
            private,
            layout,
            pieces,
            piece_layers: HashMap::new(),
        })
    }

    /// The expected v2 hash of piece `index`: a piece layer entry, or the file's root for a file
    /// of at most one piece. `None` for v1 torrents, pad-only pieces or missing layers.
    pub fn v2_piece_hash(&self, index: u32) -> Option<[u8; 32]> {
        let l = &self.layout;
        let start = u64::from(index) * l.piece_length;
        let f = &l.files[l.file_at(start)?];
        let root = f.pieces_root?;
        if f.pad {
            return None;
        }
        if f.length <= l.piece_length {
            return Some(root);
        }
        let local = (start - f.offset) / l.piece_length;
        self.piece_layers.get(&root)?.get(local as usize).copied()
    }
}

fn parse_v1_files(v: &Value<'_>, name: &str) -> Result<Vec<FileEntry>, MetainfoError> {
    match (v.get(b"length"), v.get(b"files")) {
        (Some(_), Some(_)) => Err(MetainfoError::Invalid {
            field: "info",
            reason: "has both `length` and `files`".into(),
        }),
        (None, None) => Err(MetainfoError::Missing("length or files".into())),
        (Some(len), None) => Ok(vec![FileEntry {
            path: vec![name.to_owned()],
            length: non_negative(len, "length")?,
            offset: 0,
            pad: false,
            executable: false,
            pieces_root: None,
        }]),
        (None, Some(files)) => {
            let list = files
                .as_list()
                .ok_or_else(|| wrong(files, "files", "a list"))?;
            if list.is_empty() {
                return Err(MetainfoError::Invalid {
                    field: "files",
                    reason: "empty list".into(),
                });
            }
            // Counted on the decoded list first, so a flood of files or of path bytes is
            // refused before any entry is built for it.
            let mut budget = FileBudget::default();
            for f in list {
                let components = f
                    .get(b"path.utf-8")
                    .or_else(|| f.get(b"path"))
                    .and_then(Value::as_list)
                    .unwrap_or_default();
                let cost = components
                    .iter()
                    .filter_map(Value::as_bytes)
                    .fold(path::cost(name.len()), |c, p| {
                        c.saturating_add(path::cost(p.len()))
                    });
                budget.add(is_pad_entry(f), cost)?;
            }
            list.iter()
                .map(|f| {
                    expect_dict(f, "files[]")?;
                    let length = non_negative(required(f, "length")?, "files[].length")?;
                    let p = match f.get(b"path.utf-8") {
                        Some(p) => p,
                        None => required(f, "path")?,
                    };
                    let parts = p
                        .as_list()
                        .ok_or_else(|| wrong(p, "files[].path", "a list of strings"))?
                        .iter()
                        .map(|c| bytes_of(c, "files[].path[]"))
                        .collect::<Result<Vec<_>, _>>()?;
                    let attr = match f.get(b"attr") {
                        Some(a) => bytes_of(a, "files[].attr")?,
                        None => b"",
                    };
                    let bitcomet_pad = parts
                        .last()
                        .is_some_and(|p| p.starts_with(b"_____padding_file_"));
                    let mut path = vec![name.to_owned()];
                    path.extend(path::components(parts)?);
                    Ok(FileEntry {
                        path,
                        length,
                        offset: 0,
                        pad: attr.contains(&b'p') || bitcomet_pad,
                        executable: attr.contains(&b'x'),
                        pieces_root: None,
                    })
                })
                .collect()
        }
    }
}

/// Whether a decoded v1 `files` entry is a pad file (BEP 47 `attr` with `p`, or BitComet's
/// `_____padding_file_` name), as [`parse_v1_files`] decides it.
fn is_pad_entry(f: &Value<'_>) -> bool {
    let attr_pad = f
        .get(b"attr")
        .and_then(Value::as_bytes)
        .is_some_and(|a| a.contains(&b'p'));
    let name_pad = f
        .get(b"path.utf-8")
        .or_else(|| f.get(b"path"))
        .and_then(Value::as_list)
        .and_then(<[Value<'_>]>::last)
        .and_then(Value::as_bytes)
        .is_some_and(|p| p.starts_with(b"_____padding_file_"));
    attr_pad || name_pad
}

/// What a torrent's file entries will cost once built, counted on the decoded values so that
/// a torrent over [`layout::MAX_FILES`] or [`path::MAX_PATH_BYTES`] is refused before any entry
/// is built.
#[derive(Default)]
struct FileBudget {
    files: usize,
    path_bytes: usize,
}

impl FileBudget {
    /// Counts one entry whose path costs `path_cost` ([`path::cost`] summed over components).
    fn add(&mut self, pad: bool, path_cost: usize) -> Result<(), MetainfoError> {
        self.files += usize::from(!pad);
        self.path_bytes = self.path_bytes.saturating_add(path_cost);
        if self.files > layout::MAX_FILES {
            return Err(layout::too_many_files());
        }
        if self.path_bytes > path::MAX_PATH_BYTES {
            return Err(MetainfoError::Invalid {
                field: "files",
                reason: format!(
                    "the file paths would take more than {} bytes",
                    path::MAX_PATH_BYTES
                ),
            });
        }
        Ok(())
    }
}

/// Counts the files of a BEP 52 file tree into `budget`, each with the whole path it will get
/// (`prefix` is the cost of the components above `node`). Stops at the first bound passed.
fn tree_budget(
    node: &Value<'_>,
    prefix: usize,
    budget: &mut FileBudget,
) -> Result<(), MetainfoError> {
    let Some(entries) = node.as_dict() else {
        return Ok(());
    };
    for (key, child) in entries.iter() {
        let cost = prefix.saturating_add(path::cost(key.len()));
        let is_file = child
            .as_dict()
            .is_some_and(|d| d.len() == 1 && d[0].0.is_empty());
        if is_file {
            budget.add(false, cost)?;
        } else {
            tree_budget(child, cost, budget)?;
        }
    }
    Ok(())
}

/// Depth-first walk of a BEP 52 file tree in key order (the order files take in the torrent).
fn walk_file_tree(
    node: &Value<'_>,
    prefix: &mut Vec<String>,
    out: &mut Vec<FileEntry>,
) -> Result<(), MetainfoError> {
    let entries = node
        .as_dict()
        .ok_or_else(|| wrong(node, "file tree", "a dictionary"))?;
    for (key, child) in entries {
        if key.is_empty() {
            return Err(MetainfoError::Invalid {
                field: "file tree",
                reason: format!("file attributes mixed with directory entries at {prefix:?}"),
            });
        }
        prefix.push(path::component(key)?);
        if prefix.len() > path::MAX_COMPONENTS {
            return Err(MetainfoError::UnsafePath {
                path: prefix.join("/"),
                reason: "path nests deeper than 64 directories",
            });
        }
        let is_file = child
            .as_dict()
            .is_some_and(|d| d.len() == 1 && d[0].0.is_empty());
        if is_file {
            let attrs = child
                .get(b"")
                .ok_or_else(|| MetainfoError::Missing("file tree ''".into()))?;
            expect_dict(attrs, "file tree file")?;
            let length = non_negative(required(attrs, "length")?, "file tree length")?;
            let pieces_root = match attrs.get(b"pieces root") {
                Some(r) => {
                    let b = bytes_of(r, "pieces root")?;
                    Some(<[u8; 32]>::try_from(b).map_err(|_| MetainfoError::Invalid {
                        field: "pieces root",
                        reason: format!("{} bytes, expected 32", b.len()),
                    })?)
                }
                None if length > 0 => return Err(MetainfoError::Missing("pieces root".into())),
                None => None,
            };
            let attr = match attrs.get(b"attr") {
                Some(a) => bytes_of(a, "attr")?,
                None => b"",
            };
            out.push(FileEntry {
                path: prefix.clone(),
                length,
                offset: 0,
                pad: false,
                executable: attr.contains(&b'x'),
                pieces_root: if length > 0 { pieces_root } else { None },
            });
        } else {
            walk_file_tree(child, prefix, out)?;
        }
        prefix.pop();
    }
    Ok(())
}

/// Pure v2: every file starts on a piece boundary; insert virtual pad entries for that, after
/// the last file too, so that every piece is whole: libtorrent 2.0 lays a v2 torrent out so
/// (its last piece is `piece length` long, the tail reading as zeros) and asks for the whole of
/// it, which a last piece cut at the end of the file would refuse as a request past the piece.
fn align_v2(files: Vec<FileEntry>, piece_length: u64) -> Vec<FileEntry> {
    let n = files.len();
    let mut out = Vec::with_capacity(n * 2);
    for f in files {
        let tail = f.length % piece_length;
        out.push(f);
        if tail != 0 {
            out.push(FileEntry {
                path: vec![".pad".into(), (piece_length - tail).to_string()],
                length: piece_length - tail,
                offset: 0,
                pad: true,
                executable: false,
                pieces_root: None,
            });
        }
    }
    out
}

/// Hybrid: the v1 file list (with pad files) must describe the same files as the v2 tree.
fn merge_hybrid(mut v1: Vec<FileEntry>, v2: &[FileEntry]) -> Result<Vec<FileEntry>, MetainfoError> {
    let mut v2_iter = v2.iter();
    for f in v1.iter_mut().filter(|f| !f.pad) {
        let Some(g) = v2_iter.next() else {
            return Err(hybrid_mismatch(format!(
                "v1 file {:?} not in v2 tree",
                f.path.join("/")
            )));
        };
        if f.path != g.path || f.length != g.length {
            return Err(hybrid_mismatch(format!(
                "v1 file {:?} ({} bytes) differs from v2 file {:?} ({} bytes)",
                f.path.join("/"),
                f.length,
                g.path.join("/"),
                g.length
            )));
        }
        f.pieces_root = g.pieces_root;
        f.executable |= g.executable;
    }
    if let Some(g) = v2_iter.next() {
        return Err(hybrid_mismatch(format!(
            "v2 file {:?} not in v1 list",
            g.path.join("/")
        )));
    }
    Ok(v1)
}

fn hybrid_mismatch(reason: String) -> MetainfoError {
    MetainfoError::Invalid {
        field: "files",
        reason: format!("hybrid torrent's v1 and v2 parts disagree: {reason}"),
    }
}

/// No two files may share a path, and no file may sit where another needs a directory.
fn check_unique_paths(files: &[FileEntry]) -> Result<(), MetainfoError> {
    let mut file_paths = HashSet::new();
    let mut dirs = HashSet::new();
    for f in files.iter().filter(|f| !f.pad) {
        for i in 1..f.path.len() {
            dirs.insert(&f.path[..i]);
        }
        if !file_paths.insert(&f.path[..]) {
            return Err(MetainfoError::UnsafePath {
                path: f.path.join("/"),
                reason: "two files have the same path",
            });
        }
    }
    if let Some(clash) = file_paths.iter().find(|p| dirs.contains(*p)) {
        return Err(MetainfoError::UnsafePath {
            path: clash.join("/"),
            reason: "a file has the same path as a directory",
        });
    }
    Ok(())
}

/// The BEP 52 piece layers of every file longer than one piece, each checked against its file:
/// exactly one hash per piece of the file, hashing up to its `pieces root`.
///
/// Files with the same content share a root and so a layer; every one of them is checked, not
/// only the first. (Only the first was, once: a second file claiming 16 TiB under a small
/// file's root passed with no layer at all and the check then allocated for 2^30 pieces.)
fn parse_piece_layers(
    root: &Value<'_>,
    layout: &FileLayout,
) -> Result<HashMap<[u8; 32], Vec<[u8; 32]>>, MetainfoError> {
    let given = match root.get(b"piece layers") {
        Some(v) => v
            .as_dict()
            .ok_or_else(|| wrong(v, "piece layers", "a dictionary"))?,
        None => &[],
    };
    let mut layers: HashMap<[u8; 32], Vec<[u8; 32]>> = HashMap::new();
    for f in layout.data_files().map(|(_, f)| f) {
        let Some(root_hash) = f.pieces_root else {
            continue;
        };
        if f.length <= layout.piece_length {
            continue;
        }
        let want = f.length.div_ceil(layout.piece_length);
        if let Some(layer) = layers.get(&root_hash) {
            if layer.len() as u64 != want {
                return Err(MetainfoError::Invalid {
                    field: "piece layers",
                    reason: format!(
                        "{:?} needs {want} piece hashes but shares its pieces root with a file \
                         of {} pieces",
                        f.path.join("/"),
                        layer.len()
                    ),
                });
            }
            continue;
        }
        let raw = given
            .binary_search_by(|(k, _)| (*k).cmp(&root_hash[..]))
            .ok()
            .map(|i| &given[i].1)
            .ok_or_else(|| {
                MetainfoError::Missing(format!("piece layers for {:?}", f.path.join("/")))
            })?;
        let raw = bytes_of(raw, "piece layers[]")?;
        if raw.len() as u64 != want.saturating_mul(32) {
            return Err(MetainfoError::Invalid {
                field: "piece layers",
                reason: format!(
                    "{:?} has {} bytes of hashes, expected 32 × {want}",
                    f.path.join("/"),
                    raw.len()
                ),
            });
        }
        let layer: Vec<[u8; 32]> = raw
            .chunks_exact(32)
            .map(|c| c.try_into().unwrap_or([0; 32]))
            .collect();
        if hash::root_from_piece_layer(&layer, layout.piece_length) != root_hash {
            return Err(MetainfoError::Invalid {
                field: "piece layers",
                reason: format!(
                    "layer of {:?} does not hash to its pieces root",
                    f.path.join("/")
                ),
            });
        }
        layers.insert(root_hash, layer);
    }
    Ok(layers)
}

fn parse_trackers(root: &Value<'_>) -> Result<Vec<Vec<String>>, MetainfoError> {
    if let Some(list) = root.get(b"announce-list") {
        let tiers = list
            .as_list()
            .ok_or_else(|| wrong(list, "announce-list", "a list of lists"))?;
        let mut out = Vec::new();
        let mut kept = 0;
        for tier in tiers.iter() {
            let urls = tier
                .as_list()
                .ok_or_else(|| wrong(tier, "announce-list[]", "a list of strings"))?;
            let mut kept_tier = Vec::new();
            for u in urls.iter() {
                let b = bytes_of(u, "announce-list[][]")?;
                if kept < MAX_URLS
                    && let Some(url) = non_empty_string(b)
                {
                    kept_tier.push(url);
                    kept += 1;
                }
            }
            if !kept_tier.is_empty() {
                out.push(kept_tier);
            }
        }
        if !out.is_empty() {
            return Ok(out);
        }
    }
    Ok(optional_string(root, "announce")?
        .and_then(|a| non_empty_string(a.as_bytes()))
        .map(|a| vec![vec![a]])
        .unwrap_or_default())
}

fn non_empty_string(b: &[u8]) -> Option<String> {
    let s = String::from_utf8_lossy(b).trim().to_owned();
    (!s.is_empty()).then_some(s)
}

fn wrong(v: &Value<'_>, field: &str, expected: &'static str) -> MetainfoError {
    MetainfoError::WrongType {
        field: field.to_owned(),
        expected,
        found: v.type_name(),
    }
}

fn expect_dict(v: &Value<'_>, field: &str) -> Result<(), MetainfoError> {
    v.as_dict()
        .map(|_| ())
        .ok_or_else(|| wrong(v, field, "a dictionary"))
}

fn required<'v, 'a>(d: &'v Value<'a>, key: &str) -> Result<&'v Value<'a>, MetainfoError> {
    d.get(key.as_bytes())
        .ok_or_else(|| MetainfoError::Missing(key.to_owned()))
}

fn bytes_of<'a>(v: &Value<'a>, field: &str) -> Result<&'a [u8], MetainfoError> {
    v.as_bytes().ok_or_else(|| wrong(v, field, "a string"))
}

fn int_of(v: &Value<'_>, field: &str) -> Result<i64, MetainfoError> {
    v.as_int().ok_or_else(|| wrong(v, field, "an integer"))
}

fn non_negative(v: &Value<'_>, field: &'static str) -> Result<u64, MetainfoError> {
    let i = int_of(v, field)?;
    u64::try_from(i).map_err(|_| MetainfoError::Invalid {
        field,
        reason: format!("{i} is negative"),
    })
}

fn optional_int(d: &Value<'_>, key: &str) -> Result<Option<i64>, MetainfoError> {
    d.get(key.as_bytes()).map(|v| int_of(v, key)).transpose()
}

fn optional_string(d: &Value<'_>, key: &str) -> Result<Option<String>, MetainfoError> {
    d.get(key.as_bytes())
        .map(|v| bytes_of(v, key).map(|b| String::from_utf8_lossy(b).into_owned()))
        .transpose()
}

/// Lower-case hex of a hash.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

#[cfg(test)]
mod tests;

//! Making a .torrent from files on disk (`ringseed create`).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::metainfo::{
    FileEntry, FileLayout, Metainfo, MetainfoError, TorrentBuilder, Version, path,
};
use crate::storage::DataFiles;
use crate::verify::{self, HashMode, HashOptions, PieceOutcome, Progress};

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: not a regular file or directory")]
    NotRegular(PathBuf),
    #[error("{0}: no files to put in a torrent")]
    Empty(PathBuf),
    #[error("piece length {0}: {1}")]
    PieceLength(u64, &'static str),
    #[error("{path}: name cannot go in a torrent: {source}")]
    BadName {
        path: PathBuf,
        source: MetainfoError,
    },
    #[error("{0}: file changed or vanished while hashing")]
    Changed(String),
    #[error("reading piece {0}: {1}")]
    Read(u32, String),
    #[error(transparent)]
    Build(#[from] crate::metainfo::BuildError),
    #[error(transparent)]
    Layout(#[from] MetainfoError),
}

/// What `create` is asked to make.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    pub version: Version,
    /// `None` picks a size from the payload (see [`auto_piece_length`]).
    pub piece_length: Option<u64>,
    pub trackers: Vec<Vec<String>>,
    pub web_seeds: Vec<String>,
    pub private: bool,
    pub comment: Option<String>,
    /// Leave out `creation date`, for reproducible output.
    pub no_date: bool,
    pub hash: HashOptions,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            version: Version::V1,
            piece_length: None,
            trackers: Vec::new(),
            web_seeds: Vec::new(),
            private: false,
            comment: None,
            no_date: false,
            hash: HashOptions::default(),
        }
    }
}

/// Power-of-two piece length for `total` bytes: about 1000–2000 pieces, between 16 KiB and
/// 16 MiB, so the piece list stays small and a piece stays cheap to re-send.
pub fn auto_piece_length(total: u64) -> u64 {
    let target = total / 1500;
    target.next_power_of_two().clamp(16 << 10, 16 << 20)
}

/// Makes a torrent of `source` (a file or a directory). Returns the encoded torrent and its
/// parsed form.
pub fn create(
    source: &Path,
    opts: &CreateOptions,
    progress: &Progress,
) -> Result<(Vec<u8>, Metainfo), CreateError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CreateError::Io { path, source }
    };
    let meta = std::fs::metadata(source).map_err(io(source))?;
    let source = source.canonicalize().map_err(io(source))?;
    let name_raw = source
        .file_name()
        .ok_or_else(|| CreateError::NotRegular(source.clone()))?;
    let name = path::component(name_raw.as_encoded_bytes()).map_err(|e| CreateError::BadName {
        path: source.clone(),
        source: e,
    })?;
    let root = source.parent().unwrap_or(Path::new("/")).to_path_buf();
    let multi_file = meta.is_dir();
    let mut files = Vec::new();
    if meta.is_file() {
        files.push((vec![name.clone()], meta.len(), is_executable(&meta)));
    } else if multi_file {
        walk(&source, &mut vec![name.clone()], &mut files)?;
        files.sort_by(|a, b| a.0.cmp(&b.0));
    } else {
        return Err(CreateError::NotRegular(source));
    }
    if files.is_empty() {
        return Err(CreateError::Empty(source));
    }
    let total: u64 = files.iter().map(|f| f.1).sum();
    let piece_length = opts
        .piece_length
        .unwrap_or_else(|| auto_piece_length(total));
    if piece_length < 16 << 10 || !piece_length.is_multiple_of(16 << 10) {
        return Err(CreateError::PieceLength(
            piece_length,
            "must be a multiple of 16 KiB",
        ));
    }
    if opts.version.has_v2() && !piece_length.is_power_of_two() {
        return Err(CreateError::PieceLength(
            piece_length,
            "v2 and hybrid need a power of two",
        ));
    }

    // v2 and hybrid: every file starts on a piece boundary, the gap filled by a pad entry (a
    // real BEP 47 pad file in hybrid's v1 list, a virtual one in pure v2).
    let aligned = opts.version.has_v2();
    let count = files.len();
    let mut entries = Vec::with_capacity(count * 2);
    for (i, (path, length, executable)) in files.into_iter().enumerate() {
        let tail = length % piece_length;
        entries.push(FileEntry {
            path,
            length,
            offset: 0,
            pad: false,
            executable,
            pieces_root: None,
        });
        if aligned && tail != 0 && i + 1 < count {
            let pad = piece_length - tail;
            entries.push(FileEntry {
                path: vec![name.clone(), ".pad".into(), pad.to_string()],
                length: pad,
                offset: 0,
                pad: true,
                executable: false,
                pieces_root: None,
            });
        }
    }
    let layout = FileLayout::new(entries, piece_length)?;
    let data = DataFiles::open_following_links(&layout, &root).map_err(io(&root))?;
    let mode = HashMode {
        v1: opts.version.has_v1(),
        v2: opts.version.has_v2(),
    };
    let outcomes = verify::hash_pieces(&layout, &data, mode, opts.hash, progress);
    let mut v1 = Vec::new();
    let mut v2 = Vec::new();
    for (i, o) in outcomes.into_iter().enumerate() {
        match o {
            PieceOutcome::Hashed(d) => {
                v1.extend(d.v1);
                v2.extend(d.v2);
            }
            PieceOutcome::Missing => {
                let at = u64::from(i as u32) * piece_length;
                let file = layout.file_at(at).map(|f| layout.files[f].path.join("/"));
                return Err(CreateError::Changed(file.unwrap_or_default()));
            }
            PieceOutcome::ReadError(e) => return Err(CreateError::Read(i as u32, e)),
        }
    }
    let builder = TorrentBuilder {
        name,
        version: opts.version,
        layout,
        multi_file,
        private: opts.private,
        trackers: opts.trackers.clone(),
        web_seeds: opts.web_seeds.clone(),
        comment: opts.comment.clone(),
        created_by: Some(format!("ringseed/{}", env!("CARGO_PKG_VERSION"))),
        creation_date: (!opts.no_date).then(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
        }),
    };
    Ok(builder.build(&v1, &v2)?)
}

fn is_executable(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

type Found = (Vec<String>, u64, bool);

/// Collects the regular files under `dir` (symlinks followed, as mktorrent does).
fn walk(dir: &Path, prefix: &mut Vec<String>, out: &mut Vec<Found>) -> Result<(), CreateError> {
    let io = |source| CreateError::Io {
        path: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let p = entry.path();
        let meta = std::fs::metadata(&p).map_err(|source| CreateError::Io {
            path: p.clone(),
            source,
        })?;
        let name = path::component(entry.file_name().as_encoded_bytes()).map_err(|e| {
            CreateError::BadName {
                path: p.clone(),
                source: e,
            }
        })?;
        prefix.push(name);
        if meta.is_dir() {
            if prefix.len() > path::MAX_COMPONENTS {
                return Err(CreateError::NotRegular(p));
            }
            walk(&p, prefix, out)?;
        } else if meta.is_file() {
            out.push((prefix.clone(), meta.len(), is_executable(&meta)));
        } else {
            return Err(CreateError::NotRegular(p));
        }
        prefix.pop();
    }
    Ok(())
}

/// Tracker tiers from the command line: one tier per argument, its trackers separated by
/// commas (blanks trimmed, empty ones dropped).
///
/// ```
/// let tiers = ringseed::create::tracker_tiers(&["a, b".into(), "c".into()]);
/// assert_eq!(tiers, vec![vec!["a", "b"], vec!["c"]]);
/// ```
pub fn tracker_tiers(args: &[String]) -> Vec<Vec<String>> {
    args.iter()
        .map(|t| {
            t.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .collect()
}

/// Bytes under `path` (a file or a directory tree), for a progress bar's total; what cannot be
/// read counts as 0.
pub fn source_size(path: &Path) -> u64 {
    let Ok(m) = std::fs::metadata(path) else {
        return 0;
    };
    if m.is_file() {
        return m.len();
    }
    std::fs::read_dir(path)
        .map(|rd| rd.flatten().map(|e| source_size(&e.path())).sum())
        .unwrap_or(0)
}

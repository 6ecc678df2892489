//! The file layout of a torrent: where each file sits in the torrent's linear byte space and
//! which file spans any (piece, offset, length) covers.
//!
//! v1 torrents concatenate files. Hybrid torrents carry BEP 47 pad files so every file starts on
//! a piece boundary; pure v2 torrents have the same alignment implicitly, and the layout inserts
//! virtual pad entries for it, so all three versions share one linear space. Pad entries are
//! never on disk: reading them yields zeros.

use std::path::PathBuf;

use super::MetainfoError;

/// One file of a torrent (or a pad gap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Validated components, relative to the download directory (multi-file torrents start
    /// with the torrent's name).
    pub path: Vec<String>,
    pub length: u64,
    /// Offset of the first byte in the torrent's linear space.
    pub offset: u64,
    /// A BEP 47 pad file or a v2 alignment gap: zeros, never written to disk.
    pub pad: bool,
    /// BEP 47 `x` attribute.
    pub executable: bool,
    /// BEP 52 merkle root of the file's 16 KiB blocks (v2 and hybrid, non-empty files).
    pub pieces_root: Option<[u8; 32]>,
}

impl FileEntry {
    /// A one-component entry, for tests of code over layouts.
    #[cfg(test)]
    pub(crate) fn for_test(name: &str, length: u64, pad: bool) -> FileEntry {
        FileEntry {
            path: vec![name.into()],
            length,
            offset: 0,
            pad,
            executable: false,
            pieces_root: None,
        }
    }

    /// The relative path on disk.
    pub fn rel_path(&self) -> PathBuf {
        self.path.iter().collect()
    }

    pub fn end(&self) -> u64 {
        self.offset + self.length
    }
}

/// A contiguous part of one file touched by a byte range of the torrent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSpan {
    /// Index into [`FileLayout::files`].
    pub file: usize,
    /// Offset inside the file.
    pub offset: u64,
    pub len: u64,
    /// The span lies in a pad entry: it reads as zeros and is never written.
    pub pad: bool,
}

/// Files in linear order with the piece geometry over them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileLayout {
    pub files: Vec<FileEntry>,
    pub piece_length: u64,
    pub total_length: u64,
    pub num_pieces: u32,
}

/// Longest piece accepted (libtorrent's upper bound is lower; 256 MiB keeps a piece buffer sane).
pub const MAX_PIECE_LENGTH: u64 = 256 << 20;

/// Most pieces in one torrent: 2^21, libtorrent's `max_pieces` (`load_torrent_limits`), so no
/// torrent that the reference client loads is refused. A torrent picks its piece length to keep
/// the count near a few thousand (libtorrent's creator aims at 1 500), so even 32 GiB of 16 KiB
/// pieces or 32 TiB of 16 MiB pieces fit. Much of the engine keeps something per piece (the
/// bitfields, availability counters, the v1 hash list, the check's report), a few dozen bytes
/// each, so this bound keeps that at tens of MiB where 2^30 pieces, the old bound, came to tens
/// of GiB: the piece count is claimed by a few bytes of `length` and, in a v2 info dictionary
/// without its piece layers (a magnet), nothing else in the torrent has to back it.
pub const MAX_PIECES: u64 = 1 << 21;

/// Largest total size: 2^48 bytes (256 TiB), libtorrent's `max_file_offset`, so no swarm of the
/// reference client is refused. A bigger claim is either a mistake or an attack: the size is
/// what a download preallocates or creates sparse files for and what the check reads.
pub const MAX_TOTAL_LENGTH: u64 = 1 << 48;

/// Most files in one torrent (pad files and v2 alignment gaps not counted): 100 000.
///
/// Real torrents stay far below: the large ones (archives, datasets) hold thousands or tens of
/// thousands of files, and libtorrent's token bound already refuses a hybrid torrent of about
/// 100 000 files (each costs it some 30 of its 3 M tokens). Files cost memory in proportion to
/// the torrent's bytes rather than to a claim, but several times over: decoded (about 250
/// bytes each), then as layout entries (about 110 bytes plus the paths, see
/// [`super::path::MAX_PATH_BYTES`]), and while seeded each holds a descriptor. This bound keeps
/// that to tens of MiB per torrent, and lets the parser refuse a flood of files by counting the
/// decoded entries before it builds any.
pub const MAX_FILES: usize = 100_000;

/// The error for a torrent of more than [`MAX_FILES`] files.
pub(crate) fn too_many_files() -> MetainfoError {
    MetainfoError::Invalid {
        field: "files",
        reason: format!("more than {MAX_FILES} files"),
    }
}

impl FileLayout {
    /// Builds a layout from files in order; `offset`s are assigned here.
    pub fn new(mut files: Vec<FileEntry>, piece_length: u64) -> Result<Self, MetainfoError> {
        if piece_length == 0 || piece_length > MAX_PIECE_LENGTH {
            return Err(MetainfoError::Invalid {
                field: "piece length",
                reason: format!("{piece_length} is outside 1..={MAX_PIECE_LENGTH}"),
            });
        }
        if files.iter().filter(|f| !f.pad).count() > MAX_FILES {
            return Err(too_many_files());
        }
        let mut offset = 0u64;
        for f in &mut files {
            f.offset = offset;
            offset = offset
                .checked_add(f.length)
                .filter(|&o| o <= MAX_TOTAL_LENGTH)
                .ok_or_else(|| MetainfoError::Invalid {
                    field: "length",
                    reason: format!(
                        "the files add up to more than {MAX_TOTAL_LENGTH} bytes (256 TiB)"
                    ),
                })?;
        }
        let num_pieces = offset.div_ceil(piece_length);
        if num_pieces > MAX_PIECES {
            return Err(MetainfoError::Invalid {
                field: "piece length",
                reason: format!(
                    "{offset} bytes in pieces of {piece_length} make {num_pieces} pieces, \
                     more than {MAX_PIECES}"
                ),
            });
        }
        Ok(FileLayout {
            files,
            piece_length,
            total_length: offset,
            num_pieces: num_pieces as u32,
        })
    }

    /// Size of piece `index` (the last one may be short). Zero for an index out of range.
    pub fn piece_size(&self, index: u32) -> u64 {
        let start = u64::from(index) * self.piece_length;
        if start >= self.total_length {
            return 0;
        }
        self.piece_length.min(self.total_length - start)
    }

    /// Index of the file holding linear byte `offset` (skipping zero-length files), if any.
    pub fn file_at(&self, offset: u64) -> Option<usize> {
        if offset >= self.total_length {
            return None;
        }
        // The first file whose end is beyond `offset`; zero-length files end where they start
        // and are skipped naturally.
        let i = self.files.partition_point(|f| f.end() <= offset);
        (i < self.files.len()).then_some(i)
    }

    /// The file spans covered by `len` bytes at `begin` inside piece `index`, in order.
    /// Errors if the range leaves the piece.
    pub fn spans(
        &self,
        index: u32,
        begin: u64,
        len: u64,
    ) -> Result<impl Iterator<Item = FileSpan> + '_, MetainfoError> {
        let size = self.piece_size(index);
        if size == 0 || begin.checked_add(len).is_none_or(|end| end > size) {
            return Err(MetainfoError::Invalid {
                field: "range",
                reason: format!(
                    "piece {index} bytes {begin}..+{len} outside the piece of {size} bytes"
                ),
            });
        }
        Ok(self.linear_spans(u64::from(index) * self.piece_length + begin, len))
    }

    /// The file spans covered by `len` bytes at linear offset `start` (clipped to the torrent).
    pub fn linear_spans(&self, start: u64, len: u64) -> impl Iterator<Item = FileSpan> + '_ {
        let end = start.saturating_add(len).min(self.total_length);
        let first = self.file_at(start).unwrap_or(self.files.len());
        self.files[first..]
            .iter()
            .enumerate()
            .take_while(move |(_, f)| f.offset < end)
            .filter(|(_, f)| f.length > 0)
            .map(move |(i, f)| {
                let s = start.max(f.offset);
                let e = end.min(f.end());
                FileSpan {
                    file: first + i,
                    offset: s - f.offset,
                    len: e - s,
                    pad: f.pad,
                }
            })
    }

    /// Files that are really on disk (no pad entries).
    pub fn data_files(&self) -> impl Iterator<Item = (usize, &FileEntry)> {
        self.files.iter().enumerate().filter(|(_, f)| !f.pad)
    }

    /// Bytes of real file data (pads excluded).
    pub fn data_length(&self) -> u64 {
        self.data_files().map(|(_, f)| f.length).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, length: u64, pad: bool) -> FileEntry {
        FileEntry::for_test(name, length, pad)
    }

    #[test]
    fn spans_cross_files_pads_and_empty_files() {
        let l = FileLayout::new(
            vec![
                file("a", 10, false),
                file("empty", 0, false),
                file("pad", 6, true),
                file("b", 20, false),
                file("c", 3, false),
            ],
            16,
        )
        .unwrap();
        assert_eq!(l.total_length, 39);
        assert_eq!(l.num_pieces, 3);
        assert_eq!(l.piece_size(2), 7);
        assert_eq!(l.piece_size(3), 0);
        let s: Vec<_> = l.spans(0, 0, 16).unwrap().collect();
        assert_eq!(
            s,
            vec![
                FileSpan {
                    file: 0,
                    offset: 0,
                    len: 10,
                    pad: false
                },
                FileSpan {
                    file: 2,
                    offset: 0,
                    len: 6,
                    pad: true
                },
            ]
        );
        let s: Vec<_> = l.spans(1, 10, 6).unwrap().collect();
        assert_eq!(
            s,
            vec![FileSpan {
                file: 3,
                offset: 10,
                len: 6,
                pad: false
            }]
        );
        let s: Vec<_> = l.spans(2, 0, 7).unwrap().collect();
        assert_eq!(
            s,
            vec![
                FileSpan {
                    file: 3,
                    offset: 16,
                    len: 4,
                    pad: false
                },
                FileSpan {
                    file: 4,
                    offset: 0,
                    len: 3,
                    pad: false
                },
            ]
        );
        assert!(l.spans(2, 0, 8).is_err());
        assert!(l.spans(3, 0, 1).is_err());
        assert!(l.spans(0, u64::MAX, 2).is_err());
        assert_eq!(l.file_at(10), Some(2));
        assert_eq!(l.file_at(39), None);
        assert_eq!(l.data_length(), 33);
    }

    #[test]
    fn rejects_absurd_geometry() {
        assert!(FileLayout::new(vec![file("a", 1, false)], 0).is_err());
        assert!(
            FileLayout::new(vec![file("a", u64::MAX, false), file("b", 2, false)], 16).is_err()
        );
        assert!(FileLayout::new(vec![file("a", 1 << 40, false)], 1).is_err());
        // At each bound, and one past it.
        let at = |len: u64, pl: u64| FileLayout::new(vec![file("a", len, false)], pl);
        assert_eq!(at(MAX_PIECES * 16384, 16384).unwrap().num_pieces, 1 << 21);
        assert!(at(MAX_PIECES * 16384 + 1, 16384).is_err());
        assert!(at(MAX_TOTAL_LENGTH, MAX_PIECE_LENGTH).is_ok());
        assert!(at(MAX_TOTAL_LENGTH + 1, MAX_PIECE_LENGTH).is_err());
        let many = |n: usize| (0..n).map(|_| file("f", 1, false)).collect::<Vec<_>>();
        assert!(FileLayout::new(many(MAX_FILES), 16384).is_ok());
        assert!(FileLayout::new(many(MAX_FILES + 1), 16384).is_err());
        // Pads do not count as files.
        let mut padded = many(MAX_FILES);
        padded.push(file("pad", 1, true));
        assert!(FileLayout::new(padded, 16384).is_ok());
    }
}

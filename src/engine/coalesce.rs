//! Turning a peer's queued block requests into one upload job, with no I/O: how many requests
//! one job takes, where each 13-byte piece header and each block lands in the job's buffer, and
//! which block spans are read from disk together (one `readv` per run of spans that follow each
//! other in one file).
//!
//! A worker calls [`take_for_batch`] and [`plan_job`], then fills in the headers and pad zeros
//! and hands each [`ReadRun`] to the ring (or, on the `mmap` path, points the send at each file
//! span in the file's mapping).
//!
//! ```
//! use ringseed::engine::coalesce::{plan_job, take_for_batch};
//! use ringseed::metainfo::{FileEntry, FileLayout};
//! use ringseed::wire::BlockRequest;
//! let file = FileEntry {
//!     path: vec!["a.bin".into()],
//!     length: 4 << 20,
//!     offset: 0,
//!     pad: false,
//!     executable: false,
//!     pieces_root: None,
//! };
//! let layout = FileLayout::new(vec![file], 1 << 20).unwrap();
//! let reqs: Vec<BlockRequest> = (0..4)
//!     .map(|i| BlockRequest { index: 0, begin: i * 16384, length: 16384 })
//!     .collect();
//! let (take, bytes) = take_for_batch(reqs.iter().map(|r| r.length), 256 << 10);
//! assert_eq!((take, bytes), (4, 4 * (13 + 16384)));
//! let job = plan_job(&layout, &reqs[..take]);
//! // Four blocks back to back in one file: one read of four iovecs.
//! assert_eq!(job.runs.len(), 1);
//! assert_eq!(job.runs[0].count, 4);
//! ```

use crate::metainfo::FileLayout;
use crate::wire::BlockRequest;

/// Bytes of a piece message before its block: length, id, index, begin.
pub const HEADER_LEN: usize = 13;
/// Iovecs one `readv` takes at most (the kernel's `UIO_MAXIOV`).
pub const MAX_IOVECS_PER_READ: usize = 1024;

/// How many of the queued requests, in order, one job takes: as many as fit `batch` bytes with
/// their headers, and always at least one (a single block larger than the batch still goes
/// out). Returns the count and the job's length in bytes; `(0, 0)` when nothing is queued.
pub fn take_for_batch(lengths: impl IntoIterator<Item = u32>, batch: usize) -> (usize, usize) {
    let mut total = 0usize;
    let mut take = 0usize;
    for len in lengths {
        let add = HEADER_LEN + len as usize;
        if take > 0 && total + add > batch {
            break;
        }
        total += add;
        take += 1;
    }
    (take, total)
}

/// One stretch of the job buffer, in buffer order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The piece header of `req`'s block, `HEADER_LEN` bytes at `at`.
    Header { at: usize, req: BlockRequest },
    /// Zeros for a pad entry (BEP 47 pad files, BEP 52 alignment): never read from disk.
    Pad { at: usize, len: usize },
    /// `len` bytes of data file `file` from `offset`, to land at `at`.
    File {
        at: usize,
        file: usize,
        offset: u64,
        len: usize,
    },
}

/// File parts read with one `readv`: consecutive in the buffer, in one file, each starting
/// where the previous ended, at most [`MAX_IOVECS_PER_READ`] of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadRun {
    pub file: usize,
    /// Where the run starts in the file.
    pub offset: u64,
    /// Index of the run's first part among the job's `File` parts (its first iovec).
    pub first: usize,
    /// `File` parts (iovecs) in the run.
    pub count: usize,
    pub bytes: usize,
}

/// The layout of one upload job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobPlan {
    /// Bytes of the whole job: headers, blocks and pads.
    pub len: usize,
    pub parts: Vec<Part>,
    pub runs: Vec<ReadRun>,
}

impl JobPlan {
    /// The `File` parts in buffer order (what [`ReadRun::first`] counts).
    pub fn file_parts(&self) -> impl Iterator<Item = &Part> {
        self.parts.iter().filter(|p| matches!(p, Part::File { .. }))
    }
}

/// Lays out `blocks` back to back (header, then block data) and groups their file spans into
/// reads. The requests must already be checked against the torrent (index and range); a block
/// past the end of the data simply has fewer bytes of file parts.
pub fn plan_job(layout: &FileLayout, blocks: &[BlockRequest]) -> JobPlan {
    let mut plan = JobPlan {
        len: 0,
        parts: Vec::with_capacity(blocks.len() * 2),
        runs: Vec::new(),
    };
    let mut file_parts = 0usize;
    let mut at = 0usize;
    for r in blocks {
        plan.parts.push(Part::Header { at, req: *r });
        at += HEADER_LEN;
        let start = u64::from(r.index) * layout.piece_length + u64::from(r.begin);
        for span in layout.linear_spans(start, u64::from(r.length)) {
            let len = span.len as usize;
            if span.pad {
                plan.parts.push(Part::Pad { at, len });
            } else {
                plan.parts.push(Part::File {
                    at,
                    file: span.file,
                    offset: span.offset,
                    len,
                });
                match plan.runs.last_mut() {
                    Some(run)
                        if run.file == span.file
                            && run.offset + run.bytes as u64 == span.offset
                            && run.first + run.count == file_parts
                            && run.count < MAX_IOVECS_PER_READ =>
                    {
                        run.count += 1;
                        run.bytes += len;
                    }
                    _ => plan.runs.push(ReadRun {
                        file: span.file,
                        offset: span.offset,
                        first: file_parts,
                        count: 1,
                        bytes: len,
                    }),
                }
                file_parts += 1;
            }
            at += len;
        }
    }
    plan.len = at;
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metainfo::{FileEntry, FileLayout};

    fn entry(name: &str, length: u64, pad: bool) -> FileEntry {
        FileEntry::for_test(name, length, pad)
    }

    fn single(length: u64, piece: u64) -> FileLayout {
        FileLayout::new(vec![entry("a", length, false)], piece).unwrap()
    }

    fn req(index: u32, begin: u32, length: u32) -> BlockRequest {
        BlockRequest {
            index,
            begin,
            length,
        }
    }

    #[test]
    fn batch_takes_what_fits_and_at_least_one() {
        let lens = [16384u32, 16384, 16384];
        assert_eq!(take_for_batch(lens, 3 * 16397), (3, 3 * 16397));
        assert_eq!(take_for_batch(lens, 3 * 16397 - 1), (2, 2 * 16397));
        // One block larger than the batch still goes.
        assert_eq!(take_for_batch([131072u32], 1000), (1, 131085));
        assert_eq!(take_for_batch([], 1000), (0, 0));
    }

    #[test]
    fn contiguous_blocks_of_one_file_are_one_read() {
        let layout = single(1 << 20, 64 << 10);
        let blocks: Vec<_> = (0..8).map(|i| req(i / 4, (i % 4) * 16384, 16384)).collect();
        let p = plan_job(&layout, &blocks);
        assert_eq!(p.len, 8 * (13 + 16384));
        assert_eq!(
            p.runs,
            vec![ReadRun {
                file: 0,
                offset: 0,
                first: 0,
                count: 8,
                bytes: 8 * 16384
            }]
        );
        // Headers and data alternate, each where the previous ended.
        assert_eq!(
            p.parts[0],
            Part::Header {
                at: 0,
                req: blocks[0]
            }
        );
        assert_eq!(
            p.parts[1],
            Part::File {
                at: 13,
                file: 0,
                offset: 0,
                len: 16384
            }
        );
        assert_eq!(
            p.parts[2],
            Part::Header {
                at: 16397,
                req: blocks[1]
            }
        );
    }

    #[test]
    fn a_gap_or_a_step_back_starts_a_new_read() {
        let layout = single(1 << 20, 64 << 10);
        let blocks = [
            req(0, 0, 16384),
            req(0, 16384, 16384),
            req(2, 0, 16384),
            req(0, 0, 16384),
        ];
        let p = plan_job(&layout, &blocks);
        let runs: Vec<(u64, usize, usize)> = p
            .runs
            .iter()
            .map(|r| (r.offset, r.first, r.count))
            .collect();
        assert_eq!(runs, vec![(0, 0, 2), (128 << 10, 2, 1), (0, 3, 1)]);
    }

    #[test]
    fn blocks_across_files_and_pads_split_into_spans() {
        // 10 000 bytes, a pad to 16 KiB, then 20 000 bytes; pieces of 16 KiB.
        let layout = FileLayout::new(
            vec![
                entry("a", 10_000, false),
                entry(".pad", 6384, true),
                entry("b", 20_000, false),
            ],
            16384,
        )
        .unwrap();
        let p = plan_job(&layout, &[req(0, 8192, 16384)]);
        assert_eq!(
            p.parts,
            vec![
                Part::Header {
                    at: 0,
                    req: req(0, 8192, 16384)
                },
                Part::File {
                    at: 13,
                    file: 0,
                    offset: 8192,
                    len: 1808
                },
                Part::Pad {
                    at: 1821,
                    len: 6384
                },
                Part::File {
                    at: 8205,
                    file: 2,
                    offset: 0,
                    len: 8192
                },
            ]
        );
        assert_eq!(p.runs.len(), 2);
        assert_eq!(p.len, 13 + 16384);
        assert_eq!(p.file_parts().count(), 2);
    }

    #[test]
    fn a_read_holds_at_most_the_kernels_iovec_limit() {
        let layout = single(64 << 20, 1 << 20);
        let blocks: Vec<_> = (0..3000u32)
            .map(|i| req(i / 64, (i % 64) * 16384, 16384))
            .collect();
        let p = plan_job(&layout, &blocks);
        let counts: Vec<usize> = p.runs.iter().map(|r| r.count).collect();
        assert_eq!(counts, vec![1024, 1024, 952]);
        assert_eq!(p.runs[1].first, 1024);
        assert_eq!(p.runs[1].offset, 1024 * 16384);
    }
}

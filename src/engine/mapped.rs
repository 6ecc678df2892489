//! The `mmap` upload path: a job is one `sendmsg` whose iovecs point at its piece headers (a
//! few bytes each, in the job's own small buffer), at shared zeros for pad spans, and at its
//! block data in the files' shared read-only mappings
//! ([`crate::storage::DataFiles::mapped`]). The kernel copies the data from the page cache
//! straight into socket buffers: one copy, where the copy path makes two (page cache → job
//! buffer → socket), and no helper threads, where splice hands every step to io_uring's workers.
//!
//! A send touching a page that is not in the page cache would stall the worker on the disk
//! inside the send, so a job goes this way only when [`resident`] finds every page of its data
//! cached; otherwise it takes the copy path, whose io_uring read waits for the disk instead
//! (and leaves the pages cached for the next job).

use super::coalesce::{HEADER_LEN, JobPlan, Part};
use crate::metainfo::FileLayout;
use crate::storage::DataFiles;
use crate::wire;
use foldhash::HashMap;
use std::time::{Duration, Instant};

/// Most iovecs one `sendmsg` takes (`UIO_MAXIOV`); a longer job goes out in several sends.
const IOV_MAX: usize = 1024;
const PAGE: usize = 4096;
/// What pad spans (BEP 47 pad files) are sent from: never written, shared by every job. A
/// longer pad takes several iovecs.
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

/// The send side of a job on the `mmap` path.
pub struct MappedJob {
    /// The piece headers, back to back (`iovs` point into it: its heap block never moves, as
    /// it is never grown after [`MappedJob::build`]).
    #[allow(dead_code)] // read only by the kernel, through `iovs`
    headers: Vec<u8>,
    /// Headers, pads and data in send order; the ones before `first` are sent, and
    /// `iovs[first]` is advanced past its sent bytes.
    iovs: Vec<libc::iovec>,
    first: usize,
    /// The message handed to the kernel: boxed, so its address holds while a send is in flight.
    msg: Box<libc::msghdr>,
    /// The file ranges (file index, offset, length), to check the files still hold them.
    ranges: Vec<(usize, u64, usize)>,
}

impl MappedJob {
    /// The send of the job `plan` lays out for torrent `id`, or `None` when a file is not
    /// mapped or a page of its data is not in the page cache (the job then takes the copy
    /// path). Checks residency once per run of file-contiguous parts, not per block, through
    /// the worker's [`Memo`].
    pub fn build(
        plan: &JobPlan,
        layout: &FileLayout,
        files: &DataFiles,
        memo: &mut Memo,
        id: &[u8; 20],
        now: Instant,
    ) -> Option<MappedJob> {
        let mut ranges = Vec::with_capacity(plan.runs.len());
        for r in &plan.runs {
            let file_len = layout.files.get(r.file)?.length;
            let map = files.mapped(r.file, file_len)?;
            let at = Range {
                file: r.file,
                offset: r.offset,
                len: r.bytes,
            };
            if !memo.resident(now, id, map, file_len, at) {
                return None;
            }
            ranges.push((r.file, r.offset, r.bytes));
        }
        let blocks = plan
            .parts
            .iter()
            .filter(|p| matches!(p, Part::Header { .. }))
            .count();
        // Filled before any iovec points into it, and never grown after.
        let mut headers = Vec::with_capacity(blocks * HEADER_LEN);
        for part in &plan.parts {
            if let Part::Header { req: r, .. } = *part {
                headers.extend_from_slice(&wire::piece_header(r.index, r.begin, r.length));
            }
        }
        let mut iovs: Vec<libc::iovec> = Vec::with_capacity(plan.parts.len());
        let mut header = 0usize;
        for part in &plan.parts {
            match *part {
                Part::Header { .. } => {
                    push(&mut iovs, headers[header..].as_ptr(), HEADER_LEN);
                    header += HEADER_LEN;
                }
                Part::Pad { mut len, .. } => {
                    while len > 0 {
                        let n = len.min(ZEROS.len());
                        push(&mut iovs, ZEROS.as_ptr(), n);
                        len -= n;
                    }
                }
                Part::File {
                    file, offset, len, ..
                } => {
                    let map = files.mapped(file, layout.files.get(file)?.length)?;
                    push(
                        &mut iovs,
                        map.wrapping_add(usize::try_from(offset).ok()?),
                        len,
                    );
                }
            }
        }
        Some(MappedJob::new(headers, iovs, ranges))
    }

    fn new(
        headers: Vec<u8>,
        iovs: Vec<libc::iovec>,
        ranges: Vec<(usize, u64, usize)>,
    ) -> MappedJob {
        let msg = libc::msghdr {
            msg_name: std::ptr::null_mut(),
            msg_namelen: 0,
            msg_iov: std::ptr::null_mut(),
            msg_iovlen: 0,
            msg_control: std::ptr::null_mut(),
            msg_controllen: 0,
            msg_flags: 0,
        };
        MappedJob {
            headers,
            iovs,
            first: 0,
            msg: Box::new(msg),
            ranges,
        }
    }

    /// The message for the next send: the iovecs not yet sent (at most [`IOV_MAX`]).
    pub fn message(&mut self) -> &libc::msghdr {
        let rest = &mut self.iovs[self.first..];
        self.msg.msg_iov = rest.as_mut_ptr();
        self.msg.msg_iovlen = rest.len().min(IOV_MAX) as _;
        &self.msg
    }

    /// Whether every file range still lies inside its file on disk (`fstat`, at most once per
    /// file in a batch of completions: see [`Memo::file_len`]), checked before each send: a
    /// file cut short after the job was laid out must not send its truncated bytes (a page cut
    /// in its middle is zero-filled in place; one cut away fails the send).
    pub fn files_cover(
        &self,
        files: &DataFiles,
        memo: &mut Memo,
        id: &[u8; 20],
        now: Instant,
    ) -> bool {
        self.ranges.iter().all(|&(file, offset, len)| {
            memo.file_len(now, id, files, file)
                .is_some_and(|size| offset + len as u64 <= size)
        })
    }

    /// `n` more bytes went out.
    pub fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(v) = self.iovs.get_mut(self.first) else {
                return;
            };
            if n >= v.iov_len {
                n -= v.iov_len;
                self.first += 1;
            } else {
                v.iov_base = v.iov_base.cast::<u8>().wrapping_add(n).cast();
                v.iov_len -= n;
                n = 0;
            }
        }
    }
}

/// A byte range of one of a torrent's files.
#[derive(Debug, Clone, Copy)]
pub struct Range {
    pub file: usize,
    pub offset: u64,
    pub len: usize,
}

/// Chunks of a file whose residency [`Memo`] remembers.
const CHUNK: u64 = 1 << 20;
/// How long a chunk found wholly in the page cache counts as still there. Pages a worker sends
/// from are at the hot end of the kernel's LRU lists, so one evicted within this time is rare;
/// if it happens, that send reads the page from disk inside the worker (a stall, never a
/// wrong byte).
const RESIDENT_FOR: Duration = Duration::from_secs(1);

/// What a worker learned from the kernel about its torrents' files, so that a busy worker asks
/// less often: which 1 MiB chunks were wholly in the page cache (`mincore`, remembered for
/// [`RESIDENT_FOR`]), and the files' sizes (`fstat`, remembered for one batch of completions:
/// every send checked in a batch is submitted with that batch, so the time between the check
/// and the kernel's copy is no longer than when each send asked on its own).
#[derive(Default)]
pub struct Memo {
    resident: HashMap<([u8; 20], usize, u64), Instant>,
    sizes_at: Option<Instant>,
    sizes: HashMap<([u8; 20], usize), u64>,
}

impl Memo {
    /// Whether every page of `at` (in the file mapped at `map`, `file_len` bytes long in the
    /// torrent) is in the page cache. Each 1 MiB chunk it touches is asked about whole, once a
    /// [`RESIDENT_FOR`]; a chunk only partly cached falls back to asking about `at` alone.
    pub fn resident(
        &mut self,
        now: Instant,
        id: &[u8; 20],
        map: *const u8,
        file_len: u64,
        at: Range,
    ) -> bool {
        if at.len == 0 {
            return true;
        }
        let first = at.offset / CHUNK;
        let last = (at.offset + at.len as u64 - 1) / CHUNK;
        for chunk in first..=last {
            let key = (*id, at.file, chunk);
            if self
                .resident
                .get(&key)
                .is_some_and(|t| now.saturating_duration_since(*t) < RESIDENT_FOR)
            {
                continue;
            }
            let start = chunk * CHUNK;
            let end = (start + CHUNK).min(file_len);
            let Ok(start_at) = usize::try_from(start) else {
                return false;
            };
            if end > start && resident(map.wrapping_add(start_at), (end - start) as usize) {
                self.resident.insert(key, now);
            } else {
                // Part of the chunk is not cached: ask about the range itself.
                let Ok(offset) = usize::try_from(at.offset) else {
                    return false;
                };
                return resident(map.wrapping_add(offset), at.len);
            }
        }
        true
    }

    /// The size of file `file` of torrent `id` on disk, asked once per batch of completions
    /// (`now` is the batch's time).
    pub fn file_len(
        &mut self,
        now: Instant,
        id: &[u8; 20],
        files: &DataFiles,
        file: usize,
    ) -> Option<u64> {
        if self.sizes_at != Some(now) {
            self.sizes.clear();
            self.sizes_at = Some(now);
        }
        if let Some(&len) = self.sizes.get(&(*id, file)) {
            return Some(len);
        }
        let len = files.file_len(file)?;
        self.sizes.insert((*id, file), len);
        Some(len)
    }

    /// Forgets what is too old to trust (once a second).
    pub fn prune(&mut self, now: Instant) {
        self.resident
            .retain(|_, t| now.saturating_duration_since(*t) < RESIDENT_FOR);
    }
}

/// How long a mapped job may take to leave, at the peer's pace: a job's requests are
/// committed (no shed, choke or paying peer's turn reaches them), so only a peer that takes
/// this much in a few milliseconds gets jobs larger than the copy path's batch.
const JOB_WINDOW: Duration = Duration::from_millis(5);

/// The batch of a peer's next mapped job, after its last one (`len` bytes) took `took` from
/// being laid out to its last byte in the socket: what the peer took in [`JOB_WINDOW`] at
/// that pace, between `floor` (the copy path's batch) and `cap` (`engine.mapped_batch_kib`).
/// Fewer, larger sends cost less CPU per GiB for a fast peer; a slow one (many peers sharing
/// the upload) keeps small jobs, so what it asked stays in its queue, where a shed or a choke
/// still reaches it.
pub fn next_batch(len: usize, took: Duration, floor: usize, cap: usize) -> usize {
    let secs = took.as_secs_f64();
    if secs <= 0.0 {
        return cap;
    }
    let pace = len as f64 / secs * JOB_WINDOW.as_secs_f64();
    bounded_batch(pace.min(cap as f64) as usize, floor, cap)
}

/// `batch` kept between `floor` (the copy path's batch, or `cap` when that is smaller) and
/// `cap`: the bounds of every mapped job's batch.
pub fn bounded_batch(batch: usize, floor: usize, cap: usize) -> usize {
    batch.clamp(floor.min(cap), cap)
}

/// Appends `len` bytes at `base` to the send, in the previous iovec when they follow it.
fn push(iovs: &mut Vec<libc::iovec>, base: *const u8, len: usize) {
    match iovs.last_mut() {
        Some(v) if v.iov_base.cast::<u8>().wrapping_add(v.iov_len).cast_const() == base => {
            v.iov_len += len
        }
        _ => iovs.push(libc::iovec {
            iov_base: base.cast_mut().cast(),
            iov_len: len,
        }),
    }
}

/// Whether every page of `len` bytes from `addr`, inside a file mapping, is in the page cache
/// (`mincore`). An error counts as not resident: the job then takes the copy path.
pub fn resident(addr: *const u8, len: usize) -> bool {
    if len == 0 {
        return true;
    }
    let start = addr as usize & !(PAGE - 1);
    let end = addr as usize + len;
    let mut at = start;
    let mut vec = [0u8; 64];
    while at < end {
        let pages = (end - at).div_ceil(PAGE).min(vec.len());
        // SAFETY: [at, at + pages pages) lies inside the caller's mapping (page-aligned down
        // from an address in it, up to the end of its range); `vec` has a byte per page.
        let rc = unsafe { libc::mincore(at as *mut libc::c_void, pages * PAGE, vec.as_mut_ptr()) };
        if rc != 0 || vec[..pages].iter().any(|b| b & 1 == 0) {
            return false;
        }
        at += pages * PAGE;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iov(buf: &mut [u8]) -> libc::iovec {
        libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        }
    }

    #[test]
    fn advancing_skips_sent_iovecs_and_trims_the_next() {
        let mut a = [1u8; 13];
        let mut b = [2u8; 100];
        let mut j = MappedJob::new(Vec::new(), vec![iov(&mut a), iov(&mut b)], Vec::new());
        assert_eq!(j.message().msg_iovlen, 2);
        j.advance(20);
        assert_eq!(j.message().msg_iovlen, 1);
        let first = j.iovs[j.first];
        assert_eq!(first.iov_len, 93);
        assert_eq!(first.iov_base as usize, b.as_ptr() as usize + 7);
        j.advance(93);
        assert_eq!(j.message().msg_iovlen, 0);
        j.advance(5); // past the end: nothing
    }

    #[test]
    fn a_job_of_many_iovecs_goes_in_sends_of_at_most_iov_max() {
        let mut bytes = vec![0u8; 2000];
        let iovs = bytes.chunks_mut(1).map(iov).collect();
        let mut j = MappedJob::new(Vec::new(), iovs, Vec::new());
        assert_eq!(j.message().msg_iovlen as usize, IOV_MAX);
        j.advance(1500);
        assert_eq!(j.message().msg_iovlen, 500);
    }

    /// The bytes a job's iovecs describe, in order (what its `sendmsg`s send).
    fn gather(j: &mut MappedJob) -> Vec<u8> {
        let m = j.message();
        // SAFETY: the iovecs point into the job's headers, the static zeros and a live mapping.
        let iovs = unsafe { std::slice::from_raw_parts(m.msg_iov, m.msg_iovlen as _) };
        let mut out = Vec::new();
        for v in iovs {
            // SAFETY: as above; each iovec is `iov_len` readable bytes.
            out.extend_from_slice(unsafe {
                std::slice::from_raw_parts(v.iov_base.cast::<u8>(), v.iov_len)
            });
        }
        out
    }

    #[test]
    fn a_mapped_job_is_its_headers_its_file_bytes_and_zeros_for_pads() {
        use crate::metainfo::{FileEntry, FileLayout};
        use crate::wire::BlockRequest;
        let dir = tempfile::tempdir().expect("tempdir");
        // Files of a MiB and more: smaller ones are not mapped (`storage::MAP_MIN_LEN`).
        let a: Vec<u8> = (0..1_100_000u32).map(|i| (i % 251) as u8).collect();
        let b: Vec<u8> = (0..1_050_000u32).map(|i| (i % 241) as u8 ^ 0x5a).collect();
        std::fs::write(dir.path().join("a"), &a).expect("write a");
        std::fs::write(dir.path().join("b"), &b).expect("write b");
        // A pad longer than the shared zeros (so it takes two iovecs) between the two files.
        let pad = 100_000u64;
        let files = vec![
            FileEntry::for_test("a", a.len() as u64, false),
            FileEntry::for_test("pad", pad, true),
            FileEntry::for_test("b", b.len() as u64, false),
        ];
        let layout = FileLayout::new(files, 4 << 20).expect("layout");
        let data = DataFiles::open(&layout, dir.path()).expect("open");
        let whole = [a.clone(), vec![0u8; pad as usize], b.clone()].concat();
        // Blocks across a → pad → b, one of them 128 KiB, and the last one short.
        let reqs = [
            BlockRequest {
                index: 0,
                begin: 1_090_000,
                length: 16_384,
            },
            BlockRequest {
                index: 0,
                begin: 1_106_384,
                length: 131_072,
            },
            BlockRequest {
                index: 0,
                begin: 2_237_456,
                length: 12_544,
            },
        ];
        let plan = crate::engine::coalesce::plan_job(&layout, &reqs);
        let mut memo = Memo::default();
        let now = Instant::now();
        let mut job = MappedJob::build(&plan, &layout, &data, &mut memo, &[7; 20], now)
            .expect("cached: just written");
        assert!(job.files_cover(&data, &mut memo, &[7; 20], now));
        let mut expected = Vec::new();
        for r in &reqs {
            expected.extend_from_slice(&wire::piece_header(r.index, r.begin, r.length));
            let at = r.begin as usize;
            expected.extend_from_slice(&whole[at..at + r.length as usize]);
        }
        let got = gather(&mut job);
        assert_eq!(got.len(), plan.len);
        assert!(got == expected, "the job's bytes differ from the torrent's");
    }

    #[test]
    fn a_fast_peer_gets_larger_mapped_jobs_and_a_slow_one_the_copy_batch() {
        let ms = Duration::from_millis;
        let (floor, cap) = (256 << 10, 1 << 20);
        // 1 MiB in 0.3 ms (3.3 GiB/s): the cap.
        assert_eq!(
            next_batch(1 << 20, Duration::from_micros(300), floor, cap),
            cap
        );
        // 256 KiB in 2 ms (125 MiB/s): 5 ms of it is 640 KiB.
        assert_eq!(next_batch(256 << 10, ms(2), floor, cap), 640 << 10);
        // 256 KiB in 100 ms (one of a thousand peers): the floor.
        assert_eq!(next_batch(256 << 10, ms(100), floor, cap), floor);
        // Within the same completion batch: as fast as can be told.
        assert_eq!(next_batch(1 << 20, Duration::ZERO, floor, cap), cap);
        // A cap below the copy batch wins.
        assert_eq!(next_batch(1 << 20, ms(100), floor, 64 << 10), 64 << 10);
    }

    #[test]
    fn resident_sees_cached_pages_and_not_the_uncached_ones() {
        use std::io::Write;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let mut f = std::fs::File::create(&path).expect("create");
        f.write_all(&vec![7u8; 64 << 10]).expect("write");
        // A sparse tail: a hole, which is not in the page cache until read.
        f.set_len(1 << 30).expect("extend");
        drop(f);
        let f = std::fs::File::open(&path).expect("open");
        // SAFETY: a private test file, read-only, never read through Rust references.
        let map = unsafe { memmap2::MmapOptions::new().len(1 << 30).map(&f) }.expect("map");
        assert!(resident(map.as_ptr(), 64 << 10), "just written: cached");
        assert!(
            resident(map.as_ptr().wrapping_add(100), 5000),
            "unaligned start"
        );
        assert!(
            !resident(map.as_ptr().wrapping_add(512 << 20), 4096),
            "a hole never read"
        );
        assert!(resident(map.as_ptr(), 0));
    }
}

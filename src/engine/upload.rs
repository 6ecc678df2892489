//! Upload jobs: a batch of one peer's requests laid out for one send, the memory they take, and
//! the rate-limit tokens they spend.
//!
//! On the copy path a job holds the 13-byte piece headers and the block data back to back in
//! one buffer from [`JobMemory`] (a per-worker budget, a pool of buffers kept for reuse, and
//! the queue of peers waiting for memory), read in with one `readv` per run of
//! file-contiguous spans. On the `mmap` path it holds only its headers (in [`MappedJob`]),
//! sent together with the data straight from the files' mappings (see `mapped.rs`): it takes
//! no job memory, so it may carry a larger batch.
//! [`Tokens`] takes rate-limit tokens and gives them back unless the job starts, so no early
//! exit can leak them.

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::time::Instant;

use super::coalesce;
use super::mapped::MappedJob;
use super::peer::Queued;
use super::ratelimit::TokenBucket;
use crate::storage::DataFiles;
use crate::wire;

/// One upload job: headers and blocks laid out back to back, ready for one send.
pub struct Job {
    pub seq: u32,
    /// Copy path: the job's bytes (headers, pads and data), from the worker's job memory.
    /// Empty on the `mmap` path (the headers are in [`MappedJob`]).
    pub buf: Vec<u8>,
    /// Bytes of the job on the wire (headers, pad and data).
    pub len: usize,
    /// Kept alive while reads are in flight: the kernel reads these iovecs.
    pub iovecs: Vec<libc::iovec>,
    /// Reads to post: one `readv` per run of file-contiguous spans.
    pub reads: Vec<Read>,
    pub reads_pending: u32,
    pub read_expected: usize,
    pub read_done: usize,
    pub read_failed: bool,
    pub sent: usize,
    /// The requests it answers, with the time each arrived (latency and accounting).
    pub blocks: Vec<Queued>,
    /// `mmap` path: one `sendmsg` of the headers and the mapped file data.
    pub mapped: Option<MappedJob>,
    /// When it was laid out (a mapped job's pace sizes the peer's next one).
    pub started: Instant,
}

/// One `readv` of a job: `count` iovecs from `first`, `bytes` long, at `offset` of `fd`.
#[derive(Debug, Clone, Copy)]
pub struct Read {
    pub fd: RawFd,
    pub offset: u64,
    pub first: usize,
    pub count: usize,
    pub bytes: usize,
}

/// Why a job could not be laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MissingFile;

impl Job {
    /// A job on the copy path for `blocks` (all valid requests of `layout`'s torrent, laid out
    /// in `plan`): writes the headers and pad zeros into `buf` (job memory, at least
    /// `plan.len` bytes) and plans one `readv` per run of file-contiguous spans. A file that is
    /// not open fails the job and hands `buf` back.
    pub fn copy(
        seq: u32,
        now: Instant,
        mut buf: Vec<u8>,
        blocks: Vec<Queued>,
        plan: &coalesce::JobPlan,
        files: &DataFiles,
    ) -> Result<Job, (Vec<u8>, MissingFile)> {
        for part in &plan.parts {
            match *part {
                coalesce::Part::Header { at, req: r } => buf[at..at + 13]
                    .copy_from_slice(&wire::piece_header(r.index, r.begin, r.length)),
                coalesce::Part::Pad { at, len } => buf[at..at + len].fill(0),
                coalesce::Part::File { .. } => {}
            }
        }
        let mut iovecs: Vec<libc::iovec> = Vec::new();
        for part in &plan.parts {
            if let coalesce::Part::File { at, len, .. } = *part {
                iovecs.push(libc::iovec {
                    iov_base: buf[at..].as_mut_ptr().cast(),
                    iov_len: len,
                });
            }
        }
        let mut reads = Vec::with_capacity(plan.runs.len());
        for r in &plan.runs {
            let Some(fd) = files.raw_fd(r.file) else {
                return Err((buf, MissingFile));
            };
            reads.push(Read {
                fd,
                offset: r.offset,
                first: r.first,
                count: r.count,
                bytes: r.bytes,
            });
        }
        Ok(Job {
            seq,
            len: plan.len,
            buf,
            iovecs,
            reads_pending: reads.len() as u32,
            read_expected: reads.iter().map(|r| r.bytes).sum(),
            reads,
            read_done: 0,
            read_failed: false,
            sent: 0,
            blocks,
            mapped: None,
            started: now,
        })
    }

    /// A job on the `mmap` path: `send` (from [`MappedJob::build`]) holds its headers and points
    /// at its data in the mappings; it takes no job memory and has nothing to read.
    pub fn mapped(seq: u32, now: Instant, blocks: Vec<Queued>, len: usize, send: MappedJob) -> Job {
        Job {
            seq,
            buf: Vec::new(),
            len,
            iovecs: Vec::new(),
            reads: Vec::new(),
            reads_pending: 0,
            read_expected: 0,
            read_done: 0,
            read_failed: false,
            sent: 0,
            blocks,
            mapped: Some(send),
            started: now,
        }
    }

    /// The job is done with (sent, or its peer closed): a copy job's buffer goes back to the
    /// worker's job memory (a mapped job took none).
    pub fn release(self, memory: &mut JobMemory) {
        if self.mapped.is_none() {
            memory.give_back(self.buf);
        }
    }

    /// Piece payload bytes of the job (without headers).
    pub fn payload(&self) -> u64 {
        (self.len - coalesce::HEADER_LEN * self.blocks.len()) as u64
    }

    /// A read completed with `res` (bytes or -errno). `Some(ok)` once the last read is in:
    /// `ok` when every byte expected was read.
    pub fn read_done(&mut self, res: i32) -> Option<bool> {
        self.reads_pending = self.reads_pending.saturating_sub(1);
        if res < 0 {
            self.read_failed = true;
        } else {
            self.read_done += res as usize;
        }
        (self.reads_pending == 0)
            .then_some(!self.read_failed && self.read_done == self.read_expected)
    }

    pub fn ready_to_send(&self) -> bool {
        self.reads_pending == 0
    }
}

/// Job memory of one worker: bounded, so thousands of busy peers cannot each pin a batch
/// buffer; past the budget a peer waits its turn in a queue.
pub struct JobMemory {
    budget: usize,
    /// A job's least buffer (the batch size): what a waiting peer needs to start one.
    batch: usize,
    /// Bytes of buffers handed out (in flight, or held for zero-copy notifications).
    in_use: usize,
    /// Buffers kept for reuse while under half the budget: fresh ones cost page zeroing.
    pool: Vec<Vec<u8>>,
    pooled: usize,
    /// Peers (slots) waiting for memory, oldest first; each is in at most once (the caller
    /// keeps a flag).
    waiting: VecDeque<usize>,
}

impl JobMemory {
    pub fn new(budget: usize, batch: usize) -> JobMemory {
        JobMemory {
            budget,
            batch,
            in_use: 0,
            pool: Vec::new(),
            pooled: 0,
            waiting: VecDeque::new(),
        }
    }

    /// A buffer of at least `size` bytes, or `None` over the budget, or while peers wait for
    /// memory and the caller is not one of them being woken (`turn`): a peer that just finished
    /// a job would otherwise take the memory it freed again and again, ahead of the queue.
    pub fn take(&mut self, size: usize, turn: bool) -> Option<Vec<u8>> {
        if self.in_use + size > self.budget || (!turn && !self.waiting.is_empty()) {
            return None;
        }
        let mut buf = self.pool.pop().unwrap_or_default();
        self.pooled = self.pooled.saturating_sub(buf.len());
        if buf.len() < size {
            buf.resize(size, 0);
        }
        self.in_use += buf.len();
        Some(buf)
    }

    /// A buffer comes back; kept for reuse while the pool is under half the budget.
    pub fn give_back(&mut self, buf: Vec<u8>) {
        self.in_use = self.in_use.saturating_sub(buf.len());
        if self.pooled + buf.len() <= self.budget / 2 {
            self.pooled += buf.len();
            self.pool.push(buf);
        }
    }

    /// `slot` waits for memory.
    pub fn wait(&mut self, slot: usize) {
        self.waiting.push_back(slot);
    }

    /// The peers that may try again now, oldest first: as many as the free memory can give a
    /// batch each.
    pub fn wake(&mut self) -> Vec<usize> {
        if self.waiting.is_empty() {
            return Vec::new();
        }
        let mut left = self.budget.saturating_sub(self.in_use);
        let mut out = Vec::new();
        while left >= self.batch {
            let Some(slot) = self.waiting.pop_front() else {
                break;
            };
            left -= self.batch;
            out.push(slot);
        }
        out
    }

    pub fn in_use(&self) -> usize {
        self.in_use
    }

    /// Whether less than half the budget is out: only then may a choked peer (served for its
    /// allowed-fast pieces) start a job, so such peers never hold the memory unchoked peers need.
    pub fn under_half(&self) -> bool {
        self.in_use < self.budget / 2
    }
}

/// Rate-limit tokens taken from the global and the torrent's bucket for one job; given back
/// when dropped unless [`Tokens::spend`] was called, so a job that does not start (no memory,
/// a closed peer, a missing file) never leaks them.
pub struct Tokens<'a> {
    global: &'a TokenBucket,
    torrent: &'a TokenBucket,
    n: u64,
    spent: bool,
}

/// Which bucket had too few tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Global,
    Torrent,
}

impl<'a> Tokens<'a> {
    /// Takes `n` from both buckets, or from neither.
    pub fn take(
        global: &'a TokenBucket,
        torrent: &'a TokenBucket,
        n: u64,
        now: Instant,
    ) -> Result<Tokens<'a>, Refused> {
        if !global.try_take(n, now) {
            return Err(Refused::Global);
        }
        if !torrent.try_take(n, now) {
            global.give_back(n);
            return Err(Refused::Torrent);
        }
        Ok(Tokens {
            global,
            torrent,
            n,
            spent: false,
        })
    }

    /// The job started: the tokens are used.
    pub fn spend(mut self) {
        self.spent = true;
    }
}

impl Drop for Tokens<'_> {
    fn drop(&mut self) {
        if !self.spent {
            self.global.give_back(self.n);
            self.torrent.give_back(self.n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_memory_is_bounded_and_wakes_waiters_as_it_frees() {
        let mut m = JobMemory::new(1000, 300);
        let a = m.take(400, false).expect("within budget");
        let b = m.take(400, false).expect("within budget");
        assert!(m.take(400, false).is_none(), "over budget");
        m.wait(7);
        m.wait(9);
        assert!(m.wake().is_empty(), "200 free: less than a batch");
        m.give_back(a);
        // While peers wait, memory goes to them first: not to whoever asks next.
        assert!(m.take(300, false).is_none(), "the queue goes first");
        assert_eq!(m.wake(), [7, 9], "600 free: two batches");
        assert!(m.wake().is_empty());
        // The pool keeps at most half the budget for reuse.
        m.give_back(b);
        assert_eq!(m.in_use(), 0);
        let c = m.take(100, false).expect("pooled buffer");
        assert_eq!(c.len(), 400, "a pooled buffer is reused");
    }

    #[test]
    fn tokens_come_back_unless_spent() {
        let now = Instant::now();
        // 100 ms of burst: 1000 tokens; `now` precedes the buckets, so nothing refills.
        let g = TokenBucket::new(10_000);
        let t = TokenBucket::new(0);
        let first = Tokens::take(&g, &t, 600, now).expect("tokens");
        assert_eq!(Tokens::take(&g, &t, 600, now).err(), Some(Refused::Global));
        drop(first);
        let again = Tokens::take(&g, &t, 600, now).expect("given back on drop");
        again.spend();
        assert!(Tokens::take(&g, &t, 600, now).is_err(), "spent stays spent");
        // One bucket refusing gives the other's tokens back at once.
        let g2 = TokenBucket::new(0);
        let t2 = TokenBucket::new(1000);
        assert_eq!(
            Tokens::take(&g2, &t2, 600, now).err(),
            Some(Refused::Torrent)
        );
        assert!(Tokens::take(&g2, &t2, 100, now).is_ok());
    }
}

//! Pipes for the splice path: one per upload job, from a per-worker pool.
//!
//! A splice job fills its own pipe with the whole job (piece headers written from a buffer,
//! block data spliced from the page cache) in one linked chain, then splices the pipe into the
//! socket. With a pipe per job, the next job of a peer fills while the previous one drains, and
//! no page-cache byte is copied into user memory.
//!
//! A pipe holds a fixed number of *slots* (one page each): a spliced file range takes a slot per
//! page it touches, a write of headers a slot per page of bytes. A job must fit its pipe whole:
//! the chain's steps run one after another and nothing drains the pipe before the last one, so
//! a job that needs more slots than the pipe has is built for the copy path instead. The write
//! end is non-blocking, so a miscount fails that job (a short step) instead of hanging.

use std::os::fd::OwnedFd;

use nix::fcntl::{FcntlArg, OFlag, fcntl};

/// Bytes asked of the kernel per pipe: 128 slots, a 256 KiB job of 16 KiB blocks (16 × (4
/// pages + 1 header)) with room to spare. `fs.pipe-user-pages-soft` (16384 pages by default)
/// caps what an unprivileged user's pipes hold in all; past it the kernel refuses the size and
/// the pipe keeps its default 16 slots, which fits fewer jobs (the rest take the copy path).
const PIPE_BYTES: i32 = 512 << 10;
const PAGE: usize = 4096;
/// Free pipes kept for reuse per worker (two descriptors each).
const POOL_KEEP: usize = 64;

/// One job's pipe.
pub struct Pipe {
    pub read: OwnedFd,
    pub write: OwnedFd,
    /// Pages it holds.
    pub slots: usize,
}

impl Pipe {
    fn new() -> std::io::Result<Pipe> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        // Only the write end is non-blocking (the two ends are separate open files): filling
        // never waits, while the splice to the socket may wait for the socket's room.
        fcntl(&write, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
        let bytes = fcntl(&write, FcntlArg::F_SETPIPE_SZ(PIPE_BYTES))
            .or_else(|_| fcntl(&write, FcntlArg::F_GETPIPE_SZ))?;
        Ok(Pipe {
            read,
            write,
            slots: bytes as usize / PAGE,
        })
    }
}

/// The worker's pipes: made on demand, kept for reuse once their job is fully sent (an empty
/// pipe); a pipe whose job ended midway is dropped, with whatever it held.
pub struct PipePool {
    free: Vec<Pipe>,
    /// The longest chain a job may post (the submission queue must take it in one go).
    max_links: usize,
}

impl PipePool {
    pub fn new(ring_entries: usize) -> PipePool {
        PipePool {
            free: Vec::new(),
            max_links: ring_entries / 2,
        }
    }

    /// A pipe for a job needing `slots` slots in `links` steps, or `None` when it cannot fit
    /// (the job then takes the copy path) or no pipe can be made (descriptor or pipe limits).
    pub fn take(&mut self, slots: usize, links: usize) -> Option<Pipe> {
        if links > self.max_links {
            return None;
        }
        let pipe = match self.free.pop() {
            Some(p) => p,
            None => Pipe::new().ok()?,
        };
        if slots <= pipe.slots {
            Some(pipe)
        } else {
            self.give_back(pipe);
            None
        }
    }

    /// A pipe whose job was fully sent (so it is empty) comes back.
    pub fn give_back(&mut self, pipe: Pipe) {
        if self.free.len() < POOL_KEEP {
            self.free.push(pipe);
        }
    }
}

/// Slots a write of `len` buffer bytes may take: a page each (it may merge into a previous
/// written page, never into a spliced one, so this is the most).
pub fn write_slots(len: usize) -> usize {
    len.div_ceil(PAGE)
}

/// Slots a splice of `len` bytes at file `offset` takes: one per page touched.
pub fn splice_slots(offset: u64, len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    ((offset % PAGE as u64) as usize + len).div_ceil(PAGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_count_every_page_a_range_touches() {
        assert_eq!(splice_slots(0, 16384), 4);
        assert_eq!(splice_slots(1, 16384), 5, "unaligned: one more page");
        assert_eq!(splice_slots(4095, 2), 2);
        assert_eq!(splice_slots(4096, 1), 1);
        assert_eq!(splice_slots(7, 0), 0);
        assert_eq!(write_slots(13), 1);
        assert_eq!(write_slots(4097), 2);
    }

    #[test]
    fn a_job_too_big_for_a_pipe_gets_none_and_pipes_are_reused() {
        let mut pool = PipePool::new(64);
        assert!(pool.take(1, 33).is_none(), "more links than half the ring");
        let p = pool.take(8, 16).expect("a pipe");
        assert!(p.slots >= 16, "at least the kernel's default of 16 pages");
        let slots = p.slots;
        pool.give_back(p);
        assert!(
            pool.take(slots + 1, 1).is_none(),
            "more slots than a pipe holds"
        );
        assert_eq!(pool.free.len(), 1, "the pipe that did not fit stays pooled");
        let again = pool.take(slots, 1).expect("the pooled pipe");
        assert_eq!(again.slots, slots);
        assert!(pool.free.is_empty());
    }
}

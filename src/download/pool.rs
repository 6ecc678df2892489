//! A worker's spare piece buffers: the buffers of pieces written, discarded or dropped, kept
//! for new parts so that a download does not send every piece's buffer through the allocator
//! (which hands large blocks back to the kernel and faults fresh zeroed pages in for the next
//! one: 6 % of a download's CPU in `clear_page_erms`, measured).
//!
//! Bounds: the spares and the buffers in use together stay within the worker's download
//! budget (`download_memory`), so pooling never holds more than the budget already allows in
//! flight; and once nothing has been in flight for [`IDLE_DROP`] the spares are freed, so a
//! worker that only seeds holds none.

use std::time::{Duration, Instant};

use super::buf::PieceBuf;

/// Spares are freed after this long with no part and no write on the worker.
pub const IDLE_DROP: Duration = Duration::from_secs(10);

/// Spare buffers, by size (a torrent's pieces have one size but its last; torrents differ).
#[derive(Debug, Default)]
pub struct Pool {
    bufs: Vec<PieceBuf>,
    /// Bytes of `bufs`.
    bytes: usize,
    /// Since when nothing was in flight, if nothing is.
    idle_since: Option<Instant>,
}

impl Pool {
    /// Bytes held in spares.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.bufs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bufs.is_empty()
    }

    /// A spare of exactly `size` bytes, if one is kept.
    pub fn take(&mut self, size: usize) -> Option<PieceBuf> {
        let i = self.bufs.iter().rposition(|b| b.len() == size)?;
        let b = self.bufs.swap_remove(i);
        self.bytes -= b.len();
        Some(b)
    }

    /// Keeps `buf` for reuse if it fits beside the `in_use` bytes of parts and writes within
    /// `budget`; else it is freed.
    pub fn keep(&mut self, buf: PieceBuf, in_use: usize, budget: usize) {
        if in_use + self.bytes + buf.len() <= budget {
            self.bytes += buf.len();
            self.bufs.push(buf);
        }
    }

    /// Frees spares until they fit beside `in_use` bytes within `budget` (the parts in use
    /// grew by a buffer no spare could serve), the ones of another size than `size` first.
    pub fn trim(&mut self, in_use: usize, budget: usize, size: usize) {
        while in_use + self.bytes > budget {
            let i = self.bufs.iter().position(|b| b.len() != size).unwrap_or(0);
            if i >= self.bufs.len() {
                break;
            }
            let b = self.bufs.swap_remove(i);
            self.bytes -= b.len();
        }
    }

    /// Called now and then (once a second) with whether anything is in flight: after
    /// [`IDLE_DROP`] of nothing in flight, every spare is freed. Returns the bytes freed.
    pub fn idle(&mut self, busy: bool, now: Instant) -> usize {
        if busy {
            self.idle_since = None;
            return 0;
        }
        let since = *self.idle_since.get_or_insert(now);
        if now.saturating_duration_since(since) < IDLE_DROP || self.bufs.is_empty() {
            return 0;
        }
        let freed = self.bytes;
        self.bufs = Vec::new();
        self.bytes = 0;
        freed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn spares_and_buffers_in_use_stay_within_the_budget() {
        let budget = 8 * MIB;
        let mut pool = Pool::default();
        // Eight pieces in flight fill the budget: none of their buffers can be kept until
        // they are given back, and each given back is kept (in use + spares = 8 MiB).
        for in_use in (0..8).rev() {
            pool.keep(PieceBuf::zeroed(MIB), in_use * MIB, budget);
            assert_eq!(pool.bytes(), (8 - in_use) * MIB);
        }
        assert_eq!(pool.len(), 8);
        // A ninth would pass the budget: freed.
        pool.keep(PieceBuf::zeroed(MIB), 0, budget);
        assert_eq!(pool.len(), 8);
        // Taking one hands over a buffer of that size only (the budget's sum is unchanged:
        // the caller counts it in use again).
        assert!(pool.take(MIB / 2).is_none());
        let b = pool.take(MIB).unwrap();
        assert_eq!((b.len(), pool.bytes()), (MIB, 7 * MIB));
        // A part of another size (a torrent's last piece, another torrent) allocated anew:
        // spares are freed until the sum fits again, other sizes first.
        pool.keep(PieceBuf::zeroed(MIB / 2), MIB, budget);
        assert_eq!(pool.bytes(), 7 * MIB, "kept past the budget");
        pool.keep(PieceBuf::zeroed(MIB / 2), MIB / 2, budget);
        assert_eq!(pool.bytes(), 7 * MIB + MIB / 2);
        // Parts in use grow to 2.5 MiB with no spare to serve them.
        pool.trim(2 * MIB + MIB / 2, budget, MIB);
        assert_eq!(pool.bytes(), 5 * MIB);
        assert!(pool.bufs.iter().all(|b| b.len() == MIB));
        // In use beyond the budget (one part always fits): no spare at all.
        pool.trim(12 * MIB, budget, MIB);
        assert!(pool.is_empty() && pool.bytes() == 0);
        pool.keep(PieceBuf::zeroed(MIB), 12 * MIB, budget);
        assert!(pool.is_empty());
    }

    #[test]
    fn spares_are_freed_after_a_while_with_nothing_in_flight() {
        let t0 = Instant::now();
        let mut pool = Pool::default();
        for _ in 0..4 {
            pool.keep(PieceBuf::zeroed(MIB), 0, 64 * MIB);
        }
        assert_eq!(pool.idle(false, t0), 0);
        assert_eq!(pool.idle(false, t0 + IDLE_DROP / 2), 0);
        // Busy again: the wait starts over.
        assert_eq!(pool.idle(true, t0 + IDLE_DROP / 2), 0);
        assert_eq!(pool.idle(false, t0 + IDLE_DROP), 0);
        assert_eq!(pool.len(), 4);
        assert_eq!(pool.idle(false, t0 + 2 * IDLE_DROP), 4 * MIB);
        assert!(pool.is_empty() && pool.bytes() == 0);
    }
}

//! A worker's share of the downloads: the pieces it is assembling (per torrent), the memory they
//! hold, and the writes in flight. Connections ask it for blocks to request and hand it the
//! blocks that arrive (`conn/fetch.rs`); the worker routes write completions here and tells its
//! peers `have` for every piece any worker finished.
//!
//! A piece's life on a worker:
//!
//! ```text
//!  claimed (picker) ─► Part: blocks requested, received, SHA-1 advancing
//!       ─► complete ─► check ─ bad ─► blame the senders, start over (claim kept)
//!                          └ good ─► write token (`begin_write`: one worker per piece)
//!                                     ─► Write: io_uring writes of each file span
//!                                     ─► all written ─► verified bit, done log
//! ```
//!
//! A part whose peer left, choked or snubbed us is continued by another peer of the worker;
//! one that no peer here continues is given up by [`Fetches::sweep`] (see
//! [`crate::download::orphan`]).

use foldhash::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Torrent;
use super::WorkerStats;
use crate::download::buf::{self, PieceBuf, Split};
use crate::download::orphan::{self, Look, Verdict};
use crate::download::part::Part;
use crate::download::pool::Pool;
use crate::pieces::PieceTable;
use crate::sha1x16;
use crate::uring::{Op, UserData, ops};
use crate::wire::BlockRequest;
use io_uring::IoUring;

/// One torrent's pieces in progress on this worker.
#[derive(Default)]
pub(crate) struct Fetching {
    pub parts: HashMap<u32, Part>,
    /// Parts with blocks nobody was asked for (and maybe some without any more: pruned as they
    /// are met), so asking for a block does not look at every part. Every part with such
    /// blocks is here (`Part::listed`).
    open: Vec<u32>,
    /// How far into the torrent's done log this worker's peers have been told.
    pub told: usize,
}

/// What [`Fetching::sweep`] did.
#[derive(Debug, Default)]
pub(crate) struct Swept {
    /// Claims given up, blocks kept.
    pub released: u32,
    /// Parts freed (their claims given up).
    pub dropped: Vec<Part>,
}

impl Fetching {
    /// Adds a new part (asked of `owner` already, so not idle).
    pub fn insert(&mut self, mut p: Part, now: Instant) {
        p.touched = Some(now);
        let i = p.index;
        self.parts.insert(i, p);
        self.list(i);
    }

    /// Puts part `i` on the open list if it has blocks nobody was asked for.
    fn list(&mut self, i: u32) {
        if let Some(p) = self.parts.get_mut(&i)
            && p.has_missing()
            && !p.listed
        {
            p.listed = true;
            self.open.push(i);
        }
    }

    /// Requests that came back (a choke, a reject, a stall, a peer gone): their blocks are
    /// free for others.
    pub fn give_back(&mut self, reqs: &[BlockRequest]) {
        for r in reqs {
            if let Some(p) = self.parts.get_mut(&r.index) {
                p.unrequest(r.begin / crate::wire::BLOCK_SIZE);
                self.list(r.index);
            }
        }
    }

    /// The peer in `slot` no longer fetches its parts (it left, choked or snubbed us): another
    /// peer of the worker may continue them.
    pub fn disown(&mut self, slot: usize) {
        for p in self.parts.values_mut() {
            if p.owner == Some(slot) {
                p.owner = None;
            }
        }
    }

    /// The next block of a part already started that the peer in `slot` may fetch (`may_ask`):
    /// its own parts first, then one nobody owns, which it then owns if `adopt` (claiming the
    /// piece again if its claim was given up; without `adopt` it only takes a block). Returns
    /// the request, and whether a part was adopted.
    pub fn next_open(
        &mut self,
        slot: usize,
        may_ask: impl Fn(u32) -> bool,
        adopt: bool,
        table: &PieceTable,
        now: Instant,
    ) -> Option<(BlockRequest, bool)> {
        let mut k = 0;
        let mut orphans = false;
        while k < self.open.len() {
            let i = self.open[k];
            let Some(p) = self.parts.get_mut(&i).filter(|p| p.has_missing()) else {
                if let Some(p) = self.parts.get_mut(&i) {
                    p.listed = false;
                }
                self.open.swap_remove(k);
                continue;
            };
            if may_ask(i) {
                if p.owner == Some(slot)
                    && let Some(b) = p.next_missing()
                {
                    p.touched = Some(now);
                    return Some((p.block(b), false));
                }
                orphans |= p.owner.is_none();
            }
            k += 1;
        }
        if !orphans {
            return None;
        }
        for &i in &self.open {
            let Some(p) = self.parts.get_mut(&i) else {
                continue;
            };
            if p.owner.is_some() || !p.has_missing() || !may_ask(i) {
                continue;
            }
            // A part whose claim was given up is ours again only if nobody claimed it since
            // (else the sweep drops it). An endgame copy of another worker's piece is not
            // adopted either: endgame requests go to any peer anyway.
            if !p.claimed {
                if !table.claim(i) {
                    continue;
                }
                p.claimed = true;
            }
            if adopt {
                p.owner = Some(slot);
            }
            let b = p.next_missing()?;
            p.touched = Some(now);
            return Some((p.block(b), adopt));
        }
        None
    }

    /// Endgame, for a peer that delivers: a block nobody was asked for, or one asked of
    /// fewer than `max_copies` peers and not of this one (`asked(index, block)`), of any part
    /// it may ask (`may_ask`), its own included (a block of a part it adopted may be in flight
    /// to a snubbed peer only). The caller keeps snubbed peers out: a copy asked of one that
    /// never answers fills a copy slot for nothing.
    pub fn next_copy(
        &mut self,
        may_ask: impl Fn(u32) -> bool,
        asked: impl Fn(u32, u32) -> bool,
        max_copies: u8,
        now: Instant,
    ) -> Option<BlockRequest> {
        for p in self.parts.values_mut() {
            if !may_ask(p.index) {
                continue;
            }
            let index = p.index;
            if let Some(b) = p
                .next_missing()
                .or_else(|| p.next_duplicate(|b| asked(index, b), max_copies))
            {
                p.touched = Some(now);
                return Some(p.block(b));
            }
        }
        None
    }

    /// Once a second: parts nobody has fetched for a while are kept, released or dropped (see
    /// [`crate::download::orphan`]); `usable(i)`: a peer of this worker has piece `i`.
    pub fn sweep(
        &mut self,
        table: &PieceTable,
        now: Instant,
        timeout: Duration,
        usable: impl Fn(u32) -> bool,
    ) -> Swept {
        let mut out = Swept::default();
        let mut gone = Vec::new();
        for (&i, p) in self.parts.iter_mut() {
            let look = Look {
                in_flight: p.in_flight(),
                idle: p
                    .touched
                    .map_or(Duration::MAX, |t| now.saturating_duration_since(t)),
                held: p.claimed,
                held_elsewhere: !p.claimed && table.claimed(i),
                done: table.written(i),
            };
            match orphan::verdict(look, timeout, || usable(i)) {
                Verdict::Keep => {}
                Verdict::Release => {
                    table.release(i);
                    p.claimed = false;
                    p.owner = None;
                    out.released += 1;
                }
                Verdict::Drop => gone.push(i),
            }
        }
        for i in gone {
            if let Some(p) = self.parts.remove(&i) {
                if p.claimed {
                    table.release(i);
                }
                out.dropped.push(p);
            }
        }
        out
    }
}

/// A verified piece on its way to disk.
struct Write {
    torrent: Arc<Torrent>,
    index: u32,
    /// The piece's bytes; the kernel reads from here until every span completes.
    buf: PieceBuf,
    spans: Vec<Span>,
    pending: u32,
    error: Option<String>,
    /// The part held the piece's claim (an endgame copy does not): given up if the write fails.
    claimed: bool,
}

/// One file's part of a piece write.
struct Span {
    fd: std::os::fd::RawFd,
    file: usize,
    /// Offset in the file, and the range of the piece buffer.
    offset: u64,
    start: usize,
    len: usize,
    /// Bytes written so far (a short write is continued).
    done: usize,
    /// Written through the file's `O_DIRECT` descriptor (whole pages only).
    direct: bool,
}

/// The worker's downloads.
#[derive(Default)]
pub(crate) struct Fetches {
    pub torrents: HashMap<[u8; 20], Fetching>,
    /// Bytes of part and write buffers in use.
    pub memory: usize,
    /// The worker's budget for `memory` plus the spares (`download_memory`).
    budget: usize,
    /// Whole pages of pieces are written with `O_DIRECT` (`download_writes = "direct"`).
    direct: bool,
    writes: Vec<Option<Write>>,
    free_writes: Vec<usize>,
    /// Addresses banned since the worker last closed their connections.
    pub banned: Vec<([u8; 20], IpAddr)>,
    /// Blocks that arrived while other peers were asked for them too (endgame): those
    /// requests are cancelled.
    pub cancels: Vec<([u8; 20], crate::wire::BlockRequest)>,
    /// A piece was written since the worker last told its peers.
    pub news: bool,
    /// Buffers of written, discarded and dropped pieces, used again for new parts (in use and
    /// spare together within `budget`; freed when the worker has been idle a while).
    spare: Pool,
    /// Complete pieces waiting to be hashed together ([`hash_in_lanes`]), oldest first, and
    /// their bytes (counted in `memory` too).
    hashing: Vec<Waiting>,
    hashing_bytes: usize,
}

/// A complete piece waiting for its SHA-1.
struct Waiting {
    torrent: Arc<Torrent>,
    part: Part,
    since: Instant,
}

/// Largest single write: a piece goes to disk in writes of this size. Measured on this VM
/// (dd of 2 GiB into a fresh ext4 file on one core, CPU-s): 16 KiB writes 0.72–1.08,
/// 128–512 KiB writes 0.55–0.58, 1 MiB writes 3.4–3.7 (large page-cache folios faulting on
/// the host). 256 KiB sits in the middle of the cheap range.
const WRITE_CHUNK: usize = 256 << 10;

/// Largest single `O_DIRECT` write (whole pages, no page-cache copy: larger is cheaper; dd of
/// 2 GiB with `oflag=direct` in 4 MiB writes on this VM: 0.21 CPU-s).
const DIRECT_CHUNK: usize = 4 << 20;

impl Fetches {
    /// A worker's downloads, with `budget` bytes for piece buffers (in use and spare), whose
    /// whole pages are written with `O_DIRECT` if `direct`.
    pub fn new(budget: usize, direct: bool) -> Fetches {
        Fetches {
            budget,
            direct,
            ..Fetches::default()
        }
    }

    /// A buffer of `size` bytes for a new part, counted in `memory`: a spare one of that size
    /// (not zeroed again: see `Part::with_buffer`), or a new one (then spares are freed until
    /// the budget holds both).
    pub fn buffer(&mut self, size: usize) -> PieceBuf {
        let buf = match self.spare.take(size) {
            Some(b) => b,
            None => {
                self.spare.trim(self.memory + size, self.budget, size);
                PieceBuf::zeroed(size)
            }
        };
        self.memory += size;
        buf
    }

    /// A buffer no longer in use (its bytes already out of `memory`): kept while the budget
    /// holds it.
    fn keep_spare(&mut self, buf: PieceBuf) {
        self.spare.keep(buf, self.memory, self.budget);
    }

    /// Once a second: spares are freed once nothing has been in flight for a while
    /// ([`crate::download::pool::IDLE_DROP`]).
    pub fn second(&mut self, now: Instant) {
        let busy = self.memory > 0 || self.writes_in_flight();
        self.spare.idle(busy, now);
    }

    /// Writes in flight: the worker does not stop before they complete (the kernel reads
    /// their buffers until then).
    pub fn writes_in_flight(&self) -> bool {
        self.free_writes.len() < self.writes.len()
    }

    /// Whether a new part of `size` bytes fits the budget (one part always does).
    pub fn has_room(&self, size: u64) -> bool {
        self.memory == 0 || self.memory as u64 + size <= self.budget as u64
    }

    /// Whether v1 pieces of `piece_len` bytes wait, once complete, to be hashed together in
    /// the lanes of [`sha1x16`] instead of advancing a SHA-1 as their blocks arrive: when the
    /// CPU has the lanes and enough pieces to beat SHA-NI ([`sha1x16::MIN_LANES`]) fit in half
    /// the budget (the other half keeps requests flowing while they wait).
    pub fn hash_in_lanes(&self, piece_len: u64) -> bool {
        sha1x16::available()
            && piece_len.saturating_mul(sha1x16::MIN_LANES as u64) <= self.budget as u64 / 2
    }

    /// Drops a torrent's parts (stopped, failed, removed), releasing their claims.
    pub fn drop_torrent(&mut self, t: &Torrent) {
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.hashing)
            .into_iter()
            .partition(|w| w.torrent.id == t.id);
        self.hashing = kept;
        for w in gone {
            self.hashing_bytes -= w.part.size() as usize;
            self.memory -= w.part.size() as usize;
            if w.part.claimed {
                t.pieces.release(w.part.index);
            }
        }
        if let Some(f) = self.torrents.remove(&t.id) {
            for (i, p) in f.parts {
                self.memory -= p.size() as usize;
                if p.claimed {
                    t.pieces.release(i);
                }
                self.keep_spare(p.into_buffer());
            }
        }
    }

    /// Once a second, for a torrent being fetched: gives up the parts nobody fetches (see
    /// [`Fetching::sweep`]); their buffers are kept for new parts.
    pub fn sweep(
        &mut self,
        t: &Torrent,
        now: Instant,
        timeout: Duration,
        stats: &WorkerStats,
        usable: impl Fn(u32) -> bool,
    ) {
        let Some(f) = self.torrents.get_mut(&t.id) else {
            return;
        };
        if f.parts.is_empty() {
            return;
        }
        let swept = f.sweep(&t.pieces, now, timeout, usable);
        stats.add(&stats.parts_released, u64::from(swept.released));
        stats.add(&stats.parts_dropped, swept.dropped.len() as u64);
        for p in swept.dropped {
            self.memory -= p.size() as usize;
            self.keep_spare(p.into_buffer());
        }
    }
}

/// What the check and write path needs of the worker: its ring, its counters and the time of
/// this pass of its loop.
pub(crate) struct Io<'a> {
    pub ring: &'a mut IoUring,
    pub stats: &'a WorkerStats,
    pub now: Instant,
}

impl Io<'_> {
    fn reborrow(&mut self) -> Io<'_> {
        Io {
            ring: &mut *self.ring,
            stats: self.stats,
            now: self.now,
        }
    }
}

/// Longest a complete piece waits for others to share the lanes with. At 600 MiB/s of 1 MiB
/// pieces, sixteen arrive in 27 ms; slower downloads hash what came in this time (SHA-NI one
/// by one below [`sha1x16::MIN_LANES`]).
const HASH_WAIT: Duration = Duration::from_millis(20);

impl Fetches {
    /// A part's last block arrived: check it (now, or with others in the lanes of
    /// [`sha1x16`]), then write it or start it over.
    pub fn piece_complete(&mut self, mut io: Io<'_>, t: &Arc<Torrent>, index: u32) {
        let Some(f) = self.torrents.get_mut(&t.id) else {
            return;
        };
        let Some(part) = f.parts.remove(&index) else {
            return;
        };
        if t.pieces.written(index) {
            // Another worker finished it first (endgame): this copy was for nothing.
            self.discard(io.stats, part);
            return;
        }
        if !part.needs_sha1(&t.meta.info) {
            self.checked(io, t, part, None);
            return;
        }
        self.hashing_bytes += part.size() as usize;
        self.hashing.push(Waiting {
            torrent: t.clone(),
            part,
            since: io.now,
        });
        if self.hashing.len() >= sha1x16::LANES || self.hashing_bytes >= self.budget / 2 {
            self.hash_waiting(io.reborrow());
        }
    }

    /// Whether this worker holds a part of piece `index` of torrent `id` (being fetched, or
    /// complete and waiting for its hash).
    pub fn has_part(&self, id: &[u8; 20], index: u32) -> bool {
        self.torrents
            .get(id)
            .is_some_and(|f| f.parts.contains_key(&index))
            || self
                .hashing
                .iter()
                .any(|w| w.torrent.id == *id && w.part.index == index)
    }

    /// Once a pass of the worker's loop: hashes the complete pieces waiting for lanes when the
    /// first has waited [`HASH_WAIT`], or when their torrents have no other piece being fetched
    /// here (nothing more of theirs would join them soon). Looks at the waiting pieces'
    /// torrents only (at most sixteen lookups), not at every torrent the worker ever fetched.
    pub fn hash_due(&mut self, io: Io<'_>) {
        let Some(first) = self.hashing.first() else {
            return;
        };
        let due = io.now.saturating_duration_since(first.since) >= HASH_WAIT;
        let idle = || {
            self.hashing.iter().all(|w| {
                self.torrents
                    .get(&w.torrent.id)
                    .is_none_or(|f| f.parts.is_empty())
            })
        };
        if due || idle() {
            self.hash_waiting(io);
        }
    }

    /// Hashes every waiting piece, sixteen at a time, and goes on with each as
    /// [`Fetches::piece_complete`] would have.
    fn hash_waiting(&mut self, mut io: Io<'_>) {
        let waiting = std::mem::take(&mut self.hashing);
        self.hashing_bytes = 0;
        let digests = {
            // Waiting parts are complete, so each shows its bytes (an empty digest would only
            // fail its check).
            let msgs: Vec<&[u8]> = waiting
                .iter()
                .map(|w| w.part.bytes().unwrap_or(&[]))
                .collect();
            sha1x16::sha1_many(&msgs)
        };
        let in_lanes = sha1x16::in_lanes(waiting.len());
        io.stats
            .add(&io.stats.pieces_hashed_in_lanes, in_lanes as u64);
        for (w, digest) in waiting.into_iter().zip(digests) {
            if w.torrent.pieces.written(w.part.index) {
                self.discard(io.stats, w.part);
                continue;
            }
            self.checked(io.reborrow(), &w.torrent, w.part, Some(digest));
        }
    }

    /// Checks a complete part (`sha1` is its digest when computed in the lanes), then writes
    /// it or starts it over.
    fn checked(&mut self, io: Io<'_>, t: &Arc<Torrent>, mut part: Part, sha1: Option<[u8; 20]>) {
        let index = part.index;
        let Some(f) = self.torrents.get_mut(&t.id) else {
            // The torrent left this worker meanwhile (its claims were given up then).
            self.memory -= part.size() as usize;
            self.keep_spare(part.into_buffer());
            return;
        };
        if !part.check(&t.meta.info, sha1) {
            io.stats.add(&io.stats.hash_failures, 1);
            t.fetch.hash_failures.fetch_add(1, Ordering::Relaxed);
            let banned = super::lock(&t.fetch.blame).piece_failed(part.senders());
            for ip in banned {
                tracing::warn!(torrent = %t.meta.info.name, %ip, "banned for sending bad data");
                self.banned.push((t.id, ip));
            }
            if let Some(other) = f.parts.get_mut(&index) {
                // A copy of it started here while it waited for the lanes (never, as endgame
                // copies skip `has_part`; kept safe anyway): that one goes on, with the claim.
                other.claimed |= part.claimed;
                self.memory -= part.size() as usize;
                self.keep_spare(part.into_buffer());
                return;
            }
            part.reset();
            f.parts.insert(index, part);
            f.list(index);
            return;
        }
        // Checked: whoever takes the token first writes the piece (two workers may finish
        // copies of it in endgame); the others' copies are for nothing. The token is one
        // `fetch_or` on the piece table's `writing` bits: exactly one worker sees it clear.
        if !t.pieces.begin_write(index) {
            self.discard(io.stats, part);
            return;
        }
        let claimed = part.claimed;
        let size = part.size() as usize;
        let buf = part.into_buffer();
        let stats = io.stats;
        if let Err(e) = self.write_piece(io, t, index, buf, claimed) {
            self.memory -= size;
            t.pieces.write_failed(index);
            if claimed {
                t.pieces.release(index);
            }
            stats.add(&stats.write_errors, 1);
            t.fail(e);
        }
    }

    /// A complete copy of a piece another worker wrote first.
    fn discard(&mut self, stats: &WorkerStats, part: Part) {
        stats.add(&stats.wasted_blocks, u64::from(part.received_blocks()));
        stats.add(&stats.duplicate_pieces, 1);
        self.memory -= part.size() as usize;
        self.keep_spare(part.into_buffer());
    }

    /// Submits the writes of a verified piece: one per file span (pads are not on disk).
    fn write_piece(
        &mut self,
        io: Io<'_>,
        t: &Arc<Torrent>,
        index: u32,
        buf: PieceBuf,
        claimed: bool,
    ) -> Result<(), String> {
        let layout = &t.meta.info.layout;
        let start = u64::from(index) * layout.piece_length;
        let mut spans = Vec::new();
        let mut at = 0usize;
        let mut direct = self.direct && !t.files.direct_refused();
        for s in layout.linear_spans(start, buf.len() as u64) {
            let len = s.len as usize;
            if !s.pad {
                let name = || layout.files[s.file].rel_path().display().to_string();
                let fd = t
                    .files
                    .writable_fd(s.file)
                    .map_err(|e| format!("creating {}: {e}", name()))?;
                let dfd = if direct {
                    match t.files.direct_fd(s.file) {
                        Ok(Some(dfd)) => Some(dfd),
                        Ok(None) => {
                            direct = false;
                            if t.files.refuse_direct() {
                                tracing::warn!(
                                    torrent = %t.meta.info.name,
                                    "{}: the filesystem refuses O_DIRECT; this torrent's pieces \
                                     are written through the page cache",
                                    name()
                                );
                            }
                            None
                        }
                        Err(e) => return Err(format!("opening {} (O_DIRECT): {e}", name())),
                    }
                } else {
                    None
                };
                let split = match dfd {
                    Some(_) => buf::split_direct(s.offset, buf.as_ptr() as usize + at, len),
                    None => Split::buffered(len),
                };
                let mut off = 0;
                for (n, fd, direct) in [
                    (split.head, fd, false),
                    (split.direct, dfd.unwrap_or(fd), dfd.is_some()),
                    (split.tail, fd, false),
                ] {
                    let chunk = if direct { DIRECT_CHUNK } else { WRITE_CHUNK };
                    let end = off + n;
                    while off < end {
                        let n = chunk.min(end - off);
                        spans.push(Span {
                            fd,
                            file: s.file,
                            offset: s.offset + off as u64,
                            start: at + off,
                            len: n,
                            done: 0,
                            direct,
                        });
                        off += n;
                    }
                }
            }
            at += len;
        }
        let w = Write {
            torrent: t.clone(),
            index,
            buf,
            pending: 0,
            spans,
            error: None,
            claimed,
        };
        let id = match self.free_writes.pop() {
            Some(id) => {
                self.writes[id] = Some(w);
                id
            }
            None => {
                self.writes.push(Some(w));
                self.writes.len() - 1
            }
        };
        let n = self.writes[id].as_ref().map_or(0, |w| w.spans.len());
        if n == 0 {
            // A piece of pads only: nothing to write.
            self.write_finished(io.stats, id);
            return Ok(());
        }
        for k in 0..n {
            self.submit_span(io.ring, id, k);
        }
        Ok(())
    }

    fn submit_span(&mut self, ring: &mut IoUring, id: usize, k: usize) {
        let Some(w) = self.writes.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        let s = &w.spans[k];
        let data = &w.buf[s.start + s.done..s.start + s.len];
        let e = ops::write(
            s.fd,
            data,
            s.offset + s.done as u64,
            UserData::new(Op::Write, k as u32, id),
        );
        w.pending += 1;
        // SAFETY: the buffer is owned by the write in the worker's slab, which is kept until
        // its last span completes (`pending`), and the descriptor by the torrent the write
        // holds an `Arc` of.
        unsafe { crate::uring::push(ring, &e) };
    }

    /// A span's write completed with `res`.
    pub fn write_done(&mut self, io: Io<'_>, id: usize, k: usize, res: i32) {
        let Some(w) = self.writes.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        w.pending -= 1;
        let Some(s) = w.spans.get_mut(k) else { return };
        if s.direct
            && (res == -libc::EINVAL
                || (res > 0 && !(s.done + res as usize).is_multiple_of(buf::ALIGN)))
        {
            // The filesystem refused an `O_DIRECT` write (or wrote part of a page, which the
            // rest could not continue): this span again, and every later piece of the
            // torrent, through the page cache. The span's pages are its own, and the direct
            // write is over, so the two never overlap in flight.
            let t = &w.torrent;
            if res > 0 {
                s.done += res as usize;
                io.stats.add(&io.stats.direct_write_bytes, res as u64);
            }
            match t.files.writable_fd(s.file) {
                Ok(fd) => {
                    s.fd = fd;
                    s.direct = false;
                    if res < 0 && t.files.refuse_direct() {
                        let path = t.meta.info.layout.files[s.file].rel_path();
                        tracing::warn!(
                            torrent = %t.meta.info.name,
                            "{}: an O_DIRECT write failed (EINVAL); this torrent's pieces are \
                             written through the page cache",
                            path.display()
                        );
                    }
                    self.submit_span(io.ring, id, k);
                    return;
                }
                Err(e) => {
                    let path = t.meta.info.layout.files[s.file].rel_path();
                    w.error.get_or_insert(format!(
                        "writing piece {} to {}: {e}",
                        w.index,
                        path.display()
                    ));
                    if w.pending == 0 {
                        self.write_finished(io.stats, id);
                    }
                    return;
                }
            }
        }
        if res < 0 || (res == 0 && s.done < s.len) {
            let err = if res < 0 {
                std::io::Error::from_raw_os_error(-res)
            } else {
                std::io::Error::new(std::io::ErrorKind::WriteZero, "wrote nothing")
            };
            let path = w.torrent.meta.info.layout.files[s.file].rel_path();
            w.error.get_or_insert(format!(
                "writing piece {} to {}: {err}",
                w.index,
                path.display()
            ));
        } else {
            s.done += res as usize;
            if s.direct {
                io.stats.add(&io.stats.direct_write_bytes, res as u64);
            }
            if s.done < s.len && w.error.is_none() {
                self.submit_span(io.ring, id, k);
                return;
            }
        }
        if w.pending == 0 {
            self.write_finished(io.stats, id);
        }
    }

    /// Every span of a write completed: the piece is verified (or the torrent failed).
    fn write_finished(&mut self, stats: &WorkerStats, id: usize) {
        let Some(w) = self.writes.get_mut(id).and_then(Option::take) else {
            return;
        };
        self.free_writes.push(id);
        self.memory -= w.buf.len();
        let t = &w.torrent;
        if let Some(e) = w.error {
            stats.add(&stats.write_errors, 1);
            t.pieces.write_failed(w.index);
            if w.claimed {
                t.pieces.release(w.index);
            }
            tracing::error!(torrent = %t.meta.info.name, "{e}");
            t.fail(e);
            return;
        }
        // The files to sync before a resume save counts this piece (marked before the bit is
        // set: whoever sees the bit sees the mark).
        let mut last = usize::MAX;
        for s in &w.spans {
            if s.file != last {
                t.files.mark_written(s.file);
                last = s.file;
            }
        }
        // The data is in the page cache: from here on the piece may be served and announced
        // (the bit's Release half: whoever sees it reads the written bytes).
        if t.pieces.verified.set(w.index) {
            let mut log = super::lock(&t.fetch.done_log);
            log.push(w.index);
            // Release, paired with the Acquire in `tell_haves`: a worker that sees the new
            // length finds the entry in the log.
            t.fetch.done_len.store(log.len(), Ordering::Release);
            drop(log);
            t.recount_wanted();
            stats.add(&stats.pieces_done, 1);
            self.news = true;
        }
        self.keep_spare(w.buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::BLOCK_SIZE;

    const T: Duration = Duration::from_secs(20);

    /// A torrent of `n` pieces every connected peer has (availability 2), and one worker's
    /// `Fetching` with a part of piece 3 (4 blocks) that the peer in slot 1 claimed and started:
    /// block 0 received, block 1 asked.
    fn started(n: u32, now: Instant) -> (PieceTable, Fetching) {
        let table = PieceTable::new(n);
        for i in 0..n {
            table.peer_has(i);
            table.peer_has(i);
        }
        assert!(table.claim(3));
        let mut p = Part::new(3, 4 * BLOCK_SIZE, true);
        p.owner = Some(1);
        p.claimed = true;
        assert_eq!(p.next_missing(), Some(0));
        let mut f = Fetching::default();
        f.insert(p, now);
        let block = vec![7u8; BLOCK_SIZE as usize];
        let from = IpAddr::from([127, 0, 0, 1]);
        f.parts.get_mut(&3).unwrap().take(0, &block, from).unwrap();
        let (r, adopted) = f.next_open(1, |_| true, true, &table, now).unwrap();
        assert_eq!((r.index, r.begin, adopted), (3, BLOCK_SIZE, false));
        (table, f)
    }

    fn yes(_: u32) -> bool {
        true
    }

    fn no(_: u32) -> bool {
        false
    }

    #[test]
    fn a_part_whose_peer_left_is_continued_by_another_peer_here() {
        let t0 = Instant::now();
        let (table, mut f) = started(8, t0);
        // Slot 2 may not take it while slot 1 owns it.
        assert_eq!(f.next_open(2, yes, true, &table, t0), None);
        // Slot 1 leaves: its request comes back, its part is nobody's.
        f.give_back(&[BlockRequest {
            index: 3,
            begin: BLOCK_SIZE,
            length: BLOCK_SIZE,
        }]);
        f.disown(1);
        // A peer that lacks the piece cannot take it; a snubbed one takes a block but does not
        // own the part (it would stall it).
        assert_eq!(f.next_open(2, no, true, &table, t0), None);
        let (r, adopted) = f.next_open(4, yes, false, &table, t0).unwrap();
        assert_eq!((r.index, r.begin, adopted), (3, BLOCK_SIZE, false));
        assert_eq!(f.parts[&3].owner, None);
        f.give_back(&[r]);
        let (r, adopted) = f.next_open(2, yes, true, &table, t0).unwrap();
        assert_eq!((r.index, r.begin, adopted), (3, BLOCK_SIZE, true));
        assert_eq!(f.parts[&3].owner, Some(2));
        // Then it is slot 2's own: blocks 2 and 3, and nothing more to ask.
        for b in [2, 3] {
            let (r, adopted) = f.next_open(2, yes, true, &table, t0).unwrap();
            assert_eq!((r.begin, adopted), (b * BLOCK_SIZE, false));
        }
        assert_eq!(f.next_open(2, yes, true, &table, t0), None);
        assert!(
            f.open.is_empty(),
            "the open list was not pruned: {:?}",
            f.open
        );
    }

    /// The stall of `tests/download.rs` (pieces abandoned): the last block of the last piece,
    /// asked of a snubbed peer that never answers. A peer that answers still gets a copy; had
    /// snubbed peers taken copies, two of them taking turns (each giving the block back at its
    /// snub and asking it again) held both copy slots and it never did.
    #[test]
    fn the_last_block_held_by_a_silent_peer_is_copied_for_one_that_answers() {
        let t0 = Instant::now();
        let (_table, mut f) = started(8, t0);
        let p = f.parts.get_mut(&3).unwrap();
        for b in [2, 3] {
            p.take(
                b * BLOCK_SIZE,
                &[7u8; BLOCK_SIZE as usize],
                IpAddr::from([127, 0, 0, 1]),
            )
            .unwrap();
        }
        let last = BlockRequest {
            index: 3,
            begin: BLOCK_SIZE,
            length: BLOCK_SIZE,
        };
        let none = |_: u32, _: u32| false;
        let of = |r: BlockRequest| move |i: u32, b: u32| i == r.index && b * BLOCK_SIZE == r.begin;
        // Slot 1 holds it (the only block left): the peer in slot 2 gets a copy, a third
        // does not, and slot 1 is not asked twice.
        assert_eq!(f.next_copy(yes, of(last), 2, t0), None);
        assert_eq!(f.next_copy(yes, none, 2, t0), Some(last));
        assert_eq!(f.next_copy(yes, none, 2, t0), None);
        // One copy comes back: a copy slot is free again, for a peer that may ask the piece.
        f.give_back(&[last]);
        assert_eq!(f.next_copy(no, none, 2, t0), None);
        assert_eq!(f.next_copy(yes, none, 2, t0), Some(last));
        // Both come back: the block is nobody's, and the next peer asks it first-hand.
        f.give_back(&[last, last]);
        assert!(f.parts[&3].has_missing());
        assert_eq!(f.next_copy(yes, none, 2, t0), Some(last));
        assert!(!f.parts[&3].has_missing());
    }

    #[test]
    fn an_orphan_nobody_here_can_finish_is_dropped_and_its_piece_can_be_claimed_again() {
        let t0 = Instant::now();
        let (table, mut f) = started(8, t0);
        // Its block still in flight: kept however long.
        let swept = f.sweep(&table, t0 + 10 * T, T, no);
        assert_eq!((swept.released, swept.dropped.len()), (0, 0));
        f.give_back(&[BlockRequest {
            index: 3,
            begin: BLOCK_SIZE,
            length: BLOCK_SIZE,
        }]);
        f.disown(1);
        // Idle since its last block was asked at t0.
        let swept = f.sweep(&table, t0 + T / 2, T, no);
        assert_eq!((swept.released, swept.dropped.len()), (0, 0));
        let swept = f.sweep(&table, t0 + T, T, no);
        assert_eq!(swept.dropped.len(), 1);
        assert!(f.parts.is_empty() && !table.claimed(3));
        // Piece 3 is back among the claimable ones, for any worker.
        let claimed: Vec<u32> = (0..8)
            .filter_map(|r| table.claim_rarest(|_| u64::MAX, r))
            .collect();
        assert!(claimed.contains(&3), "{claimed:?}");
        // The dropped part left the open list too.
        assert_eq!(f.next_open(2, yes, true, &table, t0), None);
    }

    #[test]
    fn an_orphan_a_choking_peer_has_gives_up_its_claim_but_keeps_its_blocks() {
        let t0 = Instant::now();
        let (table, mut f) = started(8, t0);
        f.give_back(&[BlockRequest {
            index: 3,
            begin: BLOCK_SIZE,
            length: BLOCK_SIZE,
        }]);
        f.disown(1);
        let swept = f.sweep(&table, t0 + T, T, yes);
        assert_eq!((swept.released, swept.dropped.len()), (0, 0));
        let swept = f.sweep(&table, t0 + 2 * T, T, yes);
        assert_eq!((swept.released, swept.dropped.len()), (1, 0));
        assert!(!table.claimed(3) && !f.parts[&3].claimed);
        assert_eq!(f.parts[&3].received_blocks(), 1);
        // A peer here comes back to it first: it claims the piece again and goes on.
        let (r, adopted) = f.next_open(5, yes, true, &table, t0 + 2 * T).unwrap();
        assert_eq!((r.index, r.begin, adopted), (3, BLOCK_SIZE, true));
        assert!(table.claimed(3) && f.parts[&3].claimed);
    }

    #[test]
    fn a_released_orphan_another_worker_claimed_is_dropped_and_not_adopted() {
        let t0 = Instant::now();
        let (table, mut f) = started(8, t0);
        f.give_back(&[BlockRequest {
            index: 3,
            begin: BLOCK_SIZE,
            length: BLOCK_SIZE,
        }]);
        f.disown(1);
        assert_eq!(f.sweep(&table, t0 + 2 * T, T, yes).released, 1);
        // Another worker claims piece 3 now.
        assert!(table.claim(3));
        assert_eq!(f.next_open(5, yes, true, &table, t0 + 2 * T), None);
        let swept = f.sweep(&table, t0 + 2 * T, T, yes);
        assert_eq!(swept.dropped.len(), 1);
        // Its claim was not ours to give up.
        assert!(table.claimed(3));
    }

    #[test]
    fn a_part_of_a_piece_written_elsewhere_is_dropped_at_once() {
        let t0 = Instant::now();
        let (table, mut f) = started(8, t0);
        // Endgame: another worker's copy was checked first and is being written.
        assert!(table.begin_write(3));
        let swept = f.sweep(&table, t0, T, yes);
        assert_eq!(swept.dropped.len(), 1);
        assert!(f.parts.is_empty());
    }
}

//! The send side of a connection: upload jobs started from the peer's queued requests, their
//! disk reads, and one send in flight at a time (control messages first, then the oldest job
//! whose data is in), on the copy path or the `mmap` path (see `engine/mapped.rs`).

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;

use super::{Conn, Sending};
use crate::engine::Reason;
use crate::engine::UploadPath;
use crate::engine::coalesce;
use crate::engine::core::Core;
use crate::engine::mapped::MappedJob;
use crate::engine::upload::{Job, Refused, Tokens};
use crate::metainfo::FileLayout;
use crate::uring::{Op, UserData, ops};
use crate::wire::BlockRequest;

impl Conn {
    /// Starts upload jobs for queued requests, as far as job slots, rate limits and job memory
    /// allow. A peer held back by the limits waits in the worker's token queue (`throttled`),
    /// one held back by memory in its memory queue (`starved`).
    pub fn pump_uploads(&mut self, slot: usize, core: &mut Core) {
        if self.throttled || (self.starved && !self.memory_turn) {
            // Its turn comes in the token queue or the memory queue.
            return;
        }
        if let Err(reason) = self.start_jobs(slot, core) {
            self.close(slot, reason, core);
        }
    }

    /// The loop of [`Conn::pump_uploads`]; an error is the reason to close.
    fn start_jobs(&mut self, slot: usize, core: &mut Core) -> Result<(), Reason> {
        loop {
            if self.closing.is_some()
                || self.peer.requests().is_empty()
                || self.jobs.len() >= core.settings.jobs_per_peer
                // A second job overlaps its disk read with the first one's send; behind a
                // mapped job (nothing to read) it would only wait for the socket, holding
                // requests a shed or a choke could otherwise still take back.
                || self.jobs.iter().any(|j| j.mapped.is_some())
            {
                return Ok(());
            }
            if self.peer.am_choking() && (!self.jobs.is_empty() || !core.memory.under_half()) {
                // Allowed-fast requests of a choked peer: one job at a time, from spare memory.
                return Ok(());
            }
            let Some(t) = self.torrent.as_deref() else {
                return Ok(());
            };
            let layout = &t.meta.info.layout;
            // RC4 bytes pass through the cipher: they need a copy in user memory.
            let mapped_path =
                !self.rc4() && matches!(core.upload_path, UploadPath::Mmap | UploadPath::Auto);
            let batch = job_batch(core, core.settings.batch_bytes);
            let next = mapped_path
                .then(|| {
                    // Before its first mapped job a peer has 0: the copy batch.
                    let mapped_batch = crate::engine::mapped::bounded_batch(
                        self.mapped_batch,
                        core.settings.batch_bytes,
                        core.settings.mapped_batch_bytes,
                    );
                    let (take, plan) = self.plan_next(layout, job_batch(core, mapped_batch));
                    let send =
                        MappedJob::build(&plan, layout, &t.files, &mut core.memo, &t.id, core.now)?;
                    Some(Next::Mapped {
                        take,
                        len: plan.len,
                        send,
                    })
                })
                .flatten()
                // Not mapped, or some of its data not in the page cache: the copy path.
                .unwrap_or_else(|| {
                    let (take, plan) = self.plan_next(layout, batch);
                    Next::Copy { take, plan }
                });
            let (take, len) = match &next {
                Next::Mapped { take, len, .. } => (*take, *len),
                Next::Copy { take, plan } => (*take, plan.len),
            };
            let payload = (len - coalesce::HEADER_LEN * take) as u64;
            // Under the global limit, peers already waiting for tokens go first: whoever happens
            // to finish a send when tokens refill would otherwise take them every time.
            let queue_ahead =
                !self.token_turn && !core.token_queue.is_empty() && core.global_limit.rate() > 0;
            let tokens = match if queue_ahead {
                Err(Refused::Global)
            } else {
                Tokens::take(&core.global_limit, &t.upload_limit, payload, core.now)
            } {
                Ok(tokens) => tokens,
                Err(refused) => {
                    self.throttled = true;
                    self.throttled_by = Some(refused);
                    core.token_queue.push_back(slot);
                    return Ok(());
                }
            };
            let seq = self.next_seq;
            let job = match next {
                Next::Mapped { take, len, send } => {
                    let blocks = self.peer.take_requests(take).collect();
                    Job::mapped(seq, core.now, blocks, len, send)
                }
                Next::Copy { take, plan } => {
                    // Past the memory budget a peer waits its turn (the tokens go back on
                    // return). Peers already waiting for memory go first (`memory_turn`: this
                    // is one of them).
                    let Some(buf) = core.memory.take(plan.len.max(batch), self.memory_turn) else {
                        if !self.starved {
                            self.starved = true;
                            core.memory.wait(slot);
                        }
                        return Ok(());
                    };
                    let blocks = self.peer.take_requests(take).collect();
                    match Job::copy(seq, core.now, buf, blocks, &plan, &t.files) {
                        Ok(job) => job,
                        Err((buf, _)) => {
                            core.memory.give_back(buf);
                            return Err(Reason::DiskError);
                        }
                    }
                }
            };
            self.next_seq = self.next_seq.wrapping_add(1) & crate::uring::SEQ_MASK;
            tokens.spend();
            let ready = job.ready_to_send();
            self.jobs.push_back(job);
            self.post_reads(slot, core);
            if ready {
                // Nothing to read (the `mmap` path): it may go at once.
                self.pump_send(slot, core);
            }
        }
    }

    /// Posts the disk reads of the newest job (none on the `mmap` path).
    fn post_reads(&mut self, slot: usize, core: &mut Core) {
        let Some(job) = self.jobs.back() else { return };
        self.ops += job.reads.len() as u32;
        for r in &job.reads {
            let e = ops::readv(
                r.fd,
                &job.iovecs[r.first..r.first + r.count],
                r.offset,
                UserData::new(Op::Read, job.seq, slot),
            );
            // SAFETY: the iovec vector and the buffer it points into belong to the job, which
            // stays in the connection (unmoved heap allocations) until its reads complete; the
            // descriptor belongs to the torrent this connection holds.
            unsafe { core.push(e) };
        }
    }

    pub fn on_read(&mut self, slot: usize, seq: u32, res: i32, core: &mut Core) {
        let Some(job) = self.jobs.iter_mut().find(|j| j.seq == seq) else {
            return;
        };
        // A short read is a file cut short (or a disk error).
        if job.read_done(res) == Some(false) {
            self.close(slot, Reason::DiskError, core);
            return;
        }
        self.pump_send(slot, core);
    }

    /// A read of a closing connection completed: only the count of reads in flight matters.
    pub fn on_read_closing(&mut self, seq: u32) {
        if let Some(j) = self.jobs.iter_mut().find(|j| j.seq == seq) {
            j.reads_pending = j.reads_pending.saturating_sub(1);
        }
    }

    /// Posts the next send if none is in flight: control messages first, then the oldest job
    /// whose reads are done.
    pub fn pump_send(&mut self, slot: usize, core: &mut Core) {
        use crate::engine::peer::Phase;
        if self.sending != Sending::Nothing
            || self.closing.is_some()
            || self.peer.phase() == Phase::Connecting
        {
            return;
        }
        let fd = self.fd.as_raw_fd();
        // Messages must not interleave: a piece message already on its way finishes before any
        // control message goes, and control bytes already handed out finish before a job.
        // (An encrypted job counts as started: the keystream has passed over it.)
        let job_midway = self
            .jobs
            .front()
            .is_some_and(|j| j.sent > 0 || self.ciphered_job == Some(j.seq));
        let ctrl_pending = self.ctrl_sent < self.ctrl_inflight.len() || !self.ctrl.is_empty();
        if ctrl_pending && !job_midway {
            if self.ctrl_sent >= self.ctrl_inflight.len() {
                self.ctrl_inflight.clear();
                self.ctrl_sent = 0;
                std::mem::swap(&mut self.ctrl, &mut self.ctrl_inflight);
                self.crypt_ctrl();
            }
            let rest = &self.ctrl_inflight[self.ctrl_sent..];
            let e = ops::send(
                fd,
                rest,
                libc::MSG_NOSIGNAL,
                UserData::new(Op::Send, 0, slot),
            );
            self.sending = Sending::Control;
            self.ops += 1;
            // SAFETY: the bytes live in ctrl_inflight, untouched until this send completes
            // (sending != Nothing).
            unsafe { core.push(e) };
            return;
        }
        if !self.jobs.front().is_some_and(|j| j.ready_to_send()) {
            return;
        }
        self.crypt_front_job();
        let Some(job) = self.jobs.front_mut() else {
            return;
        };
        let seq = job.seq;
        let e = if let Some(mj) = &mut job.mapped {
            // The files must still hold what the send will read from their mappings.
            let covered = self
                .torrent
                .as_ref()
                .is_some_and(|t| mj.files_cover(&t.files, &mut core.memo, &t.id, core.now));
            if !covered {
                self.close(slot, Reason::DiskError, core);
                return;
            }
            ops::sendmsg(
                fd,
                mj.message(),
                libc::MSG_NOSIGNAL as u32,
                UserData::new(Op::Send, seq, slot),
            )
        } else {
            ops::send(
                fd,
                &job.buf[job.sent..job.len],
                libc::MSG_NOSIGNAL,
                UserData::new(Op::Send, seq, slot),
            )
        };
        self.sending = Sending::Job(seq);
        self.ops += 1;
        // SAFETY: the bytes live in the front job's buffer, untouched until this operation
        // completes (sending != Nothing); on the `mmap` path the message and its iovecs live in
        // the front job (boxed and unmoved), and the mappings in its torrent, which the
        // connection holds until no operation is in flight.
        unsafe { core.push(e) };
    }

    pub fn on_send(&mut self, slot: usize, seq: u32, res: i32, core: &mut Core) {
        let what = std::mem::replace(&mut self.sending, Sending::Nothing);
        if res < 0 {
            let reason = if res == -libc::EPIPE || res == -libc::ECONNRESET {
                Reason::PeerClosed
            } else if res == -libc::EFAULT {
                // A mapped page past a file's end: the file was cut short under the send.
                Reason::DiskError
            } else {
                Reason::IoError
            };
            self.close(slot, reason, core);
            return;
        }
        let n = res as usize;
        self.sent_total += n as u64;
        self.peer.sent(core.now);
        match what {
            Sending::Control => self.ctrl_sent += n,
            Sending::Job(s) if s == seq => {
                let Some(job) = self.jobs.front_mut() else {
                    return;
                };
                job.sent += n;
                if let Some(mj) = &mut job.mapped {
                    mj.advance(n);
                }
                if job.sent == job.len {
                    self.finish_front_job(core);
                }
            }
            _ => {}
        }
        self.pump_uploads(slot, core);
        self.pump_send(slot, core);
    }

    /// The front job is fully sent: account it and release its buffer.
    fn finish_front_job(&mut self, core: &mut Core) {
        let Some(job) = self.jobs.pop_front() else {
            return;
        };
        let payload = job.payload();
        self.peer.served(payload);
        if let Some(t) = &self.torrent {
            t.uploaded.fetch_add(payload, Ordering::Relaxed);
        }
        for q in &job.blocks {
            let us = core.now.saturating_duration_since(q.at).as_micros() as u64;
            let _ = core.latency.record(us.max(1));
        }
        core.stats.add(&core.stats.bytes_up, payload);
        core.stats
            .add(&core.stats.blocks_up, job.blocks.len() as u64);
        if job.mapped.is_some() {
            core.stats.add(&core.stats.jobs_mapped, 1);
            self.mapped_batch = crate::engine::mapped::next_batch(
                job.len,
                core.now.saturating_duration_since(job.started),
                core.settings.batch_bytes,
                core.settings.mapped_batch_bytes,
            );
        }
        if let Some(svc) = &core.speed
            && self.paying()
        {
            svc.stats.bytes_sold.fetch_add(payload, Ordering::Relaxed);
        }
        job.release(&mut core.memory);
    }

    /// How many of the queued requests the next job takes within `batch` bytes, and its
    /// layout.
    fn plan_next(&self, layout: &FileLayout, batch: usize) -> (usize, coalesce::JobPlan) {
        let lengths = self.peer.requests().iter().map(|q| q.req.length);
        let (take, _) = coalesce::take_for_batch(lengths, batch);
        let reqs: Vec<BlockRequest> = self
            .peer
            .requests()
            .iter()
            .take(take)
            .map(|q| q.req)
            .collect();
        (take, coalesce::plan_job(layout, &reqs))
    }
}

/// A peer's next upload job, laid out before it takes tokens or memory.
enum Next {
    /// From the files' mappings (every page of its data in the page cache).
    Mapped {
        take: usize,
        len: usize,
        send: MappedJob,
    },
    /// Read into job memory.
    Copy {
        take: usize,
        plan: coalesce::JobPlan,
    },
}

/// The batch of a peer's next upload job on a path whose batch is `batch` (see
/// [`crate::engine::reqq::job_bytes`]).
fn job_batch(core: &Core, batch: usize) -> usize {
    crate::engine::reqq::job_bytes(
        batch,
        core.rules.advertised_reqq,
        core.rules.max_reqq,
        core.rules.max_request_len as usize + coalesce::HEADER_LEN,
    )
}

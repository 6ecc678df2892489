//! The io_uring layer every ring in ringseed shares (the seeding workers and the bench's
//! leecher workers): building a ring, queueing a submission when the queue may be full, what a
//! `user_data` says ([`UserData`]), and the submissions themselves ([`ops`]) with what memory
//! each must keep alive.

pub mod ops;
mod user_data;

pub use user_data::{Op, SEQ_MASK, SLOT_MAX, UserData};

use io_uring::{IoUring, squeue};

/// A ring for one thread: single issuer and cooperative task running (only this thread submits,
/// and the kernel need not interrupt it to run completions), or a plain ring on kernels without
/// those flags.
pub fn build_ring(entries: u32) -> std::io::Result<IoUring> {
    IoUring::builder()
        .setup_single_issuer()
        .setup_coop_taskrun()
        .build(entries)
        .or_else(|_| IoUring::new(entries))
}

/// Queues `entry`, flushing the submission queue to the kernel while it is full.
///
/// # Safety
/// Every buffer `entry` points to must stay valid and unmoved until its completion arrives: for
/// an entry from [`ops`], what its builder lists under **Keep alive**.
pub unsafe fn push(ring: &mut IoUring, entry: &squeue::Entry) {
    loop {
        // SAFETY: the caller guarantees the entry's buffers outlive the operation.
        if unsafe { ring.submission().push(entry) }.is_ok() {
            return;
        }
        if ring.submit().is_err() {
            // The kernel refused even to take the queue; wait for completions to free room.
            let _ = ring.submit_and_wait(1);
        }
    }
}

/// What an operation is, in the top 8 bits of its `user_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    Accept = 1,
    Wake = 2,
    Tick = 3,
    Recv = 4,
    Send = 5,
    Read = 6,
    Connect = 7,
    /// A zero-copy send: completes once with the result and once with the notification.
    SendZc = 8,
    /// Splice path: file → the peer's pipe, and pipe → socket.
    SpliceIn = 9,
    SpliceOut = 10,
}

/// A submission's `user_data`: op (8 bits) | sequence (24 bits) | slot (32 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserData {
    pub op: Op,
    pub seq: u32,
    pub slot: usize,
}

impl UserData {
    pub const SEQ_MASK: u32 = (1 << 24) - 1;

    pub fn new(op: Op, seq: u32, slot: usize) -> UserData {
        UserData { op, seq, slot }
    }

    pub fn encode(self) -> u64 {
        (u64::from(self.op as u8) << 56)
            | (u64::from(self.seq & Self::SEQ_MASK) << 32)
            | (self.slot as u64 & 0xffff_ffff)
    }

    pub fn decode(v: u64) -> Option<UserData> {
        let op = match (v >> 56) as u8 {
            1 => Op::Accept,
            2 => Op::Wake,
            3 => Op::Tick,
            4 => Op::Recv,
            5 => Op::Send,
            6 => Op::Read,
            7 => Op::Connect,
            8 => Op::SendZc,
            9 => Op::SpliceIn,
            10 => Op::SpliceOut,
            _ => return None,
        };
        Some(UserData {
            op,
            seq: (v >> 32) as u32 & Self::SEQ_MASK,
            slot: (v & 0xffff_ffff) as usize,
        })
    }
}

/// Builders of the submissions ringseed uses. Building is safe; pushing the entry is not (see
/// [`push`]): each names the memory the caller must keep alive until its completion.
pub mod ops {
    use super::UserData;
    use io_uring::{opcode, squeue::Entry, types};
    use std::os::fd::RawFd;

    /// Multishot accept; no memory.
    pub fn accept_multi(fd: RawFd, ud: UserData) -> Entry {
        opcode::AcceptMulti::new(types::Fd(fd))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(ud.encode())
    }
    /// Reads into `buf[..len]`: keep `buf` alive.
    pub fn read(fd: RawFd, buf: *mut u8, len: u32, ud: UserData) -> Entry {
        opcode::Read::new(types::Fd(fd), buf, len)
            .build()
            .user_data(ud.encode())
    }
    /// A timeout: keep `ts` alive.
    pub fn timeout(ts: *const types::Timespec, ud: UserData) -> Entry {
        opcode::Timeout::new(ts).build().user_data(ud.encode())
    }
    /// Connects: keep the address alive.
    pub fn connect(fd: RawFd, addr: *const libc::sockaddr, len: u32, ud: UserData) -> Entry {
        opcode::Connect::new(types::Fd(fd), addr, len)
            .build()
            .user_data(ud.encode())
    }
    /// Receives into `buf[..len]`: keep `buf` alive and untouched.
    pub fn recv(fd: RawFd, buf: *mut u8, len: u32, ud: UserData) -> Entry {
        opcode::Recv::new(types::Fd(fd), buf, len)
            .build()
            .user_data(ud.encode())
    }
    /// Sends `buf[..len]`: keep `buf` alive and unchanged.
    pub fn send(fd: RawFd, buf: *const u8, len: u32, flags: i32, ud: UserData) -> Entry {
        opcode::Send::new(types::Fd(fd), buf, len)
            .flags(flags)
            .build()
            .user_data(ud.encode())
    }
    /// Zero-copy send: keep `buf` alive and unchanged until the notification.
    pub fn send_zc(fd: RawFd, buf: *const u8, len: u32, flags: i32, ud: UserData) -> Entry {
        opcode::SendZc::new(types::Fd(fd), buf, len)
            .flags(flags)
            .build()
            .user_data(ud.encode())
    }
    /// Reads into the `count` iovecs at `iov`: keep the iovecs and their buffers alive.
    pub fn readv(
        fd: RawFd,
        iov: *const libc::iovec,
        count: u32,
        offset: u64,
        ud: UserData,
    ) -> Entry {
        opcode::Readv::new(types::Fd(fd), iov, count)
            .offset(offset)
            .build()
            .user_data(ud.encode())
    }
    /// Splices `len` bytes; no memory, but both descriptors must stay open.
    pub fn splice(fd_in: RawFd, off_in: i64, fd_out: RawFd, len: u32, ud: UserData) -> Entry {
        opcode::Splice::new(types::Fd(fd_in), off_in, types::Fd(fd_out), -1, len)
            .build()
            .user_data(ud.encode())
    }
    /// Cancels the operation with `target`'s user_data; no memory.
    pub fn cancel(target: UserData) -> Entry {
        opcode::AsyncCancel::new(target.encode())
            .build()
            .user_data(0)
    }
}

//! Builders for every submission ringseed makes, each stamped with its [`UserData`].
//!
//! Building an entry is safe: it only records addresses and lengths. Pushing it
//! ([`super::push`]) is the one unsafe act, and its contract is the one written here under
//! **Keep alive** on each builder: the memory named there must stay valid and unmoved, and must
//! not be written by us while the kernel may read it (or read while the kernel may write it),
//! until the operation's last completion arrives. An entry borrows nothing, so a call site can
//! build it from a borrowed buffer, update its own bookkeeping, then push it.
//!
//! Descriptors are passed raw: every descriptor an entry names must stay open until its
//! completion, or the kernel may act on whatever file reuses the number.
//!
//! ```ignore
//! let e = ops::recv(fd, &mut conn.recv[conn.end..], UserData::new(Op::Recv, 0, slot));
//! conn.recv_posted = true;
//! // SAFETY: `recv` is not resized or freed while recv_posted is set.
//! unsafe { uring::push(&mut ring, &e) };
//! ```

use std::os::fd::RawFd;

use io_uring::{opcode, squeue, types};
use socket2::SockAddr;

use super::UserData;

/// A length for a submission: lengths above `u32::MAX` are cut to it, which for a socket or
/// file transfer is a short transfer the caller already handles.
fn len32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// Multishot accept on `listener`: one completion per accepted connection (result = the new
/// descriptor, owned by the caller, created close-on-exec), until a completion comes without
/// `IORING_CQE_F_MORE`.
///
/// **Keep alive:** nothing but `listener` (no address buffer is passed).
pub fn accept_multishot(listener: RawFd, ud: UserData) -> squeue::Entry {
    opcode::AcceptMulti::new(types::Fd(listener))
        .flags(libc::SOCK_CLOEXEC)
        .build()
        .user_data(ud.encode())
}

/// Reads up to `buf.len()` bytes of `fd` at its current position (an eventfd's 8-byte counter,
/// say).
///
/// **Keep alive:** `buf`, which the kernel writes; do not read it until the completion.
pub fn read(fd: RawFd, buf: &mut [u8], ud: UserData) -> squeue::Entry {
    opcode::Read::new(types::Fd(fd), buf.as_mut_ptr(), len32(buf.len()))
        .build()
        .user_data(ud.encode())
}

/// Writes `buf` to `fd` at `offset` (`u64::MAX`: at the descriptor's own position, as a pipe
/// needs).
///
/// **Keep alive:** `buf` until the completion.
pub fn write(fd: RawFd, buf: &[u8], offset: u64, ud: UserData) -> squeue::Entry {
    opcode::Write::new(types::Fd(fd), buf.as_ptr(), len32(buf.len()))
        .offset(offset)
        .build()
        .user_data(ud.encode())
}

/// A timeout that completes (with `-ETIME`) after `ts`.
///
/// **Keep alive:** `ts`, which the kernel reads when the submission is consumed (keep it in a
/// `Box` or a field that outlives the operation).
pub fn timeout(ts: &types::Timespec, ud: UserData) -> squeue::Entry {
    opcode::Timeout::new(ts as *const types::Timespec)
        .build()
        .user_data(ud.encode())
}

/// Connects socket `fd` to `addr`.
///
/// **Keep alive:** `addr` (the kernel may read it after submission; box it with the
/// connection).
pub fn connect(fd: RawFd, addr: &SockAddr, ud: UserData) -> squeue::Entry {
    opcode::Connect::new(types::Fd(fd), addr.as_ptr().cast(), addr.len())
        .build()
        .user_data(ud.encode())
}

/// Receives up to `buf.len()` bytes from socket `fd` into `buf`.
///
/// **Keep alive:** `buf`, which the kernel writes; neither resize, free nor read it until the
/// completion.
pub fn recv(fd: RawFd, buf: &mut [u8], ud: UserData) -> squeue::Entry {
    opcode::Recv::new(types::Fd(fd), buf.as_mut_ptr(), len32(buf.len()))
        .build()
        .user_data(ud.encode())
}

/// Sends `buf` on socket `fd` with `flags` (`MSG_NOSIGNAL`, so a closed peer is `-EPIPE` and
/// not a signal; `MSG_MORE` when more bytes follow at once). The result may be short.
///
/// **Keep alive:** `buf`, unchanged, until the completion.
pub fn send(fd: RawFd, buf: &[u8], flags: i32, ud: UserData) -> squeue::Entry {
    opcode::Send::new(types::Fd(fd), buf.as_ptr(), len32(buf.len()))
        .flags(flags)
        .build()
        .user_data(ud.encode())
}

/// Sends the message `msg` describes on socket `fd` (its iovecs, in order).
///
/// **Keep alive:** the `msghdr` itself, the iovec array it points to and every buffer those
/// point to; none may move or change until the completion.
pub fn sendmsg(fd: RawFd, msg: &libc::msghdr, flags: u32, ud: UserData) -> squeue::Entry {
    opcode::SendMsg::new(types::Fd(fd), msg)
        .flags(flags)
        .build()
        .user_data(ud.encode())
}

/// Reads file `fd` at `offset` into the buffers `iovecs` point to, in order (at most
/// `u32::MAX` of them; the kernel takes at most `IOV_MAX`).
///
/// **Keep alive:** the `iovecs` array itself (the kernel may read it after submission) and
/// every buffer it points to, which the kernel writes; none may move until the completion.
pub fn readv(fd: RawFd, iovecs: &[libc::iovec], offset: u64, ud: UserData) -> squeue::Entry {
    opcode::Readv::new(types::Fd(fd), iovecs.as_ptr(), len32(iovecs.len()))
        .offset(offset)
        .build()
        .user_data(ud.encode())
}

/// Cancels the in-flight operation submitted with `target`; this entry's own completion carries
/// `ud` (use [`super::Op::Cancel`]). The cancelled operation still completes (`-ECANCELED`), so
/// its memory stays alive until then as its own builder says.
///
/// **Keep alive:** nothing.
pub fn async_cancel(target: UserData, ud: UserData) -> squeue::Entry {
    opcode::AsyncCancel::new(target.encode())
        .build()
        .user_data(ud.encode())
}

#[cfg(test)]
mod tests {
    use super::super::{Op, build_ring, push};
    use super::*;

    /// Pushes one entry and waits for its first completion: (user_data, result, flags).
    fn run_one(ring: &mut io_uring::IoUring, e: &squeue::Entry) -> (u64, i32, u32) {
        // SAFETY: every caller below keeps the entry's memory alive until this returns, and this
        // returns only after the completion.
        unsafe { push(ring, e) };
        ring.submit_and_wait(1).expect("submit");
        let c = ring.completion().next().expect("a completion");
        (c.user_data(), c.result(), c.flags())
    }

    #[test]
    fn builders_stamp_user_data_and_work() {
        let Ok(mut ring) = build_ring(8) else {
            // No io_uring in this sandbox: the layout tests still run.
            return;
        };
        let (a, b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        use std::os::fd::AsRawFd;
        let msg = b"ringseed";
        let ud = UserData::new(Op::Send, 3, 9);
        let (u, res, _) = run_one(&mut ring, &send(a.as_raw_fd(), msg, libc::MSG_NOSIGNAL, ud));
        assert_eq!((UserData::decode(u), res), (Some(ud), msg.len() as i32));
        let mut buf = [0u8; 16];
        let ud = UserData::new(Op::Recv, 0, 10);
        let (u, res, _) = run_one(&mut ring, &recv(b.as_raw_fd(), &mut buf, ud));
        assert_eq!((UserData::decode(u), res), (Some(ud), msg.len() as i32));
        assert_eq!(&buf[..msg.len()], msg);
        let ts = types::Timespec::new().nsec(1_000);
        let ud = UserData::new(Op::Tick, 0, 0);
        let (u, res, _) = run_one(&mut ring, &timeout(&ts, ud));
        assert_eq!((UserData::decode(u), res), (Some(ud), -libc::ETIME));
        // Cancelling nothing completes with -ENOENT under the cancel's own user_data.
        let ud = UserData::new(Op::Cancel, 0, 0);
        let (u, res, _) = run_one(
            &mut ring,
            &async_cancel(UserData::new(Op::Connect, 0, 77), ud),
        );
        assert_eq!((UserData::decode(u), res), (Some(ud), -libc::ENOENT));
    }
}

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

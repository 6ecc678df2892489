//! The request queue a worker advertises to its peers (BEP 10 `reqq`) as unchoked peers come and
//! go: a pure policy, the worker applies it every tick (50 ms) and after every burst of requests,
//! shedding (BEP 6 rejects) what peers queued past the share they were told.
//!
//! Every request a peer queues waits behind all the others the worker holds. By Little's law a
//! worker moving R bytes/s with Q bytes requested makes a request wait Q / R: 1024 peers
//! allowed 64 blocks each queue 1 GiB, about a second at 1 GiB/s, however fast the upload path.
//! So while the worker falls behind (half the budget queued, and for [`CONGESTION_HOLD`] after)
//! it shares one budget of queued blocks among its unchoked peers, within
//! `[MIN_REQQ, engine.max_reqq]`; while it keeps up it advertises `engine.max_reqq`, so a fast
//! peer far away is never held to a small share of a queue that is not there. It tells its
//! peers again (a second extension handshake,
//! which BEP 10 allows and libtorrent reads `reqq` from) when the share moved by a quarter.
//! What a peer queued past the share it was told is rejected (BEP 6) while the worker falls
//! behind ([`crate::engine::peer::Peer::shed`]): requests it sent before it heard, which would
//! otherwise keep every later request waiting behind them. A peer that keeps asking past it
//! spends its noise budget on the rejects and is cut off in the end; `engine.max_reqq` is the
//! hard limit.

/// Blocks queued at once on a worker by default (`engine.queue_budget_mib` = 128), shared
/// among its unchoked peers: 128 MiB of 16 KiB blocks, about 0.1 s of queue at the 1.2 GiB/s
/// one worker moves to 1024 peers on this machine's loopback (docs/design.md, "Request
/// queue"), and more than a 10 Gbit/s link carries in a 50 ms round trip (62 MiB), so a link
/// stays full.
pub const DEFAULT_BUDGET_BLOCKS: usize = 8192;

/// The least we advertise: 128 KiB in flight per peer, which at the 50 ms round trip of a
/// distant peer still moves 2.5 MiB/s (a 1024th of a 10 Gbit/s link is 1.2).
pub const MIN_REQQ: usize = 8;

/// How long the share holds after the worker last had half the budget queued: a queue that
/// drained because peers were told to queue less must not bring the old `reqq` back at once
/// (peers would queue it again, and be told again, every few ticks).
pub const CONGESTION_HOLD: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether `queued` blocks (requests the worker has not served yet, over all its peers) mean
/// the worker falls behind: half its `budget` (in blocks) or more.
pub fn congested(queued: usize, budget: usize) -> bool {
    queued >= (budget / 2).max(1)
}

/// The `reqq` for a worker with `unchoked` peers, at most `max_reqq`: their share of the
/// `budget` while `congested` (or within [`CONGESTION_HOLD`] of it), else `max_reqq`.
pub fn advertised(unchoked: usize, max_reqq: usize, congested: bool, budget: usize) -> usize {
    if !congested {
        return max_reqq;
    }
    (budget / unchoked.max(1)).clamp(MIN_REQQ.min(max_reqq), max_reqq)
}

/// Whether a worker that advertises `advertised` sheds: only a share below `engine.max_reqq`
/// is told while it falls behind.
pub fn shedding(advertised: usize, max_reqq: usize) -> bool {
    advertised < max_reqq
}

/// The most one upload job of a peer carries: `batch` bytes, or, while the worker sheds
/// (`advertised < max_reqq`), the advertised share's worth of blocks of `block` bytes (header
/// included). So what a peer has committed on our side (its jobs) stays near what it was told
/// to queue, and the rest of what it asked before it heard stays in its queue, to be shed.
pub fn job_bytes(batch: usize, advertised: usize, max_reqq: usize, block: usize) -> usize {
    if !shedding(advertised, max_reqq) {
        return batch;
    }
    batch.min(advertised.max(1).saturating_mul(block))
}

/// Requests a worker may receive between two ticks before it looks at its queue at once: a
/// swarm arriving asks for a budget's worth within one tick (1024 peers x 64 blocks in half a
/// second), and each of those requests would otherwise wait for the next tick to be shed.
/// An eighth of the `budget` keeps the look (a pass over the worker's peers) to one per ~1000
/// requests with the default budget.
pub fn burst(budget: usize) -> u64 {
    (budget / 8).max(1) as u64
}

/// Whether peers told `told` should be told `now`: when it moved by a quarter either way, so
/// what peers queue stays within a quarter of the share, and a swarm growing from 1 to 1024
/// peers costs each peer a few dozen handshakes of ~100 bytes (at most one a tick), not one
/// per arrival.
pub fn worth_telling(told: usize, now: usize) -> bool {
    now.saturating_mul(4) >= told.saturating_mul(5)
        || now.saturating_mul(5) <= told.saturating_mul(4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_shared_within_bounds() {
        let b = DEFAULT_BUDGET_BLOCKS;
        assert_eq!(advertised(0, 2000, true, b), 2000);
        assert_eq!(advertised(1, 2000, true, b), 2000);
        assert_eq!(advertised(4, 2000, true, b), 2000);
        assert_eq!(advertised(8, 2000, true, b), 1024);
        assert_eq!(advertised(64, 2000, true, b), 128);
        assert_eq!(advertised(1024, 2000, true, b), 8);
        assert_eq!(advertised(100_000, 2000, true, b), MIN_REQQ);
        // A configured cap below the floor wins.
        assert_eq!(advertised(100_000, 4, true, b), 4);
        assert_eq!(advertised(1, 16, true, b), 16);
        // A worker that keeps up advertises its whole queue, however many peers it has.
        assert_eq!(advertised(1024, 2000, false, b), 2000);
        assert!(!congested(b / 2 - 1, b));
        assert!(congested(b / 2, b));
        // A small configured budget: 1 MiB is 64 blocks, 8 for 8 peers.
        assert_eq!(advertised(8, 2000, true, 64), 8);
        assert!(congested(32, 64));
        assert!(congested(1, 1));
        assert_eq!(burst(b), 1024);
        assert_eq!(burst(1), 1);
    }

    #[test]
    fn a_job_carries_the_share_while_the_worker_sheds() {
        let block = 16 * 1024 + 13;
        // Keeping up: the configured batch.
        assert_eq!(job_bytes(256 << 10, 2000, 2000, block), 256 << 10);
        // Shedding: the share's worth, never more than the batch, never less than one block.
        assert_eq!(job_bytes(256 << 10, 8, 2000, block), 8 * block);
        assert_eq!(job_bytes(256 << 10, 128, 2000, block), 256 << 10);
        assert_eq!(job_bytes(256 << 10, 0, 2000, block), block);
    }

    #[test]
    fn peers_are_told_again_only_when_the_share_moved_by_a_quarter() {
        assert!(!worth_telling(2000, 2000));
        assert!(!worth_telling(2000, 1601));
        assert!(worth_telling(2000, 1600));
        assert!(worth_telling(8, 10));
        assert!(!worth_telling(8, 9));
        // Peers joining one at a time from 1 to 1024: the value moves 2000 → 8 in a few dozen
        // steps and ends where the share is.
        let mut told = advertised(1, 2000, true, DEFAULT_BUDGET_BLOCKS);
        let mut times = 0;
        for n in 1..=1024 {
            let now = advertised(n, 2000, true, DEFAULT_BUDGET_BLOCKS);
            if worth_telling(told, now) {
                told = now;
                times += 1;
            }
        }
        assert_eq!(told, 8);
        assert!(times <= 30, "{times}");
    }
}

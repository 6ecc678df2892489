//! What a worker does with a part nobody is fetching: an orphan.
//!
//! A part belongs to the connection that started it; when that peer leaves, chokes us or snubs
//! us, the part is disowned and any other peer of the worker that has the piece continues it
//! (the worker finishes partial pieces before it starts new ones). When no peer of the worker
//! can, the part would otherwise stay claimed, and its buffer held, until endgame. Once a
//! second the worker looks at each part that has had nothing asked of anyone for a while
//! ("idle", measured from its last block asked or received) and decides, by [`verdict`]:
//!
//! - the piece was verified, or is being written, by another worker (endgame): drop the part;
//! - idle for a request timeout and no peer of this worker has the piece: drop it, giving the
//!   claim up, so another worker claims the piece (the blocks are lost: nobody here could
//!   finish them);
//! - idle for two request timeouts while some peer of this worker has the piece (one that
//!   chokes or snubs us): give the claim up but keep the blocks, in case that peer comes back;
//!   another worker may claim the piece meanwhile, and a peer here that continues the part
//!   claims it again first;
//! - a part whose claim is gone (given up as above, or an endgame copy) is dropped once another
//!   worker holds the piece and the part is idle for a request timeout, or after four.
//!
//! A part with blocks in flight is never idle: the request timeout deals with those first.

use std::time::Duration;

/// What is known of a part at a look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Look {
    /// Blocks of it asked of some peer and not yet here.
    pub in_flight: u32,
    /// Since its last block was asked for or arrived.
    pub idle: Duration,
    /// This worker holds the piece's claim.
    pub held: bool,
    /// Another worker holds the claim (we do not, and the bit is set).
    pub held_elsewhere: bool,
    /// The piece is verified or being written (by another worker: a part of this worker's own
    /// is gone once complete).
    pub done: bool,
}

/// What to do with the part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    /// Give the claim up; keep the part and its blocks.
    Release,
    /// Free the part (and give its claim up if held).
    Drop,
}

/// The decision for one part; `usable_here` (whether a peer of this worker has the piece) is
/// asked only of idle parts. `timeout` is the request timeout.
pub fn verdict(look: Look, timeout: Duration, usable_here: impl FnOnce() -> bool) -> Verdict {
    if look.done {
        return Verdict::Drop;
    }
    if look.in_flight > 0 || look.idle < timeout {
        return Verdict::Keep;
    }
    if !usable_here() {
        return Verdict::Drop;
    }
    if look.held {
        return if look.idle >= timeout * 2 {
            Verdict::Release
        } else {
            Verdict::Keep
        };
    }
    if look.held_elsewhere || look.idle >= timeout * 4 {
        return Verdict::Drop;
    }
    Verdict::Keep
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(20);

    fn look(idle_s: u64) -> Look {
        Look {
            in_flight: 0,
            idle: Duration::from_secs(idle_s),
            held: true,
            held_elsewhere: false,
            done: false,
        }
    }

    #[test]
    fn busy_or_recent_parts_are_kept_whatever_the_peers() {
        let busy = Look {
            in_flight: 1,
            ..look(1000)
        };
        assert_eq!(verdict(busy, T, || false), Verdict::Keep);
        assert_eq!(verdict(look(19), T, || false), Verdict::Keep);
        // The peers are not even asked about a part that is not idle.
        assert_eq!(verdict(look(5), T, || unreachable!()), Verdict::Keep);
    }

    #[test]
    fn a_piece_done_elsewhere_is_dropped_at_once() {
        let done = Look {
            in_flight: 3,
            done: true,
            ..look(0)
        };
        assert_eq!(verdict(done, T, || true), Verdict::Drop);
    }

    #[test]
    fn nobody_here_can_finish_it_so_it_goes_after_one_timeout() {
        assert_eq!(verdict(look(20), T, || false), Verdict::Drop);
    }

    #[test]
    fn a_choking_peer_here_keeps_the_blocks_but_not_the_claim() {
        assert_eq!(verdict(look(20), T, || true), Verdict::Keep);
        assert_eq!(verdict(look(40), T, || true), Verdict::Release);
        let released = Look {
            held: false,
            ..look(41)
        };
        assert_eq!(verdict(released, T, || true), Verdict::Keep);
        let claimed_by_another = Look {
            held_elsewhere: true,
            ..released
        };
        assert_eq!(verdict(claimed_by_another, T, || true), Verdict::Drop);
        assert_eq!(
            verdict(
                Look {
                    held: false,
                    ..look(80)
                },
                T,
                || true
            ),
            Verdict::Drop
        );
    }
}

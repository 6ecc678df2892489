//! What a submission's `user_data` says: which operation completed, for which job sequence, on
//! which slot. Both the seeding workers and the bench's leecher workers route completions by it.
//!
//! Layout, high to low: kind (8 bits) | sequence (24 bits) | slot (32 bits). The sequence must
//! not wrap while an operation of the same number can still complete (zero-copy sends, since
//! removed, once showed why: their notification arrived many jobs later, and an 8-bit sequence
//! matched a new job and freed its buffer while the kernel still sent from it).

/// The kinds of operation ringseed submits. The numbers are the `kind` byte of [`UserData`];
/// 0 is left unused so that a zeroed `user_data` never decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Op {
    /// Multishot accept on a listener.
    Accept = 1,
    /// Read of the worker's wake-up eventfd.
    Wake = 2,
    /// The loop's periodic timeout.
    Tick = 3,
    /// Receive from a peer.
    Recv = 4,
    /// Plain send to a peer.
    Send = 5,
    /// Read of piece data from disk.
    Read = 6,
    /// Outgoing connect.
    Connect = 7,
    /// The completion of an `async_cancel` itself (not of the operation it cancels).
    Cancel = 8,
    /// Write of a downloaded piece's data to a file (slot: the worker's write, seq: the span).
    Write = 9,
}

impl Op {
    /// Every kind, in numeric order.
    pub const ALL: [Op; 9] = [
        Op::Accept,
        Op::Wake,
        Op::Tick,
        Op::Recv,
        Op::Send,
        Op::Read,
        Op::Connect,
        Op::Cancel,
        Op::Write,
    ];

    /// The kind numbered `kind`, or `None` for a number no [`Op`] has.
    pub const fn from_u8(kind: u8) -> Option<Op> {
        Some(match kind {
            1 => Op::Accept,
            2 => Op::Wake,
            3 => Op::Tick,
            4 => Op::Recv,
            5 => Op::Send,
            6 => Op::Read,
            7 => Op::Connect,
            8 => Op::Cancel,
            9 => Op::Write,
            _ => return None,
        })
    }
}

/// Bits of the job sequence kept in a `user_data` (24).
pub const SEQ_MASK: u32 = (1 << 24) - 1;

/// The largest slot a `user_data` can name (32 bits).
pub const SLOT_MAX: usize = u32::MAX as usize;

/// A decoded `user_data`: operation kind, job sequence (24 bits) and slot (32 bits).
///
/// ```
/// use ringseed::uring::{Op, UserData};
/// let ud = UserData::new(Op::Recv, 0, 42);
/// assert_eq!(UserData::decode(ud.encode()), Some(ud));
/// assert_eq!(UserData::decode(0), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UserData {
    pub op: Op,
    /// Job sequence, masked to [`SEQ_MASK`].
    pub seq: u32,
    /// Slot in the owner's slab, at most [`SLOT_MAX`].
    pub slot: usize,
}

impl UserData {
    /// The `user_data` for `op` on `slot`, for job `seq`. The sequence keeps its low 24 bits
    /// and the slot its low 32 (as [`encode`](Self::encode) would), so what is built is exactly
    /// what decodes.
    pub const fn new(op: Op, seq: u32, slot: usize) -> UserData {
        UserData {
            op,
            seq: seq & SEQ_MASK,
            slot: slot & SLOT_MAX,
        }
    }

    /// The 64-bit value for a submission.
    pub const fn encode(self) -> u64 {
        ((self.op as u64) << 56)
            | (((self.seq & SEQ_MASK) as u64) << 32)
            | (self.slot as u64 & 0xffff_ffff)
    }

    /// Reads a completion's `user_data`; `None` when its kind is no [`Op`] (a value we did not
    /// submit, or 0).
    pub const fn decode(raw: u64) -> Option<UserData> {
        let Some(op) = Op::from_u8((raw >> 56) as u8) else {
            return None;
        };
        Some(UserData {
            op,
            seq: (raw >> 32) as u32 & SEQ_MASK,
            slot: (raw & 0xffff_ffff) as usize,
        })
    }
}

impl From<UserData> for u64 {
    fn from(ud: UserData) -> u64 {
        ud.encode()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_round_trips() {
        for (i, op) in Op::ALL.into_iter().enumerate() {
            assert_eq!(op as u8, i as u8 + 1);
            assert_eq!(Op::from_u8(op as u8), Some(op));
            for (seq, slot) in [(0, 0), (1, 7), (SEQ_MASK, SLOT_MAX), (12345, 1 << 31)] {
                let ud = UserData::new(op, seq, slot);
                assert_eq!(UserData::decode(ud.encode()), Some(ud));
                assert_eq!(u64::from(ud), ud.encode());
            }
        }
    }

    #[test]
    fn layout_is_kind_seq_slot() {
        // The engine worker's layout, bit for bit.
        let raw = UserData::new(Op::Cancel, 0xAB_CDEF, 0x1234_5678).encode();
        assert_eq!(raw, (8u64 << 56) | (0xAB_CDEF << 32) | 0x1234_5678);
    }

    #[test]
    fn seq_keeps_its_low_24_bits() {
        let ud = UserData::new(Op::Read, SEQ_MASK + 5, 3);
        assert_eq!(ud.seq, 4);
        let back = UserData::decode(ud.encode()).unwrap();
        assert_eq!((back.op, back.seq, back.slot), (Op::Read, 4, 3));
        // A sequence never spills into the kind byte, even built by hand unmasked.
        let raw = UserData {
            op: Op::Send,
            seq: u32::MAX,
            slot: 0,
        }
        .encode();
        assert_eq!(
            UserData::decode(raw).map(|u| (u.op, u.seq)),
            Some((Op::Send, SEQ_MASK))
        );
    }

    #[test]
    fn slot_is_bounded_to_32_bits() {
        let top = UserData::new(Op::Recv, SEQ_MASK, SLOT_MAX);
        assert_eq!(UserData::decode(top.encode()), Some(top));
        #[cfg(target_pointer_width = "64")]
        {
            // A slot beyond 32 bits keeps its low bits and leaves kind and sequence alone.
            let raw = UserData {
                op: Op::Recv,
                seq: 9,
                slot: SLOT_MAX + 2,
            }
            .encode();
            assert_eq!(UserData::decode(raw), Some(UserData::new(Op::Recv, 9, 1)));
        }
    }

    #[test]
    fn unknown_kinds_decode_to_none() {
        assert_eq!(UserData::decode(0), None);
        assert_eq!(UserData::decode(13 << 56), None);
        assert_eq!(UserData::decode(u64::MAX), None);
        for kind in 13..=255u8 {
            assert_eq!(Op::from_u8(kind), None);
            assert_eq!(UserData::decode(u64::from(kind) << 56 | 5), None);
        }
        assert_eq!(Op::from_u8(0), None);
    }
}

//! The downloading half of the engine, as pure parts with no I/O: which piece to fetch next
//! ([`picker`]), a piece being assembled from blocks and checked as they arrive ([`part`]), who
//! to blame for bad data ([`blame`]), what to do with a piece nobody fetches any more
//! ([`orphan`]), and which pieces are wanted at all, and which first ([`want`]: file priorities,
//! sequential, first/last piece). The workers (`engine/fetch.rs`, `engine/conn/`) move the bytes;
//! [`crate::leecher`] drives one download for `ringseed download`.
//!
//! ```text
//!   peer has/bitfield ─► availability + rarity index (PieceTable) ─► picker ─► claim (fetch_or)
//!   request blocks ◄── part (per worker) ◄── piece messages; SHA-1 advances in order
//!   part complete ─► hash check ─► write token (fetch_or on `writing`) ─► io_uring writes
//!       ─► verified bit ─► have to all
//! ```

pub mod blame;
pub mod buf;
pub mod orphan;
pub mod part;
pub mod picker;
pub mod pool;
pub mod want;

//! The BTT incentive layer: a downloader bids for faster service and pays the seeder as data
//! arrives with signed vouchers the seeder can claim on-chain; non-payers are still served.
//!
//! ```text
//!  protocol (BEP 10 "rs_speed" messages) ──► voucher checks (verifier thread, batched)
//!        │                                            │ accepted
//!        ▼                                            ▼
//!  auction (which peers get paid slots)        ledger (SQLite, durable before the receipt)
//! ```
//!
//! The codecs and decisions (`wallet`, `voucher`, `protocol`, `auction`) are pure and fuzzed;
//! `ledger` is the only part that does I/O. The wire format is specified in `docs/speed.md`.

pub mod admission;
pub mod chain;
pub mod ledger;
pub mod payer;
pub mod peer;
pub mod protocol;
pub mod service;
pub mod settle;
pub mod submit;
pub mod voucher;
pub mod wallet;

pub use service::onchain;

/// Parses an even-length hex string (either case).
pub(crate) fn parse_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.as_bytes()
        .chunks(2)
        .map(|p| {
            let d = |c: u8| (c as char).to_digit(16);
            Some((d(p[0])? * 16 + d(p[1])?) as u8)
        })
        .collect()
}

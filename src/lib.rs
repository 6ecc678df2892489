//! ringseed: a thread-per-core io_uring BitTorrent seedbox engine.
//!
//! The library holds everything; `main.rs` only parses the command line and prints. The module
//! layout follows `DESIGN.md`: pure codecs (`bencode`, `metainfo`, `tracker::http`,
//! `tracker::udp`) apart from the code that does I/O (`storage`, `create`, the parallel half of
//! `hash`, `tracker::client`).

pub mod bench;
pub mod bencode;
pub mod choking;
pub mod config;
pub mod control;
pub mod create;
pub mod db;
pub mod demo;
pub mod dht;
pub mod download;
pub mod engine;
pub mod fetch;
pub mod hash;
pub mod httpd;
pub mod leecher;
pub mod magnet_fetch;
pub mod merkle;
pub mod metainfo;
pub mod metrics;
pub mod mse;
pub mod pieces;
pub mod serve;
pub mod session;
pub mod sha1x16;
pub mod speed;
pub mod state;
pub mod storage;
pub mod tracker;
pub mod uring;
pub mod verify;
pub mod webui;
pub mod wire;

/// `n`, or the number of cores this process may use when `n` is 0 (the convention of every
/// thread-count setting).
pub fn threads_or_cores(n: usize) -> usize {
    if n > 0 {
        n
    } else {
        std::thread::available_parallelism().map_or(1, |c| c.get())
    }
}

/// Every component with tables in the node's database, and its migrations: the one place a
/// component registers itself.
pub const DB_COMPONENTS: &[(&str, &[&str])] = &[
    (crate::state::COMPONENT, crate::state::MIGRATIONS),
    (
        crate::speed::ledger::COMPONENT,
        crate::speed::ledger::MIGRATIONS,
    ),
];

//! ringseed: a thread-per-core io_uring BitTorrent seedbox engine.
//!
//! The library holds everything; `main.rs` only parses the command line and prints. The module
//! layout follows `DESIGN.md`: pure codecs (`bencode`, `metainfo`) apart from the code that does
//! I/O (`storage`, `create`, the parallel half of `hash`).

pub mod bencode;
pub mod config;
pub mod create;
pub mod engine;
pub mod hash;
pub mod metainfo;
pub mod pieces;
pub mod storage;
pub mod wire;

//! A minimal EVM client for settlement (issue 17): just what `ringseed settle --submit` and
//! `ringseed channel open` need to talk to a JSON-RPC node such as BTTC's or a local anvil.
//!
//! ```text
//!  rlp (encoding) ─► tx (legacy EIP-155 transaction, signed by the node's wallet)
//!  abi (the PaymentChannel calls and the `channels(id)` reply)
//!  rpc (JSON-RPC over HTTP: bounded replies, timeouts, never a panic on a bad reply)
//! ```
//!
//! Transactions are **legacy (type 0) with EIP-155 replay protection**, priced by
//! `eth_gasPrice`: BTTC takes them, every node answers `eth_gasPrice`, and one price per run is
//! all a claim needs (a claim is not urgent to the second). EIP-1559 (type 2) would need
//! `eth_feeHistory` and a tip policy for no gain here.

pub mod abi;
pub mod confirm;
pub mod rlp;
pub mod rpc;
pub mod send;
pub mod tx;

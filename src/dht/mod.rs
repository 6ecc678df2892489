//! The Mainline DHT (BEP 5) for public torrents, through the `mainline` crate.
//!
//! - [`node`]: our node (server mode, bound where the engine listens, bootstrapped from the
//!   config and the saved routing table) and its bounded lookups and announces;
//! - [`torrent`]: per torrent, when to look up and announce, the peers found going to the
//!   torrent's dial loop like tracker and PEX peers; a magnet's lookups while its metadata is
//!   fetched;
//! - [`policy`]: the pure decisions (BEP 27: private torrents never touch the DHT; the
//!   schedule; which addresses of a reply are kept), unit-tested;
//! - [`filter`]: which incoming queries the node answers (a rate per source address and one
//!   for the node; a source past its rate is blocked for a while);
//! - [`nodes_file`]: the routing table saved across restarts;
//! - [`stats`] and [`metrics`]: the counters, `/metrics` and the API.
//!
//! mainline is IPv4 only (its sockets, node and peer addresses are `SocketAddrV4`), so our DHT
//! is too; BEP 32 (IPv6 DHT) would need another crate or a second implementation.

pub mod filter;
pub mod metrics;
pub mod node;
pub mod nodes_file;
pub mod policy;
pub mod stats;
pub mod torrent;

pub use node::{Dht, DhtOptions};
pub use policy::{DhtLimits, may_use_dht};
pub use stats::{DhtStats, DhtStatus};

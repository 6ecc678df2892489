//! Our DHT node: a `mainline::Dht` in server mode (a seedbox is long-running and reachable, so
//! it answers other nodes' queries and stores their announces, as libtorrent's node does), and
//! the bounded lookups and announces the torrents ask of it.
//!
//! Queries from other nodes are answered within the rates of [`super::filter`].
//!
//! mainline runs its own thread (a UDP socket with a 50 ms read timeout, polled in a loop);
//! its async handle is awaited on our tokio threads, so nothing here blocks the control thread.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, ToSocketAddrs};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use mainline::async_dht::AsyncDht;

use super::filter::QueryFilter;
use super::nodes_file;
use super::policy::{DhtLimits, take_peers};
use super::stats::DhtStats;

/// Most bootstrap entries used from the config.
pub const MAX_BOOTSTRAP: usize = 64;

/// How the node starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhtOptions {
    /// UDP port; 0 means the engine's listening port (as qBittorrent and libtorrent do), or
    /// any free port if that one is taken.
    pub port: u16,
    /// Address to bind; `None` means the engine's listening address when it is IPv4, else
    /// 0.0.0.0 (mainline speaks IPv4 only).
    pub bind: Option<Ipv4Addr>,
    /// `host:port` entries to bootstrap from.
    pub bootstrap: Vec<String>,
    /// Where the routing table is kept across restarts; `None` keeps nothing.
    pub nodes_file: Option<PathBuf>,
    pub limits: DhtLimits,
}

/// The address the DHT binds: `bind` if given, else the engine's listening address when it is
/// a specific IPv4 one, else 0.0.0.0.
pub fn bind_ip(bind: Option<Ipv4Addr>, engine_listen: SocketAddr) -> Ipv4Addr {
    match (bind, engine_listen) {
        (Some(ip), _) => ip,
        (None, SocketAddr::V4(a)) => *a.ip(),
        (None, SocketAddr::V6(a)) => a.ip().to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED),
    }
}

/// The bootstrap addresses of `entries` (at most [`MAX_BOOTSTRAP`]), names resolved with
/// `resolve`, IPv4 only, without repeats. A node bound to a loopback address could reach none
/// but loopback nodes: it keeps only those and resolves no name (so a test on loopback sends
/// nothing, not even a DNS query, off the machine).
pub fn bootstrap_addrs(
    entries: &[String],
    bind: Ipv4Addr,
    resolve: impl Fn(&str) -> Vec<SocketAddr>,
) -> Vec<SocketAddrV4> {
    let loopback = bind.is_loopback();
    let mut out: Vec<SocketAddrV4> = Vec::new();
    for e in entries.iter().take(MAX_BOOTSTRAP) {
        let found: Vec<SocketAddr> = match e.parse::<SocketAddr>() {
            Ok(a) => vec![a],
            Err(_) if loopback => Vec::new(),
            Err(_) => resolve(e),
        };
        for a in found {
            let SocketAddr::V4(a) = a else { continue };
            if a.port() == 0 || (loopback && !a.ip().is_loopback()) || out.contains(&a) {
                continue;
            }
            out.push(a);
        }
    }
    out
}

/// A host name's addresses through the system resolver (blocking).
fn resolve(entry: &str) -> Vec<SocketAddr> {
    match entry.to_socket_addrs() {
        Ok(it) => it.collect(),
        Err(e) => {
            tracing::warn!("DHT bootstrap node {entry}: {e}");
            Vec::new()
        }
    }
}

/// A running DHT node. Cheap to clone; the node stops when the last clone is dropped.
#[derive(Clone)]
pub struct Dht {
    inner: Arc<Inner>,
}

struct Inner {
    /// The blocking handle, used only at shutdown (to save the routing table).
    sync: mainline::Dht,
    dht: AsyncDht,
    stats: Arc<DhtStats>,
    limits: DhtLimits,
    /// Lookups and announces in flight (`max_lookups_in_flight` permits).
    slots: tokio::sync::Semaphore,
    local: SocketAddrV4,
    /// The port we announce: the engine's TCP listening port.
    announce_port: u16,
    nodes_file: Option<PathBuf>,
}

impl std::fmt::Debug for Dht {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dht")
            .field("local", &self.inner.local)
            .finish_non_exhaustive()
    }
}

impl Dht {
    /// Starts the node for an engine listening on `engine_listen` (whose port we announce).
    /// Blocks while bootstrap names are resolved.
    pub fn start(o: &DhtOptions, engine_listen: SocketAddr) -> std::io::Result<Dht> {
        let bind = bind_ip(o.bind, engine_listen);
        let mut bootstrap = bootstrap_addrs(&o.bootstrap, bind, resolve);
        let mut saved = 0;
        if let Some(path) = &o.nodes_file {
            for a in nodes_file::load(path) {
                if !bootstrap.contains(&a) && (!bind.is_loopback() || a.ip().is_loopback()) {
                    bootstrap.push(a);
                    saved += 1;
                }
            }
        }
        let stats = Arc::new(DhtStats::default());
        let build = |port: u16| {
            let mut b = mainline::Dht::builder();
            b.server_mode()
                .port(port)
                .bind_address(bind)
                .server_settings(mainline::ServerSettings {
                    filter: Box::new(QueryFilter::new(
                        o.limits.queries,
                        stats.query_counts.clone(),
                    )),
                    ..Default::default()
                });
            if bootstrap.is_empty() {
                b.no_bootstrap();
            } else {
                b.bootstrap(&bootstrap);
            }
            b.build()
        };
        let port = if o.port == 0 {
            engine_listen.port()
        } else {
            o.port
        };
        let sync = match build(port) {
            Ok(d) => d,
            Err(e) if o.port == 0 => {
                tracing::warn!("DHT on UDP port {port}: {e}; using any free port");
                build(0)?
            }
            Err(e) => return Err(e),
        };
        let local = sync.info().local_addr();
        stats.port.store(u64::from(local.port()), Ordering::Relaxed);
        tracing::info!(
            %local,
            bootstrap = bootstrap.len(),
            from_saved_table = saved,
            "DHT node started"
        );
        Ok(Dht {
            inner: Arc::new(Inner {
                dht: sync.clone().as_async(),
                sync,
                stats,
                slots: tokio::sync::Semaphore::new(o.limits.max_lookups_in_flight.max(1)),
                limits: o.limits.clone(),
                local,
                announce_port: engine_listen.port(),
                nodes_file: o.nodes_file.clone(),
            }),
        })
    }

    /// Where the node listens (UDP).
    pub fn local_addr(&self) -> SocketAddrV4 {
        self.inner.local
    }

    pub fn stats(&self) -> &Arc<DhtStats> {
        &self.inner.stats
    }

    pub fn limits(&self) -> &DhtLimits {
        &self.inner.limits
    }

    /// Looks up peers of `info_hash` (get_peers): at most `max_peers_per_lookup` distinct
    /// addresses, within `lookup_timeout` (what arrived by then is returned), waiting for one of
    /// the `max_lookups_in_flight` slots first.
    pub async fn lookup(&self, info_hash: [u8; 20]) -> Vec<SocketAddr> {
        let Ok(_slot) = self.inner.slots.acquire().await else {
            return Vec::new();
        };
        let Ok(target) = mainline::Id::from_bytes(info_hash) else {
            return Vec::new();
        };
        let (s, l) = (&self.inner.stats, &self.inner.limits);
        DhtStats::add(&s.lookups_started, 1);
        let mut replies = self.inner.dht.get_peers(target);
        let deadline = tokio::time::Instant::now() + l.lookup_timeout;
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        loop {
            let next = std::future::poll_fn(|cx| {
                futures_core::Stream::poll_next(Pin::new(&mut replies), cx)
            });
            match tokio::time::timeout_at(deadline, next).await {
                Ok(Some(reply)) => {
                    let before = seen.len();
                    take_peers(&reply, &mut seen, l.max_peers_per_lookup, &mut out);
                    if seen.len() >= l.max_peers_per_lookup {
                        let taken = seen.len() - before;
                        DhtStats::add(
                            &s.peers_dropped,
                            (reply.len() - taken.min(reply.len())) as u64,
                        );
                        // The cap is reached: the rest of the lookup is not waited for.
                        DhtStats::add(&s.lookups_finished, 1);
                        break;
                    }
                }
                Ok(None) => {
                    DhtStats::add(&s.lookups_finished, 1);
                    break;
                }
                Err(_) => {
                    DhtStats::add(&s.lookups_timed_out, 1);
                    break;
                }
            }
        }
        DhtStats::add(&s.peers_found, out.len() as u64);
        out
    }

    /// Announces us (the engine's listening port) for `info_hash` to the nodes closest to it
    /// (announce_peer, after the lookup that gets their tokens), within `lookup_timeout`.
    /// Returns whether any node stored it.
    pub async fn announce(&self, info_hash: [u8; 20]) -> bool {
        let Ok(_slot) = self.inner.slots.acquire().await else {
            return false;
        };
        let Ok(target) = mainline::Id::from_bytes(info_hash) else {
            return false;
        };
        let s = &self.inner.stats;
        DhtStats::add(&s.announces, 1);
        let put = self
            .inner
            .dht
            .announce_peer(target, Some(self.inner.announce_port));
        match tokio::time::timeout(self.inner.limits.lookup_timeout, put).await {
            Ok(Ok(_)) => true,
            Ok(Err(e)) => {
                tracing::debug!(info_hash = %target, "DHT announce: {e}");
                DhtStats::add(&s.announces_failed, 1);
                false
            }
            Err(_) => {
                tracing::debug!(info_hash = %target, "DHT announce timed out");
                DhtStats::add(&s.announces_failed, 1);
                false
            }
        }
    }

    /// The routing table's nodes (not stale), as `IP:port`.
    pub async fn nodes(&self) -> Vec<String> {
        self.inner.dht.to_bootstrap().await
    }

    /// Keeps the node count fresh for `/metrics` (every 5 s) and saves the routing table every
    /// 10 minutes, until `stop` changes.
    pub async fn maintain(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        let mut since_save = Duration::ZERO;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            let nodes = self.nodes().await;
            self.inner
                .stats
                .nodes
                .store(nodes.len() as u64, Ordering::Relaxed);
            since_save += Duration::from_secs(5);
            if since_save >= Duration::from_secs(600) && !nodes.is_empty() {
                since_save = Duration::ZERO;
                let path = self.inner.nodes_file.clone();
                let _ = tokio::task::spawn_blocking(move || save_to(path.as_deref(), &nodes)).await;
            }
        }
    }

    /// Saves the routing table now (blocking: call it off the control thread, e.g. at
    /// shutdown).
    pub fn save_nodes_blocking(&self) {
        let nodes = self.inner.sync.to_bootstrap();
        if !nodes.is_empty() {
            save_to(self.inner.nodes_file.as_deref(), &nodes);
        }
    }
}

fn save_to(path: Option<&std::path::Path>, nodes: &[String]) {
    let Some(path) = path else { return };
    match nodes_file::save(path, nodes) {
        Ok(()) => tracing::debug!(nodes = nodes.len(), "DHT routing table saved"),
        // `seed` and `download` keep it only where the state directory exists.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::debug!("DHT routing table not saved in {}: {e}", path.display())
        }
        Err(e) => tracing::warn!("saving the DHT routing table in {}: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_dns(_: &str) -> Vec<SocketAddr> {
        panic!("a loopback node must not resolve names")
    }

    #[test]
    fn a_loopback_node_keeps_only_loopback_nodes_and_resolves_nothing() {
        let entries: Vec<String> = [
            "router.bittorrent.com:6881",
            "127.0.0.1:6881",
            "10.0.0.1:6881",
            "127.0.0.2:0",
            "127.0.0.1:6881",
            "[::1]:6881",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            bootstrap_addrs(&entries, Ipv4Addr::LOCALHOST, no_dns),
            vec!["127.0.0.1:6881".parse::<SocketAddrV4>().unwrap()]
        );
    }

    #[test]
    fn names_resolve_to_their_ipv4_addresses_elsewhere() {
        let entries: Vec<String> = ["router.example:6881", "192.0.2.9:51413"]
            .map(String::from)
            .to_vec();
        let fake = |name: &str| {
            assert_eq!(name, "router.example:6881");
            vec![
                "192.0.2.1:6881".parse().unwrap(),
                "[2001:db8::1]:6881".parse().unwrap(),
            ]
        };
        assert_eq!(
            bootstrap_addrs(&entries, Ipv4Addr::UNSPECIFIED, fake),
            vec![
                "192.0.2.1:6881".parse::<SocketAddrV4>().unwrap(),
                "192.0.2.9:51413".parse().unwrap()
            ]
        );
        let many = vec!["192.0.2.1:1".to_string(); 1000];
        assert_eq!(bootstrap_addrs(&many, Ipv4Addr::UNSPECIFIED, fake).len(), 1);
    }

    #[test]
    fn the_node_binds_where_the_engine_listens() {
        let l = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(bind_ip(None, l("127.0.0.1:0")), Ipv4Addr::LOCALHOST);
        assert_eq!(bind_ip(None, l("[::]:6881")), Ipv4Addr::UNSPECIFIED);
        assert_eq!(bind_ip(None, l("0.0.0.0:6881")), Ipv4Addr::UNSPECIFIED);
        assert_eq!(
            bind_ip(Some(Ipv4Addr::new(10, 0, 0, 1)), l("[::]:6881")),
            Ipv4Addr::new(10, 0, 0, 1)
        );
    }
}

//! A running seedbox: the engine's workers plus the control thread.
//!
//! The control thread runs a tokio current-thread runtime. It owns the tracker announcers (one
//! task per torrent) and is the only place that waits on the network for anything but peers. It
//! never touches a peer socket: it hands peers it learns of to the workers through the engine's
//! bounded command channels.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use std::sync::RwLock;

use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, oneshot, watch};

use crate::db::{DbError, DbHandle, DbWriter};
use crate::metrics::EngineCollector;
use crate::speed::service::SpeedService;

use crate::engine::{Engine, EngineError, Settings, StatsSnapshot, Torrent};
use crate::tracker::{
    AnnounceOutcome, Announcer, AnnouncerConfig, ClientConfig, TrackerClient, TransferStats,
};

/// Options of the control plane.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Announce to the torrents' trackers.
    pub announce: bool,
    pub tracker_client: ClientConfig,
    pub announcer: AnnouncerConfig,
    /// Connect out to peers that trackers return while a torrent is incomplete. A complete
    /// torrent (a seed) waits for leechers to connect, which they do once the tracker lists it.
    pub max_connects_per_announce: usize,
    /// Serve Prometheus `/metrics` here.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Torrents with their own metric series; the rest are summed as "other".
    pub metrics_top_torrents: usize,
    /// The bounds of the `/metrics` HTTP server, and what it closed for them.
    pub metrics_http_limits: crate::httpd::HttpLimits,
    pub metrics_http: Arc<crate::httpd::HttpStats>,
    /// The node's database (resume state, ledger); the session runs its one writer thread.
    pub db_path: Option<PathBuf>,
    /// More series for `/metrics` (the control service's own counters).
    pub collectors: Vec<Arc<dyn prometheus_client::collector::Collector>>,
    /// Earn BTT (`[speed] enabled`).
    pub speed: Option<crate::speed::service::SpeedSetup>,
    /// Run a DHT node (`[dht] enabled`): public torrents announce themselves and look up peers.
    pub dht: Option<crate::dht::DhtOptions>,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            announce: true,
            tracker_client: ClientConfig::default(),
            announcer: AnnouncerConfig::default(),
            max_connects_per_announce: 50,
            metrics_listen: None,
            metrics_top_torrents: 20,
            metrics_http_limits: crate::httpd::HttpLimits::default(),
            metrics_http: Arc::default(),
            db_path: None,
            collectors: Vec::new(),
            speed: None,
            dht: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("starting the control thread: {0}")]
    Control(std::io::Error),
    #[error("tracker client: {0}")]
    Tracker(#[from] crate::tracker::TrackerError),
    #[error("the control thread has stopped")]
    Stopped,
    #[error("speed: {0}")]
    Speed(#[from] crate::speed::service::SpeedStartError),
    #[error("metrics endpoint on {addr}: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("DHT node: {0}")]
    Dht(std::io::Error),
}

/// A task for the control thread's runtime.
pub type ControlTask = Pin<Box<dyn Future<Output = ()> + Send>>;

enum ControlCommand {
    Add(Arc<Torrent>),
    /// Peer addresses for a torrent (`--peer`, a magnet's `x.pe`): dialled at once.
    Peers([u8; 20], Vec<std::net::SocketAddr>),
    /// Stop announcing one torrent (with a `stopped` event to its trackers).
    Remove([u8; 20]),
    /// Run a task on the control thread until shutdown.
    Spawn(ControlTask),
    /// Send `stopped` to every tracker, then answer.
    Shutdown(oneshot::Sender<()>),
}

/// The engine and its control thread.
pub struct Session {
    handle: SessionHandle,
    control: Option<JoinHandle<()>>,
    metrics_addr: Option<std::net::SocketAddr>,
    db: Option<DbWriter>,
    /// The speed layer (stopped after the engine, before the database writer).
    speed: Option<Arc<SpeedService>>,
}

/// What other threads and control-thread tasks use to add and remove torrents.
#[derive(Clone)]
pub struct SessionHandle {
    engine: Arc<Engine>,
    commands: mpsc::UnboundedSender<ControlCommand>,
    torrents: Arc<RwLock<Vec<Arc<Torrent>>>>,
    /// The DHT node, when `[dht] enabled`.
    dht: Option<crate::dht::Dht>,
}

/// Serve a torrent and announce it; or stop both.
impl SessionHandle {
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The DHT node, when it runs (magnets look their peers up through it).
    pub fn dht(&self) -> Option<&crate::dht::Dht> {
        self.dht.as_ref()
    }

    /// Serves a torrent and starts announcing it.
    pub fn add_torrent(&self, t: Arc<Torrent>) -> Result<(), SessionError> {
        self.engine.add_torrent(t.clone())?;
        if let Ok(mut list) = self.torrents.write() {
            list.push(t.clone());
        }
        self.commands
            .send(ControlCommand::Add(t))
            .map_err(|_| SessionError::Stopped)
    }

    /// Stops serving a torrent (its peers are closed) and announces `stopped`.
    pub fn remove_torrent(&self, id: [u8; 20]) -> Result<(), SessionError> {
        if let Ok(mut list) = self.torrents.write() {
            list.retain(|t| t.id != id);
        }
        let _ = self.commands.send(ControlCommand::Remove(id));
        self.engine.remove_torrent(id)?;
        Ok(())
    }

    /// Dials `peers` for the torrent `id` (at once, and again later while it needs peers).
    pub fn add_peers(
        &self,
        id: [u8; 20],
        peers: Vec<std::net::SocketAddr>,
    ) -> Result<(), SessionError> {
        self.commands
            .send(ControlCommand::Peers(id, peers))
            .map_err(|_| SessionError::Stopped)
    }

    /// Runs `task` on the control thread; it is dropped at shutdown.
    pub fn spawn(&self, task: ControlTask) -> Result<(), SessionError> {
        self.commands
            .send(ControlCommand::Spawn(task))
            .map_err(|_| SessionError::Stopped)
    }
}

impl Session {
    pub fn start(settings: Settings, options: SessionOptions) -> Result<Session, SessionError> {
        // The ledger needs the database even where no resume state is kept (`seed`).
        let db_path = options
            .db_path
            .clone()
            .or_else(|| options.speed.as_ref().map(|s| s.db_path.clone()));
        let db = match &db_path {
            Some(path) => Some(DbWriter::start(path, crate::DB_COMPONENTS)?),
            None => None,
        };
        let speed = match (&options.speed, &db) {
            (Some(setup), Some(db)) => Some(crate::speed::service::start_node(setup, db.handle())?),
            _ => None,
        };
        let engine = Arc::new(Engine::start_with_speed(settings, speed.clone())?);
        let client = TrackerClient::new(options.tracker_client.clone())?;
        let torrents: Arc<RwLock<Vec<Arc<Torrent>>>> = Arc::default();
        // After the engine: the DHT takes the engine's port by default, and announces it.
        let dht = match &options.dht {
            Some(o) => {
                Some(crate::dht::Dht::start(o, engine.local_addr()).map_err(SessionError::Dht)?)
            }
            None => None,
        };
        // Bind here, so a taken port is an error of `start` and the real port is known.
        let metrics = match options.metrics_listen {
            Some(addr) => {
                let l = std::net::TcpListener::bind(addr)
                    .and_then(|l| l.set_nonblocking(true).map(|_| l))
                    .map_err(|source| SessionError::Metrics { addr, source })?;
                let mut registry = Registry::default();
                registry.register_collector(Box::new(EngineCollector {
                    engine: engine.clone(),
                    torrents: torrents.clone(),
                    top_torrents: options.metrics_top_torrents,
                    speed: speed.as_ref().map(|s| s.stats.clone()),
                }));
                registry.register_collector(Box::new(crate::dht::metrics::DhtCollector {
                    stats: dht.as_ref().map(|d| d.stats().clone()),
                }));
                for c in &options.collectors {
                    registry.register_collector(Box::new(crate::metrics::Shared(c.clone())));
                }
                Some((l, registry))
            }
            None => None,
        };
        let metrics_addr = metrics.as_ref().and_then(|(l, _)| l.local_addr().ok());
        let (tx, rx) = mpsc::unbounded_channel();
        let e = engine.clone();
        let d = dht.clone();
        let control = std::thread::Builder::new()
            .name("ringseed-control".into())
            .spawn(move || control_thread(e, client, options, rx, metrics, d))
            .map_err(SessionError::Control)?;
        Ok(Session {
            handle: SessionHandle {
                engine,
                commands: tx,
                torrents,
                dht,
            },
            control: Some(control),
            metrics_addr,
            db,
            speed,
        })
    }

    /// The speed layer, when enabled.
    pub fn speed(&self) -> Option<&Arc<SpeedService>> {
        self.speed.as_ref()
    }

    pub fn engine(&self) -> &Engine {
        &self.handle.engine
    }

    /// The DHT node, when it runs.
    pub fn dht(&self) -> Option<&crate::dht::Dht> {
        self.handle.dht.as_ref()
    }

    /// A handle for other threads and control-thread tasks.
    pub fn handle(&self) -> SessionHandle {
        self.handle.clone()
    }

    /// The database writer's handle, when the session has a database.
    pub fn db(&self) -> Option<DbHandle> {
        self.db.as_ref().map(DbWriter::handle)
    }

    /// Where `/metrics` is served, if it is.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics_addr
    }

    /// Serves a torrent and starts announcing it.
    pub fn add_torrent(&self, t: Arc<Torrent>) -> Result<(), SessionError> {
        self.handle.add_torrent(t)
    }

    /// Announces `stopped` (bounded by the announcer's deadline), closes every peer, stops;
    /// the database writer commits what is queued and stops last.
    pub fn shutdown(mut self) -> Vec<StatsSnapshot> {
        let (tx, rx) = oneshot::channel();
        if self
            .handle
            .commands
            .send(ControlCommand::Shutdown(tx))
            .is_ok()
        {
            let _ = rx.blocking_recv();
        }
        if let Some(t) = self.control.take() {
            let _ = t.join();
        }
        // The routing table is kept for the next start; the node stops with its last handle.
        if let Some(d) = &self.handle.dht {
            d.save_nodes_blocking();
        }
        self.handle.engine.stop();
        // The verifier's last vouchers go to the writer before the writer stops.
        if let Some(svc) = self.speed.take() {
            svc.stop();
        }
        if let Some(db) = self.db.take() {
            db.shutdown();
        }
        self.handle.engine.stats()
    }
}

fn control_thread(
    engine: Arc<Engine>,
    client: TrackerClient,
    options: SessionOptions,
    mut commands: mpsc::UnboundedReceiver<ControlCommand>,
    metrics: Option<(std::net::TcpListener, Registry)>,
    dht: Option<crate::dht::Dht>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("control thread runtime: {e}");
            return;
        }
    };
    let client = Arc::new(client);
    rt.block_on(async move {
        let (stop_tx, stop_rx) = watch::channel(false);
        if let Some((listener, registry)) = metrics {
            match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => {
                    let registry = Arc::new(registry);
                    let app = axum::Router::new().route(
                        "/metrics",
                        axum::routing::get(move || {
                            let r = registry.clone();
                            async move {
                                // The render reads every collector (locks included): off the
                                // control thread, which runs the API and the announcers.
                                let text = tokio::task::spawn_blocking(move || {
                                    crate::metrics::render(&r)
                                })
                                .await
                                .unwrap_or_default();
                                (
                                    [(
                                        axum::http::header::CONTENT_TYPE,
                                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                    )],
                                    text,
                                )
                            }
                        }),
                    );
                    let mut stop = stop_rx.clone();
                    let (limits, stats) =
                        (options.metrics_http_limits, options.metrics_http.clone());
                    tokio::spawn(async move {
                        let stopped = async move {
                            let _ = stop.changed().await;
                        };
                        crate::httpd::serve(l, app, limits, stats, stopped).await;
                    });
                }
                Err(e) => tracing::error!("metrics endpoint: {e}"),
            }
        }
        let mut tasks = tokio::task::JoinSet::new();
        let mut services = tokio::task::JoinSet::new();
        if let Some(d) = &dht {
            tasks.spawn(d.clone().maintain(stop_rx.clone()));
        }
        // Per torrent, the switch that ends its announce and dial loops, and where its dial
        // loop hears of peers.
        let mut running: HashMap<[u8; 20], Running> = HashMap::new();
        while let Some(cmd) = commands.recv().await {
            match cmd {
                ControlCommand::Add(t) => {
                    let (own_tx, own_rx) = watch::channel(false);
                    let (peers_tx, peers_rx) = mpsc::unbounded_channel();
                    // Re-adding (resume after pause) ends the old loops first.
                    if let Some((old, _)) = running.insert(t.id, (own_tx, peers_tx.clone())) {
                        let _ = old.send(true);
                    }
                    tasks.spawn(dial_loop(
                        t.clone(),
                        engine.clone(),
                        peers_rx,
                        stop_rx.clone(),
                        own_rx.clone(),
                    ));
                    // Public torrents only: the loop returns at once for a private one.
                    if let Some(d) = &dht {
                        tasks.spawn(crate::dht::torrent::torrent_loop(
                            d.clone(),
                            t.clone(),
                            peers_tx.clone(),
                            stop_rx.clone(),
                            own_rx.clone(),
                        ));
                    }
                    if options.announce && !t.meta.trackers.is_empty() {
                        tasks.spawn(announce_loop(
                            t,
                            engine.clone(),
                            client.clone(),
                            options.clone(),
                            stop_rx.clone(),
                            own_rx,
                            peers_tx,
                        ));
                    }
                }
                ControlCommand::Peers(id, peers) => {
                    if let Some((_, tx)) = running.get(&id) {
                        let _ = tx.send(peers);
                    }
                }
                ControlCommand::Remove(id) => {
                    if let Some((stop, _)) = running.remove(&id) {
                        let _ = stop.send(true);
                    }
                }
                ControlCommand::Spawn(task) => {
                    services.spawn(task);
                }
                ControlCommand::Shutdown(done) => {
                    services.abort_all();
                    let _ = stop_tx.send(true);
                    while tasks.join_next().await.is_some() {}
                    engine.stop();
                    let _ = done.send(());
                    return;
                }
            }
        }
        // The session handle was dropped without a shutdown: stop anyway.
        let _ = stop_tx.send(true);
        while tasks.join_next().await.is_some() {}
    });
}

/// A torrent's switch that ends its control-thread loops, and where its dial loop hears of
/// peers.
type Running = (watch::Sender<bool>, mpsc::UnboundedSender<Vec<SocketAddr>>);

async fn announce_loop(
    t: Arc<Torrent>,
    engine: Arc<Engine>,
    client: Arc<TrackerClient>,
    options: SessionOptions,
    mut stop: watch::Receiver<bool>,
    mut own_stop: watch::Receiver<bool>,
    peers: mpsc::UnboundedSender<Vec<SocketAddr>>,
) {
    let port = engine.local_addr().port();
    let new_announcer = |t: &Torrent| {
        Announcer::new(
            t.id,
            engine.settings().peer_id,
            port,
            &t.tiers(),
            options.announcer.clone(),
        )
    };
    // Tracker edits through the API start a new schedule on the new tiers.
    let mut edits = t.tiers_edits.load(std::sync::atomic::Ordering::Acquire);
    let mut announcer = new_announcer(&t);
    let stats = |t: &Torrent| TransferStats {
        uploaded: t.uploaded(),
        downloaded: t.downloaded.load(std::sync::atomic::Ordering::Relaxed),
        left: t.left(),
    };
    // A torrent that completes while running owes its trackers `completed` at once. Complete
    // means every piece: one that finished its wanted files only (skipped files, `left` 0)
    // is not announced `completed`, as libtorrent does not.
    let complete = |t: &Torrent| t.pieces.verified.is_full();
    let mut was_complete = complete(&t);
    loop {
        *crate::engine::lock(&t.next_announce) = Some(announcer.next_due());
        let due = tokio::time::Instant::from_std(announcer.next_due());
        tokio::select! {
            _ = tokio::time::sleep_until(due) => {}
            _ = t.reannounce.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                if !was_complete && complete(&t) {
                    was_complete = true;
                    announcer.mark_completed();
                }
                continue;
            }
            _ = stop.changed() => break,
            _ = own_stop.changed() => break,
        }
        let now_edits = t.tiers_edits.load(std::sync::atomic::Ordering::Acquire);
        if now_edits != edits {
            edits = now_edits;
            announcer = new_announcer(&t);
        }
        let outcome = announcer.announce_now(client.as_ref(), stats(&t)).await;
        {
            let answered = match &outcome {
                AnnounceOutcome::Announced { url, response, .. } => Some((
                    url.as_str(),
                    response.peers.len().min(u32::MAX as usize) as u32,
                )),
                _ => None,
            };
            let mut shown = crate::engine::lock(&t.trackers);
            *shown = crate::tracker::report::reports(announcer.tiers(), answered, None, &shown);
        }
        match outcome {
            AnnounceOutcome::Announced {
                url,
                event,
                response,
            } => {
                tracing::info!(
                    torrent = %t.meta.info.name,
                    tracker = %url,
                    ?event,
                    peers = response.peers.len(),
                    interval_s = response.interval.as_secs(),
                    "announced"
                );
                if let Some(w) = &response.warning {
                    tracing::warn!(tracker = %url, "tracker warning: {w}");
                }
                let list: Vec<SocketAddr> = response
                    .peers
                    .iter()
                    .take(options.max_connects_per_announce)
                    .copied()
                    .collect();
                let _ = peers.send(list);
            }
            AnnounceOutcome::Failed { error } => {
                tracing::warn!(torrent = %t.meta.info.name, "announce failed: {error}");
            }
            // No trackers (none in the metainfo, or all removed): wait for an edit.
            AnnounceOutcome::NoTrackers => loop {
                *crate::engine::lock(&t.next_announce) = None;
                tokio::select! {
                    _ = t.reannounce.notified() => {}
                    _ = stop.changed() => return,
                    _ = own_stop.changed() => return,
                }
                if t.tiers_edits.load(std::sync::atomic::Ordering::Acquire) != edits {
                    break;
                }
            },
            AnnounceOutcome::Stopped => {
                *crate::engine::lock(&t.next_announce) = None;
                return;
            }
        }
    }
    *crate::engine::lock(&t.next_announce) = None;
    if let Err(e) = announcer.stop(client.as_ref(), stats(&t)).await {
        tracing::warn!(torrent = %t.meta.info.name, "stopped announce: {e}");
    }
}

/// Dials a torrent's peers: those its trackers returned, those peer exchange named, and those
/// given by hand. Each address is dialled when it is not connected already, with a growing wait
/// between attempts, while the torrent has room for peers; a download dials everyone it can,
/// a seed too (some clients never dial a loopback or "martian" address, so a seed reaches them
/// only by dialling).
async fn dial_loop(
    t: Arc<Torrent>,
    engine: Arc<Engine>,
    mut peers: mpsc::UnboundedReceiver<Vec<SocketAddr>>,
    mut stop: watch::Receiver<bool>,
    mut own_stop: watch::Receiver<bool>,
) {
    let mut book = PeerBook::default();
    let max = engine.settings().max_dials_per_torrent;
    loop {
        tokio::select! {
            got = peers.recv() => match got {
                Some(list) => book.learn(list, Instant::now()),
                None => break,
            },
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => break,
            _ = own_stop.changed() => break,
        }
        let learned = std::mem::take(&mut *crate::engine::lock(&t.fetch.learned));
        book.learn(learned, Instant::now());
        let busy = crate::engine::lock(&t.fetch.dialled).clone();
        let room = max.saturating_sub(busy.len());
        for addr in book.due(Instant::now(), room, |a| busy.contains(a)) {
            if let Err(e) = engine.connect(addr, t.id) {
                tracing::debug!("connect to {addr}: {e}");
            }
        }
    }
}

/// Addresses a torrent may dial, with when each may be tried again.
#[derive(Default)]
struct PeerBook {
    peers: HashMap<SocketAddr, (Instant, u32)>,
}

/// Addresses one torrent remembers.
const MAX_BOOK: usize = 4096;

impl PeerBook {
    fn learn(&mut self, list: Vec<SocketAddr>, now: Instant) {
        for a in list {
            if a.port() == 0 || a.ip().is_unspecified() || a.ip().is_multicast() {
                continue;
            }
            if self.peers.len() >= MAX_BOOK && !self.peers.contains_key(&a) {
                break;
            }
            // A peer named again (a new announce) may be tried at once.
            let e = self.peers.entry(a).or_insert((now, 0));
            e.0 = e.0.min(now);
        }
    }

    /// Up to `room` addresses due for a try (not `busy`), each then waiting 5 s, 10 s, 20 s …
    /// up to 10 minutes before its next try.
    fn due(
        &mut self,
        now: Instant,
        room: usize,
        busy: impl Fn(&SocketAddr) -> bool,
    ) -> Vec<SocketAddr> {
        let mut out = Vec::new();
        for (a, (next, tries)) in self.peers.iter_mut() {
            if out.len() >= room.min(50) {
                break;
            }
            if *next > now || busy(a) {
                continue;
            }
            *tries += 1;
            let wait = Duration::from_secs(5).saturating_mul(1 << (*tries - 1).min(7));
            *next = now + wait.min(Duration::from_secs(600));
            out.push(*a);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_book_dials_each_peer_once_per_wait_and_skips_busy_ones() {
        let a: SocketAddr = "127.0.0.2:6881".parse().unwrap();
        let b: SocketAddr = "127.0.0.3:6881".parse().unwrap();
        let zero: SocketAddr = "127.0.0.4:0".parse().unwrap();
        let t0 = Instant::now();
        let mut book = PeerBook::default();
        book.learn(vec![a, b, zero, a], t0);
        let mut first = book.due(t0, 10, |x| *x == b);
        first.sort();
        assert_eq!(first, [a]);
        assert!(book.due(t0 + Duration::from_secs(4), 10, |_| false) == [b]);
        assert_eq!(book.due(t0 + Duration::from_secs(6), 10, |_| false), [a]);
        // The second wait is longer; a new mention makes it due at once.
        assert!(book.due(t0 + Duration::from_secs(12), 10, |_| false).len() <= 1);
        book.learn(vec![a], t0 + Duration::from_secs(12));
        assert!(
            book.due(t0 + Duration::from_secs(12), 10, |_| false)
                .contains(&a)
        );
        assert!(
            book.due(t0 + Duration::from_secs(1000), 0, |_| false)
                .is_empty()
        );
    }
}

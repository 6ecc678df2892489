//! A running seedbox: the engine's workers plus the control thread.
//!
//! The control thread runs a tokio current-thread runtime. It owns the tracker announcers (one
//! task per torrent) and is the only place that waits on the network for anything but peers. It
//! never touches a peer socket: it hands peers it learns of to the workers through the engine's
//! bounded command channels.

use std::sync::Arc;
use std::thread::JoinHandle;

use std::sync::RwLock;

use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, oneshot, watch};

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
    /// Earn BTT (`[speed] enabled`).
    pub speed: Option<crate::speed::service::SpeedSetup>,
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
            speed: None,
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
}

enum ControlCommand {
    Add(Arc<Torrent>),
    /// Send `stopped` to every tracker, then answer.
    Shutdown(oneshot::Sender<()>),
}

/// The engine and its control thread.
pub struct Session {
    engine: Arc<Engine>,
    control: Option<JoinHandle<()>>,
    commands: mpsc::UnboundedSender<ControlCommand>,
    torrents: Arc<RwLock<Vec<Arc<Torrent>>>>,
    metrics_addr: Option<std::net::SocketAddr>,
    /// The speed layer and the database writer its ledger uses (stopped after the engine).
    speed: Option<(Arc<SpeedService>, crate::db::DbWriter)>,
}

impl Session {
    pub fn start(mut settings: Settings, options: SessionOptions) -> Result<Session, SessionError> {
        let speed = options
            .speed
            .as_ref()
            .map(crate::speed::service::start_node)
            .transpose()?;
        settings.speed = speed.as_ref().map(|(s, _)| s.clone());
        let engine = Arc::new(Engine::start(settings)?);
        let client = TrackerClient::new(options.tracker_client.clone())?;
        let torrents: Arc<RwLock<Vec<Arc<Torrent>>>> = Arc::default();
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
                    speed: speed.as_ref().map(|(s, _)| s.stats.clone()),
                }));
                Some((l, registry))
            }
            None => None,
        };
        let metrics_addr = metrics.as_ref().and_then(|(l, _)| l.local_addr().ok());
        let (tx, rx) = mpsc::unbounded_channel();
        let e = engine.clone();
        let control = std::thread::Builder::new()
            .name("ringseed-control".into())
            .spawn(move || control_thread(e, client, options, rx, metrics))
            .map_err(SessionError::Control)?;
        Ok(Session {
            engine,
            control: Some(control),
            commands: tx,
            torrents,
            metrics_addr,
            speed,
        })
    }

    /// The speed layer, when enabled.
    pub fn speed(&self) -> Option<&Arc<SpeedService>> {
        self.speed.as_ref().map(|(s, _)| s)
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Where `/metrics` is served, if it is.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics_addr
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

    /// Announces `stopped` (bounded by the announcer's deadline), closes every peer, stops.
    pub fn shutdown(mut self) -> Vec<StatsSnapshot> {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(ControlCommand::Shutdown(tx)).is_ok() {
            let _ = rx.blocking_recv();
        }
        if let Some(t) = self.control.take() {
            let _ = t.join();
        }
        self.engine.stop();
        if let Some((svc, writer)) = self.speed.take() {
            svc.stop();
            writer.shutdown();
        }
        self.engine.stats()
    }
}

fn control_thread(
    engine: Arc<Engine>,
    client: TrackerClient,
    options: SessionOptions,
    mut commands: mpsc::UnboundedReceiver<ControlCommand>,
    metrics: Option<(std::net::TcpListener, Registry)>,
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
                                (
                                    [(
                                        axum::http::header::CONTENT_TYPE,
                                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                    )],
                                    crate::metrics::render(&r),
                                )
                            }
                        }),
                    );
                    let mut stop = stop_rx.clone();
                    tokio::spawn(async move {
                        let served = axum::serve(l, app)
                            .with_graceful_shutdown(async move {
                                let _ = stop.changed().await;
                            })
                            .await;
                        if let Err(e) = served {
                            tracing::error!("metrics endpoint: {e}");
                        }
                    });
                }
                Err(e) => tracing::error!("metrics endpoint: {e}"),
            }
        }
        let mut tasks = tokio::task::JoinSet::new();
        while let Some(cmd) = commands.recv().await {
            match cmd {
                ControlCommand::Add(t) => {
                    if options.announce && !t.meta.trackers.is_empty() {
                        tasks.spawn(announce_loop(
                            t,
                            engine.clone(),
                            client.clone(),
                            options.clone(),
                            stop_rx.clone(),
                        ));
                    }
                }
                ControlCommand::Shutdown(done) => {
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

async fn announce_loop(
    t: Arc<Torrent>,
    engine: Arc<Engine>,
    client: Arc<TrackerClient>,
    options: SessionOptions,
    mut stop: watch::Receiver<bool>,
) {
    let port = engine.local_addr().port();
    let mut announcer = Announcer::new(
        t.id,
        engine.settings().peer_id,
        port,
        &t.meta.trackers,
        options.announcer.clone(),
    );
    let stats = |t: &Torrent| TransferStats {
        uploaded: t.uploaded(),
        downloaded: t.downloaded.load(std::sync::atomic::Ordering::Relaxed),
        left: t.left(),
    };
    loop {
        let due = tokio::time::Instant::from_std(announcer.next_due());
        tokio::select! {
            _ = tokio::time::sleep_until(due) => {}
            _ = stop.changed() => break,
        }
        match announcer.announce_now(client.as_ref(), stats(&t)).await {
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
                if t.left() > 0 {
                    for addr in response
                        .peers
                        .iter()
                        .take(options.max_connects_per_announce)
                    {
                        if let Err(e) = engine.connect(*addr, t.id) {
                            tracing::debug!("connect to {addr}: {e}");
                        }
                    }
                }
            }
            AnnounceOutcome::Failed { error } => {
                tracing::warn!(torrent = %t.meta.info.name, "announce failed: {error}");
            }
            AnnounceOutcome::NoTrackers | AnnounceOutcome::Stopped => return,
        }
    }
    if let Err(e) = announcer.stop(client.as_ref(), stats(&t)).await {
        tracing::warn!(torrent = %t.meta.info.name, "stopped announce: {e}");
    }
}

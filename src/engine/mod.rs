//! The seeding engine: one io_uring worker thread per core, each owning its peers for their
//! whole life, over torrents shared read-mostly through `Arc`s.
//!
//! ```text
//!  Engine (handle) ──commands (bounded crossbeam + eventfd wake)──► worker 0 … worker N
//!                                                                   io_uring loop each,
//!                                                                   SO_REUSEPORT listener each
//! ```
//!
//! A worker never waits for another: it shares only atomics (piece tables, counters, token
//! buckets) and reads commands from its own channel. Statistics are per-worker atomics that
//! only their worker writes.

pub mod coalesce;
mod conn;
mod core;
pub mod encryption;
pub(crate) mod fetch;
pub mod ip_limit;
pub mod mapped;
pub mod peer;
pub mod ratelimit;
pub mod reqq;
mod settings;
mod stats;
pub mod swarm;
pub mod torrent;
pub mod upload;
mod worker;

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use crossbeam_channel::{Sender, TrySendError};
use nix::sys::eventfd::EventFd;

pub use settings::{DownloadWrites, Settings, UploadPath};
pub use stats::{HashReject, Reason, StatsSnapshot, WorkerStats};
pub use torrent::Torrent;

use ratelimit::TokenBucket;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("creating the io_uring of worker {worker}: {source}")]
    Ring {
        worker: usize,
        source: std::io::Error,
    },
    #[error("starting worker {0}: {1}")]
    Spawn(usize, std::io::Error),
    #[error("worker {0}'s command queue is full")]
    Busy(usize),
    #[error("worker {0} has stopped")]
    Stopped(usize),
}

/// Commands from the engine handle to a worker.
#[derive(Debug)]
pub(crate) enum Command {
    AddTorrent(Arc<Torrent>),
    RemoveTorrent([u8; 20]),
    Connect {
        addr: SocketAddr,
        torrent: [u8; 20],
    },
    /// List the peers of one torrent.
    Peers {
        torrent: [u8; 20],
        reply: Sender<Vec<PeerInfo>>,
    },
    /// Count peers by state (for a metrics scrape).
    PeerStates(Sender<PeerStates>),
    Shutdown,
}

/// Peers by state over one or more workers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PeerStates {
    /// Connecting or handshaking.
    pub connecting: u64,
    /// Active, we choke them, they are interested (waiting for a slot).
    pub interested_choked: u64,
    /// Active and unchoked by us: the upload slots in use.
    pub unchoked: u64,
    /// Active, choked and not interested.
    pub idle: u64,
}

impl PeerStates {
    fn add(&mut self, o: &PeerStates) {
        self.connecting += o.connecting;
        self.interested_choked += o.interested_choked;
        self.unchoked += o.unchoked;
        self.idle += o.idle;
    }
}

/// One connected peer, as the control API lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PeerInfo {
    pub addr: SocketAddr,
    /// The client name from its extension handshake (`v`), if it sent one.
    pub client: Option<String>,
    /// Piece payload bytes sent to it.
    pub uploaded: u64,
    pub interested: bool,
    /// We are choking it.
    pub choked: bool,
    /// Its requests waiting to be served.
    pub queued_requests: usize,
    pub connected_s: u64,
}

struct WorkerHandle {
    commands: Sender<Command>,
    /// Which torrents it serves: `AddTorrent` and `RemoveTorrent` only. Unbounded, so such a
    /// command is never refused or dropped by a queue full of dials: a torrent removed or
    /// paused stops being served on every worker. It holds at most one command per add, pause,
    /// resume or remove the operator asked for (each waits for a database commit first), and the
    /// worker drains it before its other commands.
    torrents: Sender<Command>,
    wake: Arc<EventFd>,
    /// Taken by the first `stop`; a lock only the stopping thread ever takes.
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
    stats: Arc<WorkerStats>,
}

/// A running engine.
pub struct Engine {
    workers: Vec<WorkerHandle>,
    local_addr: SocketAddr,
    global_limit: Arc<TokenBucket>,
    download_limit: Arc<TokenBucket>,
    next_connect: std::sync::atomic::AtomicUsize,
    settings: Arc<Settings>,
}

impl Engine {
    /// Binds the listeners and starts the workers.
    pub fn start(settings: Settings) -> Result<Engine, EngineError> {
        Engine::start_with_speed(settings, None)
    }

    /// [`Engine::start`], earning BTT through `speed` (`[speed] enabled`): the workers offer
    /// `rs_speed`, hand bids and vouchers to its verifier and auction its paid slots.
    pub fn start_with_speed(
        settings: Settings,
        speed: Option<Arc<crate::speed::service::SpeedService>>,
    ) -> Result<Engine, EngineError> {
        let settings = Arc::new(settings);
        let count = settings.worker_count();
        let first = worker::listener(settings.listen).map_err(|source| EngineError::Listen {
            addr: settings.listen,
            source,
        })?;
        let local_addr = first
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .unwrap_or(settings.listen);
        let global_limit = Arc::new(TokenBucket::new(settings.upload_rate_limit));
        let download_limit = Arc::new(TokenBucket::new(settings.download_rate_limit));
        let handshaking = Arc::new(ip_limit::IpCounts::default());
        let mut listeners = vec![first];
        for _ in 1..count {
            listeners.push(
                worker::listener(local_addr).map_err(|source| EngineError::Listen {
                    addr: local_addr,
                    source,
                })?,
            );
        }
        let mut workers = Vec::with_capacity(count);
        for (i, listener) in listeners.into_iter().enumerate() {
            let (tx, rx) = crossbeam_channel::bounded(4096);
            let (torrents_tx, torrents_rx) = crossbeam_channel::unbounded();
            let wake = Arc::new(
                EventFd::from_flags(nix::sys::eventfd::EfdFlags::EFD_CLOEXEC)
                    .map_err(|e| EngineError::Spawn(i, e.into()))?,
            );
            let stats = Arc::new(WorkerStats::default());
            let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
            let ctx = worker::WorkerContext {
                id: i,
                settings: settings.clone(),
                speed: speed.clone(),
                listener,
                commands: rx,
                torrents: torrents_rx,
                wake: wake.clone(),
                stats: stats.clone(),
                global_limit: global_limit.clone(),
                download_limit: download_limit.clone(),
                handshaking: handshaking.clone(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("ringseed-w{i}"))
                .spawn(move || worker::run(ctx, ready_tx))
                .map_err(|e| EngineError::Spawn(i, e))?;
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(source)) => return Err(EngineError::Ring { worker: i, source }),
                Err(_) => return Err(EngineError::Stopped(i)),
            }
            workers.push(WorkerHandle {
                commands: tx,
                torrents: torrents_tx,
                wake,
                thread: std::sync::Mutex::new(Some(thread)),
                stats,
            });
        }
        Ok(Engine {
            workers,
            local_addr,
            global_limit,
            download_limit,
            next_connect: Default::default(),
            settings,
        })
    }

    /// The address the workers listen on (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn send(&self, worker: usize, cmd: Command) -> Result<(), EngineError> {
        let w = &self.workers[worker];
        match w.commands.try_send(cmd) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(EngineError::Busy(worker)),
            Err(TrySendError::Disconnected(_)) => return Err(EngineError::Stopped(worker)),
        }
        // Wake the worker's ring (it keeps a read posted on this eventfd).
        let _ = nix::unistd::write(w.wake.as_fd(), &1u64.to_ne_bytes());
        Ok(())
    }

    /// Hands a torrent command to every worker through its unbounded torrents queue: it can
    /// only fail for a worker that has stopped (the engine is shutting down).
    fn send_torrents(&self, cmd: impl Fn() -> Command) -> Result<(), EngineError> {
        let mut first_error = None;
        for (i, w) in self.workers.iter().enumerate() {
            if w.torrents.send(cmd()).is_err() {
                first_error.get_or_insert(EngineError::Stopped(i));
                continue;
            }
            let _ = nix::unistd::write(w.wake.as_fd(), &1u64.to_ne_bytes());
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Starts serving a torrent on every worker. Never refused for a full command queue.
    pub fn add_torrent(&self, t: Arc<Torrent>) -> Result<(), EngineError> {
        self.send_torrents(|| Command::AddTorrent(t.clone()))
    }

    /// Stops serving a torrent on every worker; its peers are disconnected. Never refused or
    /// lost for a full command queue.
    pub fn remove_torrent(&self, id: [u8; 20]) -> Result<(), EngineError> {
        self.send_torrents(|| Command::RemoveTorrent(id))
    }

    /// Opens an outgoing connection to a peer (workers take turns).
    pub fn connect(&self, addr: SocketAddr, torrent: [u8; 20]) -> Result<(), EngineError> {
        let i = self.next_connect.fetch_add(1, Ordering::Relaxed) % self.workers.len();
        self.send(i, Command::Connect { addr, torrent })
    }

    /// The peers of one torrent over every worker; a worker that does not answer within
    /// `timeout` (busy or stopped) is left out.
    pub fn peers(&self, torrent: [u8; 20], timeout: std::time::Duration) -> Vec<PeerInfo> {
        let (tx, rx) = crossbeam_channel::bounded(self.workers.len());
        let mut asked = 0;
        for i in 0..self.workers.len() {
            let reply = tx.clone();
            if self.send(i, Command::Peers { torrent, reply }).is_ok() {
                asked += 1;
            }
        }
        let deadline = std::time::Instant::now() + timeout;
        let mut out = Vec::new();
        for _ in 0..asked {
            match rx.recv_deadline(deadline) {
                Ok(list) => out.extend(list),
                Err(_) => break,
            }
        }
        out.sort_by_key(|p| p.addr);
        out
    }

    /// Peers by state over every worker; a worker that does not answer within `timeout` is
    /// left out (the answer says how many did).
    pub fn peer_states(&self, timeout: std::time::Duration) -> (PeerStates, usize) {
        let (tx, rx) = crossbeam_channel::bounded(self.workers.len());
        let asked = (0..self.workers.len())
            .filter(|&i| self.send(i, Command::PeerStates(tx.clone())).is_ok())
            .count();
        let deadline = std::time::Instant::now() + timeout;
        let mut total = PeerStates::default();
        let mut answered = 0;
        for _ in 0..asked {
            match rx.recv_deadline(deadline) {
                Ok(s) => {
                    total.add(&s);
                    answered += 1;
                }
                Err(_) => break,
            }
        }
        (total, answered)
    }

    /// Changes the global upload limit (bytes/s, 0 = unlimited).
    pub fn set_upload_limit(&self, bytes_per_sec: u64) {
        self.global_limit.set_rate(bytes_per_sec);
    }

    /// Changes the global download limit (bytes/s, 0 = unlimited).
    pub fn set_download_limit(&self, bytes_per_sec: u64) {
        self.download_limit.set_rate(bytes_per_sec);
    }

    /// Counters of every worker.
    pub fn stats(&self) -> Vec<StatsSnapshot> {
        self.workers.iter().map(|w| w.stats.snapshot()).collect()
    }

    /// Closes every peer and stops the workers.
    pub fn shutdown(self) -> Vec<StatsSnapshot> {
        self.stop();
        self.stats()
    }

    /// Closes every peer and stops the workers; later calls do nothing.
    pub fn stop(&self) {
        for i in 0..self.workers.len() {
            // A full queue still gets the shutdown: wait for room rather than leak a thread.
            let w = &self.workers[i];
            if w.commands.send(Command::Shutdown).is_ok() {
                let _ = nix::unistd::write(w.wake.as_fd(), &1u64.to_ne_bytes());
            }
        }
        for w in &self.workers {
            let thread = w.thread.lock().ok().and_then(|mut t| t.take());
            if let Some(t) = thread {
                let _ = t.join();
            }
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A random peer id: `-RG0100-` (Azureus style, client RG version 0.1.0.0; `RS` is taken by
/// Rufus) and 12 random alphanumerics.
pub fn new_peer_id() -> [u8; 20] {
    let mut id = *b"-RG0100-000000000000";
    let mut rnd = [0u8; 12];
    let _ = getrandom::fill(&mut rnd);
    const ALNUM: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    for (dst, r) in id[8..].iter_mut().zip(rnd) {
        *dst = ALNUM[usize::from(r) % ALNUM.len()];
    }
    id
}

/// A torrent's shared state behind a mutex; a poisoned lock (a panic elsewhere mid-update) still
/// holds usable data here, so it is taken as it is.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A peer that completed its handshake for `id` with the engine at `addr`.
    fn handshake(addr: SocketAddr, id: [u8; 20]) -> std::io::Result<std::net::TcpStream> {
        let mut s = std::net::TcpStream::connect(addr)?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
        let mut hs = b"\x13BitTorrent protocol".to_vec();
        hs.extend_from_slice(&[0; 8]);
        hs.extend_from_slice(&id);
        hs.extend_from_slice(b"-TS0001-000000000001");
        s.write_all(&hs)?;
        s.read_exact(&mut [0u8; 68])?;
        Ok(s)
    }

    /// A worker's command queue full of dials neither refuses nor loses a torrent's removal:
    /// the torrent stops being served and its peers are closed.
    #[test]
    fn a_removal_reaches_a_worker_whose_queue_is_full() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("a.bin"), vec![7u8; 100_000]).unwrap();
        let (_, meta) = crate::create::create(
            &data,
            &crate::create::CreateOptions::default(),
            &crate::verify::Progress::default(),
        )
        .unwrap();
        let engine = Engine::start(Settings {
            workers: 1,
            pin_workers: false,
            listen: "127.0.0.1:0".parse().unwrap(),
            ..Settings::default()
        })
        .unwrap();
        let (t, _) = Torrent::open(meta, dir.path(), None).unwrap();
        let id = t.id;
        engine.add_torrent(Arc::new(t)).unwrap();
        let mut peer = handshake(engine.local_addr(), id).unwrap();
        // Dials to closed ports until the queue says it is full (the worker drains it meanwhile,
        // but each dial costs it a socket, so the sender wins quickly).
        let mut full = false;
        for port in (1u16..=u16::MAX).cycle().take(1 << 22) {
            let addr = SocketAddr::from(([127, 0, 0, 9], port));
            if let Err(EngineError::Busy(_)) = engine.connect(addr, id) {
                full = true;
                break;
            }
        }
        assert!(full, "the command queue never filled");
        engine.remove_torrent(id).unwrap();
        // The peer is closed, and a new one is refused.
        let mut rest = Vec::new();
        let _ = peer.read_to_end(&mut rest);
        assert!(
            handshake(engine.local_addr(), id).is_err(),
            "still served after its removal"
        );
        engine.shutdown();
    }
}

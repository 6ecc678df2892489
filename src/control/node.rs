//! `ringseed run` as one object: the session (engine, control thread, database writer), the
//! control service over the resume state, the control API and the service's metrics.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use super::api::{self, Access};
use super::{ControlError, Counters, Service, ServiceOptions};
use crate::config::{Config, ConfigError, IpNet};
use crate::engine::{Settings, StatsSnapshot};
use crate::metrics::{Labels, counter, gauge};
use crate::session::{Session, SessionOptions};

/// What can stop a node from starting.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("state directory {path}: {source}")]
    StateDir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Session(#[from] crate::session::SessionError),
    #[error(transparent)]
    Control(#[from] ControlError),
}

/// The service's series in `/metrics`: resumes, checks by reason, torrents by state, errors by
/// reason.
#[derive(Debug)]
pub struct ServiceCollector {
    counters: Arc<Counters>,
    service: Arc<OnceLock<Service>>,
}

impl Collector for ServiceCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let c = &self.counters;
        let r = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let label = |k: &str, v: &str| -> Labels { vec![(k.into(), v.into())] };
        counter(
            &mut enc,
            "ringseed_torrents_resumed",
            "Torrents started from their saved bitfield without hashing.",
            &[(vec![], r(&c.resumed))],
        )?;
        counter(
            &mut enc,
            "ringseed_torrent_checks",
            "Torrents hashed, by reason (new, changed on disk, requested).",
            &[
                (label("reason", "new"), r(&c.checks_new)),
                (label("reason", "changed"), r(&c.checks_changed)),
                (label("reason", "requested"), r(&c.checks_requested)),
            ],
        )?;
        counter(
            &mut enc,
            "ringseed_limits_reached",
            "Torrents stopped or removed by a ratio or seed-time limit.",
            &[(vec![], r(&c.limits_reached))],
        )?;
        counter(
            &mut enc,
            "ringseed_errors",
            "Errors of the control service, by reason.",
            &[
                (label("reason", "check_failed"), r(&c.check_failures)),
                (label("reason", "db_write"), r(&c.db_errors)),
                (label("reason", "save_dropped"), r(&c.saves_dropped)),
                (label("reason", "watch_add"), r(&c.watch_errors)),
                (label("reason", "api_unauthorized"), r(&c.api_unauthorized)),
                (label("reason", "api_bad_request"), r(&c.api_bad_requests)),
            ],
        )?;
        if let Some(s) = self.service.get() {
            let by_state: Vec<(Labels, i64)> = s
                .count_by_state()
                .into_iter()
                .map(|(k, v)| (label("state", k), v))
                .collect();
            gauge(
                &mut enc,
                "ringseed_torrents_by_state",
                "Torrents by state (checking, seeding, paused, error).",
                &by_state,
            )?;
        }
        Ok(())
    }
}

/// A running node.
pub struct Node {
    session: Session,
    service: Service,
    api_addr: Option<SocketAddr>,
}

/// The (.torrent, data directory) pairs `[torrents]` names: the list, then every .torrent in
/// `dir`. A missing directory is an error; the files are read later, one by one.
pub fn config_torrents(config: &Config) -> Result<Vec<(PathBuf, PathBuf)>, ConfigError> {
    let t = &config.torrents;
    let mut out: Vec<(PathBuf, PathBuf)> = t
        .list
        .iter()
        .map(|e| (PathBuf::from(&e.torrent), PathBuf::from(&e.data)))
        .collect();
    if !t.dir.is_empty() {
        let mut found: Vec<PathBuf> = std::fs::read_dir(&t.dir)
            .map_err(|source| ConfigError::Read {
                path: format!("torrents.dir {}", t.dir),
                source,
            })?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "torrent"))
            .collect();
        found.sort();
        out.extend(found.into_iter().map(|p| (p, PathBuf::from(&t.data_dir))));
    }
    Ok(out)
}

impl Node {
    /// Starts everything `config` describes, with `settings` and `options` (the config's, with
    /// the command line's overrides applied).
    pub fn start(
        config: &Config,
        settings: Settings,
        mut options: SessionOptions,
    ) -> Result<Node, NodeError> {
        let access = Access {
            token: config.control.read_token()?,
            no_token_from: config
                .control
                .no_token_from
                .iter()
                .filter_map(|n| IpNet::parse(n))
                .collect(),
        };
        let listener = match config.control.listen.as_str() {
            "" => None,
            addr => {
                let addr: SocketAddr = addr.parse().map_err(|_| ConfigError::OutOfRange {
                    key: "control.listen",
                    value: addr.to_string(),
                    allowed: "an IP address and port",
                })?;
                Some(api::bind(addr)?)
            }
        };
        let api_addr = listener.as_ref().and_then(|l| l.local_addr().ok());
        let torrents = config_torrents(config)?;
        // Last of the checks, so a node that cannot start leaves nothing behind.
        std::fs::create_dir_all(&config.state.dir).map_err(|source| NodeError::StateDir {
            path: config.state.dir.clone(),
            source,
        })?;
        let counters = Arc::new(Counters::default());
        let cell = Arc::new(OnceLock::new());
        options.db_path = Some(config.state.db_path());
        options.collectors.push(Arc::new(ServiceCollector {
            counters: counters.clone(),
            service: cell.clone(),
        }));
        let session = Session::start(settings, options)?;
        let service = Service::start(
            &session,
            ServiceOptions::from_config(config),
            &torrents,
            counters,
        )?;
        let _ = cell.set(service.clone());
        if let Some(l) = listener {
            let app = api::router(service.clone(), access);
            session.handle().spawn(Box::pin(api::serve(l, app)))?;
        }
        Ok(Node {
            session,
            service,
            api_addr,
        })
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    pub fn service(&self) -> &Service {
        &self.service
    }

    /// Where the control API listens, if it does.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api_addr
    }

    /// SIGHUP: applies the new limits and adds the torrents that are new in `[torrents]`;
    /// returns how many were added.
    pub fn reload(&self, new: &Config) -> Result<usize, ConfigError> {
        self.service.set_options(ServiceOptions::from_config(new));
        let list = config_torrents(new)?;
        Ok(self.service.add_config_torrents(&list))
    }

    /// Stops the workers, saves the final totals, then announces `stopped` and stops the rest.
    pub fn shutdown(self) -> Vec<StatsSnapshot> {
        self.session.engine().stop();
        if let Err(e) = self.service.save_all() {
            tracing::error!("saving the resume state at shutdown: {e}");
        }
        self.session.shutdown()
    }
}

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
    /// The `/metrics` server's own closes (the session's).
    metrics_http: Arc<crate::httpd::HttpStats>,
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
            "ringseed_resume_syncs",
            "Rounds of fdatasync of a download's written files before its resume bitfield is saved.",
            &[(vec![], r(&c.resume_syncs))],
        )?;
        counter(
            &mut enc,
            "ringseed_resume_sync_microseconds",
            "Time spent in those fdatasync rounds.",
            &[(vec![], r(&c.resume_sync_us))],
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
                (label("reason", "state_record"), r(&c.state_skipped)),
                (label("reason", "db_write"), r(&c.db_errors)),
                (label("reason", "save_dropped"), r(&c.saves_dropped)),
                (label("reason", "data_sync"), r(&c.sync_errors)),
                (label("reason", "watch_add"), r(&c.watch_errors)),
                (label("reason", "api_unauthorized"), r(&c.api_unauthorized)),
                (label("reason", "api_bad_request"), r(&c.api_bad_requests)),
            ],
        )?;
        let closes = |listener: &str, h: &crate::httpd::HttpStats| -> Vec<(Labels, u64)> {
            h.closes()
                .into_iter()
                .map(|(reason, n)| {
                    (
                        vec![
                            ("listener".into(), listener.into()),
                            ("reason".into(), reason.into()),
                        ],
                        n,
                    )
                })
                .collect()
        };
        let mut http = closes("api", &c.api_http);
        http.extend(closes("metrics", &self.metrics_http));
        counter(
            &mut enc,
            "ringseed_http_connections_closed",
            "Connections to the control API and /metrics closed or refused for the server's \
             bounds (idle, evicted for a new one, refused when all are busy, bad or slow \
             headers, request timeout).",
            &http,
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
                "Torrents by state (checking, seeding, paused, error, downloading, stalled, \
                 metadata, queued, moving).",
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

/// What a SIGHUP does with a re-read config file: the one place that decides which keys change
/// live and which wait for a restart.
///
/// Live (through [`Node::reload`]): the rate limits `engine.upload_rate_limit_kib` and
/// `engine.torrent_upload_rate_limit_kib`, all of `[torrents]` (limits, limit action, watch
/// directory and interval, data directory, skip_check, and new torrents of `list`/`dir`),
/// `[hashing]` (the hashing of later checks) and `state.save_interval_s`. A restart: the rest
/// of `[engine]` (workers and their sockets exist already), `[trackers]`, `[metrics]`,
/// `[control]` and `state.dir` (the open database). `[speed]` and `[create]` are not read
/// again and not warned about (`[create]` only concerns `ringseed create`).
#[derive(Debug, Clone, PartialEq)]
pub struct ReloadPlan {
    /// The config to apply: the new file's, keeping a `--skip-check` of the command line.
    pub config: Config,
    /// Changed keys that apply at once ("[torrents]" for any key of that section).
    pub live: Vec<&'static str>,
    /// Changed sections and keys that take effect only at the next start.
    pub restart: Vec<&'static str>,
}

/// The warning a SIGHUP logs when [`ReloadPlan::restart`] is not empty.
pub const RESTART_WARNING: &str = "SIGHUP: changes to [engine] (other than rate limits), \
     [trackers], [metrics], [control], [speed], [dht] or state.dir need a restart";

/// Decides what of `new` a running node (started with `running`) applies on SIGHUP.
pub fn reload_plan(running: &Config, mut new: Config) -> ReloadPlan {
    // `--skip-check` on the command line was folded into the running config; a reload must
    // not drop it.
    new.torrents.skip_check |= running.torrents.skip_check;
    let mut live = Vec::new();
    let mut restart = Vec::new();
    let (r, n) = (&running.engine, &new.engine);
    if n.upload_rate_limit_kib != r.upload_rate_limit_kib {
        live.push("engine.upload_rate_limit_kib");
    }
    if n.torrent_upload_rate_limit_kib != r.torrent_upload_rate_limit_kib {
        live.push("engine.torrent_upload_rate_limit_kib");
    }
    if new.torrents != running.torrents {
        live.push("[torrents]");
    }
    if new.hashing != running.hashing {
        live.push("[hashing]");
    }
    if new.state.save_interval_s != running.state.save_interval_s {
        live.push("state.save_interval_s");
    }
    let mut engine_rest = n.clone();
    engine_rest.upload_rate_limit_kib = r.upload_rate_limit_kib;
    engine_rest.torrent_upload_rate_limit_kib = r.torrent_upload_rate_limit_kib;
    if engine_rest != *r {
        restart.push("[engine]");
    }
    if new.trackers != running.trackers {
        restart.push("[trackers]");
    }
    if new.metrics != running.metrics {
        restart.push("[metrics]");
    }
    if new.control != running.control {
        restart.push("[control]");
    }
    if new.speed != running.speed {
        // The speed service (wallet, ledger, terms) starts with the node.
        restart.push("[speed]");
    }
    if new.state.dir != running.state.dir {
        restart.push("state.dir");
    }
    if new.dht != running.dht {
        restart.push("[dht]");
    }
    ReloadPlan {
        config: new,
        live,
        restart,
    }
}

/// The bounds of the API's and `/metrics`' HTTP servers (`[control]`).
/// `app/shutdown`: the node stops as on SIGTERM (`ringseed run` waits for it on its signal
/// thread; every other thread blocks it), a moment later so the answer goes out first.
fn stop_by_sigterm() {
    let spawned = std::thread::Builder::new()
        .name("ringseed-api-shutdown".into())
        .spawn(|| {
            std::thread::sleep(std::time::Duration::from_millis(200));
            let me = nix::unistd::Pid::this();
            if let Err(e) = nix::sys::signal::kill(me, nix::sys::signal::Signal::SIGTERM) {
                tracing::error!("app/shutdown: signalling this process: {e}");
            }
        });
    if let Err(e) = spawned {
        tracing::error!("app/shutdown: {e}");
    }
}

pub fn http_limits(c: &crate::config::Control) -> crate::httpd::HttpLimits {
    use std::time::Duration;
    crate::httpd::HttpLimits {
        max_connections: c.max_connections as usize,
        header_timeout: Duration::from_secs(u64::from(c.header_timeout_s)),
        idle_timeout: Duration::from_secs(u64::from(c.idle_timeout_s)),
        ..crate::httpd::HttpLimits::default()
    }
}

impl Node {
    /// Starts everything `config` describes, with `settings` and `options` (the config's, with
    /// the command line's overrides applied).
    pub fn start(
        config: &Config,
        settings: Settings,
        mut options: SessionOptions,
    ) -> Result<Node, NodeError> {
        // An explicit token or token file is read before anything is created; the default
        // one may have to be generated in the state directory, once it exists.
        let c = &config.control;
        let explicit = !c.token.is_empty() || !c.token_file.is_empty();
        let mut token = if explicit && !c.listen.is_empty() {
            Some(super::token::server_token(c, &config.state)?)
        } else {
            None
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
        let access = if c.listen.is_empty() {
            None
        } else {
            let token = match token.take() {
                Some(t) => t,
                None => super::token::server_token(c, &config.state)?,
            };
            let qbt = crate::control::qbt::QbtAccess {
                username: c.username.clone(),
                password: crate::control::qbt::auth::password(c, &config.state, &token)?,
                token: token.clone(),
                hosts: c.hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
                port: api_addr.map(|a| a.port()),
            };
            Some((
                qbt,
                Access {
                    token,
                    no_token_from: c
                        .no_token_from
                        .iter()
                        .filter_map(|n| IpNet::parse(n))
                        .collect(),
                    hosts: c.hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
                },
            ))
        };
        let counters = Arc::new(Counters::default());
        let cell = Arc::new(OnceLock::new());
        options.db_path = Some(config.state.db_path());
        options.metrics_http_limits = http_limits(c);
        options.collectors.push(Arc::new(ServiceCollector {
            counters: counters.clone(),
            service: cell.clone(),
            metrics_http: options.metrics_http.clone(),
        }));
        let session = Session::start(settings, options)?;
        let service = Service::start(
            &session,
            ServiceOptions::from_config(config),
            &torrents,
            counters,
        )?;
        let _ = cell.set(service.clone());
        if let (Some(l), Some((qbt, access))) = (listener, access) {
            // the qBittorrent Web API (/api/v2/) beside ringseed's own, with its own checks
            let speed = session.speed().map(|s| s.stats.clone());
            let qbt = crate::control::qbt::Qbt::new(service.clone(), qbt)
                .with_speed(speed)
                .with_shutdown(Arc::new(stop_by_sigterm));
            session
                .handle()
                .spawn(Box::pin(qbt.clone().sample_rates()))?;
            let app = api::router(service.clone(), access).merge(qbt.router());
            let limits = http_limits(&config.control);
            let stats = service.counters().api_http.clone();
            session
                .handle()
                .spawn(Box::pin(api::serve(l, app, limits, stats)))?;
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
    /// returns how many were added. `new` is [`ReloadPlan::config`]; what changes live is
    /// listed at [`ReloadPlan`].
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LimitAction, TorrentEntry};

    /// The plan for one change to the default config, and whether the service options the node
    /// applies (rates, `[torrents]`, hashing, save interval) differ from the running ones.
    fn plan(change: impl FnOnce(&mut Config)) -> (ReloadPlan, bool) {
        let running = Config::default();
        let mut new = running.clone();
        change(&mut new);
        let p = reload_plan(&running, new);
        // ServiceOptions has no PartialEq (HashOptions); its Debug shows every field.
        let applied = format!("{:?}", ServiceOptions::from_config(&p.config))
            != format!("{:?}", ServiceOptions::from_config(&running));
        (p, applied)
    }

    fn live(change: impl FnOnce(&mut Config), key: &str) {
        let (p, applied) = plan(change);
        assert_eq!(p.live, vec![key], "{key}");
        assert!(p.restart.is_empty(), "{key} must not need a restart");
        assert!(
            applied || key == "[torrents]",
            "{key} must reach the service"
        );
    }

    fn restart(change: impl FnOnce(&mut Config), section: &str) {
        let (p, applied) = plan(change);
        assert_eq!(p.restart, vec![section]);
        assert!(p.live.is_empty(), "{section} changes nothing live");
        assert!(!applied, "{section} must not reach the service");
    }

    #[test]
    fn nothing_changed_nothing_to_do() {
        let (p, applied) = plan(|_| {});
        assert!(p.live.is_empty() && p.restart.is_empty() && !applied);
        assert_eq!(p.config, Config::default());
    }

    #[test]
    fn rate_limits_apply_live() {
        live(
            |c| c.engine.upload_rate_limit_kib = 1000,
            "engine.upload_rate_limit_kib",
        );
        live(
            |c| c.engine.torrent_upload_rate_limit_kib = 100,
            "engine.torrent_upload_rate_limit_kib",
        );
    }

    #[test]
    fn torrents_section_applies_live() {
        live(|c| c.torrents.ratio_limit_percent = 200, "[torrents]");
        live(|c| c.torrents.seed_time_limit_min = 60, "[torrents]");
        live(
            |c| c.torrents.limit_action = LimitAction::Remove,
            "[torrents]",
        );
        live(|c| c.torrents.watch_interval_s = 7, "[torrents]");
        live(|c| c.torrents.data_dir = "/srv/data".into(), "[torrents]");
        live(|c| c.torrents.dir = "/srv/torrents".into(), "[torrents]");
        live(|c| c.torrents.skip_check = true, "[torrents]");
        // A new list entry is added by Node::reload (config_torrents), not through the options.
        let (p, _) = plan(|c| {
            c.torrents.list.push(TorrentEntry {
                torrent: "a.torrent".into(),
                data: "/srv/a".into(),
            })
        });
        assert_eq!((p.live, p.restart), (vec!["[torrents]"], vec![]));
    }

    #[test]
    fn hashing_and_save_interval_apply_live() {
        live(|c| c.hashing.threads = 3, "[hashing]");
        live(|c| c.state.save_interval_s = 5, "state.save_interval_s");
    }

    #[test]
    fn the_rest_of_engine_needs_a_restart() {
        restart(|c| c.engine.workers = 7, "[engine]");
        restart(|c| c.engine.listen = "0.0.0.0:1".into(), "[engine]");
        restart(|c| c.engine.upload_slots += 1, "[engine]");
        restart(|c| c.engine.max_reqq += 1, "[engine]");
        restart(|c| c.engine.pin_workers = !c.engine.pin_workers, "[engine]");
        // A rate limit changed with another engine key: the limit applies, the rest waits.
        let (p, _) = plan(|c| {
            c.engine.upload_rate_limit_kib = 1;
            c.engine.workers = 7;
        });
        assert_eq!(p.live, vec!["engine.upload_rate_limit_kib"]);
        assert_eq!(p.restart, vec!["[engine]"]);
    }

    #[test]
    fn trackers_metrics_control_and_state_dir_need_a_restart() {
        restart(|c| c.trackers.enabled = !c.trackers.enabled, "[trackers]");
        restart(|c| c.trackers.numwant += 1, "[trackers]");
        restart(|c| c.metrics.listen = "127.0.0.1:9".into(), "[metrics]");
        restart(|c| c.control.listen = "127.0.0.1:9".into(), "[control]");
        restart(|c| c.control.token = "t".into(), "[control]");
        restart(|c| c.state.dir = "/elsewhere".into(), "state.dir");
        restart(|c| c.dht.enabled = !c.dht.enabled, "[dht]");
        restart(|c| c.dht.bootstrap.clear(), "[dht]");
        let (p, _) = plan(|c| {
            c.trackers.enabled = !c.trackers.enabled;
            c.metrics.listen = "127.0.0.1:9".into();
            c.control.listen = "127.0.0.1:9".into();
            c.state.dir = "/elsewhere".into();
            c.engine.workers = 9;
        });
        assert_eq!(
            p.restart,
            vec![
                "[engine]",
                "[trackers]",
                "[metrics]",
                "[control]",
                "state.dir"
            ]
        );
    }

    #[test]
    fn speed_needs_a_restart_and_create_is_not_the_nodes() {
        let (p, applied) = plan(|c| c.speed.enabled = !c.speed.enabled);
        assert_eq!(p.restart, ["[speed]"]);
        assert!(p.live.is_empty() && !applied);
        // [create] only sets `ringseed create`'s defaults: nothing to apply or warn about.
        let (p, applied) = plan(|c| c.create.piece_kib = 64);
        assert!(p.live.is_empty() && p.restart.is_empty() && !applied);
    }

    #[test]
    fn a_command_line_skip_check_survives_a_reload() {
        let mut running = Config::default();
        running.torrents.skip_check = true;
        let p = reload_plan(&running, Config::default());
        assert!(p.config.torrents.skip_check);
        assert!(p.live.is_empty(), "nothing changed from the running config");
    }
}

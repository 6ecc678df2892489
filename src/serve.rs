//! What `ringseed seed` and `ringseed run` share around the engine: the command line's
//! overrides of the config, the signals that stop and reload a server, systemd's
//! notifications, and the figures of the periodic statistics line.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use nix::sys::signal::{SigSet, Signal};

use crate::config::Config;
use crate::engine::{Engine, Settings};
use crate::session::SessionOptions;

/// What could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("--metrics {value:?}")]
    Metrics {
        value: String,
        #[source]
        source: std::net::AddrParseError,
    },
    /// Blocking the signals in this thread.
    #[error(transparent)]
    Signals(#[from] nix::Error),
    /// Starting the signal thread.
    #[error(transparent)]
    Spawn(#[from] std::io::Error),
}

/// The command line's overrides of the config (`seed` and `run` share them).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// engine.listen
    pub listen: Option<SocketAddr>,
    /// engine.workers
    pub workers: Option<usize>,
    /// trackers.enabled = false
    pub no_trackers: bool,
    /// metrics.listen ("" = off)
    pub metrics: Option<String>,
}

/// Engine settings and session options from `config` with `overrides` applied.
pub fn setup(
    overrides: &Overrides,
    config: &Config,
) -> Result<(Settings, SessionOptions), ServeError> {
    let mut settings = config.engine_settings();
    if let Some(l) = overrides.listen {
        settings.listen = l;
    }
    if let Some(w) = overrides.workers {
        settings.workers = w;
    }
    let mut options = config.session_options();
    options.announce &= !overrides.no_trackers;
    if let Some(m) = &overrides.metrics {
        options.metrics_listen = if m.is_empty() {
            None
        } else {
            Some(m.parse().map_err(|source| ServeError::Metrics {
                value: m.clone(),
                source,
            })?)
        };
    }
    Ok((settings, options))
}

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread (and so in every thread started later) and
/// receives them on a thread of their own, which forwards them over a channel. Call it before
/// any other thread starts, so only the signal thread receives them.
pub fn signal_thread() -> Result<Receiver<Signal>, ServeError> {
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    set.thread_block()?;
    let (tx, rx) = crossbeam_channel::bounded(16);
    std::thread::Builder::new()
        .name("ringseed-signals".into())
        .spawn(move || {
            while let Ok(sig) = set.wait() {
                if tx.send(sig).is_err() {
                    break;
                }
            }
        })?;
    Ok(rx)
}

/// Tells systemd (Type=notify) we are ready, with a status line; a no-op outside systemd.
pub fn notify_ready(status: &str) {
    if let Err(e) = sd_notify::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(status),
    ]) {
        tracing::warn!("telling systemd we are ready: {e}");
    }
}

/// The figures of one statistics line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StatsTick {
    /// Since serving began.
    pub elapsed: Duration,
    pub peers: i64,
    /// Uploaded in total.
    pub bytes: u64,
    /// Upload rate since the last line, bytes per second.
    pub bytes_per_s: f64,
}

/// Serves until SIGINT or SIGTERM (returned), calling `on_hup` for each SIGHUP (between
/// systemd's RELOADING=1 and READY=1) and `on_stats` every `stats_every` seconds (0 = never);
/// then tells systemd that it is stopping. A closed signal channel counts as SIGTERM.
pub fn wait_for_stop(
    signals: &Receiver<Signal>,
    stats_every: u64,
    engine: &Engine,
    mut on_hup: impl FnMut(),
    mut on_stats: impl FnMut(&StatsTick),
) -> Signal {
    let mut started = Instant::now();
    let mut last_bytes = 0u64;
    let mut last = Instant::now();
    let timeout = Duration::from_secs(if stats_every == 0 { 3600 } else { stats_every });
    let signal = loop {
        match signals.recv_timeout(timeout) {
            Ok(Signal::SIGHUP) => {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
                on_hup();
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
                // The statistics line starts over after a reload, as it always has: its
                // elapsed time and first rate count from here.
                started = Instant::now();
                last_bytes = 0;
                last = Instant::now();
                continue;
            }
            Ok(sig) => break sig,
            Err(RecvTimeoutError::Disconnected) => break Signal::SIGTERM,
            Err(RecvTimeoutError::Timeout) => {}
        }
        if stats_every > 0 {
            let s = engine.stats();
            let bytes: u64 = s.iter().map(|w| w.bytes_up).sum();
            on_stats(&StatsTick {
                elapsed: started.elapsed(),
                peers: s.iter().map(|w| w.peers).sum(),
                bytes,
                bytes_per_s: bytes.saturating_sub(last_bytes) as f64 / last.elapsed().as_secs_f64(),
            });
            last_bytes = bytes;
            last = Instant::now();
        }
    };
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    signal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_win_over_the_config() {
        let config = Config::default();
        let o = Overrides {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 7))),
            workers: Some(3),
            no_trackers: true,
            metrics: Some(String::new()),
        };
        let (s, opts) = setup(&o, &config).unwrap();
        assert_eq!((s.listen.port(), s.workers), (7, 3));
        assert!(!opts.announce && opts.metrics_listen.is_none());
        let bad = Overrides {
            metrics: Some("nope".into()),
            ..Overrides::default()
        };
        let e = setup(&bad, &config).unwrap_err();
        assert_eq!(e.to_string(), "--metrics \"nope\"");
    }
}

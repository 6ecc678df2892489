//! A `ringseed run` process started by a test: the addresses it printed, killed on drop (a
//! failing test must not leave its node running).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub struct RunNode {
    pub child: Child,
    /// The peer listener ("seeding on …"), if the node printed one.
    pub peer: Option<SocketAddr>,
    /// `/metrics`, if enabled.
    pub metrics: Option<SocketAddr>,
    pub api: SocketAddr,
}

impl Drop for RunNode {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The first socket address among the words after `prefix` in `line`.
fn address_after(line: &str, prefix: &str) -> Option<SocketAddr> {
    line.strip_prefix(prefix)?
        .split_whitespace()
        .map(|w| w.trim_start_matches("http://").trim_end_matches("/metrics"))
        .find_map(|w| w.parse().ok())
}

impl RunNode {
    /// `ringseed --config CFG run --stats-every 0`, its stderr discarded.
    pub fn start(cfg: &Path) -> RunNode {
        let mut cmd = super::ringseed();
        cmd.arg("--config")
            .arg(cfg)
            .args(["run", "--stats-every", "0"])
            .stderr(Stdio::null());
        RunNode::spawn(cmd)
    }

    /// Spawns `cmd` (a `ringseed … run`, perhaps wrapped) with its stdout piped, and reads
    /// that until the node printed its control API's address.
    pub fn spawn(mut cmd: Command) -> RunNode {
        let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (mut peer, mut metrics, mut api) = (None, None, None);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            peer = peer.or(address_after(&line, "seeding "));
            metrics = metrics.or(address_after(&line, "metrics on "));
            api = address_after(&line, "control API on ");
            if api.is_some() {
                break;
            }
        }
        // The rest of stdout is not read; the shutdown lines are small enough for the pipe.
        let Some(api) = api else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the node exited before it printed its control API's address");
        };
        RunNode {
            child,
            peer,
            metrics,
            api,
        }
    }

    /// SIGTERM, and the node must exit 0.
    pub fn stop(mut self) {
        super::signal(&self.child, nix::sys::signal::Signal::SIGTERM);
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the node exited with {status}");
    }

    /// SIGKILL: no clean shutdown.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// One series of the node's /metrics; a series it does not have fails the test.
    pub fn metric(&self, series: &str) -> f64 {
        super::metric_at(self.metrics.expect("the node serves no /metrics"), series)
    }
}

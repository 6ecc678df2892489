//! The DHT (BEP 5) against libtorrent's, on loopback (tests/helpers/lt_dht.py; libtorrent's
//! loopback restrictions are turned off as TESTING-NOTES.md says):
//! - ringseed, given only a magnet's info-hash and a libtorrent node to bootstrap from, finds a
//!   libtorrent seeder through the DHT, fetches the metadata and the data; its routing table
//!   is saved at exit;
//! - libtorrent, given only the magnet and the same kind of node, finds ringseed's seed through
//!   the DHT (ringseed announced it) and downloads it;
//! - a private torrent never touches the DHT: a libtorrent node that sees a public torrent's
//!   announce never hears of the private one, seeded and downloaded by ringseed with its DHT
//!   on, and that seeder's DHT counters stay at zero;
//! - a flood of queries gets answers only within the rate of its source address and of the
//!   node, and another address is still answered.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{create_torrent, pattern, require_tool, ringseed, spawn_seeder_with};

fn lt_dht() -> Command {
    require_tool("/usr/bin/python3");
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/helpers/lt_dht.py"));
    cmd
}

/// A helper process killed on drop, its stdout lines arriving on a channel.
struct Helper {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Helper {
    fn start(mut cmd: Command) -> Helper {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start lt_dht.py");
        let out = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Helper { child, lines }
    }

    /// The first line that `want` accepts, within `within`; the lines before it are returned
    /// too (for the private test's check of everything the node heard).
    fn wait_for<T>(
        &self,
        within: Duration,
        what: &str,
        seen: &mut Vec<String>,
        want: impl Fn(&str) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let got = want(&l);
                    seen.push(l);
                    if let Some(v) = got {
                        return v;
                    }
                }
                Err(_) => panic!("lt_dht.py: no {what} within {within:?}; it printed {seen:?}"),
            }
        }
    }
}

/// A libtorrent DHT-only node (`lt_dht.py node`) and its UDP port; what it printed before
/// saying so goes to `heard`.
fn lt_dht_node(heard: &mut Vec<String>) -> (Helper, u16) {
    let mut cmd = lt_dht();
    cmd.arg("node");
    let node = Helper::start(cmd);
    let port = node.wait_for(Duration::from_secs(20), "dht line", heard, |l| {
        l.strip_prefix("dht ")?.parse::<u16>().ok()
    });
    (node, port)
}

/// A 4 MiB file (odd size) and its torrent made by ringseed (no trackers), with `extra`
/// options; returns (torrent, directory holding the file, the file).
fn payload(dir: &Path, name: &str, seed: u64, extra: &[&str]) -> (PathBuf, PathBuf, PathBuf) {
    let src = dir.join(format!("src-{name}"));
    std::fs::create_dir_all(&src).unwrap();
    let file = src.join(format!("{name}.bin"));
    std::fs::write(&file, pattern((4 << 20) + 12_345, seed)).unwrap();
    let torrent = dir.join(format!("{name}.torrent"));
    let mut args = vec!["--piece-kib", "256"];
    args.extend_from_slice(extra);
    create_torrent(&file, &torrent, &args);
    (torrent, src, file)
}

fn hex_of(torrent: &Path) -> String {
    let meta = ringseed::metainfo::Metainfo::load(torrent).unwrap();
    ringseed::metainfo::hex(&meta.info.hash.wire_id())
}

/// A config whose DHT bootstraps from `bootstrap` only and keeps its state in `state`.
fn config(dir: &Path, name: &str, bootstrap: &[String], state: &Path) -> PathBuf {
    let cfg = dir.join(format!("{name}.toml"));
    let nodes: Vec<String> = bootstrap.iter().map(|b| format!("{b:?}")).collect();
    std::fs::write(
        &cfg,
        format!(
            "[dht]\nbootstrap = [{}]\n[state]\ndir = {:?}\n[trackers]\nenabled = false\n",
            nodes.join(", "),
            state.display().to_string()
        ),
    )
    .unwrap();
    cfg
}

#[test]
fn a_magnet_is_found_through_a_libtorrent_dht_node_metadata_and_data() {
    let dir = tempfile::tempdir().unwrap();
    let (torrent, src, file) = payload(dir.path(), "pub", 11, &[]);
    let hex = hex_of(&torrent);
    let mut seed_cmd = lt_dht();
    seed_cmd.arg("seed").arg(&torrent).arg(&src);
    let lt = Helper::start(seed_cmd);
    let (boot, lt_peer) = lt.wait_for(Duration::from_secs(30), "ready line", &mut vec![], |l| {
        let mut w = l.strip_prefix("ready ")?.split(' ');
        Some((
            w.next()?.parse::<u16>().ok()?,
            w.next()?.parse::<u16>().ok()?,
        ))
    });
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let cfg = config(dir.path(), "leech", &[format!("127.0.0.1:{boot}")], &state);
    let out = dir.path().join("out");
    let started = Instant::now();
    // Only the info-hash: no trackers, no x.pe, no --peer.
    let result = ringseed()
        .arg("--config")
        .arg(&cfg)
        .args(["download", &format!("magnet:?xt=urn:btih:{hex}"), "--json"])
        .args([
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--stall-timeout",
            "40",
        ])
        .args(["--metrics", "127.0.0.1:0"])
        .arg("--data")
        .arg(&out)
        .output()
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(
        result.status.success(),
        "download failed: {stdout}\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
    assert_eq!(
        std::fs::read(out.join("pub.bin")).unwrap(),
        std::fs::read(&file).unwrap(),
        "not byte-identical"
    );
    eprintln!("magnet -> data through the DHT in {secs:.2} s (libtorrent peer port {lt_peer})");
    // The routing table was saved at exit, the bootstrap node in it.
    let saved = std::fs::read_to_string(state.join("dht-nodes")).expect("dht-nodes saved");
    assert!(
        saved.lines().any(|l| l.starts_with("127.0.0.1:")),
        "saved routing table: {saved:?}"
    );
}

/// `lt_dht.py leech` of the magnet of `hex` into `out` (created), bootstrapped from
/// 127.0.0.1:`boot`, with its optional `[TIMEOUT_S] [retry|once]`.
fn lt_leech(out: &Path, hex: &str, boot: u16, rest: &[&str]) -> Command {
    std::fs::create_dir_all(out).unwrap();
    let mut cmd = lt_dht();
    cmd.arg("leech")
        .arg(format!("magnet:?xt=urn:btih:{hex}"))
        .arg(out)
        .arg(boot.to_string())
        .args(rest);
    cmd
}

/// libtorrent (`lt_dht.py leech`) given only the magnet of `hex` and the DHT node at
/// 127.0.0.1:`boot`: it must find `seed` there, download `file`'s bytes exactly and say so.
/// Returns its report.
fn lt_leech_from(
    dir: &Path,
    boot: u16,
    hex: &str,
    file: &Path,
    seed: std::net::SocketAddr,
) -> String {
    let out = dir.join("lt-out");
    let out_text = common::run_ok(&mut lt_leech(&out, hex, boot, &["60"]));
    let report = out_text.lines().last().unwrap_or_default().to_string();
    let v: serde_json::Value =
        serde_json::from_str(report.trim()).unwrap_or_else(|e| panic!("{e}: {out_text}"));
    assert_eq!(v["done"], true, "{report}");
    assert!(
        v["peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == &serde_json::json!(seed.to_string())),
        "libtorrent never connected to ringseed: {report}"
    );
    let name = file.file_name().unwrap();
    assert_eq!(
        std::fs::read(out.join(name)).unwrap(),
        std::fs::read(file).unwrap(),
        "not byte-identical"
    );
    report
}

#[test]
fn libtorrent_finds_a_ringseed_seed_through_the_dht() {
    let dir = tempfile::tempdir().unwrap();
    let (torrent, src, file) = payload(dir.path(), "seeded", 12, &[]);
    let hex = hex_of(&torrent);
    let mut heard = Vec::new();
    let (node, boot) = lt_dht_node(&mut heard);
    let state = dir.path().join("state");
    let cfg = config(dir.path(), "seed", &[format!("127.0.0.1:{boot}")], &state);
    let global = ["--config".as_ref(), cfg.as_os_str()];
    let started = Instant::now();
    let mut seeder = spawn_seeder_with(&torrent, &src, "127.0.0.1", &[], &global);
    let metrics = seeder.metrics_addr();
    // ringseed announces itself (its TCP port) to the libtorrent node.
    let port = node.wait_for(Duration::from_secs(20), "announce", &mut heard, |l| {
        let mut w = l.strip_prefix("announce ")?.split(' ');
        (w.next()? == hex).then_some(())?;
        w.nth(1)?.parse::<u16>().ok()
    });
    eprintln!(
        "ringseed's announce reached the libtorrent node {:.2} s after the seeder was started",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(port, seeder.addr.port(), "announced another port");
    let report = lt_leech_from(dir.path(), boot, &hex, &file, seeder.addr);
    eprintln!("libtorrent: magnet -> data through the DHT: {report}");
    assert_eq!(common::metric_at(metrics, "ringseed_dht_enabled"), 1.0);
    assert!(common::metric_at(metrics, "ringseed_dht_announces_total{outcome=\"stored\"}") >= 1.0);
    assert!(common::metric_at(metrics, "ringseed_dht_port") > 0.0);
    let _ = seeder.child.kill();
    let _ = seeder.child.wait();
}

#[test]
fn a_private_torrent_never_touches_the_dht() {
    let dir = tempfile::tempdir().unwrap();
    let (private, priv_src, priv_file) = payload(dir.path(), "private", 13, &["--private"]);
    let (public, pub_src, _) = payload(dir.path(), "public", 14, &[]);
    let (priv_hex, pub_hex) = (hex_of(&private), hex_of(&public));
    assert!(
        ringseed::metainfo::Metainfo::load(&private)
            .unwrap()
            .info
            .private
    );
    let mut heard = Vec::new();
    let (node, boot) = lt_dht_node(&mut heard);
    let bootstrap = [format!("127.0.0.1:{boot}")];
    let state = dir.path().join("state");
    // A seed of the private torrent and a download of it, both with the DHT on.
    let cfg = config(dir.path(), "private", &bootstrap, &state);
    let global = ["--config".as_ref(), cfg.as_os_str()];
    let mut priv_seed = spawn_seeder_with(&private, &priv_src, "127.0.0.1", &[], &global);
    let priv_metrics = priv_seed.metrics_addr();
    let out = dir.path().join("out");
    let fetched = ringseed()
        .arg("--config")
        .arg(&cfg)
        .arg("download")
        .arg(&private)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--stall-timeout",
            "30",
        ])
        .args(["--metrics", "127.0.0.1:0"])
        .arg("--peer")
        .arg(priv_seed.addr.to_string())
        .arg("--data")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        fetched.status.success(),
        "{}",
        String::from_utf8_lossy(&fetched.stderr)
    );
    assert_eq!(
        std::fs::read(out.join("private.bin")).unwrap(),
        std::fs::read(&priv_file).unwrap()
    );
    // The control: a public torrent's announce reaches the same node, so the node would have
    // heard the private one's.
    let mut pub_seed = spawn_seeder_with(&public, &pub_src, "127.0.0.1", &[], &global);
    let pub_metrics = pub_seed.metrics_addr();
    node.wait_for(
        Duration::from_secs(20),
        "the public announce",
        &mut heard,
        |l| {
            l.strip_prefix("announce ")?
                .starts_with(&pub_hex)
                .then_some(())
        },
    );
    // Whatever else arrives meanwhile is looked at too.
    while let Ok(l) = node.lines.recv_timeout(Duration::from_millis(500)) {
        heard.push(l);
    }
    assert!(
        !heard.iter().any(|l| l.contains(&priv_hex)),
        "the DHT node heard of the private torrent: {heard:?}"
    );
    for series in [
        "ringseed_dht_lookups_started_total",
        "ringseed_dht_announces_total{outcome=\"stored\"}",
        "ringseed_dht_announces_total{outcome=\"failed\"}",
    ] {
        assert_eq!(common::metric_at(priv_metrics, series), 0.0, "{series}");
    }
    assert_eq!(common::metric_at(priv_metrics, "ringseed_dht_enabled"), 1.0);
    assert!(
        common::metric_at(
            pub_metrics,
            "ringseed_dht_announces_total{outcome=\"stored\"}"
        ) >= 1.0
    );
    for s in [&mut priv_seed, &mut pub_seed] {
        let _ = s.child.kill();
        let _ = s.child.wait();
    }
}

/// A `ringseed run` node whose DHT bootstraps from `bootstrap` only, state in `state`.
fn run_node(dir: &Path, name: &str, bootstrap: &[String], state: &Path) -> common::node::RunNode {
    let cfg = dir.join(format!("{name}.toml"));
    let nodes: Vec<String> = bootstrap.iter().map(|b| format!("{b:?}")).collect();
    std::fs::write(
        &cfg,
        format!(
            "[engine]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n\
             [trackers]\nenabled = false\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n\
             [control]\nlisten = \"127.0.0.1:0\"\ntoken = \"t\"\nno_token_from = [\"127.0.0.1/32\"]\n\
             [state]\ndir = {:?}\n\
             [dht]\nbootstrap = [{}]\n",
            state.display().to_string(),
            nodes.join(", "),
        ),
    )
    .unwrap();
    common::node::RunNode::start(&cfg)
}

#[test]
fn the_routing_table_survives_a_restart_and_the_api_shows_the_dht() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, boot) = lt_dht_node(&mut vec![]);
    let state = dir.path().join("state");
    let nodes_in = |n: &common::node::RunNode| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let nodes = n.metric("ringseed_dht_nodes");
            if nodes >= 1.0 || Instant::now() > deadline {
                return nodes;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let first = run_node(dir.path(), "first", &[format!("127.0.0.1:{boot}")], &state);
    assert!(nodes_in(&first) >= 1.0, "never joined the libtorrent node");
    let (status, body) = common::http::local(first.api, "GET", "/api/v1/stats", "");
    assert_eq!(status, 200, "{body}");
    let stats: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        stats["dht"]["port"].as_f64(),
        Some(first.metric("ringseed_dht_port")),
        "{body}"
    );
    assert!(stats["dht"]["nodes"].as_u64() >= Some(1), "{body}");
    first.stop();
    let saved = std::fs::read_to_string(state.join("dht-nodes")).expect("saved at shutdown");
    assert!(saved.contains(&format!("127.0.0.1:{boot}")), "{saved:?}");
    // No bootstrap node at all now: only the saved table brings it back into the DHT.
    let second = run_node(dir.path(), "second", &[], &state);
    assert!(
        nodes_in(&second) >= 1.0,
        "the saved routing table was not used"
    );
    second.stop();
    // Without the saved table the same config finds nobody (the check above can fail).
    std::fs::remove_file(state.join("dht-nodes")).unwrap();
    let third = run_node(dir.path(), "third", &[], &state);
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(third.metric("ringseed_dht_nodes"), 0.0);
    third.stop();
}

/// A hostile DHT on loopback: `n` UDP nodes served by one thread. Every query is answered
/// after `delay`, naming 8 of the swarm's nodes not named before as closer (with ids ever
/// closer to the target), so a lookup never runs out of nodes to ask; a get_peers answer
/// carries `values` fresh peer addresses (127.x.y.z, never dialled) when `values` > 0.
struct Hostile {
    addrs: Vec<std::net::SocketAddrV4>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Hostile {
    fn start(n: usize, values: usize, delay: Duration) -> Hostile {
        use ringseed::bencode::{Bencode, decode};
        use std::sync::atomic::Ordering;
        let sockets: Vec<std::net::UdpSocket> = (0..n)
            .map(|_| {
                let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                s.set_nonblocking(true).unwrap();
                s
            })
            .collect();
        let addrs: Vec<std::net::SocketAddrV4> = sockets
            .iter()
            .map(|s| match s.local_addr().unwrap() {
                std::net::SocketAddr::V4(a) => a,
                other => panic!("{other}"),
            })
            .collect();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (ports, halt) = (addrs.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut queue: Vec<(Instant, usize, std::net::SocketAddr, Vec<u8>)> = Vec::new();
            let (mut next_node, mut next_peer, mut closer) = (1usize, 0u32, 0u32);
            let mut buf = [0u8; 2048];
            while !halt.load(Ordering::Relaxed) {
                for (i, s) in sockets.iter().enumerate() {
                    let Ok((len, from)) = s.recv_from(&mut buf) else {
                        continue;
                    };
                    let Ok(q) = decode(&buf[..len]) else { continue };
                    let (Some(t), Some(kind)) = (
                        q.get(b"t").and_then(|v| v.as_bytes()),
                        q.get(b"q").and_then(|v| v.as_bytes()),
                    ) else {
                        continue;
                    };
                    let args = q.get(b"a");
                    let target: Vec<u8> = args
                        .and_then(|a| a.get(b"info_hash").or(a.get(b"target")))
                        .and_then(|v| v.as_bytes())
                        .map_or(vec![7; 20], <[u8]>::to_vec);
                    let mut r = Bencode::dict();
                    let mut id = target.clone();
                    id[19] ^= 0xff;
                    r.insert("id", Bencode::bytes(&id));
                    if kind != b"ping" {
                        // Eight nodes not named before, each closer to the target than the
                        // last: a lookup always has someone new to ask.
                        let mut nodes = Vec::new();
                        for _ in 0..8 {
                            let mut nid = target.clone();
                            closer += 1;
                            nid[16..20].copy_from_slice(&(u32::MAX - closer).to_be_bytes());
                            nodes.extend_from_slice(&nid);
                            let a = ports[next_node % ports.len()];
                            next_node += 1;
                            nodes.extend_from_slice(&a.ip().octets());
                            nodes.extend_from_slice(&a.port().to_be_bytes());
                        }
                        r.insert("nodes", Bencode::bytes(nodes));
                    }
                    if kind != b"ping" && kind != b"find_node" {
                        r.insert("token", Bencode::bytes(b"tok"));
                    }
                    if kind == b"get_peers" && values > 0 {
                        let list = (0..values)
                            .map(|_| {
                                next_peer += 1;
                                let [_, a, b, c] = next_peer.to_be_bytes();
                                Bencode::bytes([127, a.max(1), b, c, 0x1a, 0xe1])
                            })
                            .collect();
                        r.insert("values", Bencode::List(list));
                    }
                    let mut m = Bencode::dict();
                    m.insert("r", r);
                    m.insert("t", Bencode::bytes(t));
                    m.insert("y", Bencode::bytes(b"r"));
                    queue.push((Instant::now() + delay, i, from, m.encode()));
                }
                let now = Instant::now();
                queue.retain(|(at, i, to, bytes)| {
                    if *at > now {
                        return true;
                    }
                    let _ = sockets[*i].send_to(bytes, to);
                    false
                });
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        Hostile { addrs, stop }
    }
}

/// Our node on loopback with no bootstrap node and `limits`: others find it.
fn lone_node(limits: ringseed::dht::DhtLimits) -> ringseed::dht::Dht {
    let o = ringseed::dht::DhtOptions {
        port: 0,
        bind: None,
        bootstrap: Vec::new(),
        nodes_file: None,
        limits,
    };
    ringseed::dht::Dht::start(&o, "127.0.0.1:0".parse().unwrap()).unwrap()
}

/// Our node, bootstrapped from `boot` only, with `limits`.
fn our_node(boot: std::net::SocketAddrV4, limits: ringseed::dht::DhtLimits) -> ringseed::dht::Dht {
    let o = ringseed::dht::DhtOptions {
        port: 0,
        bind: None,
        bootstrap: vec![boot.to_string()],
        nodes_file: None,
        limits,
    };
    ringseed::dht::Dht::start(&o, "127.0.0.1:0".parse().unwrap()).unwrap()
}

#[test]
fn dht_replies_are_bounded_in_peers_and_in_time() {
    use std::sync::atomic::Ordering;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Replies stuffed with peers (180 fresh ones each, about what fits a datagram): a lookup
    // keeps 200 and drops the rest.
    let stuffed = Hostile::start(32, 180, Duration::ZERO);
    let limits = ringseed::dht::DhtLimits {
        lookup_timeout: Duration::from_secs(20),
        ..Default::default()
    };
    let dht = our_node(stuffed.addrs[0], limits);
    let started = Instant::now();
    let peers = rt.block_on(dht.lookup([0x42; 20]));
    let s = dht.stats().status();
    assert_eq!(peers.len(), 200, "peers taken from one lookup");
    assert!(
        dht.stats().peers_dropped.load(Ordering::Relaxed) > 0,
        "nothing was dropped: {s:?}"
    );
    assert_eq!((s.lookups_finished, s.lookups_timed_out), (1, 0), "{s:?}");
    eprintln!(
        "stuffed replies: {} peers kept in {:.2} s, {} dropped",
        peers.len(),
        started.elapsed().as_secs_f64(),
        dht.stats().peers_dropped.load(Ordering::Relaxed)
    );
    drop(dht);
    // Slow nodes that always name new, closer nodes: the lookup would never end on its own;
    // it is cut off at the time bound.
    let endless = Hostile::start(64, 0, Duration::from_millis(1500));
    let limits = ringseed::dht::DhtLimits {
        lookup_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let dht = our_node(endless.addrs[0], limits);
    let started = Instant::now();
    let peers = rt.block_on(dht.lookup([0x43; 20]));
    let took = started.elapsed();
    let s = dht.stats().status();
    assert!(peers.is_empty());
    assert_eq!((s.lookups_finished, s.lookups_timed_out), (0, 1), "{s:?}");
    assert!(took < Duration::from_secs(10), "the lookup took {took:?}");
    eprintln!("endless lookup cut off after {:.2} s", took.as_secs_f64());
}

/// Sends `n` pings to `node` from `from` (a socket of its own) as fast as it can, then counts
/// the replies that arrive within `wait`.
fn ping_flood(from: &str, node: std::net::SocketAddrV4, n: u16, wait: Duration) -> usize {
    use ringseed::bencode::{Bencode, decode};
    let s = std::net::UdpSocket::bind(from).unwrap();
    for t in 0..n {
        let mut a = Bencode::dict();
        a.insert("id", Bencode::bytes([0x5a; 20]));
        let mut q = Bencode::dict();
        q.insert("a", a);
        q.insert("q", Bencode::bytes(b"ping"));
        q.insert("t", Bencode::bytes(u32::from(t).to_be_bytes()));
        q.insert("y", Bencode::bytes(b"q"));
        s.send_to(&q.encode(), node).unwrap();
    }
    let end = Instant::now() + wait;
    let mut replies = std::collections::HashSet::new();
    let mut buf = [0u8; 1500];
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        let Ok((len, _)) = s.recv_from(&mut buf) else {
            continue;
        };
        let Ok(r) = decode(&buf[..len]) else { continue };
        if r.get(b"y").and_then(|v| v.as_bytes()) == Some(b"r") {
            replies.insert(r.get(b"t").and_then(|v| v.as_bytes()).map(<[u8]>::to_vec));
        }
    }
    replies.len()
}

#[test]
fn a_flood_of_queries_is_answered_within_the_rates_of_its_source_and_of_the_node() {
    use ringseed::dht::filter::{QueryLimits, Verdict};
    let start = |queries: QueryLimits| {
        let o = ringseed::dht::DhtOptions {
            port: 0,
            bind: None,
            bootstrap: Vec::new(),
            nodes_file: None,
            limits: ringseed::dht::DhtLimits {
                queries,
                ..Default::default()
            },
        };
        ringseed::dht::Dht::start(&o, "127.0.0.1:0".parse().unwrap()).unwrap()
    };
    let wait = Duration::from_millis(1500);
    // The defaults: 5 a second from one address after a burst of 20, then 5 minutes of silence.
    let dht = start(QueryLimits::default());
    let node = dht.local_addr();
    let flooder = ping_flood("127.0.0.1:0", node, 300, wait);
    assert!(
        (20..=22).contains(&flooder),
        "{flooder} of 300 pings answered from one address"
    );
    // Another address is not held to the flooder's rate...
    assert_eq!(ping_flood("127.0.0.2:0", node, 5, wait), 5);
    // ...and the flooder, asking slowly now, is still not answered.
    assert_eq!(ping_flood("127.0.0.1:0", node, 3, wait), 0);
    let q = |v| dht.stats().queries(v);
    assert_eq!(q(Verdict::Answer), flooder as u64 + 5);
    assert_eq!(
        q(Verdict::OverRate),
        1,
        "one query past the rate blocks the source"
    );
    // The rest of the flood was refused as blocked, less what the kernel dropped before the
    // node read it (a burst of 300 datagrams may overflow the socket's buffer).
    let blocked = q(Verdict::Blocked);
    assert!(
        (3..=300 - flooder as u64 - 1 + 3).contains(&blocked),
        "{blocked} refused as blocked"
    );
    drop(dht);
    // The node's own rate binds however many addresses ask (a flood from spoofed addresses).
    let dht = start(QueryLimits {
        per_ip_per_s: 1000,
        per_ip_burst: 1000,
        total_per_s: 50,
        ..Default::default()
    });
    let answered = ping_flood("127.0.0.3:0", dht.local_addr(), 400, wait);
    let busy = dht.stats().queries(Verdict::NodeBusy);
    eprintln!("node rate 50/s: {answered} of 400 answered, {busy} refused as busy");
    assert!(
        (50..=50 + 50 * 2).contains(&answered),
        "{answered} of 400 answered"
    );
    assert!(
        busy > 0 && busy <= 400 - answered as u64,
        "{busy} refused as busy"
    );
    assert_eq!(dht.stats().queries(Verdict::Answer), answered as u64);
}

/// libtorrent's queries carry 2-byte transaction ids (BEP 5 leaves the length to the asker);
/// mainline 6.2 parsed only 4-byte ones and dropped the rest unanswered, so no libtorrent node
/// ever kept ours (vendor/README.md). Now a libtorrent session given our node as its only node
/// puts it in its routing table, which it does only for a node that answers.
#[test]
fn a_libtorrent_node_keeps_ours_in_its_routing_table() {
    use ringseed::dht::filter::Verdict;
    let dht = lone_node(Default::default());
    let ours = dht.local_addr();
    let mut cmd = lt_dht();
    cmd.args(["table", &ours.port().to_string(), "20"]);
    let lt = Helper::start(cmd);
    let table = lt.wait_for(Duration::from_secs(40), "table line", &mut vec![], |l| {
        serde_json::from_str::<serde_json::Value>(l).ok()
    });
    let answered = dht.stats().queries(Verdict::Answer);
    assert!(
        table["nodes"]
            .as_array()
            .is_some_and(|n| n.iter().any(|n| n.as_str() == Some(&ours.to_string()))),
        "libtorrent's routing table: {table}; our node answered {answered} queries"
    );
    assert!(answered > 0, "our node answered no query");
    eprintln!(
        "libtorrent kept our node after {:.2} s; {answered} of its queries answered",
        table["seconds"].as_f64().unwrap_or(f64::NAN)
    );
}

/// The whole path through a ringseed DHT node: a ringseed seeder announces to it, and a
/// libtorrent leecher that knows only that node and the magnet asks it (2-byte transaction ids)
/// and gets the seeder's address.
#[test]
fn libtorrent_finds_a_ringseed_seed_through_a_ringseed_dht_node() {
    let dir = tempfile::tempdir().unwrap();
    let (torrent, src, file) = payload(dir.path(), "relayed", 16, &[]);
    let hex = hex_of(&torrent);
    let node = lone_node(Default::default());
    let boot = node.local_addr();
    let state = dir.path().join("state");
    let cfg = config(dir.path(), "seed", &[boot.to_string()], &state);
    let global = ["--config".as_ref(), cfg.as_os_str()];
    let mut seeder = spawn_seeder_with(&torrent, &src, "127.0.0.1", &[], &global);
    let metrics = seeder.metrics_addr();
    let deadline = Instant::now() + Duration::from_secs(20);
    while common::metric_at(metrics, "ringseed_dht_announces_total{outcome=\"stored\"}") < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the seeder never announced to our node"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let report = lt_leech_from(dir.path(), boot.port(), &hex, &file, seeder.addr);
    eprintln!("libtorrent through a ringseed node: {report}");
    let _ = seeder.child.kill();
    let _ = seeder.child.wait();
}

/// The other direction: a libtorrent seeder whose only DHT node is ours announces to it (its
/// get_peers for the token, then announce_peer, both with 2-byte transaction ids), and a
/// lookup through our node finds it.
#[test]
fn a_libtorrent_seed_announces_to_our_node_and_a_lookup_through_it_finds_it() {
    let dir = tempfile::tempdir().unwrap();
    let (torrent, src, _) = payload(dir.path(), "announced", 17, &[]);
    let meta = ringseed::metainfo::Metainfo::load(&torrent).unwrap();
    // Every query here comes from 127.0.0.1 (libtorrent's and our asker's alike): the default
    // rate per address would block it.
    let node = lone_node(ringseed::dht::DhtLimits {
        queries: ringseed::dht::filter::QueryLimits {
            per_ip_per_s: 1000,
            per_ip_burst: 1000,
            ..Default::default()
        },
        ..Default::default()
    });
    let mut cmd = lt_dht();
    cmd.arg("announce")
        .arg(&torrent)
        .arg(&src)
        .arg(node.local_addr().port().to_string());
    let seed = Helper::start(cmd);
    let port = seed.wait_for(Duration::from_secs(20), "seeding line", &mut vec![], |l| {
        l.strip_prefix("seeding ")?.parse::<u16>().ok()
    });
    let want = format!("127.0.0.1:{port}");
    let asker = our_node(node.local_addr(), Default::default());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    loop {
        let peers = rt.block_on(asker.lookup(meta.info.hash.wire_id()));
        if peers.iter().any(|p| p.to_string() == want) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "our node never handed out the libtorrent seed {want}: {peers:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "libtorrent's announce found through our node after {:.2} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn a_seed_dials_the_leechers_the_dht_names() {
    let dir = tempfile::tempdir().unwrap();
    let (torrent, src, file) = payload(dir.path(), "dialled", 15, &[]);
    let hex = hex_of(&torrent);
    let mut heard = Vec::new();
    let (node, boot) = lt_dht_node(&mut heard);
    // The leecher asks the DHT once, before there is any seed, and never again.
    let out = dir.path().join("lt-out");
    let leech = Helper::start(lt_leech(&out, hex.as_str(), boot, &["40", "once"]));
    let lt_port = leech.wait_for(Duration::from_secs(20), "listening", &mut vec![], |l| {
        l.strip_prefix("listening ")?.parse::<u16>().ok()
    });
    // Its announce stored at the node: the DHT now names it.
    node.wait_for(
        Duration::from_secs(20),
        "the leecher's announce",
        &mut heard,
        |l| {
            let rest = l.strip_prefix(&format!("announce {hex} "))?;
            (rest.split(' ').nth(1)? == lt_port.to_string()).then_some(())
        },
    );
    let state = dir.path().join("state");
    let cfg = config(dir.path(), "seed", &[format!("127.0.0.1:{boot}")], &state);
    let global = ["--config".as_ref(), cfg.as_os_str()];
    let mut seeder = spawn_seeder_with(&torrent, &src, "127.0.0.1", &[], &global);
    let metrics = seeder.metrics_addr();
    let report = leech.wait_for(Duration::from_secs(45), "the report", &mut vec![], |l| {
        l.starts_with('{').then(|| l.to_string())
    });
    let v: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(
        v["done"], true,
        "the seed never reached the leecher: {report}"
    );
    assert_eq!(
        std::fs::read(out.join("dialled.bin")).unwrap(),
        std::fs::read(&file).unwrap(),
        "not byte-identical"
    );
    assert!(common::metric_at(metrics, "ringseed_dht_peers_found_total") >= 1.0);
    eprintln!("a seed found a leecher through the DHT and dialled it: {report}");
    let _ = seeder.child.kill();
    let _ = seeder.child.wait();
}

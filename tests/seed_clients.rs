//! Real clients download from ringseed, byte-perfect, over loopback.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{Payload, Seeder, create_torrent, lt_tool, require_tool, signal, spawn_seeder};
use ringseed::engine::{Engine, Settings, Torrent};
use ringseed::metainfo::Metainfo;

fn make_torrent(src: &Path, out: &Path, piece_kib: u32) -> Metainfo {
    create_torrent(
        src,
        out,
        &["--no-date", "--piece-kib", &piece_kib.to_string()],
    )
}

fn start_engine(workers: usize) -> Engine {
    Engine::start(Settings {
        workers,
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Settings::default()
    })
    .unwrap()
}

fn assert_same_tree(a: &Path, b: &Path) {
    if a.is_file() {
        assert_eq!(
            std::fs::read(a).unwrap(),
            std::fs::read(b).unwrap(),
            "{} differs",
            b.display()
        );
        return;
    }
    for e in std::fs::read_dir(a).unwrap() {
        let e = e.unwrap();
        assert_same_tree(&e.path(), &b.join(e.file_name()));
    }
}

#[test]
fn libtorrent_downloads_single_and_multi_file() {
    require_tool("/usr/bin/python3");
    let p = Payload::new();
    let engine = start_engine(2);
    let addr = engine.local_addr();
    // 48 KiB pieces divide none of the payload's file sizes.
    for (src, name) in [(&p.single, "single"), (&p.multi, "multi")] {
        let tpath = p.dir.path().join(format!("{name}.torrent"));
        let meta = make_torrent(src, &tpath, 48);
        let (t, report) = Torrent::open(meta, p.data_dir(), Some(Default::default())).unwrap();
        assert!(report.unwrap().all_good());
        engine.add_torrent(Arc::new(t)).unwrap();
        let out = p.dir.path().join(format!("lt-{name}"));
        let res: serde_json::Value = serde_json::from_str(&lt_tool(&[
            "download",
            tpath.to_str().unwrap(),
            out.to_str().unwrap(),
            &addr.to_string(),
            "60",
        ]))
        .unwrap();
        assert_eq!(res["done"], true, "{res}");
        assert_same_tree(src, &out.join(src.file_name().unwrap()));
    }
    let stats = engine.shutdown();
    let up: u64 = stats.iter().map(|s| s.bytes_up).sum();
    assert!(up >= 1_000_003 + 1_600_122, "{stats:?}");
}

/// libtorrent downloads whole from a worker that falls behind: with a queue budget of 8 blocks,
/// its pipeline is told a `reqq` of 8 in a second extension handshake and what it queued past
/// that (requests that crossed the handshake on the wire) is rejected (BEP 6); it asks again
/// until every byte is there.
#[test]
fn libtorrent_downloads_from_a_worker_that_sheds_its_queue() {
    require_tool("/usr/bin/python3");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let src = data.join("big.bin");
    std::fs::write(&src, common::pattern(48 << 20, 9)).unwrap();
    let engine = Engine::start(Settings {
        workers: 1,
        listen: "127.0.0.1:0".parse().unwrap(),
        queue_budget_blocks: 8,
        ..Settings::default()
    })
    .unwrap();
    let addr = engine.local_addr();
    let tpath = dir.path().join("big.torrent");
    let meta = make_torrent(&src, &tpath, 256);
    let (t, _) = Torrent::open(meta, &data, None).unwrap();
    engine.add_torrent(Arc::new(t)).unwrap();
    let out = dir.path().join("lt-shed");
    let res: serde_json::Value = serde_json::from_str(&lt_tool(&[
        "download",
        tpath.to_str().unwrap(),
        out.to_str().unwrap(),
        &addr.to_string(),
        "120",
    ]))
    .unwrap();
    assert_eq!(res["done"], true, "{res}");
    assert_same_tree(&src, &out.join("big.bin"));
    let stats = engine.shutdown();
    let shed: u64 = stats.iter().map(|s| s.shed).sum();
    assert!(shed > 0, "nothing shed: {stats:?}");
    assert!(stats[0].bytes_up >= 48 << 20, "{stats:?}");
}

/// libtorrent starts from a magnet link that names only the info hash: it fetches the info
/// dictionary from ringseed over BEP 9 (two 16 KiB metadata pieces here), then the data.
#[test]
fn libtorrent_downloads_from_a_magnet_link_fetching_the_metadata_from_us() {
    require_tool("/usr/bin/python3");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let src = data.join("magnet-payload");
    std::fs::create_dir_all(&src).unwrap();
    // 1100 pieces of 16 KiB: 22 000 bytes of piece hashes, so the info dictionary spans two
    // metadata pieces.
    let mut x = 0x9e37_79b9_u32;
    let bytes: Vec<u8> = (0..1100 * 16 * 1024 - 777)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    std::fs::write(src.join("a.bin"), &bytes[..5_000_000]).unwrap();
    std::fs::write(src.join("b.bin"), &bytes[5_000_000..]).unwrap();
    let tpath = dir.path().join("magnet.torrent");
    let meta = make_torrent(&src, &tpath, 16);
    assert!(meta.info.raw.len() > 16 * 1024, "{}", meta.info.raw.len());
    let engine = start_engine(1);
    let (t, report) = Torrent::open(meta.clone(), &data, Some(Default::default())).unwrap();
    assert!(report.unwrap().all_good());
    engine.add_torrent(Arc::new(t)).unwrap();
    let magnet = format!(
        "magnet:?xt=urn:btih:{}",
        ringseed::metainfo::hex(&meta.info.hash.wire_id())
    );
    let out = dir.path().join("lt");
    let res: serde_json::Value = serde_json::from_str(&lt_tool(&[
        "download",
        &magnet,
        out.to_str().unwrap(),
        &engine.local_addr().to_string(),
        "60",
    ]))
    .unwrap();
    assert_eq!(res["done"], true, "{res}");
    assert_same_tree(&src, &out.join("magnet-payload"));
    engine.shutdown();
}

/// libtorrent learns about another peer from our peer exchange and dials it: while it
/// downloads (the seeder throttled so that takes seconds), a listener that joined the swarm as
/// a peer with `p` = its port receives libtorrent's handshake for the torrent.
#[test]
fn libtorrent_dials_a_peer_it_heard_of_through_our_peer_exchange() {
    use ringseed::wire::extension::ExtHandshake;
    use ringseed::wire::{Handshake, Message};
    use std::io::{Read, Write};
    require_tool("/usr/bin/python3");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("pex.bin"), common::pattern(24 << 20, 11)).unwrap();
    let tpath = dir.path().join("pex.torrent");
    let meta = make_torrent(&data.join("pex.bin"), &tpath, 256);
    let engine = Engine::start(Settings {
        workers: 1,
        listen: "127.0.0.1:0".parse().unwrap(),
        pex_interval: std::time::Duration::from_millis(300),
        upload_rate_limit: 6 << 20,
        ..Settings::default()
    })
    .unwrap();
    let (t, _) = Torrent::open(meta.clone(), &data, Some(Default::default())).unwrap();
    engine.add_torrent(Arc::new(t)).unwrap();
    // The other peer: a listener, and a connection to the seeder announcing that port.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut member = std::net::TcpStream::connect(engine.local_addr()).unwrap();
    let mut hello = Handshake::new(meta.info.hash.wire_id(), *b"-XX0000-pexmember001")
        .encode()
        .to_vec();
    let ext = ExtHandshake {
        p: Some(port),
        ..Default::default()
    };
    Message::Extended {
        id: 0,
        payload: &ext.encode(),
    }
    .encode(&mut hello);
    member.write_all(&hello).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let mut hs = [0u8; 68];
            s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .unwrap();
            if s.read_exact(&mut hs).is_ok() {
                let _ = tx.send(Handshake::parse(&hs).ok().flatten().map(|h| h.info_hash));
            }
        }
    });
    let out = dir.path().join("lt");
    let res: serde_json::Value = serde_json::from_str(&lt_tool(&[
        "download",
        tpath.to_str().unwrap(),
        out.to_str().unwrap(),
        &engine.local_addr().to_string(),
        "60",
    ]))
    .unwrap();
    assert_eq!(res["done"], true, "{res}");
    let dialled = rx.recv_timeout(std::time::Duration::from_secs(5));
    assert_eq!(
        dialled,
        Ok(Some(meta.info.hash.wire_id())),
        "libtorrent never dialled the peer our exchange listed"
    );
    drop(member);
    engine.shutdown();
}

/// The real binary, real tracker, real clients: aria2c and two libtorrent sessions (one through
/// the tracker, one by direct connect) download one multi-file torrent with an odd piece size
/// from one `ringseed seed` at the same time. SIGINT then announces `stopped` and exits 0.
/// (Transmission refuses loopback peers as "martian"; it has its own test in a network
/// namespace below.)
#[test]
fn several_real_clients_at_once_through_a_tracker() {
    use common::opentracker::OpenTracker;
    use std::process::{Command, Stdio};
    for tool in ["/usr/bin/aria2c", "/usr/bin/python3"] {
        require_tool(tool);
    }
    let p = Payload::new();
    let tpath = p.dir.path().join("swarm.torrent");
    let meta = make_torrent(&p.multi, &tpath, 48);
    let tracker = OpenTracker::start(&[meta.info.hash.v1.unwrap()]);
    // Same info-hash (the announce URL is outside `info`), now pointing at the tracker.
    let with_tracker = create_torrent(
        &p.multi,
        &tpath,
        &["--no-date", "--piece-kib", "48", "-t", &tracker.http()],
    );
    assert_eq!(with_tracker.info.hash, meta.info.hash);

    let Seeder {
        child: mut seeder,
        lines,
        addr,
    } = spawn_seeder(&tpath, p.data_dir(), "127.0.0.1", &[]);
    let addr = addr.to_string();

    let out = |name: &str| {
        let d = p.dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    let (aria_dir, lt_dir, lt2_dir) = (out("aria2"), out("lt-tracker"), out("lt-direct"));
    let mut aria = Command::new("/usr/bin/aria2c")
        .args([
            "--seed-time=0",
            "--enable-dht=false",
            "--enable-dht6=false",
            "--bt-enable-lpd=false",
        ])
        .args([
            "--enable-peer-exchange=false",
            "--file-allocation=none",
            "--console-log-level=warn",
        ])
        .args(["--summary-interval=0", "--bt-stop-timeout=90"])
        .arg(format!("--dir={}", aria_dir.display()))
        .arg(&tpath)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (t1, d1) = (tpath.clone(), lt_dir.clone());
    let lt_tracker = std::thread::spawn(move || {
        lt_tool(&[
            "download",
            t1.to_str().unwrap(),
            d1.to_str().unwrap(),
            "tracker",
            "90",
        ])
    });
    let (t2, d2, a2) = (tpath.clone(), lt2_dir.clone(), addr.clone());
    let lt_direct = std::thread::spawn(move || {
        lt_tool(&[
            "download",
            t2.to_str().unwrap(),
            d2.to_str().unwrap(),
            &a2,
            "90",
        ])
    });

    let name = p.multi.file_name().unwrap();
    let complete = |dir: &Path| {
        let mut ok = true;
        for (_, f) in meta.info.layout.data_files() {
            let got = std::fs::read(dir.join(f.rel_path())).unwrap_or_default();
            let want = std::fs::read(p.data_dir().join(f.rel_path())).unwrap();
            ok &= got == want;
        }
        ok
    };
    let aria_status = aria.wait().unwrap();
    assert!(aria_status.success(), "aria2c failed: {aria_status}");
    assert!(complete(&aria_dir), "aria2c's copy differs");
    for (name, h) in [("tracker", lt_tracker), ("direct", lt_direct)] {
        let res: serde_json::Value = serde_json::from_str(&h.join().unwrap()).unwrap();
        assert_eq!(res["done"], true, "libtorrent ({name}): {res}");
    }
    assert!(complete(&lt_dir) && complete(&lt2_dir));
    assert_same_tree(&p.multi, &aria_dir.join(name));

    // SIGINT: stopped announces, clean exit, final statistics on stdout.
    signal(&seeder, nix::sys::signal::Signal::SIGINT);
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = seeder.wait().unwrap();
    assert!(status.success(), "{status}: {rest:?}");
    let stats: Vec<serde_json::Value> = serde_json::from_str(rest.last().unwrap()).unwrap();
    let handshakes: u64 = stats
        .iter()
        .map(|w| w["handshakes"].as_u64().unwrap())
        .sum();
    assert!(handshakes >= 3, "{stats:?}");
    let up: u64 = stats.iter().map(|w| w["bytes_up"].as_u64().unwrap()).sum();
    // The clients also trade pieces among themselves, so ringseed sent at least one whole copy
    // but not necessarily three.
    assert!(up >= meta.info.layout.data_length(), "{stats:?}");
}
/// A network namespace with a veth pair to this host, torn down on drop. Transmission refuses
/// peers on 127.0.0.0/8, so it runs in here and reaches ringseed at the host end of the pair.
struct NetNs {
    name: String,
    host_ip: std::net::Ipv4Addr,
}

impl NetNs {
    /// `None` when this machine does not let us create namespaces (no CAP_NET_ADMIN).
    fn create() -> Option<NetNs> {
        let id = std::process::id();
        let name = format!("rs{}", id % 1_000_000);
        let (a, b) = (format!("{name}a"), format!("{name}b"));
        let x = (id % 250) as u8 + 1;
        let host_ip = std::net::Ipv4Addr::new(10, 213, x, 1);
        let ip = |args: &[&str]| {
            std::process::Command::new("ip")
                .args(args)
                .output()
                .map(|o| {
                    (
                        o.status.success(),
                        String::from_utf8_lossy(&o.stderr).into_owned(),
                    )
                })
                .unwrap_or((false, "no `ip` command".into()))
        };
        let (ok, err) = ip(&["netns", "add", &name]);
        if !ok {
            eprintln!(
                "cannot create a network namespace ({err}); the Transmission test needs root"
            );
            return None;
        }
        let ns = NetNs {
            name: name.clone(),
            host_ip,
        };
        let peer_ip = format!("10.213.{x}.2/30");
        let host_cidr = format!("{host_ip}/30");
        for cmd in [
            vec!["link", "add", &a, "type", "veth", "peer", "name", &b],
            vec!["link", "set", &b, "netns", &name],
            vec!["addr", "add", &host_cidr, "dev", &a],
            vec!["link", "set", &a, "up"],
            vec![
                "netns", "exec", &name, "ip", "addr", "add", &peer_ip, "dev", &b,
            ],
            vec!["netns", "exec", &name, "ip", "link", "set", &b, "up"],
            vec!["netns", "exec", &name, "ip", "link", "set", "lo", "up"],
        ] {
            let (ok, err) = ip(&cmd);
            assert!(ok, "ip {cmd:?}: {err}");
        }
        Some(ns)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting the namespace deletes its veth end, and with it the pair.
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Transmission (headless `transmission-cli`, 3.00) finds ringseed through opentracker, falls back
/// from MSE to plaintext, and downloads a multi-file torrent byte-perfect.
#[test]
fn transmission_downloads_in_a_network_namespace() {
    use common::opentracker::OpenTracker;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    require_tool("/usr/bin/transmission-cli");
    let Some(ns) = NetNs::create() else {
        eprintln!("SKIPPED transmission_downloads_in_a_network_namespace: no CAP_NET_ADMIN");
        return;
    };
    let p = Payload::new();
    let tpath = p.dir.path().join("tr.torrent");
    let meta = make_torrent(&p.multi, &tpath, 32);
    let tracker = OpenTracker::start_on(ns.host_ip, &[meta.info.hash.v1.unwrap()]);
    let with_tracker = create_torrent(
        &p.multi,
        &tpath,
        &["--no-date", "--piece-kib", "32", "-t", &tracker.http()],
    );
    assert_eq!(with_tracker.info.hash, meta.info.hash);
    let Seeder {
        child: mut seeder,
        lines,
        ..
    } = spawn_seeder(&tpath, p.data_dir(), &ns.host_ip.to_string(), &[]);

    let dl = p.dir.path().join("transmission");
    let home = p.dir.path().join("transmission-home");
    std::fs::create_dir_all(&dl).unwrap();
    std::fs::create_dir_all(&home).unwrap();
    // ringseed speaks TCP only. Transmission 3.00 tries uTP first and, when uTP times
    // out, its fallback to TCP aborts the new connection at once (gotError() in handshake.c
    // falls through to its error branch) and shelves the peer for 15 minutes: uTP must be off.
    // Encryption stays at Transmission's default, "preferred": it opens with MSE, which
    // ringseed accepts (`encryption_in = "enabled"`, the default). That is the path every
    // default Transmission takes, so the test keeps it.
    let settings = serde_json::json!({
        "utp-enabled": false,
        "encryption": 1,
        "dht-enabled": false,
        "lpd-enabled": false,
        "pex-enabled": false,
        "port-forwarding-enabled": false,
    });
    std::fs::write(home.join("settings.json"), settings.to_string()).unwrap();
    let tr_log = p.dir.path().join("transmission.log");
    let mut tr = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            "/usr/bin/transmission-cli",
            "-p",
            "51413",
            "-w",
        ])
        .arg(&dl)
        .arg("-g")
        .arg(&home)
        .arg(&tpath)
        .stdout(std::fs::File::create(&tr_log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Transmission 3.00 never creates zero-length files (transmission/transmission#417, fixed
    // in 4.1): a file with no bytes counts as received whether it exists or not; every other
    // file must match byte for byte.
    let differing = || -> Vec<std::path::PathBuf> {
        meta.info
            .layout
            .data_files()
            .filter(|(_, f)| {
                let got = std::fs::read(dl.join(f.rel_path())).unwrap_or_default();
                got != std::fs::read(p.data_dir().join(f.rel_path())).unwrap()
            })
            .map(|(_, f)| f.rel_path())
            .collect()
    };
    // Transmission declares interest only at its rechoke pulse (every 10 s), so a run takes
    // about 15 s; the deadline leaves three times that.
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut missing = differing();
    while Instant::now() < deadline && !missing.is_empty() {
        std::thread::sleep(Duration::from_millis(250));
        missing = differing();
    }
    let _ = tr.kill();
    let _ = tr.wait();
    signal(&seeder, nix::sys::signal::Signal::SIGINT);
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = seeder.wait().unwrap();
    let stats: Vec<serde_json::Value> =
        serde_json::from_str(rest.last().map_or("[]", String::as_str)).unwrap_or_default();
    let tr_tail = {
        let out = std::fs::read(&tr_log).unwrap_or_default();
        String::from_utf8_lossy(&out[out.len().saturating_sub(600)..]).into_owned()
    };
    assert!(
        missing.is_empty(),
        "Transmission did not finish downloading from ringseed: {missing:?} missing or \
         different\nseeder statistics: {stats:?}\nTransmission's last output: {tr_tail}"
    );
    assert!(status.success(), "{status}: {rest:?}");
    let sum = |key: &str| -> u64 { stats.iter().map(|w| w[key].as_u64().unwrap()).sum() };
    assert!(sum("handshakes") >= 1, "{stats:?}");
    assert!(
        sum("bytes_up") >= meta.info.layout.data_length(),
        "{stats:?}"
    );
    // Transmission's MSE handshake was accepted (it offers both methods; ringseed, like
    // libtorrent by default, picks plaintext).
    assert!(sum("mse_rc4") + sum("mse_plaintext") >= 1, "{stats:?}");
}

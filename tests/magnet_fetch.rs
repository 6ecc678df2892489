//! BEP 9 against real seeders: libtorrent (python3-libtorrent), and ringseed's own engine, seed a
//! torrent on 127.0.0.1 and `magnet_fetch` fetches its info dictionary knowing only the
//! info-hash, as from a magnet link.

mod common;

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{create_torrent, pattern, require_tool, spawn_seeder};
use ringseed::magnet_fetch::{FetchOptions, Fetched, fetch_metadata, metainfo_from_info};
use ringseed::metainfo::{InfoHash, Metainfo};

/// A seeder process and its address, killed when dropped (also when a test fails).
struct RunningSeeder {
    child: Child,
    addr: SocketAddr,
}

impl RunningSeeder {
    /// `lt_tool.py seed` on a kernel-chosen loopback port.
    fn libtorrent(torrent: &Path, save_path: &Path) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/helpers/lt_tool.py");
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .arg("seed")
            .arg(torrent)
            .arg(save_path)
            .arg("0")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start lt_tool.py seed");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = std::io::BufReader::new(stdout).lines();
        let port: u16 = loop {
            let line = lines
                .next()
                .expect("lt_tool.py seed exited before it was ready")
                .expect("seeder output");
            if let Some(port) = line.strip_prefix("ready ") {
                break port.trim().parse().expect("a port after ready");
            }
        };
        assert_ne!(port, 0, "libtorrent is not listening");
        RunningSeeder {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }
}

impl Drop for RunningSeeder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fails (as every interop test here does) when Debian's python3 cannot import libtorrent.
fn require_libtorrent() {
    require_tool("/usr/bin/python3");
    let ok = Command::new("/usr/bin/python3")
        .args(["-c", "import libtorrent"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "python3-libtorrent is missing: run scripts/test.sh (or install python3-libtorrent) first"
    );
}

/// Fetches the metadata of `hash` from `peer`. libtorrent sometimes resets a connection that
/// arrives right after it starts seeding (perf/seed_vs_libtorrent.sh retries for the same
/// reason), and a fetch dials each address once, so a fetch that failed that way runs again.
fn fetch_from(peer: SocketAddr, hash: &InfoHash) -> Fetched {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut last = None;
    for attempt in 0..5 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_secs(1));
        }
        let result = rt.block_on(async {
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            tx.send(peer).await.unwrap();
            drop(tx);
            let opts = FetchOptions {
                peer_timeout: Duration::from_secs(10),
                ..Default::default()
            };
            tokio::time::timeout(Duration::from_secs(60), fetch_metadata(hash, rx, opts)).await
        });
        match result.expect("the fetch ends within its bounds") {
            Ok(fetched) => return fetched,
            Err(e) => {
                let lost = e
                    .failures()
                    .iter()
                    .all(|(_, f)| matches!(f.kind(), "closed" | "io"));
                eprintln!("attempt {attempt}: {e}");
                assert!(lost, "the seeder refused the fetch: {e}");
                last = Some(e);
            }
        }
    }
    panic!("no metadata from {peer} in 5 attempts: {last:?}");
}

/// A payload of one file whose torrent (16 KiB pieces) has an info dictionary of more than one
/// 16 KiB metadata piece, seeded by libtorrent.
fn seed(format: &str) -> (tempfile::TempDir, Metainfo, RunningSeeder) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let file = data.join("payload.bin");
    std::fs::write(&file, pattern(20 << 20, 7)).unwrap();
    let torrent = dir.path().join("payload.torrent");
    let meta = create_torrent(
        &file,
        &torrent,
        &["--format", format, "--piece-kib", "16", "--no-date"],
    );
    assert!(
        meta.info.raw.len() > ringseed::wire::metadata::PIECE_BYTES,
        "the info dictionary should span several metadata pieces"
    );
    let seeder = RunningSeeder::libtorrent(&torrent, &data);
    (dir, meta, seeder)
}

#[test]
fn fetches_v1_metadata_from_libtorrent() {
    require_libtorrent();
    let (_dir, meta, seeder) = seed("v1");
    let magnet_hash = InfoHash {
        v1: meta.info.hash.v1,
        v2: None,
    };
    let fetched = fetch_from(seeder.addr, &magnet_hash);
    assert_eq!(fetched.info, meta.info.raw);
    assert_eq!(fetched.from, seeder.addr);

    let trackers = ["udp://127.0.0.1:6969/announce".to_string()];
    let built = metainfo_from_info(&fetched.info, &trackers).unwrap();
    assert_eq!(built.info, meta.info);
    assert_eq!(built.trackers, [trackers.to_vec()]);
}

#[test]
fn fetches_hybrid_metadata_from_libtorrent_by_either_hash() {
    require_libtorrent();
    let (_dir, meta, seeder) = seed("hybrid");
    let v2_only = InfoHash {
        v1: None,
        v2: meta.info.hash.v2,
    };
    assert!(v2_only.v2.is_some());
    // Both hashes known (the handshake carries the v1 hash), then only the v2 one, as from a
    // `urn:btmh:` magnet (the truncated SHA-256), then both again. libtorrent answers in the
    // protocol it remembers for our IP, so the later handshakes are answered with the other
    // hash: the fetch must take either.
    for hash in [meta.info.hash, v2_only, meta.info.hash] {
        let fetched = fetch_from(seeder.addr, &hash);
        assert_eq!(fetched.info, meta.info.raw);
    }
    let built = metainfo_from_info(&meta.info.raw, &[]).unwrap();
    assert_eq!(built.info.hash, meta.info.hash);
}

#[test]
fn fetches_metadata_from_a_ringseed_seeder() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let file = data.join("payload.bin");
    std::fs::write(&file, pattern(20 << 20, 8)).unwrap();
    let torrent = dir.path().join("payload.torrent");
    let meta = create_torrent(&file, &torrent, &["--piece-kib", "16", "--no-date"]);
    let started = spawn_seeder(&torrent, &data, "127.0.0.1", &[]);
    let seeder = RunningSeeder {
        child: started.child,
        addr: started.addr,
    };
    let fetched = fetch_from(seeder.addr, &meta.info.hash);
    assert_eq!(fetched.info, meta.info.raw);
    assert!(fetched.bad_peers.is_empty());
}

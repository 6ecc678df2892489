//! BEP 52 on the wire against libtorrent 2.0 (python3-libtorrent): v2 and hybrid torrents
//! added by magnet link, whose piece layers are not in the info dictionary and must come from
//! a peer's `hashes` answers.
//!
//! - a libtorrent leecher given only a pure v2 magnet (`urn:btmh:` and `x.pe`) downloads from
//!   ringseed, which serves the metadata (BEP 9) and the piece layers (hash requests);
//! - ringseed given a pure v2 magnet, and a hybrid one (both `xt`), downloads from a libtorrent
//!   seeder: metadata, piece layers verified against each file's `pieces root`, then the data;
//!   the .torrent it keeps carries the layers.
//!
//! The payload has a file of 641 pieces (two hash requests of 512, the second needing uncle
//! hashes), one of 3 pieces, and one smaller than a piece (its root is its only hash).

mod common;

use std::path::{Path, PathBuf};

use common::{create_torrent, lt_tool, pattern, ringseed, spawn_lt_seeder, spawn_seeder};
use ringseed::metainfo::{Metainfo, Version, hex};

const PIECE: usize = 16 * 1024;

/// The payload directory `v2data` under a fresh temporary directory.
fn payload() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let root = data.join("v2data");
    std::fs::create_dir_all(&root).unwrap();
    for (name, len, seed) in [
        ("big.bin", 640 * PIECE + 123, 11),
        ("three.bin", 2 * PIECE + 5000, 12),
        ("small.bin", 100, 13),
    ] {
        std::fs::write(root.join(name), pattern(len, seed)).unwrap();
    }
    (dir, data)
}

/// The magnet link of `meta` by its v2 hash (and its v1 hash too for a hybrid torrent), with
/// the peer to ask.
fn magnet(meta: &Metainfo, peer: std::net::SocketAddr) -> String {
    let h = meta.info.hash;
    let mut m = String::from("magnet:?");
    if let Some(v1) = h.v1 {
        m += &format!("xt=urn:btih:{}&", hex(&v1));
    }
    let v2 = h.v2.expect("a v2 hash");
    m += &format!("xt=urn:btmh:1220{}&dn=v2data&x.pe={peer}", hex(&v2));
    m
}

/// Every file of the torrent has the same bytes under `got` as under `want`.
fn assert_same_files(meta: &Metainfo, want: &Path, got: &Path) {
    let mut files = 0;
    for (_, f) in meta.info.layout.data_files() {
        let path = got.join(f.rel_path());
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            bytes == std::fs::read(want.join(f.rel_path())).unwrap(),
            "{} differs from the seeded file",
            path.display()
        );
        files += 1;
    }
    assert_eq!(files, 3);
}

/// Runs `ringseed download MAGNET` from `peer` into `out` (bounded by its stall timeout) and
/// returns its final JSON report, failing the test with its stderr unless it completed.
fn ringseed_download(magnet: &str, out: &Path, peer: std::net::SocketAddr) -> serde_json::Value {
    let run = ringseed()
        .arg("download")
        .arg(magnet)
        .arg("--data")
        .arg(out)
        .args(["--json", "--metrics", "", "--stall-timeout", "30"])
        .args(["--listen", "127.0.0.1:0", "--workers", "2", "--no-trackers"])
        .args(["--peer", &peer.to_string()])
        .output()
        .expect("run ringseed download");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let report = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v.get("done").is_some());
    match report {
        Some(r) if run.status.success() && r["done"] == true => r,
        _ => panic!(
            "download failed: {}\nstdout: {stdout}\nstderr: {}",
            run.status,
            String::from_utf8_lossy(&run.stderr)
        ),
    }
}

/// The .torrent `ringseed download` kept for the magnet: it must load on its own, piece layers
/// included (what a second run starts from without asking any peer).
fn kept_torrent(out: &Path) -> Metainfo {
    let dir = out.join(".ringseed");
    let path = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "torrent"))
        .expect("a kept .torrent");
    Metainfo::from_bytes(&std::fs::read(&path).unwrap()).expect("the kept torrent loads")
}

/// ringseed fetches a magnet's metadata and piece layers from libtorrent, then the data.
fn ringseed_from_libtorrent(format: &str, ip: &str) {
    let (dir, data) = payload();
    let torrent = dir.path().join("lt.torrent");
    lt_tool(&[
        "create",
        data.join("v2data").to_str().unwrap(),
        torrent.to_str().unwrap(),
        format,
        &PIECE.to_string(),
    ]);
    let meta = Metainfo::from_bytes(&std::fs::read(&torrent).unwrap()).unwrap();
    let want = if format == "v2" {
        Version::V2
    } else {
        Version::Hybrid
    };
    assert_eq!(meta.info.version, want);
    assert_eq!(
        meta.info.piece_layers.len(),
        2,
        "two files longer than a piece"
    );
    let seeder = spawn_lt_seeder(&torrent, &data, ip, 0);
    let out = dir.path().join("got");
    ringseed_download(&magnet(&meta, seeder.addr), &out, seeder.addr);
    assert_same_files(&meta, &data, &out);
    let kept = kept_torrent(&out);
    assert_eq!(kept.info.raw, meta.info.raw);
    assert_eq!(kept.info.piece_layers, meta.info.piece_layers);
    drop(seeder);
}

#[test]
fn ringseed_downloads_a_pure_v2_magnet_from_libtorrent() {
    ringseed_from_libtorrent("v2", "127.0.0.31");
}

#[test]
fn ringseed_downloads_a_hybrid_magnet_from_libtorrent() {
    ringseed_from_libtorrent("hybrid", "127.0.0.32");
}

/// libtorrent, given only the v2 magnet, gets metadata and piece layers from ringseed (it can
/// verify no piece of the two larger files without the layers) and downloads every byte.
#[test]
fn libtorrent_downloads_a_pure_v2_magnet_from_ringseed() {
    let (dir, data) = payload();
    let torrent = dir.path().join("rs.torrent");
    let meta = create_torrent(
        &data.join("v2data"),
        &torrent,
        &["--format", "v2", "--piece-kib", "16", "--no-date"],
    );
    assert_eq!(meta.info.version, Version::V2);
    let mut seeder = spawn_seeder(&torrent, &data, "127.0.0.33", &[]);
    let out = dir.path().join("lt-got");
    let result = lt_tool(&[
        "download",
        &magnet(&meta, seeder.addr),
        out.to_str().unwrap(),
        &seeder.addr.to_string(),
        "60",
    ]);
    let answered = hash_requests_answered(&mut seeder);
    let _ = seeder.child.kill();
    let _ = seeder.child.wait();
    let r: serde_json::Value = serde_json::from_str(result.trim()).expect("lt_tool's JSON");
    assert_eq!(r["done"], true, "libtorrent did not finish: {r}");
    assert_same_files(&meta, &data, &out);
    // The layers of the two larger files came from our answers: at least one request each.
    assert!(answered >= 2, "hash requests answered: {answered}");
}

/// `ringseed_hash_requests_answered` on the seeder's /metrics, summed over its workers.
fn hash_requests_answered(seeder: &mut common::Seeder) -> u64 {
    let addr: std::net::SocketAddr = seeder
        .lines
        .by_ref()
        .find_map(|l| {
            l.ok()?
                .strip_prefix("metrics on http://")?
                .trim_end_matches("/metrics")
                .parse()
                .ok()
        })
        .expect("the seeder's metrics line");
    let (status, text) = common::http::local(addr, "GET", "/metrics", "");
    assert_eq!(status, 200, "{text}");
    text.lines()
        .filter(|l| l.starts_with("ringseed_hash_requests_answered_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The handshake's v2 bit: a hybrid torrent's seeder upgrades a v1 handshake that sets it to
/// the truncated v2 hash, and takes connections by that hash; a plain v1 handshake is answered
/// in kind.
#[test]
fn a_hybrid_seed_answers_by_its_v2_hash() {
    use ringseed::wire::Handshake;
    use std::io::{Read, Write};
    use std::net::TcpStream;
    let (dir, data) = payload();
    let torrent = dir.path().join("hy.torrent");
    let meta = create_torrent(
        &data.join("v2data"),
        &torrent,
        &["--format", "hybrid", "--piece-kib", "16", "--no-date"],
    );
    let v1 = meta.info.hash.v1.unwrap();
    let mut v2 = [0u8; 20];
    v2.copy_from_slice(&meta.info.hash.v2.unwrap()[..20]);
    let seeder = spawn_seeder(&torrent, &data, "127.0.0.34", &[]);
    let answer = |ours: Handshake| -> Handshake {
        let mut s = TcpStream::connect(seeder.addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        s.write_all(&ours.encode()).unwrap();
        let mut buf = [0u8; Handshake::LEN];
        s.read_exact(&mut buf).unwrap();
        Handshake::parse(&buf).unwrap().unwrap()
    };
    let id = *b"-XX0001-v2wiretest00";
    let plain = answer(Handshake::new(v1, id));
    assert_eq!(plain.info_hash, v1);
    assert!(plain.supports_v2(), "we announce v2 for a hybrid torrent");
    assert_eq!(answer(Handshake::new(v1, id).with_v2(true)).info_hash, v2);
    assert_eq!(answer(Handshake::new(v2, id)).info_hash, v2);
    let mut seeder = seeder;
    let _ = seeder.child.kill();
    let _ = seeder.child.wait();
}

/// Both ends ringseed: the magnet fetch's hash requests answered by the engine's trees.
#[test]
fn ringseed_downloads_a_pure_v2_magnet_from_ringseed() {
    let (dir, data) = payload();
    let torrent = dir.path().join("rs2.torrent");
    let meta = create_torrent(
        &data.join("v2data"),
        &torrent,
        &["--format", "v2", "--piece-kib", "16", "--no-date"],
    );
    let mut seeder = spawn_seeder(&torrent, &data, "127.0.0.38", &[]);
    let out = dir.path().join("rs-got");
    ringseed_download(&magnet(&meta, seeder.addr), &out, seeder.addr);
    let _ = seeder.child.kill();
    let _ = seeder.child.wait();
    assert_same_files(&meta, &data, &out);
    assert_eq!(kept_torrent(&out).info.piece_layers, meta.info.piece_layers);
}

//! `ringseed run` downloads what it does not have: a torrent added over the API whose data is
//! missing is fetched from a seeder it finds through a real tracker (opentracker), killed with
//! SIGKILL half-way, restarted, and finished without fetching again what it had verified; then
//! it seeds in place. A magnet added over the API gets its metadata from peers, downloads in the
//! incomplete directory and moves to its data directory once complete; one still waiting for its
//! metadata survives a SIGKILL.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::http::local as http;
use common::node::RunNode;
use common::opentracker::OpenTracker;
use common::{create_torrent, pattern, spawn_seeder_with};
use serde_json::Value;

const PIECE: u64 = 256 << 10;
const SIZE: usize = 24 << 20;

fn torrent(node: &RunNode) -> Value {
    let (status, body) = http(node.api, "GET", "/api/v1/torrents", "");
    assert_eq!(status, 200, "{body}");
    let list: Value = serde_json::from_str(&body).unwrap();
    list[0].clone()
}

fn wait_for(node: &RunNode, what: &str, secs: u64, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let t = torrent(node);
        if done(&t) {
            return t;
        }
        assert!(Instant::now() < deadline, "waiting for {what}: {t:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_torrent_without_data_downloads_through_a_tracker_survives_kill_9_and_seeds() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let payload = pattern(SIZE, 42);
    std::fs::write(src.join("big.bin"), &payload).unwrap();
    let bare = dir.path().join("bare.torrent");
    let meta = create_torrent(
        &src.join("big.bin"),
        &bare,
        &["--piece-kib", "256", "--no-date"],
    );
    let tracker = OpenTracker::start(&[meta.info.hash.wire_id()]);
    let t = dir.path().join("big.torrent");
    create_torrent(
        &src.join("big.bin"),
        &t,
        &["--piece-kib", "256", "--no-date", "-t", &tracker.http()],
    );
    // A seeder held to 4 MiB/s, so the download takes seconds and the kill lands mid-way.
    let seed_cfg = dir.path().join("seeder.toml");
    std::fs::write(&seed_cfg, "[engine]\nupload_rate_limit_kib = 4096\n").unwrap();
    let mut seeder = spawn_seeder_with(
        &t,
        &src,
        "127.0.0.1",
        &[],
        &["--config".as_ref(), seed_cfg.as_os_str()],
    );
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let cfg = node_config(dir.path(), &data, "");
    let node = RunNode::start(&cfg);
    let body = serde_json::json!({"path": t}).to_string();
    let (status, answer) = http(node.api, "POST", "/api/v1/torrents", &body);
    assert!(status == 200 || status == 201, "{status} {answer}");
    let half = wait_for(&node, "half the data", 60, |t| {
        t["progress"].as_f64().unwrap_or(0.0) >= 0.4
    });
    assert_eq!(half["state"], "downloading", "{half:#}");
    assert!(half["download_rate"].as_f64().unwrap() > 0.0);
    // SIGKILL: no chance to save anything more.
    node.kill9();

    let node = RunNode::start(&cfg);
    let resumed = torrent(&node);
    assert_eq!(resumed["resumed"], true, "{resumed:#}");
    let had = resumed["progress"].as_f64().unwrap();
    assert!(
        had >= 0.3,
        "the saved bitfield survived the kill: {resumed:#}"
    );
    let done = wait_for(&node, "completion", 60, |t| t["state"] == "seeding");
    assert_eq!(done["progress"], 1.0);
    assert_eq!(std::fs::read(data.join("big.bin")).unwrap(), payload);
    // Only what was missing came again, plus the pieces verified in the last second before the
    // kill (saved once a second) and the ones in flight.
    let missing = ((1.0 - had) * SIZE as f64) as u64;
    let fetched = done["downloaded"].as_u64().unwrap();
    assert!(
        fetched <= missing + 8 * PIECE,
        "fetched {fetched} after the restart, {missing} were missing"
    );
    assert_eq!(done["seeding_s"].as_u64().unwrap_or(0), 0, "{done:#}");
    // Each save of the bitfield came after an fdatasync of the data written since the last.
    assert!(
        node.metric("ringseed_resume_syncs_total") >= 1.0,
        "the download's saves synced its data first"
    );
    assert_eq!(
        node.metric("ringseed_errors_total{reason=\"data_sync\"}"),
        0.0
    );
    let _ = seeder.child.kill();
    let _ = seeder.child.wait();
}

/// A magnet added over the API fetches its metadata, then its data into the incomplete
/// directory, which then moves to the data directory: renamed on one file system, copied (on
/// the mover thread, the torrent `moving` meanwhile) when the incomplete directory is on
/// another (/dev/shm).
#[test]
fn a_magnet_added_over_the_api_fetches_its_metadata_then_its_data() {
    let shm = tempfile::tempdir_in("/dev/shm").expect("/dev/shm (tmpfs) is needed");
    for across in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let incomplete = if across {
            shm.path().join("incomplete")
        } else {
            dir.path().join("incomplete")
        };
        magnet_then_data(dir.path(), &incomplete);
    }
}

fn magnet_then_data(dir: &Path, incomplete: &Path) {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let payload = pattern(3 << 20, 7);
    std::fs::write(src.join("m.bin"), &payload).unwrap();
    let t = dir.join("m.torrent");
    let meta = create_torrent(&src.join("m.bin"), &t, &["--piece-kib", "64"]);
    let seeder = spawn_seeder_with(&t, &src, "127.0.0.1", &[], &[]);
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let extra = format!("incomplete_dir = {:?}\n", incomplete.display().to_string());
    let cfg = node_config(dir, &data, &extra);
    let node = RunNode::start(&cfg);
    let hash = ringseed::metainfo::hex(&meta.info.hash.wire_id());
    let magnet = format!("magnet:?xt=urn:btih:{hash}&dn=m.bin&x.pe={}", seeder.addr);
    let body = serde_json::json!({ "magnet": magnet }).to_string();
    let (status, answer) = http(node.api, "POST", "/api/v1/torrents", &body);
    assert_eq!(status, 201, "{answer}");
    let added: Value = serde_json::from_str(&answer).unwrap();
    assert!(
        added["state"] == "metadata" || added["state"] == "downloading",
        "{added:#}"
    );
    let done = wait_for(&node, "the magnet's data", 60, |t| t["state"] == "seeding");
    assert_eq!(done["info_hash"], hash.as_str());
    // Downloaded in the incomplete directory, then moved to the data directory.
    assert_eq!(std::fs::read(data.join("m.bin")).unwrap(), payload);
    assert!(!incomplete.join("m.bin").exists());
    assert_eq!(done["data_dir"], data.display().to_string());
    assert_eq!(done["verified_pieces"], done["pieces"], "{done:#}");
    // The state gets its new place, and no move noted any more (a restart would look for
    // it); the save follows the completion by a tick at most.
    let place = || {
        let c = ringseed::db::open_read_only(&dir.join("state/ringseed.db")).unwrap();
        let rec = ringseed::state::get(&c, &meta.info.hash.wire_id())
            .unwrap()
            .expect("its record");
        (rec.data_dir, rec.download_dir, rec.moving_to)
    };
    let saved = (data.display().to_string(), None, None);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while place() != saved {
        assert!(std::time::Instant::now() < deadline, "saved: {:?}", place());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (status, _) = http(node.api, "POST", "/api/v1/torrents", &body);
    assert_eq!(status, 409, "the same magnet twice");
    // It seeds from the data directory: another node fetches it from this one.
    let peer = node.peer.expect("the node's peer listener");
    let other = dir.join("other");
    std::fs::create_dir_all(&other).unwrap();
    common::run_ok(
        common::ringseed()
            .arg("download")
            .arg(&t)
            .arg("--peer")
            .arg(peer.to_string())
            .arg("--data")
            .arg(&other)
            .args(["--no-trackers", "--stall-timeout", "30", "--metrics", ""]),
    );
    assert_eq!(std::fs::read(other.join("m.bin")).unwrap(), payload);
    let mut seeder = seeder;
    let _ = seeder.child.kill();
    let _ = seeder.child.wait();
}

fn list(node: &RunNode) -> Vec<Value> {
    let (status, body) = http(node.api, "GET", "/api/v1/torrents", "");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// The magnets the node's state holds (read beside the running node: the database is WAL).
fn saved_magnets(dir: &Path) -> Vec<String> {
    let c = ringseed::db::open_read_only(&dir.join("state/ringseed.db")).unwrap();
    ringseed::state::load_magnets(&c)
        .unwrap()
        .into_iter()
        .map(|m| ringseed::metainfo::hex(&m.info_hash))
        .collect()
}

/// A magnet added over the API is in the state before the API answers: killed with SIGKILL
/// right after, the node comes back with it still waiting for its metadata (its only peer is
/// not running), with the save path it was added with. A libtorrent seeder given to it through
/// `ctl peers --add` then serves the metadata and the data, and the torrent replaces the magnet
/// in the state. A magnet deleted before the kill does not come back.
#[test]
fn a_magnet_waiting_for_metadata_survives_kill_9_and_a_deleted_one_stays_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let payload = pattern(3 << 20, 9);
    std::fs::write(src.join("m.bin"), &payload).unwrap();
    let t = dir.path().join("m.torrent");
    let meta = create_torrent(&src.join("m.bin"), &t, &["--piece-kib", "64"]);
    let hash = ringseed::metainfo::hex(&meta.info.hash.wire_id());
    // Nothing listens there: every dial is refused.
    let dead = common::opentracker::free_port();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let cfg = node_config(dir.path(), &data, "");
    let node = RunNode::start(&cfg);
    let add = |node: &RunNode, magnet: String, save_path: &str| {
        let body = serde_json::json!({ "magnet": magnet, "save_path": save_path }).to_string();
        let (status, answer) = http(node.api, "POST", "/api/v1/torrents", &body);
        assert_eq!(status, 201, "{answer}");
    };
    add(
        &node,
        format!("magnet:?xt=urn:btih:{hash}&dn=m.bin&x.pe=127.0.0.1:{dead}"),
        "kept",
    );
    let other = "ab".repeat(20);
    add(
        &node,
        format!("magnet:?xt=urn:btih:{other}&dn=gone&x.pe=127.0.0.1:{dead}"),
        "gone",
    );
    let (status, answer) = http(node.api, "DELETE", &format!("/api/v1/torrents/{other}"), "");
    assert_eq!(status, 200, "{answer}");
    node.kill9();
    assert_eq!(saved_magnets(dir.path()), vec![hash.clone()]);

    let node = RunNode::start(&cfg);
    let waiting = list(&node);
    assert_eq!(
        waiting.len(),
        1,
        "the deleted magnet stays deleted: {waiting:#?}"
    );
    assert_eq!(waiting[0]["info_hash"], hash.as_str());
    assert_eq!(waiting[0]["name"], "m.bin");
    assert_eq!(waiting[0]["state"], "metadata", "{waiting:#?}");
    // Its only peer refused; the magnet keeps waiting for others.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(torrent(&node)["state"], "metadata");

    let seeder = common::spawn_lt_seeder(&t, &src, "127.0.0.1", 0);
    let api = format!("http://{}", node.api);
    let answer = common::ringseed_ok([
        "ctl",
        "--api",
        &api,
        "--json",
        "peers",
        &hash,
        "--add",
        &seeder.addr.to_string(),
    ]);
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["info_hash"], hash.as_str(), "{answer:#}");
    let done = wait_for(&node, "the magnet's data", 60, |t| t["state"] == "seeding");
    assert_eq!(done["data_dir"], data.join("kept").display().to_string());
    assert_eq!(std::fs::read(data.join("kept/m.bin")).unwrap(), payload);
    assert!(
        saved_magnets(dir.path()).is_empty(),
        "the torrent replaced the magnet in the state"
    );
    node.kill9();

    // Back as the torrent it became, complete, without fetching anything.
    let node = RunNode::start(&cfg);
    let back = list(&node);
    assert_eq!(back.len(), 1, "{back:#?}");
    assert_eq!(back[0]["info_hash"], hash.as_str());
    assert_eq!(back[0]["state"], "seeding", "{back:#?}");
    assert_eq!(back[0]["resumed"], true);
    drop(seeder);
}

/// Writes a node config with `data` as its data directory and `extra` keys of `[torrents]`.
fn node_config(dir: &Path, data: &Path, extra: &str) -> std::path::PathBuf {
    let cfg = dir.join("node.toml");
    std::fs::write(
        &cfg,
        format!(
            "[engine]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n\
             [control]\nlisten = \"127.0.0.1:0\"\nno_token_from = [\"127.0.0.1/32\"]\n\
             [state]\ndir = {:?}\n\
             [torrents]\ndata_dir = {:?}\nwatch_interval_s = 0\n{extra}",
            dir.join("state").display().to_string(),
            data.display().to_string()
        ),
    )
    .unwrap();
    cfg
}

#[test]
fn a_full_disk_stops_that_download_with_a_clear_error_and_the_others_finish() {
    full_disk("buffered");
}

/// The same with `O_DIRECT` writes (tmpfs takes them since Linux 6.6; an older one refuses
/// them and the node writes through the page cache, which runs out of space the same way).
#[test]
fn a_full_disk_stops_a_direct_download_with_a_clear_error_too() {
    full_disk("direct");
}

fn full_disk(writes: &str) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let (big, small) = (pattern(4 << 20, 11), pattern(1 << 20, 12));
    std::fs::write(src.join("big.bin"), &big).unwrap();
    std::fs::write(src.join("small.bin"), &small).unwrap();
    let tb = dir.path().join("big.torrent");
    let ts = dir.path().join("small.torrent");
    let mb = create_torrent(&src.join("big.bin"), &tb, &["--piece-kib", "64"]);
    let ms = create_torrent(&src.join("small.bin"), &ts, &["--piece-kib", "64"]);
    let sb = spawn_seeder_with(&tb, &src, "127.0.0.1", &[], &[]);
    let ss = spawn_seeder_with(&ts, &src, "127.0.0.1", &[], &[]);
    let data = dir.path().join("data");
    let tiny = data.join("tiny");
    std::fs::create_dir_all(&tiny).unwrap();
    let cfg = node_config(dir.path(), &data, "");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "[engine]\n",
        &format!("[engine]\ndownload_writes = \"{writes}\"\n"),
    );
    std::fs::write(&cfg, text).unwrap();
    // The node runs in its own user and mount namespaces, where `data/tiny` is a 1 MiB tmpfs:
    // the 4 MiB download there runs out of space (no root needed, nothing mounted outside).
    let script = format!(
        "mount -t tmpfs -o size=1m tmpfs {:?} && exec {:?} --config {:?} run --stats-every 0",
        tiny.display().to_string(),
        env!("CARGO_BIN_EXE_ringseed"),
        cfg.display().to_string()
    );
    // Needs user namespaces and tmpfs: the node exits early without them.
    let mut unshare = std::process::Command::new("unshare");
    unshare
        .args(["-r", "-m", "sh", "-c", &script])
        .stderr(Stdio::null());
    let node = RunNode::spawn(unshare);
    let magnet = |m: &ringseed::metainfo::Metainfo, peer: SocketAddr| {
        format!(
            "magnet:?xt=urn:btih:{}&x.pe={peer}",
            ringseed::metainfo::hex(&m.info.hash.wire_id())
        )
    };
    let add = |body: Value| {
        let (status, answer) = http(node.api, "POST", "/api/v1/torrents", &body.to_string());
        assert_eq!(status, 201, "{answer}");
    };
    add(serde_json::json!({"magnet": magnet(&mb, sb.addr), "save_path": "tiny"}));
    add(serde_json::json!({"magnet": magnet(&ms, ss.addr)}));
    let deadline = Instant::now() + Duration::from_secs(60);
    let (failed, done) = loop {
        let (_, body) = http(node.api, "GET", "/api/v1/torrents", "");
        let list: Vec<Value> = serde_json::from_str(&body).unwrap();
        let find = |name: &str| list.iter().find(|t| t["name"] == name).cloned();
        if let (Some(b), Some(s)) = (find("big.bin"), find("small.bin"))
            && b["state"] == "error"
            && s["state"] == "seeding"
        {
            break (b, s);
        }
        assert!(Instant::now() < deadline, "{list:#?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let err = failed["error"].as_str().unwrap();
    assert!(err.contains("No space left on device"), "{err}");
    assert!(err.contains("big.bin"), "the message names the file: {err}");
    assert_eq!(done["progress"], 1.0);
    assert_eq!(std::fs::read(data.join("small.bin")).unwrap(), small);
    drop(node);
    for mut s in [sb, ss] {
        let _ = s.child.kill();
        let _ = s.child.wait();
    }
}

//! `ringseed run` as a service: the real binary with a config file, torrents added over the
//! control API, libtorrent downloading one, the totals in the API and /metrics; a restart that
//! seeds from the resume state without hashing (the API's and /metrics' check counters say so);
//! a file changed on disk rechecks that torrent only; ratio limits; bad requests change nothing.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::http::request as http;
use common::node::RunNode;
use common::{Payload, create_torrent, lt_tool, ringseed, run_ok, signal};
use serde_json::{Value, json};

const TOKEN: &str = "t0ken-for-tests";

fn write_config(dir: &Path, data: &Path, extra: &str) -> PathBuf {
    let cfg = dir.join("ringseed.toml");
    std::fs::write(
        &cfg,
        format!(
            "[engine]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n\
             [trackers]\nenabled = false\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n\
             [control]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\nno_token_from = [\"127.0.0.1/32\"]\n\
             [state]\ndir = {:?}\n\
             [torrents]\ndata_dir = {:?}\nwatch_interval_s = 0\n{extra}",
            dir.join("state").display().to_string(),
            data.display().to_string(),
        ),
    )
    .unwrap();
    cfg
}

fn get_json(node: &RunNode, path: &str) -> Value {
    let (status, body) = http(node.api, "127.0.0.1", "GET", path, "", None);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn ctl(node: &RunNode, args: &[&str]) -> Value {
    let api = format!("http://{}", node.api);
    let out = run_ok(ringseed().args(["ctl", "--api", &api, "--json"]).args(args));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn scrape(node: &RunNode) -> String {
    http(
        node.metrics.unwrap(),
        "127.0.0.1",
        "GET",
        "/metrics",
        "",
        None,
    )
    .1
}

fn series(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no series {name} in:\n{text}"))
}

/// Waits (bounded) until `done` holds for the torrent list.
fn wait_list(node: &RunNode, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = get_json(node, "/api/v1/torrents");
        let list = list.as_array().unwrap().clone();
        if done(&list) {
            return list;
        }
        assert!(Instant::now() < deadline, "waiting for {what}: {list:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn by_name<'a>(list: &'a [Value], name: &str) -> &'a Value {
    list.iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {list:#?}"))
}

fn all_seeding(list: &[Value]) -> bool {
    list.iter().all(|t| t["state"] != "checking")
}

#[test]
fn add_download_restart_resume_and_recheck_only_what_changed() {
    let p = Payload::new();
    let dir = p.dir.path();
    let single_t = dir.join("single.torrent");
    let multi_t = dir.join("multi.torrent");
    let single = create_torrent(&p.single, &single_t, &["--piece-kib", "64"]);
    create_torrent(&p.multi, &multi_t, &["--piece-kib", "32"]);
    let hash = ringseed::metainfo::hex(&single.info.hash.wire_id());
    let cfg = write_config(dir, p.data_dir(), "");

    // First run: both torrents added over the API (one uploaded by `ctl`, one by path).
    let node = RunNode::start(&cfg);
    let added = ctl(&node, &["add", single_t.to_str().unwrap()]);
    assert_eq!(added["info_hash"], hash.as_str());
    let body = json!({ "path": multi_t }).to_string();
    let (status, answer) = http(
        node.api,
        "127.0.0.1",
        "POST",
        "/api/v1/torrents",
        &body,
        None,
    );
    assert_eq!(status, 201, "{answer}");
    let list = wait_list(&node, "both checked", |l| l.len() == 2 && all_seeding(l));
    for t in &list {
        assert_eq!(t["state"], "seeding", "{t}");
        assert_eq!(t["verified_pieces"], t["pieces"], "{t}");
        assert_eq!(t["checks"], 1);
    }

    // libtorrent downloads the single-file torrent, byte-perfect.
    let dl = tempfile::tempdir().unwrap();
    let out = lt_tool(&[
        "download",
        single_t.to_str().unwrap(),
        dl.path().to_str().unwrap(),
        &node.peer.unwrap().to_string(),
        "60",
    ]);
    let r: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(r["done"], true, "{out}");
    assert_eq!(
        std::fs::read(dl.path().join("single.bin")).unwrap(),
        std::fs::read(&p.single).unwrap()
    );
    let size = single.info.layout.total_length;
    let view = ctl(&node, &["show", &hash]);
    let uploaded = view["uploaded"].as_u64().unwrap();
    assert!(uploaded >= size, "{view}");
    let text = scrape(&node);
    assert_eq!(
        series(
            &text,
            &format!("ringseed_torrent_upload_bytes_total{{torrent=\"{hash}\"}}")
        ) as u64,
        uploaded
    );
    assert!(ctl(&node, &["peers", &hash]).is_array());
    // Every series the Grafana dashboard plots is exported.
    let dashboard = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/grafana-dashboard.json"),
    )
    .unwrap();
    let _: Value = serde_json::from_str(&dashboard).unwrap();
    for (at, _) in dashboard.match_indices("ringseed_") {
        let name: String = dashboard[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        assert!(
            text.lines().any(|l| l.starts_with(&name)),
            "the dashboard plots {name}, which /metrics lacks"
        );
    }

    // A ratio limit the torrent has already reached stops it (action "stop" by default).
    ctl(&node, &["limits", &hash, "--ratio", "1"]);
    let list = wait_list(&node, "the ratio limit", |l| {
        by_name(l, "single.bin")["state"] == "paused"
    });
    assert_eq!(by_name(&list, "single.bin")["stopped_by"], "ratio");
    assert_eq!(by_name(&list, "multi")["state"], "seeding");
    // Global limits set through the API (here, by `ctl`) are kept across restarts.
    let g = ctl(
        &node,
        &["limits", "--ratio", "50", "--upload-rate-kib", "4096"],
    );
    assert_eq!(g["in_force"]["upload_rate"], 4096 << 10, "{g}");
    node.stop();

    // Restart: everything resumes from the state, nothing is hashed.
    let node = RunNode::start(&cfg);
    let stats = get_json(&node, "/api/v1/stats");
    assert_eq!(stats["resumed"], 2, "{stats}");
    assert_eq!(stats["checks_new"], 0, "{stats}");
    assert_eq!(stats["checks_changed"], 0, "{stats}");
    let text = scrape(&node);
    assert_eq!(series(&text, "ringseed_torrents_resumed_total"), 2.0);
    assert_eq!(
        series(&text, "ringseed_torrent_checks_total{reason=\"changed\"}"),
        0.0
    );
    let g = get_json(&node, "/api/v1/limits");
    assert_eq!(g["set"]["ratio"], 50.0, "{g}");
    assert_eq!(
        g["in_force"]["torrent_upload_rate"], 0,
        "the config's value: {g}"
    );
    let list = get_json(&node, "/api/v1/torrents");
    let list = list.as_array().unwrap();
    let s = by_name(list, "single.bin");
    assert_eq!(s["state"], "paused", "a limit's stop survives the restart");
    assert_eq!(s["uploaded"].as_u64(), Some(uploaded), "upload total kept");
    assert_eq!(s["limits"]["ratio"], 1.0);
    let m = by_name(list, "multi");
    assert_eq!(
        (m["state"].as_str(), m["checks"].as_u64()),
        (Some("seeding"), Some(0))
    );
    assert_eq!(m["verified_pieces"], m["pieces"]);
    node.stop();

    // One file of the multi-file torrent changes on disk: only that torrent is hashed again,
    // and the piece holding the changed byte is no longer served.
    let changed = p.multi.join("sub/b.bin");
    let mut bytes = std::fs::read(&changed).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&changed, &bytes).unwrap();
    let f = std::fs::File::options().write(true).open(&changed).unwrap();
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(10))
        .unwrap();
    let node = RunNode::start(&cfg);
    let list = wait_list(&node, "the recheck", all_seeding);
    let stats = get_json(&node, "/api/v1/stats");
    assert_eq!(stats["resumed"], 1, "{stats}");
    assert_eq!(stats["checks_changed"], 1, "{stats}");
    assert_eq!(stats["checks_new"], 0, "{stats}");
    let m = by_name(&list, "multi");
    assert_eq!(m["checks"], 1);
    assert_eq!(m["resumed"], false);
    assert_eq!(
        m["verified_pieces"].as_u64().unwrap() + 1,
        m["pieces"].as_u64().unwrap(),
        "{m}"
    );
    let s = by_name(&list, "single.bin");
    assert_eq!(
        (s["checks"].as_u64(), s["resumed"].as_bool()),
        (Some(0), Some(true))
    );
    let text = scrape(&node);
    assert_eq!(
        series(&text, "ringseed_torrent_checks_total{reason=\"changed\"}"),
        1.0
    );
    node.stop();
}

#[test]
fn bad_requests_get_clear_errors_and_change_nothing() {
    let p = Payload::new();
    let dir = p.dir.path();
    let single_t = dir.join("single.torrent");
    let single = create_torrent(&p.single, &single_t, &[]);
    let hash = ringseed::metainfo::hex(&single.info.hash.wire_id());
    let watch = dir.join("watch");
    std::fs::create_dir_all(&watch).unwrap();
    let cfg = write_config(
        dir,
        p.data_dir(),
        &format!(
            "dir = {:?}\nwatch_interval_s = 1\n",
            watch.display().to_string()
        ),
    );
    // `watch_interval_s` twice is a config error that names the key, and nothing starts.
    let out = ringseed()
        .arg("--config")
        .arg(&cfg)
        .args(["run"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("watch_interval_s"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dir.join("state").exists(), "a bad config creates no state");
    // A token file that cannot be read is named, and nothing starts either.
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("watch_interval_s = 0\n", "");
    let no_file = text.replace(
        &format!("token = \"{TOKEN}\"\n"),
        "token_file = \"/nonexistent/token\"\n",
    );
    std::fs::write(&cfg, no_file).unwrap();
    let out = ringseed()
        .arg("--config")
        .arg(&cfg)
        .arg("run")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/token"));
    assert!(!dir.join("state").exists());
    std::fs::write(&cfg, text).unwrap();

    let node = RunNode::start(&cfg);
    let b64 = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(&single_t).unwrap())
    };
    let add = json!({ "torrent": b64 }).to_string();
    let (status, body) = http(
        node.api,
        "127.0.0.1",
        "POST",
        "/api/v1/torrents",
        &add,
        None,
    );
    assert_eq!(status, 201, "{body}");
    wait_list(&node, "the check", |l| l.len() == 1 && all_seeding(l));
    // A peer that completed its handshake is listed with its address.
    let mut peer = std::net::TcpStream::connect(node.peer.unwrap()).unwrap();
    let mut hs = b"\x13BitTorrent protocol".to_vec();
    hs.extend_from_slice(&[0; 8]);
    hs.extend_from_slice(&single.info.hash.wire_id());
    hs.extend_from_slice(b"-TS0001-000000000001");
    peer.write_all(&hs).unwrap();
    peer.read_exact(&mut [0u8; 68]).unwrap();
    let me = peer.local_addr().unwrap().to_string();
    let peers = get_json(&node, &format!("/api/v1/torrents/{hash}/peers"));
    assert!(
        peers
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["addr"] == me.as_str()),
        "{me} not in {peers}"
    );
    drop(peer);
    let before = get_json(&node, "/api/v1/torrents");
    let other = ringseed::metainfo::hex(&[0x11; 20]);

    let cases: Vec<(&str, String, String, u16, &str)> = vec![
        (
            "POST",
            "/api/v1/torrents".into(),
            "{\"torrent\": ".into(),
            400,
            "malformed JSON",
        ),
        (
            "POST",
            "/api/v1/torrents".into(),
            "[1]".into(),
            400,
            "JSON object",
        ),
        (
            "POST",
            "/api/v1/torrents".into(),
            json!({"torrent": "!!"}).to_string(),
            400,
            "base64",
        ),
        (
            "POST",
            "/api/v1/torrents".into(),
            json!({"torrent": "aGVsbG8="}).to_string(),
            400,
            "not a valid .torrent",
        ),
        (
            "POST",
            "/api/v1/torrents".into(),
            add.clone(),
            409,
            "already added",
        ),
        (
            "POST",
            "/api/v1/torrents".into(),
            json!({"path": single_t, "save_path": "../outside"}).to_string(),
            400,
            "outside the data directory",
        ),
        (
            "POST",
            "/api/v1/torrents".into(),
            json!({"path": single_t, "save_path": "/etc"}).to_string(),
            400,
            "outside the data directory",
        ),
        (
            "POST",
            "/api/v1/torrents".into(),
            json!({"path": "/dev/null"}).to_string(),
            400,
            "not a regular file",
        ),
        (
            "POST",
            "/api/v1/torrents".into(),
            json!({"magnet": "magnet:?xt=urn:btih:not-a-hash"}).to_string(),
            400,
            "magnet link",
        ),
        (
            "POST",
            "/api/v1/torrents".into(),
            json!({"torrent": b64, "colour": 1}).to_string(),
            400,
            "unknown key",
        ),
        (
            "PUT",
            "/api/v1/limits".into(),
            json!({"ratio": "lots"}).to_string(),
            400,
            "number",
        ),
        (
            "GET",
            format!("/api/v1/torrents/{other}"),
            String::new(),
            404,
            "no torrent",
        ),
        (
            "POST",
            format!("/api/v1/torrents/{other}/pause"),
            String::new(),
            404,
            "no torrent",
        ),
        (
            "DELETE",
            format!("/api/v1/torrents/{other}"),
            String::new(),
            404,
            "no torrent",
        ),
        (
            "GET",
            "/api/v1/torrents/xyz".into(),
            String::new(),
            400,
            "not an info-hash",
        ),
        (
            "POST",
            format!("/api/v1/torrents/{hash}/explode"),
            String::new(),
            400,
            "unknown action",
        ),
        (
            "DELETE",
            format!("/api/v1/torrents/{hash}?delete_data=maybe"),
            String::new(),
            400,
            "unknown query",
        ),
        (
            "PUT",
            format!("/api/v1/torrents/{hash}/limits"),
            json!({"ratio": -1}).to_string(),
            400,
            "allowed",
        ),
        (
            "PUT",
            format!("/api/v1/torrents/{hash}/limits"),
            json!({"ratio": 2, "seed_time_min": "x"}).to_string(),
            400,
            "number",
        ),
    ];
    for (method, path, body, want, says) in &cases {
        let (status, answer) = http(node.api, "127.0.0.1", method, path, body, None);
        assert_eq!(status, *want, "{method} {path} {body}: {answer}");
        let v: Value = serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer}"));
        let msg = v["error"].as_str().unwrap_or_default();
        assert!(
            msg.contains(says),
            "{method} {path}: {msg:?} lacks {says:?}"
        );
    }
    // 127.0.0.2 is outside `no_token_from` (only 127.0.0.1/32 here): a token is required, a
    // wrong one is refused, and neither changes anything.
    let del = format!("/api/v1/torrents/{hash}?delete_data=true");
    for token in [None, Some("wrong")] {
        let (status, answer) = http(node.api, "127.0.0.2", "DELETE", &del, "", token);
        assert_eq!(status, 401, "{answer}");
        assert!(answer.contains("token"), "{answer}");
    }
    let (status, _) = http(
        node.api,
        "127.0.0.2",
        "GET",
        "/api/v1/stats",
        "",
        Some(TOKEN),
    );
    assert_eq!(status, 200);
    assert!(scrape(&node).contains("ringseed_errors_total{reason=\"api_unauthorized\"} 2"));

    let after = get_json(&node, "/api/v1/torrents");
    let strip = |v: &Value| {
        let mut v = v.clone();
        for t in v.as_array_mut().unwrap() {
            // Not changed by requests: the clock, and the handshake peer above going away.
            t.as_object_mut().unwrap().remove("seeding_s");
            t.as_object_mut().unwrap().remove("peers");
        }
        v
    };
    assert_eq!(
        strip(&before),
        strip(&after),
        "bad requests changed nothing"
    );
    assert!(p.single.exists(), "its data is still there");

    // The watch directory is polled: a .torrent dropped there is picked up without a signal.
    // A file caught half-written is tried again once it changes.
    std::fs::copy(dir.join("single.torrent"), watch.join("dup.torrent")).unwrap();
    let multi_t = dir.join("multi.torrent");
    create_torrent(&p.multi, &multi_t, &[]);
    let whole = std::fs::read(&multi_t).unwrap();
    std::fs::write(watch.join("multi.torrent"), &whole[..whole.len() / 2]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !scrape(&node).contains("ringseed_errors_total{reason=\"watch_add\"} 1") {
        assert!(
            Instant::now() < deadline,
            "the half-written file was not tried"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let f = std::fs::File::create(watch.join("multi.torrent")).unwrap();
    (&f).write_all(&whole).unwrap();
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(10))
        .unwrap();
    drop(f);
    wait_list(&node, "the watch directory", |l| {
        l.len() == 2 && all_seeding(l)
    });

    // Removing with delete_data (from 127.0.0.2 with the token) deletes exactly its files.
    let (status, answer) = http(node.api, "127.0.0.2", "DELETE", &del, "", Some(TOKEN));
    assert_eq!(status, 200, "{answer}");
    assert!(!p.single.exists());
    assert!(p.multi.join("sub/b.bin").exists());
    let list = get_json(&node, "/api/v1/torrents");
    assert_eq!(list.as_array().unwrap().len(), 1);
    let multi = list[0]["info_hash"].as_str().unwrap().to_string();

    // SIGHUP switches the limit action to "remove"; a 1 s seed-time limit then removes the
    // torrent (never its data), and the watched file does not bring it back.
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("[torrents]\n", "[torrents]\nlimit_action = \"remove\"\n");
    std::fs::write(&cfg, text).unwrap();
    signal(&node.child, nix::sys::signal::Signal::SIGHUP);
    let limits = format!("/api/v1/torrents/{multi}/limits");
    let body = json!({ "seed_time_min": 0.02 }).to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Until the reload has happened, the limit stops the torrent instead: resume it.
        let (status, answer) = http(node.api, "127.0.0.1", "PUT", &limits, &body, None);
        if status == 404 {
            break;
        }
        assert_eq!(status, 200, "{answer}");
        if answer.contains("\"stopped_by\":\"seed_time\"") {
            let path = format!("/api/v1/torrents/{multi}/resume");
            http(node.api, "127.0.0.1", "POST", &path, "", None);
        }
        assert!(Instant::now() < deadline, "not removed: {answer}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // One more watch interval (1 s) passes without the file coming back.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(get_json(&node, "/api/v1/torrents"), json!([]));
    assert!(p.multi.join("sub/b.bin").exists());
    assert!(series(&scrape(&node), "ringseed_limits_reached_total") >= 1.0);
    node.stop();
}

//! Organisation (issue 14) on real nodes: categories and tags survive a restart and refuse bad
//! input without changing anything; share limits (ratio, seeding time, inactive seeding time)
//! take the configured action (stop, remove, remove with data); queueing holds a second
//! download back (queued: no peers, no announce, through a restart) until the first finishes,
//! force start skips the queue and top/bottom reorder it. The downloads are real: a ringseed
//! node seeds, another downloads, and a tiny HTTP tracker in the test records who announced.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::http::local as http;
use common::node::RunNode;
use common::{create_torrent, pattern, ringseed, run_ok};
use serde_json::{Value, json};

/// A node config: loopback only, the API open to loopback, `extra` keys of `[torrents]`.
fn node_config(dir: &Path, data: &Path, extra: &str, engine: &str) -> PathBuf {
    std::fs::create_dir_all(data).unwrap();
    let cfg = dir.join("node.toml");
    std::fs::write(
        &cfg,
        format!(
            "[engine]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n{engine}\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n\
             [control]\nlisten = \"127.0.0.1:0\"\nno_token_from = [\"127.0.0.1/32\"]\n\
             [state]\ndir = {:?}\nsave_interval_s = 1\n\
             [torrents]\ndata_dir = {:?}\nwatch_interval_s = 0\n{extra}",
            dir.join("state").display().to_string(),
            data.display().to_string()
        ),
    )
    .unwrap();
    cfg
}

fn call(node: &RunNode, method: &str, path: &str, body: Value) -> (u16, Value) {
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let (status, answer) = http(node.api, method, path, &body);
    (status, serde_json::from_str(&answer).unwrap_or(Value::Null))
}

fn ok(node: &RunNode, method: &str, path: &str, body: Value) -> Value {
    let (status, v) = call(node, method, path, body);
    assert!(
        (200..300).contains(&status),
        "{method} {path}: {status} {v}"
    );
    v
}

fn torrent(node: &RunNode, hash: &str) -> Value {
    ok(
        node,
        "GET",
        &format!("/api/v1/torrents/{hash}"),
        Value::Null,
    )
}

fn list(node: &RunNode) -> Vec<Value> {
    ok(node, "GET", "/api/v1/torrents", Value::Null)
        .as_array()
        .unwrap()
        .clone()
}

fn wait<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn hex(meta: &ringseed::metainfo::Metainfo) -> String {
    ringseed::metainfo::hex(&meta.info.hash.wire_id())
}

/// Adds `t` (its data already in place) without a check.
fn add_seeding(node: &RunNode, t: &Path, extra: Value) -> Value {
    let mut body = json!({ "path": t, "skip_check": true });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let (status, v) = call(node, "POST", "/api/v1/torrents", body);
    assert_eq!(status, 201, "{v}");
    v
}

#[test]
fn categories_and_tags_persist_and_bad_input_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = node_config(dir.path(), &data, "", "");
    let node = RunNode::start(&cfg);

    // Categories: a relative save path is under the data root, an absolute one inside it.
    ok(
        &node,
        "POST",
        "/api/v1/categories",
        json!({"name": "tv", "save_path": "tv"}),
    );
    let inside = data.join("films");
    ok(
        &node,
        "POST",
        "/api/v1/categories",
        json!({"name": "films/hd", "save_path": inside}),
    );
    ok(
        &node,
        "POST",
        "/api/v1/categories",
        json!({"name": "misc", "save_path": ""}),
    );
    let before = ok(&node, "GET", "/api/v1/categories", Value::Null);
    assert_eq!(before.as_array().unwrap().len(), 3, "{before}");
    // Refused, each changing nothing: outside the data root, through `..`, a bad name, an
    // existing name, an unknown one to edit, a too long name.
    let refused = [
        (json!({"name": "out", "save_path": "/tmp"}), 400),
        (json!({"name": "up", "save_path": "../x"}), 400),
        (json!({"name": "bad//name", "save_path": ""}), 400),
        (json!({"name": "/lead", "save_path": ""}), 400),
        (json!({"name": "", "save_path": ""}), 400),
        (json!({"name": "x".repeat(256), "save_path": ""}), 400),
        (json!({"name": "tv", "save_path": "other"}), 409),
    ];
    for (body, want) in refused {
        let (status, v) = call(&node, "POST", "/api/v1/categories", body.clone());
        assert_eq!(status, want, "{body}: {v}");
    }
    let (status, _) = call(
        &node,
        "PUT",
        "/api/v1/categories/nosuch",
        json!({"save_path": ""}),
    );
    assert_eq!(status, 409, "editing an unknown category");
    let (status, _) = call(
        &node,
        "PUT",
        "/api/v1/categories/tv",
        json!({"save_path": "/etc"}),
    );
    assert_eq!(status, 400, "an edit out of the data root");
    assert_eq!(ok(&node, "GET", "/api/v1/categories", Value::Null), before);

    // A torrent added with a category and no save path goes to the category's save path.
    std::fs::create_dir_all(data.join("tv")).unwrap();
    std::fs::write(data.join("tv/show.bin"), pattern(300_000, 1)).unwrap();
    let t = dir.path().join("show.torrent");
    let meta = create_torrent(&data.join("tv/show.bin"), &t, &["--piece-kib", "64"]);
    let hash = hex(&meta);
    // An unknown category is refused (409, as qBittorrent's setCategory) and adds nothing.
    let (status, v) = call(
        &node,
        "POST",
        "/api/v1/torrents",
        json!({"path": t, "skip_check": true, "category": "nosuch"}),
    );
    assert_eq!(status, 409, "{v}");
    assert!(list(&node).is_empty());
    let added = add_seeding(&node, &t, json!({"category": "tv", "tags": ["new", "hd"]}));
    assert_eq!(added["data_dir"], data.join("tv").display().to_string());
    assert_eq!(added["category"], "tv");
    assert_eq!(added["tags"], json!(["new", "hd"]));
    // Tags given with the torrent joined the node's set.
    assert_eq!(
        ok(&node, "GET", "/api/v1/tags", Value::Null),
        json!(["hd", "new"])
    );

    // Tags: create, add (an unknown one is created), remove; bad ones refused.
    ok(&node, "POST", "/api/v1/tags", json!({"tags": ["spare"]}));
    let tags_path = format!("/api/v1/torrents/{hash}/tags");
    let v = ok(
        &node,
        "PUT",
        &tags_path,
        json!({"add": ["fresh"], "remove": ["new"]}),
    );
    assert_eq!(v["tags"], json!(["hd", "fresh"]));
    let tags_before = ok(&node, "GET", "/api/v1/tags", Value::Null);
    let too_many: Vec<String> = (0..=100).map(|i| format!("t{i}")).collect();
    for bad in [
        json!({"add": ["a,b"]}),
        json!({"add": [""]}),
        json!({"add": ["x".repeat(256)]}),
        json!({"add": too_many}),
    ] {
        let (status, v) = call(&node, "PUT", &tags_path, bad.clone());
        assert_eq!(status, 400, "{bad}: {v}");
    }
    let (status, _) = call(
        &node,
        "POST",
        "/api/v1/tags",
        json!({"tags": ["ok", "a,b"]}),
    );
    assert_eq!(status, 400);
    assert_eq!(ok(&node, "GET", "/api/v1/tags", Value::Null), tags_before);
    assert_eq!(torrent(&node, &hash)["tags"], json!(["hd", "fresh"]));
    // Unknown torrents: 404.
    let nobody = "00".repeat(20);
    let (status, _) = call(
        &node,
        "PUT",
        &format!("/api/v1/torrents/{nobody}/tags"),
        json!({"add": ["x"]}),
    );
    assert_eq!(status, 404);

    // Category of a torrent: an unknown one is 409 and changes nothing; a known one is set.
    let cat_path = format!("/api/v1/torrents/{hash}/category");
    let (status, _) = call(&node, "PUT", &cat_path, json!({"category": "nosuch"}));
    assert_eq!(status, 409);
    assert_eq!(torrent(&node, &hash)["category"], "tv");
    ok(&node, "PUT", &cat_path, json!({"category": "films/hd"}));
    // The data stays where it is (no automatic torrent management).
    assert_eq!(
        torrent(&node, &hash)["data_dir"],
        data.join("tv").display().to_string()
    );
    ok(
        &node,
        "PUT",
        "/api/v1/settings",
        json!({"queueing": true, "max_active_uploads": 7}),
    );

    // A restart keeps categories, tags, the torrent's and the settings.
    node.stop();
    let node = RunNode::start(&cfg);
    assert_eq!(ok(&node, "GET", "/api/v1/categories", Value::Null), before);
    assert_eq!(ok(&node, "GET", "/api/v1/tags", Value::Null), tags_before);
    let back = torrent(&node, &hash);
    assert_eq!(back["category"], "films/hd", "{back:#}");
    assert_eq!(back["tags"], json!(["hd", "fresh"]));
    let s = ok(&node, "GET", "/api/v1/settings", Value::Null);
    assert_eq!(s["in_force"]["queueing"], true, "{s}");
    assert_eq!(s["in_force"]["max_active_uploads"], 7, "{s}");

    // Removing a category clears it from its torrents; deleting a tag removes it from them.
    ok(
        &node,
        "DELETE",
        &format!("/api/v1/categories/{}", "films%2Fhd"),
        Value::Null,
    );
    assert_eq!(torrent(&node, &hash)["category"], Value::Null);
    ok(
        &node,
        "POST",
        "/api/v1/tags/delete",
        json!({"tags": ["hd"]}),
    );
    assert_eq!(torrent(&node, &hash)["tags"], json!(["fresh"]));
    assert_eq!(
        ok(&node, "GET", "/api/v1/tags", Value::Null),
        json!(["fresh", "new", "spare"])
    );
    // The same through `ringseed ctl`.
    let api = format!("http://{}", node.api);
    let ctl = |args: &[&str]| -> Value {
        let out = run_ok(ringseed().args(["ctl", "--api", &api, "--json"]).args(args));
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    };
    ctl(&["category-add", "music", "--save-path", "music"]);
    ctl(&["set-category", &hash, "music"]);
    ctl(&["tag", &hash, "--add", "loud", "--remove", "fresh"]);
    let v = ctl(&["show", &hash]);
    assert_eq!(
        (v["category"].clone(), v["tags"].clone()),
        (json!("music"), json!(["loud"]))
    );
    let cats = ctl(&["categories"]);
    assert!(
        cats.as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "music"),
        "{cats}"
    );
    ctl(&["category-remove", "music"]);
    ctl(&["tag", &hash, "--add", "fresh", "--remove", "loud"]);
    ctl(&["tag-delete", "loud"]);
    let s = ctl(&[
        "settings",
        "--max-active-downloads",
        "-1",
        "--limit-action",
        "remove_data",
    ]);
    assert_eq!(s["in_force"]["max_active_downloads"], -1, "{s}");
    assert_eq!(s["in_force"]["limit_action"], "remove_data", "{s}");
    let out = ringseed()
        .args(["ctl", "--api", &api, "queue", &hash, "top"])
        .output()
        .unwrap();
    assert!(out.status.success(), "queueing is on: {out:?}");
    ctl(&["settings", "--queueing", "false"]);
    let out = ringseed()
        .args(["ctl", "--api", &api, "queue", &hash, "top"])
        .output()
        .unwrap();
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("409"),
        "queue moves need queueing: {out:?}"
    );

    node.stop();
    let node = RunNode::start(&cfg);
    let back = torrent(&node, &hash);
    assert_eq!(
        (back["category"].clone(), back["tags"].clone()),
        (Value::Null, json!(["fresh"]))
    );
    let s = ok(&node, "GET", "/api/v1/settings", Value::Null);
    assert_eq!(s["set"]["limit_action"], "remove_data", "{s}");
    assert_eq!(s["set"]["queueing"], false, "{s}");
    assert_eq!(
        ok(&node, "GET", "/api/v1/categories", Value::Null)
            .as_array()
            .unwrap()
            .len(),
        2
    );
    node.stop();
}

#[test]
fn share_limits_stop_remove_and_remove_with_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("cdir")).unwrap();
    let cfg = node_config(dir.path(), &data, "", "");
    let node = RunNode::start(&cfg);
    // A: downloaded by another node until its ratio limit; B: seeding time; C: inactive
    // seeding; D names one of C's files (cross-seeding) and stays.
    let file = |name: &str, len: usize, seed: u64| {
        let p = data.join(name);
        std::fs::write(&p, pattern(len, seed)).unwrap();
        p
    };
    let a_src = file("a.bin", 2 << 20, 1);
    let b_src = file("b.bin", 100_000, 2);
    file("cdir/shared.bin", 100_000, 3);
    let d_t = dir.path().join("d.torrent");
    let d = create_torrent(&data.join("cdir"), &d_t, &["--piece-kib", "16"]);
    file("cdir/own.bin", 100_000, 4);
    let c_t = dir.path().join("c.torrent");
    let c = create_torrent(&data.join("cdir"), &c_t, &["--piece-kib", "32"]);
    let a_t = dir.path().join("a.torrent");
    let a = create_torrent(&a_src, &a_t, &["--piece-kib", "64"]);
    let b_t = dir.path().join("b.torrent");
    let b = create_torrent(&b_src, &b_t, &["--piece-kib", "64"]);
    for t in [&a_t, &b_t, &c_t, &d_t] {
        add_seeding(&node, t, json!({}));
    }
    let (a, b, c, d) = (hex(&a), hex(&b), hex(&c), hex(&d));

    // Stop at ratio 0.5: another node downloads A from this one.
    ok(
        &node,
        "PUT",
        "/api/v1/settings",
        json!({"limit_action": "stop"}),
    );
    ok(
        &node,
        "PUT",
        &format!("/api/v1/torrents/{a}/limits"),
        json!({"ratio": 0.5}),
    );
    let added_at = torrent(&node, &a)["added_at"].as_i64().unwrap();
    // Its activity must be told from its adding: a second apart at least.
    std::thread::sleep(Duration::from_millis(1100));
    let ldir = dir.path().join("leecher");
    let lcfg = node_config(&ldir, &ldir.join("data"), "", "");
    let leecher = RunNode::start(&lcfg);
    let (status, v) = call(&leecher, "POST", "/api/v1/torrents", json!({"path": a_t}));
    assert_eq!(status, 201, "{v}");
    let peer = node.peer.unwrap();
    wait("the leecher's check", 30, || {
        let (status, _) = call(
            &leecher,
            "POST",
            &format!("/api/v1/torrents/{a}/peers"),
            json!({"peers": [peer.to_string()]}),
        );
        (status == 200 && torrent(&leecher, &a)["state"] != "checking").then_some(())
    });
    let stopped = wait("A's ratio limit", 60, || {
        let t = torrent(&node, &a);
        (t["state"] == "paused").then_some(t)
    });
    assert_eq!(stopped["stopped_by"], "ratio", "{stopped:#}");
    assert!(stopped["ratio"].as_f64().unwrap() >= 0.5, "{stopped:#}");
    // Its uploads were payload activity.
    assert!(
        stopped["last_activity"].as_i64().unwrap() > added_at,
        "{stopped:#}"
    );
    assert!(stopped["completed_at"].as_i64().is_some(), "{stopped:#}");
    leecher.kill9();
    // The others are untouched by A's limit.
    for h in [&b, &c, &d] {
        assert_eq!(torrent(&node, h)["state"], "seeding");
    }

    // Remove at a seeding time of 3 s (0.05 min): B goes, its data stays.
    ok(
        &node,
        "PUT",
        "/api/v1/settings",
        json!({"limit_action": "remove"}),
    );
    ok(
        &node,
        "PUT",
        &format!("/api/v1/torrents/{b}/limits"),
        json!({"seed_time_min": 0.05}),
    );
    wait("B's seeding-time limit", 30, || {
        let (status, _) = call(&node, "GET", &format!("/api/v1/torrents/{b}"), Value::Null);
        (status == 404).then_some(())
    });
    assert!(b_src.exists(), "remove keeps the data");

    // Remove with data at 3 s without payload activity: C goes with its own file; the file D
    // names too stays.
    ok(
        &node,
        "PUT",
        "/api/v1/settings",
        json!({"limit_action": "remove_data"}),
    );
    ok(
        &node,
        "PUT",
        &format!("/api/v1/torrents/{c}/limits"),
        json!({"inactive_seed_time_min": 0.05}),
    );
    wait("C's inactive-seeding limit", 30, || {
        let (status, _) = call(&node, "GET", &format!("/api/v1/torrents/{c}"), Value::Null);
        (status == 404).then_some(())
    });
    assert!(!data.join("cdir/own.bin").exists(), "C's own file deleted");
    assert!(
        data.join("cdir/shared.bin").exists(),
        "the file D names is kept"
    );
    assert_eq!(torrent(&node, &d)["state"], "seeding");
    assert_eq!(torrent(&node, &a)["state"], "paused");
    let left: Vec<String> = list(&node)
        .iter()
        .map(|t| t["info_hash"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
    node.stop();
}

/// A minimal HTTP tracker: records the `info_hash` and `port` of every announce, answers with
/// no peers (the test gives them through the API).
struct Tracker {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<(String, u16)>>>,
}

impl Tracker {
    fn start() -> Tracker {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let mut line = String::new();
                let mut r = BufReader::new(&conn);
                if r.read_line(&mut line).is_err() {
                    continue;
                }
                let query = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let mut hash = String::new();
                let mut port = 0;
                for kv in query.split(['?', '&']) {
                    if let Some(v) = kv.strip_prefix("info_hash=") {
                        hash = unescape_hex(v);
                    } else if let Some(v) = kv.strip_prefix("port=") {
                        port = v.parse().unwrap_or(0);
                    }
                }
                eprintln!("TRACKER {} {}", hash, query);
                log.lock().unwrap().push((hash, port));
                let body = b"d8:intervali1800e5:peers0:e";
                let mut w = &conn;
                let _ = write!(
                    w,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = w.write_all(body);
            }
        });
        Tracker { addr, seen }
    }

    fn url(&self) -> String {
        format!("http://{}/announce", self.addr)
    }

    /// Whether a client listening on `port` announced `hash`.
    fn announced(&self, hash: &str, port: u16) -> bool {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .any(|(h, p)| h == hash && *p == port)
    }
}

/// A percent-encoded info-hash as 40 lower-case hex digits.
fn unescape_hex(v: &str) -> String {
    let mut out = Vec::new();
    let b = v.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() + 1 {
            let h = std::str::from_utf8(&b[i + 1..(i + 3).min(b.len())]).unwrap_or("");
            out.push(u8::from_str_radix(h, 16).unwrap_or(0));
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn one_active_download_the_others_wait_queued_force_start_skips_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = Tracker::start();
    // The seeder: a node with the three torrents' data, held to 512 KiB/s so each 3 MiB
    // download takes seconds.
    let sdir = dir.path().join("seeder");
    let sdata = sdir.join("data");
    let scfg = node_config(&sdir, &sdata, "", "upload_rate_limit_kib = 512");
    let mut torrents = Vec::new();
    for (i, name) in ["x.bin", "y.bin", "z.bin"].iter().enumerate() {
        let src = sdata.join(name);
        std::fs::write(&src, pattern(3 << 20, i as u64 + 10)).unwrap();
        let t = dir.path().join(format!("{name}.torrent"));
        let m = create_torrent(
            &src,
            &t,
            &["--piece-kib", "64", "--no-date", "-t", &tracker.url()],
        );
        torrents.push((t, hex(&m)));
    }
    let seeder = RunNode::start(&scfg);
    for (t, _) in &torrents {
        add_seeding(&seeder, t, json!({}));
    }
    let seed_peer = seeder.peer.unwrap().to_string();

    // The leecher: queueing on, one active download.
    let ldir = dir.path().join("leecher");
    let ldata = ldir.join("data");
    let lcfg = node_config(
        &ldir,
        &ldata,
        "queueing = true\nmax_active_downloads = 1\n",
        "",
    );
    let leecher = RunNode::start(&lcfg);
    let port = leecher.peer.unwrap().port();
    let [(xt, x), (yt, y), (zt, z)] = torrents.as_slice() else {
        unreachable!()
    };
    for t in [xt, yt, zt] {
        let (status, v) = call(&leecher, "POST", "/api/v1/torrents", json!({"path": t}));
        assert_eq!(status, 201, "{v}");
    }
    let give_peers = |node: &RunNode, h: &str| {
        ok(
            node,
            "POST",
            &format!("/api/v1/torrents/{h}/peers"),
            json!({"peers": [seed_peer.clone()]}),
        );
    };
    for h in [x, y, z] {
        give_peers(&leecher, h);
    }
    let state = |h: &str| torrent(&leecher, h)["state"].as_str().unwrap().to_string();
    let active = |s: String| s == "downloading" || s == "stalled";
    wait("X downloading, Y and Z queued", 30, || {
        (active(state(x)) && state(y) == "queued" && state(z) == "queued").then_some(())
    });
    let pos = |h: &str| torrent(&leecher, h)["queue_position"].as_i64().unwrap();
    assert_eq!((pos(x), pos(y), pos(z)), (1, 2, 3));
    // Bottom, then top: the order is Z, X, Y, and Z takes the one slot from X.
    ok(
        &leecher,
        "POST",
        &format!("/api/v1/torrents/{y}/queue_bottom"),
        Value::Null,
    );
    assert_eq!((pos(x), pos(z), pos(y)), (1, 2, 3));
    ok(
        &leecher,
        "POST",
        &format!("/api/v1/torrents/{z}/queue_top"),
        Value::Null,
    );
    assert_eq!((pos(z), pos(x), pos(y)), (1, 2, 3));
    wait("Z active, X queued", 10, || {
        (state(z) != "queued" && state(x) == "queued").then_some(())
    });

    // Queued survives a restart: Y still waits, has no peers and never announced.
    leecher.stop();
    let leecher = RunNode::start(&lcfg);
    let port_after = leecher.peer.unwrap().port();
    let state = |h: &str| torrent(&leecher, h)["state"].as_str().unwrap().to_string();
    let pos = |h: &str| torrent(&leecher, h)["queue_position"].as_i64().unwrap();
    assert_eq!((pos(z), pos(x), pos(y)), (1, 2, 3));
    for h in [x, y, z] {
        give_peers(&leecher, h);
    }
    wait("Z downloading again, X and Y queued", 30, || {
        (active(state(z)) && state(x) == "queued" && state(y) == "queued").then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    let queued_y = torrent(&leecher, y);
    assert_eq!(queued_y["state"], "queued", "{queued_y:#}");
    assert_eq!(queued_y["peers"], 0, "{queued_y:#}");
    assert_eq!(queued_y["verified_pieces"], 0, "{queued_y:#}");
    assert!(
        !tracker.announced(y, port) && !tracker.announced(y, port_after),
        "a queued torrent does not announce: {:?} ports {port} {port_after}",
        tracker.seen.lock().unwrap()
    );
    // Its first announce after the restart may come a moment after it started.
    wait("the active one announced", 15, || {
        tracker.announced(z, port_after).then_some(())
    });

    // Force start: Y runs beside Z, taking no slot; X still waits.
    ok(
        &leecher,
        "POST",
        &format!("/api/v1/torrents/{y}/force_start"),
        Value::Null,
    );
    let forced = torrent(&leecher, y);
    assert_eq!(forced["force_start"], true);
    assert_ne!(forced["state"], "queued", "{forced:#}");
    assert_eq!(state(x), "queued");

    // Z finishes: X, next in the queue, starts and finishes; Y finishes too.
    wait("Z complete, X leaving the queue", 60, || {
        (state(z) == "seeding" && state(x) != "queued").then_some(())
    });
    wait("all three complete", 60, || {
        [x, y, z]
            .iter()
            .all(|h| state(h) == "seeding")
            .then_some(())
    });
    for (t, h) in [(xt, x), (yt, y), (zt, z)] {
        let name = t.file_stem().unwrap().to_str().unwrap();
        assert_eq!(
            std::fs::read(ldata.join(name)).unwrap(),
            std::fs::read(sdir.join("data").join(name)).unwrap(),
            "{h}"
        );
    }
    assert!(tracker.announced(y, port_after) && tracker.announced(x, port_after));
    // Complete torrents are not in the download queue.
    assert_eq!(pos(z), 0);
    leecher.stop();
    seeder.stop();
}

/// A 192 MiB file `big.bin` (pattern `seed`) on /dev/shm (tmpfs: another file system than the
/// test's directory), and the config of a node whose data root is `dir/data` and that lists its
/// torrent with its data there. Returns (the tmpfs directory, the bytes, the torrent, the config).
fn big_on_shm(
    dir: &Path,
    seed: u64,
) -> (
    tempfile::TempDir,
    Vec<u8>,
    ringseed::metainfo::Metainfo,
    PathBuf,
) {
    let shm = tempfile::tempdir_in("/dev/shm").expect("/dev/shm (tmpfs) is needed");
    let bytes = pattern(192 << 20, seed);
    std::fs::write(shm.path().join("big.bin"), &bytes).unwrap();
    let t = dir.join("big.torrent");
    let meta = create_torrent(&shm.path().join("big.bin"), &t, &["--piece-kib", "1024"]);
    let extra = format!(
        "skip_check = true\n[[torrents.list]]\ntorrent = {:?}\ndata = {:?}\n",
        t.display().to_string(),
        shm.path().display().to_string()
    );
    let cfg = node_config(dir, &dir.join("data"), &extra, "");
    (shm, bytes, meta, cfg)
}

/// `setLocation` across file systems (the data on /dev/shm, the data root on the test's disk):
/// the call returns while the data is still being copied, the torrent shows `moving` and the
/// API goes on answering meanwhile; the data arrives byte for byte (a recheck finds every piece
/// at the new place), nothing is left at the old place, and the torrent seeds from the new one.
/// A move that cannot complete (a file of that name is in the way) leaves the torrent whole
/// where it was, and the file in the way untouched.
#[test]
fn a_move_across_file_systems_runs_while_the_api_answers_and_loses_nothing() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let name = "big.bin";
    let (shm, bytes, meta, cfg) = big_on_shm(dir.path(), 7);
    let small = data.join("small.bin");
    std::fs::write(&small, pattern(100_000, 8)).unwrap();
    let small_t = dir.path().join("small.torrent");
    let small_meta = create_torrent(&small, &small_t, &["--piece-kib", "16"]);
    let node = RunNode::start(&cfg);
    add_seeding(&node, &small_t, json!({}));
    let (big, small_hash) = (hex(&meta), hex(&small_meta));
    wait("the big torrent to seed", 30, || {
        (torrent(&node, &big)["state"] == "seeding").then_some(())
    });
    assert_ne!(
        std::fs::metadata(shm.path()).unwrap().dev(),
        std::fs::metadata(&data).unwrap().dev(),
        "the move must cross file systems"
    );

    let moved = data.join("moved");
    let token = std::fs::read_to_string(dir.path().join("state/api-token")).unwrap();
    let set_location = |to: &Path| {
        let (st, body) = common::http::form_post(
            node.api,
            token.trim(),
            "/api/v2/torrents/setLocation",
            &format!("hashes={big}&location={}", to.display()),
        );
        assert_eq!(st, 200, "{body}");
    };
    set_location(&moved);
    // Returned while the copy runs: the torrent is moving, the API answers (the other torrent,
    // the list) until it is done.
    let mut seen_moving = 0;
    let mut answered_meanwhile = 0;
    let done = wait("the move to end", 120, || {
        let v = torrent(&node, &big);
        if v["state"] == "moving" {
            seen_moving += 1;
            assert_eq!(torrent(&node, &small_hash)["state"], "seeding");
            assert_eq!(list(&node).len(), 2);
            answered_meanwhile += 1;
            return None;
        }
        Some(v)
    });
    assert!(seen_moving > 0, "never seen moving: {done}");
    eprintln!("seen moving {seen_moving} times, the API answered meanwhile");
    assert_eq!(done["data_dir"], moved.display().to_string(), "{done}");
    assert_eq!(std::fs::read(moved.join(name)).unwrap(), bytes);
    assert!(!shm.path().join(name).exists(), "the source is still there");
    let leftovers: Vec<_> = std::fs::read_dir(&moved)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, [std::ffi::OsString::from(name)]);
    ok(
        &node,
        "POST",
        &format!("/api/v1/torrents/{big}/recheck"),
        Value::Null,
    );
    let checked = wait("a recheck at the new place", 60, || {
        let v = torrent(&node, &big);
        // `recheck` marks it checking before it answers, so seeding again is the check's end.
        (v["state"] == "seeding").then_some(v)
    });
    assert_eq!(
        checked["verified_pieces"], checked["pieces"],
        "the moved data is not whole: {checked}"
    );

    // A file of the same name where it would go: the move stops, nothing is lost.
    let blocked = data.join("blocked");
    std::fs::create_dir_all(&blocked).unwrap();
    std::fs::write(blocked.join(name), b"someone else's").unwrap();
    set_location(&blocked);
    let stayed = wait("the failed move to end", 60, || {
        let v = torrent(&node, &big);
        (v["state"] == "seeding").then_some(v)
    });
    assert_eq!(stayed["data_dir"], moved.display().to_string(), "{stayed}");
    assert_eq!(
        std::fs::read(blocked.join(name)).unwrap(),
        b"someone else's"
    );
    assert_eq!(std::fs::read(moved.join(name)).unwrap().len(), bytes.len());
}

/// A node killed while it moves a torrent's data across file systems, and one that died after
/// the data had moved but before the new place was saved: each comes back with the torrent
/// where its data is, whole, and no unfinished copy left behind.
#[test]
fn a_move_cut_short_by_a_kill_finds_the_data_where_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let name = "big.bin";
    let (shm, bytes, meta, cfg) = big_on_shm(dir.path(), 9);
    let big = hex(&meta);
    let seeding = |node: &RunNode| {
        wait("the torrent to seed", 120, || {
            let v = torrent(node, &big);
            (v["state"] == "seeding").then_some(v)
        })
    };
    // Whole where the node says, and nowhere a copy cut short.
    let whole_at = |v: &Value| -> PathBuf {
        assert_eq!(v["verified_pieces"], v["pieces"], "{v}");
        let at = PathBuf::from(v["data_dir"].as_str().unwrap());
        assert!(
            std::fs::read(at.join(name)).unwrap() == bytes,
            "not the bytes at {}",
            at.display()
        );
        for d in [shm.path(), &data.join("moved")] {
            let tmp = d.join(format!(".{name}.ringseed-moving"));
            assert!(!tmp.exists(), "{} left behind", tmp.display());
        }
        at
    };

    // Killed while the copy runs.
    let node = RunNode::start(&cfg);
    seeding(&node);
    let token = std::fs::read_to_string(dir.path().join("state/api-token")).unwrap();
    let moved = data.join("moved");
    let (st, body) = common::http::form_post(
        node.api,
        token.trim(),
        "/api/v2/torrents/setLocation",
        &format!("hashes={big}&location={}", moved.display()),
    );
    assert_eq!(st, 200, "{body}");
    wait("the move to start", 30, || {
        (torrent(&node, &big)["state"] == "moving").then_some(())
    });
    node.kill9();
    let cut = moved.join(format!(".{name}.ringseed-moving")).exists();
    let node = RunNode::start(&cfg);
    let at = whole_at(&seeding(&node));
    eprintln!(
        "after a kill while moving: the data is at {} (a copy cut short was there: {cut})",
        at.display()
    );
    node.stop();

    // Died after the data moved and before the new place was saved: the files are at the
    // other place (moved by hand here, as the mover would have: copied, then the source
    // removed) and the state notes the move.
    let other = if at == moved {
        shm.path().to_path_buf()
    } else {
        moved.clone()
    };
    std::fs::create_dir_all(&other).unwrap();
    std::fs::copy(at.join(name), other.join(name)).unwrap();
    std::fs::remove_file(at.join(name)).unwrap();
    // A start that finds the torrent seeding, whole at `at`.
    let comes_back_at = |at: &Path| {
        let node = RunNode::start(&cfg);
        let v = seeding(&node);
        assert_eq!(whole_at(&v), at, "{v}");
        node.stop();
    };
    // The node's state, opened while the node is stopped.
    let db = || ringseed::db::open(&dir.path().join("state/ringseed.db")).unwrap();
    let conn = db();
    ringseed::state::save_moving_to(
        &conn,
        &meta.info.hash.wire_id(),
        &other.display().to_string(),
    )
    .unwrap();
    drop(conn);
    comes_back_at(&other);

    // A completed download renamed out of its incomplete directory, the node dead before the
    // save: the state still has the incomplete directory and a bitfield from before the end,
    // and notes the move into the data directory.
    let conn = db();
    let changed = conn
        .execute(
            "UPDATE torrents SET download_dir = ?2, verified = ?3, moving_to = ?4
             WHERE info_hash = ?1",
            rusqlite::params![
                &meta.info.hash.wire_id()[..],
                data.join("incomplete").display().to_string(),
                vec![0u8; meta.info.layout.num_pieces.div_ceil(8) as usize],
                other.display().to_string()
            ],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(conn);
    comes_back_at(&other);
    let conn = db();
    let (download_dir, moving_to): (Option<String>, Option<String>) = conn
        .query_row(
            "SELECT download_dir, moving_to FROM torrents WHERE info_hash = ?1",
            [&meta.info.hash.wire_id()[..]],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((download_dir, moving_to), (None, None));
}

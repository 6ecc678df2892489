//! File priorities act on the download (the qBittorrent API's `torrents/filePrio`, issue 14):
//! a ringseed node downloads a three-file torrent from a real libtorrent seeder with the middle
//! file at priority 0. It finishes without that file's own pieces (the pieces it shares with
//! its neighbours are fetched), the other files byte-identical; it shows as seeding with
//! qBittorrent's numbers (amount_left 0, size and progress over the wanted pieces), keeps all
//! that across a restart, renames a file while seeding (`renameFile`), fetches the rest once the
//! skipped file is wanted again, and keeps the new name across a restart.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::http::{form_post, request};
use common::node::RunNode;
use common::{create_torrent, pattern, spawn_lt_seeder};
use serde_json::Value;

const PIECE: u64 = 64 << 10;
/// a.bin: pieces 0-4; b.bin: 4-15 (its own: 5-14); c.bin: 15-19.
const SIZES: [usize; 3] = [300_000, 700_000, 250_000];

fn get(to: SocketAddr, token: &str, path: &str) -> Value {
    let (st, body) = request(to, "127.0.0.1", "GET", path, "", Some(token));
    assert_eq!(st, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

fn wait_for(what: &str, secs: u64, mut done: impl FnMut() -> Option<Value>) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = done() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// An HTTP tracker on loopback that answers no peers and keeps the `event` and `left` of each
/// announce but libtorrent's (peer ids `-LT…`).
struct Tracker {
    url: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

impl Tracker {
    fn start() -> Tracker {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/announce", listener.local_addr().unwrap());
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut line = String::new();
                if BufReader::new(&conn).read_line(&mut line).is_err() {
                    continue;
                }
                let query = line.split_whitespace().nth(1).unwrap_or("");
                let param = |k: &str| {
                    query
                        .split(['?', '&'])
                        .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                        .unwrap_or("")
                        .to_string()
                };
                if !param("peer_id").starts_with("-LT") {
                    keep.lock().unwrap().push((param("event"), param("left")));
                }
                let body = "d8:intervali1800e5:peers0:e";
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Tracker { url, seen }
    }

    fn events(&self) -> Vec<(String, String)> {
        self.seen.lock().unwrap().clone()
    }
}

/// Starts the node of `cfg` (state under `dir`) and adds `torrent` paused through its API;
/// returns the node and its API key.
fn start_with_paused(cfg: &Path, dir: &Path, torrent: &Path) -> (RunNode, String) {
    let node = RunNode::start(cfg);
    let token = std::fs::read_to_string(dir.join("state/api-token")).unwrap();
    let token = token.trim().to_string();
    let body = serde_json::json!({"path": torrent, "paused": true}).to_string();
    let (st, answer) = request(
        node.api,
        "127.0.0.1",
        "POST",
        "/api/v1/torrents",
        &body,
        Some(&token),
    );
    assert!(st == 200 || st == 201, "{st} {answer}");
    (node, token)
}

fn node_config(dir: &Path, data: &Path) -> std::path::PathBuf {
    node_config_with(dir, data, "")
}

/// The node's config with `extra` keys of `[torrents]`.
fn node_config_with(dir: &Path, data: &Path, extra: &str) -> std::path::PathBuf {
    let cfg = dir.join("node.toml");
    std::fs::write(
        &cfg,
        format!(
            "[engine]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n\
             [metrics]\nlisten = \"\"\n\
             [control]\nlisten = \"127.0.0.1:0\"\n\
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
fn a_skipped_file_is_not_downloaded_and_the_rest_is() {
    common::require_tool("/usr/bin/python3");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let multi = src.join("multi");
    std::fs::create_dir_all(&multi).unwrap();
    let names = ["a.bin", "b.bin", "c.bin"];
    let payloads: Vec<Vec<u8>> = SIZES
        .iter()
        .enumerate()
        .map(|(k, &n)| pattern(n, 7 + k as u64))
        .collect();
    for (name, p) in names.iter().zip(&payloads) {
        std::fs::write(multi.join(name), p).unwrap();
    }
    let t = dir.path().join("multi.torrent");
    let tracker = Tracker::start();
    let meta = create_torrent(
        &multi,
        &t,
        &["--piece-kib", "64", "--no-date", "-t", &tracker.url],
    );
    assert_eq!(meta.info.layout.num_pieces, 20);
    assert_eq!(meta.info.layout.piece_length, PIECE);
    let hash = ringseed::metainfo::hex(&meta.info.hash.wire_id());
    let seeder = spawn_lt_seeder(&t, &src, "127.0.0.1", 0);

    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let cfg = node_config(dir.path(), &data);
    let (node, token) = start_with_paused(&cfg, dir.path(), &t);
    let api = node.api;
    let (st, body) = form_post(
        api,
        &token,
        "/api/v2/torrents/filePrio",
        &format!("hash={hash}&id=1&priority=0"),
    );
    assert_eq!((st, body.as_str()), (200, ""));
    // bad input changes nothing: qbittorrent-nox 4.5.2's statuses
    for (form, status) in [
        (format!("hash={hash}&id=3&priority=0"), 409),
        (format!("hash={hash}&id=x&priority=0"), 400),
        (format!("hash={hash}&id=0&priority=2"), 400),
        (format!("hash={}&id=0&priority=0", "0".repeat(40)), 404),
        (format!("hash={hash}&priority=0"), 400),
    ] {
        let (st, body) = form_post(api, &token, "/api/v2/torrents/filePrio", &form);
        assert_eq!(st, status, "{form}: {body}");
    }
    let files = get(api, &token, &format!("/api/v2/torrents/files?hash={hash}"));
    let prios: Vec<i64> = files
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["priority"].as_i64().unwrap())
        .collect();
    assert_eq!(prios, [1, 0, 1], "{files:#}");

    let peers = serde_json::json!({"peers": [seeder.addr.to_string()]}).to_string();
    let (st, answer) = request(
        api,
        "127.0.0.1",
        "POST",
        &format!("/api/v1/torrents/{hash}/peers"),
        &peers,
        Some(&token),
    );
    assert!(st == 200 || st == 202 || st == 204, "{st} {answer}");
    let (st, body) = form_post(
        api,
        &token,
        "/api/v2/torrents/start",
        &format!("hashes={hash}"),
    );
    assert_eq!(st, 200, "{body}");
    // The peer list is kept by the entry; a node that dials before the start forgets nothing.
    let info_path = format!("/api/v2/torrents/info?hashes={hash}");
    let done = wait_for("the wanted files to finish", 60, || {
        let i = get(api, &token, &info_path)[0].clone();
        let up = matches!(i["state"].as_str(), Some("stalledUP" | "uploading"));
        (up && i["amount_left"] == 0).then_some(i)
    });
    // the wanted pieces whole (0-4, 15-19), as qbittorrent-nox 4.5.2 shows this very torrent
    assert_eq!(done["size"], 594_640, "{done:#}");
    assert_eq!(done["progress"], 1.0, "{done:#}");
    assert_eq!(done["total_size"], 1_250_000, "{done:#}");
    let pieces = |node: SocketAddr| -> Vec<i64> {
        get(
            node,
            &token,
            &format!("/api/v2/torrents/pieceStates?hash={hash}"),
        )
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_i64().unwrap())
        .collect()
    };
    let got = pieces(api);
    let expect: Vec<i64> = (0..20)
        .map(|i| if (5..=14).contains(&i) { 0 } else { 2 })
        .collect();
    assert_eq!(got, expect, "b.bin's own pieces were fetched");
    let on_disk = data.join("multi");
    for k in [0, 2] {
        assert_eq!(
            std::fs::read(on_disk.join(names[k])).unwrap(),
            payloads[k],
            "{}",
            names[k]
        );
    }
    // Its tracker heard `started` and no `completed` (the torrent is not complete), and no
    // announce said more than the wanted pieces were left. (The announce loop looks for
    // completion once a second: a false `completed` would have gone out by now.)
    std::thread::sleep(Duration::from_millis(2500));
    let events = tracker.events();
    assert!(events.iter().any(|(e, _)| e == "started"), "{events:?}");
    assert!(!events.iter().any(|(e, _)| e == "completed"), "{events:?}");
    assert!(
        events
            .iter()
            .all(|(_, left)| left.parse::<u64>().unwrap() <= 594_640),
        "{events:?}"
    );
    // b.bin holds the bytes of the two pieces it shares (documented); none of its own.
    let b = std::fs::read(on_disk.join("b.bin")).unwrap_or_default();
    let own = (5 * PIECE as usize - SIZES[0])..(15 * PIECE as usize - SIZES[0]);
    assert!(
        b.get(own.clone())
            .is_none_or(|bytes| bytes.iter().all(|&x| x == 0)),
        "b.bin has data of its own pieces"
    );
    let files = get(api, &token, &format!("/api/v2/torrents/files?hash={hash}"));
    assert_eq!(files[1]["priority"], 0, "{files:#}");
    assert_eq!(files[0]["progress"], 1.0, "{files:#}");
    // b.bin's bytes in pieces 4 and 15 (qbittorrent-nox: 0.06377142857142858)
    assert_eq!(files[1]["progress"], 44_640.0 / 700_000.0, "{files:#}");
    assert_eq!(
        files[0]["is_seed"], true,
        "finished counts as seed here: {files:#}"
    );

    // A restart keeps the priorities and the finished state.
    node.stop();
    let node = RunNode::start(&cfg);
    let api = node.api;
    let again = wait_for("the restarted node to show it seeding", 30, || {
        let i = get(api, &token, &info_path)[0].clone();
        matches!(i["state"].as_str(), Some("stalledUP" | "uploading")).then_some(i)
    });
    assert_eq!(again["amount_left"], 0, "{again:#}");
    assert_eq!(pieces(api), expect);
    let files = get(api, &token, &format!("/api/v2/torrents/files?hash={hash}"));
    assert_eq!(files[1]["priority"], 0, "{files:#}");

    // A rename while it seeds: the file moves, the torrent reopens and serves it from there.
    let (st, body) = form_post(
        api,
        &token,
        "/api/v2/torrents/renameFile",
        &format!("hash={hash}&oldPath=multi/a.bin&newPath=multi/x/a1.bin"),
    );
    assert_eq!((st, body.as_str()), (200, ""));
    let (st, body) = form_post(
        api,
        &token,
        "/api/v2/torrents/renameFile",
        &format!("hash={hash}&oldPath=multi/c.bin&newPath=multi/x/a1.bin"),
    );
    assert_eq!(st, 409, "{body}");
    assert!(!on_disk.join("a.bin").exists());
    assert_eq!(
        std::fs::read(on_disk.join("x/a1.bin")).unwrap(),
        payloads[0]
    );
    let files = get(api, &token, &format!("/api/v2/torrents/files?hash={hash}"));
    assert_eq!(files[0]["name"], "multi/x/a1.bin", "{files:#}");
    assert_eq!(files[0]["progress"], 1.0, "{files:#}");
    assert_eq!(pieces(api), expect, "the reopened torrent kept its pieces");

    // Wanted again: the rest comes, and every file is the seeder's.
    let (st, body) = form_post(
        api,
        &token,
        "/api/v2/torrents/filePrio",
        &format!("hash={hash}&id=1&priority=7"),
    );
    assert_eq!((st, body.as_str()), (200, ""));
    let (st, answer) = request(
        api,
        "127.0.0.1",
        "POST",
        &format!("/api/v1/torrents/{hash}/peers"),
        &peers,
        Some(&token),
    );
    assert!(st == 200 || st == 202 || st == 204, "{st} {answer}");
    let full = wait_for("the whole torrent", 60, || {
        let i = get(api, &token, &info_path)[0].clone();
        let up = matches!(i["state"].as_str(), Some("stalledUP" | "uploading"));
        (up && i["amount_left"] == 0 && i["size"] == 1_250_000).then_some(i)
    });
    assert_eq!(full["progress"], 1.0, "{full:#}");
    // complete now: `completed` once, with nothing left
    let events = wait_for("the completed announce", 10, || {
        let e = tracker.events();
        e.iter()
            .any(|(e, _)| e == "completed")
            .then(|| serde_json::json!(e))
    });
    let completed: Vec<&Value> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e[0] == "completed")
        .collect();
    assert_eq!(completed.len(), 1, "{events}");
    assert_eq!(completed[0][1], "0", "{events}");
    assert_eq!(pieces(api), vec![2; 20]);
    let now_named = ["x/a1.bin", "b.bin", "c.bin"];
    for (name, p) in now_named.iter().zip(&payloads) {
        assert_eq!(&std::fs::read(on_disk.join(name)).unwrap(), p, "{name}");
    }
    // and the names survive a restart
    node.stop();
    let node = RunNode::start(&cfg);
    let files = get(
        node.api,
        &token,
        &format!("/api/v2/torrents/files?hash={hash}"),
    );
    assert_eq!(files[0]["name"], "multi/x/a1.bin", "{files:#}");
    wait_for("the renamed torrent to seed after a restart", 30, || {
        let i = get(node.api, &token, &info_path)[0].clone();
        let up = matches!(i["state"].as_str(), Some("stalledUP" | "uploading"));
        (up && i["progress"] == 1.0).then_some(i)
    });
    node.stop();
    drop(seeder);
}

/// With `[torrents] incomplete_dir`: the download finishes without the skipped file (which
/// shares no piece, so it is never created) and moves to its data directory; made wanted
/// again, the file is created and fetched there, not in the incomplete directory the torrent
/// was first opened in.
#[test]
fn a_finished_download_moved_out_of_the_incomplete_dir_fetches_a_file_wanted_again() {
    common::require_tool("/usr/bin/python3");
    let dir = tempfile::tempdir().unwrap();
    let multi = dir.path().join("src/multi");
    std::fs::create_dir_all(&multi).unwrap();
    let names = ["a.bin", "b.bin", "c.bin"];
    // b.bin is pieces 5-14 exactly
    let sizes = [5 * PIECE as usize, 10 * PIECE as usize, 250_000];
    let payloads: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(k, &n)| pattern(n, 70 + k as u64))
        .collect();
    for (name, p) in names.iter().zip(&payloads) {
        std::fs::write(multi.join(name), p).unwrap();
    }
    let t = dir.path().join("multi.torrent");
    let meta = create_torrent(&multi, &t, &["--piece-kib", "64", "--no-date"]);
    let hash = ringseed::metainfo::hex(&meta.info.hash.wire_id());
    let seeder = spawn_lt_seeder(&t, &dir.path().join("src"), "127.0.0.1", 0);
    let (data, incomplete) = (dir.path().join("data"), dir.path().join("incomplete"));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(&incomplete).unwrap();
    let cfg = node_config_with(
        dir.path(),
        &data,
        &format!("incomplete_dir = {:?}\n", incomplete.display().to_string()),
    );
    let (node, token) = start_with_paused(&cfg, dir.path(), &t);
    let api = node.api;
    let prio = |p: u8| {
        let form = format!("hash={hash}&id=1&priority={p}");
        let (st, body) = form_post(api, &token, "/api/v2/torrents/filePrio", &form);
        assert_eq!((st, body.as_str()), (200, ""));
    };
    let add_peer = || {
        let peers = serde_json::json!({"peers": [seeder.addr.to_string()]}).to_string();
        let path = format!("/api/v1/torrents/{hash}/peers");
        let (st, answer) = request(api, "127.0.0.1", "POST", &path, &peers, Some(&token));
        assert!(st == 200 || st == 202 || st == 204, "{st} {answer}");
    };
    prio(0);
    add_peer();
    let (st, body) = form_post(
        api,
        &token,
        "/api/v2/torrents/start",
        &format!("hashes={hash}"),
    );
    assert_eq!(st, 200, "{body}");
    let info_path = format!("/api/v2/torrents/info?hashes={hash}");
    let seeding = |what: &str, size: u64| {
        wait_for(what, 60, || {
            let i = get(api, &token, &info_path)[0].clone();
            let up = matches!(i["state"].as_str(), Some("stalledUP" | "uploading"));
            (up && i["amount_left"] == 0 && i["size"] == size).then_some(i)
        })
    };
    let total = sizes.iter().sum::<usize>() as u64;
    seeding("the wanted files to finish", total - sizes[1] as u64);
    let moved = data.join("multi");
    wait_for("the finished files in the data directory", 30, || {
        moved.join("a.bin").exists().then_some(Value::Null)
    });
    assert_eq!(std::fs::read(moved.join("a.bin")).unwrap(), payloads[0]);
    assert_eq!(std::fs::read(moved.join("c.bin")).unwrap(), payloads[2]);
    assert!(
        !moved.join("b.bin").exists(),
        "the skipped file was created"
    );
    prio(1);
    add_peer();
    seeding("the whole torrent", total);
    for (name, p) in names.iter().zip(&payloads) {
        assert_eq!(&std::fs::read(moved.join(name)).unwrap(), p, "{name}");
    }
    let left: Vec<_> = walk(&incomplete);
    assert!(
        left.is_empty(),
        "files left in the incomplete directory: {left:?}"
    );
    node.stop();
    drop(seeder);
}

/// Every file below `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

//! Hostile .torrent files against the real binary (issue 13).
//!
//! The 346-byte v2 torrent whose second file claims 16 TiB under the first file's pieces root,
//! and a corpus of pathological torrents (piece counts, file counts, path bytes, nesting, value
//! counts, sizes), all generated here: each is refused at parse with an error naming what is
//! wrong, by `info`, `verify`, `seed` and `download`, by the control API and by the watch
//! directory, and the peak RSS of each process stays small (measured by the kernel, see
//! tests/helpers/peak_rss.py). The service then restarts cleanly with the files still in its
//! watch directory, and a record that an older version saved (the v2 torrent, written straight
//! into the state database) is reported and skipped at start while the good torrent resumes.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::node::RunNode;
use common::{create_torrent, pattern, require_tool, signal};
use ringseed::bencode::Bencode;
use serde_json::Value;

/// Peak RSS allowed to a CLI process that refuses a hostile torrent. Measured (release build):
/// 12 MiB for the small ones, 42 MiB for the largest (7.6 MB, a tree of 100 001 files), where
/// the 346-byte torrent once took 21 GB before the kernel killed `verify`.
const CLI_PEAK_KIB: u64 = 64 << 10;

/// Peak RSS the service may gain over its idle self while it refuses the whole corpus over the
/// API and through the watch directory. Measured: 64 MiB, nearly all for the 7.6 MB tree of
/// 100 001 files uploaded in base64: the API holds the 10 MB request body, its JSON string and
/// the decoded torrent (about 35 MiB) while the parser decodes 25 MiB of it before it counts
/// the files. That is the cost of the bytes sent, not of anything the torrent claims.
const SERVICE_GROWTH_KIB: u64 = 80 << 10;

const TOKEN: &str = "hostile-torrents-token";

/// One pathological torrent and what the refusal must say.
struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    reason: &'static str,
}

fn dict(entries: Vec<(&str, Bencode)>) -> Bencode {
    let mut d = Bencode::dict();
    for (k, v) in entries {
        d.insert(k, v);
    }
    d
}

/// A BEP 52 file tree leaf.
fn leaf(length: i64, root: Option<[u8; 32]>) -> Bencode {
    let mut attrs = dict(vec![("length", Bencode::Int(length))]);
    if let Some(r) = root {
        attrs.insert("pieces root", Bencode::bytes(r));
    }
    dict(vec![("", attrs)])
}

fn v2_info(tree: Bencode) -> Bencode {
    dict(vec![
        ("file tree", tree),
        ("meta version", Bencode::Int(2)),
        ("name", Bencode::bytes("x")),
        ("piece length", Bencode::Int(16384)),
    ])
}

fn v1_info(length: i64, piece_length: i64) -> Bencode {
    dict(vec![
        ("length", Bencode::Int(length)),
        ("name", Bencode::bytes("x")),
        ("piece length", Bencode::Int(piece_length)),
        ("pieces", Bencode::Bytes(vec![0; 20])),
    ])
}

fn torrent(info: Bencode, extra: Vec<(&str, Bencode)>) -> Vec<u8> {
    let mut t = dict(extra);
    t.insert("info", info);
    t.encode()
}

/// The torrent: file `a` of two pieces with its layer, and file `b` of `b_len` bytes
/// under the same pieces root, with no layer of its own.
fn shared_root(b_len: i64) -> (Vec<u8>, Bencode) {
    let layer = [[1u8; 32], [2u8; 32]];
    let root = ringseed::hash::root_from_piece_layer(&layer, 16384);
    let mut tree = Bencode::dict();
    tree.insert("a", leaf(32768, Some(root)));
    tree.insert("b", leaf(b_len, Some(root)));
    let info = v2_info(tree);
    let mut layers = Bencode::dict();
    layers.insert(root, Bencode::Bytes(layer.concat()));
    (torrent(info.clone(), vec![("piece layers", layers)]), info)
}

fn corpus() -> Vec<Case> {
    let many = 100_001;
    let root = [7u8; 32];
    let (bomb, _) = shared_root((1 << 44) - 32768);
    assert!(
        bomb.len() < 360,
        "the issue's torrent is {} bytes",
        bomb.len()
    );
    let v1_files: Vec<Bencode> = (0..many)
        .map(|i| {
            dict(vec![
                ("length", Bencode::Int(1)),
                ("path", Bencode::List(vec![Bencode::bytes(format!("f{i}"))])),
            ])
        })
        .collect();
    let v1_flood = dict(vec![
        ("files", Bencode::List(v1_files)),
        ("name", Bencode::bytes("x")),
        ("piece length", Bencode::Int(1 << 20)),
        ("pieces", Bencode::Bytes(vec![0; 20])),
    ]);
    let mut v2_flood = Bencode::dict();
    for i in 0..many {
        v2_flood.insert(format!("f{i:06}"), leaf(1, Some(root)));
    }
    // 63 directories of 250-byte names above 2000 files: 7 MB of paths would come out of 0.1 MB.
    let mut deep = Bencode::dict();
    for i in 0..2000 {
        deep.insert(format!("f{i}"), leaf(1, Some(root)));
    }
    for d in 0..63 {
        let mut up = Bencode::dict();
        up.insert(format!("{d:02}{}", "x".repeat(248)), deep);
        deep = up;
    }
    let mut nested = vec![b'l'; 10_000];
    nested.extend(std::iter::repeat_n(b'e', 10_000));
    let mut values = b"l".to_vec();
    for _ in 0..1_500_001 {
        values.extend_from_slice(b"i0e");
    }
    values.push(b'e');
    // A junk key before `info` (keys are sorted), holding raw bencode.
    let with_junk = |junk: &[u8]| {
        let mut t = b"d7:comment".to_vec();
        t.extend_from_slice(junk);
        t.extend_from_slice(&torrent(v1_info(1, 16384), vec![])[1..]);
        t
    };
    let two_huge = dict(vec![
        (
            "files",
            Bencode::List(vec![
                dict(vec![
                    ("length", Bencode::Int(i64::MAX)),
                    ("path", Bencode::List(vec![Bencode::bytes("a")])),
                ]),
                dict(vec![
                    ("length", Bencode::Int(i64::MAX)),
                    ("path", Bencode::List(vec![Bencode::bytes("b")])),
                ]),
            ]),
        ),
        ("name", Bencode::bytes("x")),
        ("piece length", Bencode::Int(256 << 20)),
        ("pieces", Bencode::Bytes(vec![0; 20])),
    ]);
    let pieces_over = ((1i64 << 21) + 1) * 16384;
    let mut one_big = Bencode::dict();
    one_big.insert("a", leaf(pieces_over, Some(root)));
    vec![
        Case {
            name: "v2_shared_root_16tib",
            bytes: bomb,
            reason: "make 1073741824 pieces, more than 2097152",
        },
        Case {
            name: "v2_shared_root_no_layer",
            bytes: shared_root(1 << 34).0,
            reason: "\"x/b\" needs 1048576 piece hashes but shares its pieces root with a file \
                     of 2 pieces",
        },
        Case {
            name: "v1_too_many_pieces",
            bytes: torrent(v1_info(pieces_over, 16384), vec![]),
            reason: "make 2097153 pieces, more than 2097152",
        },
        Case {
            // What a magnet's peer could send: an info dictionary, no piece layers.
            name: "v2_info_only_too_many_pieces",
            bytes: torrent(v2_info(one_big), vec![]),
            reason: "make 2097153 pieces, more than 2097152",
        },
        Case {
            name: "total_over_256tib",
            bytes: torrent(v1_info((1 << 48) + 1, 256 << 20), vec![]),
            reason: "the files add up to more than 281474976710656 bytes",
        },
        Case {
            name: "lengths_overflow",
            bytes: torrent(two_huge, vec![]),
            reason: "the files add up to more than 281474976710656 bytes",
        },
        Case {
            name: "negative_length",
            bytes: torrent(v1_info(-1, 16384), vec![]),
            reason: "field `length`: -1 is negative",
        },
        Case {
            name: "piece_length_1tib",
            bytes: torrent(v1_info(1 << 40, 1 << 40), vec![]),
            reason: "1099511627776 is outside 1..=268435456",
        },
        Case {
            name: "v1_too_many_files",
            bytes: torrent(v1_flood, vec![]),
            reason: "field `files`: more than 100000 files",
        },
        Case {
            name: "v2_too_many_files",
            bytes: torrent(v2_info(v2_flood), vec![]),
            reason: "field `files`: more than 100000 files",
        },
        Case {
            name: "v2_deep_tree_path_bytes",
            bytes: torrent(v2_info(deep), vec![]),
            reason: "the file paths would take more than 33554432 bytes",
        },
        Case {
            name: "nested_10000_deep",
            bytes: with_junk(&nested),
            reason: "nesting deeper than 100 levels",
        },
        Case {
            name: "too_many_values",
            bytes: with_junk(&values),
            reason: "more than 1500000 values in one document",
        },
        Case {
            name: "string_claims_an_exabyte",
            bytes: b"d4:infod6:pieces1152921504606846976:xee".to_vec(),
            reason: "string claims 1152921504606846976 bytes but only 3 remain",
        },
    ]
}

/// A file over every .torrent size bound (32 MiB, sparse): refused before it is read.
fn oversized(dir: &Path) -> PathBuf {
    let p = dir.join("oversized.torrent");
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(33 << 20).unwrap();
    p
}

/// Runs `ringseed ARGS…` under tests/helpers/peak_rss.py: (success, stderr, peak RSS in KiB).
fn run_measured(args: &[&std::ffi::OsStr]) -> (bool, String, u64) {
    require_tool("/usr/bin/python3");
    let helper = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/helpers/peak_rss.py");
    let out = tempfile::NamedTempFile::new().unwrap();
    let run = Command::new("/usr/bin/python3")
        .arg(helper)
        .arg(out.path())
        .arg(env!("CARGO_BIN_EXE_ringseed"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let peak = std::fs::read_to_string(out.path())
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (
        run.status.success(),
        String::from_utf8_lossy(&run.stderr).into_owned(),
        peak,
    )
}

#[test]
fn every_cli_path_refuses_the_corpus_at_parse_with_small_memory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut files: Vec<(String, PathBuf, &str)> = corpus()
        .into_iter()
        .map(|c| {
            let p = dir.path().join(format!("{}.torrent", c.name));
            std::fs::write(&p, &c.bytes).unwrap();
            (c.name.to_string(), p, c.reason)
        })
        .collect();
    files.push((
        "oversized".into(),
        oversized(dir.path()),
        "34603008 bytes is too large for a .torrent",
    ));
    let mut worst = (0, String::new());
    for (name, path, reason) in &files {
        let path = path.as_os_str();
        let d = data.as_os_str();
        let off: &std::ffi::OsStr = "".as_ref();
        let commands: [(&str, Vec<&std::ffi::OsStr>); 4] = [
            ("info", vec!["info".as_ref(), path]),
            (
                "verify",
                vec!["verify".as_ref(), path, "--data".as_ref(), d],
            ),
            (
                "seed",
                vec![
                    "seed".as_ref(),
                    path,
                    "--data".as_ref(),
                    d,
                    "--listen".as_ref(),
                    "127.0.0.1:0".as_ref(),
                    "--no-trackers".as_ref(),
                    "--metrics".as_ref(),
                    off,
                ],
            ),
            (
                "download",
                vec![
                    "download".as_ref(),
                    path,
                    "--data".as_ref(),
                    d,
                    "--listen".as_ref(),
                    "127.0.0.1:0".as_ref(),
                    "--no-trackers".as_ref(),
                    "--metrics".as_ref(),
                    off,
                ],
            ),
        ];
        for (what, args) in commands {
            let (ok, stderr, peak) = run_measured(&args);
            assert!(!ok, "{what} accepted {name}: {stderr}");
            assert!(
                stderr.contains(reason),
                "{what} {name}: the error should say {reason:?}:\n{stderr}"
            );
            assert!(
                stderr.contains("not a valid torrent") || name == "oversized",
                "{what} {name}: {stderr}"
            );
            assert!(
                peak < CLI_PEAK_KIB,
                "{what} {name}: peak RSS {peak} KiB (bound {CLI_PEAK_KIB} KiB)"
            );
            eprintln!("{what:>8} {name:<30} peak {:>6} KiB", peak);
            if peak > worst.0 {
                worst = (peak, format!("{what} {name}"));
            }
        }
    }
    eprintln!("highest peak: {} KiB ({})", worst.0, worst.1);
    // Nothing was created in the download directory.
    assert_eq!(std::fs::read_dir(&data).unwrap().count(), 0);
}

/// A `ringseed run` process (its address space capped by prlimit, as in peak_rss.py), its API
/// address, and the file its log goes to.
struct Node {
    run: RunNode,
    log: PathBuf,
}

impl Node {
    fn start(cfg: &Path, log: &Path) -> Node {
        require_tool("/usr/bin/prlimit");
        let mut cmd = Command::new("/usr/bin/prlimit");
        cmd.arg(format!("--as={}", 4u64 << 30))
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_ringseed"))
            .arg("--config")
            .arg(cfg)
            .args(["run", "--stats-every", "0"])
            .stderr(std::fs::File::create(log).unwrap());
        Node {
            run: RunNode::spawn(cmd),
            log: log.to_path_buf(),
        }
    }

    /// The kernel's peak RSS of the process so far (KiB).
    fn peak_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.run.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmHWM in {status}"))
    }

    fn stop(mut self) {
        signal(&self.run.child, nix::sys::signal::Signal::SIGTERM);
        let status = self.run.child.wait().unwrap();
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        assert!(status.success(), "the node exited with {status}:\n{log}");
    }

    fn api(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        http(self.run.api, method, path, body)
    }

    fn list(&self) -> Vec<Value> {
        let (status, body) = self.api("GET", "/api/v1/torrents", "");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Value>(&body)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    fn metric(&self, series: &str) -> f64 {
        self.run.metric(series)
    }

    /// Waits (bounded) until `done` holds.
    fn wait(&self, what: &str, done: impl Fn(&Node) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done(self) {
            assert!(Instant::now() < deadline, "waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// One HTTP/1.1 request from 127.0.0.1 with the token.
fn http(to: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    common::http::request(to, "127.0.0.1", method, path, body, Some(TOKEN))
}

/// The `error` of an API answer.
fn error_of(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["error"].as_str().unwrap_or_default().to_string()
}

fn upload(torrent: &[u8]) -> String {
    use base64::Engine as _;
    serde_json::json!({
        "torrent": base64::engine::general_purpose::STANDARD.encode(torrent)
    })
    .to_string()
}

#[test]
fn the_service_refuses_the_corpus_before_saving_it_and_restarts_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (state, data, watch) = (
        dir.path().join("state"),
        dir.path().join("data"),
        dir.path().join("watch"),
    );
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(&watch).unwrap();
    // One good torrent, to show the node keeps working and resumes it.
    std::fs::write(data.join("good.bin"), pattern(300_001, 9)).unwrap();
    let good_t = dir.path().join("good.torrent");
    create_torrent(&data.join("good.bin"), &good_t, &["--piece-kib", "16"]);
    let cfg = dir.path().join("ringseed.toml");
    std::fs::write(
        &cfg,
        format!(
            "[engine]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n\
             [trackers]\nenabled = false\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n\
             [control]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n\
             [state]\ndir = {:?}\n\
             [torrents]\ndata_dir = {:?}\ndir = {:?}\nwatch_interval_s = 1\n",
            state.display().to_string(),
            data.display().to_string(),
            watch.display().to_string(),
        ),
    )
    .unwrap();

    let node = Node::start(&cfg, &dir.path().join("run1.log"));
    let (status, body) = node.api(
        "POST",
        "/api/v1/torrents",
        &upload(&std::fs::read(&good_t).unwrap()),
    );
    assert_eq!(status, 201, "{body}");
    node.wait("the good torrent seeding", |n| {
        n.list().iter().any(|t| t["state"] == "seeding")
    });
    let idle = node.peak_kib();

    // Over the API: every upload refused with the parser's reason, nothing added.
    let corpus = corpus();
    for c in &corpus {
        let (status, body) = node.api("POST", "/api/v1/torrents", &upload(&c.bytes));
        assert_eq!(status, 400, "{}: {body}", c.name);
        let error = error_of(&body);
        assert!(
            error.starts_with("not a valid .torrent: ") && error.contains(c.reason),
            "{}: the error should say {:?}: {error}",
            c.name,
            c.reason
        );
    }
    // A path the service reads itself, too.
    let bomb_path = dir.path().join("bomb.torrent");
    std::fs::write(&bomb_path, &corpus[0].bytes).unwrap();
    let path_body = serde_json::json!({ "path": bomb_path }).to_string();
    let (status, body) = node.api("POST", "/api/v1/torrents", &path_body);
    assert_eq!(status, 400, "{body}");
    assert!(error_of(&body).contains(corpus[0].reason), "{body}");
    let after_api = node.peak_kib();

    // Through the watch directory: each file counted as an error, nothing added.
    for c in &corpus {
        std::fs::write(watch.join(format!("{}.torrent", c.name)), &c.bytes).unwrap();
    }
    oversized(&watch);
    let dropped = corpus.len() as f64 + 1.0;
    node.wait("the watch directory's refusals", |n| {
        n.metric("ringseed_errors_total{reason=\"watch_add\"}") >= dropped
    });
    assert_eq!(node.list().len(), 1, "{:#?}", node.list());
    let peak = node.peak_kib();
    eprintln!(
        "service peak RSS: {idle} KiB idle, {after_api} KiB after the API uploads, {peak} KiB \
         after the watch directory (growth {} KiB, bound {SERVICE_GROWTH_KIB} KiB)",
        peak - idle
    );
    assert!(
        peak - idle < SERVICE_GROWTH_KIB,
        "peak RSS grew from {idle} to {peak} KiB"
    );
    let log = std::fs::read_to_string(&node.log).unwrap();
    assert!(
        log.contains("make 1073741824 pieces, more than 2097152"),
        "the watch directory's refusal is logged with its reason:\n{log}"
    );
    node.stop();

    // Restart with the hostile files still in the watch directory: the good torrent resumes,
    // the files are refused again, and nothing else is in the state.
    let node = Node::start(&cfg, &dir.path().join("run2.log"));
    // The files in the watch directory are read at start, before the API answers.
    let log = std::fs::read_to_string(&node.log).unwrap();
    for c in &corpus {
        let path = watch.join(format!("{}.torrent", c.name));
        let line = log
            .lines()
            .find(|l| l.contains(&format!("skipping {}: ", path.display())))
            .unwrap_or_else(|| panic!("{} not refused at the restart:\n{log}", c.name));
        assert!(line.contains(c.reason), "{line}");
    }
    let list = node.list();
    assert_eq!(list.len(), 1, "{list:#?}");
    assert_eq!(list[0]["name"], "good.bin");
    assert_eq!(list[0]["resumed"], true, "{list:#?}");
    node.stop();

    // An older version saved the 16 TiB torrent (its parser took it): the record is in the
    // state when the node starts. It is reported and skipped; the node runs.
    let (bomb, info) = shared_root((1 << 44) - 32768);
    let info_hash: [u8; 20] = ringseed::hash::sha256(&info.encode())[..20]
        .try_into()
        .unwrap();
    let conn = ringseed::db::open(&state.join("ringseed.db")).unwrap();
    ringseed::state::put(
        &conn,
        &ringseed::state::TorrentRecord {
            info_hash,
            torrent: bomb,
            source: None,
            data_dir: data.display().to_string(),
            added_at: 1,
            paused: false,
            stopped_by: None,
            limits: Default::default(),
            uploaded: 0,
            seeding_s: 0,
            verified: None,
            files: Vec::new(),
            download_dir: None,
            moving_to: None,
            org: Default::default(),
        },
    )
    .unwrap();
    drop(conn);
    std::fs::remove_dir_all(&watch).unwrap();
    std::fs::create_dir_all(&watch).unwrap();
    let node = Node::start(&cfg, &dir.path().join("run3.log"));
    node.wait("the good torrent seeding", |n| {
        n.list().iter().any(|t| t["state"] == "seeding")
    });
    assert_eq!(node.list().len(), 1, "{:#?}", node.list());
    assert_eq!(
        node.metric("ringseed_errors_total{reason=\"state_record\"}"),
        1.0
    );
    let hash = ringseed::metainfo::hex(&info_hash);
    let log = std::fs::read_to_string(&node.log).unwrap();
    assert!(
        log.contains(&format!("state: torrent {hash} no longer parses, skipped"))
            && log.contains("more than 2097152"),
        "{log}"
    );
    let peak = node.peak_kib();
    assert!(
        peak < idle + SERVICE_GROWTH_KIB,
        "peak RSS {peak} KiB at a start with the record"
    );
    eprintln!("service peak RSS with the old record in the state: {peak} KiB");
    node.stop();
}

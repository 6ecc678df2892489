//! `ringseed download` against real clients on loopback: it fetches byte-identical data from
//! libtorrent, aria2, Transmission, qBittorrent and rtorrent (by `--peer`, and through
//! opentracker), survives a peer that serves corrupted pieces (banned by IP) and peers that
//! break the protocol (cut off, counted), resumes after `kill -9` without fetching again what it
//! had, and with `--seed` goes on to serve libtorrent from the same process. Pieces a peer
//! started and abandoned (it choked us or went silent) are finished by another; in endgame
//! across two workers, pieces one worker's slow peer holds are copied by the other.
//!
//! Seeders that must be told apart (bans are by IP, as in libtorrent) listen on distinct
//! loopback addresses: 127.0.0.2 (libtorrent), 127.0.0.3 (aria2), 127.0.0.4 (`ringseed seed`),
//! 127.0.0.5 (a hostile peer written here), 127.0.0.6 (Transmission), 127.0.0.7 (qBittorrent),
//! 127.0.0.8 (rtorrent), 127.0.0.10 (peers written here that abandon their pieces),
//! 127.0.0.11 (a slow libtorrent).

mod common;

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::daemons::{QbtSeeder, RtorrentSeeder, TransmissionSeeder};
use common::{
    Payload, create_torrent, lt_tool, pattern, ringseed, signal, spawn_aria2_seeder,
    spawn_lt_seeder, stat, walk,
};
use ringseed::metainfo::Metainfo;
use ringseed::wire::{BLOCK_SIZE, BlockRequest, Handshake, Message};
use serde_json::Value;

/// A running `ringseed download --json`: its JSON lines arrive on `lines` (read by a thread, so
/// a hung process cannot hang the test), its stderr goes to a file shown on failure.
struct Download {
    child: Child,
    lines: mpsc::Receiver<Value>,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

/// Starts `ringseed download TORRENT --data DATA --json` with two workers (or the `--workers`
/// in `args`), listening on a free loopback port (or the `--listen` in `args`), no metrics, and
/// `args` (`--peer …`, `--no-trackers`, `--seed`).
fn start_download(torrent: &Path, data: &Path, args: &[String]) -> Download {
    let dir = tempfile::tempdir().unwrap();
    let stderr = dir.path().join("stderr");
    let mut cmd = ringseed();
    cmd.arg("download")
        .arg(torrent)
        .arg("--data")
        .arg(data)
        .args(["--json", "--metrics", "", "--stall-timeout", "30"]);
    if !args.iter().any(|a| a == "--listen") {
        cmd.args(["--listen", "127.0.0.1:0"]);
    }
    if !args.iter().any(|a| a == "--workers") {
        cmd.args(["--workers", "2"]);
    }
    let mut child = cmd
        .args(args)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("start ringseed download");
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            let v = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
            if tx.send(v).is_err() {
                break;
            }
        }
    });
    Download {
        child,
        lines,
        stderr,
        _dir: dir,
    }
}

/// How a download run ended.
struct Outcome {
    status: std::process::ExitStatus,
    /// The progress lines, then the final report (if it printed one).
    progress: Vec<Value>,
    report: Option<Value>,
    stderr: String,
}

impl Outcome {
    /// The final report, failing the test with everything known unless the run succeeded.
    fn done(&self) -> &Value {
        let report = self.report.as_ref().filter(|r| r["done"] == true);
        match report {
            Some(r) if self.status.success() => r,
            _ => panic!(
                "download failed: {}\nstderr: {}\nlast lines: {:?}",
                self.status,
                self.stderr,
                &self.progress[self.progress.len().saturating_sub(3)..]
            ),
        }
    }
}

impl Drop for Download {
    fn drop(&mut self) {
        // A test that failed half-way leaves no process behind (a no-op once waited for).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Download {
    /// The next JSON line, or `None` once the process closed its output; fails the test after
    /// `timeout`.
    fn next(&mut self, timeout: Duration) -> Option<Value> {
        match self.lines.recv_timeout(timeout) {
            Ok(v) => Some(v),
            Err(mpsc::RecvTimeoutError::Disconnected) => None,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = self.child.kill();
                panic!(
                    "ringseed download printed nothing for {timeout:?}: {}",
                    std::fs::read_to_string(&self.stderr).unwrap_or_default()
                );
            }
        }
    }

    /// Reads progress lines until `stop` holds for one; returns it.
    fn until(&mut self, timeout: Duration, stop: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(v) = self.next(left.max(Duration::from_millis(1))) else {
                let status = self.child.wait().unwrap();
                panic!(
                    "ringseed download exited ({status}) before the awaited line: {}",
                    std::fs::read_to_string(&self.stderr).unwrap_or_default()
                );
            };
            if stop(&v) {
                return v;
            }
        }
    }

    /// Waits (at most `timeout`) for the process to end; returns what it printed.
    fn finish(mut self, timeout: Duration) -> Outcome {
        let deadline = Instant::now() + timeout;
        let mut progress = Vec::new();
        let mut report = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left.max(Duration::from_millis(1))) {
                Ok(v) if v.get("done").is_some() => report = Some(v),
                Ok(v) => progress.push(v),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    panic!(
                        "ringseed download still running after {timeout:?}; last lines: {:?}\n\
                         stderr: {}",
                        &progress[progress.len().saturating_sub(3)..],
                        std::fs::read_to_string(&self.stderr).unwrap_or_default()
                    );
                }
            }
        }
        let status = self.child.wait().unwrap();
        Outcome {
            status,
            progress,
            report,
            stderr: std::fs::read_to_string(&self.stderr).unwrap_or_default(),
        }
    }
}

/// Runs a download to its end (at most a minute).
fn download(torrent: &Path, data: &Path, args: &[String]) -> Outcome {
    start_download(torrent, data, args).finish(Duration::from_secs(60))
}

fn peer(addr: SocketAddr) -> [String; 2] {
    ["--peer".into(), addr.to_string()]
}

fn args(parts: &[&[String]]) -> Vec<String> {
    parts.iter().flat_map(|p| p.iter().cloned()).collect()
}

fn no_trackers() -> Vec<String> {
    vec!["--no-trackers".into()]
}

/// Disconnects for `reason` over all workers.
fn disconnects(report: &Value, reason: &str) -> u64 {
    report["stats"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["disconnects"][reason].as_u64())
        .sum()
}

/// Every file of the torrent in `got` has the bytes it has in `want` (both download
/// directories); zero-length files must exist.
fn assert_same_files(meta: &Metainfo, want: &Path, got: &Path) {
    let mut files = 0;
    for (_, f) in meta.info.layout.data_files() {
        let path = got.join(f.rel_path());
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; downloaded: {:?}", path.display(), walk(got)));
        assert!(
            bytes == std::fs::read(want.join(f.rel_path())).unwrap(),
            "{} differs from the seeded file",
            path.display()
        );
        files += 1;
    }
    assert!(files > 0);
}

/// The payload's two torrents: the single file in 48 KiB pieces, the tree (odd file sizes, a
/// zero-length file) in 80 KiB pieces; neither piece size divides any file size. `trackers`
/// become `-t` options.
fn payload_torrents(p: &Payload, trackers: &[String]) -> [(PathBuf, Metainfo); 2] {
    [(&p.single, 48u32), (&p.multi, 80)].map(|(src, kib)| {
        let name = src.file_name().unwrap().to_str().unwrap().to_owned();
        let out = p.dir.path().join(format!("{name}.torrent"));
        let mut flags = vec![
            "--no-date".to_owned(),
            "--piece-kib".into(),
            kib.to_string(),
        ];
        for t in trackers {
            flags.extend(["-t".into(), t.clone()]);
        }
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let meta = create_torrent(src, &out, &flags);
        (out, meta)
    })
}

fn assert_has_empty_file(meta: &Metainfo, dir: &Path) {
    let empty: Vec<_> = meta
        .info
        .layout
        .data_files()
        .filter(|(_, f)| f.length == 0)
        .map(|(_, f)| dir.join(f.rel_path()))
        .collect();
    assert!(!empty.is_empty(), "the payload has a zero-length file");
    for e in empty {
        assert!(e.is_file(), "{} was not created", e.display());
    }
}

/// Checks a finished download of `meta` from a single seeder: complete, byte-identical to
/// `data`, the zero-length file created, and every byte received exactly once.
fn check_single_seeder_download(
    name: &str,
    meta: &Metainfo,
    data: &Path,
    out: &Path,
    res: &Outcome,
) {
    let report = res.done();
    let progress = &report["progress"];
    assert_eq!(progress["pieces_done"], progress["pieces"], "{report}");
    assert_eq!(progress["bytes_done"], meta.info.layout.total_length);
    assert_eq!(progress["hash_failures"], 0, "{report}");
    // One seeder: every block is asked of it once, nothing is fetched twice.
    assert_eq!(
        progress["downloaded"], meta.info.layout.total_length,
        "{name}: bytes received != torrent size: {report}"
    );
    assert_eq!(stat(report, "wasted_blocks"), 0, "{report}");
    assert!(stat(report, "pieces_done") >= u64::from(meta.info.layout.num_pieces));
    assert_same_files(meta, data, out);
    if meta.info.name == "multi" {
        assert_has_empty_file(meta, out);
    }
}

/// Downloads both payload torrents from `seed(torrent)` by `--peer` and compares every file.
fn download_both_from(name: &str, seed: impl Fn(&Path, &Path) -> SocketAddr) {
    let p = Payload::new();
    for (torrent, meta) in payload_torrents(&p, &[]) {
        let addr = seed(&torrent, p.data_dir());
        let out = p.dir.path().join(format!("{name}-{}", meta.info.name));
        let res = download(&torrent, &out, &args(&[&peer(addr), &no_trackers()]));
        check_single_seeder_download(name, &meta, p.data_dir(), &out, &res);
    }
}

/// Downloads both payload torrents at the same time (two ringseed processes) by `--peer` from
/// one seeder at `addr` that seeds both, and compares every file. At the same time, because a
/// seeder such as Transmission waits up to 10 s before it unchokes anyone.
fn download_both_at_once_from(
    name: &str,
    p: &Payload,
    torrents: &[(PathBuf, Metainfo)],
    addr: SocketAddr,
) {
    let runs: Vec<_> = torrents
        .iter()
        .map(|(torrent, meta)| {
            let out = p.dir.path().join(format!("{name}-{}", meta.info.name));
            let dl = start_download(torrent, &out, &args(&[&peer(addr), &no_trackers()]));
            (dl, out)
        })
        .collect();
    for ((dl, out), (_, meta)) in runs.into_iter().zip(torrents) {
        let res = dl.finish(Duration::from_secs(60));
        check_single_seeder_download(name, meta, p.data_dir(), &out, &res);
    }
}

/// libtorrent seeds; ringseed, told its address, downloads both torrents byte-identical.
#[test]
fn downloads_from_a_libtorrent_seeder() {
    let seeders = std::sync::Mutex::new(Vec::new());
    download_both_from("lt", |torrent, data| {
        let s = spawn_lt_seeder(torrent, data, "127.0.0.2", 0);
        let addr = s.addr;
        seeders.lock().unwrap().push(s);
        addr
    });
}

/// aria2 seeds (after checking its data); ringseed downloads both torrents byte-identical.
#[test]
fn downloads_from_an_aria2_seeder() {
    let seeders = std::sync::Mutex::new(Vec::new());
    download_both_from("aria2", |torrent, data| {
        let s = spawn_aria2_seeder(torrent, data, "127.0.0.3", &["-V"]);
        let addr = s.addr;
        seeders.lock().unwrap().push(s);
        addr
    });
}

/// Transmission (`transmission-daemon`) checks and seeds both torrents from one process;
/// ringseed, told its address, downloads them byte-identical. Transmission never dials a
/// loopback peer, so this works only because ringseed dials it.
#[test]
fn downloads_from_a_transmission_seeder() {
    let p = Payload::new();
    let torrents = payload_torrents(&p, &[]);
    let mut tr = TransmissionSeeder::start(p.data_dir(), "127.0.0.6", None);
    for (torrent, _) in &torrents {
        tr.add(torrent);
    }
    tr.wait_seeding(torrents.len(), Duration::from_secs(20));
    download_both_at_once_from("transmission", &p, &torrents, tr.addr);
}

/// qBittorrent (`qbittorrent-nox`, torrents added through its Web API) checks and seeds both
/// torrents from one process; ringseed downloads them byte-identical.
#[test]
fn downloads_from_a_qbittorrent_seeder() {
    let p = Payload::new();
    let torrents = payload_torrents(&p, &[]);
    let qbt = QbtSeeder::start("127.0.0.7", 0);
    for (torrent, _) in &torrents {
        qbt.add(torrent, p.data_dir(), false);
    }
    qbt.wait_seeding(torrents.len(), Duration::from_secs(20));
    download_both_at_once_from("qbittorrent", &p, &torrents, qbt.addr);
}

/// rtorrent seeds both torrents from one process; ringseed, told its address, downloads them
/// byte-identical. rtorrent refuses a torrent that names no tracker, so these name a real
/// opentracker (rtorrent announces to it; ringseed, with `--no-trackers`, does not).
#[test]
fn downloads_from_an_rtorrent_seeder() {
    use common::opentracker::OpenTracker;
    let p = Payload::new();
    let hashes = payload_torrents(&p, &[]).map(|(_, m)| m.info.hash.v1.unwrap());
    let tracker = OpenTracker::start(&hashes);
    let torrents = payload_torrents(&p, &[tracker.http()]);
    let loaded: Vec<_> = torrents.iter().map(|(t, m)| (t.as_path(), m)).collect();
    let rt = RtorrentSeeder::start(p.data_dir(), "127.0.0.8", &loaded);
    download_both_at_once_from("rtorrent", &p, &torrents, rt.addr);
}

/// opentracker's scrape of `info_hash`: `(complete, downloaded)` — seeders, and `completed`
/// events heard.
fn scrape(tracker: &common::opentracker::OpenTracker, info_hash: &[u8; 20]) -> (u64, u64) {
    let mut encoded = String::new();
    ringseed::tracker::http::percent_encode(info_hash, &mut encoded);
    let Ok(mut s) = TcpStream::connect((tracker.ip, tracker.port)) else {
        return (0, 0);
    };
    let _ = write!(
        s,
        "GET /scrape?info_hash={encoded} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"
    );
    let mut body = Vec::new();
    let _ = s.read_to_end(&mut body);
    // …d8:completei<N>e10:downloadedi<N>e10:incompletei<N>e… ("10:incompletei" does not hold
    // "8:completei").
    let int = |key: &[u8]| -> u64 {
        body.windows(key.len())
            .position(|w| w == key)
            .map(|at| &body[at + key.len()..])
            .and_then(|rest| {
                let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
                std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
            })
            .unwrap_or(0)
    };
    (int(b"8:completei"), int(b"10:downloadedi"))
}

/// No `--peer`: ringseed finds the seeder that `seed(torrent, data)` starts (and keeps running
/// while its result lives) through opentracker (HTTP) and downloads the multi-file torrent; it
/// also announces `completed` before it exits.
fn download_through_a_tracker<S>(name: &str, seed: impl FnOnce(&Path, &Path) -> S) {
    use common::opentracker::OpenTracker;
    let p = Payload::new();
    // The info-hash does not depend on the trackers: whitelist it before the tracker exists.
    let [_, (_, plain)] = payload_torrents(&p, &[]);
    let tracker = OpenTracker::start(&[plain.info.hash.v1.unwrap()]);
    let [_, (torrent, meta)] = payload_torrents(&p, &[tracker.http()]);
    assert_eq!(meta.info.hash, plain.info.hash);
    let _seeder = seed(&torrent, p.data_dir());
    let hash = meta.info.hash.v1.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while scrape(&tracker, &hash).0 == 0 {
        assert!(
            Instant::now() < deadline,
            "{name} never announced to opentracker"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = p.dir.path().join(format!("{name}-via-tracker"));
    let res = download(&torrent, &out, &[]);
    let report = res.done();
    assert!(stat(report, "connected_out") >= 1, "{report}");
    assert_same_files(&meta, p.data_dir(), &out);
    assert_has_empty_file(&meta, &out);
    assert_eq!(
        scrape(&tracker, &hash).1,
        1,
        "opentracker heard no `completed` from ringseed"
    );
}

#[test]
fn finds_a_libtorrent_seeder_through_a_tracker() {
    download_through_a_tracker("libtorrent", |torrent, data| {
        spawn_lt_seeder(torrent, data, "127.0.0.2", 0)
    });
}

/// Transmission announces its peer port from its bind address (libcurl bound to it), so the
/// tracker hands ringseed an address Transmission listens on.
#[test]
fn finds_a_transmission_seeder_through_a_tracker() {
    download_through_a_tracker("transmission", |torrent, data| {
        let mut tr = TransmissionSeeder::start(data, "127.0.0.6", None);
        tr.add(torrent);
        tr.wait_seeding(1, Duration::from_secs(20));
        tr
    });
}

#[test]
fn finds_an_rtorrent_seeder_through_a_tracker() {
    download_through_a_tracker("rtorrent", |torrent, data| {
        let meta = Metainfo::from_bytes(&std::fs::read(torrent).unwrap()).unwrap();
        RtorrentSeeder::start(data, "127.0.0.8", &[(torrent, &meta)])
    });
}

#[test]
fn finds_a_qbittorrent_seeder_through_a_tracker() {
    download_through_a_tracker("qbittorrent", |torrent, data| {
        let qbt = QbtSeeder::start("127.0.0.7", 0);
        qbt.add(torrent, data, false);
        qbt.wait_seeding(1, Duration::from_secs(20));
        qbt
    });
}

/// Copies the payload file into `dir` with one byte flipped in every second piece (the even
/// ones), and returns the copy's directory.
fn corrupted_copy(src: &Path, meta: &Metainfo, dir: &Path) -> PathBuf {
    let mut bytes = std::fs::read(src).unwrap();
    let piece = meta.info.layout.piece_length as usize;
    for i in (0..meta.info.layout.num_pieces as usize).step_by(2) {
        let at = (i * piece + 777).min(bytes.len() - 1);
        bytes[at] ^= 0x5a;
    }
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(src.file_name().unwrap()), &bytes).unwrap();
    dir.to_path_buf()
}

/// Three seeders at once, three different clients: qBittorrent (127.0.0.7) and aria2
/// (127.0.0.3) with the real data, and `ringseed seed --skip-check` (127.0.0.4) serving a copy
/// with a flipped byte in every second piece. ringseed finishes byte-identical, having failed
/// at least one piece's hash, banned the corrupting address, and cut it off for bad data; the
/// qBittorrent seeder did serve part of it.
#[test]
fn a_corrupting_peer_in_the_swarm_is_banned_and_the_download_completes() {
    let Corrupting {
        dir,
        data,
        torrent,
        meta,
        corrupt,
    } = Corrupting::new("swarm", 3 << 20, "48");
    // The honest seeders are throttled so the download takes a few seconds: every seeder gets
    // its share of requests, the corrupting one included.
    let qbt = QbtSeeder::start("127.0.0.7", 1 << 20);
    qbt.add(&torrent, &data, false);
    qbt.wait_seeding(1, Duration::from_secs(20));
    let aria = spawn_aria2_seeder(
        &torrent,
        &data,
        "127.0.0.3",
        &["-V", "--max-upload-limit=1M"],
    );
    let out = dir.path().join("out");
    let res = download(
        &torrent,
        &out,
        &args(&[
            &peer(qbt.addr),
            &peer(aria.addr),
            &peer(corrupt.0.addr),
            &no_trackers(),
        ]),
    );
    let report = res.done();
    let progress = &report["progress"];
    assert_same_files(&meta, &data, &out);
    assert!(progress["hash_failures"].as_u64().unwrap() >= 1, "{report}");
    assert!(progress["banned"].as_u64().unwrap() >= 1, "{report}");
    assert!(stat(report, "hash_failures") >= 1, "{report}");
    assert!(disconnects(report, "bad_data") >= 1, "{report}");
    // qBittorrent refreshes its statistics about once a second.
    let deadline = Instant::now() + Duration::from_secs(10);
    while qbt.uploaded() == 0 {
        assert!(
            Instant::now() < deadline,
            "qBittorrent uploaded nothing: {:?}",
            qbt.torrents()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Two fast `ringseed seed` processes, one serving a copy with a flipped byte in every second
/// piece, and small pieces: complete pieces arrive many at a time, so on a CPU with AVX-512
/// they are hashed sixteen at a time in lanes (`ringseed::sha1x16`), and the bad ones must
/// still be caught there, their sender banned, and the download byte-identical.
#[test]
fn pieces_hashed_together_in_lanes_catch_bad_data() {
    let Corrupting {
        dir,
        data,
        torrent,
        meta,
        corrupt,
    } = Corrupting::new("lanes", 24 << 20, "64");
    let good = KillOnDrop(common::spawn_seeder(&torrent, &data, "127.0.0.3", &[]));
    let out = dir.path().join("out");
    let res = download(
        &torrent,
        &out,
        &args(&[&peer(good.0.addr), &peer(corrupt.0.addr), &no_trackers()]),
    );
    let report = res.done();
    assert_same_files(&meta, &data, &out);
    assert!(stat(report, "hash_failures") >= 1, "{report}");
    assert!(
        report["progress"]["banned"].as_u64().unwrap() >= 1,
        "{report}"
    );
    assert!(disconnects(report, "bad_data") >= 1, "{report}");
    let in_lanes = stat(report, "pieces_hashed_in_lanes");
    if ringseed::sha1x16::available() {
        assert!(in_lanes >= 16, "{report}");
    } else {
        assert_eq!(in_lanes, 0, "{report}");
    }
}

/// A payload of `len` bytes in `data/NAME.bin`, its torrent (pieces of `piece_kib`), and a
/// `ringseed seed --skip-check` on 127.0.0.4 serving a copy with a flipped byte in every
/// second piece.
struct Corrupting {
    dir: tempfile::TempDir,
    data: PathBuf,
    torrent: PathBuf,
    meta: Metainfo,
    corrupt: KillOnDrop,
}

impl Corrupting {
    fn new(name: &str, len: usize, piece_kib: &str) -> Corrupting {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let src = data.join(format!("{name}.bin"));
        std::fs::write(&src, pattern(len, 21)).unwrap();
        let torrent = dir.path().join(format!("{name}.torrent"));
        let meta = create_torrent(&src, &torrent, &["--no-date", "--piece-kib", piece_kib]);
        let bad = corrupted_copy(&src, &meta, &dir.path().join("bad"));
        let config = dir.path().join("skip-check.toml");
        std::fs::write(&config, "[torrents]\nskip_check = true\n").unwrap();
        let corrupt = KillOnDrop(common::spawn_seeder_with(
            &torrent,
            &bad,
            "127.0.0.4",
            &[],
            &["--config".as_ref(), config.as_os_str()],
        ));
        Corrupting {
            dir,
            data,
            torrent,
            meta,
            corrupt,
        }
    }
}

/// A `ringseed seed` process, killed when the test ends (passed or not).
struct KillOnDrop(common::Seeder);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.child.kill();
        let _ = self.0.child.wait();
    }
}

/// `kill -9` half-way, then the same command again: the second run keeps the verified pieces
/// on disk (its first line already shows them), fetches only the rest (plus a few pieces in
/// flight at the end), and finishes byte-identical.
#[test]
fn resumes_after_kill_9_without_fetching_again_what_it_had() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let src = data.join("resume.bin");
    let size = (4 << 20) + 12_345;
    std::fs::write(&src, pattern(size, 33)).unwrap();
    let torrent = dir.path().join("resume.torrent");
    let meta = create_torrent(&src, &torrent, &["--no-date", "--piece-kib", "48"]);
    // 1 MiB/s: about four seconds for the whole.
    let lt = spawn_lt_seeder(&torrent, &data, "127.0.0.2", 1 << 20);
    let out = dir.path().join("out");
    let run = args(&[&peer(lt.addr), &no_trackers()]);

    let mut first = start_download(&torrent, &out, &run);
    let at_kill = first.until(Duration::from_secs(30), |v| {
        v["bytes_done"].as_u64().unwrap() * 10 >= size as u64 * 4
    });
    signal(&first.child, nix::sys::signal::Signal::SIGKILL);
    let killed = first.finish(Duration::from_secs(10));
    assert!(!killed.status.success());
    assert!(killed.report.is_none(), "it finished before the kill");
    let pieces = u64::from(meta.info.layout.num_pieces);
    assert!(
        at_kill["pieces_done"].as_u64().unwrap() < pieces,
        "the kill came too late: {at_kill}"
    );

    // What is on disk now, as a check sees it.
    let verify = ringseed()
        .args(["verify", "--json", "--data"])
        .arg(&out)
        .arg(&torrent)
        .output()
        .unwrap();
    let verify: Value = serde_json::from_slice(&verify.stdout).unwrap();
    let good = verify["good"].as_u64().unwrap();
    let piece = meta.info.layout.piece_length;
    let last = meta.info.layout.piece_size(meta.info.layout.num_pieces - 1);
    let last_good = !verify["missing"]
        .as_array()
        .unwrap()
        .iter()
        .chain(verify["bad"].as_array().unwrap())
        .any(|i| i.as_u64() == Some(pieces - 1));
    let kept = if last_good {
        (good - 1) * piece + last
    } else {
        good * piece
    };
    assert!(
        kept >= at_kill["bytes_done"].as_u64().unwrap(),
        "pieces reported done were lost: {verify} after {at_kill}"
    );

    let mut second = start_download(&torrent, &out, &run);
    let first_line = second.next(Duration::from_secs(30)).expect("a first line");
    assert!(
        first_line["bytes_done"].as_u64().unwrap() >= kept,
        "the second run did not keep the data: {first_line}, {kept} bytes verified on disk"
    );
    let res = second.finish(Duration::from_secs(60));
    let report = res.done();
    let downloaded = report["progress"]["downloaded"].as_u64().unwrap();
    let missing = size as u64 - kept;
    assert!(
        downloaded <= missing + 4 * piece,
        "the second run fetched {downloaded} bytes where {missing} were missing"
    );
    assert!(downloaded >= missing, "{downloaded} < {missing}");
    assert_same_files(&meta, &data, &out);
}

/// `download --seed`: once every piece is in (the progress says `seeding`), the files are all
/// there, and libtorrent downloads the torrent from the same ringseed process byte-identical
/// (the original seeder is gone by then). SIGINT then ends it with exit 0 and the report.
#[test]
fn seeds_after_downloading_without_a_restart() {
    let p = Payload::new();
    let [_, (torrent, meta)] = payload_torrents(&p, &[]);
    let lt = spawn_lt_seeder(&torrent, p.data_dir(), "127.0.0.2", 0);
    let out = p.dir.path().join("ringseed");
    let port = common::opentracker::free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut dl = start_download(
        &torrent,
        &out,
        &args(&[
            &peer(lt.addr),
            &no_trackers(),
            &["--seed".into(), "--listen".into(), listen.clone()],
        ]),
    );
    let done = dl.until(Duration::from_secs(60), |v| v["state"] == "seeding");
    assert_eq!(done["pieces_done"], done["pieces"], "{done}");
    // Complete on disk while it seeds, the zero-length file included.
    assert_same_files(&meta, p.data_dir(), &out);
    assert_has_empty_file(&meta, &out);
    drop(lt);

    let leech = p.dir.path().join("libtorrent");
    let res: Value = serde_json::from_str(&lt_tool(&[
        "download",
        torrent.to_str().unwrap(),
        leech.to_str().unwrap(),
        &listen,
        "60",
    ]))
    .unwrap();
    assert_eq!(res["done"], true, "libtorrent from ringseed: {res}");
    assert_same_files(&meta, p.data_dir(), &leech);
    assert!(
        dl.child.try_wait().unwrap().is_none(),
        "ringseed exited while seeding"
    );
    let size = meta.info.layout.total_length;
    let served = dl.until(Duration::from_secs(10), |v| {
        v["uploaded"].as_u64().unwrap() >= size
    });
    assert_eq!(served["state"], "seeding");

    signal(&dl.child, nix::sys::signal::Signal::SIGINT);
    let end = dl.finish(Duration::from_secs(20));
    let report = end.done();
    assert!(stat(report, "bytes_up") >= size, "{report}");
    assert!(stat(report, "accepted") >= 1, "{report}");
}

/// How a hostile seeder breaks the protocol, after a correct handshake and bitfield.
#[derive(Debug, Clone, Copy)]
enum Hostility {
    /// A piece message (real data) for a block nobody asked for: sent before the unchoke, when
    /// no request can be in flight.
    UnrequestedBlock,
    /// Answers the first request with a 16 KiB block that starts 8 KiB before the end of the
    /// requested piece.
    PastPieceEnd,
    /// A length prefix of 2^31 after the first request.
    HugeLength,
    /// A bitfield one byte longer than the torrent's pieces need.
    WrongBitfieldLength,
}

impl Hostility {
    /// The disconnect reason ringseed must count.
    fn reason(self) -> &'static str {
        match self {
            Hostility::UnrequestedBlock | Hostility::PastPieceEnd => "unrequested_block",
            Hostility::HugeLength => "message_too_long",
            Hostility::WrongBitfieldLength => "bad_message",
        }
    }
}

fn encoded(m: Message<'_>) -> Vec<u8> {
    let mut v = Vec::new();
    m.encode(&mut v);
    v
}

/// Reads messages until a request arrives; `None` if the connection ends first.
fn first_request(s: &mut TcpStream) -> Option<BlockRequest> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        while let Some((m, used)) = ringseed::wire::parse_message(&buf, 1 << 20).ok()? {
            if let Message::Request(r) = m {
                return Some(r);
            }
            buf.drain(..used);
        }
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Whether the other side closes the connection (EOF or reset) within the read timeout.
fn is_cut(mut s: TcpStream) -> bool {
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

/// One connection to the hostile seeder: `Ok(())` when it misbehaved and was cut off.
fn hostile_conn(
    mut s: TcpStream,
    how: Hostility,
    meta: &Metainfo,
    payload: &[u8],
) -> Result<(), String> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let ih = meta.info.hash.wire_id();
    let mut hs = [0u8; Handshake::LEN];
    s.read_exact(&mut hs)
        .map_err(|e| format!("handshake: {e}"))?;
    match Handshake::parse(&hs) {
        Ok(Some(h)) if h.info_hash == ih => {}
        other => return Err(format!("unexpected handshake {other:?}")),
    }
    let n = meta.info.layout.num_pieces;
    let mut bits = vec![0xffu8; n.div_ceil(8) as usize];
    if !n.is_multiple_of(8) {
        *bits.last_mut().unwrap() = 0xff << (8 - n % 8);
    }
    if matches!(how, Hostility::WrongBitfieldLength) {
        bits.push(0xff);
    }
    let mut hello = Handshake::new(ih, *b"-XX0000-hostile00001")
        .encode()
        .to_vec();
    hello.extend(encoded(Message::Bitfield(&bits)));
    let io = |e: std::io::Error| format!("write: {e}");
    match how {
        Hostility::UnrequestedBlock => {
            hello.extend(encoded(Message::Piece {
                index: 0,
                begin: 0,
                data: &payload[..BLOCK_SIZE as usize],
            }));
            hello.extend(encoded(Message::Unchoke));
            s.write_all(&hello).map_err(io)?;
        }
        Hostility::WrongBitfieldLength => {
            hello.extend(encoded(Message::Unchoke));
            s.write_all(&hello).map_err(io)?;
        }
        Hostility::PastPieceEnd | Hostility::HugeLength => {
            hello.extend(encoded(Message::Unchoke));
            s.write_all(&hello).map_err(io)?;
            let r = first_request(&mut s).ok_or("no request came")?;
            let bad = if let Hostility::PastPieceEnd = how {
                let piece = meta.info.layout.piece_size(r.index);
                let begin = piece.saturating_sub(u64::from(BLOCK_SIZE / 2));
                let at = (u64::from(r.index) * meta.info.layout.piece_length + begin) as usize;
                let end = (at + BLOCK_SIZE as usize).min(payload.len());
                let mut data = payload[at..end].to_vec();
                data.resize(BLOCK_SIZE as usize, 0);
                encoded(Message::Piece {
                    index: r.index,
                    begin: begin as u32,
                    data: &data,
                })
            } else {
                vec![0x80, 0, 0, 0, 7, 0, 0, 0, 0]
            };
            // It may close before reading all of it.
            let _ = s.write_all(&bad);
        }
    }
    if is_cut(s) {
        Ok(())
    } else {
        Err("not cut off".into())
    }
}

/// A seeder on 127.0.0.5 that misbehaves as `how` on every connection; each connection's
/// result arrives on the receiver.
fn hostile_seeder(
    how: Hostility,
    meta: &Metainfo,
    payload: std::sync::Arc<Vec<u8>>,
) -> (SocketAddr, mpsc::Receiver<Result<(), String>>) {
    let listener = TcpListener::bind("127.0.0.5:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    let meta = meta.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(s) = s else { break };
            let (tx, meta, payload) = (tx.clone(), meta.clone(), payload.clone());
            std::thread::spawn(move || {
                let _ = tx.send(hostile_conn(s, how, &meta, &payload));
            });
        }
    });
    (addr, rx)
}

/// Each kind of protocol abuse from a seeder that claims every piece, next to a good libtorrent
/// seeder: the download finishes byte-identical, and the hostile connection is cut with its
/// reason counted.
#[test]
fn hostile_peers_are_cut_off_with_their_reason_and_the_download_completes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let src = data.join("hostile.bin");
    let payload = std::sync::Arc::new(pattern(2 << 20, 44));
    std::fs::write(&src, payload.as_slice()).unwrap();
    let torrent = dir.path().join("hostile.torrent");
    // 43 pieces of 48 KiB: the bitfield has spare bits.
    let meta = create_torrent(&src, &torrent, &["--no-date", "--piece-kib", "48"]);
    assert!(!meta.info.layout.num_pieces.is_multiple_of(8));
    // Throttled, so the download lasts while the hostile peer does its worst.
    let lt = spawn_lt_seeder(&torrent, &data, "127.0.0.2", 1 << 20);
    // The hostile seeder speaks plain BitTorrent only: ringseed dials it plain (by default it
    // tries MSE first, as libtorrent does).
    let plain_cfg = dir.path().join("plain-dials.toml");
    std::fs::write(&plain_cfg, "[engine]\nencryption_out = \"disabled\"\n").unwrap();
    let plain_dials = vec![
        "--config".to_owned(),
        plain_cfg.to_str().unwrap().to_owned(),
    ];
    for how in [
        Hostility::UnrequestedBlock,
        Hostility::PastPieceEnd,
        Hostility::HugeLength,
        Hostility::WrongBitfieldLength,
    ] {
        let (addr, results) = hostile_seeder(how, &meta, payload.clone());
        let out = dir.path().join(format!("{how:?}"));
        let res = download(
            &torrent,
            &out,
            &args(&[&peer(addr), &peer(lt.addr), &no_trackers(), &plain_dials]),
        );
        let report = res.done();
        assert_same_files(&meta, &data, &out);
        // The hostile side reports once its connection ends (at the latest when ringseed exits).
        let mut conns: Vec<Result<(), String>> = results
            .recv_timeout(Duration::from_secs(15))
            .into_iter()
            .collect();
        conns.extend(results.try_iter());
        assert!(
            conns.iter().any(Result::is_ok),
            "{how:?}: the hostile peer was never cut off: {conns:?}"
        );
        assert!(
            disconnects(report, how.reason()) >= 1,
            "{how:?}: no `{}` disconnect counted: {report}",
            how.reason()
        );
    }
}

/// A magnet link with only the info-hash, and a libtorrent seeder given by `--peer`: the
/// metadata (BEP 9) and the data both come from libtorrent; the metadata is kept for a second
/// run.
#[test]
fn a_magnet_gets_metadata_and_data_from_a_libtorrent_seeder() {
    let p = Payload::new();
    let [_, (torrent, meta)] = payload_torrents(&p, &[]);
    let s = spawn_lt_seeder(&torrent, p.data_dir(), "127.0.0.2", 0);
    let hash = ringseed::metainfo::hex(&meta.info.hash.wire_id());
    let magnet = format!("magnet:?xt=urn:btih:{hash}");
    let out = p.dir.path().join("from-magnet");
    let res = download(
        Path::new(&magnet),
        &out,
        &args(&[&peer(s.addr), &no_trackers()]),
    );
    let report = res.done();
    assert_eq!(
        report["progress"]["bytes_done"],
        meta.info.layout.total_length
    );
    assert_same_files(&meta, p.data_dir(), &out);
    assert_has_empty_file(&meta, &out);
    let kept = out.join(".ringseed").join(format!("{hash}.torrent"));
    let kept = Metainfo::from_bytes(&std::fs::read(&kept).unwrap()).unwrap();
    assert_eq!(
        kept.info.raw, meta.info.raw,
        "the metadata kept is the torrent's"
    );
    drop(s);
}

/// How a holder (a peer written here) abandons the piece it was asked for.
#[derive(Debug, Clone, Copy)]
enum Hold {
    /// It chokes us (no fast extension: our requests are gone).
    Choke,
    /// It stops answering, still connected: we count it as snubbing us after the request
    /// timeout.
    Stall,
}

/// A seeder on 127.0.0.10 that has every piece, answers the first two requests of each
/// connection with the real blocks, then abandons the rest as `how` says, and stays connected
/// (reading what comes) until the other side closes.
fn holder(how: Hold, meta: &Metainfo, payload: std::sync::Arc<Vec<u8>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.10:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let meta = meta.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(s) = s else { break };
            let (meta, payload) = (meta.clone(), payload.clone());
            std::thread::spawn(move || hold_conn(s, how, &meta, &payload));
        }
    });
    addr
}

fn hold_conn(mut s: TcpStream, how: Hold, meta: &Metainfo, payload: &[u8]) -> Option<()> {
    s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    let ih = meta.info.hash.wire_id();
    let mut hs = [0u8; Handshake::LEN];
    s.read_exact(&mut hs).ok()?;
    let mut hello = Handshake::new(ih, *b"-XX0000-holder000001");
    // Neither the fast extension nor BEP 10: a choke takes our requests away.
    hello.reserved = [0; 8];
    let mut out = hello.encode().to_vec();
    let n = meta.info.layout.num_pieces;
    let mut bits = vec![0xffu8; n.div_ceil(8) as usize];
    if !n.is_multiple_of(8) {
        *bits.last_mut()? = 0xff << (8 - n % 8);
    }
    out.extend(encoded(Message::Bitfield(&bits)));
    out.extend(encoded(Message::Unchoke));
    s.write_all(&out).ok()?;
    let mut answered = 0;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        while let Some((m, used)) = ringseed::wire::parse_message(&buf, 1 << 20).ok()? {
            if let Message::Request(r) = m
                && answered < 2
            {
                let at = (u64::from(r.index) * meta.info.layout.piece_length + u64::from(r.begin))
                    as usize;
                let data = payload.get(at..at + r.length as usize)?;
                let mut out = encoded(Message::Piece {
                    index: r.index,
                    begin: r.begin,
                    data,
                });
                answered += 1;
                if answered == 2 && matches!(how, Hold::Choke) {
                    out.extend(encoded(Message::Choke));
                }
                s.write_all(&out).ok()?;
            }
            buf.drain(..used);
        }
        let got = s.read(&mut chunk).ok()?;
        if got == 0 {
            return Some(());
        }
        buf.extend_from_slice(&chunk[..got]);
    }
}

/// One worker, a memory budget of four 1 MiB pieces, and four peers that each start a piece
/// and abandon it after two blocks (two choke us, two go silent), next to a throttled
/// libtorrent seeder. The abandoned parts alone fill the budget: were they kept for the
/// peers that started them, nothing new could start and the download would stall. They are
/// disowned instead (at the choke, or at the snub two seconds later) and libtorrent's
/// connection finishes them.
#[test]
fn pieces_abandoned_by_choking_or_silent_peers_are_finished_by_another() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let src = data.join("abandoned.bin");
    let payload = std::sync::Arc::new(pattern(8 << 20, 55));
    std::fs::write(&src, payload.as_slice()).unwrap();
    let torrent = dir.path().join("abandoned.torrent");
    let meta = create_torrent(&src, &torrent, &["--no-date", "--piece-kib", "1024"]);
    let config = dir.path().join("small.toml");
    std::fs::write(
        &config,
        // The holders speak plain BitTorrent only: plain dials (no MSE attempt first).
        "[engine]\ndownload_memory_mib = 4\nrequest_timeout_s = 2\nencryption_out = \"disabled\"\n",
    )
    .unwrap();
    let lt = spawn_lt_seeder(&torrent, &data, "127.0.0.2", 2 << 20);
    let mut run = vec![
        "--workers".to_owned(),
        "1".into(),
        "--config".into(),
        config.to_str().unwrap().into(),
        "--no-trackers".into(),
    ];
    for how in [Hold::Choke, Hold::Stall, Hold::Choke, Hold::Stall] {
        run.extend(peer(holder(how, &meta, payload.clone())));
    }
    run.extend(peer(lt.addr));
    let out = dir.path().join("out");
    let res = download(&torrent, &out, &run);
    let report = res.done();
    assert_same_files(&meta, &data, &out);
    assert!(
        stat(report, "parts_adopted") >= 2,
        "no part changed hands: {report}"
    );
}

/// Endgame across workers: 16 KiB pieces (256 of them, one block each) from a libtorrent
/// seeder at 1 MiB/s and a slow one at 16 KiB/s, each on its own worker (`--workers 2`, dials
/// alternate). The slow peer's worker claims a piece per request it sends; once the fast one
/// has nothing left to claim (after about four seconds), its worker copies those pieces, and
/// the first copy checked writes each piece (the other is thrown away or dropped). The data is
/// byte-identical and every piece verified once.
#[test]
fn endgame_copies_pieces_another_workers_slow_peer_holds() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let src = data.join("endgame.bin");
    std::fs::write(&src, pattern(4 << 20, 66)).unwrap();
    let torrent = dir.path().join("endgame.torrent");
    let meta = create_torrent(&src, &torrent, &["--no-date", "--piece-kib", "16"]);
    assert_eq!(meta.info.layout.num_pieces, 256);
    let fast = spawn_lt_seeder(&torrent, &data, "127.0.0.2", 1 << 20);
    let slow = spawn_lt_seeder(&torrent, &data, "127.0.0.11", 16 << 10);
    let out = dir.path().join("out");
    let res = download(
        &torrent,
        &out,
        &args(&[&peer(slow.addr), &peer(fast.addr), &no_trackers()]),
    );
    let report = res.done();
    assert_same_files(&meta, &data, &out);
    assert!(stat(report, "endgame_copies") >= 1, "{report}");
    assert_eq!(stat(report, "pieces_done"), 256, "{report}");
    assert_eq!(report["progress"]["hash_failures"], 0, "{report}");
}

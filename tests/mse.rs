//! MSE/PE handshakes (`ringseed::mse`) against libtorrent, the reference implementation, over
//! loopback: our initiator dials a libtorrent seeder that accepts encrypted connections only,
//! and reads real blocks through the RC4 stream (or through plaintext after an obfuscated
//! handshake); our responder takes a libtorrent downloader's forced-encryption connection and
//! finds the torrent and libtorrent's BitTorrent handshake inside it.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{create_torrent, pattern, spawn_lt_seeder_env};
use ringseed::engine::encryption::{Encryption, Level, Policy};
use ringseed::engine::torrent::Start;
use ringseed::engine::{Engine, Settings, StatsSnapshot, Torrent, UploadPath};
use ringseed::mse::{Done, Initiator, KeyPair, Method, Methods, Responder, obfuscated};
use ringseed::wire::{BlockRequest, Handshake, Message};

fn read_some(s: &mut TcpStream) -> Vec<u8> {
    let mut buf = vec![0u8; 65536];
    let n = s.read(&mut buf).expect("read");
    assert!(n > 0, "the peer closed the connection");
    buf.truncate(n);
    buf
}

/// Our side of a connection after the handshake: decrypts what arrives (if RC4) into `inc`
/// and encrypts what we send.
struct Conn {
    s: TcpStream,
    done: Done,
    inc: Vec<u8>,
}

impl Conn {
    fn send(&mut self, mut bytes: Vec<u8>) {
        if let Some(st) = self.done.streams.as_mut() {
            st.out.apply(&mut bytes);
        }
        self.s.write_all(&bytes).expect("write");
    }

    fn fill(&mut self, n: usize) {
        while self.inc.len() < n {
            let mut more = read_some(&mut self.s);
            if let Some(st) = self.done.streams.as_mut() {
                st.inc.apply(&mut more);
            }
            self.inc.extend(more);
        }
    }

    /// The next message (after the handshake), skipping keep-alives.
    fn message(&mut self) -> Vec<u8> {
        loop {
            self.fill(4);
            let len = u32::from_be_bytes([self.inc[0], self.inc[1], self.inc[2], self.inc[3]]);
            assert!(len < 1 << 20, "message of {len} bytes");
            self.fill(4 + len as usize);
            let m: Vec<u8> = self.inc.drain(..4 + len as usize).collect();
            if len > 0 {
                return m;
            }
        }
    }
}

fn dial(addr: std::net::SocketAddr, ih: [u8; 20], provide: Methods) -> Conn {
    let mut s = TcpStream::connect(addr).expect("connect to libtorrent");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let hello = Handshake::new(ih, *b"-RS0000-mse-test-000").encode();
    let mut out = Vec::new();
    let mut a = Initiator::new(KeyPair::generate(), ih, provide, &hello, &mut out);
    s.write_all(&out).unwrap();
    let done = loop {
        let got = read_some(&mut s);
        out.clear();
        let r = a
            .receive(&got, &mut out)
            .expect("libtorrent's answer is a valid handshake");
        s.write_all(&out).unwrap();
        if let Some(d) = r {
            break d;
        }
    };
    let inc = done.payload.clone();
    Conn { s, done, inc }
}

/// Dials an encrypted-only libtorrent seeder, checks its BitTorrent handshake inside the
/// stream, asks for two blocks and compares them with the file.
fn fetch_through(mode: &str, provide: Methods, want: Method) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let payload = pattern(256 << 10, 91);
    std::fs::write(data.join("enc.bin"), &payload).unwrap();
    let torrent = dir.path().join("enc.torrent");
    let meta = create_torrent(&data.join("enc.bin"), &torrent, &["--piece-kib", "64"]);
    let ih = meta.info.hash.wire_id();
    let lt = spawn_lt_seeder_env(&torrent, &data, "127.0.0.1", 0, &[("LT_ENC", mode)]);

    // A plain handshake is refused by a forced seeder (it closes or says nothing).
    let mut plain = TcpStream::connect(lt.addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    plain
        .write_all(&Handshake::new(ih, *b"-RS0000-plain-000000").encode())
        .unwrap();
    let mut b = [0u8; 68];
    assert!(
        plain.read_exact(&mut b).is_err(),
        "a forced-encryption seeder answered a plain handshake"
    );

    let mut c = dial(lt.addr, ih, provide);
    assert_eq!(c.done.method, want);
    c.fill(Handshake::LEN);
    let theirs = Handshake::parse(&c.inc[..Handshake::LEN])
        .expect("libtorrent's handshake parses")
        .expect("complete");
    assert_eq!(theirs.info_hash, ih);
    c.inc.drain(..Handshake::LEN);
    let mut out = Vec::new();
    Message::Interested.encode(&mut out);
    c.send(std::mem::take(&mut out));
    // Wait for the unchoke (bitfield, extension handshake and have-all may come first).
    loop {
        let m = c.message();
        if m[4] == 1 {
            break;
        }
    }
    for (index, begin) in [(0u32, 0u32), (3, 48 << 10)] {
        Message::Request(BlockRequest {
            index,
            begin,
            length: 16 << 10,
        })
        .encode(&mut out);
        c.send(std::mem::take(&mut out));
        let m = loop {
            let m = c.message();
            if m[4] == 7 {
                break m;
            }
        };
        let at = (index as usize) * (64 << 10) + begin as usize;
        assert_eq!(
            &m[13..],
            &payload[at..at + (16 << 10)],
            "block {index}/{begin}"
        );
    }
}

#[test]
fn our_initiator_reads_blocks_from_a_libtorrent_seeder_that_forces_rc4() {
    fetch_through("forced-rc4", Methods::BOTH, Method::Rc4);
}

#[test]
fn our_initiator_reads_blocks_in_plaintext_after_an_obfuscated_handshake() {
    fetch_through("forced-plain", Methods::PLAINTEXT, Method::Plaintext);
}

/// libtorrent, forced to encrypt its outgoing connections, dials our listener: the responder
/// finds the torrent from `HASH('req2', SKEY)`, libtorrent's BitTorrent handshake is the
/// initial payload, and after our handshake (encrypted) libtorrent's next message decrypts
/// to a valid BitTorrent message.
#[test]
fn our_responder_accepts_libtorrents_forced_rc4_connection() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("in.bin"), pattern(100_000, 17)).unwrap();
    let torrent = dir.path().join("in.torrent");
    let meta = create_torrent(&data.join("in.bin"), &torrent, &["--piece-kib", "16"]);
    let ih = meta.info.hash.wire_id();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let out_dir = dir.path().join("out");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/helpers/lt_tool.py");
    let mut lt = Command::new("/usr/bin/python3")
        .arg(&script)
        .args(["download"])
        .arg(&torrent)
        .arg(&out_dir)
        .args([&addr.to_string(), "30"])
        .env("LT_ENC", "forced-rc4")
        .stdout(Stdio::null())
        .spawn()
        .expect("start lt_tool.py download");
    let (mut s, _) = listener.accept().expect("libtorrent dials");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut b = Responder::new(KeyPair::generate(), Methods::BOTH, false);
    let key = obfuscated(&ih);
    let mut out = Vec::new();
    let done = loop {
        let got = read_some(&mut s);
        out.clear();
        let r = b
            .receive(&got, &mut out, |h| (*h == key).then_some(ih))
            .expect("libtorrent's handshake is valid");
        s.write_all(&out).unwrap();
        if let Some(d) = r {
            break d;
        }
    };
    assert_eq!(done.skey, ih);
    assert_eq!(done.method, Method::Rc4, "libtorrent offered RC4 only");
    let mut c = Conn {
        s,
        inc: done.payload.clone(),
        done,
    };
    c.fill(Handshake::LEN);
    let theirs = Handshake::parse(&c.inc[..Handshake::LEN]).unwrap().unwrap();
    assert_eq!(theirs.info_hash, ih);
    c.inc.drain(..Handshake::LEN);
    c.send(
        Handshake::new(ih, *b"-RS0000-mse-test-001")
            .encode()
            .to_vec(),
    );
    let m = c.message();
    let len = u32::from_be_bytes([m[0], m[1], m[2], m[3]]) as usize;
    assert_eq!(len + 4, m.len());
    assert!(
        matches!(m[4], 2 | 5 | 14 | 15 | 20),
        "libtorrent's first message decrypts to a BitTorrent message: id {}",
        m[4]
    );
    let _ = lt.kill();
    let _ = lt.wait();
}

// ---- The engine: MSE on the listening port and on dials, RC4 on the data path. ----

/// A torrent of `len` bytes in a temporary directory: (dir, data dir, torrent path, meta).
fn payload(
    name: &str,
    len: usize,
    seed: u64,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    std::path::PathBuf,
    ringseed::metainfo::Metainfo,
) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join(name), pattern(len, seed)).unwrap();
    let torrent = dir.path().join(format!("{name}.torrent"));
    let meta = create_torrent(&data.join(name), &torrent, &["--piece-kib", "64"]);
    (dir, data, torrent, meta)
}

fn engine_with(encryption: Encryption, f: impl FnOnce(&mut Settings)) -> Engine {
    let mut s = Settings {
        workers: 1,
        pin_workers: false,
        listen: "127.0.0.1:0".parse().unwrap(),
        encryption,
        ..Settings::default()
    };
    f(&mut s);
    Engine::start(s).expect("start the engine")
}

fn enc(incoming: Policy, outgoing: Policy) -> Encryption {
    Encryption {
        incoming,
        outgoing,
        level: Level::Both,
        prefer_rc4: false,
    }
}

fn sum(stats: &[StatsSnapshot], f: impl Fn(&StatsSnapshot) -> u64) -> u64 {
    stats.iter().map(f).sum()
}

fn cut(stats: &[StatsSnapshot], reason: &str) -> u64 {
    stats.iter().map(|s| s.disconnects[reason]).sum()
}

/// libtorrent downloads the torrent from the engine (`LT_ENC` its encryption, empty: plain);
/// the copy must be byte-identical. Returns the engine's counters.
fn lt_downloads_from_engine(lt_enc: &str, upload_path: UploadPath) -> Vec<StatsSnapshot> {
    let (dir, data, torrent, meta) = payload("up.bin", 3 << 20, 5);
    let engine = engine_with(Encryption::default(), |s| s.upload_path = upload_path);
    let (t, _) = Torrent::open(meta, &data, None).unwrap();
    engine.add_torrent(Arc::new(t)).unwrap();
    let out = dir.path().join("out");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/helpers/lt_tool.py");
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg(&script)
        .arg("download")
        .arg(&torrent)
        .arg(&out)
        .args([&engine.local_addr().to_string(), "30"]);
    if !lt_enc.is_empty() {
        cmd.env("LT_ENC", lt_enc);
    }
    let result = cmd.output().expect("run lt_tool.py download");
    let report = String::from_utf8_lossy(&result.stdout).into_owned();
    let stats = engine.shutdown();
    assert!(
        report.contains("\"done\": true"),
        "libtorrent ({lt_enc:?}) did not finish: {report} {}\nengine: {stats:?}",
        String::from_utf8_lossy(&result.stderr)
    );
    assert!(
        std::fs::read(out.join("up.bin")).unwrap() == std::fs::read(data.join("up.bin")).unwrap(),
        "libtorrent's copy differs"
    );
    stats
}

/// (a) libtorrent forcing RC4 on its dials downloads byte-identical from the engine, on the
/// copy path and with the engine configured for `mmap` (an RC4 connection must not send from
/// the mappings: its bytes would go out unencrypted and libtorrent would drop the connection).
#[test]
fn libtorrent_forcing_rc4_downloads_from_the_engine() {
    for path in [UploadPath::Copy, UploadPath::Mmap] {
        let stats = lt_downloads_from_engine("forced-rc4", path);
        assert!(
            sum(&stats, |s| s.mse_rc4) >= 1,
            "{path:?}: no RC4 handshake counted"
        );
        assert!(sum(&stats, |s| s.bytes_up) >= 3 << 20, "{path:?}");
    }
}

/// (a') libtorrent forcing the plaintext method: the handshake obfuscated, the data plain.
/// (c) A plaintext libtorrent (encryption off) still downloads from the default (`enabled`).
#[test]
fn plaintext_method_and_plaintext_clients_against_enabled() {
    let stats = lt_downloads_from_engine("forced-plain", UploadPath::Copy);
    assert!(sum(&stats, |s| s.mse_plaintext) >= 1, "{stats:?}");
    assert_eq!(sum(&stats, |s| s.mse_rc4), 0);
    let stats = lt_downloads_from_engine("", UploadPath::Mmap);
    assert_eq!(sum(&stats, |s| s.mse_rc4 + s.mse_plaintext), 0);
    assert!(sum(&stats, |s| s.handshakes) >= 1);
}

/// (b) The engine, dialling with encryption forced, downloads from a libtorrent seeder that
/// accepts only RC4-encrypted connections.
#[test]
fn engine_forcing_encryption_downloads_from_a_libtorrent_seeder_forcing_rc4() {
    let (dir, data, torrent, meta) = payload("down.bin", 2 << 20, 7);
    let lt = spawn_lt_seeder_env(&torrent, &data, "127.0.0.1", 0, &[("LT_ENC", "forced-rc4")]);
    let engine = engine_with(enc(Policy::Enabled, Policy::Forced), |_| {});
    let into = dir.path().join("into");
    std::fs::create_dir_all(&into).unwrap();
    let (t, _) = Torrent::open_download(meta, &into, Start::Empty, false).unwrap();
    let t = Arc::new(t);
    engine.add_torrent(t.clone()).unwrap();
    engine.connect(lt.addr, t.id).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !t.pieces.verified.is_full() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let complete = t.pieces.verified.is_full();
    drop(t);
    let stats = engine.shutdown();
    assert!(complete, "the download did not finish: {stats:?}");
    assert!(sum(&stats, |s| s.mse_rc4) >= 1, "{stats:?}");
    assert!(
        std::fs::read(into.join("down.bin")).unwrap()
            == std::fs::read(data.join("down.bin")).unwrap()
    );
}

/// (d) `forced` refuses a plain handshake, counted as `plaintext_refused`; `disabled` refuses
/// an MSE one. (e) An MSE peer that stops after its key is cut off by the handshake deadline,
/// one that pads on past the spec's bound as `mse_no_sync`.
#[test]
fn refusals_and_bad_mse_peers_are_cut_off_and_counted() {
    let (_dir, data, _torrent, meta) = payload("r.bin", 64 << 10, 9);
    let ih = meta.info.hash.wire_id();
    let engine = engine_with(enc(Policy::Forced, Policy::Enabled), |s| {
        s.handshake_timeout = Duration::from_secs(2)
    });
    let (t, _) = Torrent::open(meta.clone(), &data, None).unwrap();
    engine.add_torrent(Arc::new(t)).unwrap();
    let addr = engine.local_addr();
    let closed = |s: &mut TcpStream| {
        s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
        let mut rest = Vec::new();
        // Closed (EOF or reset) rather than timed out.
        match s.read_to_end(&mut rest) {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    };
    // A plain handshake: refused before any answer.
    let mut plain = TcpStream::connect(addr).unwrap();
    plain
        .write_all(&Handshake::new(ih, *b"-RS0000-plain-000001").encode())
        .unwrap();
    let mut b = [0u8; 1];
    plain
        .set_read_timeout(Some(Duration::from_secs(8)))
        .unwrap();
    assert!(
        !matches!(plain.read(&mut b), Ok(1)),
        "a forced engine answered a plain handshake"
    );
    // An MSE peer that sends its key and stops.
    let kp = KeyPair::generate();
    let mut stuck = TcpStream::connect(addr).unwrap();
    stuck.write_all(kp.public()).unwrap();
    // An endless pad: a key, then bytes that never hold the synchronisation hash.
    let mut padder = TcpStream::connect(addr).unwrap();
    padder.write_all(KeyPair::generate().public()).unwrap();
    let pad = pattern(4096, 3);
    let _ = padder.write_all(&pad);
    let started = Instant::now();
    assert!(closed(&mut padder), "the endless pad was not cut off");
    assert!(
        closed(&mut stuck),
        "the stalled MSE handshake was not cut off"
    );
    assert!(started.elapsed() < Duration::from_secs(8));
    // The same engine still serves an MSE peer (our own initiator) and its blocks.
    let mut c = dial(addr, ih, Methods::BOTH);
    c.fill(Handshake::LEN);
    let theirs = Handshake::parse(&c.inc[..Handshake::LEN]).unwrap().unwrap();
    assert_eq!(theirs.info_hash, ih);
    let stats = engine.shutdown();
    assert_eq!(cut(&stats, "plaintext_refused"), 1, "{stats:?}");
    assert_eq!(cut(&stats, "mse_no_sync"), 1, "{stats:?}");
    assert_eq!(cut(&stats, "handshake_timeout"), 1, "{stats:?}");

    // `disabled` the other way round: an MSE key is refused.
    let (t, _) = Torrent::open(meta, &data, None).unwrap();
    let engine = engine_with(enc(Policy::Disabled, Policy::Enabled), |_| {});
    engine.add_torrent(Arc::new(t)).unwrap();
    let mut mse = TcpStream::connect(engine.local_addr()).unwrap();
    mse.write_all(KeyPair::generate().public()).unwrap();
    assert!(closed(&mut mse), "a disabled engine kept an MSE peer");
    let stats = engine.shutdown();
    assert_eq!(cut(&stats, "encryption_refused"), 1, "{stats:?}");
}

/// (f) Transmission 3.00 requiring encryption (`"encryption": 2`) downloads byte-identical
/// from ringseed, which dials it (Transmission never dials loopback peers) with MSE forced.
#[test]
fn transmission_requiring_encryption_downloads_from_ringseed() {
    common::require_tool("/usr/bin/transmission-cli");
    let (dir, data, torrent, _meta) = payload("tr.bin", 1 << 20, 11);
    let home = dir.path().join("tr-home");
    let dl = dir.path().join("tr-dl");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&dl).unwrap();
    let settings = serde_json::json!({
        "utp-enabled": false,
        "encryption": 2,
        "dht-enabled": false,
        "lpd-enabled": false,
        "pex-enabled": false,
        "port-forwarding-enabled": false,
    });
    std::fs::write(home.join("settings.json"), settings.to_string()).unwrap();
    let port = common::opentracker::free_port();
    let tr_log = dir.path().join("tr.log");
    let mut tr = Command::new("/usr/bin/transmission-cli")
        .args(["-p", &port.to_string(), "-w"])
        .arg(&dl)
        .arg("-g")
        .arg(&home)
        .arg(&torrent)
        .stdout(std::fs::File::create(&tr_log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("start transmission-cli");
    let cfg = dir.path().join("ringseed.toml");
    std::fs::write(&cfg, "[engine]\nencryption_out = \"forced\"\n").unwrap();
    // Give Transmission a moment to listen before the first dial (the dial loop retries
    // anyway, with a growing wait).
    std::thread::sleep(Duration::from_millis(500));
    let mut rs = common::ringseed()
        .arg("--config")
        .arg(&cfg)
        .arg("download")
        .arg(&torrent)
        .arg("--data")
        .arg(&data)
        .args(["--seed", "--no-trackers", "--workers", "1", "--metrics", ""])
        .args([
            "--listen",
            "127.0.0.1:0",
            "--peer",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ringseed download --seed");
    let want = std::fs::read(data.join("tr.bin")).unwrap();
    // Transmission declares interest at its 10 s rechoke pulse.
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut done = false;
    while !done && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        done = std::fs::read(dl.join("tr.bin")).is_ok_and(|got| got == want);
    }
    let _ = rs.kill();
    let _ = rs.wait();
    let _ = tr.kill();
    let _ = tr.wait();
    let log = std::fs::read(&tr_log).unwrap_or_default();
    assert!(
        done,
        "Transmission (encryption required) did not download from ringseed: {}",
        String::from_utf8_lossy(&log[log.len().saturating_sub(600)..])
    );
}

/// `enabled` dials with MSE first; a peer that speaks only plain BitTorrent drops that
/// connection, and the engine dials it once more in plain. `forced` never falls back.
#[test]
fn an_enabled_dial_retries_plain_once_and_a_forced_one_never() {
    let (_dir, data, _torrent, meta) = payload("p.bin", 64 << 10, 13);
    let ih = meta.info.hash.wire_id();
    for (policy, retries) in [(Policy::Enabled, true), (Policy::Forced, false)] {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let engine = engine_with(enc(Policy::Enabled, policy), |_| {});
        let (t, _) = Torrent::open(meta.clone(), &data, None).unwrap();
        engine.add_torrent(Arc::new(t)).unwrap();
        engine.connect(addr, ih).unwrap();
        // The first dial opens with an MSE key, not a plain handshake; a plain-only peer
        // closes it.
        let (mut first, _) = listener.accept().unwrap();
        first
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut start = [0u8; 20];
        first.read_exact(&mut start).unwrap();
        assert_eq!(ringseed::mse::is_plain(&start), Some(false), "{policy:?}");
        drop(first);
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(3);
        let second = loop {
            match listener.accept() {
                Ok((s, _)) => break Some(s),
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(_) => break None,
            }
        };
        match (retries, second) {
            (true, Some(mut s)) => {
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut hs = [0u8; Handshake::LEN];
                s.read_exact(&mut hs).unwrap();
                let hs = Handshake::parse(&hs).unwrap().expect("a plain handshake");
                assert_eq!(hs.info_hash, ih);
            }
            (true, None) => panic!("enabled: no plain retry"),
            (false, Some(_)) => panic!("forced: dialled again"),
            (false, None) => {}
        }
        engine.shutdown();
    }
}

/// The magnet metadata fetch dials as the engine does: `ringseed download MAGNET` with
/// `encryption_out = "forced"` gets the metadata from a libtorrent seeder that accepts RC4
/// only (a plain dial gets nothing from it), then the data, byte-identical.
#[test]
fn a_magnet_is_fetched_through_rc4_from_a_libtorrent_seeder_forcing_it() {
    let (dir, data, torrent, meta) = payload("mag.bin", 1 << 20, 17);
    let lt = spawn_lt_seeder_env(&torrent, &data, "127.0.0.1", 0, &[("LT_ENC", "forced-rc4")]);
    let cfg = dir.path().join("ringseed.toml");
    std::fs::write(&cfg, "[engine]\nencryption_out = \"forced\"\n").unwrap();
    let magnet = format!(
        "magnet:?xt=urn:btih:{}&x.pe={}",
        ringseed::metainfo::hex(&meta.info.hash.wire_id()),
        lt.addr
    );
    let out = dir.path().join("out");
    let result = common::ringseed()
        .arg("--config")
        .arg(&cfg)
        .args(["download", &magnet, "--data"])
        .arg(&out)
        .args(["--no-trackers", "--workers", "1", "--metrics", ""])
        .args(["--listen", "127.0.0.1:0", "--stall-timeout", "30"])
        // The data phase dials the `--peer`s (the magnet's x.pe serves the metadata).
        .args(["--peer", &lt.addr.to_string()])
        .output()
        .expect("run ringseed download");
    assert!(
        result.status.success(),
        "download failed: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    assert!(
        std::fs::read(out.join("mag.bin")).unwrap() == std::fs::read(data.join("mag.bin")).unwrap(),
        "the download differs from the seeder's file"
    );
}

//! Transmission (`transmission-daemon`) and qBittorrent (`qbittorrent-nox`), driven through their
//! own Web APIs, and rtorrent, all from Debian, as seeders that ringseed downloads from.
//!
//! All are daemons holding several torrents, so one process seeds every torrent of a test. All
//! check the data they are given before they seed it, and the helpers wait until the client
//! itself says it has every piece (in its API, or for rtorrent on the wire): a test that then
//! downloads from them downloads what the client verified, not what the test assumed.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::opentracker::free_port;
use super::require_tool;

/// An HTTP response as the tests need it.
pub struct HttpResponse {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.0 request to a loopback Web API (no dependency for the tests: both clients answer
/// 1.0 with a Content-Length, qBittorrent without closing, hence the length is honoured). Every
/// read and write is bounded by a 10 s timeout.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<HttpResponse> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut out = req.into_bytes();
    out.extend_from_slice(body);
    s.write_all(&out)?;
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        if buf.len() > 64 * 1024 {
            return Err(bad("headers too long"));
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(bad("connection closed inside the headers"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad("no status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = buf.split_off(head_end + 4);
    let length = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    loop {
        if length.is_some_and(|l| body.len() >= l) {
            break;
        }
        if body.len() > 16 << 20 {
            return Err(bad("body too long"));
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    if let Some(l) = length {
        body.truncate(l);
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

/// Polls `ready` every 100 ms until it holds; false when `child` exits or `timeout` passes.
fn wait_until(child: &mut Child, timeout: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if ready() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// The last `n` bytes of a log file, for failure messages.
fn tail(path: &Path, n: usize) -> String {
    let out = std::fs::read(path).unwrap_or_default();
    String::from_utf8_lossy(&out[out.len().saturating_sub(n)..]).into_owned()
}

/// Whether the BitTorrent peer at `addr` answers a handshake for the v1 info-hash `hex_hash`
/// (40 hex digits) with a handshake for the same torrent.
///
/// What a client's API says is not enough: qBittorrent 4.5.2 reports a torrent as seeding
/// (`stalledUP`) about half a second before libtorrent attaches incoming peers to it, and closes
/// connections made in that window, which ringseed then retries only much later.
pub fn answers_handshake(addr: SocketAddr, hex_hash: &str) -> bool {
    let Some(info_hash) = unhex20(hex_hash) else {
        return false;
    };
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let hello = ringseed::wire::Handshake::new(info_hash, *b"-XX0000-readiness001").encode();
    if s.write_all(&hello).is_err() {
        return false;
    }
    let mut got = [0u8; ringseed::wire::Handshake::LEN];
    if s.read_exact(&mut got).is_err() {
        return false;
    }
    matches!(ringseed::wire::Handshake::parse(&got), Ok(Some(h)) if h.info_hash == info_hash)
}

/// Whether the BitTorrent peer at `addr` answers a handshake for `info_hash` and then claims
/// all `pieces` pieces (a full bitfield, `have`s completing it, or `have all`) within 2 s.
pub fn claims_every_piece(addr: SocketAddr, info_hash: [u8; 20], pieces: u32) -> bool {
    use ringseed::wire::{Handshake, Message, parse_message};
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(&Handshake::new(info_hash, *b"-XX0000-readiness002").encode())
        .is_err()
    {
        return false;
    }
    let mut got = [0u8; Handshake::LEN];
    if s.read_exact(&mut got).is_err()
        || !matches!(Handshake::parse(&got), Ok(Some(h)) if h.info_hash == info_hash)
    {
        return false;
    }
    let mut have = vec![false; pieces as usize];
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        // Bitfields of up to 8 Mi pieces; anything longer is not a seeder of our test torrents.
        while let Ok(Some((m, used))) = parse_message(&buf, 1 << 20) {
            match m {
                Message::HaveAll => return true,
                Message::HaveNone => return false,
                Message::Bitfield(bits) => {
                    for (i, h) in have.iter_mut().enumerate() {
                        *h |= bits.get(i / 8).is_some_and(|b| b & (0x80 >> (i % 8)) != 0);
                    }
                }
                Message::Have(i) => {
                    if let Some(h) = have.get_mut(i as usize) {
                        *h = true;
                    }
                }
                _ => {}
            }
            buf.drain(..used);
            if have.iter().all(|h| *h) {
                return true;
            }
        }
        match s.read(&mut chunk) {
            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return false,
        }
    }
    false
}

fn unhex20(hex: &str) -> Option<[u8; 20]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 40 {
        return None;
    }
    let mut out = [0u8; 20];
    for (i, pair) in bytes.chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

/// A `transmission-daemon` (3.00) seeding from one download directory, listening for peers on
/// one loopback address, killed on drop.
///
/// Its quirks, as a seeder: it never dials a 127.0.0.0/8 peer but accepts them, so the peer
/// that downloads must dial it (ringseed does, from `--peer` or a tracker's list); it unchokes
/// only at its rechoke pulse (every 10 s), so data moves 1 to 10 s after the handshake; uTP is
/// off (its TCP fallback after a uTP timeout can shelve a peer for 15 minutes); encryption stays
/// at its default, "preferred", which still accepts a plaintext incoming handshake.
pub struct TransmissionSeeder {
    child: Child,
    /// Where peers reach it.
    pub addr: SocketAddr,
    rpc: SocketAddr,
    /// The CSRF token its RPC hands out with a 409 and wants back on every request.
    session_id: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for TransmissionSeeder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TransmissionSeeder {
    /// Starts the daemon with its peer port on `ip`, torrents saved in `download_dir`, uploading
    /// at most `upload_kb` kB/s (1000 bytes, Transmission's unit; `None`: unlimited); returns
    /// once its RPC answers and its peer port accepts connections.
    pub fn start(download_dir: &Path, ip: &str, upload_kb: Option<u32>) -> TransmissionSeeder {
        const DAEMON: &str = "/usr/bin/transmission-daemon";
        require_tool(DAEMON);
        let ip_addr: IpAddr = ip.parse().expect("an IP address");
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let (peer_port, rpc_port) = (free_port(), free_port());
            let settings = serde_json::json!({
                "bind-address-ipv4": ip,
                // Not the wildcard: a port free on 127.0.0.1 may be taken on [::].
                "bind-address-ipv6": "::1",
                "peer-port": peer_port,
                "peer-port-random-on-start": false,
                "rpc-bind-address": "127.0.0.1",
                "rpc-port": rpc_port,
                "rpc-authentication-required": false,
                "rpc-whitelist-enabled": false,
                "rpc-host-whitelist-enabled": false,
                "download-dir": download_dir,
                "incomplete-dir-enabled": false,
                "utp-enabled": false,
                "encryption": 1,
                "dht-enabled": false,
                "lpd-enabled": false,
                "pex-enabled": false,
                "port-forwarding-enabled": false,
                "blocklist-enabled": false,
                "ratio-limit-enabled": false,
                "idle-seeding-limit-enabled": false,
                "download-queue-enabled": false,
                "seed-queue-enabled": false,
                "speed-limit-up-enabled": upload_kb.is_some(),
                "speed-limit-up": upload_kb.unwrap_or(0),
                "message-level": 2,
            });
            std::fs::write(dir.path().join("settings.json"), settings.to_string()).unwrap();
            let log = dir.path().join("daemon.log");
            let mut child = Command::new(DAEMON)
                .arg("--foreground")
                .arg("--config-dir")
                .arg(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .expect("start transmission-daemon");
            let rpc = SocketAddr::from(([127, 0, 0, 1], rpc_port));
            let addr = SocketAddr::new(ip_addr, peer_port);
            let up = wait_until(&mut child, Duration::from_secs(10), || {
                http(rpc, "GET", "/transmission/rpc", &[], b"").is_ok()
                    && TcpStream::connect(addr).is_ok()
            });
            if up {
                return TransmissionSeeder {
                    child,
                    addr,
                    rpc,
                    session_id: String::new(),
                    log,
                    _dir: dir,
                };
            }
            eprintln!(
                "transmission-daemon did not come up on {addr} (RPC {rpc}); trying other ports. \
                 Its log: {}",
                tail(&log, 1000)
            );
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("transmission-daemon did not start on {ip}");
    }

    /// One RPC call; its `arguments` on success, the test fails otherwise.
    pub fn rpc(&mut self, method: &str, arguments: Value) -> Value {
        let body = serde_json::json!({ "method": method, "arguments": arguments }).to_string();
        for _ in 0..3 {
            let res = http(
                self.rpc,
                "POST",
                "/transmission/rpc",
                &[("X-Transmission-Session-Id", &self.session_id)],
                body.as_bytes(),
            )
            .unwrap_or_else(|e| panic!("Transmission RPC {method}: {e}"));
            if res.status == 409 {
                self.session_id = res
                    .header("x-transmission-session-id")
                    .expect("a 409 names the session id")
                    .to_owned();
                continue;
            }
            let v: Value = serde_json::from_slice(&res.body).unwrap_or_else(|e| {
                panic!(
                    "Transmission RPC {method}: {e}: {} {}",
                    res.status,
                    res.text()
                )
            });
            assert_eq!(v["result"], "success", "Transmission RPC {method}: {v}");
            return v["arguments"].clone();
        }
        panic!("Transmission RPC {method}: still 409 after a new session id");
    }

    /// Adds a .torrent file (by path) to seed from the download directory.
    pub fn add(&mut self, torrent: &Path) {
        let added = self.rpc("torrent-add", serde_json::json!({ "filename": torrent }));
        assert!(
            added.get("torrent-added").is_some(),
            "Transmission did not add {}: {added}",
            torrent.display()
        );
    }

    /// Waits until Transmission has checked every torrent it holds (`count` of them), found
    /// every piece, seeds them (status 6) and answers handshakes for them.
    pub fn wait_seeding(&mut self, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.rpc(
                "torrent-get",
                serde_json::json!({
                    "fields": ["name", "hashString", "status", "percentDone", "error", "errorString"]
                }),
            );
            let torrents = got["torrents"].as_array().cloned().unwrap_or_default();
            for t in &torrents {
                assert_eq!(t["error"], 0, "Transmission: {t}");
            }
            let seeding = torrents
                .iter()
                .filter(|t| {
                    t["status"] == 6
                        && t["percentDone"].as_f64() == Some(1.0)
                        && answers_handshake(self.addr, t["hashString"].as_str().unwrap_or(""))
                })
                .count();
            if seeding == count && torrents.len() == count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Transmission does not seed all {count} torrents after {timeout:?}: {got}\n\
                 log: {}",
                tail(&self.log, 1000)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The daemon's log (errors and info), for failure messages.
    pub fn log_tail(&self) -> String {
        tail(&self.log, 2000)
    }
}

/// A `qbittorrent-nox` (4.5.2) with its own profile, listening for peers on one loopback
/// address, its Web UI on 127.0.0.1 without a login (`LocalHostAuth=false`), killed on drop.
pub struct QbtSeeder {
    child: Child,
    /// Where peers reach it.
    pub addr: SocketAddr,
    webui: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for QbtSeeder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// qBittorrent states of a torrent that has every piece and serves them.
const QBT_SEEDING: [&str; 4] = ["uploading", "stalledUP", "forcedUP", "queuedUP"];

impl QbtSeeder {
    /// Starts qBittorrent with its peer port on `ip` (interface `lo`), uploading at most
    /// `upload_limit` bytes/s to every peer, loopback ones included (0: unlimited); returns
    /// once its Web API answers and its peer port accepts connections.
    pub fn start(ip: &str, upload_limit: u64) -> QbtSeeder {
        const QBT: &str = "/usr/bin/qbittorrent-nox";
        require_tool(QBT);
        let ip_addr: IpAddr = ip.parse().expect("an IP address");
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let (peer_port, web_port) = (free_port(), free_port());
            let config = dir.path().join("qBittorrent/config");
            std::fs::create_dir_all(&config).unwrap();
            // The legal notice is accepted (otherwise it waits for a key press); every loopback
            // peer has the same IP, hence MultiConnectionsPerIp; IgnoreLimitsOnLAN=false applies
            // the upload limit to loopback peers too; ResolvePeerCountries=false, or it tries to
            // download a geolocation database from the internet at start.
            std::fs::write(
                config.join("qBittorrent.conf"),
                format!(
                    "[LegalNotice]\nAccepted=true\n\n\
                     [BitTorrent]\n\
                     Session\\Interface=lo\n\
                     Session\\InterfaceName=lo\n\
                     Session\\InterfaceAddress={ip}\n\
                     Session\\Port={peer_port}\n\
                     Session\\MultiConnectionsPerIp=true\n\
                     Session\\DHTEnabled=false\n\
                     Session\\PeXEnabled=false\n\
                     Session\\LSDEnabled=false\n\
                     Session\\QueueingSystemEnabled=false\n\
                     Session\\IgnoreLimitsOnLAN=false\n\
                     Session\\GlobalMaxRatio=-1\n\n\
                     [Preferences]\n\
                     Connection\\ResolvePeerCountries=false\n\
                     Connection\\UPnP=false\n\
                     General\\UseRandomPort=false\n\
                     WebUI\\Address=127.0.0.1\n\
                     WebUI\\Port={web_port}\n\
                     WebUI\\LocalHostAuth=false\n\
                     WebUI\\CSRFProtection=false\n\
                     WebUI\\HostHeaderValidation=false\n\
                     WebUI\\UseUPnP=false\n"
                ),
            )
            .unwrap();
            let log = dir.path().join("qbittorrent.log");
            let mut child = Command::new(QBT)
                .arg(format!("--profile={}", dir.path().display()))
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(&log).unwrap())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("start qbittorrent-nox");
            let webui = SocketAddr::from(([127, 0, 0, 1], web_port));
            let addr = SocketAddr::new(ip_addr, peer_port);
            let up = wait_until(&mut child, Duration::from_secs(15), || {
                http(webui, "GET", "/api/v2/app/version", &[], b"").is_ok_and(|r| r.status == 200)
                    && TcpStream::connect(addr).is_ok()
            });
            if up {
                let qbt = QbtSeeder {
                    child,
                    addr,
                    webui,
                    log,
                    _dir: dir,
                };
                if upload_limit > 0 {
                    qbt.post_form(
                        "/api/v2/app/setPreferences",
                        &[(
                            "json",
                            &serde_json::json!({ "up_limit": upload_limit }).to_string(),
                        )],
                    );
                }
                return qbt;
            }
            eprintln!(
                "qbittorrent-nox did not come up on {addr} (Web UI {webui}); trying other ports. \
                 Its output: {}",
                tail(&log, 1000)
            );
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("qbittorrent-nox did not start on {ip}");
    }

    /// A POST of URL-encoded fields; the response body, the test fails unless it is a 200.
    fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> String {
        let mut body = String::new();
        for (k, v) in fields {
            if !body.is_empty() {
                body.push('&');
            }
            body.push_str(k);
            body.push('=');
            ringseed::tracker::http::percent_encode(v.as_bytes(), &mut body);
        }
        let res = http(
            self.webui,
            "POST",
            path,
            &[("Content-Type", "application/x-www-form-urlencoded")],
            body.as_bytes(),
        )
        .unwrap_or_else(|e| panic!("qBittorrent {path}: {e}"));
        assert_eq!(res.status, 200, "qBittorrent {path}: {}", res.text());
        res.text()
    }

    /// Adds a .torrent (uploaded as `multipart/form-data`, as the Web UI does) to seed from
    /// `save_path`. qBittorrent checks the data first unless `skip_check`.
    pub fn add(&self, torrent: &Path, save_path: &Path, skip_check: bool) {
        const BOUNDARY: &str = "ringseed-test-boundary-5f2c91";
        let file = std::fs::read(torrent).unwrap();
        let mut body = Vec::new();
        let mut field = |name: &str, extra: &str, value: &[u8]| {
            body.extend_from_slice(
                format!(
                    "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"{extra}\r\n\r\n"
                )
                .as_bytes(),
            );
            body.extend_from_slice(value);
            body.extend_from_slice(b"\r\n");
        };
        field(
            "torrents",
            "; filename=\"t.torrent\"\r\nContent-Type: application/x-bittorrent",
            &file,
        );
        field("savepath", "", save_path.to_str().unwrap().as_bytes());
        field(
            "skip_checking",
            "",
            if skip_check { b"true" } else { b"false" },
        );
        body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
        let res = http(
            self.webui,
            "POST",
            "/api/v2/torrents/add",
            &[(
                "Content-Type",
                &format!("multipart/form-data; boundary={BOUNDARY}"),
            )],
            &body,
        )
        .unwrap_or_else(|e| panic!("qBittorrent torrents/add: {e}"));
        assert!(
            res.status == 200 && res.text().starts_with("Ok"),
            "qBittorrent did not add {}: {} {}",
            torrent.display(),
            res.status,
            res.text()
        );
    }

    /// The Web API's view of every torrent it holds.
    pub fn torrents(&self) -> Vec<Value> {
        let res = http(self.webui, "GET", "/api/v2/torrents/info", &[], b"")
            .unwrap_or_else(|e| panic!("qBittorrent torrents/info: {e}"));
        serde_json::from_slice::<Vec<Value>>(&res.body)
            .unwrap_or_else(|e| panic!("qBittorrent torrents/info: {e}: {}", res.text()))
    }

    /// Waits until qBittorrent holds `count` torrents, all complete, seeding, and answering
    /// handshakes.
    pub fn wait_seeding(&self, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let torrents = self.torrents();
            for t in &torrents {
                let state = t["state"].as_str().unwrap_or_default();
                assert!(
                    state != "error" && state != "missingFiles",
                    "qBittorrent cannot seed: {t}"
                );
            }
            let seeding = torrents
                .iter()
                .filter(|t| {
                    QBT_SEEDING.contains(&t["state"].as_str().unwrap_or_default())
                        && t["progress"].as_f64() == Some(1.0)
                        && answers_handshake(self.addr, t["infohash_v1"].as_str().unwrap_or(""))
                })
                .count();
            if seeding == count && torrents.len() == count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "qBittorrent does not seed all {count} torrents after {timeout:?}: \
                 {torrents:?}\noutput: {}",
                tail(&self.log, 1000)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Bytes qBittorrent has uploaded, over all its torrents (this session).
    pub fn uploaded(&self) -> u64 {
        self.torrents()
            .iter()
            .filter_map(|t| t["uploaded_session"].as_u64())
            .sum()
    }
}

/// An rtorrent (0.9.8, libtorrent-rakshasa: a BitTorrent implementation of its own) running as
/// a daemon (`system.daemon.set`, no terminal), seeding torrents loaded at start from one
/// download directory, listening for peers on one loopback address, killed on drop.
///
/// rtorrent 0.9.8 refuses a torrent that names no tracker ("Could not create download: Could
/// not find any trackers"), so the torrents given to it must have one.
pub struct RtorrentSeeder {
    child: Child,
    /// Where peers reach it.
    pub addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for RtorrentSeeder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl RtorrentSeeder {
    /// Starts rtorrent seeding `torrents` (each with the info-hash and piece count ringseed
    /// parsed) from `download_dir` with its peer port on `ip`; returns once it has checked the
    /// data and, asked over the wire, claims every piece of every torrent.
    pub fn start(
        download_dir: &Path,
        ip: &str,
        torrents: &[(&Path, &ringseed::metainfo::Metainfo)],
    ) -> RtorrentSeeder {
        const RTORRENT: &str = "/usr/bin/rtorrent";
        require_tool(RTORRENT);
        let ip_addr: IpAddr = ip.parse().expect("an IP address");
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let session = dir.path().join("session");
            std::fs::create_dir_all(&session).unwrap();
            let port = free_port();
            let log = dir.path().join("rtorrent.log");
            let mut rc = format!(
                "directory.default.set = \"{}\"\n\
                 session.path.set = \"{}\"\n\
                 network.bind_address.set = {ip}\n\
                 network.port_range.set = {port}-{port}\n\
                 network.port_random.set = no\n\
                 dht.mode.set = disable\n\
                 protocol.pex.set = no\n\
                 trackers.use_udp.set = no\n\
                 system.daemon.set = true\n\
                 log.open_file = \"main\", \"{}\"\n\
                 log.add_output = \"info\", \"main\"\n",
                download_dir.display(),
                session.display(),
                log.display(),
            );
            for (torrent, _) in torrents {
                rc.push_str(&format!("load.start_verbose = \"{}\"\n", torrent.display()));
            }
            let rc_path = dir.path().join("rtorrent.rc");
            std::fs::write(&rc_path, rc).unwrap();
            let mut child = Command::new(RTORRENT)
                .arg("-n")
                .arg("-o")
                .arg(format!("import={}", rc_path.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start rtorrent");
            let addr = SocketAddr::new(ip_addr, port);
            if !wait_until(&mut child, Duration::from_secs(10), || {
                TcpStream::connect(addr).is_ok()
            }) {
                eprintln!(
                    "rtorrent does not listen on {addr}; trying another port. Its log: {}",
                    tail(&log, 1000)
                );
                let _ = child.kill();
                let _ = child.wait();
                continue;
            }
            let mut rt = RtorrentSeeder {
                child,
                addr,
                log,
                _dir: dir,
            };
            let seeding = wait_until(&mut rt.child, Duration::from_secs(20), || {
                torrents.iter().all(|(_, meta)| {
                    claims_every_piece(addr, meta.info.hash.wire_id(), meta.info.layout.num_pieces)
                })
            });
            assert!(
                seeding,
                "rtorrent does not claim every piece of its torrents after 20 s; its log: {}",
                rt.log_tail()
            );
            return rt;
        }
        panic!("rtorrent did not start seeding on {ip}");
    }

    /// rtorrent's log, for failure messages.
    pub fn log_tail(&self) -> String {
        tail(&self.log, 2000)
    }
}

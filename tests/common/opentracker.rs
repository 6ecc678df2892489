//! opentracker (Debian's package) as the real tracker of end-to-end tests.

use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener, UdpSocket as StdUdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const OPENTRACKER: &str = "/usr/bin/opentracker";

fn local(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// An opentracker process on a free loopback port (TCP and UDP), whitelisting `hashes`, killed
/// on drop.
pub struct OpenTracker {
    child: Child,
    pub ip: std::net::Ipv4Addr,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl OpenTracker {
    pub fn start(hashes: &[[u8; 20]]) -> OpenTracker {
        Self::start_on(std::net::Ipv4Addr::LOCALHOST, hashes)
    }

    /// As [`start`](Self::start), listening on `ip` (an address of this host, e.g. the host end
    /// of a test's veth pair).
    pub fn start_on(ip: std::net::Ipv4Addr, hashes: &[[u8; 20]]) -> OpenTracker {
        super::require_tool(OPENTRACKER);
        let dir = tempfile::tempdir().unwrap();
        // Debian builds opentracker with a whitelist. It chroots into `-d` when run as root and
        // reads the list after that, so the list is written where the absolute path resolves
        // both inside the chroot and outside it (when not root).
        let list: String = hashes
            .iter()
            .map(|h| ringseed::metainfo::hex(h) + "\n")
            .collect();
        let abs = dir.path().join("whitelist.txt");
        let inner = dir.path().join(abs.strip_prefix("/").unwrap());
        std::fs::create_dir_all(inner.parent().unwrap()).unwrap();
        std::fs::write(&abs, &list).unwrap();
        std::fs::write(&inner, &list).unwrap();
        make_world_readable(dir.path());
        for _ in 0..20 {
            let port = free_port();
            let mut child = Command::new(OPENTRACKER)
                .args([
                    "-i",
                    &ip.to_string(),
                    "-p",
                    &port.to_string(),
                    "-P",
                    &port.to_string(),
                ])
                .arg("-d")
                .arg(dir.path())
                .arg("-w")
                .arg(&abs)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start opentracker");
            if wait_ready(&mut child, SocketAddr::from((ip, port)), hashes[0]) {
                return OpenTracker {
                    child,
                    ip,
                    port,
                    _dir: dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("opentracker did not start on any of 20 ports");
    }

    pub fn http(&self) -> String {
        format!("http://{}:{}/announce", self.ip, self.port)
    }

    pub fn udp(&self) -> String {
        format!("udp://{}:{}/announce", self.ip, self.port)
    }
}

impl Drop for OpenTracker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Ready when an announce of a whitelisted hash is answered (opentracker loads its whitelist in
/// a thread after start).
fn wait_ready(child: &mut Child, addr: SocketAddr, hash: [u8; 20]) -> bool {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut encoded = String::new();
    ringseed::tracker::http::percent_encode(&hash, &mut encoded);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if let Ok(mut s) = std::net::TcpStream::connect(addr) {
            let _ = write!(
                s,
                "GET /announce?info_hash={encoded}&peer_id=-RS0001-ready0000000&port=1\
                 &uploaded=0&downloaded=0&left=0&compact=1&event=stopped HTTP/1.0\r\n\r\n"
            );
            let mut body = Vec::new();
            let _ = s.read_to_end(&mut body);
            // HTTP answers; the UDP port must too (a port free for TCP may be taken for UDP,
            // and a UDP announce would then fail at once and fall to the next tier).
            if body.windows(8).any(|w| w == b"interval") && udp_ready(addr) {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Whether a BEP 15 `connect` to `addr` over UDP is answered (within 500 ms).
fn udp_ready(addr: SocketAddr) -> bool {
    let Ok(sock) = std::net::UdpSocket::bind((addr.ip(), 0)) else {
        return false;
    };
    let _ = sock.set_read_timeout(Some(Duration::from_millis(500)));
    let mut req = Vec::with_capacity(16);
    req.extend_from_slice(&0x0417_2710_1980u64.to_be_bytes());
    req.extend_from_slice(&0u32.to_be_bytes()); // action: connect
    req.extend_from_slice(&0x5eed_0001u32.to_be_bytes()); // transaction id
    if sock.send_to(&req, addr).is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    matches!(sock.recv_from(&mut buf), Ok((n, from)) if n >= 16 && from == addr
        && buf[..4] == [0, 0, 0, 0] && buf[4..8] == 0x5eed_0001u32.to_be_bytes())
}

fn make_world_readable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for entry in walk(dir) {
        let mode = if entry.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A port free for both TCP and UDP on 127.0.0.1 at the time of asking.
///
/// Never the same port twice in one test process: two trackers started at once could otherwise
/// both be handed a port just released, and opentracker's UDP socket (SO_REUSEADDR) would then
/// share it with the other's, answering its announces with the wrong whitelist.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let tcp = StdTcpListener::bind(local(0)).unwrap();
        let port = tcp.local_addr().unwrap().port();
        if StdUdpSocket::bind(local(port)).is_ok() {
            let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
            if !given.contains(&port) {
                given.push(port);
                return port;
            }
        }
    }
}

//! The control API against hostile local clients and web pages, on the real binary with its
//! default `[control]` (no token configured, no `no_token_from`): the node generates its token
//! into the state directory, `ctl` reads it from there; a cross-site `text/plain` POST, a
//! rebound `Host`, a request without the token, trickled headers and a thousand idle
//! connections are each refused or closed, and `ctl list` keeps answering throughout.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::http::request;
use common::node::RunNode;
use common::{Payload, create_torrent, ringseed, run_ok};
use serde_json::{Value, json};

/// One raw request; the status (0 if the connection closed without one) and the body.
fn raw(to: SocketAddr, text: &str) -> (u16, String) {
    let mut s = TcpStream::connect(to).unwrap();
    s.write_all(text.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let (status, body) = common::http::split_response(&out);
    (status.unwrap_or(0), body)
}

fn list(node: &RunNode, token: &str) -> Vec<Value> {
    let (status, body) = request(
        node.api,
        "127.0.0.1",
        "GET",
        "/api/v1/torrents",
        "",
        Some(token),
    );
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Value>(&body)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn ctl_list(cfg: &Path, node: &RunNode) -> Value {
    let out = run_ok(ringseed().arg("--config").arg(cfg).args([
        "ctl",
        "--api",
        &format!("http://{}", node.api),
        "--json",
        "list",
    ]));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Raises this process's open-file limit to its hard limit (a thousand client sockets).
fn raise_nofile() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    hard
}

#[test]
fn hostile_local_clients_are_refused_and_ctl_keeps_answering() {
    let payload = Payload::new();
    let dir = payload.dir.path();
    let data = payload.data_dir().to_path_buf();
    let torrent = dir.join("victim.torrent");
    create_torrent(&payload.single, &torrent, &[]);
    let state = dir.join("state");
    let cfg = dir.join("ringseed.toml");
    std::fs::write(
        &cfg,
        format!(
            "[engine]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n\
             [trackers]\nenabled = false\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n\
             [control]\nlisten = \"127.0.0.1:0\"\nheader_timeout_s = 2\nidle_timeout_s = 30\n\
             max_connections = 32\n\
             [state]\ndir = {:?}\n\
             [torrents]\ndata_dir = {:?}\nwatch_interval_s = 0\n",
            state.display().to_string(),
            data.display().to_string(),
        ),
    )
    .unwrap();
    let node = RunNode::start(&cfg);

    // The token was generated on first start, readable by this user only.
    let token_file = state.join("api-token");
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "token file mode {mode:o}");
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_string();
    assert!(token.len() >= 32, "{token:?}");
    assert_eq!(ctl_list(&cfg, &node), json!([]), "ctl reads the token file");

    // What a web page can send cross-site without a preflight: a text/plain POST that would
    // add a torrent naming files of the data directory with skip_check.
    let b64 = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(&torrent).unwrap())
    };
    let evil = json!({ "torrent": b64, "skip_check": true }).to_string();
    let api = node.api;
    let post = |headers: &str| {
        raw(
            api,
            &format!(
                "POST /api/v1/torrents HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n{headers}\
                 Content-Length: {}\r\n\r\n{evil}",
                evil.len()
            ),
        )
    };
    // From the page, with the browser's Origin (even holding the token, which a page cannot).
    let (status, body) = post(&format!(
        "Origin: http://evil.example\r\nContent-Type: text/plain\r\nAuthorization: Bearer {token}\r\n"
    ));
    assert_eq!(status, 403, "{body}");
    // Without an Origin (an old browser, a proxy that strips it): the type is refused.
    let (status, body) = post(&format!(
        "Content-Type: text/plain;charset=UTF-8\r\nAuthorization: Bearer {token}\r\n"
    ));
    assert_eq!(status, 415, "{body}");
    // DNS rebinding: the attacker's name now resolves to 127.0.0.1; the page's requests carry
    // that name as Host (and no token: it has none).
    let (status, body) = raw(
        api,
        &format!(
            "GET /api/v1/torrents HTTP/1.1\r\nHost: evil.example:{}\r\nConnection: close\r\n\
             Authorization: Bearer {token}\r\n\r\n",
            api.port()
        ),
    );
    assert_eq!(status, 421, "{body}");
    // Another local user: loopback, well-formed JSON, no token.
    let (status, body) = request(api, "127.0.0.1", "POST", "/api/v1/torrents", &evil, None);
    assert_eq!(status, 401, "{body}");
    let (status, _) = request(
        api,
        "127.0.0.1",
        "POST",
        "/api/v1/torrents",
        &evil,
        Some("guess"),
    );
    assert_eq!(status, 401);
    assert!(
        list(&node, &token).is_empty(),
        "a refused request added something"
    );

    // Trickled headers: a byte every 300 ms; closed once the 2 s header timeout passes.
    let mut slow = TcpStream::connect(api).unwrap();
    slow.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let started = Instant::now();
    let head = format!("GET /api/v1/torrents HTTP/1.1\r\nHost: {api}\r\nX-Pad: ");
    let mut closed_after = None;
    for b in head.bytes().chain(std::iter::repeat(b'a')).take(200) {
        if slow.write_all(&[b]).is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        let mut buf = [0u8; 512];
        match slow.read(&mut buf) {
            Ok(_) => {
                // 0 (closed) or an error status: either way the server ended it.
                closed_after = Some(started.elapsed());
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => {
                closed_after = Some(started.elapsed());
                break;
            }
        }
    }
    let closed_after = closed_after.expect("trickled headers were never cut off");
    assert!(
        closed_after < Duration::from_secs(10),
        "trickled headers closed only after {closed_after:?}"
    );

    // A thousand idle connections (32 allowed): each new one closes the one idle the longest,
    // so the cap never locks the operator out.
    let hard = raise_nofile();
    let n = 1000.min(hard.saturating_sub(64) as usize);
    assert!(n >= 500, "open-file limit {hard} too low for the test");
    let idle: Vec<TcpStream> = (0..n)
        .filter_map(|_| TcpStream::connect(api).ok())
        .collect();
    assert_eq!(idle.len(), n, "connects refused by the kernel");
    for _ in 0..3 {
        assert_eq!(ctl_list(&cfg, &node), json!([]));
    }
    let evicted =
        node.metric("ringseed_http_connections_closed_total{listener=\"api\",reason=\"evicted\"}");
    assert!(
        evicted >= (n - 32) as f64,
        "{evicted} evicted of {n} idle connections"
    );
    let bad = node
        .metric("ringseed_http_connections_closed_total{listener=\"api\",reason=\"bad_request\"}");
    assert!(bad >= 1.0, "the trickled headers are counted");
    // The idle ones that are left are closed by the server, not kept.
    let mut still_open = 0;
    for mut s in idle {
        s.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        if matches!(s.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock) {
            still_open += 1;
        }
    }
    assert!(still_open <= 32, "{still_open} idle connections kept");
    let refused = node.metric("ringseed_errors_total{reason=\"api_unauthorized\"}");
    assert!(refused >= 5.0, "refusals counted: {refused}");

    node.stop();
}

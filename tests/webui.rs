//! The web UI (webui/, embedded by src/webui.rs):
//! - the node serves its files on the control listener without a token, with their content
//!   types, a strict CSP, nosniff, `X-Frame-Options: DENY` and ETag/304; an unknown name is 404
//!   and no path reaches another file; the API next to it still wants its token;
//! - in a real headless Chromium (Debian `chromium` + `chromium-driver`, driven by selenium from
//!   PyPI), tests/helpers/webui_check.py logs in, checks the list, filters, sorting, details,
//!   adds a torrent by file upload, stops, starts and removes it, against qbittorrent-nox serving
//!   the same files as its alternative UI (proof that the page speaks the real qBittorrent Web
//!   API) and against a ringseed node (which needs its /api/v2). Screenshots land in
//!   target/webui/ (CI artifacts).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::node::RunNode;
use common::require_tool;

/// One raw HTTP/1.1 request; the status, the header block (lower-cased names) and the body.
fn raw(to: SocketAddr, method: &str, path: &str, extra: &str) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(to).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\n{extra}\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(&out)));
    let head = String::from_utf8_lossy(&out[..split]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = head
        .lines()
        .skip(1)
        .map(|l| match l.split_once(':') {
            Some((k, v)) => format!("{}: {}\n", k.to_ascii_lowercase(), v.trim()),
            None => String::new(),
        })
        .collect();
    (status, headers, out[split + 4..].to_vec())
}

fn header<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    headers
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A node on loopback with its generated token; returns it with (tempdir, state dir, data dir).
fn node() -> (RunNode, tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let cfg = dir.path().join("ringseed.toml");
    std::fs::write(
        &cfg,
        format!(
            "[engine]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n\
             [control]\nlisten = \"127.0.0.1:0\"\n\
             [state]\ndir = {:?}\n\
             [torrents]\ndata_dir = {:?}\nwatch_interval_s = 0\n",
            state.display().to_string(),
            data.display().to_string(),
        ),
    )
    .unwrap();
    let node = RunNode::start(&cfg);
    (node, dir, state, data)
}

#[test]
fn the_node_serves_the_ui_files() {
    let (node, _dir, _state, _data) = node();
    let api = node.api;
    let mut total = 0;
    for (path, file, content_type) in [
        ("/", "index.html", "text/html; charset=utf-8"),
        ("/webui/app.js", "app.js", "text/javascript; charset=utf-8"),
        ("/webui/app.css", "app.css", "text/css; charset=utf-8"),
        ("/webui/icon.svg", "icon.svg", "image/svg+xml"),
    ] {
        // No token: the page is public (it asks for a login itself).
        let (status, headers, body) = raw(api, "GET", path, "");
        assert_eq!(status, 200, "{path}: {headers}");
        assert_eq!(
            body,
            std::fs::read(repo().join("webui").join(file)).unwrap(),
            "{path} is webui/{file}"
        );
        total += body.len();
        assert_eq!(
            header(&headers, "content-type"),
            Some(content_type),
            "{path}"
        );
        let csp = header(&headers, "content-security-policy").unwrap_or_default();
        assert!(csp.starts_with("default-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(header(&headers, "x-content-type-options"), Some("nosniff"));
        assert_eq!(header(&headers, "x-frame-options"), Some("DENY"));
        assert_eq!(header(&headers, "cache-control"), Some("no-cache"));
        let etag = header(&headers, "etag").unwrap_or_else(|| panic!("{path}: no ETag"));
        assert!(etag.starts_with('"') && etag.len() > 10, "{etag}");
        // Revalidation: the same tag is 304 without a body; another tag gets the file.
        let (status, h304, body) = raw(api, "GET", path, &format!("If-None-Match: {etag}\r\n"));
        assert_eq!(status, 304, "{path}");
        assert!(body.is_empty());
        assert_eq!(header(&h304, "etag"), Some(etag));
        let (status, _, body) = raw(api, "GET", path, "If-None-Match: \"other\"\r\n");
        assert_eq!((status, body.is_empty()), (200, false), "{path}");
        // HEAD: the headers without the body.
        let (status, hh, body) = raw(api, "HEAD", path, "");
        assert_eq!((status, body.len()), (200, 0), "{path}");
        assert_eq!(header(&hh, "etag"), Some(etag));
    }
    assert!(total < 200 * 1024, "the UI is {total} bytes");
    eprintln!("web UI: {total} bytes in 4 files");

    // Unknown names and every way out of the table: 404 (or a 4xx from the router), never a
    // file of the node's.
    for path in [
        "/webui/nope.js",
        "/webui/",
        "/webui/../Cargo.toml",
        "/webui/..%2fCargo.toml",
        "/webui/%2e%2e%2fCargo.toml",
        "/webui/..%2f..%2f..%2fetc%2fpasswd",
        "/webui/app.js%00",
        "/webui/app.js/x",
        "/webui/index.html/",
        "/index.html",
        "/webui",
    ] {
        let (status, headers, body) = raw(api, "GET", path, "");
        assert!(
            (400..500).contains(&status),
            "{path}: {status} {headers} {}",
            String::from_utf8_lossy(&body)
        );
        let text = String::from_utf8_lossy(&body);
        assert!(
            !text.contains("[package]") && !text.contains("root:"),
            "{path} leaked a file"
        );
    }
    let (status, headers, _) = raw(api, "GET", "/webui/nope.js", "");
    assert_eq!(status, 404);
    assert!(header(&headers, "content-security-policy").is_some());
    // Only GET (and HEAD).
    let (status, _, _) = raw(api, "POST", "/", "Content-Length: 0\r\n");
    assert_eq!(status, 405);
    // The API beside it still wants its token.
    let (status, _, _) = raw(api, "GET", "/api/v1/torrents", "");
    assert_eq!(status, 401);
    node.stop();
}

/// Runs a Python helper under Debian's python3; panics with its output unless it exits 0.
fn helper(script: &str, args: &[&str]) {
    for tool in [
        "/usr/bin/python3",
        "/usr/bin/chromium",
        "/usr/bin/chromedriver",
        "/usr/bin/qbittorrent-nox",
    ] {
        require_tool(tool);
    }
    assert!(
        repo().join("target/pydeps/selenium").is_dir(),
        "selenium is missing from target/pydeps: run scripts/test.sh (it installs the pinned \
         PyPI packages) first"
    );
    let out = Command::new("/usr/bin/python3")
        .arg(repo().join("tests/helpers").join(script))
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "{script} failed ({}):\n{stderr}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn the_ui_in_chromium_against_qbittorrent_nox() {
    let shot = repo().join("target/webui/qbittorrent-nox.png");
    let _ = std::fs::remove_file(&shot);
    helper(
        "webui_qbt.py",
        &["--screenshot", shot.to_str().unwrap_or_default()],
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{shot:?}"
    );
}

/// The page as the node serves it, under the node's own CSP: the script runs (it shows the login
/// form), the style and the icon load, and Chromium logs no violation or script error. Needs
/// no /api/v2 (the page's first call fails and it asks for a login).
#[test]
fn the_page_loads_in_chromium_from_the_node() {
    let (node, _dir, _state, _data) = node();
    let shot = repo().join("target/webui/login.png");
    let _ = std::fs::remove_file(&shot);
    helper(
        "webui_check.py",
        &[
            "--url",
            &format!("http://{}", node.api),
            "--page-only",
            "--screenshot",
            shot.to_str().unwrap_or_default(),
        ],
    );
    assert!(std::fs::read(&shot).unwrap().starts_with(b"\x89PNG"));
    node.stop();
}

#[test]
fn the_ui_in_chromium_against_ringseed() {
    let (node, _dir, state, data) = node();
    let token = std::fs::read_to_string(state.join("api-token")).unwrap();
    let shot = repo().join("target/webui/screenshot.png");
    let _ = std::fs::remove_file(&shot);
    helper(
        "webui_check.py",
        &[
            "--url",
            &format!("http://{}", node.api),
            "--username",
            "admin",
            "--password",
            token.trim(),
            "--data-dir",
            data.to_str().unwrap_or_default(),
            "--screenshot",
            shot.to_str().unwrap_or_default(),
        ],
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{shot:?}"
    );
    node.stop();
}

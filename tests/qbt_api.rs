//! ringseed's qBittorrent Web API (issue 14, docs/qbittorrent-api.md) against the real thing,
//! with real processes: a ringseed node, a fresh qbittorrent-nox (Debian package) on the same
//! fixtures, and the PyPI client library `qbittorrent-api`.
//!
//! tests/helpers/qbt_ringseed.py runs qbt_flow.py (qbittorrent-api's flow, both dialects)
//! against the node, qbt_dump.py against both servers, and compares the two dumps' shapes
//! (torrents/info, properties, files, trackers, transfer/info, sync/maindata and its deltas…):
//! any difference not in tests/helpers/qbt_allow.txt (each with its reason) fails. Then this
//! test reads the node's answers to bad input from its dump: qBittorrent's statuses, and
//! nothing added. The login flood bans 127.0.0.1 from logging in, so it runs last; the checks
//! before it that need no login come from 127.0.0.2.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::http::{form_post, request};
use common::node::RunNode;
use common::require_tool;
use serde_json::Value;

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One raw request with extra header lines (no body).
fn raw(
    to: std::net::SocketAddr,
    from: &str,
    method: &str,
    path: &str,
    headers: &str,
) -> (u16, String) {
    use std::io::{Read, Write};
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let src: std::net::SocketAddr = format!("{from}:0").parse().unwrap();
    sock.bind(&src.into()).unwrap();
    sock.connect(&to.into()).unwrap();
    let mut s: std::net::TcpStream = sock.into();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nConnection: close\r\n{headers}Content-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (status, body) = common::http::split_response(&out);
    (status.unwrap_or(0), body)
}

#[test]
fn qbittorrent_api_matches_qbittorrent_nox_and_drives_ringseed() {
    require_tool("/usr/bin/qbittorrent-nox");
    require_tool("/usr/bin/python3");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // the login password from its own file (mode 0600); the API token stays the Bearer key
    let password_file = dir.path().join("qbt-password");
    std::fs::write(&password_file, "rs-web-password\n").unwrap();
    std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cfg = dir.path().join("ringseed.toml");
    std::fs::write(
        &cfg,
        format!(
            "[engine]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n\
             [metrics]\nlisten = \"\"\n\
             [control]\nlisten = \"127.0.0.1:0\"\nusername = \"rs-admin\"\npassword_file = {:?}\n\
             [state]\ndir = {:?}\n\
             [torrents]\ndata_dir = {:?}\nwatch_interval_s = 0\n",
            password_file.display().to_string(),
            state.display().to_string(),
            data.display().to_string(),
        ),
    )
    .unwrap();
    let node = RunNode::start(&cfg);
    let api = node.api;
    let token = std::fs::read_to_string(state.join("api-token")).unwrap();
    let token = token.trim();
    let host = format!("Host: {api}\r\n");

    // Bearer: the API token opens every endpoint but auth/login; another token does not.
    let (st, body) = request(
        api,
        "127.0.0.2",
        "GET",
        "/api/v2/app/webapiVersion",
        "",
        Some(token),
    );
    assert_eq!((st, body.as_str()), (200, "2.11.2"));
    let (st, body) = request(
        api,
        "127.0.0.2",
        "GET",
        "/api/v2/torrents/info",
        "",
        Some("nope"),
    );
    assert_eq!((st, body.as_str()), (403, "Forbidden"));
    // ringseed's own addition for the web UI: the BTT earnings, behind the same login ([speed]
    // is off on this node, so there is nothing to show)
    let (st, body) = request(
        api,
        "127.0.0.2",
        "GET",
        "/api/v2/ringseed/earnings",
        "",
        Some(token),
    );
    assert_eq!((st, body.as_str()), (200, r#"{"enabled":false}"#));
    let (st, _) = request(
        api,
        "127.0.0.2",
        "GET",
        "/api/v2/ringseed/earnings",
        "",
        None,
    );
    assert_eq!(st, 403);
    // the token is not the login password when password_file is set
    let (st, body) = raw(
        api,
        "127.0.0.2",
        "POST",
        &format!("/api/v2/auth/login?username=rs-admin&password={token}"),
        &host,
    );
    assert_eq!(
        (st, body.as_str()),
        (200, "Fails."),
        "a POST's query string is ignored"
    );
    // DNS rebinding, cross-site pages: qBittorrent's 401, before any login is looked at
    let (st, _) = raw(
        api,
        "127.0.0.2",
        "GET",
        "/api/v2/app/version",
        "Host: evil.example\r\n",
    );
    assert_eq!(st, 401);
    let (st, _) = raw(
        api,
        "127.0.0.2",
        "GET",
        "/api/v2/app/version",
        &format!("{host}Origin: http://evil.example\r\nAuthorization: Bearer {token}\r\n"),
    );
    assert_eq!(st, 401, "cross-site, even with the key");
    // ringseed's own API keeps its rules (JSON only, its token)
    let (st, _) = raw(
        api,
        "127.0.0.2",
        "POST",
        "/api/v1/torrents",
        &format!(
            "{host}Content-Type: application/x-www-form-urlencoded\r\nAuthorization: Bearer {token}\r\n"
        ),
    );
    assert_eq!(st, 415, "/api/v1 still refuses forms");

    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("qbt-api");
    let _ = std::fs::remove_dir_all(&out);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/helpers/qbt_ringseed.py");
    let run = Command::new("/usr/bin/python3")
        .arg(&script)
        .args(["--url", &format!("http://{api}"), "--username", "rs-admin"])
        .args(["--password", "rs-web-password"])
        .arg("--data-root")
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .arg("--organisation")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "qbt_ringseed.py failed:\n{stdout}\n{stderr}"
    );
    let summary: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(summary["flow"], "passed", "{summary}");
    assert_eq!(
        summary["flow_qbittorrent"], "passed",
        "the same flow against qbittorrent-nox: {summary}"
    );
    // the calls beyond the flow: torrents/add by http:// link with rename and flags, tracker
    // edits reaching the announcer, reannounce, setLocation, setAutoManagement, transfer limits
    assert_eq!(summary["gaps"], "passed", "qbt_gaps.py: {summary}");
    assert_eq!(
        summary["gaps_qbittorrent"], "passed",
        "the same qbt_gaps.py against qbittorrent-nox: {summary}"
    );
    assert_eq!(
        summary["compare"]["differences"],
        serde_json::json!([]),
        "{summary}"
    );

    // the gaps' bad inputs answered as qBittorrent answers them
    let statuses = |file: &str| -> Value {
        read_json(&out.join(file))["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["step"] == "bad input")
            .map(|s| s["statuses"].clone())
            .unwrap_or_else(|| panic!("{file}: no bad-input step"))
    };
    assert_eq!(
        statuses("gaps.json"),
        statuses("gaps-qbittorrent.json"),
        "ringseed (left) vs qBittorrent (right)"
    );
    // contentLayout: the same content_path (below each run's data directory), file names
    // and files on disk for every layout
    let layouts = |file: &str| -> Value {
        read_json(&out.join(file))["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["step"] == "content layouts")
            .map(|s| s["cases"].clone())
            .unwrap_or_else(|| panic!("{file}: no content-layouts step"))
    };
    // filePrio: the same priorities shown, the same seed size and progress, the same
    // statuses for bad input
    let step_of = |file: &str, name: &str| -> Value {
        read_json(&out.join(file))["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["step"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{file}: no {name} step"))
    };
    let prio = step_of("gaps.json", "file priorities");
    assert_eq!(prio["priorities"], serde_json::json!([6, 0, 0]), "{prio}");
    assert_eq!(
        prio,
        step_of("gaps-qbittorrent.json", "file priorities"),
        "ringseed (left) vs qBittorrent (right)"
    );
    // renameFile, renameFolder: the same names, files on disk, content_path and statuses
    let ren = step_of("gaps.json", "renames");
    assert_eq!(
        ren["names"],
        serde_json::json!(["rs-ren/e/a2.bin", "rs-ren/dd/b.bin", "rs-ren/dd/c.bin"]),
        "{ren}"
    );
    assert_eq!(
        ren,
        step_of("gaps-qbittorrent.json", "renames"),
        "ringseed (left) vs qBittorrent (right)"
    );
    let ours = layouts("gaps.json");
    assert_eq!(ours.as_array().map(Vec::len), Some(5), "{ours}");
    assert_eq!(
        ours,
        layouts("gaps-qbittorrent.json"),
        "ringseed (left) vs qBittorrent (right)"
    );

    // the flow ran in the 5.x dialect and the 4.x one answered too
    let flow = read_json(&out.join("flow.json"));
    assert_eq!(flow["dialect"], "5.x (stop/start/stopped)", "{flow}");
    let stop = flow["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "stop/start")
        .unwrap();
    assert_eq!(stop["stopped_state"], "stoppedUP");
    assert_eq!(stop["other_dialect_status"]["pause"], 200);
    assert_eq!(stop["other_dialect_status"]["resume"], 200);

    // bad input: qBittorrent's statuses (the reference's where ringseed agrees), nothing added
    let rs = read_json(&out.join("ringseed-dump.json"));
    let reference = read_json(&out.join("reference-dump.json"));
    let case = |dump: &Value, name: &str| -> Value {
        dump["bad_inputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["case"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no bad-input case {name:?}"))
    };
    let same_as_qbittorrent = [
        "auth/login, wrong password",
        "auth/login, no fields",
        "torrents/info without a session cookie",
        "torrents/info with an unknown SID",
        "torrents/properties?hash=<unknown>",
        "torrents/files?hash=<unknown>",
        "torrents/trackers?hash=<unknown>",
        "torrents/properties without hash",
        "torrents/properties?hash=xyz (not hex)",
        "torrents/info?hashes=<unknown>",
        "torrents/recheck hashes=<unknown>",
        "torrents/reannounce hashes=<unknown>",
        "torrents/delete hashes=<unknown>",
        "torrents/setUploadLimit hashes=<unknown>",
        "torrents/setShareLimits hashes=<unknown>",
        "torrents/addTags hashes=<unknown>",
        "torrents/setCategory hashes=<unknown>",
        "torrents/setForceStart hashes=<unknown>",
        "torrents/setShareLimits without limits",
        "torrents/add of a torrent already present (with an unknown category)",
        "torrents/setCategory category=<unknown>",
        "torrents/editCategory category=<unknown>",
        "torrents/createCategory category=<exists>",
        "torrents/createCategory category=''",
        "torrents/createCategory category='bad//name'",
        "torrents/createCategory category='/lead'",
        "torrents/removeCategories categories=<unknown>",
        "torrents/add (new magnet) category=<unknown>",
        "torrents/add: multipart, no closing boundary",
        "torrents/add: multipart, body not multipart at all",
        "torrents/add: multipart, Content-Type without a boundary",
        "torrents/add: multipart, part without Content-Disposition",
        "torrents/add: multipart, torrents part is not a torrent",
        "torrents/add: multipart, neither urls nor torrents",
        "torrents/add: urlencoded, urls empty",
        "torrents/add: urlencoded, urls not a URL or magnet",
        "GET torrents/nosuchthing",
        "GET nosuchscope/info",
        "GET torrents/delete (POST only)",
        "torrents/info sort=nosuchfield",
        "app/setPreferences json=<not JSON>",
        "torrents/info with a cross-site Referer",
        "torrents/info with a cross-site Origin",
        "torrents/info with Host: localhost:1",
        "login flood: 8 wrong passwords in a row",
        "login flood: then the right password",
        "login flood: a request with a session made before the ban",
        "login flood: auth/login with a session made before the ban",
    ];
    for name in same_as_qbittorrent {
        let (a, b) = (case(&rs, name), case(&reference, name));
        assert_eq!(
            a["status"], b["status"],
            "{name}: ringseed {a} vs qBittorrent {b}"
        );
        // (app/version's body is each server's own version)
        if !name.ends_with("a request with a session made before the ban") {
            assert_eq!(
                a["body"], b["body"],
                "{name}: ringseed {a} vs qBittorrent {b}"
            );
        }
        if let Some(added) = a["effect"].get("torrents_added") {
            assert_eq!(added, 0, "{name} added a torrent: {a}");
        }
        // the same visible effect (nothing changed where nothing should)
        assert_eq!(
            a["effect"], b["effect"],
            "{name}: ringseed {a} vs qBittorrent {b}"
        );
    }
    // where ringseed answers otherwise, deliberately (docs/qbittorrent-api.md)
    let outside = case(
        &rs,
        "torrents/add savepath=/proc/rs-outside (a new torrent)",
    );
    assert_eq!(
        (&outside["status"], &outside["body"]),
        (&Value::from(409), &Value::from("Cannot make save path")),
        "{outside}"
    );
    assert_eq!(outside["effect"]["torrents_added"], 0);
    assert_eq!(outside["effect"]["listed"], false);
    let category = case(&rs, "torrents/createCategory savePath=/proc/rs-outside");
    assert_eq!(category["status"], 409, "{category}");
    assert_eq!(category["body"], "Cannot make save path");
    assert_eq!(category["effect"]["created"], false);
    let rebound = case(&rs, "torrents/info with Host: evil.example");
    assert_eq!(rebound["status"], 401, "DNS rebinding refused: {rebound}");
    let flood = case(&rs, "login flood: 8 wrong passwords in a row");
    let each: Vec<u64> = flood["effect"]["each"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e[0].as_u64().unwrap())
        .collect();
    assert_eq!(each, [200, 200, 200, 200, 200, 403, 403, 403], "{flood}");

    // logout killed the session
    assert_eq!(rs["endpoints"]["app/version after logout"]["status"], 403);

    // The qBittorrent settings of a torrent survive a restart: a name, sequential download, an
    // edited tracker list. app/shutdown stops the node as SIGTERM does (exit 0, state saved).
    // (127.0.0.1 is banned from logging in by now: the API key is the way in.)
    let src = data.join("rs-persist.bin");
    std::fs::write(&src, vec![7u8; 100_000]).unwrap();
    let tfile = dir.path().join("rs-persist.torrent");
    let meta = common::create_torrent(&src, &tfile, &["--tracker", "http://127.0.0.1:9/announce"]);
    let hash: String = meta
        .info
        .hash
        .wire_id()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let body = serde_json::json!({"path": tfile, "skip_check": true, "paused": false});
    let (st, body) = request(
        api,
        "127.0.0.2",
        "POST",
        "/api/v1/torrents",
        &body.to_string(),
        Some(token),
    );
    assert!(st < 300, "{st} {body}");
    for (path, form) in [
        ("rename", format!("hash={hash}&name=rs%20persisted")),
        ("toggleSequentialDownload", format!("hashes={hash}")),
        (
            "addTrackers",
            format!("hash={hash}&urls=http%3A%2F%2F127.0.0.1%3A10%2Fannounce"),
        ),
        (
            "removeTrackers",
            format!("hash={hash}&urls=http%3A%2F%2F127.0.0.1%3A9%2Fannounce"),
        ),
    ] {
        let (st, body) = form_post(api, token, &format!("/api/v2/torrents/{path}"), &form);
        assert_eq!(st, 200, "{path}: {body}");
    }
    let (st, _) = raw(
        api,
        "127.0.0.2",
        "GET",
        "/api/v2/app/shutdown",
        &format!("{host}Authorization: Bearer {token}\r\n"),
    );
    assert_eq!(st, 405, "app/shutdown is POST only");
    let (st, _) = raw(api, "127.0.0.2", "POST", "/api/v2/app/shutdown", &host);
    assert_eq!(st, 403, "app/shutdown needs the login like everything");
    let (st, body) = form_post(api, token, "/api/v2/app/shutdown", "");
    assert_eq!((st, body.as_str()), (200, ""));
    let mut node = node;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(s) = node.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the node did not stop after app/shutdown"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(
        status.success(),
        "app/shutdown: the node exited with {status}"
    );
    drop(node);

    let node = RunNode::start(&cfg);
    let api = node.api;
    let (st, body) = request(
        api,
        "127.0.0.2",
        "GET",
        &format!("/api/v2/torrents/info?hashes={hash}"),
        "",
        Some(token),
    );
    assert_eq!(st, 200, "{body}");
    let info: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info[0]["name"], "rs persisted", "{info}");
    assert_eq!(info[0]["seq_dl"], true, "{info}");
    assert_eq!(info[0]["f_l_piece_prio"], false, "{info}");
    let (st, body) = request(
        api,
        "127.0.0.2",
        "GET",
        &format!("/api/v2/torrents/trackers?hash={hash}"),
        "",
        Some(token),
    );
    assert_eq!(st, 200, "{body}");
    let trackers: Vec<String> = serde_json::from_str::<Vec<Value>>(&body)
        .unwrap()
        .iter()
        .filter_map(|t| t["url"].as_str().map(str::to_string))
        .filter(|u| !u.starts_with("** ["))
        .collect();
    assert_eq!(trackers, ["http://127.0.0.1:10/announce"]);
    node.stop();
}

//! The service as systemd runs it: the unit file verifies, and the binary tells systemd when it
//! is ready and when it is stopping (Type=notify).

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use common::{Payload, Seeder, create_torrent, require_tool, signal, spawn_seeder};

#[test]
fn unit_file_verifies() {
    require_tool("/usr/bin/systemd-analyze");
    // `verify` checks that ExecStart's binary exists: point it at the one this test run built,
    // and change nothing else.
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/ringseed.service"
    ))
    .unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/ringseed "));
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("ringseed.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/ringseed", env!("CARGO_BIN_EXE_ringseed")),
    )
    .unwrap();
    let out = std::process::Command::new("/usr/bin/systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
    for must in [
        "Type=notify",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "LimitNOFILE=",
        "LimitMEMLOCK=",
        "Restart=on-failure",
        "ReadWritePaths=",
    ] {
        assert!(unit.contains(must), "unit lacks {must}");
    }
}

#[test]
fn notifies_ready_and_stopping() {
    let p = Payload::new();
    let t = p.dir.path().join("s.torrent");
    create_torrent(&p.single, &t, &[]);
    let sock_path = p.dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let Seeder {
        mut child,
        addr,
        // Dropped on purpose: with its stdout reader gone, the seeder must still shut down
        // cleanly and exit 0.
        ..
    } = spawn_seeder(
        &t,
        p.data_dir(),
        "127.0.0.1",
        &[("NOTIFY_SOCKET", sock_path.as_path())],
    );
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).unwrap();
    let ready = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    assert!(
        ready.contains("STATUS=seeding 1 torrent(s) on 127.0.0.1:"),
        "{ready}"
    );
    // Ready means listening: the port it reports accepts connections.
    std::net::TcpStream::connect(addr).unwrap();
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    let n = sock.recv(&mut buf).unwrap();
    assert_eq!(String::from_utf8_lossy(&buf[..n]).trim(), "STOPPING=1");
    assert!(child.wait().unwrap().success());
}

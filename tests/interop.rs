//! Interop with tools we did not write: libtorrent (python3-libtorrent), mktorrent and
//! transmission-create, all from Debian packages (installed by `.ci/run`).
//!
//! Torrents made by ringseed must load in libtorrent with the same info-hashes and pass its data
//! check; torrents made by the others must parse in ringseed with identical info-hashes, verify,
//! and a single flipped byte must be reported as exactly the right bad piece.

mod common;

use std::path::{Path, PathBuf};

use common::{Payload, create_torrent, lt_tool, require_tool, ringseed, run_ok};
use ringseed::metainfo::{Metainfo, hex};

fn info_hashes(torrent: &Path) -> (Option<String>, Option<String>) {
    let m = Metainfo::from_bytes(&std::fs::read(torrent).unwrap()).unwrap();
    (
        m.info.hash.v1.map(|h| hex(&h)),
        m.info.hash.v2.map(|h| hex(&h)),
    )
}

/// libtorrent's view of a torrent's info-hashes, `None` where it reports zeros.
fn lt_hashes(torrent: &Path) -> (Option<String>, Option<String>) {
    let out = lt_tool(&["hashes", torrent.to_str().unwrap()]);
    let mut it = out
        .split_whitespace()
        .map(|h| (!h.bytes().all(|c| c == b'0')).then(|| h.to_owned()));
    (it.next().flatten(), it.next().flatten())
}

fn ringseed_verify_json(torrent: &Path, data: &Path) -> (i32, serde_json::Value) {
    let out = ringseed()
        .args(["verify", "--json", "--data"])
        .arg(data)
        .arg(torrent)
        .output()
        .unwrap();
    let code = out.status.code().unwrap_or(-1);
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "verify printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (code, json)
}

/// Flips one byte at `file_offset` of the torrent's largest file and checks that ringseed reports
/// exactly the piece holding it as bad, then restores the byte.
fn flipped_byte_is_the_right_bad_piece(torrent: &Path, data: &Path, file_offset: u64) {
    let m = Metainfo::from_bytes(&std::fs::read(torrent).unwrap()).unwrap();
    let (_, entry) = m
        .info
        .layout
        .data_files()
        .max_by_key(|(_, f)| f.length)
        .unwrap();
    let expected_piece = (entry.offset + file_offset) / m.info.layout.piece_length;
    let path = data.join(entry.rel_path());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[file_offset as usize] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();
    let (code, report) = ringseed_verify_json(torrent, data);
    bytes[file_offset as usize] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(code, 1, "a bad piece must fail verify: {report}");
    assert_eq!(
        report["bad"],
        serde_json::json!([expected_piece]),
        "{report}"
    );
    assert_eq!(report["missing"], serde_json::json!([]));
    assert_eq!(
        report["good"].as_u64().unwrap() + 1,
        report["pieces"].as_u64().unwrap()
    );
}

fn assert_verifies(torrent: &Path, data: &Path) {
    let (code, report) = ringseed_verify_json(torrent, data);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["good"], report["pieces"]);
}

fn ringseed_create(src: &Path, out: &Path, format: &str, piece_kib: u32) {
    let piece = piece_kib.to_string();
    create_torrent(
        src,
        out,
        &[
            "--no-date",
            "--format",
            format,
            "--piece-kib",
            &piece,
            "-t",
            "http://127.0.0.1:6969/announce,udp://127.0.0.1:6969",
            "-t",
            "http://127.0.0.2/a",
        ],
    );
}

#[test]
fn ringseed_torrents_load_and_check_in_libtorrent() {
    require_tool("/usr/bin/python3");
    let p = Payload::new();
    // (source, format, piece KiB): odd piece sizes for v1 (48 KiB, 80 KiB), powers of two for v2.
    let cases: Vec<(PathBuf, &str, u32)> = vec![
        (p.single.clone(), "v1", 48),
        (p.single.clone(), "v2", 16),
        (p.single.clone(), "hybrid", 64),
        (p.multi.clone(), "v1", 80),
        (p.multi.clone(), "v2", 32),
        (p.multi.clone(), "hybrid", 16),
    ];
    for (src, format, kib) in cases {
        let out = p.dir.path().join(format!("rs-{format}-{kib}.torrent"));
        ringseed_create(&src, &out, format, kib);
        let ours = info_hashes(&out);
        assert_eq!(
            lt_hashes(&out),
            ours,
            "{format} {kib} KiB: libtorrent disagrees on info-hash"
        );
        assert_eq!(ours.0.is_some(), format != "v2");
        assert_eq!(ours.1.is_some(), format != "v1");
        let check: serde_json::Value = serde_json::from_str(&lt_tool(&[
            "check",
            out.to_str().unwrap(),
            p.data_dir().to_str().unwrap(),
        ]))
        .unwrap();
        assert_eq!(
            check["have"], check["pieces"],
            "{format} {kib}: libtorrent check {check}"
        );
        assert_verifies(&out, p.data_dir());
    }
}

#[test]
fn libtorrent_torrents_parse_verify_and_pinpoint_a_flipped_byte() {
    require_tool("/usr/bin/python3");
    let p = Payload::new();
    for (src, format, piece) in [
        (&p.single, "v1", 49152u32),
        (&p.multi, "v1", 16384),
        (&p.single, "v2", 32768),
        (&p.multi, "v2", 16384),
        (&p.multi, "hybrid", 65536),
    ] {
        let out = p.dir.path().join(format!("lt-{format}-{piece}.torrent"));
        lt_tool(&[
            "create",
            src.to_str().unwrap(),
            out.to_str().unwrap(),
            format,
            &piece.to_string(),
        ]);
        assert_eq!(
            info_hashes(&out),
            lt_hashes(&out),
            "{format}: info-hash differs from libtorrent's"
        );
        assert_verifies(&out, p.data_dir());
        flipped_byte_is_the_right_bad_piece(&out, p.data_dir(), 200_000);
    }
}

#[test]
fn mktorrent_and_transmission_torrents_verify() {
    require_tool("/usr/bin/mktorrent");
    require_tool("/usr/bin/transmission-create");
    let p = Payload::new();
    for (src, tag) in [(&p.single, "single"), (&p.multi, "multi")] {
        let mk = p.dir.path().join(format!("mk-{tag}.torrent"));
        // -l 15: 32 KiB pieces, which do not divide any file size of the payload.
        run_ok(
            std::process::Command::new("/usr/bin/mktorrent")
                .args(["-l", "15", "-a", "http://127.0.0.1:6969/announce", "-o"])
                .arg(&mk)
                .arg(src),
        );
        let tr = p.dir.path().join(format!("tr-{tag}.torrent"));
        run_ok(
            std::process::Command::new("/usr/bin/transmission-create")
                .args(["-s", "64", "-t", "udp://127.0.0.1:6969", "-o"])
                .arg(&tr)
                .arg(src),
        );
        for t in [&mk, &tr] {
            assert_eq!(info_hashes(t), lt_hashes(t), "{}", t.display());
            assert_verifies(t, p.data_dir());
            flipped_byte_is_the_right_bad_piece(t, p.data_dir(), 123_457);
        }
    }
}

#[test]
fn missing_and_short_files_are_missing_not_bad() {
    let p = Payload::new();
    let t = p.dir.path().join("m.torrent");
    ringseed_create(&p.multi, &t, "v1", 16);
    let m = Metainfo::from_bytes(&std::fs::read(&t).unwrap()).unwrap();
    let (_, last) = m.info.layout.data_files().last().unwrap();
    let path = p.data_dir().join(last.rel_path());
    let original = std::fs::read(&path).unwrap();
    std::fs::write(&path, &original[..original.len() / 2]).unwrap();
    let (code, report) = ringseed_verify_json(&t, p.data_dir());
    assert_eq!(code, 1);
    assert_eq!(report["bad"], serde_json::json!([]));
    let missing = report["missing"].as_array().unwrap();
    assert!(!missing.is_empty());
    assert_eq!(
        missing.last().unwrap(),
        &serde_json::json!(m.info.layout.num_pieces - 1)
    );
    std::fs::remove_file(&path).unwrap();
    let (code, report2) = ringseed_verify_json(&t, p.data_dir());
    assert_eq!(code, 1);
    assert!(report2["missing"].as_array().unwrap().len() > missing.len());
    std::fs::write(&path, &original).unwrap();
    assert_verifies(&t, p.data_dir());
}

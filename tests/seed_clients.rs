//! Real clients download from ringseed, byte-perfect, over loopback.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{Payload, lt_tool, require_tool, ringseed};
use ringseed::engine::{Engine, Settings, Torrent};
use ringseed::metainfo::Metainfo;

fn make_torrent(src: &Path, out: &Path, piece_kib: u32) -> Metainfo {
    let st = ringseed()
        .args(["create", "--no-date", "--piece-kib", &piece_kib.to_string()])
        .arg(src)
        .arg("-o")
        .arg(out)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    Metainfo::from_bytes(&std::fs::read(out).unwrap()).unwrap()
}

fn start_engine(workers: usize) -> Engine {
    Engine::start(Settings {
        workers,
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Settings::default()
    })
    .unwrap()
}

fn assert_same_tree(a: &Path, b: &Path) {
    if a.is_file() {
        assert_eq!(
            std::fs::read(a).unwrap(),
            std::fs::read(b).unwrap(),
            "{} differs",
            b.display()
        );
        return;
    }
    for e in std::fs::read_dir(a).unwrap() {
        let e = e.unwrap();
        assert_same_tree(&e.path(), &b.join(e.file_name()));
    }
}

#[test]
fn libtorrent_downloads_single_and_multi_file() {
    require_tool("/usr/bin/python3");
    let p = Payload::new();
    let engine = start_engine(2);
    let addr = engine.local_addr();
    // 48 KiB pieces divide none of the payload's file sizes.
    for (src, name) in [(&p.single, "single"), (&p.multi, "multi")] {
        let tpath = p.dir.path().join(format!("{name}.torrent"));
        let meta = make_torrent(src, &tpath, 48);
        let (t, report) = Torrent::open(meta, p.data_dir(), Some(Default::default())).unwrap();
        assert!(report.unwrap().all_good());
        engine.add_torrent(Arc::new(t)).unwrap();
        let out = p.dir.path().join(format!("lt-{name}"));
        let res: serde_json::Value = serde_json::from_str(&lt_tool(&[
            "download",
            tpath.to_str().unwrap(),
            out.to_str().unwrap(),
            &addr.to_string(),
            "60",
        ]))
        .unwrap();
        assert_eq!(res["done"], true, "{res}");
        assert_same_tree(src, &out.join(src.file_name().unwrap()));
    }
    let stats = engine.shutdown();
    let up: u64 = stats.iter().map(|s| s.bytes_up).sum();
    assert!(up >= 1_000_003 + 1_600_122, "{stats:?}");
}

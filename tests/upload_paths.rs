//! Every upload path delivers every block exactly once and intact, many times over: the copy
//! path, zero-copy sends (whose buffers outlive the send until the kernel's notification) and
//! splice (file → pipe → socket, headers from a buffer).

mod common;

use std::sync::Arc;

use common::{create_torrent, pattern};
use ringseed::engine::{Engine, Settings, Torrent, UploadPath};

fn fetch_many(path: UploadPath) {
    fetch_many_with(path, Settings::default().job_memory);
}

fn fetch_many_with(path: UploadPath, job_memory: usize) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.bin"), pattern(40 << 20, 11)).unwrap();
    std::fs::write(data.join("b.bin"), pattern(3_000_001, 12)).unwrap();
    let t = dir.path().join("t.torrent");
    let meta = create_torrent(&data, &t, &["--piece-kib", "256", "--no-date"]);
    let engine = Engine::start(Settings {
        workers: 2,
        listen: "127.0.0.1:0".parse().unwrap(),
        upload_path: path,
        job_memory,
        ..Settings::default()
    })
    .unwrap();
    let (torrent, _) = Torrent::open(meta.clone(), dir.path(), None).unwrap();
    engine.add_torrent(Arc::new(torrent)).unwrap();
    let expected: Vec<u8> = [
        std::fs::read(data.join("a.bin")).unwrap(),
        std::fs::read(data.join("b.bin")).unwrap(),
    ]
    .concat();
    // Several fetches in parallel, each with a deep pipeline, so many jobs are in flight and
    // buffers are recycled over and over.
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let info = meta.info.clone();
            let addr = engine.local_addr();
            std::thread::spawn(move || ringseed::fetch::fetch(&info, addr, 512))
        })
        .collect();
    for h in handles {
        let (got, _) = h
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("{path:?}: {e}"));
        assert!(got == expected, "{path:?}: fetched bytes differ");
    }
    let stats = engine.shutdown();
    assert_eq!(
        stats.iter().map(|s| s.bytes_up).sum::<u64>(),
        4 * expected.len() as u64
    );
}

#[test]
fn copy_path_delivers_every_block_once() {
    fetch_many(UploadPath::Copy);
}

#[test]
fn zerocopy_path_delivers_every_block_once() {
    fetch_many(UploadPath::Zerocopy);
}

#[test]
fn splice_path_delivers_every_block_once() {
    fetch_many(UploadPath::Splice);
}

/// With job memory for only four jobs per worker, four deep fetches still all complete: peers
/// that find the budget spent wait their turn and are started as jobs finish.
#[test]
fn peers_wait_for_job_memory_and_all_finish() {
    fetch_many_with(UploadPath::Copy, 1 << 20);
}

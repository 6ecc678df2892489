//! Every upload path delivers every block exactly once and intact, many times over: the copy
//! path and the `mmap` path (sends straight from the files' mappings); and a file cut short
//! under either ends the peer with a counted reason, never a wrong byte.

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
    // The page-cached files go out from their mappings on the mmap path, never on the copy path.
    let mapped: u64 = stats.iter().map(|s| s.jobs_mapped).sum();
    match path {
        UploadPath::Copy => assert_eq!(mapped, 0),
        _ => assert!(mapped > 0, "{path:?}: no job sent from a mapping"),
    }
}

#[test]
fn copy_path_delivers_every_block_once() {
    fetch_many(UploadPath::Copy);
}

/// With job memory for only four jobs per worker, four deep fetches still all complete: peers
/// that find the budget spent wait their turn and are started as jobs finish.
#[test]
fn peers_wait_for_job_memory_and_all_finish() {
    fetch_many_with(UploadPath::Copy, 1 << 20);
}

/// A file cut short while a peer downloads it, mid-page and with jobs in flight: every block
/// the peer receives is the original data (no zero-filled or stale byte), and the engine ends
/// the peer with a counted `disk_error` once a job reaches past the new end.
fn truncated_under_upload(path: UploadPath) {
    use std::io::{Read, Write};
    use std::time::Duration;

    use ringseed::wire::{BlockRequest, Handshake, Message};

    const LEN: usize = 24 << 20;
    const CUT: u64 = (8 << 20) + 5000; // in the middle of a page and of a block
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let original = pattern(LEN, 21);
    std::fs::write(data.join("f.bin"), &original).unwrap();
    let meta = create_torrent(
        &data.join("f.bin"),
        &dir.path().join("t.torrent"),
        &["--piece-kib", "256", "--no-date"],
    );
    let engine = Engine::start(Settings {
        workers: 1,
        listen: "127.0.0.1:0".parse().unwrap(),
        upload_path: path,
        ..Settings::default()
    })
    .unwrap();
    let (torrent, _) = Torrent::open(meta.clone(), &data, None).unwrap();
    engine.add_torrent(Arc::new(torrent)).unwrap();

    let mut s = std::net::TcpStream::connect(engine.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(&Handshake::new(meta.info.hash.wire_id(), *b"-XX0000-truncate0001").encode())
        .unwrap();
    let mut hs = [0u8; 68];
    s.read_exact(&mut hs).unwrap();
    let mut out = Vec::new();
    Message::Interested.encode(&mut out);
    s.write_all(&out).unwrap();
    let blocks: Vec<BlockRequest> = (0..(LEN as u32 / 16384))
        .map(|b| BlockRequest {
            index: b / 16,
            begin: (b % 16) * 16384,
            length: 16384,
        })
        .collect();
    let (mut next, mut outstanding, mut received) = (0usize, 0usize, 0usize);
    let mut cut = false;
    let mut unchoked = false;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    let closed = loop {
        if unchoked && outstanding < 64 && next < blocks.len() {
            out.clear();
            while outstanding < 64 && next < blocks.len() {
                Message::Request(blocks[next]).encode(&mut out);
                next += 1;
                outstanding += 1;
            }
            if s.write_all(&out).is_err() {
                break true;
            }
        }
        let n = match s.read(&mut chunk) {
            Ok(0) => break true,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(e) => panic!("{path:?}: neither data nor a close: {e}"),
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut pos = 0;
        while let Some((m, used)) = ringseed::wire::parse_message(&buf[pos..], 1 << 20).unwrap() {
            match m {
                Message::Unchoke => unchoked = true,
                Message::Piece { index, begin, data } => {
                    let at = index as usize * (256 << 10) + begin as usize;
                    assert!(
                        data == &original[at..at + data.len()],
                        "{path:?}: block at {at} differs from the file's original bytes"
                    );
                    received += 1;
                    outstanding -= 1;
                }
                _ => {}
            }
            pos += used;
        }
        buf.drain(..pos);
        // A quarter in, with a full pipeline in flight: cut the file mid-page.
        if !cut && received >= blocks.len() / 8 {
            std::fs::OpenOptions::new()
                .write(true)
                .open(data.join("f.bin"))
                .unwrap()
                .set_len(CUT)
                .unwrap();
            cut = true;
        }
        if received == blocks.len() {
            break false;
        }
    };
    assert!(cut, "{path:?}: the file was never cut");
    assert!(
        closed,
        "{path:?}: the whole file arrived although it was cut short"
    );
    let before_cut = CUT as usize / 16384;
    assert!(
        received <= before_cut,
        "{path:?}: {received} blocks arrived, only {before_cut} lie before the cut"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let disk: u64 = engine
            .stats()
            .iter()
            .map(|s| s.disconnects.get("disk_error").copied().unwrap_or(0))
            .sum();
        if disk >= 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{path:?}: no disk_error counted: {:?}",
            engine.stats()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    engine.shutdown();
}

#[test]
fn mmap_path_delivers_every_block_once() {
    fetch_many(UploadPath::Mmap);
}

#[test]
fn a_file_truncated_under_the_copy_path_ends_the_peer_with_no_wrong_byte() {
    truncated_under_upload(UploadPath::Copy);
}

#[test]
fn a_file_truncated_under_the_mmap_path_ends_the_peer_with_no_wrong_byte() {
    truncated_under_upload(UploadPath::Mmap);
}

//! Bad peers change nothing for good ones: each misbehaving peer is cut off with a counted
//! reason while libtorrent downloads the same torrent from the same engine, byte-perfect.
//! Also: with two workers, peers land on both (thread-per-core for real).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{create_torrent, lt_tool, pattern, require_tool};
use ringseed::engine::{Engine, Settings, StatsSnapshot, Torrent};
use ringseed::metainfo::Metainfo;
use ringseed::wire::extension::ExtHandshake;
use ringseed::wire::{BlockRequest, Handshake, Message};

fn total(stats: &[StatsSnapshot], reason: &str) -> u64 {
    stats
        .iter()
        .map(|s| s.disconnects.get(reason).copied().unwrap_or(0))
        .sum()
}

/// Waits until the engine counts one more disconnect for `reason` than `before`.
fn wait_for(engine: &Engine, reason: &str, before: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = total(&engine.stats(), reason);
        if now > before {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "no `{reason}` disconnect counted: {:?}",
            engine.stats()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Connects and completes a handshake for `info_hash`; returns the stream with the engine's
/// handshake read.
fn handshaken(addr: SocketAddr, info_hash: [u8; 20]) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&Handshake::new(info_hash, *b"-XX0000-badpeer00001").encode())
        .unwrap();
    let mut hs = [0u8; 68];
    s.read_exact(&mut hs).unwrap();
    assert_eq!(Handshake::parse(&hs).unwrap().unwrap().info_hash, info_hash);
    s
}

/// Reads until the engine closes the connection (EOF or reset); panics on timeout.
fn assert_cut_off(mut s: TcpStream) {
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("connection not closed: {e}"),
        }
    }
}

fn msg(m: Message<'_>) -> Vec<u8> {
    let mut v = Vec::new();
    m.encode(&mut v);
    v
}

/// Reads messages until an unchoke arrives.
fn wait_unchoke(s: &mut TcpStream) {
    read_until(s, |m| (*m == Message::Unchoke).then_some(()));
}

#[test]
fn bad_peers_are_cut_off_while_a_good_client_downloads() {
    require_tool("/usr/bin/python3");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("payload.bin"), pattern(48 << 20, 7)).unwrap();
    let tpath = dir.path().join("p.torrent");
    let meta = create_torrent(
        &data.join("payload.bin"),
        &tpath,
        &["--no-date", "--piece-kib", "64"],
    );
    let ih = meta.info.hash.wire_id();
    let engine = Engine::start(Settings {
        workers: 2,
        listen: "127.0.0.1:0".parse().unwrap(),
        handshake_timeout: Duration::from_secs(2),
        // A rate limit keeps the good download running while the bad peers do their worst.
        upload_rate_limit: 24 << 20,
        ..Settings::default()
    })
    .unwrap();
    let (t, _) = Torrent::open(meta, &data, None).unwrap();
    engine.add_torrent(Arc::new(t)).unwrap();
    let addr = engine.local_addr();

    let out = dir.path().join("good");
    let (tp, op, a) = (tpath.clone(), out.clone(), addr.to_string());
    let good = std::thread::spawn(move || {
        lt_tool(&[
            "download",
            tp.to_str().unwrap(),
            op.to_str().unwrap(),
            &a,
            "90",
        ])
    });
    std::thread::sleep(Duration::from_millis(500));

    // A wrong info-hash.
    let before = total(&engine.stats(), "unknown_torrent");
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&Handshake::new([0xee; 20], [1; 20]).encode())
        .unwrap();
    assert_cut_off(s);
    wait_for(&engine, "unknown_torrent", before);

    // Not BitTorrent at all.
    let before = total(&engine.stats(), "bad_handshake");
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_cut_off(s);
    wait_for(&engine, "bad_handshake", before);

    // A message announcing 2^31 bytes.
    let before = total(&engine.stats(), "message_too_long");
    let mut s = handshaken(addr, ih);
    s.write_all(&[0x80, 0, 0, 0, 7]).unwrap();
    assert_cut_off(s);
    wait_for(&engine, "message_too_long", before);

    // A request beyond the end of a piece, and one of 1 MiB.
    for req in [
        BlockRequest {
            index: 3,
            begin: 60 << 10,
            length: 16 << 10,
        },
        BlockRequest {
            index: 0,
            begin: 0,
            length: 1 << 20,
        },
        BlockRequest {
            index: 100_000,
            begin: 0,
            length: 16 << 10,
        },
    ] {
        let before = total(&engine.stats(), "invalid_request");
        let mut s = handshaken(addr, ih);
        s.write_all(&msg(Message::Interested)).unwrap();
        s.write_all(&msg(Message::Request(req))).unwrap();
        assert_cut_off(s);
        wait_for(&engine, "invalid_request", before);
    }

    // Garbage after the handshake: a `have` with a 2-byte payload.
    let before = total(&engine.stats(), "bad_message");
    let mut s = handshaken(addr, ih);
    s.write_all(&[0, 0, 0, 3, 4, 0xde, 0xad, 1, 2, 3, 4, 5])
        .unwrap();
    assert_cut_off(s);
    wait_for(&engine, "bad_message", before);

    // 10 000 requests without reading a byte of the answers.
    let before = total(&engine.stats(), "request_flood");
    let mut s = handshaken(addr, ih);
    s.write_all(&msg(Message::Interested)).unwrap();
    wait_unchoke(&mut s);
    let mut flood = Vec::new();
    for i in 0..10_000u32 {
        let r = BlockRequest {
            index: i % 768,
            begin: (i / 768 % 4) * 16384,
            length: 16384,
        };
        flood.extend_from_slice(&msg(Message::Request(r)));
    }
    // The engine may cut us off before all of it is written.
    let _ = s.write_all(&flood);
    wait_for(&engine, "request_flood", before);
    drop(s);

    // Silence after connecting: the handshake timeout.
    let before = total(&engine.stats(), "handshake_timeout");
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_cut_off(s);
    wait_for(&engine, "handshake_timeout", before);

    // Vanishing in the middle of a message.
    let before = total(&engine.stats(), "peer_closed");
    let mut s = handshaken(addr, ih);
    s.write_all(
        &msg(Message::Request(BlockRequest {
            index: 0,
            begin: 0,
            length: 16384,
        }))[..7],
    )
    .unwrap();
    drop(s);
    wait_for(&engine, "peer_closed", before);

    let res: serde_json::Value = serde_json::from_str(&good.join().unwrap()).unwrap();
    assert_eq!(res["done"], true, "good client: {res}");
    assert_eq!(
        std::fs::read(out.join("payload.bin")).unwrap(),
        std::fs::read(data.join("payload.bin")).unwrap()
    );
    // Nothing lingers: every bad connection's slot was freed.
    let deadline = Instant::now() + Duration::from_secs(5);
    while engine.stats().iter().map(|s| s.peers).sum::<i64>() > 1 {
        assert!(Instant::now() < deadline, "{:?}", engine.stats());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn peers_land_on_every_worker() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f.bin"), pattern(100_000, 3)).unwrap();
    let tpath = dir.path().join("f.torrent");
    let meta = create_torrent(&dir.path().join("f.bin"), &tpath, &[]);
    let ih = meta.info.hash.wire_id();
    let engine = Engine::start(Settings {
        workers: 2,
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Settings::default()
    })
    .unwrap();
    let (t, _) = Torrent::open(meta, dir.path(), None).unwrap();
    engine.add_torrent(Arc::new(t)).unwrap();
    let peers: Vec<TcpStream> = (0..32)
        .map(|_| handshaken(engine.local_addr(), ih))
        .collect();
    let stats = engine.stats();
    assert_eq!(stats.len(), 2);
    for (i, s) in stats.iter().enumerate() {
        assert!(s.handshakes > 0, "worker {i} got no peers: {stats:?}");
    }
    assert_eq!(stats.iter().map(|s| s.handshakes).sum::<u64>(), 32);
    drop(peers);
}

/// Reads messages until `want` returns something for one of them.
fn read_until<T>(s: &mut TcpStream, mut want: impl FnMut(&Message<'_>) -> Option<T>) -> T {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        while let Some((m, used)) = ringseed::wire::parse_message(&buf, 1 << 20).unwrap() {
            if let Some(t) = want(&m) {
                return t;
            }
            buf.drain(..used);
        }
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "closed");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// An engine on loopback with `settings` otherwise.
fn loopback_engine(settings: Settings) -> Engine {
    Engine::start(Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..settings
    })
    .unwrap()
}

/// Writes `len` generated bytes to `<dir>/data/<name>`, makes its torrent (with the `create`
/// flags given) and has `engine` seed it.
fn seed_generated(engine: &Engine, dir: &Path, name: &str, len: usize, flags: &[&str]) -> Metainfo {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join(name), pattern(len, name.len() as u64)).unwrap();
    let meta = create_torrent(
        &data.join(name),
        &dir.join(format!("{name}.torrent")),
        flags,
    );
    let (t, _) = Torrent::open(meta.clone(), &data, Some(Default::default())).unwrap();
    engine.add_torrent(Arc::new(t)).unwrap();
    meta
}

/// Sends our extension handshake and returns the engine's.
fn ext_exchange(s: &mut TcpStream, mine: &ExtHandshake) -> ExtHandshake {
    s.write_all(&msg(Message::Extended {
        id: 0,
        payload: &mine.encode(),
    }))
    .unwrap();
    read_until(s, |m| match m {
        Message::Extended { id: 0, payload } => ExtHandshake::parse(payload).ok(),
        _ => None,
    })
}

/// BEP 9 on the wire: a public torrent offers `ut_metadata` with its size and answers requests
/// with the info dictionary's exact bytes, a piece past the end with a reject, and a peer that
/// keeps asking with rejects once it has had a few copies; a private torrent offers neither
/// metadata nor peer exchange.
#[test]
fn metadata_is_served_for_public_torrents_within_bounds() {
    use ringseed::wire::metadata::{self, MetadataMessage};
    let dir = tempfile::tempdir().unwrap();
    let engine = loopback_engine(Settings {
        workers: 1,
        ..Settings::default()
    });
    let metas = [
        seed_generated(&engine, dir.path(), "public.bin", 300_000, &[]),
        seed_generated(&engine, dir.path(), "private.bin", 300_000, &["--private"]),
    ];
    let ours = 9u8;
    let mine = ExtHandshake {
        m: vec![(metadata::EXTENSION_NAME.into(), ours)],
        ..Default::default()
    };
    let ext_handshake = |s: &mut TcpStream| ext_exchange(s, &mine);
    // Public: offered, with the size; every piece is the info dictionary's bytes.
    let public = &metas[0];
    let mut s = handshaken(engine.local_addr(), public.info.hash.wire_id());
    let theirs = ext_handshake(&mut s);
    let their_id = theirs
        .id_of(metadata::EXTENSION_NAME)
        .expect("ut_metadata offered");
    assert_eq!(theirs.metadata_size, Some(public.info.raw.len() as u64));
    let request = |s: &mut TcpStream, piece: u32| -> (MetadataMessage, Vec<u8>) {
        let req = format!("d8:msg_typei0e5:piecei{piece}ee");
        s.write_all(&msg(Message::Extended {
            id: their_id,
            payload: req.as_bytes(),
        }))
        .unwrap();
        read_until(s, |m| match m {
            Message::Extended { id, payload } if *id == ours => {
                let parsed = MetadataMessage::parse(payload).unwrap();
                let dict_len = payload.len()
                    - match parsed {
                        MetadataMessage::Data { total_size, .. } => {
                            (total_size as usize).min(metadata::PIECE_BYTES)
                        }
                        _ => 0,
                    };
                Some((parsed, payload[dict_len..].to_vec()))
            }
            _ => None,
        })
    };
    let n = metadata::piece_count(public.info.raw.len());
    assert_eq!(n, 1);
    let (m, bytes) = request(&mut s, 0);
    let total_size = public.info.raw.len() as u64;
    assert_eq!(
        m,
        MetadataMessage::Data {
            piece: 0,
            total_size
        }
    );
    assert_eq!(bytes, public.info.raw);
    assert_eq!(request(&mut s, 1).0, MetadataMessage::Reject(1));
    // A few copies of the whole, then rejects (the data answer so far counts too; rejects do
    // not).
    let answers: Vec<MetadataMessage> = (0..10).map(|_| request(&mut s, 0).0).collect();
    let served = answers
        .iter()
        .filter(|m| matches!(m, MetadataMessage::Data { .. }))
        .count();
    assert_eq!(served, 4 * n as usize + 4 - 1, "{answers:?}");
    assert!(answers.ends_with(&[MetadataMessage::Reject(0)]));
    // Private: no ut_metadata, no size.
    let private = &metas[1];
    let mut s = handshaken(engine.local_addr(), private.info.hash.wire_id());
    let theirs = ext_handshake(&mut s);
    assert_eq!(theirs.id_of(metadata::EXTENSION_NAME), None);
    assert_eq!(theirs.metadata_size, None);
    assert_eq!(
        theirs.id_of(ringseed::wire::pex::EXTENSION_NAME),
        None,
        "no PEX either"
    );
    engine.shutdown();
}

/// BEP 11 on the wire: a peer that speaks `ut_pex` hears which peers joined its torrent's swarm
/// (at their listening ports, never itself) and later which left.
#[test]
fn peer_exchange_tells_who_joined_and_who_left() {
    use ringseed::wire::pex::{self, PexMessage};
    let dir = tempfile::tempdir().unwrap();
    let engine = loopback_engine(Settings {
        workers: 2,
        pex_interval: Duration::from_millis(100),
        ..Settings::default()
    });
    let meta = seed_generated(&engine, dir.path(), "pex.bin", 200_000, &[]);
    let ours = 7u8;
    let join = |port: u16, pex_too: bool| -> TcpStream {
        let mut s = handshaken(engine.local_addr(), meta.info.hash.wire_id());
        let m = if pex_too {
            vec![(pex::EXTENSION_NAME.to_string(), ours)]
        } else {
            Vec::new()
        };
        let mine = ExtHandshake {
            m,
            p: Some(port),
            ..Default::default()
        };
        s.write_all(&msg(Message::Extended {
            id: 0,
            payload: &mine.encode(),
        }))
        .unwrap();
        s
    };
    let next_pex = |s: &mut TcpStream| -> PexMessage {
        read_until(s, |m| match m {
            Message::Extended { id, payload } if *id == ours => PexMessage::parse(payload).ok(),
            _ => None,
        })
    };
    let mut a = join(10_001, true);
    let b = join(10_002, false);
    let c = join(10_003, false);
    let b_addr: SocketAddr = "127.0.0.1:10002".parse().unwrap();
    let c_addr: SocketAddr = "127.0.0.1:10003".parse().unwrap();
    // Rounds may catch the joins one at a time; gather until both are in.
    let mut heard = Vec::new();
    while !(heard.contains(&b_addr) && heard.contains(&c_addr)) {
        let m = next_pex(&mut a);
        assert!(m.dropped.is_empty(), "{m:?}");
        heard.extend(m.added.iter().map(|(p, _)| *p));
        assert!(
            !heard.contains(&"127.0.0.1:10001".parse().unwrap()),
            "told about itself"
        );
    }
    assert_eq!(heard.len(), 2, "{heard:?}");
    drop(b);
    let m = next_pex(&mut a);
    assert_eq!((m.added, m.dropped), (vec![], vec![b_addr]));
    drop(c);
    engine.shutdown();
}

/// `engine.pex_interval_s = 0` turns peer exchange off: `ut_pex` is not offered.
#[test]
fn peer_exchange_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let engine = loopback_engine(Settings {
        workers: 1,
        pex_interval: Duration::ZERO,
        ..Settings::default()
    });
    let meta = seed_generated(&engine, dir.path(), "off.bin", 50_000, &[]);
    let mut s = handshaken(engine.local_addr(), meta.info.hash.wire_id());
    let theirs = ext_exchange(&mut s, &ExtHandshake::default());
    assert_eq!(theirs.id_of(ringseed::wire::pex::EXTENSION_NAME), None);
    assert!(
        theirs
            .id_of(ringseed::wire::metadata::EXTENSION_NAME)
            .is_some()
    );
    engine.shutdown();
}

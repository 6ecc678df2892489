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

    // Not BitTorrent at all. With MSE enabled (libtorrent's default, and ours) anything that
    // is not a plain handshake is taken for an MSE key, as libtorrent does: it is cut off
    // once no synchronisation pattern can follow within the padding the spec allows.
    let before = total(&engine.stats(), "mse_no_sync");
    let mut s = TcpStream::connect(addr).unwrap();
    let mut junk = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    junk.resize(1024, b'x');
    s.write_all(&junk).unwrap();
    assert_cut_off(s);
    wait_for(&engine, "mse_no_sync", before);

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
        // All 32 come from 127.0.0.1.
        max_connections_per_ip: 32,
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

/// Disconnects by reason, summed over the workers.
fn disconnects(engine: &Engine) -> std::collections::BTreeMap<String, u64> {
    let mut all = std::collections::BTreeMap::new();
    for s in engine.stats() {
        for (r, n) in &s.disconnects {
            *all.entry(r.to_string()).or_insert(0) += n;
        }
    }
    all
}

/// Connects from the local address `src` (any of 127.0.0.0/8), so each hostile peer has an
/// address of its own and the per-address caps meet only the ones meant to meet them.
fn connect_from(src: std::net::Ipv4Addr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    s.bind(&SocketAddr::from((src, 0)).into())?;
    s.connect(&addr.into())?;
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    Ok(s)
}

/// As [`handshaken`], from `src`.
fn handshaken_from(src: std::net::Ipv4Addr, addr: SocketAddr, ih: [u8; 20]) -> TcpStream {
    let mut s = connect_from(src, addr).unwrap();
    s.write_all(&Handshake::new(ih, *b"-XX0000-hostile00001").encode())
        .unwrap();
    let mut hs = [0u8; 68];
    s.read_exact(&mut hs).unwrap();
    s
}

/// Whether the engine closed `s` (EOF or reset) within `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 65536];
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => {}
        }
    }
    false
}

/// Sends `m` again and again until the engine cuts the connection off (or `n` were sent).
fn flood(mut s: TcpStream, m: &[u8], n: usize) {
    let all: Vec<u8> = m.iter().copied().cycle().take(m.len() * n).collect();
    let _ = s.write_all(&all);
    assert!(
        closed_within(&mut s, Duration::from_secs(15)),
        "a flood of {} messages was not cut off",
        n
    );
}

fn ip(a: u8, b: u8, c: u8) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::new(127, a, b, c)
}

/// libtorrent downloads `torrent` (a single file) from `addr` into `out`; the copy must be
/// byte-identical to `original`. Returns how long it took, and libtorrent's timeline of the
/// download (connections made and lost, snubs, bytes done each second) for a failure to show.
fn lt_download(
    torrent: &Path,
    out: &Path,
    addr: SocketAddr,
    original: &Path,
) -> (Duration, String) {
    let started = Instant::now();
    let res = lt_tool(&[
        "download",
        torrent.to_str().unwrap(),
        out.to_str().unwrap(),
        &addr.to_string(),
        "120",
    ]);
    let res: serde_json::Value = serde_json::from_str(&res).unwrap();
    assert_eq!(res["done"], true, "good client: {res}");
    let name = original.file_name().unwrap();
    assert!(
        std::fs::read(out.join(name)).unwrap() == std::fs::read(original).unwrap(),
        "the good client's copy differs"
    );
    let timeline = res["timeline"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|e| e.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default();
    (started.elapsed(), timeline)
}

/// Hostile peers launched by [`launch_hostile_peers`]: join them once the good client is done.
struct Hostile {
    attacks: Vec<std::thread::JoinHandle<()>>,
    hoarders: Vec<std::thread::JoinHandle<bool>>,
}

impl Hostile {
    /// Waits for every attack (each asserts it was cut off); returns how many of the 8 slot
    /// hoarders were cut off.
    fn join(self) -> usize {
        for a in self.attacks {
            a.join().unwrap();
        }
        self.hoarders
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|&cut| cut)
            .count()
    }
}

/// The attacks of the hardening issue, each in threads of its own, against the seeder at `addr`
/// serving `ih` (of `pieces` pieces of 64 KiB): slowloris (`slowloris` connections trickling
/// length prefixes, and a trickled handshake), slot hoarders that never read, allowed-fast
/// pinning, floods of messages that change nothing (interested, have_none, bitfield, cancel,
/// have, keep-alive, unknown messages, metadata requests), a connection flood from one address.
fn launch_hostile_peers(addr: SocketAddr, ih: [u8; 20], pieces: u32, slowloris: usize) -> Hostile {
    let mut attacks = Vec::new();
    // Slowloris: `slowloris` peers, each from an address of its own, each with a handshake and
    // then a length prefix trickled, one more byte every second.
    attacks.push(std::thread::spawn(move || {
        let mut conns: Vec<TcpStream> = (0..slowloris as u32)
            .filter_map(|i| {
                let mut s =
                    connect_from(ip(10, (i / 200) as u8, (i % 200) as u8 + 1), addr).ok()?;
                s.write_all(&Handshake::new(ih, *b"-XX0000-slowloris001").encode())
                    .ok()?;
                // A 16 KiB message (a legal length), of which nothing more than a byte a
                // second ever comes.
                s.write_all(&[0, 0, 0x40]).ok()?;
                Some(s)
            })
            .collect();
        assert!(conns.len() >= slowloris * 95 / 100);
        for _ in 0..12 {
            std::thread::sleep(Duration::from_secs(1));
            conns.retain_mut(|s| s.write_all(&[0]).is_ok());
        }
        let open = conns
            .iter_mut()
            .map(|s| closed_within(s, Duration::from_millis(1)))
            .filter(|closed| !closed)
            .count();
        assert_eq!(open, 0, "slowloris connections still open after 12 s");
    }));
    // A handshake trickled a byte every 300 ms.
    attacks.push(std::thread::spawn(move || {
        let mut s = connect_from(ip(11, 0, 1), addr).unwrap();
        let hs = Handshake::new(ih, *b"-XX0000-trickle00001").encode();
        for b in hs {
            if s.write_all(&[b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        panic!("a handshake trickled over 20 s was never cut off");
    }));
    // Slot hoarders: interested, requests, then never a byte read (a tiny receive buffer).
    // Each one that gets a slot loses it within seconds and is then cut off; one that never
    // gets a slot holds nothing but its connection.
    let mut hoarders = Vec::new();
    for i in 0..8u8 {
        hoarders.push(std::thread::spawn(move || {
            use socket2::{Domain, Socket, Type};
            let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            sock.set_recv_buffer_size(4096).unwrap();
            sock.bind(&SocketAddr::from((ip(12, 0, i + 1), 0)).into())
                .unwrap();
            sock.connect(&addr.into()).unwrap();
            let mut s: TcpStream = sock.into();
            s.write_all(&Handshake::new(ih, *b"-XX0000-hoarder00001").encode())
                .unwrap();
            s.write_all(&msg(Message::Interested)).unwrap();
            let mut reqs = Vec::new();
            for r in 0..200u32 {
                reqs.extend(msg(Message::Request(BlockRequest {
                    index: (r / 4 + u32::from(i) * 50) % pieces,
                    begin: (r % 4) * 16384,
                    length: 16384,
                })));
            }
            let _ = s.write_all(&reqs);
            // Read nothing; wait to be cut off.
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(500));
                // A closed connection shows as a failed write once the reset arrives.
                if s.write_all(&msg(Message::KeepAlive)).is_err() {
                    return true;
                }
            }
            false
        }));
    }
    // Allowed-fast pinning: never interested, requests its allowed-fast pieces over and over,
    // never reads. At most a few are queued while it is choked; the rest are rejected, and a
    // peer that keeps on is a request flood.
    attacks.push(std::thread::spawn(move || {
        let src = ip(13, 0, 1);
        let set =
            ringseed::wire::fast::allowed_fast_set(std::net::IpAddr::V4(src), &ih, pieces, 10);
        let mut s = handshaken_from(src, addr, ih);
        let mut reqs = Vec::new();
        for r in 0..20_000u32 {
            reqs.extend(msg(Message::Request(BlockRequest {
                index: set[r as usize % set.len()],
                begin: (r % 4) * 16384,
                length: 16384,
            })));
        }
        let _ = s.write_all(&reqs);
        assert!(
            closed_within(&mut s, Duration::from_secs(20)),
            "allowed-fast pinning not cut off"
        );
    }));
    // Floods of messages that change nothing, each from its own address.
    let floods: Vec<Vec<u8>> = vec![
        msg(Message::Interested),
        msg(Message::HaveNone),
        msg(Message::Bitfield(&vec![0u8; pieces.div_ceil(8) as usize])),
        msg(Message::Cancel(BlockRequest {
            index: 1,
            begin: 0,
            length: 16384,
        })),
        msg(Message::KeepAlive),
        msg(Message::Unknown {
            id: 99,
            payload: b"x",
        }),
        msg(Message::Extended {
            id: 250,
            payload: b"d1:ai1ee",
        }),
        // Peer exchange at line rate (BEP 11: at most a message a minute), naming a loopback
        // address where nothing listens (`ringseed seed` dials the peers it hears of).
        msg(Message::Extended {
            id: ringseed::wire::pex::LOCAL_ID,
            payload: &ringseed::wire::pex::PexMessage {
                added: vec![(SocketAddr::from(([127, 0, 0, 1], 9)), 0)],
                dropped: Vec::new(),
            }
            .encode(),
        }),
        // Metadata we never asked for.
        msg(Message::Extended {
            id: ringseed::wire::metadata::LOCAL_ID,
            payload: &ringseed::wire::metadata::data_message(&[b'x'; 1000], 0).unwrap(),
        }),
        // The same extension handshake again and again (each is parsed, and each joins the
        // torrent's swarm for peer exchange under its lock).
        msg(Message::Extended {
            id: 0,
            payload: &ExtHandshake {
                m: vec![("ut_pex".to_string(), 1), ("ut_metadata".to_string(), 2)],
                p: Some(6881),
                v: Some("hostile 1.0".into()),
                ..Default::default()
            }
            .encode(),
        }),
    ];
    for (i, m) in floods.into_iter().enumerate() {
        attacks.push(std::thread::spawn(move || {
            let mut s = handshaken_from(ip(14, 0, i as u8 + 1), addr, ih);
            if m == msg(Message::Interested) {
                // Interested once for real, then again and again.
                s.write_all(&m).unwrap();
            }
            flood(s, &m, 20_000);
        }));
    }
    // A have flood of one piece, after a first have of it.
    attacks.push(std::thread::spawn(move || {
        let mut s = handshaken_from(ip(15, 0, 1), addr, ih);
        s.write_all(&msg(Message::HaveNone)).unwrap();
        flood(s, &msg(Message::Have(7)), 20_000);
    }));
    // Metadata requests far past the answers allowed; requests for a piece past the end, each
    // answered with a reject.
    for (k, piece) in [0u32, 100_000].into_iter().enumerate() {
        attacks.push(std::thread::spawn(move || {
            use ringseed::wire::metadata;
            let mut s = handshaken_from(ip(16, 0, k as u8 + 1), addr, ih);
            let theirs = ext_exchange(
                &mut s,
                &ExtHandshake {
                    m: vec![(metadata::EXTENSION_NAME.to_string(), 3)],
                    ..Default::default()
                },
            );
            let id = theirs.id_of(metadata::EXTENSION_NAME).unwrap();
            // The peer reads its answers (it is not a hoarder), so only the budget stops it.
            let reader = s.try_clone().unwrap();
            let drain = std::thread::spawn(move || {
                let mut reader = reader;
                let mut buf = vec![0u8; 1 << 16];
                while matches!(reader.read(&mut buf), Ok(n) if n > 0) {}
            });
            let req = msg(Message::Extended {
                id,
                payload: &metadata::request_message(piece),
            });
            let all: Vec<u8> = req.iter().copied().cycle().take(req.len() * 5000).collect();
            let _ = s.write_all(&all);
            drain.join().unwrap();
        }));
    }
    // A connection flood from one address.
    attacks.push(std::thread::spawn(move || {
        let conns: Vec<TcpStream> = (0..40)
            .filter_map(|_| connect_from(ip(17, 0, 1), addr).ok())
            .collect();
        let mut cut = 0;
        for mut s in conns {
            if closed_within(&mut s, Duration::from_millis(300)) {
                cut += 1;
            }
        }
        assert!(
            cut >= 30,
            "only {cut} of 40 connections from one address were refused"
        );
    }));
    Hostile { attacks, hoarders }
}

/// The attacks of the hardening issue, all at once, against one engine while libtorrent
/// downloads from it: slowloris (hundreds of connections trickling length prefixes, and a
/// trickled handshake), slot hoarders that never read, allowed-fast pinning, floods of
/// messages that change nothing (interested, have_none, bitfield, cancel, have, keep-alive,
/// unknown messages, metadata requests), a connection flood from one address. The good client
/// finishes byte-perfect within a few times its time alone, and each attack is cut off and
/// counted under its reason.
#[test]
fn hostile_peers_are_cut_off_and_counted_while_libtorrent_downloads_in_its_usual_time() {
    require_tool("/usr/bin/python3");
    let dir = tempfile::tempdir().unwrap();
    let engine = loopback_engine(Settings {
        workers: 2,
        upload_slots: 4,
        handshake_timeout: Duration::from_secs(3),
        message_timeout: Duration::from_secs(4),
        send_timeout: Duration::from_secs(4),
        upload_rate_limit: 32 << 20,
        max_connections_per_ip: 8,
        ..Settings::default()
    });
    let meta = seed_generated(
        &engine,
        dir.path(),
        "payload.bin",
        48 << 20,
        &["--no-date", "--piece-kib", "64"],
    );
    let ih = meta.info.hash.wire_id();
    let addr = engine.local_addr();
    let tpath = dir.path().join("payload.bin.torrent");
    let original = dir.path().join("data/payload.bin");
    let download = |out: &Path| lt_download(&tpath, out, addr, &original);
    let (alone, _) = download(&dir.path().join("alone"));

    let count = |r: &str| total(&engine.stats(), r);
    let before: std::collections::HashMap<&str, u64> = [
        "slow_message",
        "handshake_timeout",
        "send_stalled",
        "message_flood",
        "too_many_from_ip",
        "request_flood",
    ]
    .into_iter()
    .map(|r| (r, count(r)))
    .collect();

    let good_out = dir.path().join("beside");
    let hostile = launch_hostile_peers(addr, ih, meta.info.layout.num_pieces, 200);

    std::thread::sleep(Duration::from_millis(500));
    let (beside, timeline) = download(&good_out);
    let hoarders_cut = hostile.join();
    assert!(
        hoarders_cut >= 4,
        "only {hoarders_cut} of 8 slot hoarders were cut off"
    );
    let grew = |r: &str, at_least: u64| {
        let d = count(r) - before[r];
        assert!(
            d >= at_least,
            "`{r}`: {d} cut-offs, expected at least {at_least}: {:?}",
            disconnects(&engine)
        );
    };
    grew("slow_message", 190);
    grew("handshake_timeout", 1);
    grew("send_stalled", 4);
    grew("message_flood", 13);
    grew("too_many_from_ip", 30);
    // Usual time: a slack over what it took alone that a starved or stalled client would blow.
    assert!(
        beside <= alone * 3 + Duration::from_secs(10),
        "libtorrent took {beside:?} beside the attacks, {alone:?} alone; cut off: {:?}; \
         libtorrent's timeline:\n{timeline}",
        disconnects(&engine)
    );
    eprintln!(
        "libtorrent: {alone:?} alone, {beside:?} beside the attacks; cut off: {:?}",
        disconnects(&engine)
    );
    // Nothing lingers: every hostile connection's slot was freed.
    let deadline = Instant::now() + Duration::from_secs(10);
    while engine.stats().iter().map(|s| s.peers).sum::<i64>() > 0 {
        assert!(Instant::now() < deadline, "{:?}", engine.stats());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The hostile peers of [`launch_hostile_peers`] against a seeder in another process, for
/// perf/hostile_peers.sh, which starts `ringseed seed` with the settings of the test above and
/// reads the seeder's memory and CPU around this. From the environment: `RINGSEED_HOSTILE_SEEDER`
/// (its address), `RINGSEED_HOSTILE_TORRENT` (a single file in pieces of 64 KiB),
/// `RINGSEED_HOSTILE_DATA` (that file), `RINGSEED_HOSTILE_OUT` (where libtorrent downloads),
/// `RINGSEED_HOSTILE_SLOWLORIS` (slowloris connections, 200 by default) and
/// `RINGSEED_HOSTILE_ATTACK` (unset: libtorrent downloads alone). Every attack must still be cut
/// off, and the download complete byte-perfect.
#[test]
#[ignore = "run by perf/hostile_peers.sh against a seeder process"]
fn hostile_peers_against_a_seeder_process() {
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set"));
    let addr: SocketAddr = var("RINGSEED_HOSTILE_SEEDER").parse().unwrap();
    let torrent = std::path::PathBuf::from(var("RINGSEED_HOSTILE_TORRENT"));
    let original = std::path::PathBuf::from(var("RINGSEED_HOSTILE_DATA"));
    let out = std::path::PathBuf::from(var("RINGSEED_HOSTILE_OUT"));
    let slowloris = std::env::var("RINGSEED_HOSTILE_SLOWLORIS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let meta = Metainfo::from_bytes(&std::fs::read(&torrent).unwrap()).unwrap();
    let hostile = std::env::var_os("RINGSEED_HOSTILE_ATTACK").map(|_| {
        let h = launch_hostile_peers(
            addr,
            meta.info.hash.wire_id(),
            meta.info.layout.num_pieces,
            slowloris,
        );
        std::thread::sleep(Duration::from_millis(500));
        h
    });
    let (took, _) = lt_download(&torrent, &out, addr, &original);
    let hoarders_cut = hostile.map(Hostile::join);
    println!("libtorrent took {took:?}; slot hoarders cut off: {hoarders_cut:?}");
}

/// Our id for `rs_speed` in the hostile peers' extension handshakes.
const OUR_SPEED: u8 = 7;

/// As [`read_until`], keeping in `buf` what arrived after the message wanted: for a peer that
/// reads on (the next message may have come in the same read).
fn read_until_kept<T>(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    mut want: impl FnMut(&Message<'_>) -> Option<T>,
) -> T {
    let mut chunk = [0u8; 65536];
    loop {
        while let Some((m, used)) = ringseed::wire::parse_message(buf, 1 << 20).unwrap() {
            let got = want(&m);
            buf.drain(..used);
            if let Some(t) = got {
                return t;
            }
        }
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "closed");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A peer from `src` that speaks `rs_speed`: handshakes exchanged; returns the stream, what it
/// read past the seeder's offer, the seeder's id for `rs_speed` and the offer.
fn speed_peer(
    src: std::net::Ipv4Addr,
    addr: SocketAddr,
    ih: [u8; 20],
) -> (TcpStream, Vec<u8>, u8, ringseed::speed::protocol::Offer) {
    use ringseed::speed::protocol::SpeedMessage;
    let mut s = handshaken_from(src, addr, ih);
    let mine = ExtHandshake {
        m: vec![(
            ringseed::speed::protocol::EXTENSION_NAME.to_string(),
            OUR_SPEED,
        )],
        ..Default::default()
    };
    s.write_all(&msg(Message::Extended {
        id: 0,
        payload: &mine.encode(),
    }))
    .unwrap();
    let mut buf = Vec::new();
    let theirs = read_until_kept(&mut s, &mut buf, |m| match m {
        Message::Extended { id: 0, payload } => ExtHandshake::parse(payload).ok(),
        _ => None,
    });
    let id = theirs
        .id_of(ringseed::speed::protocol::EXTENSION_NAME)
        .expect("the seeder offers rs_speed");
    let offer = read_until_kept(&mut s, &mut buf, |m| match m {
        Message::Extended {
            id: OUR_SPEED,
            payload,
        } => match SpeedMessage::parse(payload) {
            Ok(SpeedMessage::Offer(o)) => Some(o),
            _ => None,
        },
        _ => None,
    });
    (s, buf, id, offer)
}

/// Forged payments against a seeder that earns (`[speed]` on), each from its own address, while
/// libtorrent downloads from it: a peer that opens a channel with a good bid and then floods
/// vouchers signed by a stranger's key, and a peer that sends bid after bid in a payer's name
/// without its key. Each forgery costs the single verifier thread a signature recovery; after
/// `MAX_FORGED` (8) the connection is cut off (`forged_vouchers`). libtorrent finishes
/// byte-perfect within a few times its time alone, and nothing is earned.
#[test]
fn forged_payments_are_cut_off_while_libtorrent_downloads_from_an_earning_seeder() {
    use ringseed::speed::payer::Payer;
    use ringseed::speed::protocol::{Bid, SpeedMessage};
    use ringseed::speed::voucher::{ChannelId, Voucher};
    use ringseed::speed::wallet::Wallet;
    require_tool("/usr/bin/python3");
    let dir = tempfile::tempdir().unwrap();
    let setup = ringseed::speed::service::SpeedSetup {
        db_path: dir.path().join("state/ringseed.db"),
        key_path: dir.path().join("state/wallet.key"),
        terms: ringseed::choking::auction::Terms {
            paid_slots: 1,
            min_price: 0,
            credit_window: 256 << 10,
        },
        chain_id: 199,
        contract: ringseed::speed::wallet::Address([0x32; 20]),
        chain: None,
    };
    let (svc, writer) = ringseed::speed::service::start_standalone(&setup).unwrap();
    let engine = Engine::start_with_speed(
        Settings {
            workers: 2,
            listen: "127.0.0.1:0".parse().unwrap(),
            upload_slots: 4,
            upload_rate_limit: 32 << 20,
            ..Settings::default()
        },
        Some(svc.clone()),
    )
    .unwrap();
    let meta = seed_generated(
        &engine,
        dir.path(),
        "paid.bin",
        32 << 20,
        &["--no-date", "--piece-kib", "64"],
    );
    let ih = meta.info.hash.wire_id();
    let addr = engine.local_addr();
    let tpath = dir.path().join("paid.bin.torrent");
    let original = dir.path().join("data/paid.bin");
    let (alone, _) = lt_download(&tpath, &dir.path().join("alone"), addr, &original);
    let before = total(&engine.stats(), "forged_vouchers");

    let mut attacks = Vec::new();
    // A voucher flood on a channel of its own, every voucher signed by the wrong key.
    attacks.push(std::thread::spawn(move || {
        let (mut s, mut buf, id, offer) = speed_peer(ip(20, 0, 1), addr, ih);
        let channel = ChannelId([0x21; 32]);
        let mut payer = Payer::new(Wallet::from_secret([70; 32]).unwrap(), channel, 1, 1 << 40);
        let bid = payer
            .on_message(&SpeedMessage::Offer(offer).encode())
            .remove(0);
        s.write_all(&msg(Message::Extended { id, payload: &bid }))
            .unwrap();
        // The ledger confirms the channel.
        read_until_kept(&mut s, &mut buf, |m| match m {
            Message::Extended {
                id: OUR_SPEED,
                payload,
            } => {
                payer.on_message(payload);
                payer.confirmed().then_some(())
            }
            _ => None,
        });
        let thief = Wallet::from_secret([71; 32]).unwrap();
        let mut vouchers = Vec::new();
        for k in 1..=2000u128 {
            let v = Voucher::sign(&thief, offer.domain(), channel, offer.payee, k * 1000);
            vouchers.extend(msg(Message::Extended {
                id,
                payload: &SpeedMessage::Voucher(v).encode(),
            }));
        }
        let _ = s.write_all(&vouchers);
        assert!(
            closed_within(&mut s, Duration::from_secs(15)),
            "a flood of forged vouchers was not cut off"
        );
    }));
    // Bids in a payer's name signed by a thief, one every 25 ms (the seeder checks one bid of a
    // connection at a time).
    attacks.push(std::thread::spawn(move || {
        let (mut s, _, id, offer) = speed_peer(ip(20, 0, 2), addr, ih);
        let victim = Wallet::from_secret([72; 32]).unwrap().address();
        let thief = Wallet::from_secret([73; 32]).unwrap();
        for _ in 0..200 {
            let mut bid = Bid::sign(
                &thief,
                offer.domain(),
                offer.payee,
                1,
                ChannelId([0x22; 32]),
                1 << 40,
            );
            bid.payer = victim;
            let m = msg(Message::Extended {
                id,
                payload: &SpeedMessage::Bid(bid).encode(),
            });
            if s.write_all(&m).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        assert!(
            closed_within(&mut s, Duration::from_secs(5)),
            "a peer that kept forging bids was not cut off"
        );
    }));
    let (beside, timeline) = lt_download(&tpath, &dir.path().join("beside"), addr, &original);
    for a in attacks {
        a.join().unwrap();
    }
    let cut = total(&engine.stats(), "forged_vouchers") - before;
    assert!(
        cut >= 2,
        "{cut} cut off as forged_vouchers: {:?}",
        disconnects(&engine)
    );
    assert_eq!(svc.stats.earned(), 0, "forged payments earned something");
    let forged = svc
        .stats
        .rejected(ringseed::speed::voucher::Rejection::Forged);
    assert!(forged >= 16, "{forged} forgeries refused as `forged`");
    assert!(
        beside <= alone * 3 + Duration::from_secs(10),
        "libtorrent took {beside:?} beside the forgers, {alone:?} alone; libtorrent's \
         timeline:\n{timeline}"
    );
    eprintln!(
        "libtorrent: {alone:?} alone, {beside:?} beside the forgers; cut off: {:?}",
        disconnects(&engine)
    );
    engine.stop();
    svc.stop();
    writer.shutdown();
}

/// Opens `meta` for download into `out` on `engine` (nothing there yet).
fn start_fetch(engine: &Engine, meta: &Metainfo, out: &Path) -> Arc<Torrent> {
    std::fs::create_dir_all(out).unwrap();
    let (t, _) = Torrent::open_download(
        meta.clone(),
        out,
        ringseed::engine::torrent::Start::Empty,
        false,
    )
    .unwrap();
    let t = Arc::new(t);
    engine.add_torrent(t.clone()).unwrap();
    t
}

/// Waits (at most two minutes) until `t` has every piece; the file is then byte-identical to
/// `original`. Returns the time since `started`.
fn wait_complete(t: &Torrent, out: &Path, original: &Path, started: Instant) -> Duration {
    while !t.pieces.verified.is_full() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "download stalled at {} of {} pieces",
            t.pieces.verified.count(),
            t.pieces.num_pieces()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = started.elapsed();
    let name = original.file_name().unwrap();
    assert!(
        std::fs::read(out.join(name)).unwrap() == std::fs::read(original).unwrap(),
        "ringseed's copy differs"
    );
    took
}

/// Floods of piece announcements against a torrent ringseed is downloading (partial: every
/// `have_all` or bitfield changes what peers offer us and what we ask them), each from its own
/// address, while ringseed downloads the torrent from a libtorrent seeder: `have_all`/`have_none`
/// toggles, full/empty bitfield toggles, `have_all` again and again, a peer that unchokes us,
/// says `have_all` (so we ask it for blocks) and then toggles, and `have` of every piece twice
/// over. Each flooder comes back as soon as it is cut off, for as long as the download runs.
/// Each is cut off as `message_flood`, the requests we had sent it go to the seeder, and the
/// download finishes byte-identical within a few times its time alone.
#[test]
fn announcement_floods_are_cut_off_while_ringseed_downloads_from_libtorrent_in_its_usual_time() {
    require_tool("/usr/bin/python3");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let original = data.join("payload.bin");
    std::fs::write(&original, pattern(32 << 20, 5)).unwrap();
    let tpath = dir.path().join("payload.torrent");
    let meta = create_torrent(&original, &tpath, &["--no-date", "--piece-kib", "64"]);
    let ih = meta.info.hash.wire_id();
    let n = meta.info.layout.num_pieces;
    // A rate limit keeps the download running while the flooders come and go.
    let lt = common::spawn_lt_seeder(&tpath, &data, "127.0.0.2", 12 << 20);
    let settings = || Settings {
        workers: 2,
        max_connections_per_ip: 8,
        ..Settings::default()
    };

    // The attacked download first: libtorrent hashes each piece the first time it serves it
    // (seed mode), so the one alone, after it, is libtorrent's usual time.
    let engine = loopback_engine(settings());
    let addr = engine.local_addr();
    let out = dir.path().join("beside");
    let t = start_fetch(&engine, &meta, &out);
    let mut full_bits = vec![0xffu8; n.div_ceil(8) as usize];
    let spare = n.div_ceil(8) * 8 - n;
    if spare > 0 {
        *full_bits.last_mut().unwrap() &= 0xff << spare;
    }
    let empty = vec![0u8; full_bits.len()];
    let cat = |ms: &[Message<'_>]| -> Vec<u8> { ms.iter().flat_map(|m| msg(m.clone())).collect() };
    let haves: Vec<Message<'_>> = (0..n).map(Message::Have).collect();
    // (what it says first, then waits for our requests; the flood).
    let floods: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (Vec::new(), cat(&[Message::HaveAll, Message::HaveNone])),
        (
            Vec::new(),
            cat(&[Message::Bitfield(&full_bits), Message::Bitfield(&empty)]),
        ),
        (Vec::new(), msg(Message::HaveAll)),
        (
            cat(&[Message::Unchoke, Message::HaveAll]),
            cat(&[Message::HaveNone, Message::HaveAll]),
        ),
        (Vec::new(), cat(&[haves.clone(), haves].concat())),
    ];
    let mut flooders = Vec::new();
    for (i, (first, flood_msgs)) in floods.into_iter().enumerate() {
        let t = t.clone();
        flooders.push(std::thread::spawn(move || {
            let src = ip(30, 0, i as u8 + 1);
            let mut rounds = 0u32;
            // Until the download completes (then a peer that has every piece is cut off as
            // `both_seeds` instead).
            while !t.pieces.verified.is_full() {
                let mut s = handshaken_from(src, addr, ih);
                if !first.is_empty() {
                    s.write_all(&first).unwrap();
                    // Long enough for the engine to be interested and ask for blocks.
                    std::thread::sleep(Duration::from_millis(300));
                }
                let times = (20_000 * 5 / flood_msgs.len()).max(4);
                flood(s, &flood_msgs, times);
                rounds += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            rounds
        }));
    }
    let before = total(&engine.stats(), "message_flood");
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    engine.connect(lt.addr, ih).unwrap();
    let beside = wait_complete(&t, &out, &original, started);
    let rounds: Vec<u32> = flooders.into_iter().map(|f| f.join().unwrap()).collect();
    // Every round but one per flooder (the one the download's end overlapped, cut off as
    // `both_seeds`) ended as a flood.
    let cut = total(&engine.stats(), "message_flood") - before;
    let expected = rounds
        .iter()
        .map(|&r| u64::from(r.saturating_sub(1)))
        .sum::<u64>();
    assert!(
        rounds.iter().all(|&r| r >= 2) && cut >= expected,
        "{cut} cut off as message_flood after {rounds:?} flood rounds: {:?}",
        disconnects(&engine)
    );
    let cut_off = disconnects(&engine);
    engine.shutdown();

    let engine = loopback_engine(settings());
    let out = dir.path().join("alone");
    let t = start_fetch(&engine, &meta, &out);
    let started = Instant::now();
    engine.connect(lt.addr, ih).unwrap();
    let alone = wait_complete(&t, &out, &original, started);
    engine.shutdown();
    assert!(
        beside <= alone * 3 + Duration::from_secs(10),
        "the download took {beside:?} beside the floods, {alone:?} alone"
    );
    eprintln!(
        "download: {alone:?} alone, {beside:?} beside the floods ({rounds:?} rounds); cut off: \
         {cut_off:?}"
    );
    drop(lt);
}

/// Peers that hold every upload slot: each handshakes from an address of its own, says it is
/// interested and reads everything sent to it (so none is taken for a peer that stops
/// reading). `asking` ones also request a block every 50 ms; the others never ask for
/// anything. At `stop` each closes (`close`), or says it is no longer interested and stays
/// connected until the engine goes.
fn slot_holders(
    addr: SocketAddr,
    ih: [u8; 20],
    n: u8,
    asking: bool,
    stop: Arc<std::sync::atomic::AtomicBool>,
    close: bool,
) -> Vec<std::thread::JoinHandle<()>> {
    use std::sync::atomic::Ordering;
    (0..n)
        .map(|i| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut s = handshaken_from(ip(30, 0, i + 1), addr, ih);
                s.write_all(&msg(Message::Interested)).unwrap();
                let mut reader = s.try_clone().unwrap();
                let drain = std::thread::spawn(move || {
                    let mut buf = [0u8; 1 << 16];
                    while matches!(reader.read(&mut buf), Ok(n) if n > 0) {}
                });
                let mut k = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    if asking {
                        let r = BlockRequest {
                            index: k % 16,
                            begin: 0,
                            length: 16384,
                        };
                        if s.write_all(&msg(Message::Request(r))).is_err() {
                            break;
                        }
                        k += 1;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                if !close {
                    // Connected until the engine goes.
                    s.write_all(&msg(Message::NotInterested)).unwrap();
                    drain.join().unwrap();
                    return;
                }
                let _ = s.shutdown(std::net::Shutdown::Both);
                drain.join().unwrap();
            })
        })
        .collect()
}

/// One worker with `slots` upload slots whose regular choking rounds never come within a test
/// (every 10 minutes): a slot changes hands only between rounds.
fn without_rounds(slots: usize) -> Settings {
    Settings {
        workers: 1,
        upload_slots: slots,
        rechoke_interval: Duration::from_secs(600),
        // A slot held unused for 2 s is given up (a quarter of this).
        send_timeout: Duration::from_secs(8),
        ..Settings::default()
    }
}

/// libtorrent downloads an 8 MiB torrent from an engine with `settings`, behind `n`
/// [`slot_holders`] connected `head_start` before it; the holders are told to stop
/// `stop_after` into the download, if given. Returns what the test looks at next, the holders
/// still running (and connected unless they stopped and closed).
fn download_behind_slot_holders(
    settings: Settings,
    (n, asking, close): (u8, bool, bool),
    head_start: Duration,
    stop_after: Option<Duration>,
) -> Behind {
    require_tool("/usr/bin/python3");
    let dir = tempfile::tempdir().unwrap();
    let engine = loopback_engine(settings);
    let meta = seed_generated(
        &engine,
        dir.path(),
        "held.bin",
        8 << 20,
        &["--no-date", "--piece-kib", "64"],
    );
    let addr = engine.local_addr();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let holders = slot_holders(
        addr,
        meta.info.hash.wire_id(),
        n,
        asking,
        stop.clone(),
        close,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while engine.stats().iter().map(|s| s.peers).sum::<i64>() < i64::from(n) {
        assert!(
            Instant::now() < deadline,
            "the slot holders never connected"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(head_start);
    let letgo = stop_after.map(|after| {
        let stop = stop.clone();
        std::thread::spawn(move || {
            // libtorrent is connected and waits by then.
            std::thread::sleep(after);
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        })
    });
    let (_, timeline) = lt_download(
        &dir.path().join("held.bin.torrent"),
        &dir.path().join("out"),
        addr,
        &dir.path().join("data/held.bin"),
    );
    if let Some(l) = letgo {
        l.join().unwrap();
    }
    Behind {
        _dir: dir,
        engine,
        timeline,
        holders,
        stop,
    }
}

struct Behind {
    _dir: tempfile::TempDir,
    engine: Engine,
    timeline: String,
    holders: Vec<std::thread::JoinHandle<()>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Behind {
    /// Stops the holders (those that stay connected, when the engine goes) and waits for them.
    fn end(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        drop(self.engine);
        for h in self.holders {
            h.join().unwrap();
        }
    }
}

/// Slot hoarding by peers that read: they take every slot by saying they are interested, then
/// ask for nothing (no round-robin quota is ever reached, nothing stalls). Each slot held
/// unused goes to a peer that waits, between rounds: libtorrent, waiting behind them, downloads
/// the whole torrent though no regular round comes, and the hoarders stay connected.
#[test]
fn slots_held_by_peers_that_ask_for_nothing_go_to_libtorrent() {
    let head_start = Duration::from_millis(200);
    let behind =
        download_behind_slot_holders(without_rounds(2), (2, false, true), head_start, None);
    let peers: i64 = behind.engine.stats().iter().map(|s| s.peers).sum();
    assert_eq!(
        peers,
        2,
        "the hoarders were cut off: {:?}; libtorrent's timeline:\n{}",
        disconnects(&behind.engine),
        behind.timeline
    );
    behind.end();
}

/// Not every slot holder that asks for nothing new is idle: one still draining what it asked
/// for uses its slot. A peer asks for half a megabyte at once and reads it at 64 KiB/s through
/// a small receive buffer (its pipeline full, it asks for nothing more), and for the 6 s it
/// reads, a peer that waits for the only slot gets none: with the engine's unsent-bytes cap
/// (the rest waits in our upload jobs) and without it (all of it in the kernel's send queue).
#[test]
fn a_peer_draining_what_it_asked_for_keeps_its_slot() {
    for unsent_bytes in [Settings::default().unsent_bytes, 0] {
        draining_peer_keeps_its_slot(unsent_bytes);
    }
}

fn draining_peer_keeps_its_slot(unsent_bytes: u32) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let engine = loopback_engine(Settings {
        unsent_bytes,
        ..without_rounds(1)
    });
    let meta = seed_generated(
        &engine,
        dir.path(),
        "drain.bin",
        4 << 20,
        &["--no-date", "--piece-kib", "64"],
    );
    let ih = meta.info.hash.wire_id();
    let addr = engine.local_addr();
    // The slow reader: interested, unchoked at once, 32 requests, then reads slowly.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(8192).unwrap();
    sock.bind(&SocketAddr::from((ip(31, 0, 1), 0)).into())
        .unwrap();
    sock.connect(&addr.into()).unwrap();
    let mut slow: TcpStream = sock.into();
    slow.write_all(&Handshake::new(ih, *b"-XX0000-slowreader01").encode())
        .unwrap();
    slow.read_exact(&mut [0u8; 68]).unwrap();
    slow.write_all(&msg(Message::Interested)).unwrap();
    let mut buf = Vec::new();
    read_until_kept(&mut slow, &mut buf, |m| {
        (*m == Message::Unchoke).then_some(())
    });
    let mut reqs = Vec::new();
    for k in 0..32u32 {
        reqs.extend(msg(Message::Request(BlockRequest {
            index: k / 4,
            begin: (k % 4) * 16384,
            length: 16384,
        })));
    }
    slow.write_all(&reqs).unwrap();
    // The waiting peer, interested once the slot is taken; it notes its unchoke.
    let unchoked = Arc::new(AtomicBool::new(false));
    let mut waiter = handshaken_from(ip(31, 0, 2), addr, ih);
    waiter.write_all(&msg(Message::Interested)).unwrap();
    let seen = unchoked.clone();
    let watch = std::thread::spawn(move || {
        read_until(&mut waiter, |m| (*m == Message::Unchoke).then_some(()));
        seen.store(true, Ordering::Relaxed);
        waiter
    });
    // 16 KiB every 250 ms: 24 blocks take about 6 s; 8 more still wait in the socket then.
    let mut blocks = 0;
    let mut chunk = [0u8; 16384];
    while blocks < 24 {
        std::thread::sleep(Duration::from_millis(250));
        let n = slow.read(&mut chunk).unwrap();
        assert!(
            n > 0,
            "the slow reader was cut off: {:?}",
            disconnects(&engine)
        );
        buf.extend_from_slice(&chunk[..n]);
        while let Some((m, used)) = ringseed::wire::parse_message(&buf, 1 << 20).unwrap() {
            assert_ne!(m, Message::Choke, "choked while it drains");
            if matches!(m, Message::Piece { .. }) {
                blocks += 1;
            }
            buf.drain(..used);
        }
    }
    assert!(
        !unchoked.load(Ordering::Relaxed),
        "unsent_bytes {unsent_bytes}: the waiting peer took the slot of a peer still draining \
         what it asked for"
    );
    // Drained, it asks for nothing: then the slot goes to the waiting peer.
    let _ = slow.set_read_timeout(Some(Duration::from_millis(100)));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !unchoked.load(Ordering::Relaxed) {
        assert!(
            Instant::now() < deadline,
            "the slot never went to the waiting peer"
        );
        // The rest of what it asked for, read and left unparsed.
        let _ = slow.read(&mut chunk);
    }
    drop(watch.join().unwrap());
}

/// Slot hoarding by peers that ask for a block now and then (20 a second here, and a quota they
/// would take minutes to reach): a round-robin slot is held for 3 rounds at most while peers
/// wait. One such peer holds the only slot, another the optimistic unchoke, which never
/// rotates here; libtorrent, waiting behind them, gets the slot once their turns are over.
#[test]
fn a_slot_held_by_a_peer_that_asks_now_and_then_is_handed_on_after_its_turn() {
    let settings = Settings {
        workers: 1,
        upload_slots: 1,
        rechoke_interval: Duration::from_secs(1),
        optimistic_every: 100_000,
        round_robin_quota: 1 << 30,
        ..Settings::default()
    };
    // The first round, a second in, gives the waiting holder the optimistic unchoke before
    // libtorrent comes.
    let head_start = Duration::from_millis(1500);
    download_behind_slot_holders(settings, (2, true, true), head_start, None).end();
}

/// A slot given up between rounds, by a peer that leaves or one that loses interest, goes to
/// a peer that waits at once: libtorrent, waiting for the only slot, downloads the whole
/// torrent once its holder lets go, though no regular round comes.
#[test]
fn a_slot_given_up_between_rounds_goes_to_a_waiting_peer() {
    for close in [true, false] {
        let (head_start, letgo) = (Duration::from_millis(200), Some(Duration::from_secs(3)));
        download_behind_slot_holders(without_rounds(1), (1, true, close), head_start, letgo).end();
    }
}

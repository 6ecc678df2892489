//! Fetches from peers on 127.0.0.1 that are tokio tasks speaking the real protocol over real
//! sockets: a good one built on `wire::metadata::data_message`, and hostile ones.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::engine::encryption::{Encryption, Policy};
use crate::merkle::PieceTree;
use crate::wire::extension::ExtHandshake;
use crate::wire::hashes::{self, HashMessage, HashRequest};
use crate::wire::metadata::{self, PIECE_BYTES, data_message, reject_message};
use crate::wire::{Handshake, Message, parse_message};

/// The ut_metadata id our test peers want requests under (not ours, to catch a mix-up).
const PEER_UT_METADATA: u8 = 3;

/// Metadata of `len` bytes; the fetch only hashes it, so it need not be a real info dictionary.
fn metadata(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn v1_hash(meta: &[u8]) -> InfoHash {
    InfoHash {
        v1: Some(crate::hash::sha1(meta)),
        v2: None,
    }
}

/// What a test peer does once asked for piece `n`.
enum Answer {
    /// These ut_metadata payloads.
    Send(Vec<Vec<u8>>),
    /// These payloads after a pause.
    After(Duration, Vec<Vec<u8>>),
    /// This payload, again and again until the connection drops.
    Forever(Vec<u8>),
    /// Nothing.
    Silence,
}

/// How a test peer behaves.
struct Script {
    /// The info-hash its handshake names; `None`: it accepts the connection and never answers.
    handshake_hash: Option<[u8; 20]>,
    /// Its `metadata_size`.
    metadata_size: u64,
    /// Raw bytes it sends after its extension handshake.
    after_handshake: Vec<u8>,
    answer: Box<dyn Fn(u32) -> Answer + Send + Sync>,
    /// Its answers to BEP 52 hash requests (whole messages); `None`: it ignores them.
    hashes: Option<HashAnswer>,
}

type HashAnswer = Box<dyn Fn(&HashRequest) -> Vec<u8> + Send + Sync>;

impl Script {
    /// A peer serving `meta` correctly under the info-hash `hash`.
    fn good(meta: Vec<u8>, hash: &InfoHash) -> Script {
        Script {
            handshake_hash: Some(hash.wire_id()),
            metadata_size: meta.len() as u64,
            after_handshake: Vec::new(),
            answer: Box::new(move |p| match data_message(&meta, p) {
                Some(m) => Answer::Send(vec![m]),
                None => Answer::Send(vec![reject_message(p)]),
            }),
            hashes: None,
        }
    }
}

/// A test peer listening on 127.0.0.1, and how many connections it took.
struct TestPeer {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

async fn spawn_peer(script: Script) -> TestPeer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&connections);
    let script = Arc::new(script);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(serve(stream, Arc::clone(&script)));
        }
    });
    TestPeer { addr, connections }
}

async fn read_frame(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut prefix = [0u8; 4];
    s.read_exact(&mut prefix).await?;
    let mut frame = prefix.to_vec();
    frame.resize(4 + u32::from_be_bytes(prefix) as usize, 0);
    s.read_exact(&mut frame[4..]).await?;
    Ok(frame)
}

fn extended(id: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    Message::Extended { id, payload }.encode(&mut out);
    out
}

/// One connection of a test peer: the peer side of the protocol, checking what the fetcher
/// sends (a panic here shows up as the fetch failing).
async fn serve(mut s: TcpStream, script: Arc<Script>) -> std::io::Result<()> {
    let mut buf = [0u8; Handshake::LEN];
    s.read_exact(&mut buf).await?;
    // A plain-only peer: anything else (an MSE key) is dropped.
    let Ok(Some(theirs)) = Handshake::parse(&buf) else {
        return Ok(());
    };
    assert!(theirs.supports_extensions());
    let Some(hash) = script.handshake_hash else {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        return Ok(());
    };
    s.write_all(&Handshake::new(hash, *b"-TP0001-testpeer0000").encode())
        .await?;
    let ext = ExtHandshake {
        m: vec![(metadata::EXTENSION_NAME.into(), PEER_UT_METADATA)],
        v: Some("test peer".into()),
        metadata_size: Some(script.metadata_size),
        ..Default::default()
    };
    let mut hello = extended(0, &ext.encode());
    Message::HaveAll.encode(&mut hello);
    hello.extend_from_slice(&script.after_handshake);
    s.write_all(&hello).await?;
    // The fetcher's extension handshake tells the id to send ut_metadata messages under.
    let mut fetcher_id = None;
    loop {
        let frame = read_frame(&mut s).await?;
        if let Some((Message::Unknown { id, payload }, _)) = parse_message(&frame, 1 << 20).unwrap()
            && id == hashes::HASH_REQUEST
            && let Some(answer) = &script.hashes
        {
            let Ok(HashMessage::Request(req)) = hashes::parse(id, payload) else {
                panic!("a malformed hash request");
            };
            // Only on a connection that announced v2, as libtorrent insists.
            assert!(theirs.supports_v2());
            s.write_all(&answer(&req)).await?;
            continue;
        }
        let Some((Message::Extended { id, payload }, _)) = parse_message(&frame, 1 << 20).unwrap()
        else {
            continue;
        };
        if id == 0 {
            let e = ExtHandshake::parse(payload).unwrap();
            assert!(e.v.as_deref().unwrap_or("").starts_with("ringseed "));
            fetcher_id = e.id_of(metadata::EXTENSION_NAME);
            continue;
        }
        assert_eq!(id, PEER_UT_METADATA);
        let id = fetcher_id.expect("a request before the extension handshake");
        let metadata::MetadataMessage::Request(piece) =
            metadata::MetadataMessage::parse(payload).unwrap()
        else {
            panic!("the fetcher sent a non-request");
        };
        match (script.answer)(piece) {
            Answer::After(pause, msgs) => {
                tokio::time::sleep(pause).await;
                for m in msgs {
                    s.write_all(&extended(id, &m)).await?;
                }
            }
            Answer::Send(msgs) => {
                for m in msgs {
                    s.write_all(&extended(id, &m)).await?;
                }
            }
            Answer::Forever(m) => loop {
                s.write_all(&extended(id, &m)).await?;
            },
            Answer::Silence => {}
        }
    }
}

/// The test peers speak plain BitTorrent only: dial them plain (as the engine's tests with
/// fake seeders do), so each dial is one connection.
fn test_options() -> FetchOptions {
    FetchOptions {
        peer_timeout: Duration::from_secs(5),
        peer_deadline: Duration::from_secs(20),
        encryption: plain_dials(Policy::Disabled),
        ..Default::default()
    }
}

fn plain_dials(outgoing: Policy) -> Encryption {
    Encryption {
        outgoing,
        ..Encryption::default()
    }
}

#[tokio::test]
async fn an_mse_dial_dropped_by_a_plain_peer_is_retried_plain_only_when_enabled() {
    let meta = metadata(PIECE_BYTES + 7, 21);
    let hash = v1_hash(&meta);
    for (outgoing, connections, fetched) in [
        (Policy::Enabled, 2, true),
        (Policy::Forced, 1, false),
        (Policy::Disabled, 1, true),
    ] {
        let peer = spawn_peer(Script::good(meta.clone(), &hash)).await;
        let opts = FetchOptions {
            encryption: plain_dials(outgoing),
            ..test_options()
        };
        let got = fetch(&hash, &[peer.addr], opts).await;
        match (&got, fetched) {
            (Ok(f), true) => assert_eq!(f.info, meta),
            // Closed, or reset as our key was still unread.
            (Err(e), false) => assert!(matches!(kinds(e.failures())[..], ["closed" | "io"]), "{e}"),
            _ => panic!("{outgoing:?}: {got:?}"),
        }
        assert_eq!(
            peer.connections.load(Ordering::Relaxed),
            connections,
            "{outgoing:?}"
        );
    }
}

/// Runs a fetch over `addrs` (sent in order, then the channel closes), bounded at 30 s.
async fn fetch(
    hash: &InfoHash,
    addrs: &[SocketAddr],
    opts: FetchOptions,
) -> Result<Fetched, FetchError> {
    let (tx, rx) = mpsc::channel(addrs.len().max(1));
    for a in addrs {
        tx.send(*a).await.unwrap();
    }
    drop(tx);
    tokio::time::timeout(Duration::from_secs(30), fetch_metadata(hash, rx, opts))
        .await
        .expect("the fetch ends by itself")
}

fn kinds(failures: &[(SocketAddr, PeerFailure)]) -> Vec<&'static str> {
    failures.iter().map(|(_, f)| f.kind()).collect()
}

#[tokio::test]
async fn fetches_multi_piece_metadata_from_a_good_peer() {
    let meta = metadata(3 * PIECE_BYTES + 123, 1);
    let hash = v1_hash(&meta);
    let good = spawn_peer(Script::good(meta.clone(), &hash)).await;
    let got = fetch(&hash, &[good.addr], test_options()).await.unwrap();
    assert_eq!(got.info, meta);
    assert_eq!(got.from, good.addr);
    assert_eq!(got.peers_tried, 1);
    assert!(got.bad_peers.is_empty());
}

#[tokio::test]
async fn a_metadata_of_exactly_one_piece_is_fetched() {
    let meta = metadata(PIECE_BYTES, 2);
    let hash = v1_hash(&meta);
    let good = spawn_peer(Script::good(meta.clone(), &hash)).await;
    assert_eq!(
        fetch(&hash, &[good.addr], test_options())
            .await
            .unwrap()
            .info,
        meta
    );
}

#[tokio::test]
async fn v2_and_hybrid_hashes_are_checked() {
    let meta = metadata(20_000, 3);
    let v2 = InfoHash {
        v1: None,
        v2: Some(crate::hash::sha256(&meta)),
    };
    // A v2-only magnet: the handshake carries the truncated SHA-256.
    let peer = spawn_peer(Script::good(meta.clone(), &v2)).await;
    assert_eq!(
        fetch(&v2, &[peer.addr], test_options()).await.unwrap().info,
        meta
    );
    // A hybrid torrent's peer may answer a v1 handshake with the truncated v2 hash (libtorrent
    // does after a v2 connection from the same IP): with both hashes known, either is ours.
    let hybrid = InfoHash {
        v1: v1_hash(&meta).v1,
        v2: v2.v2,
    };
    let other_hash = spawn_peer(Script {
        handshake_hash: v2.v2.map(|h| h[..20].try_into().unwrap()),
        ..Script::good(meta.clone(), &hybrid)
    })
    .await;
    assert_eq!(
        fetch(&hybrid, &[other_hash.addr], test_options())
            .await
            .unwrap()
            .info,
        meta
    );
    // A v2-only magnet cannot tell a v1 answer from another torrent's hash.
    let v1_answer = spawn_peer(Script {
        handshake_hash: v1_hash(&meta).v1,
        ..Script::good(meta.clone(), &v2)
    })
    .await;
    let err = fetch(&v2, &[v1_answer.addr], test_options())
        .await
        .unwrap_err();
    assert_eq!(kinds(err.failures()), ["wrong_info_hash"]);
    // Both hashes known: the right SHA-1 is not enough when the SHA-256 is wrong.
    let wrong_v2 = InfoHash {
        v1: v1_hash(&meta).v1,
        v2: Some([7; 32]),
    };
    let peer = spawn_peer(Script::good(meta.clone(), &wrong_v2)).await;
    match fetch(&wrong_v2, &[peer.addr], test_options()).await {
        Err(FetchError::HashMismatch { peers: 1 }) => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_peer_with_wrong_metadata_is_bad_and_a_good_peer_wins() {
    let meta = metadata(2 * PIECE_BYTES + 5, 4);
    let hash = v1_hash(&meta);
    let liar = spawn_peer(Script::good(metadata(meta.len(), 99), &hash)).await;
    let good = spawn_peer(Script::good(meta.clone(), &hash)).await;
    // One at a time, the liar first, so it is surely tried.
    let opts = FetchOptions {
        parallel_peers: 1,
        ..test_options()
    };
    let got = fetch(&hash, &[liar.addr, good.addr], opts).await.unwrap();
    assert_eq!(got.info, meta);
    assert_eq!(got.from, good.addr);
    assert_eq!(got.peers_tried, 2);
    assert_eq!(
        got.bad_peers,
        [(liar.addr, PeerFailure::HashMismatch("SHA-1 (v1)"))]
    );

    // With only liars, the error says so.
    match fetch(&hash, &[liar.addr], test_options()).await {
        Err(FetchError::HashMismatch { peers: 1 }) => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn too_large_metadata_is_refused_before_any_request() {
    let meta = metadata(1000, 5);
    let hash = v1_hash(&meta);
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&asked);
    let huge = spawn_peer(Script {
        handshake_hash: Some(hash.wire_id()),
        metadata_size: 64 << 20,
        after_handshake: Vec::new(),
        hashes: None,
        answer: Box::new(move |_| {
            counter.fetch_add(1, Ordering::Relaxed);
            Answer::Silence
        }),
    })
    .await;
    let opts = FetchOptions {
        max_metadata_bytes: 16 << 20,
        ..test_options()
    };
    match fetch(&hash, &[huge.addr], opts.clone()).await {
        Err(FetchError::TooLarge { size, max }) => {
            assert_eq!((size, max), (64 << 20, 16 << 20));
        }
        other => panic!("{other:?}"),
    }
    let good = spawn_peer(Script::good(meta.clone(), &hash)).await;
    let opts = FetchOptions {
        parallel_peers: 1,
        ..opts
    };
    let got = fetch(&hash, &[huge.addr, good.addr], opts).await.unwrap();
    assert_eq!(got.info, meta);
    assert_eq!(kinds(&got.bad_peers), ["too_large"]);
    assert_eq!(asked.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn an_endless_stream_of_data_messages_is_cut_off() {
    let meta = metadata(PIECE_BYTES + 1, 6);
    let hash = v1_hash(&meta);
    // Answers each request with the same piece, forever: after the first copy every one is a
    // repeat that is dropped, so only the data-message budget ends it.
    let flood_meta = meta.clone();
    let flood = spawn_peer(Script {
        handshake_hash: Some(hash.wire_id()),
        metadata_size: meta.len() as u64,
        after_handshake: Vec::new(),
        hashes: None,
        answer: Box::new(move |_| Answer::Forever(data_message(&flood_meta, 0).unwrap())),
    })
    .await;
    let good = spawn_peer(Script::good(meta.clone(), &hash)).await;
    let opts = FetchOptions {
        parallel_peers: 1,
        // So a cut by the timer would show as a hang well past the budget.
        peer_timeout: Duration::from_secs(60),
        peer_deadline: Duration::from_secs(60),
        ..test_options()
    };
    let started = std::time::Instant::now();
    let got = fetch(&hash, &[flood.addr, good.addr], opts).await.unwrap();
    assert_eq!(got.info, meta);
    assert_eq!(
        got.bad_peers,
        [(flood.addr, PeerFailure::TooManyDataMessages { max: 4 })]
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn unrequested_and_repeated_pieces_are_dropped_and_the_fetch_goes_on() {
    // Ten pieces: more than the fetcher requests at once, so the last is not requested at first.
    let meta = metadata(9 * PIECE_BYTES + 7, 7);
    let hash = v1_hash(&meta);
    // Every answer starts with the last piece: unrequested in the first answers, then taken,
    // then a repeat.
    let m = meta.clone();
    let peer = spawn_peer(Script {
        handshake_hash: Some(hash.wire_id()),
        metadata_size: meta.len() as u64,
        after_handshake: Vec::new(),
        hashes: None,
        answer: Box::new(move |p| {
            Answer::Send(vec![
                data_message(&m, 9).unwrap(),
                data_message(&m, p).unwrap(),
            ])
        }),
    })
    .await;
    // Nine answers of two messages fill all but two of the budget of 2 × 10.
    let opts = FetchOptions {
        data_messages_per_piece: 2,
        ..test_options()
    };
    let got = fetch(&hash, &[peer.addr], opts).await.unwrap();
    assert_eq!(got.info, meta);
    assert!(got.bad_peers.is_empty());
}

#[tokio::test]
async fn a_silent_peer_times_out_and_another_serves() {
    let meta = metadata(500, 8);
    let hash = v1_hash(&meta);
    let opts = FetchOptions {
        parallel_peers: 1,
        peer_timeout: Duration::from_secs(1),
        ..test_options()
    };
    // Silent from the start: accepts the connection, never sends a handshake.
    let mute = spawn_peer(Script {
        handshake_hash: None,
        metadata_size: 0,
        after_handshake: Vec::new(),
        hashes: None,
        answer: Box::new(|_| Answer::Silence),
    })
    .await;
    // Silent after the handshakes: never answers a request.
    let stalls = spawn_peer(Script {
        handshake_hash: Some(hash.wire_id()),
        metadata_size: meta.len() as u64,
        after_handshake: Vec::new(),
        hashes: None,
        answer: Box::new(|_| Answer::Silence),
    })
    .await;
    let good = spawn_peer(Script::good(meta.clone(), &hash)).await;
    let got = fetch(&hash, &[mute.addr, stalls.addr, good.addr], opts.clone())
        .await
        .unwrap();
    assert_eq!(got.info, meta);
    assert_eq!(
        got.bad_peers,
        [
            (
                mute.addr,
                PeerFailure::Timeout {
                    stage: "handshake",
                    timeout: opts.peer_timeout
                }
            ),
            (
                stalls.addr,
                PeerFailure::Timeout {
                    stage: "metadata pieces",
                    timeout: opts.peer_timeout
                }
            )
        ]
    );

    // In parallel, the good peer wins without waiting for the silent ones.
    let opts = FetchOptions {
        parallel_peers: 3,
        peer_timeout: Duration::from_secs(60),
        ..test_options()
    };
    let started = std::time::Instant::now();
    let got = fetch(&hash, &[mute.addr, stalls.addr, good.addr], opts)
        .await
        .unwrap();
    assert_eq!((got.from, got.peers_tried), (good.addr, 3));
    assert!(got.bad_peers.is_empty());
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_trickling_peer_meets_the_deadline() {
    let meta = metadata(4 * PIECE_BYTES, 9);
    let hash = v1_hash(&meta);
    let m = meta.clone();
    let slow = spawn_peer(Script {
        handshake_hash: Some(hash.wire_id()),
        metadata_size: meta.len() as u64,
        after_handshake: Vec::new(),
        hashes: None,
        answer: Box::new(move |p| {
            Answer::After(
                Duration::from_millis(150),
                vec![data_message(&m, p).unwrap()],
            )
        }),
    })
    .await;
    let opts = FetchOptions {
        peer_timeout: Duration::from_secs(5),
        peer_deadline: Duration::from_millis(300),
        ..test_options()
    };
    match fetch(&hash, &[slow.addr], opts).await {
        Err(e) => assert_eq!(kinds(e.failures()), ["deadline"], "{e}"),
        Ok(f) => panic!("fetched from a peer slower than the deadline: {:?}", f.from),
    }
}

#[tokio::test]
async fn protocol_violations_are_named() {
    let meta = metadata(PIECE_BYTES + 3, 10);
    let hash = v1_hash(&meta);
    let base = |answer: Box<dyn Fn(u32) -> Answer + Send + Sync>| Script {
        handshake_hash: Some(hash.wire_id()),
        metadata_size: meta.len() as u64,
        after_handshake: Vec::new(),
        answer,
        hashes: None,
    };
    let rejects = spawn_peer(base(Box::new(|p| Answer::Send(vec![reject_message(p)])))).await;
    let other_torrent = spawn_peer(Script {
        handshake_hash: Some([0xee; 20]),
        ..Script::good(meta.clone(), &hash)
    })
    .await;
    let m = meta.clone();
    let short_piece = spawn_peer(base(Box::new(move |p| {
        let mut msg = data_message(&m, p).unwrap();
        msg.pop();
        Answer::Send(vec![msg])
    })))
    .await;
    let other = metadata(meta.len() + 1, 0);
    let wrong_total = spawn_peer(base(Box::new(move |p| {
        Answer::Send(vec![data_message(&other, p).unwrap()])
    })))
    .await;
    let garbage = spawn_peer(base(Box::new(|_| Answer::Send(vec![b"i42e".to_vec()])))).await;
    // A length prefix of 4 GiB - 1: refused at its first four bytes.
    let huge_frame = spawn_peer(Script {
        after_handshake: vec![0xff; 4],
        ..Script::good(meta.clone(), &hash)
    })
    .await;
    // Keep-alives for ever: no progress.
    let chatter = spawn_peer(Script {
        after_handshake: vec![0; 4 * 2000],
        ..Script::good(meta.clone(), &hash)
    })
    .await;
    let no_size = spawn_peer(Script {
        metadata_size: 0,
        ..Script::good(meta.clone(), &hash)
    })
    .await;
    let peers = [
        rejects.addr,
        other_torrent.addr,
        short_piece.addr,
        wrong_total.addr,
        garbage.addr,
        huge_frame.addr,
        chatter.addr,
        no_size.addr,
    ];
    let err = fetch(&hash, &peers, test_options()).await.unwrap_err();
    let FetchError::AllPeersFailed {
        tried, failures, ..
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!(*tried, peers.len());
    let reason = |a: SocketAddr| {
        failures
            .iter()
            .find(|(f, _)| *f == a)
            .map(|(_, r)| r.kind())
            .unwrap_or("none")
    };
    let got: Vec<_> = peers.iter().map(|&a| reason(a)).collect();
    assert_eq!(
        got,
        [
            "rejected",
            "wrong_info_hash",
            "wrong_piece_length",
            "wrong_total_size",
            "bad_metadata_message",
            "bad_message",
            "no_progress",
            "no_metadata_size",
        ],
        "{err}"
    );
    assert_eq!(count_by_kind(failures).values().sum::<usize>(), peers.len());
}

#[tokio::test]
async fn duplicate_and_unusable_addresses_are_ignored() {
    let meta = metadata(100, 11);
    let hash = v1_hash(&meta);
    let liar = spawn_peer(Script::good(metadata(100, 12), &hash)).await;
    let v6_mapped = SocketAddr::new(
        match liar.addr.ip() {
            std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().into(),
            ip => ip,
        },
        liar.addr.port(),
    );
    let addrs = [
        liar.addr,
        liar.addr,
        v6_mapped,
        "0.0.0.0:6881".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
        "224.0.0.1:6881".parse().unwrap(),
    ];
    match fetch(&hash, &addrs, test_options()).await {
        Err(FetchError::HashMismatch { peers: 1 }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(liar.connections.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn no_peers_and_no_hash_are_errors() {
    let hash = v1_hash(b"x");
    assert!(matches!(
        fetch(&hash, &[], test_options()).await,
        Err(FetchError::NoPeers)
    ));
    let none = InfoHash { v1: None, v2: None };
    assert!(matches!(
        fetch(&none, &[], test_options()).await,
        Err(FetchError::NoInfoHash)
    ));
    // A refused connection is a failure of that peer, named.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let err = fetch(&hash, &[addr], test_options()).await.unwrap_err();
    assert_eq!(kinds(err.failures()), ["connect"], "{err}");
}

#[test]
fn metainfo_is_built_from_fetched_info_and_magnet_trackers() {
    let info = b"d6:lengthi5e4:name5:a.txt12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaae";
    let trackers = [
        "udp://a.example:6969".to_string(),
        " ".into(),
        "http://b.example/announce".into(),
        "udp://a.example:6969".into(),
    ];
    let m = metainfo_from_info(info, &trackers).unwrap();
    assert_eq!(m.info.raw, info);
    assert_eq!(m.info.hash.v1, Some(crate::hash::sha1(info)));
    assert_eq!(
        m.trackers,
        [["udp://a.example:6969"], ["http://b.example/announce"]]
    );
    assert!(metainfo_from_info(b"d4:name1:ae", &[]).is_err());
}

/// A peer hands over, correctly and under the right hash, an info dictionary the parser must
/// refuse: a v2 file claiming 2^21 + 1 pieces of 16 KiB, which a magnet's metadata (no piece
/// layers) cannot back with anything. The fetch succeeds, and the parse refuses it before the
/// caller keeps or adds anything.
#[tokio::test]
async fn fetched_metadata_over_the_bounds_is_refused_by_the_parse() {
    use crate::bencode::Bencode;
    let mut attrs = Bencode::dict();
    attrs.insert("length", Bencode::Int(((1 << 21) + 1) * 16384));
    attrs.insert("pieces root", Bencode::bytes([7u8; 32]));
    let mut leaf = Bencode::dict();
    leaf.insert("", attrs);
    let mut tree = Bencode::dict();
    tree.insert("big", leaf);
    let mut info = Bencode::dict();
    info.insert("file tree", tree);
    info.insert("meta version", Bencode::Int(2));
    info.insert("name", Bencode::bytes("big"));
    info.insert("piece length", Bencode::Int(16384));
    let meta = info.encode();
    let hash = InfoHash {
        v1: None,
        v2: Some(crate::hash::sha256(&meta)),
    };
    let peer = spawn_peer(Script::good(meta.clone(), &hash)).await;
    let fetched = fetch(&hash, &[peer.addr], test_options()).await.unwrap();
    assert_eq!(fetched.info, meta);
    let e = metainfo_from_info(&fetched.info, &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("make 2097153 pieces, more than 2097152"), "{e}");
}

/// A pure v2 info dictionary: `big` (5 pieces of 16 KiB and a bit) and `small` (one piece),
/// with the big file's piece layer, its tree, and the info-hash.
fn v2_torrent() -> (Vec<u8>, InfoHash, Vec<[u8; 32]>, PieceTree) {
    use crate::bencode::Bencode;
    let data: Vec<u8> = (0..5 * 16384 + 700).map(|i| (i % 251) as u8).collect();
    let layer: Vec<[u8; 32]> = data.chunks(16384).map(crate::hash::sha256).collect();
    let root = crate::hash::root_from_piece_layer(&layer, 16384);
    let tree = PieceTree::new(&layer, 16384).unwrap();
    let mut files = Bencode::dict();
    for (name, len, root) in [
        ("big", data.len(), root),
        ("small", 100, crate::hash::sha256(&[1; 100])),
    ] {
        let mut attrs = Bencode::dict();
        attrs.insert("length", Bencode::Int(len as i64));
        attrs.insert("pieces root", Bencode::bytes(root));
        let mut leaf = Bencode::dict();
        leaf.insert("", attrs);
        files.insert(name, leaf);
    }
    let mut info = Bencode::dict();
    info.insert("file tree", files);
    info.insert("meta version", Bencode::Int(2));
    info.insert("name", Bencode::bytes("v2"));
    info.insert("piece length", Bencode::Int(16384));
    let meta = info.encode();
    let hash = InfoHash {
        v1: None,
        v2: Some(crate::hash::sha256(&meta)),
    };
    (meta, hash, layer, tree)
}

fn serving_hashes(meta: &[u8], hash: &InfoHash, answer: HashAnswer) -> Script {
    Script {
        hashes: Some(answer),
        ..Script::good(meta.to_vec(), hash)
    }
}

#[tokio::test]
async fn a_v2_torrents_piece_layers_come_with_its_metadata() {
    let (meta, hash, layer, tree) = v2_torrent();
    let root = tree.root();
    let t = tree.clone();
    let peer = spawn_peer(serving_hashes(
        &meta,
        &hash,
        Box::new(move |r| {
            let mut out = Vec::new();
            match t.answer(r) {
                Ok(h) => hashes::encode_hashes(r, &h, &mut out),
                Err(_) => HashMessage::Reject(*r).encode(&mut out),
            }
            out
        }),
    ))
    .await;
    let fetched = fetch(&hash, &[peer.addr], test_options()).await.unwrap();
    assert_eq!(fetched.info, meta);
    // One layer: the small file's root is its only hash.
    assert_eq!(fetched.piece_layers.len(), 1);
    assert_eq!(fetched.piece_layers[&root], layer);
}

#[tokio::test]
async fn bad_or_refused_piece_layers_fail_the_peer() {
    let (meta, hash, _, tree) = v2_torrent();
    let t = tree.clone();
    let forger = spawn_peer(serving_hashes(
        &meta,
        &hash,
        Box::new(move |r| {
            let mut h = t.answer(r).unwrap();
            h[1][0] ^= 1;
            let mut out = Vec::new();
            hashes::encode_hashes(r, &h, &mut out);
            out
        }),
    ))
    .await;
    let refuser = spawn_peer(serving_hashes(
        &meta,
        &hash,
        Box::new(|r| {
            let mut out = Vec::new();
            HashMessage::Reject(*r).encode(&mut out);
            out
        }),
    ))
    .await;
    // Hashes for another request than ours: ignored as noise, then the peer stalls.
    let t = tree.clone();
    let stray = spawn_peer(serving_hashes(
        &meta,
        &hash,
        Box::new(move |r| {
            let other = HashRequest {
                proof_layers: r.proof_layers - 1,
                ..*r
            };
            let mut out = Vec::new();
            hashes::encode_hashes(&other, &t.answer(&other).unwrap(), &mut out);
            out
        }),
    ))
    .await;
    let opts = FetchOptions {
        peer_timeout: Duration::from_secs(1),
        ..test_options()
    };
    let err = fetch(&hash, &[forger.addr, refuser.addr, stray.addr], opts)
        .await
        .unwrap_err();
    let mut k = kinds(err.failures());
    k.sort();
    assert_eq!(k, ["bad_hashes", "hashes_rejected", "timeout"]);
}

//! The tracker client against a real tracker (Debian's opentracker, HTTP and UDP) and against
//! scripted loopback servers that misbehave on demand: refusals, malformed, oversized and
//! truncated replies, lost packets, stray transaction ids, silence, dead tiers.
//!
//! Everything listens on loopback only; retry bases are milliseconds so the file runs in seconds.

mod common;

use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringseed::tracker::{
    AnnounceOutcome, AnnounceRequest, AnnounceResponse, Announcer, AnnouncerConfig, ClientConfig,
    Clock, Event, MAX_REPLY_BYTES, TrackerClient, TrackerError, TransferStats, udp,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

use common::opentracker::OpenTracker;

/// A client with fast timeouts and a 50 ms BEP 15 retry base (waits 50, 100, 200 ms).
/// A client for the real tracker: answers come in milliseconds, but a loaded CI machine can
/// delay one UDP reply past the scripted tests' short retry schedule.
fn opentracker_client() -> TrackerClient {
    TrackerClient::new(ClientConfig {
        http_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
        udp_retry_base: Duration::from_millis(250),
        udp_retries: 3,
        ..ClientConfig::default()
    })
    .expect("client")
}

fn fast_client() -> TrackerClient {
    TrackerClient::new(ClientConfig {
        http_timeout: Duration::from_millis(1500),
        connect_timeout: Duration::from_millis(1000),
        udp_retry_base: Duration::from_millis(50),
        udp_retries: 2,
        ..ClientConfig::default()
    })
    .expect("client")
}

fn request(info_hash: [u8; 20], peer: u8, port: u16, left: u64, event: Event) -> AnnounceRequest {
    let mut peer_id = *b"-RS0001-000000000000";
    peer_id[19] = peer;
    AnnounceRequest {
        left,
        event,
        ..AnnounceRequest::new(info_hash, peer_id, port)
    }
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

// ---------------------------------------------------------------------------------------------
// opentracker

fn has_peer(r: &AnnounceResponse, port: u16) -> bool {
    r.peers.contains(&local(port))
}

/// Two peers find each other, scrape counts them, and `stopped` removes one: the same story over
/// HTTP and over UDP.
async fn two_peers_meet(client: &TrackerClient, url: &str, hash: [u8; 20]) {
    let (seed_port, leech_port) = (41001, 41002);
    let a = client
        .announce(url, &request(hash, 1, seed_port, 0, Event::Started))
        .await
        .unwrap_or_else(|e| panic!("{url}: seed's started announce: {e}"));
    assert!(!has_peer(&a, leech_port));
    let b = client
        .announce(url, &request(hash, 2, leech_port, 1000, Event::Started))
        .await
        .unwrap();
    assert!(
        has_peer(&b, seed_port),
        "{url}: leech should see the seed: {:?}",
        b.peers
    );
    assert!(b.interval >= ringseed::tracker::MIN_INTERVAL);
    let a = client
        .announce(url, &request(hash, 1, seed_port, 0, Event::None))
        .await
        .unwrap();
    assert!(
        has_peer(&a, leech_port),
        "{url}: seed should see the leech: {:?}",
        a.peers
    );
    assert_eq!((a.complete, a.incomplete), (Some(1), Some(1)), "{url}");

    let s = client.scrape(url, &[hash]).await.unwrap();
    let stats = s.files.get(&hash).copied().unwrap_or_default();
    assert_eq!(
        (stats.complete, stats.incomplete),
        (1, 1),
        "{url}: scrape {s:?}"
    );

    client
        .announce(url, &request(hash, 2, leech_port, 1000, Event::Stopped))
        .await
        .unwrap();
    let a = client
        .announce(url, &request(hash, 1, seed_port, 0, Event::None))
        .await
        .unwrap();
    assert!(
        !has_peer(&a, leech_port),
        "{url}: stopped peer still listed: {:?}",
        a.peers
    );
    let s = client.scrape(url, &[hash]).await.unwrap();
    let stats = s.files.get(&hash).copied().unwrap_or_default();
    assert_eq!(
        (stats.complete, stats.incomplete),
        (1, 0),
        "{url}: scrape after stop {s:?}"
    );
}

#[tokio::test]
async fn opentracker_http_and_udp() {
    let (h_http, h_udp) = ([0x11u8; 20], [0x22u8; 20]);
    let t = OpenTracker::start(&[h_http, h_udp]);
    let client = opentracker_client();
    two_peers_meet(&client, &t.http(), h_http).await;
    two_peers_meet(&client, &t.udp(), h_udp).await;
}

#[tokio::test]
async fn opentracker_refusal_is_surfaced() {
    let t = OpenTracker::start(&[[0x33; 20]]);
    let client = opentracker_client();
    let err = client
        .announce(&t.http(), &request([0x44; 20], 1, 41003, 0, Event::Started))
        .await
        .unwrap_err();
    match err {
        TrackerError::Failure(text) => assert!(text.contains("not authorized"), "{text}"),
        other => panic!("expected the tracker's failure reason, got {other}"),
    }
}

#[tokio::test]
async fn announcer_drives_opentracker() {
    let hash = [0x55u8; 20];
    let t = OpenTracker::start(&[hash]);
    let client = opentracker_client();
    let mut a = Announcer::new(
        hash,
        *b"-RS0001-announcer001",
        41010,
        &[vec![t.udp()], vec![t.http()]],
        AnnouncerConfig::default(),
    );
    let stats = TransferStats {
        left: 10,
        ..TransferStats::default()
    };
    match a.announce_now(&client, stats).await {
        AnnounceOutcome::Announced {
            url,
            event,
            response,
        } => {
            assert_eq!(url, t.udp());
            assert_eq!(event, Event::Started);
            assert!(has_peer(&response, 41010));
        }
        other => panic!("{other:?}"),
    }
    assert!(a.next_due() > Instant::now() + Duration::from_secs(60));
    a.mark_completed();
    let out = a
        .announce_now(&client, TransferStats { left: 0, ..stats })
        .await;
    assert!(
        matches!(
            out,
            AnnounceOutcome::Announced {
                event: Event::Completed,
                ..
            }
        ),
        "{out:?}"
    );
    let s = client.scrape(&t.http(), &[hash]).await.unwrap();
    assert_eq!(s.files[&hash].complete, 1);
    a.stop(&client, stats).await.unwrap();
    let s = client.scrape(&t.http(), &[hash]).await.unwrap();
    assert_eq!((s.files[&hash].complete, s.files[&hash].incomplete), (0, 0));
}

// ---------------------------------------------------------------------------------------------
// scripted HTTP trackers

/// What a scripted HTTP tracker does with one connection.
#[derive(Clone)]
enum HttpScript {
    /// Writes these bytes and closes.
    Reply(Vec<u8>),
    /// Reads the request and never answers.
    Silent,
}

/// An HTTP server on 127.0.0.1 answering successive connections from `script` (the last entry
/// repeats). Returns its base URL and the request lines it saw.
async fn http_tracker(script: Vec<HttpScript>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind(local(0)).await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        let mut n = 0usize;
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let step = script[n.min(script.len() - 1)].clone();
            n += 1;
            let log = log.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => head.extend_from_slice(&buf[..k]),
                    }
                }
                let line = String::from_utf8_lossy(&head)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                log.lock().unwrap().push(line);
                match step {
                    HttpScript::Reply(bytes) => {
                        let _ = sock.write_all(&bytes).await;
                        let _ = sock.shutdown().await;
                    }
                    HttpScript::Silent => {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                }
            });
        }
    });
    (base, seen)
}

fn http_reply(status: &str, body: &[u8]) -> HttpScript {
    let mut r = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    HttpScript::Reply(r)
}

fn ok_body(interval: i64, min_interval: Option<i64>, peers: &[u8]) -> Vec<u8> {
    let mut d = ringseed::bencode::Bencode::dict();
    d.insert("interval", ringseed::bencode::Bencode::Int(interval));
    if let Some(m) = min_interval {
        d.insert("min interval", ringseed::bencode::Bencode::Int(m));
    }
    d.insert("peers", ringseed::bencode::Bencode::bytes(peers));
    d.insert("tracker id", ringseed::bencode::Bencode::bytes("T-1"));
    d.encode()
}

const ONE_PEER: [u8; 6] = [10, 1, 2, 3, 0x1a, 0xe1];

#[tokio::test]
async fn http_failure_reason_is_verbatim_with_any_status() {
    let body = b"d14:failure reason29:Unregistered torrent (code 7)e";
    for status in ["200 OK", "400 Bad Request"] {
        let (base, _) = http_tracker(vec![http_reply(status, body)]).await;
        let err = fast_client()
            .announce(
                &format!("{base}/announce"),
                &request([1; 20], 1, 1, 0, Event::Started),
            )
            .await
            .unwrap_err();
        assert_eq!(
            err,
            TrackerError::Failure("Unregistered torrent (code 7)".into())
        );
        assert_eq!(
            err.to_string(),
            "tracker refused: Unregistered torrent (code 7)"
        );
    }
}

#[tokio::test]
async fn http_request_and_tracker_id() {
    let (base, seen) =
        http_tracker(vec![http_reply("200 OK", &ok_body(900, None, &ONE_PEER))]).await;
    let url = format!("{base}/announce?passkey=s3cret");
    let client = fast_client();
    let r = client
        .announce(&url, &request([0xfe; 20], 7, 6881, 5, Event::Started))
        .await
        .unwrap();
    assert_eq!(
        r.peers,
        vec!["10.1.2.3:6881".parse::<SocketAddr>().unwrap()]
    );
    assert_eq!(r.tracker_id.as_deref(), Some(&b"T-1"[..]));
    let req = AnnounceRequest {
        tracker_id: r.tracker_id.clone(),
        ..request([0xfe; 20], 7, 6881, 5, Event::None)
    };
    client.announce(&url, &req).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen[0].starts_with(&format!(
            "GET /announce?passkey=s3cret&info_hash={}&peer_id=-RS0001-00000000000%07&port=6881&uploaded=0&downloaded=0&left=5&compact=1&numwant=50&key=",
            "%FE".repeat(20)
        )),
        "{}",
        seen[0]
    );
    assert!(seen[0].ends_with("&event=started HTTP/1.1"), "{}", seen[0]);
    assert!(seen[1].contains("&trackerid=T-1"), "{}", seen[1]);
    assert!(!seen[1].contains("event="), "{}", seen[1]);
}

#[tokio::test]
async fn http_malformed_oversized_truncated_and_bad_status() {
    let client = fast_client();
    let req = request([1; 20], 1, 1, 0, Event::None);
    let ask = |script: Vec<HttpScript>| {
        let client = &client;
        let req = &req;
        async move {
            let (base, _) = http_tracker(script).await;
            client.announce(&format!("{base}/announce"), req).await
        }
    };

    let err = ask(vec![http_reply("200 OK", b"<html>hello</html>")])
        .await
        .unwrap_err();
    assert!(matches!(err, TrackerError::Bencode(_)), "{err}");
    assert!(err.to_string().contains("not valid bencode"), "{err}");

    let err = ask(vec![http_reply("200 OK", b"d5:peers5:abcdee")])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("multiple of 6"), "{err}");

    let err = ask(vec![http_reply("200 OK", b"")]).await.unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");

    let big = vec![b'x'; MAX_REPLY_BYTES + 1];
    let err = ask(vec![http_reply("200 OK", &big)]).await.unwrap_err();
    assert_eq!(
        err,
        TrackerError::TooLarge {
            limit: MAX_REPLY_BYTES
        }
    );

    // Oversized without a length: chunked, 64 KiB chunks.
    let mut chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..=(MAX_REPLY_BYTES / 65536) {
        chunked.extend_from_slice(b"10000\r\n");
        chunked.extend_from_slice(&[b'x'; 65536]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let err = ask(vec![HttpScript::Reply(chunked)]).await.unwrap_err();
    assert_eq!(
        err,
        TrackerError::TooLarge {
            limit: MAX_REPLY_BYTES
        }
    );

    // Truncated: the length promises more than is sent before the close.
    let mut truncated = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n".to_vec();
    truncated.extend_from_slice(b"d8:intervali60e");
    let err = ask(vec![HttpScript::Reply(truncated)]).await.unwrap_err();
    assert!(matches!(err, TrackerError::Network { .. }), "{err}");

    let err = ask(vec![http_reply("503 Service Unavailable", b"busy")])
        .await
        .unwrap_err();
    assert_eq!(err, TrackerError::HttpStatus { status: 503 });

    let err = ask(vec![HttpScript::Reply(b"garbage\r\n\r\n".to_vec())])
        .await
        .unwrap_err();
    assert!(matches!(err, TrackerError::Network { .. }), "{err}");
}

#[tokio::test]
async fn http_chunked_and_redirects() {
    let client = fast_client();
    let req = request([1; 20], 1, 1, 0, Event::None);

    let body = ok_body(600, None, &ONE_PEER);
    let (a, b) = body.split_at(7);
    let mut chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for part in [a, b] {
        chunked.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        chunked.extend_from_slice(part);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let (base, _) = http_tracker(vec![HttpScript::Reply(chunked)]).await;
    let r = client
        .announce(&format!("{base}/announce"), &req)
        .await
        .unwrap();
    assert_eq!(r.interval, Duration::from_secs(600));
    assert_eq!(r.peers.len(), 1);

    let redirect = HttpScript::Reply(
        b"HTTP/1.1 302 Found\r\nLocation: /elsewhere?x=1\r\nContent-Length: 0\r\n\r\n".to_vec(),
    );
    let (base, seen) = http_tracker(vec![
        redirect.clone(),
        http_reply("200 OK", &ok_body(600, None, &[])),
    ])
    .await;
    client
        .announce(&format!("{base}/announce"), &req)
        .await
        .unwrap();
    assert!(seen.lock().unwrap()[1].starts_with("GET /elsewhere?x=1 "));

    let (base, _) = http_tracker(vec![redirect]).await;
    let err = client
        .announce(&format!("{base}/announce"), &req)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("more than 5 redirects"), "{err}");
}

#[tokio::test]
async fn http_silence_times_out() {
    let (base, _) = http_tracker(vec![HttpScript::Silent]).await;
    let client = TrackerClient::new(ClientConfig {
        http_timeout: Duration::from_millis(300),
        ..ClientConfig::default()
    })
    .unwrap();
    let started = Instant::now();
    let err = client
        .announce(
            &format!("{base}/announce"),
            &request([1; 20], 1, 1, 0, Event::None),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, TrackerError::Timeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn http_scrape_and_unsupported_urls() {
    let body = b"d5:filesd20:\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01d8:completei4e10:downloadedi9e10:incompletei2eeee";
    let (base, seen) = http_tracker(vec![http_reply("200 OK", body)]).await;
    let client = fast_client();
    let s = client
        .scrape(&format!("{base}/announce"), &[[1; 20]])
        .await
        .unwrap();
    assert_eq!(s.files[&[1u8; 20]].downloaded, 9);
    assert!(
        seen.lock().unwrap()[0]
            .starts_with(&format!("GET /scrape?info_hash={} ", "%01".repeat(20)))
    );
    assert_eq!(
        client.scrape(&format!("{base}/tracker"), &[[1; 20]]).await,
        Err(TrackerError::ScrapeUnsupported(format!("{base}/tracker")))
    );
    let err = client
        .announce(
            "wss://t.example/announce",
            &request([1; 20], 1, 1, 0, Event::None),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, TrackerError::UnsupportedScheme(_)), "{err}");
}

// ---------------------------------------------------------------------------------------------
// scripted UDP trackers

/// A BEP 15 tracker on loopback that drops the first `drop_first` datagrams, can send a decoy
/// with a wrong transaction id before each real answer, or can refuse every announce.
#[derive(Clone, Default)]
struct UdpBehaviour {
    drop_first: usize,
    decoy_first: bool,
    refuse: Option<String>,
    silent: bool,
    /// IPv6 peers (18 bytes) instead of IPv4.
    v6: bool,
}

#[derive(Default)]
struct UdpLog {
    received: usize,
    connects: usize,
    announces: usize,
}

async fn udp_tracker(bind: SocketAddr, b: UdpBehaviour) -> (String, Arc<Mutex<UdpLog>>) {
    let sock = UdpSocket::bind(bind).await.unwrap();
    let addr = sock.local_addr().unwrap();
    let url = match addr {
        SocketAddr::V4(a) => format!("udp://{a}/announce"),
        SocketAddr::V6(a) => format!("udp://[{}]:{}/announce", a.ip(), a.port()),
    };
    let log = Arc::new(Mutex::new(UdpLog::default()));
    let l = log.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                return;
            };
            let p = &buf[..n];
            let count = {
                let mut l = l.lock().unwrap();
                l.received += 1;
                l.received
            };
            if b.silent || count <= b.drop_first || n < 16 {
                continue;
            }
            let action = u32::from_be_bytes(p[8..12].try_into().unwrap());
            let tid: [u8; 4] = p[12..16].try_into().unwrap();
            let mut reply = Vec::new();
            match action {
                0 => {
                    l.lock().unwrap().connects += 1;
                    reply.extend_from_slice(&0u32.to_be_bytes());
                    reply.extend_from_slice(&tid);
                    reply.extend_from_slice(&0x1234_5678_9abc_def0u64.to_be_bytes());
                }
                1 => {
                    l.lock().unwrap().announces += 1;
                    assert_eq!(&p[..8], &0x1234_5678_9abc_def0u64.to_be_bytes());
                    if let Some(msg) = &b.refuse {
                        reply = udp::error_packet(u32::from_be_bytes(tid), msg);
                    } else {
                        reply.extend_from_slice(&1u32.to_be_bytes());
                        reply.extend_from_slice(&tid);
                        for v in [120u32, 1, 2] {
                            reply.extend_from_slice(&v.to_be_bytes());
                        }
                        if b.v6 {
                            let mut ip = [0u8; 16];
                            ip[15] = 1;
                            reply.extend_from_slice(&ip);
                        } else {
                            reply.extend_from_slice(&[10, 9, 8, 7]);
                        }
                        reply.extend_from_slice(&p[96..98]); // the announcer's own port
                    }
                }
                2 => {
                    reply.extend_from_slice(&2u32.to_be_bytes());
                    reply.extend_from_slice(&tid);
                    for _ in 0..(n - 16) / 20 {
                        for v in [3u32, 4, 5] {
                            reply.extend_from_slice(&v.to_be_bytes());
                        }
                    }
                }
                _ => continue,
            }
            if b.decoy_first {
                // Another transaction id and, for an announce, another peer: taking it would show.
                let mut decoy = reply.clone();
                decoy[4] ^= 0xff;
                if action == 1 {
                    decoy[20] = 66;
                }
                let _ = sock.send_to(&decoy, from).await;
            }
            let _ = sock.send_to(&reply, from).await;
        }
    });
    (url, log)
}

#[tokio::test]
async fn udp_retransmits_after_lost_packets_and_caches_the_connection() {
    // Drops the first connect and the first announce: 50 ms + 100 ms of waiting, then answers.
    let (url, log) = udp_tracker(
        local(0),
        UdpBehaviour {
            drop_first: 1,
            ..Default::default()
        },
    )
    .await;
    let client = fast_client();
    let r = client
        .announce(&url, &request([1; 20], 1, 6881, 0, Event::Started))
        .await
        .unwrap();
    assert_eq!(
        r.peers,
        vec!["10.9.8.7:6881".parse::<SocketAddr>().unwrap()]
    );
    assert_eq!(r.interval, Duration::from_secs(120));
    assert_eq!((r.complete, r.incomplete), (Some(2), Some(1)));
    let s = client.scrape(&url, &[[1; 20], [2; 20]]).await.unwrap();
    assert_eq!(s.files.len(), 2);
    assert_eq!(s.files[&[2u8; 20]].incomplete, 5);
    let l = log.lock().unwrap();
    assert_eq!(
        l.received, 4,
        "lost connect, connect, announce, scrape (connection id reused)"
    );
    assert_eq!(l.connects, 1);
}

#[tokio::test]
async fn udp_connection_id_expires() {
    let (url, log) = udp_tracker(local(0), UdpBehaviour::default()).await;
    let client = TrackerClient::new(ClientConfig {
        udp_retry_base: Duration::from_millis(50),
        udp_connection_ttl: Duration::from_millis(100),
        ..ClientConfig::default()
    })
    .unwrap();
    let req = request([1; 20], 1, 6881, 0, Event::None);
    client.announce(&url, &req).await.unwrap();
    client.announce(&url, &req).await.unwrap();
    assert_eq!(log.lock().unwrap().connects, 1);
    tokio::time::sleep(Duration::from_millis(150)).await;
    client.announce(&url, &req).await.unwrap();
    assert_eq!(log.lock().unwrap().connects, 2);
}

#[tokio::test]
async fn udp_wrong_transaction_ids_are_ignored() {
    let (url, _) = udp_tracker(
        local(0),
        UdpBehaviour {
            decoy_first: true,
            ..Default::default()
        },
    )
    .await;
    let r = fast_client()
        .announce(&url, &request([1; 20], 1, 6881, 0, Event::None))
        .await
        .unwrap();
    assert_eq!(
        r.peers,
        vec!["10.9.8.7:6881".parse::<SocketAddr>().unwrap()]
    );
}

#[tokio::test]
async fn udp_error_packet_is_verbatim() {
    let behaviour = UdpBehaviour {
        refuse: Some("info_hash not in whitelist".into()),
        ..Default::default()
    };
    let (url, _) = udp_tracker(local(0), behaviour).await;
    let err = fast_client()
        .announce(&url, &request([1; 20], 1, 6881, 0, Event::None))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        TrackerError::Failure("info_hash not in whitelist".into())
    );
}

#[tokio::test]
async fn udp_silence_times_out_after_the_retry_schedule() {
    let (url, log) = udp_tracker(
        local(0),
        UdpBehaviour {
            silent: true,
            ..Default::default()
        },
    )
    .await;
    let started = Instant::now();
    let err = fast_client()
        .announce(&url, &request([1; 20], 1, 6881, 0, Event::None))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, TrackerError::Timeout { .. }), "{err}");
    // 50 + 100 + 200 ms, three sends.
    assert!(
        took >= Duration::from_millis(350) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(log.lock().unwrap().received, 3);
}

#[tokio::test]
async fn udp_over_ipv6() {
    let bind: SocketAddr = "[::1]:0".parse().unwrap();
    let (url, _) = udp_tracker(
        bind,
        UdpBehaviour {
            v6: true,
            ..Default::default()
        },
    )
    .await;
    let r = fast_client()
        .announce(&url, &request([1; 20], 1, 6881, 0, Event::None))
        .await
        .unwrap();
    assert_eq!(r.peers, vec!["[::1]:6881".parse::<SocketAddr>().unwrap()]);
}

// ---------------------------------------------------------------------------------------------
// the announcer over real sockets

fn manual_clock() -> (Arc<Mutex<Instant>>, Clock) {
    let t = Arc::new(Mutex::new(Instant::now()));
    let c = t.clone();
    (t, Arc::new(move || *c.lock().unwrap()))
}

#[tokio::test]
async fn tiers_fall_back_and_prefer_the_working_tracker() {
    // Tier 1: a closed port (refused at once). Tier 2: a silent UDP tracker and a working HTTP one.
    let closed = {
        let l = StdTcpListener::bind(local(0)).unwrap();
        format!("http://{}/announce", l.local_addr().unwrap())
    };
    let (silent, silent_log) = udp_tracker(
        local(0),
        UdpBehaviour {
            silent: true,
            ..Default::default()
        },
    )
    .await;
    let (base, seen) =
        http_tracker(vec![http_reply("200 OK", &ok_body(1800, None, &ONE_PEER))]).await;
    let live = format!("{base}/announce");
    let mut a = Announcer::new(
        [9; 20],
        [8; 20],
        6881,
        &[vec![closed.clone()], vec![silent.clone(), live.clone()]],
        AnnouncerConfig::default(),
    );
    let client = fast_client();
    let stats = TransferStats::default();
    let out = a.announce_now(&client, stats).await;
    assert!(
        matches!(&out, AnnounceOutcome::Announced { url, event: Event::Started, .. } if *url == live),
        "{out:?}"
    );
    assert_eq!(
        a.tiers()[1][0].url,
        live,
        "the working tracker moves to the front of its tier"
    );
    assert!(a.tiers()[0][0].last_error.is_some());
    let silent_before = silent_log.lock().unwrap().received;

    let out = a.announce_now(&client, stats).await;
    assert!(
        matches!(&out, AnnounceOutcome::Announced { url, event: Event::None, .. } if *url == live)
    );
    assert_eq!(
        silent_log.lock().unwrap().received,
        silent_before,
        "silent tracker not retried"
    );
    assert_eq!(seen.lock().unwrap().len(), 2);
    assert!(seen.lock().unwrap()[1].contains("trackerid=T-1"));
}

#[tokio::test]
async fn scheduler_honours_interval_and_min_interval() {
    let (base, seen) = http_tracker(vec![
        http_reply("200 OK", &ok_body(300, None, &[])),
        http_reply("200 OK", &ok_body(60, Some(600), &[])),
        http_reply("200 OK", b"d14:failure reason4:busye"),
    ])
    .await;
    let (time, clock) = manual_clock();
    let advance = |d: Duration| *time.lock().unwrap() += d;
    let now = || *time.lock().unwrap();
    let mut a = Announcer::new(
        [9; 20],
        [8; 20],
        6881,
        &[vec![format!("{base}/announce")]],
        AnnouncerConfig::default(),
    )
    .with_clock(clock);
    let client = fast_client();
    let stats = TransferStats::default();
    assert!(a.is_due());
    a.announce_now(&client, stats).await;
    assert_eq!(a.next_due(), now() + Duration::from_secs(300));
    advance(Duration::from_secs(299));
    assert!(!a.is_due());
    advance(Duration::from_secs(1));
    assert!(a.is_due());
    a.announce_now(&client, stats).await;
    let success = now();
    assert_eq!(
        a.next_due(),
        success + Duration::from_secs(600),
        "min interval is the floor"
    );
    assert_eq!(
        a.intervals(),
        (
            Some(Duration::from_secs(60)),
            Some(Duration::from_secs(600))
        )
    );
    advance(Duration::from_secs(600));
    let out = a.announce_now(&client, stats).await;
    assert_eq!(
        out,
        AnnounceOutcome::Failed {
            error: TrackerError::Failure("busy".into())
        }
    );
    assert_eq!(a.last_error(), Some(&TrackerError::Failure("busy".into())));
    assert_eq!(a.next_due(), now() + AnnouncerConfig::default().retry_base);
    assert_eq!(seen.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn stop_has_a_deadline() {
    // Answers the first announce, then goes silent; the client's own timeout is 30 s.
    let (base, seen) = http_tracker(vec![
        http_reply("200 OK", &ok_body(1800, None, &[])),
        HttpScript::Silent,
    ])
    .await;
    let client = TrackerClient::new(ClientConfig::default()).unwrap();
    let mut a = Announcer::new(
        [9; 20],
        [8; 20],
        6881,
        &[vec![format!("{base}/announce")]],
        AnnouncerConfig {
            stop_deadline: Duration::from_millis(200),
            ..AnnouncerConfig::default()
        },
    );
    let stats = TransferStats::default();
    assert!(matches!(
        a.announce_now(&client, stats).await,
        AnnounceOutcome::Announced { .. }
    ));
    let started = Instant::now();
    let err = a.stop(&client, stats).await.unwrap_err();
    assert!(matches!(err, TrackerError::Timeout { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let seen = seen.lock().unwrap();
    assert!(
        seen[1].contains("&numwant=0") && seen[1].contains("&event=stopped"),
        "{}",
        seen[1]
    );
}

#[tokio::test]
async fn udp_host_names_resolve_and_fall_back_across_addresses() {
    // `localhost` may resolve to ::1 first; nothing listens there, so the refusal moves the
    // client on to 127.0.0.1.
    let (url, _) = udp_tracker(local(0), UdpBehaviour::default()).await;
    let url = url.replace("127.0.0.1", "localhost");
    let r = fast_client()
        .announce(&url, &request([1; 20], 1, 6881, 0, Event::None))
        .await
        .unwrap();
    assert_eq!(r.peers.len(), 1);
}

#[tokio::test]
async fn bad_urls_are_named() {
    let client = fast_client();
    let req = request([1; 20], 1, 1, 0, Event::None);
    for url in [
        "udp://127.0.0.1/announce",
        "udp:///x",
        "http://exa mple/announce",
    ] {
        let err = client.announce(url, &req).await.unwrap_err();
        assert!(matches!(err, TrackerError::BadUrl { .. }), "{url}: {err}");
    }
}

/// The engine runs one task per torrent on its current-thread runtime; `tokio::spawn` needs the
/// announcer's future to be `Send`.
#[tokio::test]
async fn announcer_runs_in_a_spawned_task() {
    let (base, _) = http_tracker(vec![http_reply("200 OK", &ok_body(1800, None, &ONE_PEER))]).await;
    let client = Arc::new(fast_client());
    let mut a = Announcer::new(
        [9; 20],
        [8; 20],
        6881,
        &[vec![format!("{base}/announce")]],
        AnnouncerConfig::default(),
    );
    let task = tokio::spawn(async move {
        tokio::time::sleep_until(a.next_due().into()).await;
        a.announce_now(&*client, TransferStats::default()).await
    });
    let out = task.await.unwrap();
    assert!(
        matches!(out, AnnounceOutcome::Announced { response, .. } if response.peers.len() == 1)
    );
}

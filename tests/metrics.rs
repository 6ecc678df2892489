//! `/metrics` reports what the engine did: bytes per torrent and per worker, peers, handshakes,
//! disconnect reasons and the request-latency histogram, in Prometheus text format.

mod common;

use std::io::{Read, Write};
use std::sync::Arc;

use common::{Payload, create_torrent};
use ringseed::engine::{Settings, Torrent};
use ringseed::session::{Session, SessionOptions};

fn scrape(addr: std::net::SocketAddr) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

/// The value of the first series whose line starts with `prefix`.
fn value(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no series {prefix} in:\n{text}"))
}

#[test]
fn metrics_report_a_download() {
    let p = Payload::new();
    let t = p.dir.path().join("m.torrent");
    let meta = create_torrent(&p.multi, &t, &["--piece-kib", "32"]);
    let session = Session::start(
        Settings {
            workers: 2,
            listen: "127.0.0.1:0".parse().unwrap(),
            ..Settings::default()
        },
        SessionOptions {
            metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
            ..SessionOptions::default()
        },
    )
    .unwrap();
    let (torrent, _) = Torrent::open(meta.clone(), p.data_dir(), None).unwrap();
    session.add_torrent(Arc::new(torrent)).unwrap();
    let addr = session.metrics_addr().unwrap();

    let before = scrape(addr);
    assert_eq!(value(&before, "ringseed_torrents "), 1.0);
    let (_, fetched) =
        ringseed::fetch::fetch(&meta.info, session.engine().local_addr(), 64).unwrap();
    // A bad peer, so a disconnect reason shows.
    let mut bad = std::net::TcpStream::connect(session.engine().local_addr()).unwrap();
    // Not BitTorrent: with MSE enabled (the default) it is taken for an MSE key, and 1 KiB
    // without the synchronisation pattern cuts it off.
    let mut junk = b"GET / HTTP/1.0\r\n\r\n".to_vec();
    junk.resize(1024, b'x');
    bad.write_all(&junk).unwrap();
    let _ = bad.read_to_end(&mut Vec::new());

    let text = scrape(addr);
    let hash = ringseed::metainfo::hex(&meta.info.hash.wire_id());
    let torrent_up = value(
        &text,
        &format!("ringseed_torrent_upload_bytes_total{{torrent=\"{hash}\"}}"),
    );
    assert_eq!(torrent_up as u64, fetched.bytes, "{text}");
    let per_worker: f64 = text
        .lines()
        .filter(|l| l.starts_with("ringseed_upload_bytes_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(per_worker as u64, fetched.bytes);
    let handshakes: f64 = text
        .lines()
        .filter(|l| l.starts_with("ringseed_handshakes_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert!(handshakes >= 1.0);
    assert!(
        value(&text, "ringseed_disconnects_total{reason=\"mse_no_sync\"}") >= 1.0,
        "{text}"
    );
    let blocks = meta.info.layout.total_length.div_ceil(16384);
    // Latency is published once a second; wait for it.
    let mut text = text;
    for _ in 0..30 {
        if value(&text, "ringseed_request_latency_seconds_count") as u64 >= blocks {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        text = scrape(addr);
    }
    assert!(
        value(&text, "ringseed_request_latency_seconds_count") as u64 >= blocks,
        "{text}"
    );
    // Buckets are cumulative and end at +Inf = count.
    let count = value(&text, "ringseed_request_latency_seconds_count");
    assert_eq!(
        value(
            &text,
            "ringseed_request_latency_seconds_bucket{le=\"+Inf\"}"
        ),
        count
    );
    let buckets: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("ringseed_request_latency_seconds_bucket"))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    session.shutdown();
}

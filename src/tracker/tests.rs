//! Property tests of the tracker codecs: arbitrary input never panics, and what we build parses
//! back to what we meant.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use proptest::prelude::*;

use super::{AnnounceRequest, Event, MAX_PEERS, TrackerError, http, udp};
use crate::bencode::Bencode;

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=').map(str::to_owned))
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        Just(Event::None),
        Just(Event::Started),
        Just(Event::Completed),
        Just(Event::Stopped)
    ]
}

proptest! {
    #[test]
    fn http_reply_parsers_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = http::parse_announce(&body);
        let _ = http::parse_scrape(&body);
    }

    #[test]
    fn udp_reply_parsers_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..512),
        tid in any::<u32>(),
        v6 in any::<bool>(),
    ) {
        let _ = udp::parse_connect(&body, tid);
        let _ = udp::parse_announce(&body, tid, v6);
        let _ = udp::parse_scrape(&body, tid, &[[0; 20]; 3]);
    }

    #[test]
    fn udp_replies_with_another_transaction_id_are_rejected(
        mut body in proptest::collection::vec(any::<u8>(), 8..256),
        tid in any::<u32>(),
        other in any::<u32>(),
    ) {
        prop_assume!(tid != other);
        body[4..8].copy_from_slice(&other.to_be_bytes());
        prop_assert!(matches!(udp::parse_connect(&body, tid), Err(TrackerError::UdpPacket(_))));
        prop_assert!(matches!(udp::parse_announce(&body, tid, false), Err(TrackerError::UdpPacket(_))));
        prop_assert!(matches!(udp::parse_scrape(&body, tid, &[]), Err(TrackerError::UdpPacket(_))));
    }

    #[test]
    fn announce_url_carries_exact_bytes(
        info_hash in any::<[u8; 20]>(),
        peer_id in any::<[u8; 20]>(),
        port in any::<u16>(),
        up in any::<u64>(),
        down in any::<u64>(),
        left in any::<u64>(),
        ev in event(),
        tracker_id in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
        with_query in any::<bool>(),
    ) {
        let req = AnnounceRequest {
            uploaded: up, downloaded: down, left, event: ev, tracker_id: tracker_id.clone(),
            ..AnnounceRequest::new(info_hash, peer_id, port)
        };
        let base = if with_query { "http://t/announce?pk=x" } else { "http://t/announce" };
        let url = http::announce_url(base, &req);
        prop_assert!(url.is_ascii());
        prop_assert_eq!(url.matches('?').count(), 1);
        prop_assert_eq!(percent_decode(&query_param(&url, "info_hash").unwrap()), info_hash.to_vec());
        prop_assert_eq!(percent_decode(&query_param(&url, "peer_id").unwrap()), peer_id.to_vec());
        prop_assert_eq!(query_param(&url, "port"), Some(port.to_string()));
        prop_assert_eq!(query_param(&url, "uploaded"), Some(up.to_string()));
        prop_assert_eq!(query_param(&url, "downloaded"), Some(down.to_string()));
        prop_assert_eq!(query_param(&url, "left"), Some(left.to_string()));
        prop_assert_eq!(query_param(&url, "compact"), Some("1".to_owned()));
        prop_assert_eq!(query_param(&url, "event"), ev.as_http().map(str::to_owned));
        prop_assert_eq!(query_param(&url, "trackerid").map(|s| percent_decode(&s)), tracker_id);
        prop_assert_eq!(query_param(&url, "pk").is_some(), with_query);
    }

    #[test]
    fn compact_peers_round_trip(
        v4 in proptest::collection::vec((any::<[u8; 4]>(), any::<u16>()), 0..100),
        v6 in proptest::collection::vec((any::<[u8; 16]>(), any::<u16>()), 0..50),
        interval in any::<i64>(),
    ) {
        let mut p4 = Vec::new();
        for (ip, port) in &v4 {
            p4.extend_from_slice(ip);
            p4.extend_from_slice(&port.to_be_bytes());
        }
        let mut p6 = Vec::new();
        for (ip, port) in &v6 {
            p6.extend_from_slice(ip);
            p6.extend_from_slice(&port.to_be_bytes());
        }
        let mut d = Bencode::dict();
        d.insert("interval", Bencode::Int(interval));
        d.insert("peers", Bencode::Bytes(p4.clone()));
        d.insert("peers6", Bencode::Bytes(p6.clone()));
        let r = http::parse_announce(&d.encode()).unwrap();
        let want: Vec<SocketAddr> = v4
            .iter()
            .map(|(ip, port)| SocketAddr::from((Ipv4Addr::from(*ip), *port)))
            .chain(v6.iter().map(|(ip, port)| SocketAddr::from((Ipv6Addr::from(*ip), *port))))
            .filter(|a| a.port() != 0)
            .take(MAX_PEERS)
            .collect();
        prop_assert_eq!(&r.peers, &want);
        prop_assert!(r.interval >= super::MIN_INTERVAL && r.interval <= super::MAX_INTERVAL);

        // The same IPv4 peers in a UDP announce reply.
        let mut pkt = Vec::new();
        for v in [1u32, 77, 1800, 2, 3] {
            pkt.extend_from_slice(&v.to_be_bytes());
        }
        pkt.extend_from_slice(&p4);
        let r = udp::parse_announce(&pkt, 77, false).unwrap();
        let want4: Vec<SocketAddr> = want.iter().copied().filter(SocketAddr::is_ipv4).collect();
        prop_assert_eq!(r.peers, want4);
    }

    #[test]
    fn udp_announce_request_encodes_every_field(
        conn in any::<u64>(), tid in any::<u32>(), key in any::<u32>(),
        numwant in proptest::option::of(any::<u32>()), ev in event(), port in any::<u16>(),
    ) {
        let req = AnnounceRequest { key, numwant, event: ev, ..AnnounceRequest::new([3; 20], [4; 20], port) };
        let p = udp::announce_request(conn, tid, &req);
        prop_assert_eq!(&p[..8], &conn.to_be_bytes());
        prop_assert_eq!(&p[12..16], &tid.to_be_bytes());
        prop_assert_eq!(&p[80..84], &ev.as_udp().to_be_bytes());
        prop_assert_eq!(&p[88..92], &key.to_be_bytes());
        let want = numwant.and_then(|n| i32::try_from(n).ok()).unwrap_or(-1);
        prop_assert_eq!(&p[92..96], &want.to_be_bytes());
        prop_assert_eq!(&p[96..98], &port.to_be_bytes());
    }
}

//! Tracker replies from a stranger: HTTP bencoded announce and scrape replies, and BEP 15 UDP
//! replies. Nothing may panic, and whatever is accepted must respect the bounds the engine
//! relies on (peer count, interval range, transaction id).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringseed::tracker::{MAX_INTERVAL, MAX_PEERS, MIN_INTERVAL, http, udp};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = http::parse_announce(data) {
        assert!(r.peers.len() <= MAX_PEERS, "too many peers accepted");
        assert!((MIN_INTERVAL..=MAX_INTERVAL).contains(&r.interval), "interval not clamped");
        assert!(r.min_interval.is_none_or(|m| m <= MAX_INTERVAL));
        assert!(r.peers.iter().all(|p| p.port() != 0), "port-0 peer accepted");
    }
    let _ = http::parse_scrape(data);

    // UDP: the first byte picks the family, the transaction id is the one in the packet (so the
    // parsers get past the header) or a fixed one (so rejection is exercised too).
    let Some((&sel, packet)) = data.split_first() else {
        return;
    };
    let tid = if sel & 1 == 0 {
        udp::transaction_id(packet).unwrap_or(0)
    } else {
        0x0102_0304
    };
    let hashes = [[0u8; 20]; 3];
    let accepted = [
        udp::parse_connect(packet, tid).is_ok(),
        udp::parse_announce(packet, tid, sel & 2 != 0)
            .map(|r| {
                assert!(r.peers.len() <= MAX_PEERS);
                assert!((MIN_INTERVAL..=MAX_INTERVAL).contains(&r.interval));
            })
            .is_ok(),
        udp::parse_scrape(packet, tid, &hashes).is_ok(),
    ];
    if accepted.iter().any(|&a| a) {
        assert_eq!(udp::transaction_id(packet), Some(tid), "wrong transaction id accepted");
    }
});

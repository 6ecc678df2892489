//! UDP tracker codec (BEP 15): connect, announce and scrape requests, their replies, and error
//! packets. Pure functions: the caller owns the socket, the clock and the transaction ids.
//!
//! Every reply parser takes the transaction id it expects and rejects any other, so a stray or
//! spoofed datagram can never be taken for the answer. Use [`transaction_id`] first to tell a
//! packet meant for another request (to be ignored) from a wrong answer to this one.

use std::net::SocketAddr;

use super::http::{compact_v4, compact_v6};
use super::{
    AnnounceRequest, AnnounceResponse, MAX_SCRAPE_HASHES, ScrapeResponse, ScrapeStats,
    TrackerError, clamp_interval, tracker_text,
};

/// The magic constant that opens a connect request.
pub const PROTOCOL_ID: u64 = 0x0417_2710_1980;

const ACTION_CONNECT: u32 = 0;
const ACTION_ANNOUNCE: u32 = 1;
const ACTION_SCRAPE: u32 = 2;
const ACTION_ERROR: u32 = 3;

/// Length of a connect request and of its reply.
pub const CONNECT_LEN: usize = 16;
/// Length of an announce request (BEP 15, IPv4 and IPv6 alike).
pub const ANNOUNCE_LEN: usize = 98;
/// Length of an announce reply's fixed header, before the peers.
pub const ANNOUNCE_REPLY_HEADER: usize = 20;

/// A connect request.
pub fn connect_request(transaction_id: u32) -> [u8; CONNECT_LEN] {
    let mut p = [0u8; CONNECT_LEN];
    p[..8].copy_from_slice(&PROTOCOL_ID.to_be_bytes());
    p[8..12].copy_from_slice(&ACTION_CONNECT.to_be_bytes());
    p[12..16].copy_from_slice(&transaction_id.to_be_bytes());
    p
}

/// An announce request. Transfer figures above `i64::MAX` are sent as `i64::MAX`.
pub fn announce_request(
    connection_id: u64,
    transaction_id: u32,
    req: &AnnounceRequest,
) -> [u8; ANNOUNCE_LEN] {
    let sat = |v: u64| v.min(i64::MAX as u64).to_be_bytes();
    let mut p = [0u8; ANNOUNCE_LEN];
    p[..8].copy_from_slice(&connection_id.to_be_bytes());
    p[8..12].copy_from_slice(&ACTION_ANNOUNCE.to_be_bytes());
    p[12..16].copy_from_slice(&transaction_id.to_be_bytes());
    p[16..36].copy_from_slice(&req.info_hash);
    p[36..56].copy_from_slice(&req.peer_id);
    p[56..64].copy_from_slice(&sat(req.downloaded));
    p[64..72].copy_from_slice(&sat(req.left));
    p[72..80].copy_from_slice(&sat(req.uploaded));
    p[80..84].copy_from_slice(&req.event.as_udp().to_be_bytes());
    // 84..88: IP address 0 = the sender's.
    p[88..92].copy_from_slice(&req.key.to_be_bytes());
    let numwant = req
        .numwant
        .and_then(|n| i32::try_from(n).ok())
        .unwrap_or(-1);
    p[92..96].copy_from_slice(&numwant.to_be_bytes());
    p[96..98].copy_from_slice(&req.port.to_be_bytes());
    p
}

/// A scrape request for up to [`MAX_SCRAPE_HASHES`] info-hashes.
pub fn scrape_request(
    connection_id: u64,
    transaction_id: u32,
    info_hashes: &[[u8; 20]],
) -> Result<Vec<u8>, TrackerError> {
    if info_hashes.len() > MAX_SCRAPE_HASHES {
        return Err(TrackerError::TooManyHashes(info_hashes.len()));
    }
    let mut p = Vec::with_capacity(16 + 20 * info_hashes.len());
    p.extend_from_slice(&connection_id.to_be_bytes());
    p.extend_from_slice(&ACTION_SCRAPE.to_be_bytes());
    p.extend_from_slice(&transaction_id.to_be_bytes());
    for h in info_hashes {
        p.extend_from_slice(h);
    }
    Ok(p)
}

/// The transaction id of a reply, `None` when the packet is too short to have one.
pub fn transaction_id(packet: &[u8]) -> Option<u32> {
    be32(packet, 4)
}

/// Parses a connect reply and returns the connection id.
pub fn parse_connect(packet: &[u8], transaction_id: u32) -> Result<u64, TrackerError> {
    let body = expect(packet, transaction_id, ACTION_CONNECT, "connect")?;
    let id = body
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .ok_or_else(|| short("connect", packet.len(), CONNECT_LEN))?;
    Ok(u64::from_be_bytes(id))
}

/// Parses an announce reply. `ipv6` says which family the tracker answered over: BEP 15 peers
/// are 6-byte IPv4 entries over IPv4 and 18-byte IPv6 entries over IPv6.
pub fn parse_announce(
    packet: &[u8],
    transaction_id: u32,
    ipv6: bool,
) -> Result<AnnounceResponse, TrackerError> {
    let body = expect(packet, transaction_id, ACTION_ANNOUNCE, "announce")?;
    let (Some(interval), Some(leechers), Some(seeders)) =
        (be32(body, 0), be32(body, 4), be32(body, 8))
    else {
        return Err(short("announce", packet.len(), ANNOUNCE_REPLY_HEADER));
    };
    let list = &body[12..];
    let mut peers: Vec<SocketAddr> = Vec::new();
    // A trailing partial entry is a tracker bug, but the complete ones before it are still good.
    if ipv6 {
        compact_v6(&list[..list.len() / 18 * 18], "peers", &mut peers)?;
    } else {
        compact_v4(&list[..list.len() / 6 * 6], "peers", &mut peers)?;
    }
    Ok(AnnounceResponse {
        interval: clamp_interval(i64::from(interval)),
        min_interval: None,
        tracker_id: None,
        complete: i32::try_from(seeders)
            .ok()
            .and_then(|n| u32::try_from(n).ok()),
        incomplete: i32::try_from(leechers)
            .ok()
            .and_then(|n| u32::try_from(n).ok()),
        peers,
        warning: None,
    })
}

/// Parses a scrape reply for the `info_hashes` that were asked, in the same order. A tracker may
/// answer fewer than asked (it stops at a datagram's size); the missing ones are left out.
pub fn parse_scrape(
    packet: &[u8],
    transaction_id: u32,
    info_hashes: &[[u8; 20]],
) -> Result<ScrapeResponse, TrackerError> {
    let body = expect(packet, transaction_id, ACTION_SCRAPE, "scrape")?;
    let mut out = ScrapeResponse::default();
    for (hash, entry) in info_hashes.iter().zip(body.chunks_exact(12)) {
        let n = |i: usize| be32(entry, i).unwrap_or(0);
        out.files.insert(
            *hash,
            ScrapeStats {
                complete: n(0),
                downloaded: n(4),
                incomplete: n(8),
            },
        );
    }
    Ok(out)
}

/// An error packet (action 3): what a tracker sends to refuse a request.
pub fn error_packet(transaction_id: u32, message: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(8 + message.len());
    p.extend_from_slice(&ACTION_ERROR.to_be_bytes());
    p.extend_from_slice(&transaction_id.to_be_bytes());
    p.extend_from_slice(message.as_bytes());
    p
}

/// Checks the header of a reply and returns what follows it. An error packet with the right
/// transaction id becomes [`TrackerError::Failure`] with the tracker's message.
fn expect<'a>(
    packet: &'a [u8],
    transaction_id: u32,
    action: u32,
    what: &'static str,
) -> Result<&'a [u8], TrackerError> {
    let (Some(got_action), Some(got_tid)) = (be32(packet, 0), be32(packet, 4)) else {
        return Err(short(what, packet.len(), 8));
    };
    if got_tid != transaction_id {
        return Err(TrackerError::UdpPacket(format!(
            "{what} reply has transaction id {got_tid:#010x}, expected {transaction_id:#010x}"
        )));
    }
    let body = &packet[8..];
    if got_action == ACTION_ERROR {
        return Err(TrackerError::Failure(tracker_text(body)));
    }
    if got_action != action {
        return Err(TrackerError::UdpPacket(format!(
            "{what} reply has action {got_action}, expected {action}"
        )));
    }
    Ok(body)
}

fn short(what: &'static str, len: usize, need: usize) -> TrackerError {
    TrackerError::UdpPacket(format!(
        "{what} reply is {len} bytes, shorter than the {need} it needs"
    ))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let bytes = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes(<[u8; 4]>::try_from(bytes).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::{Event, MAX_INTERVAL, MAX_PEERS, MIN_INTERVAL};
    use std::time::Duration;

    #[test]
    fn connect_round_trip() {
        let req = connect_request(0x1234_5678);
        assert_eq!(&req[..8], &[0, 0, 0x04, 0x17, 0x27, 0x10, 0x19, 0x80]);
        assert_eq!(&req[8..], &[0, 0, 0, 0, 0x12, 0x34, 0x56, 0x78]);
        let mut reply = [0u8; 16];
        reply[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        reply[8..].copy_from_slice(&0xdead_beef_0000_0001u64.to_be_bytes());
        assert_eq!(transaction_id(&reply), Some(0x1234_5678));
        assert_eq!(
            parse_connect(&reply, 0x1234_5678),
            Ok(0xdead_beef_0000_0001)
        );
        let err = parse_connect(&reply, 1).unwrap_err().to_string();
        assert!(err.contains("transaction id"), "{err}");
        let err = parse_connect(&reply[..12], 0x1234_5678)
            .unwrap_err()
            .to_string();
        assert!(err.contains("12 bytes"), "{err}");
    }

    #[test]
    fn announce_request_layout() {
        let req = AnnounceRequest {
            uploaded: u64::MAX,
            downloaded: 2,
            left: 3,
            event: Event::Started,
            key: 7,
            numwant: None,
            ..AnnounceRequest::new([1; 20], [2; 20], 6881)
        };
        let p = announce_request(9, 10, &req);
        assert_eq!(u64::from_be_bytes(p[..8].try_into().unwrap()), 9);
        assert_eq!(be32(&p, 8), Some(1));
        assert_eq!(be32(&p, 12), Some(10));
        assert_eq!(&p[16..36], &[1; 20]);
        assert_eq!(&p[36..56], &[2; 20]);
        assert_eq!(i64::from_be_bytes(p[56..64].try_into().unwrap()), 2);
        assert_eq!(i64::from_be_bytes(p[64..72].try_into().unwrap()), 3);
        assert_eq!(i64::from_be_bytes(p[72..80].try_into().unwrap()), i64::MAX);
        assert_eq!(be32(&p, 80), Some(2));
        assert_eq!(be32(&p, 84), Some(0));
        assert_eq!(be32(&p, 88), Some(7));
        assert_eq!(be32(&p, 92), Some(u32::MAX));
        assert_eq!(&p[96..], &6881u16.to_be_bytes());
    }

    fn announce_reply(tid: u32, interval: u32, peers: &[u8]) -> Vec<u8> {
        let mut p = Vec::new();
        for v in [1, tid, interval, 4, 5] {
            p.extend_from_slice(&v.to_be_bytes());
        }
        p.extend_from_slice(peers);
        p
    }

    #[test]
    fn announce_reply_v4_v6() {
        let p = announce_reply(3, 600, &[127, 0, 0, 1, 0x1a, 0xe1, 1, 2]);
        let r = parse_announce(&p, 3, false).unwrap();
        assert_eq!(r.interval, Duration::from_secs(600));
        assert_eq!((r.incomplete, r.complete), (Some(4), Some(5)));
        assert_eq!(r.peers, vec!["127.0.0.1:6881".parse().unwrap()]);

        let mut v6 = vec![0u8; 18];
        v6[15] = 1;
        v6[16] = 0x1a;
        v6[17] = 0xe2;
        let r = parse_announce(&announce_reply(3, 1, &v6), 3, true).unwrap();
        assert_eq!(r.interval, MIN_INTERVAL);
        assert_eq!(r.peers, vec!["[::1]:6882".parse().unwrap()]);

        let r = parse_announce(&announce_reply(3, u32::MAX, &[]), 3, false).unwrap();
        assert_eq!(r.interval, MAX_INTERVAL);
        let many = vec![1u8; 6 * (MAX_PEERS + 5)];
        let r = parse_announce(&announce_reply(3, 60, &many), 3, false).unwrap();
        assert_eq!(r.peers.len(), MAX_PEERS);
    }

    #[test]
    fn error_packets_and_wrong_actions() {
        assert_eq!(
            parse_announce(&error_packet(8, "torrent not registered"), 8, false),
            Err(TrackerError::Failure("torrent not registered".into()))
        );
        let err = parse_connect(&announce_reply(8, 60, &[]), 8).unwrap_err();
        assert!(err.to_string().contains("action 1, expected 0"), "{err}");
        let err = parse_announce(&announce_reply(8, 60, &[])[..19], 8, false).unwrap_err();
        assert!(err.to_string().contains("19 bytes"), "{err}");
        assert_eq!(transaction_id(&[0; 7]), None);
    }

    #[test]
    fn scrape_round_trip() {
        let hashes = [[1u8; 20], [2u8; 20]];
        let req = scrape_request(5, 6, &hashes).unwrap();
        assert_eq!(req.len(), 16 + 40);
        assert_eq!(be32(&req, 8), Some(2));
        assert!(scrape_request(5, 6, &[[0; 20]; 75]).is_err());
        let mut reply = Vec::new();
        for v in [2u32, 6, 10, 20, 30] {
            reply.extend_from_slice(&v.to_be_bytes());
        }
        let r = parse_scrape(&reply, 6, &hashes).unwrap();
        assert_eq!(r.files.len(), 1);
        assert_eq!(
            r.files[&[1u8; 20]],
            ScrapeStats {
                complete: 10,
                downloaded: 20,
                incomplete: 30
            }
        );
    }
}

//! HTTP tracker codec (BEP 3, 23, 7, 48): announce and scrape URLs, bencoded replies.
//!
//! Pure functions: no sockets, no clocks. Binary values (info-hash, peer id) are percent-encoded
//! byte by byte; everything outside RFC 3986's unreserved set is escaped.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::bencode::{self, Kind, Limits, Value};

use super::{
    AnnounceRequest, AnnounceResponse, DEFAULT_INTERVAL, MAX_INTERVAL, MAX_PEERS, MAX_REPLY_BYTES,
    MAX_SCRAPE_HASHES, ScrapeResponse, ScrapeStats, TrackerError, clamp_interval, tracker_text,
};

/// Bencode limits for tracker replies: a reply is a shallow dictionary, and a dictionary-form
/// peer list of [`MAX_PEERS`] entries needs about 4 values per peer.
const REPLY_LIMITS: Limits = Limits {
    max_depth: 8,
    max_items: 64 * 1024,
};

/// Appends `bytes` to `out` percent-encoded: unreserved characters as they are, the rest `%XX`.
///
/// ```
/// let mut s = String::new();
/// ringseed::tracker::http::percent_encode(b"a b\x00~", &mut s);
/// assert_eq!(s, "a%20b%00~");
/// ```
pub fn percent_encode(bytes: &[u8], out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
}

/// The full announce URL for `req` on the tracker whose announce URL is `base`. Parameters are
/// appended with `&` when `base` already has a query (private trackers' passkeys).
///
/// ```
/// use ringseed::tracker::{AnnounceRequest, Event, http::announce_url};
/// let req = AnnounceRequest { event: Event::Started, ..AnnounceRequest::new([0xab; 20], [b'x'; 20], 6881) };
/// let url = announce_url("http://t.example/announce?pk=1", &req);
/// assert!(url.starts_with("http://t.example/announce?pk=1&info_hash=%AB%AB"));
/// assert!(url.ends_with("&event=started"));
/// ```
pub fn announce_url(base: &str, req: &AnnounceRequest) -> String {
    let mut url = String::with_capacity(base.len() + 256);
    url.push_str(base);
    push_separator(&mut url);
    url.push_str("info_hash=");
    percent_encode(&req.info_hash, &mut url);
    url.push_str("&peer_id=");
    percent_encode(&req.peer_id, &mut url);
    url.push_str(&format!(
        "&port={}&uploaded={}&downloaded={}&left={}&compact=1",
        req.port, req.uploaded, req.downloaded, req.left
    ));
    if let Some(n) = req.numwant {
        url.push_str(&format!("&numwant={n}"));
    }
    url.push_str(&format!("&key={:08X}", req.key));
    if let Some(id) = &req.tracker_id {
        url.push_str("&trackerid=");
        percent_encode(id, &mut url);
    }
    if let Some(event) = req.event.as_http() {
        url.push_str("&event=");
        url.push_str(event);
    }
    url
}

/// Appends what must come before the next query parameter: `?` to start a query, `&` to extend
/// one, nothing when the URL already ends in either.
fn push_separator(url: &mut String) {
    if !url.contains('?') {
        url.push('?');
    } else if !url.ends_with('?') && !url.ends_with('&') {
        url.push('&');
    }
}

/// The scrape URL of an announce URL, by the BEP 48 convention: the text after the last `/` of
/// the path must start with `announce`, which becomes `scrape`. `None` when the tracker has no
/// scrape URL by that convention.
///
/// ```
/// use ringseed::tracker::http::scrape_base;
/// assert_eq!(scrape_base("http://t/x/announce?pk=1").as_deref(), Some("http://t/x/scrape?pk=1"));
/// assert_eq!(scrape_base("http://t/announce.php").as_deref(), Some("http://t/scrape.php"));
/// assert_eq!(scrape_base("http://t/a"), None);
/// ```
pub fn scrape_base(announce: &str) -> Option<String> {
    let path_end = announce.find(['?', '#']).unwrap_or(announce.len());
    let (path, rest) = announce.split_at(path_end);
    let slash = path.rfind('/')?;
    // The slash must belong to the path, not to `scheme://`.
    if path[..slash].ends_with('/') || path[..slash].ends_with(':') {
        return None;
    }
    let last = &path[slash + 1..];
    let tail = last.strip_prefix("announce")?;
    Some(format!("{}scrape{tail}{rest}", &path[..=slash]))
}

/// The full scrape URL for `info_hashes` on the tracker whose announce URL is `announce`.
pub fn scrape_url(announce: &str, info_hashes: &[[u8; 20]]) -> Result<String, TrackerError> {
    if info_hashes.len() > MAX_SCRAPE_HASHES {
        return Err(TrackerError::TooManyHashes(info_hashes.len()));
    }
    let mut url =
        scrape_base(announce).ok_or_else(|| TrackerError::ScrapeUnsupported(announce.into()))?;
    for h in info_hashes {
        push_separator(&mut url);
        url.push_str("info_hash=");
        percent_encode(h, &mut url);
    }
    Ok(url)
}

/// Parses an HTTP tracker's announce reply. A `failure reason` becomes
/// [`TrackerError::Failure`] with the tracker's text.
pub fn parse_announce(body: &[u8]) -> Result<AnnounceResponse, TrackerError> {
    let root = decode_reply(body)?;
    let interval = match root.get(b"interval") {
        None => DEFAULT_INTERVAL,
        Some(v) => clamp_interval(int_field(v, "interval")?),
    };
    let min_interval = match root.get(b"min interval") {
        None => None,
        Some(v) => {
            let secs = u64::try_from(int_field(v, "min interval")?).unwrap_or(0);
            Some(Duration::from_secs(secs).min(MAX_INTERVAL))
        }
    };
    let tracker_id = match root.get(b"tracker id") {
        None => None,
        Some(v) => Some(bytes_field(v, "tracker id")?.to_vec()),
    };
    let warning = match root.get(b"warning message") {
        None => None,
        Some(v) => Some(tracker_text(bytes_field(v, "warning message")?)),
    };
    let mut peers = Vec::new();
    if let Some(v) = root.get(b"peers") {
        match &v.kind {
            Kind::Bytes(b) => compact_v4(b, "peers", &mut peers)?,
            Kind::List(l) => dict_peers(l, &mut peers)?,
            _ => {
                return Err(TrackerError::reply(
                    "peers",
                    format!("expected a string or a list, found a {}", v.type_name()),
                ));
            }
        }
    }
    if let Some(v) = root.get(b"peers6") {
        compact_v6(bytes_field(v, "peers6")?, "peers6", &mut peers)?;
    }
    Ok(AnnounceResponse {
        interval,
        min_interval,
        tracker_id,
        complete: count(root.get(b"complete")),
        incomplete: count(root.get(b"incomplete")),
        peers,
        warning,
    })
}

/// Parses an HTTP tracker's scrape reply: `files` maps 20-byte info-hashes to their figures.
/// Entries whose key is not 20 bytes are skipped; missing figures read as 0.
pub fn parse_scrape(body: &[u8]) -> Result<ScrapeResponse, TrackerError> {
    let root = decode_reply(body)?;
    let mut out = ScrapeResponse::default();
    let Some(files) = root.get(b"files") else {
        return Ok(out);
    };
    let entries = files.as_dict().ok_or_else(|| {
        TrackerError::reply(
            "files",
            format!("expected a dictionary, found a {}", files.type_name()),
        )
    })?;
    for (key, stats) in entries {
        let Ok(hash) = <[u8; 20]>::try_from(*key) else {
            continue;
        };
        if stats.as_dict().is_none() {
            return Err(TrackerError::reply(
                "files",
                format!("entry is a {}, not a dictionary", stats.type_name()),
            ));
        }
        out.files.insert(
            hash,
            ScrapeStats {
                complete: count(stats.get(b"complete")).unwrap_or(0),
                downloaded: count(stats.get(b"downloaded")).unwrap_or(0),
                incomplete: count(stats.get(b"incomplete")).unwrap_or(0),
            },
        );
    }
    Ok(out)
}

/// Decodes a reply's top-level dictionary and turns `failure reason` into an error.
fn decode_reply(body: &[u8]) -> Result<Value<'_>, TrackerError> {
    if body.len() > MAX_REPLY_BYTES {
        return Err(TrackerError::TooLarge {
            limit: MAX_REPLY_BYTES,
        });
    }
    if body.is_empty() {
        return Err(TrackerError::reply("(reply)", "the reply is empty"));
    }
    let root = bencode::decode_with(body, REPLY_LIMITS)?;
    if root.as_dict().is_none() {
        return Err(TrackerError::reply(
            "(reply)",
            format!("expected a dictionary, found a {}", root.type_name()),
        ));
    }
    if let Some(reason) = root.get(b"failure reason") {
        let text = match reason.as_bytes() {
            Some(b) => tracker_text(b),
            None => format!("(a {} instead of text)", reason.type_name()),
        };
        return Err(TrackerError::Failure(text));
    }
    Ok(root)
}

fn int_field(v: &Value<'_>, field: &'static str) -> Result<i64, TrackerError> {
    v.as_int().ok_or_else(|| {
        TrackerError::reply(
            field,
            format!("expected an integer, found a {}", v.type_name()),
        )
    })
}

fn bytes_field<'a>(v: &Value<'a>, field: &'static str) -> Result<&'a [u8], TrackerError> {
    v.as_bytes().ok_or_else(|| {
        TrackerError::reply(
            field,
            format!("expected a string, found a {}", v.type_name()),
        )
    })
}

/// A swarm count: informational, so an absent, negative or non-integer value reads as unknown.
fn count(v: Option<&Value<'_>>) -> Option<u32> {
    v.and_then(Value::as_int)
        .and_then(|n| u32::try_from(n).ok())
}

/// Appends BEP 23 compact IPv4 peers (6 bytes each).
pub(crate) fn compact_v4(
    b: &[u8],
    field: &'static str,
    peers: &mut Vec<SocketAddr>,
) -> Result<(), TrackerError> {
    if !b.len().is_multiple_of(6) {
        return Err(TrackerError::reply(
            field,
            format!("{} bytes is not a multiple of 6", b.len()),
        ));
    }
    for c in b.chunks_exact(6) {
        let ip = Ipv4Addr::new(c[0], c[1], c[2], c[3]);
        push_peer(peers, IpAddr::V4(ip), u16::from_be_bytes([c[4], c[5]]));
    }
    Ok(())
}

/// Appends BEP 7 compact IPv6 peers (18 bytes each).
pub(crate) fn compact_v6(
    b: &[u8],
    field: &'static str,
    peers: &mut Vec<SocketAddr>,
) -> Result<(), TrackerError> {
    if !b.len().is_multiple_of(18) {
        return Err(TrackerError::reply(
            field,
            format!("{} bytes is not a multiple of 18", b.len()),
        ));
    }
    for c in b.chunks_exact(18) {
        let mut ip = [0u8; 16];
        ip.copy_from_slice(&c[..16]);
        let port = u16::from_be_bytes([c[16], c[17]]);
        push_peer(peers, IpAddr::V6(Ipv6Addr::from(ip)), port);
    }
    Ok(())
}

/// Dictionary-form peers (`ip`, `port`, optional `peer id`). An entry whose `ip` is not an
/// address literal (a host name) or whose port is out of range is skipped, not fatal.
fn dict_peers(list: &[Value<'_>], peers: &mut Vec<SocketAddr>) -> Result<(), TrackerError> {
    for entry in list {
        if entry.as_dict().is_none() {
            return Err(TrackerError::reply(
                "peers",
                format!("list entry is a {}, not a dictionary", entry.type_name()),
            ));
        }
        let ip = entry
            .get(b"ip")
            .and_then(Value::as_bytes)
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|s| s.parse::<IpAddr>().ok());
        let port = entry
            .get(b"port")
            .and_then(Value::as_int)
            .and_then(|p| u16::try_from(p).ok());
        if let (Some(ip), Some(port)) = (ip, port) {
            push_peer(peers, ip, port);
        }
    }
    Ok(())
}

fn push_peer(peers: &mut Vec<SocketAddr>, ip: IpAddr, port: u16) {
    if port != 0 && peers.len() < MAX_PEERS {
        peers.push(SocketAddr::new(ip, port));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bencode::Bencode;
    use crate::tracker::{Event, MIN_INTERVAL};

    fn req() -> AnnounceRequest {
        AnnounceRequest {
            uploaded: 10,
            downloaded: 20,
            left: 30,
            key: 0xdead_beef,
            ..AnnounceRequest::new([0u8; 20], *b"-RS0001-a b/c%d~e.f_", 6881)
        }
    }

    #[test]
    fn announce_url_has_every_parameter() {
        let url = announce_url("http://t.example:6969/announce", &req());
        assert_eq!(
            url,
            "http://t.example:6969/announce?info_hash=%00%00%00%00%00%00%00%00%00%00%00%00%00\
             %00%00%00%00%00%00%00&peer_id=-RS0001-a%20b%2Fc%25d~e.f_&port=6881&uploaded=10\
             &downloaded=20&left=30&compact=1&numwant=50&key=DEADBEEF"
        );
    }

    #[test]
    fn announce_url_appends_to_an_existing_query_and_sends_tracker_id_and_event() {
        let r = AnnounceRequest {
            event: Event::Stopped,
            tracker_id: Some(b"id 1".to_vec()),
            numwant: None,
            ..req()
        };
        let url = announce_url("https://t/announce.php?passkey=abc", &r);
        assert!(url.starts_with("https://t/announce.php?passkey=abc&info_hash="));
        assert!(url.ends_with("&key=DEADBEEF&trackerid=id%201&event=stopped"));
        assert!(!url.contains("numwant"));
        let url = announce_url("http://t/announce?", &r);
        assert!(url.starts_with("http://t/announce?info_hash="));
    }

    #[test]
    fn percent_encoding_round_trips_every_byte() {
        let all: Vec<u8> = (0..=255).collect();
        let mut s = String::new();
        percent_encode(&all, &mut s);
        let mut back = Vec::new();
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
                back.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            } else {
                back.push(b[i]);
                i += 1;
            }
        }
        assert_eq!(back, all);
    }

    #[test]
    fn scrape_convention() {
        for (announce, scrape) in [
            (
                "http://example.com/announce",
                Some("http://example.com/scrape"),
            ),
            (
                "http://example.com/x/announce",
                Some("http://example.com/x/scrape"),
            ),
            (
                "http://example.com/announce.php",
                Some("http://example.com/scrape.php"),
            ),
            ("http://example.com/a", None),
            (
                "http://example.com/announce?x2%0644",
                Some("http://example.com/scrape?x2%0644"),
            ),
            (
                "http://example.com/announce?x=2/4",
                Some("http://example.com/scrape?x=2/4"),
            ),
            ("http://example.com/x%064announce", None),
            ("http://announce", None),
            ("http://example.com/announce/x", None),
        ] {
            assert_eq!(scrape_base(announce).as_deref(), scrape, "{announce}");
        }
        let url = scrape_url("http://t/announce?pk=1", &[[1; 20], [2; 20]]).unwrap();
        assert_eq!(
            url,
            format!(
                "http://t/scrape?pk=1&info_hash={}&info_hash={}",
                "%01".repeat(20),
                "%02".repeat(20)
            )
        );
        assert_eq!(
            scrape_url("http://t/x", &[[1; 20]]),
            Err(TrackerError::ScrapeUnsupported("http://t/x".into()))
        );
        assert_eq!(
            scrape_url("http://t/announce", &[[1; 20]; 75]),
            Err(TrackerError::TooManyHashes(75))
        );
    }

    fn reply(entries: &[(&str, Bencode)]) -> Vec<u8> {
        let mut d = Bencode::dict();
        for (k, v) in entries {
            d.insert(k, v.clone());
        }
        d.encode()
    }

    #[test]
    fn parses_a_full_reply() {
        let mut p6 = vec![0u8; 18];
        p6[15] = 1;
        p6[16..].copy_from_slice(&6882u16.to_be_bytes());
        let body = reply(&[
            ("interval", Bencode::Int(1800)),
            ("min interval", Bencode::Int(900)),
            ("tracker id", Bencode::bytes("tid")),
            ("warning message", Bencode::bytes("slow down")),
            ("complete", Bencode::Int(3)),
            ("incomplete", Bencode::Int(4)),
            (
                "peers",
                Bencode::bytes([127, 0, 0, 1, 0x1a, 0xe1, 10, 0, 0, 2, 0, 0]),
            ),
            ("peers6", Bencode::Bytes(p6)),
        ]);
        let r = parse_announce(&body).unwrap();
        assert_eq!(r.interval, Duration::from_secs(1800));
        assert_eq!(r.min_interval, Some(Duration::from_secs(900)));
        assert_eq!(r.tracker_id.as_deref(), Some(&b"tid"[..]));
        assert_eq!(r.warning.as_deref(), Some("slow down"));
        assert_eq!((r.complete, r.incomplete), (Some(3), Some(4)));
        assert_eq!(
            r.peers,
            vec![
                "127.0.0.1:6881".parse::<SocketAddr>().unwrap(),
                "[::1]:6882".parse().unwrap()
            ]
        );
    }

    #[test]
    fn parses_dictionary_peers_and_skips_unusable_entries() {
        let peer = |ip: &str, port: i64| {
            let mut d = Bencode::dict();
            d.insert("ip", Bencode::bytes(ip));
            d.insert("peer id", Bencode::bytes([0u8; 20]));
            d.insert("port", Bencode::Int(port));
            d
        };
        let body = reply(&[
            ("interval", Bencode::Int(60)),
            (
                "peers",
                Bencode::List(vec![
                    peer("10.0.0.1", 6881),
                    peer("host.example", 6881),
                    peer("::1", 1),
                    peer("10.0.0.2", 70000),
                    peer("10.0.0.3", 0),
                ]),
            ),
        ]);
        let r = parse_announce(&body).unwrap();
        assert_eq!(
            r.peers,
            vec![
                "10.0.0.1:6881".parse::<SocketAddr>().unwrap(),
                "[::1]:1".parse().unwrap()
            ]
        );
    }

    #[test]
    fn failure_reason_is_surfaced_verbatim() {
        let body = reply(&[("failure reason", Bencode::bytes("unregistered torrent"))]);
        assert_eq!(
            parse_announce(&body),
            Err(TrackerError::Failure("unregistered torrent".into()))
        );
        assert_eq!(
            parse_scrape(&body),
            Err(TrackerError::Failure("unregistered torrent".into()))
        );
    }

    #[test]
    fn intervals_are_clamped() {
        let r = parse_announce(&reply(&[("interval", Bencode::Int(1))])).unwrap();
        assert_eq!(r.interval, MIN_INTERVAL);
        let r = parse_announce(&reply(&[
            ("interval", Bencode::Int(-5)),
            ("min interval", Bencode::Int(i64::MAX)),
        ]))
        .unwrap();
        assert_eq!(r.interval, MIN_INTERVAL);
        assert_eq!(r.min_interval, Some(MAX_INTERVAL));
        let r = parse_announce(&reply(&[("interval", Bencode::Int(i64::MAX))])).unwrap();
        assert_eq!(r.interval, MAX_INTERVAL);
        let r = parse_announce(&reply(&[("peers", Bencode::bytes(""))])).unwrap();
        assert_eq!(r.interval, DEFAULT_INTERVAL);
    }

    #[test]
    fn peer_count_is_bounded() {
        let body = reply(&[("peers", Bencode::Bytes(vec![1u8; 6 * (MAX_PEERS + 10)]))]);
        assert_eq!(parse_announce(&body).unwrap().peers.len(), MAX_PEERS);
    }

    #[test]
    fn malformed_replies_name_the_problem() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"".to_vec(), "empty"),
            (b"<html>".to_vec(), "bencode"),
            (b"d8:intervali60e".to_vec(), "bencode"),
            (b"li1ee".to_vec(), "found a list"),
            (reply(&[("interval", Bencode::bytes("60"))]), "`interval`"),
            (
                reply(&[("peers", Bencode::bytes([1, 2, 3, 4, 5]))]),
                "multiple of 6",
            ),
            (
                reply(&[("peers6", Bencode::bytes([1; 17]))]),
                "multiple of 18",
            ),
            (reply(&[("peers", Bencode::Int(3))]), "`peers`"),
            (
                reply(&[("peers", Bencode::List(vec![Bencode::Int(1)]))]),
                "not a dictionary",
            ),
            (
                reply(&[("failure reason", Bencode::Int(1))]),
                "instead of text",
            ),
        ];
        for (body, needle) in cases {
            let err = parse_announce(&body).unwrap_err().to_string();
            assert!(err.contains(needle), "{err:?} should mention {needle:?}");
        }
        let big = vec![b'x'; MAX_REPLY_BYTES + 1];
        assert_eq!(
            parse_announce(&big),
            Err(TrackerError::TooLarge {
                limit: MAX_REPLY_BYTES
            })
        );
    }

    #[test]
    fn parses_scrape() {
        let mut stats = Bencode::dict();
        stats.insert("complete", Bencode::Int(5));
        stats.insert("downloaded", Bencode::Int(50));
        stats.insert("incomplete", Bencode::Int(10));
        let mut files = Bencode::dict();
        files.insert([7u8; 20], stats);
        files.insert(b"short", Bencode::dict());
        let body = reply(&[("files", files)]);
        let r = parse_scrape(&body).unwrap();
        assert_eq!(r.files.len(), 1);
        assert_eq!(
            r.files[&[7u8; 20]],
            ScrapeStats {
                complete: 5,
                downloaded: 50,
                incomplete: 10
            }
        );
        let err = parse_scrape(&reply(&[("files", Bencode::Int(1))])).unwrap_err();
        assert!(err.to_string().contains("`files`"), "{err}");
    }
}

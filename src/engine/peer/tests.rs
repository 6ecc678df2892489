//! The peer machine driven message by message, with no socket.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::*;
use crate::metainfo::FileEntry;
use crate::wire::fast::allowed_fast_set;
use crate::wire::metadata;
use crate::wire::parse_message;

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/// Pieces in the usual test torrent; the last one is short.
const N: u32 = 10;
const PIECE_LEN: u64 = 32 * 1024;
const LAST_LEN: u64 = 5_000;
/// The torrent's info-hash.
const ID: [u8; 20] = [0xaa; 20];
/// Its truncated v2 info-hash, when the fixture is a hybrid torrent ([`Fixture::v2`]).
const V2_ID: [u8; 20] = [0xbb; 20];
const OUR_ID: [u8; 20] = *b"-RS0100-ourpeerid000";
const THEIR_ID: [u8; 20] = *b"-XX0100-theirpeerid0";
/// The peer's address (BEP 6's own example address).
const ADDR: IpAddr = IpAddr::V4(Ipv4Addr::new(80, 4, 4, 200));
/// Metadata bytes: two BEP 9 pieces, so 4 × 2 + 4 = 12 answers per connection.
const INFO_LEN: usize = 20_000;
/// The id the peer wants `ut_metadata` messages under.
const THEIR_META_ID: u8 = 7;

/// What the machine reads of a torrent, owned.
struct Fixture {
    pieces: PieceTable,
    layout: FileLayout,
    info: Vec<u8>,
    private: bool,
    fetching: bool,
    /// A v2 torrent's merkle trees (`None`: v1).
    trees: Option<Trees>,
}

impl Fixture {
    /// `n` pieces of [`PIECE_LEN`], the last [`LAST_LEN`], with `verified` on disk.
    fn new(n: u32, verified: impl IntoIterator<Item = u32>) -> Fixture {
        let len = u64::from(n - 1) * PIECE_LEN + LAST_LEN;
        let layout =
            FileLayout::new(vec![FileEntry::for_test("f", len, false)], PIECE_LEN).unwrap();
        assert_eq!(layout.num_pieces, n);
        let pieces = PieceTable::new(n);
        for i in verified {
            pieces.verified.set(i);
        }
        Fixture {
            pieces,
            layout,
            info: (0..INFO_LEN).map(|i| i as u8).collect(),
            private: false,
            fetching: false,
            trees: None,
        }
    }

    fn seed() -> Fixture {
        Fixture::new(N, 0..N)
    }

    fn empty() -> Fixture {
        Fixture::new(N, [])
    }

    fn fetching(mut self) -> Fixture {
        self.fetching = true;
        self
    }

    /// A hybrid torrent: the usual file's piece layer (10 made-up hashes) and its tree.
    fn v2(mut self) -> Fixture {
        let layer: Vec<[u8; 32]> = (0..N)
            .map(|i| crate::hash::sha256(&i.to_be_bytes()))
            .collect();
        let root = crate::hash::root_from_piece_layer(&layer, PIECE_LEN);
        let layers = std::collections::HashMap::from([(root, layer)]);
        self.trees = Some(Trees::new(&layers, PIECE_LEN));
        self
    }

    fn private(mut self) -> Fixture {
        self.private = true;
        self
    }

    fn view(&self) -> TorrentView<'_> {
        TorrentView {
            id: ID,
            v2_id: self.trees.as_ref().map(|_| V2_ID),
            trees: self.trees.as_ref(),
            pieces: &self.pieces,
            layout: &self.layout,
            info: &self.info,
            private: self.private,
            fetching: self.fetching,
        }
    }

    fn availability(&self) -> Vec<u16> {
        (0..self.pieces.num_pieces())
            .map(|i| self.pieces.availability(i))
            .collect()
    }
}

fn rules() -> Rules {
    Rules {
        peer_id: OUR_ID,
        port: 6881,
        client_name: "ringseed-test".into(),
        max_request_len: 16 * 1024,
        max_reqq: 8,
        advertised_reqq: 8,
        max_send_backlog: 64 * 1024,
        allowed_fast: 3,
        pex: true,
        speed: true,
        handshake_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(120),
        keepalive_interval: Duration::from_secs(60),
        request_timeout: Duration::from_secs(20),
    }
}

/// The peer's handshake for our torrent, with only the reserved bits asked for.
fn their_handshake(fast: bool, ext: bool) -> Handshake {
    let mut hs = Handshake::new(ID, THEIR_ID);
    if !fast {
        hs.reserved[7] &= !0x04;
    }
    if !ext {
        hs.reserved[5] &= !0x10;
    }
    assert_eq!((hs.supports_fast(), hs.supports_extensions()), (fast, ext));
    hs
}

/// The allowed-fast set the machine computes for [`ADDR`] on the usual torrent.
fn af_set() -> Vec<u32> {
    let set = allowed_fast_set(ADDR, &ID, N, rules().allowed_fast);
    assert_eq!(set.len(), 3);
    set
}

/// A piece outside the allowed-fast set.
fn not_af() -> u32 {
    let set = af_set();
    (0..N).find(|i| !set.contains(i)).unwrap()
}

fn req(index: u32, begin: u32, length: u32) -> BlockRequest {
    BlockRequest {
        index,
        begin,
        length,
    }
}

/// Decodes everything in `out`; it must hold whole messages only.
fn msgs(out: &[u8]) -> Vec<Message<'_>> {
    let mut v = Vec::new();
    let mut rest = out;
    while !rest.is_empty() {
        let (m, used) = parse_message(rest, u32::MAX)
            .unwrap()
            .expect("out holds whole messages");
        v.push(m);
        rest = &rest[used..];
    }
    v
}

/// A BEP 10 handshake payload naming `m`.
fn ext_payload(m: &[(&str, u8)]) -> Vec<u8> {
    ExtHandshake {
        m: m.iter().map(|&(n, id)| (n.to_string(), id)).collect(),
        ..Default::default()
    }
    .encode()
}

fn meta_request(piece: u32) -> Vec<u8> {
    format!("d8:msg_typei0e5:piecei{piece}ee").into_bytes()
}

/// One connection past the handshake, with the time it started.
struct Conn {
    t: Fixture,
    rules: Rules,
    peer: Peer,
    t0: Instant,
    /// What the machine wrote: after [`Conn::open`] our handshake answers, after
    /// [`Conn::recv`] the answer to that message.
    out: Vec<u8>,
}

impl Conn {
    /// An incoming peer at [`ADDR`] that has just sent its handshake.
    fn open(t: Fixture, rules: Rules, fast: bool, ext: bool) -> Conn {
        Conn::open_from(t, rules, fast, ext, ADDR)
    }

    fn open_from(t: Fixture, rules: Rules, fast: bool, ext: bool, addr: IpAddr) -> Conn {
        let t0 = Instant::now();
        let mut peer = Peer::new(false, t0);
        let mut out = Vec::new();
        peer.on_handshake(
            &their_handshake(fast, ext),
            t.view(),
            &rules,
            addr,
            &mut out,
        )
        .unwrap();
        assert_eq!(peer.phase(), Phase::Active);
        assert_eq!(peer.fast(), fast);
        Conn {
            t,
            rules,
            peer,
            t0,
            out,
        }
    }

    /// One message from the peer; `out` then holds only the answer to it.
    fn recv<'m>(&mut self, msg: Message<'m>) -> Result<Action<'m>, Reason> {
        self.out.clear();
        self.peer
            .on_message(msg, self.t.view(), &self.rules, self.t0, &mut self.out)
    }

    fn sent(&self) -> Vec<Message<'_>> {
        msgs(&self.out)
    }

    fn unchoke(&mut self) {
        assert!(self.peer.unchoke(self.t0, &mut self.out));
        self.out.clear();
    }

    /// The peer's extension handshake naming `ut_metadata`.
    fn with_metadata(mut self) -> Conn {
        let p = ext_payload(&[(metadata::EXTENSION_NAME, THEIR_META_ID)]);
        assert_eq!(
            self.recv(Message::Extended { id: 0, payload: &p }),
            Ok(Action::ExtHandshake)
        );
        self
    }

    /// A `ut_metadata` message under our id for it.
    fn metadata<'m>(&mut self, payload: &'m [u8]) -> Result<Action<'m>, Reason> {
        self.recv(Message::Extended {
            id: metadata::LOCAL_ID,
            payload,
        })
    }
}

/// A seeding connection with the usual rules.
fn active_peer(fast: bool, ext: bool) -> Conn {
    Conn::open(Fixture::seed(), rules(), fast, ext)
}

/// A connection where we have every piece but one of the allowed-fast set.
fn partial_peer(fast: bool) -> Conn {
    let missing = af_set()[1];
    Conn::open(
        Fixture::new(N, (0..N).filter(|&i| i != missing)),
        rules(),
        fast,
        false,
    )
}

// ---------------------------------------------------------------------------------------------
// Handshake phase
// ---------------------------------------------------------------------------------------------

#[test]
fn a_fresh_incoming_peer_waits_for_the_handshake() {
    let p = Peer::new(false, Instant::now());
    assert_eq!(p.phase(), Phase::Handshake);
    assert!(!p.outgoing());
    assert!(p.am_choking());
    assert!(p.peer_choking());
    assert!(!p.am_interested());
    assert!(!p.peer_interested());
}

#[test]
fn an_outgoing_peer_sends_our_handshake_once_connected() {
    let mut p = Peer::new(true, Instant::now());
    assert_eq!(p.phase(), Phase::Connecting);
    assert!(p.outgoing());
    let mut out = Vec::new();
    p.connected(ID, false, &rules(), &mut out);
    assert_eq!(p.phase(), Phase::Handshake);
    assert_eq!(out, Handshake::new(ID, OUR_ID).encode());
    // A second completion writes nothing.
    p.connected(ID, false, &rules(), &mut out);
    assert_eq!(out.len(), Handshake::LEN);
}

#[test]
fn a_handshake_before_the_connect_completes_is_bad_handshake() {
    let t = Fixture::seed();
    let mut p = Peer::new(true, Instant::now());
    let mut out = Vec::new();
    let r = p.on_handshake(
        &their_handshake(true, true),
        t.view(),
        &rules(),
        ADDR,
        &mut out,
    );
    assert_eq!(r, Err(Reason::BadHandshake));
    assert!(out.is_empty());
}

#[test]
fn a_second_handshake_is_bad_handshake() {
    let mut c = active_peer(true, true);
    c.out.clear();
    let r = c.peer.on_handshake(
        &their_handshake(true, true),
        c.t.view(),
        &c.rules,
        ADDR,
        &mut c.out,
    );
    assert_eq!(r, Err(Reason::BadHandshake));
    assert!(c.out.is_empty());
}

#[test]
fn a_handshake_for_another_info_hash_is_unknown_torrent() {
    let t = Fixture::seed();
    let mut p = Peer::new(false, Instant::now());
    let mut out = Vec::new();
    let hs = Handshake::new([0xbb; 20], THEIR_ID);
    let r = p.on_handshake(&hs, t.view(), &rules(), ADDR, &mut out);
    assert_eq!(r, Err(Reason::UnknownTorrent));
    assert_eq!(p.phase(), Phase::Handshake);
    assert!(out.is_empty());
}

#[test]
fn our_own_peer_id_is_self_connection() {
    let t = Fixture::seed();
    let mut p = Peer::new(false, Instant::now());
    let mut out = Vec::new();
    let hs = Handshake::new(ID, OUR_ID);
    let r = p.on_handshake(&hs, t.view(), &rules(), ADDR, &mut out);
    assert_eq!(r, Err(Reason::SelfConnection));
    assert_eq!(p.phase(), Phase::Handshake);
    assert!(out.is_empty());
}

#[test]
fn a_message_before_the_handshake_is_bad_message() {
    let t = Fixture::seed();
    let now = Instant::now();
    let mut out = Vec::new();
    for outgoing in [false, true] {
        let mut p = Peer::new(outgoing, now);
        let r = p.on_message(Message::KeepAlive, t.view(), &rules(), now, &mut out);
        assert_eq!(r, Err(Reason::BadMessage));
    }
    assert!(out.is_empty());
}

#[test]
fn a_fast_peer_of_a_seed_gets_have_all_and_the_whole_allowed_fast_set() {
    let c = active_peer(true, false);
    let mut want = vec![Message::HaveAll];
    want.extend(af_set().into_iter().map(Message::AllowedFast));
    assert_eq!(c.sent(), want);
}

#[test]
fn a_fast_peer_of_an_empty_torrent_gets_have_none_and_no_allowed_fast() {
    let c = Conn::open(Fixture::empty(), rules(), true, false);
    assert_eq!(c.sent(), vec![Message::HaveNone]);
}

#[test]
fn a_fast_peer_of_a_partial_torrent_gets_a_bitfield_and_allowed_fast_for_verified_pieces() {
    let c = Conn::open(Fixture::new(N, [0, 9]), rules(), true, false);
    let verified_af: Vec<_> = af_set()
        .into_iter()
        .filter(|i| [0, 9].contains(i))
        .map(Message::AllowedFast)
        .collect();
    let mut want = vec![Message::Bitfield(&[0b1000_0000, 0b0100_0000])];
    want.extend(verified_af);
    assert_eq!(c.sent(), want);

    // With one allowed-fast piece missing, exactly the other two are offered.
    let c = partial_peer(true);
    let set = af_set();
    let sent = c.sent();
    assert_eq!(
        sent[1..],
        [Message::AllowedFast(set[0]), Message::AllowedFast(set[2])]
    );
}

#[test]
fn a_non_fast_peer_gets_a_bitfield_even_from_a_seed_or_an_empty_torrent() {
    let c = active_peer(false, false);
    // 10 pieces: the six spare bits of the second byte stay clear.
    assert_eq!(c.out, [0, 0, 0, 3, 5, 0xff, 0xc0]);
    let c = Conn::open(Fixture::empty(), rules(), false, false);
    assert_eq!(c.sent(), vec![Message::Bitfield(&[0, 0])]);
}

#[test]
fn no_allowed_fast_pieces_are_given_when_the_setting_is_zero() {
    let mut r = rules();
    r.allowed_fast = 0;
    let mut c = Conn::open(Fixture::seed(), r, true, false);
    assert_eq!(c.sent(), vec![Message::HaveAll]);
    // And none is served while choked.
    let i = af_set()[0];
    assert_eq!(
        c.recv(Message::Request(req(i, 0, 16384))),
        Ok(Action::Refused { told: true })
    );
}

#[test]
fn an_ipv6_peer_gets_no_allowed_fast_set() {
    let v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
    let c = Conn::open_from(Fixture::seed(), rules(), true, false, v6);
    assert_eq!(c.sent(), vec![Message::HaveAll]);
}

#[test]
fn a_v4_mapped_peer_gets_the_allowed_fast_set_of_its_ipv4_address() {
    let IpAddr::V4(v4) = ADDR else { unreachable!() };
    let mapped = IpAddr::V6(v4.to_ipv6_mapped());
    let c = Conn::open_from(Fixture::seed(), rules(), true, false, mapped);
    let mut want = vec![Message::HaveAll];
    want.extend(af_set().into_iter().map(Message::AllowedFast));
    assert_eq!(c.sent(), want);
}

// ---------------------------------------------------------------------------------------------
// Our extension handshake (BEP 10)
// ---------------------------------------------------------------------------------------------

/// Our extension handshake, which must come first in `out`, parsed back.
fn our_ext(c: &Conn) -> ExtHandshake {
    let sent = c.sent();
    let Message::Extended { id: 0, payload } = sent[0] else {
        panic!("first message is {:?}", sent[0]);
    };
    let mut e = ExtHandshake::parse(payload).unwrap();
    e.m.sort();
    e
}

#[test]
fn a_peer_without_extensions_gets_no_extension_handshake() {
    let c = active_peer(true, false);
    assert!(
        !c.sent()
            .iter()
            .any(|m| matches!(m, Message::Extended { .. }))
    );
}

#[test]
fn a_public_seed_offers_metadata_pex_and_speed() {
    let c = active_peer(true, true);
    let want = ExtHandshake {
        m: vec![
            ("rs_speed".into(), crate::speed::peer::LOCAL_ID),
            ("ut_metadata".into(), metadata::LOCAL_ID),
            ("ut_pex".into(), crate::wire::pex::LOCAL_ID),
        ],
        v: Some("ringseed-test".into()),
        reqq: Some(8),
        yourip: Some(ADDR),
        p: Some(6881),
        metadata_size: Some(INFO_LEN as u64),
        upload_only: true,
    };
    assert_eq!(our_ext(&c), want);
    // Then the pieces, as without extensions.
    assert_eq!(c.sent()[1], Message::HaveAll);
    assert_eq!(c.sent().len(), 1 + 1 + 3);
}

#[test]
fn the_handshake_is_sent_again_with_the_reqq_advertised_now() {
    let mut c = active_peer(true, true);
    c.out.clear();
    c.rules.advertised_reqq = 2;
    assert!(c.peer.readvertise(c.t.view(), &c.rules, ADDR, &mut c.out));
    let again = our_ext(&c);
    assert_eq!(again.reqq, Some(2));
    assert_eq!(c.sent().len(), 1, "only the handshake, no bitfield again");
    // The same offer otherwise.
    assert_eq!(again.m.len(), 3);
    assert_eq!(again.metadata_size, Some(INFO_LEN as u64));
    // A peer without BEP 10 hears nothing.
    let mut plain = active_peer(true, false);
    plain.out.clear();
    assert!(
        !plain
            .peer
            .readvertise(plain.t.view(), &plain.rules, ADDR, &mut plain.out)
    );
    assert!(plain.out.is_empty());
}

#[test]
fn a_private_torrent_offers_neither_metadata_nor_pex() {
    let c = Conn::open(Fixture::seed().private(), rules(), true, true);
    let e = our_ext(&c);
    assert_eq!(
        e.m,
        vec![("rs_speed".to_string(), crate::speed::peer::LOCAL_ID)]
    );
    assert_eq!(e.metadata_size, None);
    assert!(e.upload_only);
}

#[test]
fn without_pex_speed_or_port_only_metadata_is_offered_and_no_port_told() {
    let mut r = rules();
    r.pex = false;
    r.speed = false;
    r.port = 0;
    let c = Conn::open(Fixture::new(N, [3]), r, true, true);
    let e = our_ext(&c);
    assert_eq!(e.m, vec![("ut_metadata".to_string(), metadata::LOCAL_ID)]);
    assert_eq!(e.p, None);
    assert_eq!(e.reqq, Some(8));
    assert!(!e.upload_only, "a partial torrent is not upload-only");
}

#[test]
fn a_v4_mapped_peer_is_told_its_four_byte_address() {
    let IpAddr::V4(v4) = ADDR else { unreachable!() };
    let mapped = IpAddr::V6(v4.to_ipv6_mapped());
    let c = Conn::open_from(Fixture::seed(), rules(), false, true, mapped);
    let sent = c.sent();
    let Message::Extended { id: 0, payload } = sent[0] else {
        panic!("first message is {:?}", sent[0]);
    };
    // `yourip` as a 4-byte string, not the 16-byte mapped form.
    let needle = [b"6:yourip4:".as_slice(), &v4.octets()].concat();
    assert!(payload.windows(needle.len()).any(|w| w == needle));
    assert_eq!(ExtHandshake::parse(payload).unwrap().yourip, Some(ADDR));
}

// ---------------------------------------------------------------------------------------------
// Messages with no answer
// ---------------------------------------------------------------------------------------------

#[test]
fn keep_alive_port_and_unknown_messages_change_nothing() {
    let mut c = active_peer(true, true);
    for msg in [
        Message::KeepAlive,
        Message::Port(6881),
        Message::Unknown {
            id: 99,
            payload: b"xyz",
        },
    ] {
        assert_eq!(c.recv(msg), Ok(Action::Nothing));
        assert!(c.out.is_empty());
    }
    assert!(c.peer.peer_choking());
    assert!(!c.peer.peer_interested());
    assert_eq!(c.peer.peer_has_count(), 0);
}

#[test]
fn choke_and_unchoke_track_whether_the_peer_chokes_us() {
    let mut c = active_peer(false, false);
    assert!(c.peer.peer_choking());
    assert_eq!(c.recv(Message::Unchoke), Ok(Action::MayRequest));
    assert!(!c.peer.peer_choking());
    assert_eq!(c.recv(Message::Choke), Ok(Action::Nothing));
    assert!(c.peer.peer_choking());
    assert!(c.out.is_empty());
}

#[test]
fn interest_while_choked_wants_a_slot() {
    let mut c = active_peer(false, false);
    assert_eq!(c.recv(Message::Interested), Ok(Action::WantsSlot));
    assert!(c.peer.peer_interested());
    assert!(c.out.is_empty());
}

#[test]
fn interest_while_unchoked_needs_nothing() {
    let mut c = active_peer(false, false);
    c.unchoke();
    assert_eq!(c.recv(Message::Interested), Ok(Action::Nothing));
    assert!(c.peer.peer_interested());
}

#[test]
fn losing_interest_while_unchoked_leaves_the_slot() {
    let mut c = active_peer(false, false);
    c.recv(Message::Interested).unwrap();
    c.unchoke();
    assert_eq!(c.recv(Message::NotInterested), Ok(Action::LeavesSlot));
    assert!(!c.peer.peer_interested());
}

#[test]
fn losing_interest_while_choked_needs_nothing() {
    let mut c = active_peer(false, false);
    c.recv(Message::Interested).unwrap();
    assert_eq!(c.recv(Message::NotInterested), Ok(Action::Nothing));
    assert!(!c.peer.peer_interested());
}

#[test]
fn an_unrequested_piece_is_unrequested_block() {
    let mut c = Conn::open(Fixture::empty(), rules(), true, true);
    let r = c.recv(Message::Piece {
        index: 0,
        begin: 0,
        data: &[1, 2, 3],
    });
    assert_eq!(r, Err(Reason::UnrequestedBlock));
}

// ---------------------------------------------------------------------------------------------
// The peer's pieces and availability
// ---------------------------------------------------------------------------------------------

#[test]
fn have_records_the_piece_and_counts_it_once() {
    let mut c = Conn::open(Fixture::empty(), rules(), false, false);
    assert_eq!(c.recv(Message::Have(3)), Ok(Action::Nothing));
    assert_eq!(c.recv(Message::Have(3)), Ok(Action::Nothing));
    assert_eq!(c.recv(Message::Have(9)), Ok(Action::Nothing));
    assert!(c.peer.peer_has(3) && c.peer.peer_has(9));
    assert!(!c.peer.peer_has(4));
    assert_eq!(c.peer.peer_has_count(), 2);
    assert_eq!(c.t.availability(), [0, 0, 0, 1, 0, 0, 0, 0, 0, 1]);
    assert!(c.out.is_empty());
}

#[test]
fn have_past_the_last_piece_is_bad_message() {
    let mut c = Conn::open(Fixture::empty(), rules(), false, false);
    assert_eq!(c.recv(Message::Have(N)), Err(Reason::BadMessage));
    assert_eq!(c.peer.peer_has_count(), 0);
}

#[test]
fn a_bitfield_records_the_peers_pieces() {
    let mut c = Conn::open(Fixture::empty(), rules(), false, false);
    assert_eq!(
        c.recv(Message::Bitfield(&[0b1010_0000, 0b0100_0000])),
        Ok(Action::Nothing)
    );
    assert_eq!(c.peer.peer_has_count(), 3);
    assert!(c.peer.peer_has(0) && c.peer.peer_has(2) && c.peer.peer_has(9));
    assert!(!c.peer.peer_has(1) && !c.peer.peer_has(8));
    assert_eq!(c.t.availability(), [1, 0, 1, 0, 0, 0, 0, 0, 0, 1]);
}

#[test]
fn a_bitfield_of_the_wrong_length_is_bad_message() {
    let mut c = Conn::open(Fixture::empty(), rules(), false, false);
    assert_eq!(c.recv(Message::Bitfield(&[0xff])), Err(Reason::BadMessage));
    assert_eq!(
        c.recv(Message::Bitfield(&[0, 0, 0])),
        Err(Reason::BadMessage)
    );
    assert_eq!(c.peer.peer_has_count(), 0);
    assert_eq!(c.t.availability(), [0; N as usize]);
}

#[test]
fn a_bitfield_with_spare_bits_set_is_bad_message() {
    let mut c = Conn::open(Fixture::empty(), rules(), false, false);
    // Piece 9 is bit 0x40 of the second byte; 0x20 is past the end.
    assert_eq!(
        c.recv(Message::Bitfield(&[0, 0b0010_0000])),
        Err(Reason::BadMessage)
    );
    assert_eq!(c.recv(Message::Bitfield(&[0, 1])), Err(Reason::BadMessage));
    assert_eq!(c.t.availability(), [0; N as usize]);
}

#[test]
fn a_second_bitfield_replaces_the_first_without_double_counting() {
    let mut c = Conn::open(Fixture::empty(), rules(), false, false);
    c.recv(Message::Bitfield(&[0b1100_0000, 0])).unwrap();
    c.recv(Message::Have(5)).unwrap();
    c.recv(Message::Bitfield(&[0b0110_0000, 0])).unwrap();
    assert_eq!(c.peer.peer_has_count(), 2);
    assert!(!c.peer.peer_has(0) && !c.peer.peer_has(5));
    assert_eq!(c.t.availability(), [0, 1, 1, 0, 0, 0, 0, 0, 0, 0]);
}

#[test]
fn forget_pieces_gives_back_all_availability() {
    let mut c = Conn::open(Fixture::empty(), rules(), false, false);
    c.recv(Message::Bitfield(&[0b1000_0001, 0])).unwrap();
    c.recv(Message::Have(9)).unwrap();
    assert_eq!(c.t.availability(), [1, 0, 0, 0, 0, 0, 0, 1, 0, 1]);
    c.peer.forget_pieces(&c.t.pieces);
    assert_eq!(c.t.availability(), [0; N as usize]);
    assert_eq!(c.peer.peer_has_count(), 0);
    assert!(!c.peer.peer_has(0));
    // Twice is harmless: nothing is given back again.
    c.peer.forget_pieces(&c.t.pieces);
    assert_eq!(c.t.availability(), [0; N as usize]);
}

#[test]
fn availability_sums_over_peers() {
    let t = Fixture::empty();
    let now = Instant::now();
    let mut out = Vec::new();
    let mut peers: Vec<Peer> = (0..2)
        .map(|_| {
            let mut p = Peer::new(false, now);
            p.on_handshake(
                &their_handshake(false, false),
                t.view(),
                &rules(),
                ADDR,
                &mut out,
            )
            .unwrap();
            p
        })
        .collect();
    for (p, bits) in peers.iter_mut().zip([[0xc0, 0], [0x80, 0x40]]) {
        p.on_message(Message::Bitfield(&bits), t.view(), &rules(), now, &mut out)
            .unwrap();
    }
    assert_eq!(t.availability(), [2, 1, 0, 0, 0, 0, 0, 0, 0, 1]);
    peers[0].forget_pieces(&t.pieces);
    assert_eq!(t.availability(), [1, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
}

#[test]
fn have_all_gives_the_peer_every_piece() {
    let mut c = Conn::open(Fixture::new(N, [0]), rules(), true, false);
    c.recv(Message::Have(4)).unwrap();
    assert_eq!(c.recv(Message::HaveAll), Ok(Action::Nothing));
    assert_eq!(c.peer.peer_has_count(), N);
    assert!((0..N).all(|i| c.peer.peer_has(i)));
    assert!(!c.peer.peer_has(N));
    assert_eq!(c.t.availability(), [1; N as usize]);
    c.peer.forget_pieces(&c.t.pieces);
    assert_eq!(c.t.availability(), [0; N as usize]);
}

#[test]
fn a_peer_complete_by_bitfield_or_haves_counts_as_complete() {
    let mut c = Conn::open(Fixture::empty(), rules(), false, false);
    c.recv(Message::Bitfield(&[0xff, 0b1000_0000])).unwrap();
    assert_eq!(c.t.pieces.complete_peers(), 0, "piece 9 missing");
    c.recv(Message::Have(9)).unwrap();
    c.recv(Message::Have(9)).unwrap();
    assert_eq!(
        c.t.pieces.complete_peers(),
        1,
        "its haves completed it, once"
    );
    c.recv(Message::Bitfield(&[0xff, 0b1000_0000])).unwrap();
    assert_eq!(c.t.pieces.complete_peers(), 0, "a new bitfield replaces it");
    c.recv(Message::Bitfield(&[0xff, 0b1100_0000])).unwrap();
    assert_eq!(c.t.pieces.complete_peers(), 1, "a complete bitfield");
    c.peer.forget_pieces(&c.t.pieces);
    assert_eq!(c.t.pieces.complete_peers(), 0, "gone with the connection");
    let mut c = Conn::open(Fixture::empty(), rules(), true, false);
    c.recv(Message::HaveAll).unwrap();
    assert_eq!(c.t.pieces.complete_peers(), 1, "have_all");
    c.peer.forget_pieces(&c.t.pieces);
    assert_eq!(c.t.pieces.complete_peers(), 0);
}

#[test]
fn have_none_forgets_the_peers_pieces() {
    let mut c = Conn::open(Fixture::empty(), rules(), true, false);
    c.recv(Message::Bitfield(&[0xff, 0])).unwrap();
    assert_eq!(c.recv(Message::HaveNone), Ok(Action::Nothing));
    assert_eq!(c.peer.peer_has_count(), 0);
    assert!(!c.peer.peer_has(0));
    assert_eq!(c.t.availability(), [0; N as usize]);
}

#[test]
fn fast_messages_from_a_peer_without_the_fast_extension_are_bad_message() {
    let r = req(0, 0, 16384);
    for msg in [
        Message::HaveAll,
        Message::HaveNone,
        Message::Suggest(0),
        Message::Reject(r),
        Message::AllowedFast(0),
    ] {
        let mut c = Conn::open(Fixture::empty(), rules(), false, true);
        assert_eq!(c.recv(msg.clone()), Err(Reason::BadMessage), "{msg:?}");
        assert_eq!(c.t.availability(), [0; N as usize]);
    }
}

#[test]
fn suggest_from_a_fast_peer_is_accepted_silently_a_reject_of_nothing_asked_closes() {
    let mut c = Conn::open(Fixture::empty(), rules(), true, false);
    assert_eq!(c.recv(Message::Suggest(2)), Ok(Action::Nothing));
    assert_eq!(
        c.recv(Message::Reject(req(2, 0, 16384))),
        Err(Reason::UnrequestedBlock)
    );
    assert!(c.out.is_empty());
}

#[test]
fn allowed_fast_from_the_peer_is_kept_once_in_range_and_bounded() {
    let n = 100;
    let mut c = Conn::open(Fixture::new(n, []), rules(), true, false);
    assert_eq!(c.recv(Message::AllowedFast(7)), Ok(Action::MayRequest));
    c.recv(Message::AllowedFast(7)).unwrap();
    c.recv(Message::AllowedFast(n)).unwrap();
    assert_eq!(c.peer.allowed_fast_in(), [7]);
    for i in 0..n {
        c.recv(Message::AllowedFast(i)).unwrap();
    }
    let mut want = vec![7];
    want.extend((0..n).filter(|&i| i != 7).take(MAX_ALLOWED_FAST_IN - 1));
    assert_eq!(c.peer.allowed_fast_in(), want);
    assert_eq!(want.len(), 64);
}

#[test]
fn seed_meets_seed_by_have() {
    let mut c = active_peer(false, false);
    for i in 0..N - 1 {
        assert_eq!(c.recv(Message::Have(i)), Ok(Action::Nothing));
    }
    assert_eq!(c.recv(Message::Have(N - 1)), Err(Reason::BothSeeds));
}

#[test]
fn seed_meets_seed_by_bitfield() {
    let mut c = active_peer(false, false);
    assert_eq!(
        c.recv(Message::Bitfield(&[0xff, 0xc0])),
        Err(Reason::BothSeeds)
    );
}

#[test]
fn seed_meets_seed_by_have_all() {
    let mut c = active_peer(true, false);
    assert_eq!(c.recv(Message::HaveAll), Err(Reason::BothSeeds));
}

#[test]
fn a_seed_peer_is_welcome_while_we_are_not_a_seed() {
    let mut c = Conn::open(Fixture::new(N, [1]), rules(), false, false);
    assert_eq!(
        c.recv(Message::Bitfield(&[0xff, 0xc0])),
        Ok(Action::Nothing)
    );
    assert_eq!(c.peer.peer_has_count(), N);
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

#[test]
fn a_request_while_unchoked_is_queued() {
    let mut c = active_peer(false, false);
    c.unchoke();
    let r = req(2, 16384, 16384);
    assert_eq!(c.recv(Message::Request(r)), Ok(Action::Queued));
    assert_eq!(
        c.peer.requests().iter().copied().collect::<Vec<_>>(),
        [Queued { req: r, at: c.t0 }]
    );
    assert!(c.out.is_empty());
}

#[test]
fn a_request_of_length_zero_is_invalid() {
    let mut c = active_peer(true, false);
    c.unchoke();
    assert_eq!(
        c.recv(Message::Request(req(0, 0, 0))),
        Err(Reason::InvalidRequest)
    );
}

#[test]
fn a_request_longer_than_max_request_len_is_invalid() {
    let mut c = active_peer(true, false);
    c.unchoke();
    assert_eq!(
        c.recv(Message::Request(req(0, 0, 16384))),
        Ok(Action::Queued)
    );
    assert_eq!(
        c.recv(Message::Request(req(0, 0, 16385))),
        Err(Reason::InvalidRequest)
    );
}

#[test]
fn a_request_past_the_last_piece_is_invalid() {
    let mut c = active_peer(true, false);
    c.unchoke();
    assert_eq!(
        c.recv(Message::Request(req(N, 0, 16))),
        Err(Reason::InvalidRequest)
    );
}

#[test]
fn a_request_past_the_end_of_a_piece_is_invalid() {
    let mut c = active_peer(true, false);
    c.unchoke();
    // A full piece: its second block ends exactly at the piece end.
    let full = PIECE_LEN as u32;
    assert_eq!(
        c.recv(Message::Request(req(0, full - 16384, 16384))),
        Ok(Action::Queued)
    );
    assert_eq!(
        c.recv(Message::Request(req(0, full - 16383, 16384))),
        Err(Reason::InvalidRequest)
    );
}

#[test]
fn a_request_past_the_end_of_the_short_last_piece_is_invalid() {
    let mut c = active_peer(true, false);
    c.unchoke();
    let last = LAST_LEN as u32;
    assert_eq!(
        c.recv(Message::Request(req(N - 1, 0, last))),
        Ok(Action::Queued)
    );
    assert_eq!(
        c.recv(Message::Request(req(N - 1, 1000, last - 1000))),
        Ok(Action::Queued)
    );
    assert_eq!(
        c.recv(Message::Request(req(N - 1, 0, last + 1))),
        Err(Reason::InvalidRequest)
    );
    assert_eq!(
        c.recv(Message::Request(req(N - 1, last, 1))),
        Err(Reason::InvalidRequest)
    );
}

#[test]
fn a_request_while_choked_from_a_non_fast_peer_is_dropped_silently() {
    let mut c = active_peer(false, false);
    assert_eq!(
        c.recv(Message::Request(req(0, 0, 16384))),
        Ok(Action::Refused { told: false })
    );
    assert!(c.out.is_empty());
    assert!(c.peer.requests().is_empty());
}

#[test]
fn a_request_while_choked_from_a_fast_peer_is_rejected() {
    let mut c = active_peer(true, false);
    let r = req(not_af(), 0, 16384);
    assert_eq!(
        c.recv(Message::Request(r)),
        Ok(Action::Refused { told: true })
    );
    assert_eq!(c.sent(), vec![Message::Reject(r)]);
    assert!(c.peer.requests().is_empty());
}

#[test]
fn an_allowed_fast_piece_is_served_while_choked() {
    let mut c = active_peer(true, false);
    assert!(c.peer.am_choking());
    for i in af_set() {
        let r = req(i, 0, 16384.min(c.t.layout.piece_size(i) as u32));
        assert_eq!(c.recv(Message::Request(r)), Ok(Action::Queued), "{i}");
        assert!(c.out.is_empty());
    }
    assert_eq!(c.peer.requests().len(), 3);
}

#[test]
fn an_allowed_fast_piece_we_lack_is_rejected_while_choked() {
    let mut c = partial_peer(true);
    let r = req(af_set()[1], 0, 100);
    assert_eq!(
        c.recv(Message::Request(r)),
        Ok(Action::Refused { told: true })
    );
    assert_eq!(c.sent(), vec![Message::Reject(r)]);
}

#[test]
fn a_request_for_a_piece_we_lack_is_rejected_for_a_fast_peer() {
    let mut c = partial_peer(true);
    c.unchoke();
    let r = req(af_set()[1], 0, 100);
    assert_eq!(
        c.recv(Message::Request(r)),
        Ok(Action::Refused { told: true })
    );
    assert_eq!(c.sent(), vec![Message::Reject(r)]);
    assert!(c.peer.requests().is_empty());
}

#[test]
fn a_request_for_a_piece_we_lack_is_dropped_for_a_non_fast_peer() {
    let mut c = partial_peer(false);
    c.unchoke();
    let r = req(af_set()[1], 0, 100);
    assert_eq!(
        c.recv(Message::Request(r)),
        Ok(Action::Refused { told: false })
    );
    assert!(c.out.is_empty());
}

#[test]
fn a_request_over_a_full_queue_is_rejected() {
    let mut c = active_peer(true, false);
    c.unchoke();
    for k in 0..8 {
        assert_eq!(
            c.recv(Message::Request(req(0, k * 16, 16))),
            Ok(Action::Queued)
        );
    }
    let r = req(1, 0, 16);
    assert_eq!(
        c.recv(Message::Request(r)),
        Ok(Action::Refused { told: true })
    );
    assert_eq!(c.sent(), vec![Message::Reject(r)]);
    assert_eq!(c.peer.requests().len(), 8);
}

/// Fills the queue of an unchoked peer to `max_reqq` (8).
fn fill_queue(c: &mut Conn) {
    while c.peer.requests().len() < c.rules.max_reqq {
        let k = c.peer.requests().len() as u32;
        assert_eq!(
            c.recv(Message::Request(req(0, k * 16, 16))),
            Ok(Action::Queued)
        );
    }
}

#[test]
fn requesting_past_the_queue_again_and_again_is_a_flood() {
    let mut c = active_peer(false, false);
    c.unchoke();
    fill_queue(&mut c);
    // max(reqq / 2, 16) = 16 overflows are tolerated, the 17th is not.
    for _ in 0..16 {
        assert_eq!(
            c.recv(Message::Request(req(1, 0, 16))),
            Ok(Action::Refused { told: false })
        );
    }
    assert_eq!(
        c.recv(Message::Request(req(1, 0, 16))),
        Err(Reason::RequestFlood)
    );
}

#[test]
fn the_overflow_count_restarts_once_the_queue_drains_below_half() {
    let mut c = active_peer(false, false);
    c.unchoke();
    fill_queue(&mut c);
    for _ in 0..16 {
        c.recv(Message::Request(req(1, 0, 16))).unwrap();
    }
    assert_eq!(c.peer.take_requests(8).count(), 8);
    fill_queue(&mut c);
    for _ in 0..16 {
        assert_eq!(
            c.recv(Message::Request(req(1, 0, 16))),
            Ok(Action::Refused { told: false })
        );
    }
    assert_eq!(
        c.recv(Message::Request(req(1, 0, 16))),
        Err(Reason::RequestFlood)
    );
}

#[test]
fn requesting_while_choked_again_and_again_is_a_flood() {
    let mut c = active_peer(false, false);
    let piece = not_af();
    // 4 × reqq + 1000 = 1032 refusals are tolerated over the connection.
    for k in 0..1032 {
        assert_eq!(
            c.recv(Message::Request(req(piece, 0, 16))),
            Ok(Action::Refused { told: false }),
            "{k}"
        );
    }
    assert_eq!(
        c.recv(Message::Request(req(piece, 0, 16))),
        Err(Reason::RequestFlood)
    );
}

#[test]
fn answers_past_the_send_backlog_close_the_connection() {
    let mut r = rules();
    // Two 17-byte rejects fit, a third does not.
    r.max_send_backlog = 40;
    let mut c = Conn::open(Fixture::seed(), r, true, false);
    c.out.clear();
    let rq = Message::Request(req(not_af(), 0, 16));
    for _ in 0..2 {
        let a = c
            .peer
            .on_message(rq.clone(), c.t.view(), &c.rules, c.t0, &mut c.out);
        assert_eq!(a, Ok(Action::Refused { told: true }));
    }
    assert_eq!(c.out.len(), 34);
    let a = c
        .peer
        .on_message(rq, c.t.view(), &c.rules, c.t0, &mut c.out);
    assert_eq!(a, Err(Reason::SendBacklog));
}

#[test]
fn cancel_removes_the_request_and_a_fast_peer_gets_a_reject() {
    let mut c = active_peer(true, false);
    c.unchoke();
    let (a, b) = (req(0, 0, 16), req(0, 16, 16));
    c.recv(Message::Request(a)).unwrap();
    c.recv(Message::Request(b)).unwrap();
    assert_eq!(c.recv(Message::Cancel(a)), Ok(Action::Nothing));
    assert_eq!(c.sent(), vec![Message::Reject(a)]);
    assert_eq!(
        c.peer.requests().iter().map(|q| q.req).collect::<Vec<_>>(),
        [b]
    );
}

#[test]
fn cancel_from_a_non_fast_peer_removes_the_request_silently() {
    let mut c = active_peer(false, false);
    c.unchoke();
    let a = req(0, 0, 16);
    c.recv(Message::Request(a)).unwrap();
    assert_eq!(c.recv(Message::Cancel(a)), Ok(Action::Nothing));
    assert!(c.out.is_empty());
    assert!(c.peer.requests().is_empty());
}

#[test]
fn cancel_of_a_request_not_queued_gets_no_reject() {
    let mut c = active_peer(true, false);
    c.unchoke();
    let a = req(0, 0, 16);
    c.recv(Message::Request(a)).unwrap();
    // Already taken for upload: the block itself answers the cancel.
    assert_eq!(c.peer.take_requests(1).count(), 1);
    assert_eq!(c.recv(Message::Cancel(a)), Ok(Action::Nothing));
    assert!(c.out.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Choking, upload accounting
// ---------------------------------------------------------------------------------------------

#[test]
fn choke_rejects_queued_requests_except_allowed_fast_ones_for_a_fast_peer() {
    let mut c = active_peer(true, false);
    c.unchoke();
    let af = af_set()[0];
    let other = not_af();
    let (x, y, z) = (req(other, 0, 16), req(af, 0, 16), req(other, 16, 16));
    for r in [x, y, z] {
        c.recv(Message::Request(r)).unwrap();
    }
    c.out.clear();
    let later = c.t0 + Duration::from_secs(5);
    assert!(c.peer.choke(later, &mut c.out));
    assert!(c.peer.am_choking());
    assert_eq!(c.peer.choke_changed(), later);
    assert_eq!(
        c.sent(),
        vec![Message::Choke, Message::Reject(x), Message::Reject(z)]
    );
    assert_eq!(
        c.peer.requests().iter().map(|q| q.req).collect::<Vec<_>>(),
        [y]
    );
}

#[test]
fn choke_drops_every_queued_request_of_a_non_fast_peer_silently() {
    let mut c = active_peer(false, false);
    c.unchoke();
    c.recv(Message::Request(req(0, 0, 16))).unwrap();
    c.recv(Message::Request(req(1, 0, 16))).unwrap();
    assert!(c.peer.choke(c.t0, &mut c.out));
    assert_eq!(c.sent(), vec![Message::Choke]);
    assert!(c.peer.requests().is_empty());
}

#[test]
fn choke_and_unchoke_report_whether_anything_changed() {
    let mut c = active_peer(true, false);
    c.out.clear();
    let t1 = c.t0 + Duration::from_secs(1);
    assert!(!c.peer.choke(t1, &mut c.out), "choked from the start");
    assert!(c.out.is_empty());
    assert_eq!(c.peer.choke_changed(), c.t0);

    assert!(c.peer.unchoke(t1, &mut c.out));
    assert!(!c.peer.am_choking());
    assert_eq!(c.peer.choke_changed(), t1);
    assert_eq!(c.out, [0, 0, 0, 1, 1]);
    c.out.clear();
    assert!(!c.peer.unchoke(c.t0 + Duration::from_secs(2), &mut c.out));
    assert!(c.out.is_empty());
    assert_eq!(c.peer.choke_changed(), t1);
}

#[test]
fn served_counts_all_totals_and_unchoke_resets_the_one_since_unchoke() {
    let mut c = active_peer(false, false);
    c.unchoke();
    c.peer.served(1000);
    c.peer.served(500);
    assert_eq!(
        (
            c.peer.uploaded,
            c.peer.uploaded_since_unchoke,
            c.peer.uploaded_this_round
        ),
        (1500, 1500, 1500)
    );
    c.peer.choke(c.t0, &mut c.out);
    assert_eq!(c.peer.uploaded_since_unchoke, 1500, "choke keeps it");
    c.unchoke();
    assert_eq!(
        (
            c.peer.uploaded,
            c.peer.uploaded_since_unchoke,
            c.peer.uploaded_this_round
        ),
        (1500, 0, 1500)
    );
    c.peer.served(10);
    assert_eq!(c.peer.uploaded_since_unchoke, 10);
}

#[test]
fn take_requests_takes_the_oldest_first_and_no_more_than_queued() {
    let mut c = active_peer(false, false);
    c.unchoke();
    let rs: Vec<_> = (0..4).map(|k| req(k, 0, 16)).collect();
    for &r in &rs {
        c.recv(Message::Request(r)).unwrap();
    }
    let first: Vec<_> = c.peer.take_requests(3).map(|q| q.req).collect();
    assert_eq!(first, rs[..3]);
    let rest: Vec<_> = c.peer.take_requests(10).map(|q| q.req).collect();
    assert_eq!(rest, rs[3..]);
    assert_eq!(c.peer.take_requests(1).count(), 0);
}

#[test]
fn an_unchoked_peer_that_asks_for_nothing_is_told_apart() {
    let mut c = active_peer(true, false);
    let (s1, s2) = (Duration::from_secs(1), Duration::from_secs(2));
    assert!(
        !c.peer.asks_nothing(c.t0 + s2 * 5, s2),
        "choked, it holds nothing"
    );
    c.unchoke();
    assert!(!c.peer.asks_nothing(c.t0 + s1, s2), "just unchoked");
    assert!(c.peer.asks_nothing(c.t0 + s2, s2));
    // A request at t0 + 3 s: not while it is queued, nor for 2 s after it was taken.
    let later = c.t0 + s1 * 3;
    c.out.clear();
    let r = Message::Request(req(0, 0, 16384));
    let queued = c
        .peer
        .on_message(r, c.t.view(), &c.rules, later, &mut c.out);
    assert_eq!(queued, Ok(Action::Queued));
    assert!(!c.peer.asks_nothing(later + s2 * 5, s2), "a request waits");
    assert_eq!(c.peer.take_requests(1).count(), 1);
    assert!(!c.peer.asks_nothing(later + s1, s2));
    assert!(c.peer.asks_nothing(later + s2, s2));
    // A request for a piece we do not have asks for nothing we could serve.
    let mut c = partial_peer(true);
    c.unchoke();
    let missing = af_set()[1];
    let r = Message::Request(req(missing, 0, 16384));
    let refused = c
        .peer
        .on_message(r, c.t.view(), &c.rules, later, &mut c.out);
    assert_eq!(refused, Ok(Action::Refused { told: true }));
    assert!(c.peer.asks_nothing(later, s2));
}

// ---------------------------------------------------------------------------------------------
// Extension messages
// ---------------------------------------------------------------------------------------------

#[test]
fn the_peers_extension_handshake_is_kept() {
    let mut c = active_peer(true, true);
    let p = ExtHandshake {
        m: vec![("ut_metadata".into(), 5)],
        v: Some("other/1.0".into()),
        reqq: Some(250),
        yourip: None,
        p: Some(51413),
        metadata_size: None,
        upload_only: false,
    };
    let payload = p.encode();
    assert_eq!(
        c.recv(Message::Extended {
            id: 0,
            payload: &payload
        }),
        Ok(Action::ExtHandshake)
    );
    assert_eq!(c.peer.ext(), Some(&p));
    assert!(c.out.is_empty());
}

#[test]
fn a_malformed_extension_handshake_disables_extensions_without_closing() {
    let mut c = active_peer(true, true).with_metadata();
    assert!(c.peer.ext().is_some());
    assert_eq!(
        c.recv(Message::Extended {
            id: 0,
            payload: b"not bencode"
        }),
        Ok(Action::ExtHandshake)
    );
    assert_eq!(c.peer.ext(), None);
    // And metadata requests go unanswered from then on.
    assert_eq!(c.metadata(&meta_request(0)), Ok(Action::Nothing));
    assert!(c.out.is_empty());
}

#[test]
fn an_rs_speed_message_goes_to_the_speed_state_when_speed_is_on() {
    let mut c = active_peer(true, true);
    let id = crate::speed::peer::LOCAL_ID;
    assert_eq!(
        c.recv(Message::Extended {
            id,
            payload: b"payload"
        }),
        Ok(Action::Speed(b"payload"))
    );
    assert!(c.out.is_empty());
}

#[test]
fn an_rs_speed_message_is_ignored_when_speed_is_off() {
    let mut r = rules();
    r.speed = false;
    let mut c = Conn::open(Fixture::seed(), r, true, true);
    let id = crate::speed::peer::LOCAL_ID;
    assert_eq!(
        c.recv(Message::Extended {
            id,
            payload: b"payload"
        }),
        Ok(Action::Nothing)
    );
}

#[test]
fn an_extended_message_under_an_unknown_id_is_ignored() {
    let mut c = active_peer(true, true).with_metadata();
    assert_eq!(
        c.recv(Message::Extended {
            id: 200,
            payload: &meta_request(0)
        }),
        Ok(Action::Nothing)
    );
    assert!(c.out.is_empty());
}

// ---------------------------------------------------------------------------------------------
// BEP 9 metadata answers
// ---------------------------------------------------------------------------------------------

#[test]
fn a_metadata_request_gets_the_piece_under_the_peers_id() {
    let mut c = active_peer(true, true).with_metadata();
    for piece in [0, 1] {
        let data = metadata::data_message(&c.t.info, piece).unwrap();
        // The answer counts against the upload limits.
        assert_eq!(
            c.metadata(&meta_request(piece)),
            Ok(Action::MetadataSent(data.len() as u64))
        );
        assert_eq!(
            c.sent(),
            vec![Message::Extended {
                id: THEIR_META_ID,
                payload: &data
            }]
        );
    }
}

#[test]
fn a_metadata_request_past_the_end_gets_a_reject() {
    let mut c = active_peer(true, true).with_metadata();
    c.metadata(&meta_request(2)).unwrap();
    assert_eq!(
        c.sent(),
        vec![Message::Extended {
            id: THEIR_META_ID,
            payload: &metadata::reject_message(2)
        }]
    );
}

#[test]
fn metadata_answers_are_bounded_per_connection() {
    let mut c = active_peer(true, true).with_metadata();
    // Two pieces of metadata: 4 × 2 + 4 = 12 answers.
    for k in 0..12 {
        c.metadata(&meta_request(k % 2)).unwrap();
        let data = metadata::data_message(&c.t.info, k % 2).unwrap();
        assert_eq!(
            c.sent(),
            vec![Message::Extended {
                id: THEIR_META_ID,
                payload: &data
            }],
            "{k}"
        );
    }
    c.metadata(&meta_request(0)).unwrap();
    assert_eq!(
        c.sent(),
        vec![Message::Extended {
            id: THEIR_META_ID,
            payload: &metadata::reject_message(0)
        }]
    );
}

#[test]
fn rejects_do_not_use_up_the_metadata_bound() {
    let mut c = active_peer(true, true).with_metadata();
    for _ in 0..20 {
        c.metadata(&meta_request(9)).unwrap();
    }
    c.metadata(&meta_request(0)).unwrap();
    let data = metadata::data_message(&c.t.info, 0).unwrap();
    assert_eq!(
        c.sent(),
        vec![Message::Extended {
            id: THEIR_META_ID,
            payload: &data
        }]
    );
}

#[test]
fn a_private_torrent_rejects_metadata_requests() {
    let mut c = Conn::open(Fixture::seed().private(), rules(), true, true).with_metadata();
    c.metadata(&meta_request(0)).unwrap();
    assert_eq!(
        c.sent(),
        vec![Message::Extended {
            id: THEIR_META_ID,
            payload: &metadata::reject_message(0)
        }]
    );
}

#[test]
fn a_metadata_answer_that_would_fill_the_send_backlog_is_a_reject() {
    let mut r = rules();
    // Room for a reject, not for a 16 KiB piece.
    r.max_send_backlog = 16 * 1024;
    let mut c = Conn::open(Fixture::seed(), r, true, true).with_metadata();
    c.metadata(&meta_request(0)).unwrap();
    assert_eq!(
        c.sent(),
        vec![Message::Extended {
            id: THEIR_META_ID,
            payload: &metadata::reject_message(0)
        }]
    );
}

#[test]
fn no_metadata_answer_before_the_peer_names_ut_metadata() {
    let mut c = active_peer(true, true);
    assert_eq!(c.metadata(&meta_request(0)), Ok(Action::Nothing));
    assert!(c.out.is_empty());
    let other = ext_payload(&[("ut_pex", 1)]);
    c.recv(Message::Extended {
        id: 0,
        payload: &other,
    })
    .unwrap();
    assert_eq!(c.metadata(&meta_request(0)), Ok(Action::Nothing));
    assert!(c.out.is_empty());
    // Named with id 0: disabled.
    let off = ext_payload(&[(metadata::EXTENSION_NAME, 0)]);
    c.recv(Message::Extended {
        id: 0,
        payload: &off,
    })
    .unwrap();
    assert_eq!(c.metadata(&meta_request(0)), Ok(Action::Nothing));
    assert!(c.out.is_empty());
}

#[test]
fn a_malformed_metadata_message_gets_no_answer_and_no_close() {
    let mut c = active_peer(true, true).with_metadata();
    for bad in [
        &b"garbage"[..],
        b"d8:msg_typei0ee",
        b"d8:msg_typei9e5:piecei0ee",
        b"d8:msg_typei0e5:piecei-1ee",
    ] {
        assert_eq!(c.metadata(bad), Ok(Action::Nothing));
        assert!(c.out.is_empty(), "{:?}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn metadata_data_and_rejects_from_the_peer_get_no_answer() {
    let mut c = active_peer(true, true).with_metadata();
    let data = metadata::data_message(&c.t.info.clone(), 0).unwrap();
    assert_eq!(c.metadata(&data), Ok(Action::Nothing));
    assert!(c.out.is_empty());
    assert_eq!(
        c.metadata(&metadata::reject_message(0)),
        Ok(Action::Nothing)
    );
    assert!(c.out.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------------------------

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn a_handshake_not_done_in_time_times_out() {
    let t0 = Instant::now();
    let r = rules();
    let mut out = Vec::new();
    for outgoing in [false, true] {
        let mut p = Peer::new(outgoing, t0);
        assert_eq!(
            p.on_tick(t0 + secs(10), &r, true, &mut out),
            Ok(Tick::Nothing)
        );
        // Bytes arriving do not extend the handshake's deadline.
        p.received(t0 + secs(9));
        assert_eq!(
            p.on_tick(t0 + secs(11), &r, true, &mut out),
            Err(Reason::HandshakeTimeout)
        );
    }
    assert!(out.is_empty(), "no keep-alive before the handshake");
}

#[test]
fn a_silent_peer_times_out_and_received_bytes_keep_it_alive() {
    let mut c = active_peer(false, false);
    c.out.clear();
    let r = c.rules.clone();
    c.peer.sent(c.t0 + secs(100));
    assert_eq!(
        c.peer.on_tick(c.t0 + secs(120), &r, false, &mut c.out),
        Ok(Tick::Nothing)
    );
    c.peer.received(c.t0 + secs(100));
    assert_eq!(
        c.peer.on_tick(c.t0 + secs(220), &r, false, &mut c.out),
        Ok(Tick::Nothing)
    );
    assert_eq!(
        c.peer.on_tick(c.t0 + secs(221), &r, false, &mut c.out),
        Err(Reason::IdleTimeout)
    );
}

#[test]
fn a_keep_alive_goes_out_when_the_send_side_is_idle_past_the_interval() {
    let mut c = active_peer(false, false);
    c.out.clear();
    let r = c.rules.clone();
    c.peer.received(c.t0 + secs(61));
    assert_eq!(
        c.peer.on_tick(c.t0 + secs(60), &r, true, &mut c.out),
        Ok(Tick::Nothing)
    );
    assert!(c.out.is_empty());
    assert_eq!(
        c.peer.on_tick(c.t0 + secs(61), &r, true, &mut c.out),
        Ok(Tick::KeepAlive)
    );
    assert_eq!(c.out, [0, 0, 0, 0]);
}

#[test]
fn no_keep_alive_while_something_is_being_sent() {
    let mut c = active_peer(false, false);
    c.out.clear();
    let r = c.rules.clone();
    c.peer.received(c.t0 + secs(100));
    // Data on its way to the socket.
    assert_eq!(
        c.peer.on_tick(c.t0 + secs(100), &r, false, &mut c.out),
        Ok(Tick::Nothing)
    );
    assert!(c.out.is_empty());
    // Control bytes already queued.
    c.out.push(0xee);
    assert_eq!(
        c.peer.on_tick(c.t0 + secs(100), &r, true, &mut c.out),
        Ok(Tick::Nothing)
    );
    assert_eq!(c.out, [0xee]);
    // Something went out recently.
    c.out.clear();
    c.peer.sent(c.t0 + secs(90));
    assert_eq!(
        c.peer.on_tick(c.t0 + secs(100), &r, true, &mut c.out),
        Ok(Tick::Nothing)
    );
    assert!(c.out.is_empty());
}

#[test]
fn max_message_len_covers_a_request_the_bitfield_and_an_extension_handshake() {
    let p = Peer::new(false, Instant::now());
    let r = rules();
    let ext = crate::wire::extension::MAX_HANDSHAKE_BYTES as u32 + 2;
    assert_eq!(p.max_message_len(N, &r), ext);
    // A bitfield larger than an extension handshake: 1 million pieces.
    assert_eq!(p.max_message_len(1_000_000, &r), 125_000 + 1);
    let mut big = rules();
    big.max_request_len = 1 << 20;
    assert_eq!(p.max_message_len(N, &big), (1 << 20) + 9);
}

// ---------------------------------------------------------------------------------------------
// The download side

/// A connection of a torrent we download (nothing verified), from a peer with BEP 6.
fn leeching(fast: bool) -> Conn {
    Conn::open(Fixture::new(N, []).fetching(), rules(), fast, false)
}

#[test]
fn a_peer_with_pieces_we_lack_interests_us_and_loses_it_when_we_have_them() {
    let mut c = leeching(true);
    assert_eq!(c.recv(Message::Have(1)), Ok(Action::MayRequest));
    assert_eq!(c.sent(), [Message::Interested]);
    assert!(c.peer.am_interested() && c.peer.wanted());
    // We verify piece 1: nothing left to want from it.
    c.t.pieces.verified.set(1);
    c.peer.we_got(1);
    c.out.clear();
    c.peer.update_interest(c.t.view(), &mut c.out);
    assert_eq!(c.sent(), [Message::NotInterested]);
    assert!(!c.peer.am_interested());
    // have_all: everything else is wanted again.
    assert_eq!(c.recv(Message::HaveAll), Ok(Action::MayRequest));
    assert_eq!(c.sent(), [Message::Interested]);
}

#[test]
fn only_asked_blocks_of_the_asked_length_are_taken() {
    let mut c = leeching(true);
    c.recv(Message::HaveAll).unwrap();
    c.recv(Message::Unchoke).unwrap();
    let r = req(0, 0, 16384);
    c.out.clear();
    c.peer.ask(r, c.t0, &mut c.out);
    assert_eq!(c.sent(), [Message::Request(r)]);
    let data = vec![7u8; 16384];
    let got = c.recv(Message::Piece {
        index: 0,
        begin: 0,
        data: &data,
    });
    assert!(matches!(got, Ok(Action::Block { req, late: false, .. }) if req == r));
    assert_eq!(c.peer.downloaded(), 16384);
    // The same block again was not asked for.
    let again = c.recv(Message::Piece {
        index: 0,
        begin: 0,
        data: &data,
    });
    assert_eq!(again, Err(Reason::UnrequestedBlock));
    // A block shorter than asked closes.
    let mut c = leeching(true);
    c.recv(Message::HaveAll).unwrap();
    c.peer.ask(r, c.t0, &mut c.out);
    let short = c.recv(Message::Piece {
        index: 0,
        begin: 0,
        data: &data[..100],
    });
    assert_eq!(short, Err(Reason::UnrequestedBlock));
}

#[test]
fn a_cancelled_block_is_still_welcome_and_a_choke_gives_requests_back() {
    let mut c = leeching(false);
    c.recv(Message::Bitfield(&[0xff, 0xc0])).unwrap();
    c.recv(Message::Unchoke).unwrap();
    let (a, b) = (req(0, 0, 16384), req(0, 16384, 16384));
    c.peer.ask(a, c.t0, &mut c.out);
    c.peer.ask(b, c.t0, &mut c.out);
    c.out.clear();
    assert!(c.peer.cancel(a, &mut c.out));
    assert_eq!(c.sent(), [Message::Cancel(a)]);
    let data = vec![0u8; 16384];
    let late = c.recv(Message::Piece {
        index: 0,
        begin: 0,
        data: &data,
    });
    assert!(matches!(late, Ok(Action::Block { late: true, .. })));
    // Without BEP 6 a choke drops what was asked.
    c.recv(Message::Choke).unwrap();
    assert!(c.peer.asked().is_empty());
    assert_eq!(c.peer.take_dropped(), [b]);
    assert!(!c.peer.may_ask(0));
}

#[test]
fn a_fast_peer_rejects_what_it_will_not_send() {
    let mut c = leeching(true);
    c.recv(Message::HaveAll).unwrap();
    c.recv(Message::Unchoke).unwrap();
    let a = req(3, 0, 16384);
    c.peer.ask(a, c.t0, &mut c.out);
    // With BEP 6 a choke keeps the requests until the peer rejects them.
    c.recv(Message::Choke).unwrap();
    assert_eq!(c.peer.asked().len(), 1);
    assert_eq!(c.recv(Message::Reject(a)), Ok(Action::MayRequest));
    assert_eq!(c.peer.take_dropped(), [a]);
    assert_eq!(c.recv(Message::Reject(a)), Err(Reason::UnrequestedBlock));
}

#[test]
fn requests_that_wait_too_long_are_given_back_and_the_peer_is_snubbed() {
    let mut c = leeching(true);
    c.recv(Message::HaveAll).unwrap();
    c.recv(Message::Unchoke).unwrap();
    assert_eq!(c.peer.pipeline(500), 16);
    let a = req(1, 0, 16384);
    c.peer.ask(a, c.t0, &mut c.out);
    c.out.clear();
    let later = c.t0 + Duration::from_secs(21);
    let tick = c.peer.on_tick(later, &c.rules, false, &mut c.out);
    assert_eq!(tick, Ok(Tick::Snubbed));
    assert_eq!(c.sent(), [Message::Cancel(a)]);
    assert_eq!(c.peer.take_dropped(), [a]);
    assert!(c.peer.snubbed());
    assert_eq!(c.peer.pipeline(500), 1);
}

#[test]
fn the_pipeline_follows_the_rate_within_reqq() {
    let mut c = leeching(true);
    c.recv(Message::HaveAll).unwrap();
    c.recv(Message::Unchoke).unwrap();
    let data = vec![0u8; 16384];
    for k in 0..400u32 {
        let r = req(k % N, 0, 16384);
        c.peer.ask(r, c.t0, &mut c.out);
        c.recv(Message::Piece {
            index: r.index,
            begin: 0,
            data: &data,
        })
        .unwrap();
    }
    // 6.5 MB in the first second: a quarter of it at once (smoothed over about four).
    c.peer.sample_rate();
    assert_eq!(c.peer.download_rate(), 400 * 16384 / 4);
    let p = c.peer.pipeline(2000);
    assert!(p > 16 && p <= 250, "{p}");
}

// ---------------------------------------------------------------------------------------------
// Hostile peers: messages that change nothing, have_all, allowed-fast pinning
// ---------------------------------------------------------------------------------------------

#[test]
fn have_all_counts_once_in_the_table_not_per_piece_and_twice_is_noise() {
    let mut c = Conn::open(Fixture::new(N, [0]), rules(), true, false);
    assert_eq!(c.recv(Message::HaveAll), Ok(Action::Nothing));
    assert_eq!(c.t.availability(), [1; N as usize]);
    // have_none then have_all again: still one seed, never two.
    c.recv(Message::HaveNone).unwrap();
    assert_eq!(c.t.availability(), [0; N as usize]);
    c.recv(Message::HaveAll).unwrap();
    c.recv(Message::Have(3)).unwrap();
    assert_eq!(c.t.availability(), [1; N as usize]);
    c.peer.forget_pieces(&c.t.pieces);
    assert_eq!(c.t.availability(), [0; N as usize]);
    c.peer.forget_pieces(&c.t.pieces);
    assert_eq!(c.t.availability(), [0; N as usize]);
}

#[test]
fn a_flood_of_messages_that_change_nothing_is_cut_off_honest_noise_is_not() {
    let floods: Vec<(&str, Message<'static>)> = vec![
        ("interested", Message::Interested),
        ("keep-alive", Message::KeepAlive),
        ("have of a known piece", Message::Have(2)),
        ("have_all again", Message::HaveAll),
        ("cancel of nothing", Message::Cancel(req(0, 0, 16384))),
        (
            "unknown message",
            Message::Unknown {
                id: 77,
                payload: &[],
            },
        ),
        (
            "extension handshake again",
            Message::Extended {
                id: 0,
                payload: b"d1:md6:ut_pexi1eee",
            },
        ),
    ];
    for (what, msg) in floods {
        let mut c = Conn::open(Fixture::new(N, [0]), rules(), true, true);
        c.recv(Message::Interested).unwrap();
        c.recv(Message::HaveAll).unwrap();
        // The first extension handshake is news, not noise.
        let hs = Message::Extended {
            id: 0,
            payload: b"d1:md11:ut_metadatai2eee",
        };
        assert_eq!(c.recv(hs), Ok(Action::ExtHandshake));
        let mut cut = None;
        for i in 0..2000 {
            if let Err(r) = c.recv(msg.clone()) {
                cut = Some((i, r));
                break;
            }
        }
        let (i, r) = cut.unwrap_or_else(|| panic!("{what}: never cut off"));
        assert_eq!(r, Reason::MessageFlood, "{what}");
        assert!(
            (400..=NOISE_BURST as usize).contains(&i),
            "{what}: cut after {i}"
        );
    }
    // A keep-alive every second for an hour is fine: the budget refills.
    let mut c = Conn::open(Fixture::seed(), rules(), true, false);
    for s in 0..3600 {
        let now = c.t0 + Duration::from_secs(s);
        c.peer
            .on_message(Message::KeepAlive, c.t.view(), &c.rules, now, &mut c.out)
            .unwrap();
    }
    // Real state changes never spend it: interest flipping is answered each time.
    for _ in 0..2000 {
        c.recv(Message::Interested).unwrap();
        c.recv(Message::NotInterested).unwrap();
    }
}

#[test]
fn a_choked_peer_queues_few_allowed_fast_requests() {
    let mut r = rules();
    r.max_reqq = 500;
    let mut c = Conn::open(Fixture::seed(), r, true, false);
    c.recv(Message::Interested).unwrap();
    let piece = af_set()[0];
    let mut queued = 0;
    for b in 0..64u32 {
        if c.recv(Message::Request(req(piece, b * 16, 16))) == Ok(Action::Queued) {
            queued += 1;
        }
    }
    assert_eq!(queued, MAX_FAST_QUEUED);
}

#[test]
fn the_heap_a_peer_holds_follows_the_rules_not_what_it_sends() {
    use std::mem::size_of;
    let mut c = active_peer(true, true);
    c.unchoke();
    let fresh = c.peer.heap_bytes();
    // A full queue, then requests past it until the peer is cut off: the queue never grows
    // past `reqq`.
    let mut peak = fresh;
    for k in 0u32.. {
        match c.recv(Message::Request(req(k % N, 0, 1024))) {
            Ok(_) => peak = peak.max(c.peer.heap_bytes()),
            Err(e) => {
                assert_eq!(e, Reason::RequestFlood);
                assert!(k as usize > rules().max_reqq, "cut off after {k} requests");
                break;
            }
        }
    }
    let queue = 2 * rules().max_reqq * size_of::<Queued>();
    assert!(peak <= fresh + queue, "{peak} bytes held, {fresh} fresh");
    // Large extension handshakes, again and again: each replaces the one before.
    let mut c = active_peer(true, true);
    let big = ext_payload(&[(&"x".repeat(60_000), 9)]);
    let mut held = Vec::new();
    for _ in 0..50 {
        let a = c.recv(Message::Extended {
            id: 0,
            payload: &big,
        });
        assert_eq!(a, Ok(Action::ExtHandshake));
        held.push(c.peer.heap_bytes());
    }
    assert!(
        held[0] >= 60_000,
        "the handshake's name is not counted: {}",
        held[0]
    );
    assert!(held.iter().all(|&h| h == held[0]), "{held:?}");
}

#[test]
fn floods_of_peer_exchange_and_unwanted_metadata_are_cut_off_honest_ones_are_not() {
    let pex = crate::wire::pex::PexMessage {
        added: vec![(std::net::SocketAddr::from(([10, 0, 0, 9], 6881)), 0)],
        dropped: Vec::new(),
    }
    .encode();
    let info: Vec<u8> = (0..INFO_LEN).map(|i| i as u8).collect();
    let data = metadata::data_message(&info, 0).unwrap();
    let reject = metadata::reject_message(0);
    let past_end = meta_request(9);
    let request = meta_request(0);
    // (what, private torrent, the message under our id for it).
    let floods: Vec<(&str, bool, u8, &[u8])> = vec![
        ("peer exchange", false, crate::wire::pex::LOCAL_ID, &pex),
        (
            "metadata data we never asked for",
            false,
            metadata::LOCAL_ID,
            &data,
        ),
        ("metadata rejects", false, metadata::LOCAL_ID, &reject),
        (
            "requests for a piece past the end",
            false,
            metadata::LOCAL_ID,
            &past_end,
        ),
        (
            "requests on a private torrent",
            true,
            metadata::LOCAL_ID,
            &request,
        ),
    ];
    for (what, private, id, payload) in floods {
        let t = if private {
            Fixture::seed().private()
        } else {
            Fixture::seed()
        };
        let mut c = Conn::open(t, rules(), true, true).with_metadata();
        let cut = (0..5000).find_map(|i| {
            c.recv(Message::Extended { id, payload })
                .err()
                .map(|r| (i, r))
        });
        let (i, r) = cut.unwrap_or_else(|| panic!("{what}: never cut off"));
        assert_eq!(r, Reason::MessageFlood, "{what}");
        // Requests answered with a reject are noise once past the answers allowed (12 here).
        assert!((500..=512).contains(&i), "{what}: cut after {i}");
    }
    // A peer exchange message a minute for an hour, and a reject or two, are fine.
    let mut c = active_peer(true, true).with_metadata();
    for m in 0..60 {
        let now = c.t0 + Duration::from_secs(60 * m);
        let msg = Message::Extended {
            id: crate::wire::pex::LOCAL_ID,
            payload: &pex,
        };
        assert_eq!(
            c.peer
                .on_message(msg, c.t.view(), &c.rules, now, &mut c.out),
            Ok(Action::Pex(&pex))
        );
    }
    c.metadata(&past_end).unwrap();
    c.metadata(&request).unwrap();
}

// ---------------------------------------------------------------------------------------------
// BEP 52 hash requests
// ---------------------------------------------------------------------------------------------

mod v2 {
    use super::*;
    use crate::engine::stats::HashReject;
    use crate::wire::hashes::{self, HashMessage, HashRequest};

    /// The usual file's root: 10 pieces of 32 KiB (piece layer 1), a tree of 5 layers.
    fn root() -> [u8; 32] {
        let layer: Vec<[u8; 32]> = (0..N)
            .map(|i| crate::hash::sha256(&i.to_be_bytes()))
            .collect();
        crate::hash::root_from_piece_layer(&layer, PIECE_LEN)
    }

    fn hreq(base: u32, index: u32, count: u32, proof_layers: u32) -> HashRequest {
        HashRequest {
            root: root(),
            base,
            index,
            count,
            proof_layers,
        }
    }

    fn payload(r: &HashRequest) -> Vec<u8> {
        let mut out = Vec::new();
        HashMessage::Request(*r).encode(&mut out);
        out[5..].to_vec()
    }

    fn ask<'m>(c: &mut Conn, p: &'m [u8]) -> Result<Action<'m>, Reason> {
        c.recv(Message::Unknown {
            id: hashes::HASH_REQUEST,
            payload: p,
        })
    }

    /// The single hash message in `out`.
    fn answer(out: &[u8]) -> HashMessage<'_> {
        let (msg, used) = parse_message(out, 1 << 20).unwrap().unwrap();
        assert_eq!(used, out.len());
        let Message::Unknown { id, payload } = msg else {
            panic!("{msg:?}");
        };
        hashes::parse(id, payload).unwrap()
    }

    #[test]
    fn the_piece_layer_is_served_with_its_proof() {
        let mut c = Conn::open(Fixture::seed().v2(), rules(), true, true);
        // The whole layer (16 padded), as libtorrent asks for a file of 10 pieces.
        let r = hreq(1, 0, 16, 3);
        let p = payload(&r);
        let action = ask(&mut c, &p).unwrap();
        assert_eq!(action, Action::HashesSent(c.out.len() as u64));
        let HashMessage::Hashes { req, hashes } = answer(&c.out) else {
            panic!()
        };
        assert_eq!(req, r);
        let got: Vec<[u8; 32]> = hashes
            .chunks_exact(32)
            .map(|h| h.try_into().unwrap())
            .collect();
        assert_eq!(got, c.t.trees.as_ref().unwrap().answer(&r).unwrap());
        assert_eq!(crate::merkle::verify(&r, &got, &root(), 5), Ok(()));
        // Four hashes with the uncles up to the root; served while the peer is choked.
        assert!(c.peer.am_choking());
        let r = hreq(1, 4, 4, 3);
        let p = payload(&r);
        ask(&mut c, &p).unwrap();
        let HashMessage::Hashes { hashes, .. } = answer(&c.out) else {
            panic!()
        };
        assert_eq!(hashes.len(), (4 + 2) * 32);
    }

    #[test]
    fn unanswerable_requests_get_a_reject() {
        let mut c = Conn::open(Fixture::seed().v2(), rules(), true, true);
        let unknown = HashRequest {
            root: [9; 32],
            ..hreq(1, 0, 16, 3)
        };
        for r in [
            unknown,
            // Block hashes need the data; a range past the layer; a proof past the root; not
            // a power of two; unaligned.
            hreq(0, 0, 2, 0),
            hreq(1, 16, 16, 3),
            hreq(1, 0, 16, 4),
            hreq(1, 0, 3, 0),
            hreq(1, 2, 4, 0),
        ] {
            let p = payload(&r);
            assert_eq!(
                ask(&mut c, &p),
                Ok(Action::HashesRejected(HashReject::Invalid)),
                "{r:?}"
            );
            assert_eq!(answer(&c.out), HashMessage::Reject(r));
        }
        // A v1 torrent has no trees: every request is rejected.
        let mut c = active_peer(true, true);
        let r = hreq(1, 0, 16, 3);
        let p = payload(&r);
        assert_eq!(
            ask(&mut c, &p),
            Ok(Action::HashesRejected(HashReject::Invalid))
        );
        assert_eq!(answer(&c.out), HashMessage::Reject(r));
    }

    #[test]
    fn a_malformed_hash_request_is_bad_message() {
        let mut c = Conn::open(Fixture::seed().v2(), rules(), true, true);
        let p = payload(&hreq(1, 0, 16, 3));
        assert_eq!(ask(&mut c, &p[..47]), Err(Reason::BadMessage));
    }

    #[test]
    fn an_answer_that_would_overflow_the_send_backlog_is_rejected() {
        let mut c = Conn::open(Fixture::seed().v2(), rules(), true, true);
        let r = hreq(1, 0, 16, 3);
        let p = payload(&r);
        c.out = vec![0; c.rules.max_send_backlog - 100];
        let len = c.out.len();
        assert_eq!(
            c.peer.on_message(
                Message::Unknown {
                    id: hashes::HASH_REQUEST,
                    payload: &p
                },
                c.t.view(),
                &c.rules,
                c.t0,
                &mut c.out
            ),
            Ok(Action::HashesRejected(HashReject::Backlog))
        );
        assert_eq!(answer(&c.out[len..]), HashMessage::Reject(r));
    }

    #[test]
    fn a_flood_of_hash_requests_is_rejected_then_cut_off() {
        let mut c = Conn::open(Fixture::seed().v2(), rules(), true, true);
        let p = payload(&hreq(1, 0, 2, 3));
        // The budget answers a burst at one instant...
        for _ in 0..super::super::hashes::BURST {
            assert!(matches!(ask(&mut c, &p), Ok(Action::HashesSent(_))));
        }
        // ...then rejects, each spending the noise budget, until the peer is cut off.
        let mut rejects = 0;
        let reason = loop {
            match ask(&mut c, &p) {
                Ok(Action::HashesRejected(HashReject::Budget)) => rejects += 1,
                Ok(a) => panic!("{a:?}"),
                Err(r) => break r,
            }
        };
        assert_eq!(reason, Reason::MessageFlood);
        assert!(rejects > 100 && rejects <= 500, "{rejects}");
        // Unrequested `hashes` and `hash reject` messages are noise too.
        let mut c = Conn::open(Fixture::seed().v2(), rules(), true, true);
        let reason = loop {
            if let Err(r) = c.recv(Message::Unknown {
                id: hashes::HASHES,
                payload: &p,
            }) {
                break r;
            }
        };
        assert_eq!(reason, Reason::MessageFlood);
    }

    #[test]
    fn the_budget_refills_with_time() {
        let mut c = Conn::open(Fixture::seed().v2(), rules(), true, true);
        let p = payload(&hreq(1, 0, 2, 3));
        for _ in 0..super::super::hashes::BURST {
            ask(&mut c, &p).unwrap();
        }
        assert_eq!(
            ask(&mut c, &p),
            Ok(Action::HashesRejected(HashReject::Budget))
        );
        c.t0 += Duration::from_secs(1);
        for _ in 0..super::super::hashes::PER_SEC {
            assert!(matches!(ask(&mut c, &p), Ok(Action::HashesSent(_))));
        }
        assert_eq!(
            ask(&mut c, &p),
            Ok(Action::HashesRejected(HashReject::Budget))
        );
    }

    #[test]
    fn a_v2_peer_names_the_torrent_by_its_truncated_v2_hash() {
        let t = Fixture::seed().v2();
        let mut hs = their_handshake(true, true);
        hs.info_hash = V2_ID;
        let mut p = Peer::new(false, Instant::now());
        let mut out = Vec::new();
        p.on_handshake(&hs, t.view(), &rules(), ADDR, &mut out)
            .unwrap();
        assert_eq!(p.phase(), Phase::Active);
        // A v1 torrent does not know that name.
        let t = Fixture::seed();
        let mut p = Peer::new(false, Instant::now());
        assert_eq!(
            p.on_handshake(&hs, t.view(), &rules(), ADDR, &mut out),
            Err(Reason::UnknownTorrent)
        );
    }

    #[test]
    fn the_handshake_is_answered_with_the_v2_hash_when_the_peer_speaks_v2() {
        let plain = Handshake::new(ID, THEIR_ID);
        let v2 = Handshake::new(ID, THEIR_ID).with_v2(true);
        assert!(v2.supports_v2() && !plain.supports_v2());
        assert_eq!(v2.reserved[7] & 0x10, 0x10);
        // The v1 name with the v2 bit is upgraded (libtorrent's answer); without it, kept.
        assert_eq!(reply_hash(&v2.reserved, ID, Some(V2_ID)), V2_ID);
        assert_eq!(reply_hash(&plain.reserved, ID, Some(V2_ID)), ID);
        assert_eq!(reply_hash(&plain.reserved, V2_ID, Some(V2_ID)), V2_ID);
        // A v1 torrent answers in kind.
        assert_eq!(reply_hash(&v2.reserved, ID, None), ID);
        // Our outgoing handshake sets the bit for a v2 torrent.
        let mut p = Peer::new(true, Instant::now());
        let mut out = Vec::new();
        p.connected(ID, true, &rules(), &mut out);
        assert_eq!(out, Handshake::new(ID, OUR_ID).with_v2(true).encode());
    }
}

#[test]
fn a_worker_that_falls_behind_sheds_queues_past_the_reqq_it_told() {
    let mut c = active_peer(true, true);
    c.unchoke();
    fill_queue(&mut c);
    // The worker falls behind and tells its peers 3: the five newest requests are rejected,
    // the three oldest keep their turn.
    c.rules.advertised_reqq = 3;
    let queued: Vec<_> = c.peer.requests().iter().map(|q| q.req).collect();
    c.out.clear();
    assert_eq!(c.peer.shed(&c.rules, &mut c.out), 5);
    let rejected: Vec<_> = queued[3..].iter().map(|&r| Message::Reject(r)).collect();
    assert_eq!(c.sent(), rejected);
    let kept: Vec<_> = c.peer.requests().iter().map(|q| q.req).collect();
    assert_eq!(kept, queued[..3]);
    // Nothing more to shed; a request that crossed the smaller reqq on the wire is shed on
    // arrival, and is no flood: the peer could not know.
    c.out.clear();
    assert_eq!(c.peer.shed(&c.rules, &mut c.out), 0);
    assert!(c.out.is_empty());
    for k in 0..100 {
        let r = req(1, k * 16, 16);
        assert_eq!(c.recv(Message::Request(r)), Ok(Action::Shed));
        assert_eq!(c.sent(), vec![Message::Reject(r)]);
    }
    assert_eq!(c.peer.requests().len(), 3);
    // Once it asks within the share again, it is served as before.
    let _ = c.peer.take_requests(1).count();
    assert_eq!(c.recv(Message::Request(req(2, 0, 16))), Ok(Action::Queued));
}

#[test]
fn a_peer_that_ignores_the_reqq_it_was_told_is_cut_off_for_noise() {
    let mut c = active_peer(true, true);
    c.unchoke();
    c.rules.advertised_reqq = 2;
    let mut cut = None;
    for k in 0..10_000u32 {
        match c.recv(Message::Request(req(k % 4, (k / 4) * 16, 16))) {
            Ok(_) => {}
            Err(reason) => {
                cut = Some((k, reason));
                break;
            }
        }
    }
    let (k, reason) = cut.expect("cut off");
    assert_eq!(reason, Reason::MessageFlood);
    assert!(
        k > 400,
        "an honest peer's requests in flight fit the noise burst: cut after {k}"
    );
}

#[test]
fn only_peers_that_heard_reqq_and_can_be_told_no_are_shed() {
    // Without BEP 10 the peer never heard our reqq; without BEP 6 a reject is not a thing.
    for (fast, ext) in [(false, true), (true, false), (false, false)] {
        let mut c = active_peer(fast, ext);
        c.unchoke();
        fill_queue(&mut c);
        c.rules.advertised_reqq = 3;
        c.out.clear();
        assert_eq!(
            c.peer.shed(&c.rules, &mut c.out),
            0,
            "fast {fast} ext {ext}"
        );
        assert!(c.out.is_empty());
        assert_eq!(c.peer.requests().len(), 8);
    }
    // A choked peer's allowed-fast requests are not shed either (its queue is bounded apart).
    let mut c = active_peer(true, true);
    c.rules.advertised_reqq = 0;
    c.out.clear();
    assert_eq!(c.peer.shed(&c.rules, &mut c.out), 0);
}

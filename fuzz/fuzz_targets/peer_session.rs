//! A stranger's bytes through the peer state machine after a handshake: whatever arrives, the
//! machine never panics, never queues more requests than it advertised, never lets its answers
//! pass the send backlog without closing, and keeps the pieces' availability balanced. On a
//! torrent we download (flag bit 5) it also asks for blocks, and only asked blocks of the asked
//! length are ever handed back; the requests in flight never pass the pipeline.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringseed::engine::peer::{Peer, Rules, TorrentView};
use ringseed::metainfo::{FileEntry, FileLayout};
use ringseed::pieces::PieceTable;
use ringseed::wire::{Handshake, parse_message};
use std::time::{Duration, Instant};

const PIECE: u64 = 32 << 10;
const LEN: u64 = 10 * PIECE - 5000;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let layout = FileLayout::new(
        vec![FileEntry {
            path: vec!["f".into()],
            length: LEN,
            offset: 0,
            pad: false,
            executable: false,
            pieces_root: None,
        }],
        PIECE,
    )
    .expect("a valid layout");
    let pieces = PieceTable::new(layout.num_pieces);
    for i in 0..layout.num_pieces {
        // Bit 0: seed; else every other piece.
        if flags & 1 != 0 || i % 2 == 0 {
            pieces.verified.set(i);
        }
    }
    let info = vec![b'x'; 20_000];
    let t = TorrentView {
        id: [7; 20],
        pieces: &pieces,
        layout: &layout,
        info: &info,
        private: flags & 8 != 0,
        fetching: flags & 32 != 0,
    };
    let rules = Rules {
        peer_id: [1; 20],
        port: 6881,
        client_name: "fuzz".into(),
        max_request_len: 16 << 10,
        max_reqq: 32,
        max_send_backlog: 64 << 10,
        allowed_fast: 4,
        pex: true,
        speed: flags & 16 != 0,
        handshake_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(120),
        keepalive_interval: Duration::from_secs(60),
        request_timeout: Duration::from_secs(20),
    };
    let mut hs = Handshake::new([7; 20], [2; 20]);
    hs.reserved = [0; 8];
    if flags & 2 != 0 {
        hs.reserved[7] |= 0x04; // BEP 6
    }
    if flags & 4 != 0 {
        hs.reserved[5] |= 0x10; // BEP 10
    }
    let t0 = Instant::now();
    let mut peer = Peer::new(false, t0);
    let mut out = Vec::new();
    let addr = std::net::IpAddr::from([10, 0, 0, 1]);
    if peer.on_handshake(&hs, t, &rules, addr, &mut out).is_err() {
        return;
    }
    let max = peer.max_message_len(layout.num_pieces, &rules);
    let mut buf = rest;
    let mut now = t0;
    let mut closed = false;
    while let Ok(Some((msg, used))) = parse_message(buf, max) {
        buf = &buf[used..];
        now += Duration::from_millis(u64::from(flags >> 6) * 100);
        out.clear();
        match peer.on_message(msg, t, &rules, now, &mut out) {
            Ok(ringseed::engine::peer::Action::Block { req, data, .. }) => {
                assert_eq!(req.length as usize, data.len(), "a block of another length");
            }
            Ok(_) => {
                assert!(out.len() <= rules.max_send_backlog);
                assert!(peer.requests().len() <= rules.max_reqq);
            }
            Err(_) => {
                closed = true;
                break;
            }
        }
        if peer.on_tick(now, &rules, true, &mut out).is_err() {
            closed = true;
            break;
        }
        // The worker's choking decisions, driven by the stream: unchoke on a run of bytes.
        if used % 3 == 0 {
            peer.unchoke(now, &mut out);
        } else if used % 7 == 0 {
            peer.choke(now, &mut out);
        }
        let _ = peer.take_requests(used % 4).count();
        // The download side: ask for blocks of pieces the peer has, as the worker would.
        if t.fetching {
            let pipeline = peer.pipeline(rules.max_reqq);
            let mut k = used as u32;
            while peer.asked().len() < pipeline && k < used as u32 + 8 {
                let index = k % layout.num_pieces;
                k += 1;
                if !peer.may_ask(index) || pieces.verified.get(index) {
                    continue;
                }
                let size = layout.piece_size(index) as u32;
                let begin = (k * 16384) % size.max(1) / 16384 * 16384;
                let req = ringseed::wire::BlockRequest {
                    index,
                    begin,
                    length: 16384.min(size - begin),
                };
                peer.ask(req, now, &mut out);
            }
            assert!(peer.asked().len() <= pipeline.max(1));
            let _ = peer.take_dropped();
        }
    }
    let _ = closed;
    peer.forget_pieces(&pieces);
    for i in 0..layout.num_pieces {
        assert_eq!(pieces.availability(i), 0, "piece {i} still counted after the peer left");
    }
});

//! The download path's CPU per piece, without I/O: a rarest-first pick (one per piece claimed)
//! in a few swarms, and a 256 KiB piece assembled from 16 KiB blocks with its SHA-1 advancing as
//! they arrive (the copy out of the receive buffer plus the hash). Compare the second with
//! `hashing`'s `sha1_piece/256KiB`: the difference is what assembly adds to hashing.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

use ringseed::download::part::Part;
use ringseed::download::picker::{self, Offer, Strategy};
use ringseed::download::want::Want;
use ringseed::pieces::PieceTable;

/// A scattered pseudo-random number for piece `i` (deterministic, so every build picks in the
/// same swarm).
fn mix(i: u32, k: u32) -> u32 {
    (i ^ k).wrapping_mul(2_654_435_761).rotate_right(13)
}

/// A swarm of `n` pieces: each piece has 2 to 6 peers (2 to 9 when `scattered`); with
/// `scattered`, a quarter of the pieces are verified and 2048 others are claimed. Returns the
/// table and the picking peer's bitfield (wire form): every piece, or a random half.
fn swarm(n: u32, scattered: bool, half: bool) -> (PieceTable, Vec<u8>) {
    let t = PieceTable::new(n);
    let mut bits = vec![0u8; n.div_ceil(8) as usize];
    let mut claimed = 0;
    for i in 0..n {
        if scattered && mix(i, 1).is_multiple_of(4) {
            t.verified.set(i);
        } else if scattered && claimed < 2048 && mix(i, 2).is_multiple_of(8) {
            t.claim(i);
            claimed += 1;
        }
        if !half || mix(i, 3).is_multiple_of(2) {
            bits[(i / 8) as usize] |= 0x80 >> (i % 8);
        }
        let peers = if scattered {
            2 + mix(i, 4) % 8
        } else {
            2 + (i * 7) % 5
        };
        for _ in 0..peers {
            t.peer_has(i);
        }
    }
    (t, bits)
}

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

fn pick(c: &mut Criterion) {
    let mut g = c.benchmark_group("pick_rarest_first");
    let cases = [
        ("2048_pieces", 2048u32, false, false),
        ("32768_pieces", 32_768, false, false),
        ("262144_pieces", 262_144, false, false),
        ("32768_pieces_half_peer_scattered", 32_768, true, true),
    ];
    for (name, n, scattered, half) in cases {
        let (t, bits) = swarm(n, scattered, half);
        let offer = Offer {
            bits: &bits,
            only: None,
        };
        let want = Want::everything(n);
        g.bench_function(name, |b| {
            let mut r = 0x9e37_79b9_7f4a_7c15u64;
            b.iter(|| {
                r = xorshift(r);
                let i = picker::claim(&t, offer, Strategy::RarestFirst, black_box(r), &want);
                if let Some(i) = i {
                    t.release(i);
                }
                i
            })
        });
    }
    // Endgame: every missing piece is claimed; the pick finds nothing.
    let (t, bits) = swarm(32_768, false, false);
    for i in 0..32_768 {
        t.claim(i);
    }
    let offer = Offer {
        bits: &bits,
        only: None,
    };
    let want = Want::everything(32_768);
    g.bench_function("32768_pieces_none_left", |b| {
        let mut r = 0x9e37_79b9_7f4a_7c15u64;
        b.iter(|| {
            r = xorshift(r);
            picker::claim(&t, offer, Strategy::RarestFirst, black_box(r), &want)
        })
    });
    g.finish();
}

fn assemble(c: &mut Criterion) {
    let piece = 256u32 << 10;
    let data: Vec<u8> = (0..piece)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let from = std::net::IpAddr::from([127, 0, 0, 1]);
    let mut g = c.benchmark_group("assemble_piece");
    g.throughput(Throughput::Bytes(u64::from(piece)));
    g.bench_function("256KiB_in_order", |b| {
        b.iter(|| {
            let mut p = Part::new(0, piece, true);
            for blk in 0..piece / 16384 {
                let at = (blk * 16384) as usize;
                let _ = p.take(blk * 16384, black_box(&data[at..at + 16384]), from);
            }
            p
        })
    });
    g.finish();
}

criterion_group!(benches, pick, assemble);
criterion_main!(benches);

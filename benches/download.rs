//! The download path's CPU per piece, without I/O: a rarest-first pick over many pieces (one per
//! piece claimed), and a 256 KiB piece assembled from 16 KiB blocks with its SHA-1 advancing as
//! they arrive (the copy out of the receive buffer plus the hash). Compare the second with
//! `hashing`'s `sha1_piece/256KiB`: the difference is what assembly adds to hashing.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

use ringseed::download::part::Part;
use ringseed::download::picker::{self, Strategy};
use ringseed::pieces::PieceTable;

fn pick(c: &mut Criterion) {
    let mut g = c.benchmark_group("pick_rarest_first");
    for n in [2048u32, 32_768] {
        let t = PieceTable::new(n);
        for i in 0..n {
            for _ in 0..(2 + (i * 7) % 5) {
                t.peer_has(i);
            }
        }
        g.bench_function(format!("{n}_pieces"), |b| {
            let mut start = 0u32;
            b.iter(|| {
                start = start.wrapping_add(7919);
                let i = picker::claim(&t, |_| true, Strategy::RarestFirst, black_box(start));
                if let Some(i) = i {
                    t.claimed.clear(i);
                }
                i
            })
        });
    }
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

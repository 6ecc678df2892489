//! Hot pieces of the engine on their own: choker decisions over 10 000 peers, and piece-table
//! updates from two threads at once (the lock-free shared state every worker touches).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use ringseed::engine::choker::{Candidate, SeedChoker, choose};
use ringseed::pieces::PieceTable;

fn candidates(n: usize) -> Vec<Candidate> {
    let t0 = Instant::now();
    (0..n)
        .map(|i| Candidate {
            key: i,
            unchoked: i % 7 == 0,
            since: t0 + Duration::from_millis((i * 7919 % 10_000) as u64),
            uploaded_since_unchoke: (i as u64 * 104_729) % (8 << 20),
            recent_upload: (i as u64 * 15_485_863) % (64 << 20),
        })
        .collect()
}

fn choker(c: &mut Criterion) {
    let base = candidates(10_000);
    let mut g = c.benchmark_group("choker_10000_peers");
    for (name, algo) in [
        ("round_robin", SeedChoker::RoundRobin),
        ("fastest_upload", SeedChoker::FastestUpload),
    ] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || base.clone(),
                |mut cands| choose(algo, black_box(&mut cands), 100, 4 << 20),
                criterion::BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

fn piece_table(c: &mut Criterion) {
    let n = 1 << 16;
    let mut g = c.benchmark_group("piece_table");
    g.bench_function("availability_2_threads_65536_updates_each", |b| {
        let t = Arc::new(PieceTable::new(n));
        b.iter(|| {
            std::thread::scope(|s| {
                for k in 0..2u32 {
                    let t = &t;
                    s.spawn(move || {
                        for i in 0..n {
                            let p = (i.wrapping_mul(2_654_435_761) ^ k) % n;
                            t.peer_has(p);
                            t.peer_lost(p);
                        }
                    });
                }
            })
        })
    });
    g.bench_function("verified_get_65536", |b| {
        let t = PieceTable::new(n);
        for i in (0..n).step_by(3) {
            t.verified.set(i);
        }
        b.iter(|| (0..n).filter(|&i| t.verified.get(black_box(i))).count())
    });
    g.finish();
}

criterion_group!(benches, choker, piece_table);
criterion_main!(benches);

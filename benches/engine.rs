//! Hot pieces of the engine on their own: choker decisions over 10 000 peers, piece-table
//! updates from two threads at once (the lock-free shared state every worker touches), and the
//! coalescing of a peer's queued requests into one upload job's disk reads.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use ringseed::choking::seed::{Candidate, SeedChoker, choose};
use ringseed::engine::coalesce::{plan_job, take_for_batch};
use ringseed::metainfo::{FileEntry, FileLayout};
use ringseed::pieces::PieceTable;
use ringseed::wire::BlockRequest;

fn candidates(n: usize) -> Vec<Candidate> {
    let t0 = Instant::now();
    (0..n)
        .map(|i| Candidate {
            key: i,
            unchoked: i % 7 == 0,
            since: t0 + Duration::from_millis((i * 7919 % 10_000) as u64),
            uploaded_since_unchoke: (i as u64 * 104_729) % (8 << 20),
            recent_upload: (i as u64 * 15_485_863) % (64 << 20),
            idle: i % 11 == 0,
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
                |mut cands| choose(algo, black_box(&mut cands), 100, 4 << 20, None),
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
    // The same on a complete torrent's table (what a seedbox mostly has): the rarity index
    // (kept for pieces still to fetch) is not touched.
    g.bench_function("availability_2_threads_65536_updates_each_seeding", |b| {
        let t = Arc::new(PieceTable::new(n));
        for i in 0..n {
            t.verified.set(i);
        }
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

/// A torrent of `files` equal files of `file_len` bytes each, pieces of 1 MiB.
fn layout(files: usize, file_len: u64) -> FileLayout {
    let entries = (0..files)
        .map(|i| FileEntry {
            path: vec![format!("f{i}")],
            length: file_len,
            offset: 0,
            pad: false,
            executable: false,
            pieces_root: None,
        })
        .collect();
    FileLayout::new(entries, 1 << 20).expect("a valid layout")
}

fn coalescing(c: &mut Criterion) {
    let mut g = c.benchmark_group("coalesce");
    // One job of the default 256 KiB batch: 15 blocks of 16 KiB.
    let one_file = layout(1, 1 << 30);
    let sequential: Vec<BlockRequest> = (0..2000u32)
        .map(|i| BlockRequest {
            index: i / 64,
            begin: (i % 64) * 16384,
            length: 16384,
        })
        .collect();
    let (take, _) = take_for_batch(sequential.iter().map(|r| r.length), 256 << 10);
    g.bench_function("job_256k_sequential_one_file", |b| {
        b.iter(|| plan_job(black_box(&one_file), black_box(&sequential[..take])))
    });
    // Random blocks over the torrent: no two adjacent, one read each.
    let scattered: Vec<BlockRequest> = (0..take as u32)
        .map(|i| BlockRequest {
            index: i.wrapping_mul(2_654_435_761) % 1024,
            begin: (i * 7 % 64) * 16384,
            length: 16384,
        })
        .collect();
    g.bench_function("job_256k_random_one_file", |b| {
        b.iter(|| plan_job(black_box(&one_file), black_box(&scattered)))
    });
    // Small files: 4 KiB each, so every 16 KiB block spans four of them.
    let small_files = layout(65_536, 4096);
    g.bench_function("job_256k_sequential_4k_files", |b| {
        b.iter(|| plan_job(black_box(&small_files), black_box(&sequential[..take])))
    });
    // A deep queue taken in batches: what one peer with reqq 2000 costs in planning.
    g.bench_function("queue_2000_requests_in_256k_jobs", |b| {
        b.iter(|| {
            let mut rest = &sequential[..];
            let mut reads = 0;
            while !rest.is_empty() {
                let (n, _) = take_for_batch(rest.iter().map(|r| r.length), 256 << 10);
                reads += plan_job(&one_file, &rest[..n]).runs.len();
                rest = &rest[n..];
            }
            reads
        })
    });
    g.finish();
}

criterion_group!(benches, choker, piece_table, coalescing);
criterion_main!(benches);

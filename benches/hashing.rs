//! SHA-1 and v2 merkle throughput per core, by piece size. Compare the SHA-1 figures with
//! `openssl speed -evp sha1` on the same machine (perf/verify_vs_libtorrent.sh prints both).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

fn sha1_pieces(c: &mut Criterion) {
    let data: Vec<u8> = (0..4u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let mut g = c.benchmark_group("sha1_piece");
    for kib in [16usize, 64, 256, 1024, 4096] {
        let piece = &data[..kib << 10];
        g.throughput(Throughput::Bytes(piece.len() as u64));
        g.bench_with_input(
            BenchmarkId::from_parameter(format!("{kib}KiB")),
            piece,
            |b, p| b.iter(|| ringseed::hash::sha1(black_box(p))),
        );
    }
    g.finish();
    let mut g = c.benchmark_group("v2_piece_merkle");
    for kib in [16usize, 256, 4096] {
        let piece = &data[..kib << 10];
        g.throughput(Throughput::Bytes(piece.len() as u64));
        g.bench_with_input(
            BenchmarkId::from_parameter(format!("{kib}KiB")),
            piece,
            |b, p| b.iter(|| ringseed::hash::v2_piece_hash(black_box(p), kib / 16)),
        );
    }
    g.finish();
}

/// Sixteen lanes against SHA-NI one by one, for batches of 1..16 pieces of 256 KiB and 1 MiB:
/// where the lanes win is `ringseed::sha1x16::MIN_LANES`.
fn sha1_many(c: &mut Criterion) {
    let data: Vec<u8> = (0..16u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    for kib in [256usize, 1024] {
        let mut g = c.benchmark_group(format!("sha1_many_{kib}KiB"));
        for n in [1usize, 2, 3, 4, 6, 8, 16] {
            let pieces: Vec<&[u8]> = data.chunks(kib << 10).take(n).collect();
            g.throughput(Throughput::Bytes((n * kib) as u64 * 1024));
            g.bench_with_input(BenchmarkId::new("lanes", n), &pieces, |b, p| {
                b.iter(|| ringseed::sha1x16::sha1_many(black_box(p)))
            });
            g.bench_with_input(BenchmarkId::new("sha_ni", n), &pieces, |b, p| {
                b.iter(|| {
                    p.iter()
                        .map(|m| ringseed::hash::sha1(black_box(m)))
                        .collect::<Vec<_>>()
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, sha1_pieces, sha1_many);
criterion_main!(benches);

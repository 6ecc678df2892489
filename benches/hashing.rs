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

criterion_group!(benches, sha1_pieces);
criterion_main!(benches);

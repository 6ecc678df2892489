//! Decoding a large .torrent: 20 000 files and 100 000 piece hashes (a few MiB of bencode),
//! plus the full metainfo parse (which adds path validation and layout building).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ringseed::bencode::{Bencode, decode};
use ringseed::metainfo::Metainfo;
use std::hint::black_box;

fn large_torrent() -> Vec<u8> {
    let files: Vec<Bencode> = (0..20_000)
        .map(|i| {
            let mut f = Bencode::dict();
            f.insert("length", Bencode::Int(5 * 16384));
            f.insert(
                "path",
                Bencode::List(vec![
                    Bencode::bytes(format!("dir{}", i / 100)),
                    Bencode::bytes(format!("file-{i:06}.dat")),
                ]),
            );
            f
        })
        .collect();
    let mut info = Bencode::dict();
    info.insert("files", Bencode::List(files));
    info.insert("name", Bencode::bytes("large"));
    info.insert("piece length", Bencode::Int(16384));
    info.insert("pieces", Bencode::Bytes(vec![7u8; 20 * 100_000]));
    let mut root = Bencode::dict();
    root.insert("announce", Bencode::bytes("http://127.0.0.1:1/announce"));
    root.insert("info", info);
    root.encode()
}

fn bench(c: &mut Criterion) {
    let t = large_torrent();
    let mut g = c.benchmark_group("large_torrent");
    g.throughput(Throughput::Bytes(t.len() as u64));
    g.bench_function("bencode_decode", |b| {
        b.iter(|| decode(black_box(&t)).map(|v| v.span.len()))
    });
    g.bench_function("metainfo_parse", |b| {
        b.iter(|| Metainfo::from_bytes(black_box(&t)).map(|m| m.info.layout.num_pieces))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

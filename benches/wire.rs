//! The wire codec on the upload path's hot spots: parsing a receive buffer holding 1000
//! pipelined requests (what a deep-queue leecher sends), and encoding the 13-byte piece headers
//! that precede every block.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ringseed::wire::{BlockRequest, Message, parse_message, piece_header};
use std::hint::black_box;

fn requests_buffer(n: u32) -> Vec<u8> {
    let mut buf = Vec::with_capacity(17 * n as usize);
    for i in 0..n {
        Message::Request(BlockRequest {
            index: i / 16,
            begin: (i % 16) * 16384,
            length: 16384,
        })
        .encode(&mut buf);
    }
    buf
}

fn parse(c: &mut Criterion) {
    let buf = requests_buffer(1000);
    let mut g = c.benchmark_group("wire");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("parse_1000_requests", |b| {
        b.iter(|| {
            let mut pos = 0;
            let mut sum = 0u64;
            while let Ok(Some((msg, used))) = parse_message(black_box(&buf[pos..]), 1 << 17) {
                if let Message::Request(r) = msg {
                    sum += u64::from(r.begin);
                }
                pos += used;
            }
            black_box(sum)
        })
    });
    g.bench_function("encode_1000_piece_headers", |b| {
        let mut out = Vec::with_capacity(13 * 1000);
        b.iter(|| {
            out.clear();
            for i in 0..1000u32 {
                out.extend_from_slice(&piece_header(black_box(i / 16), (i % 16) * 16384, 16384));
            }
            black_box(out.len())
        })
    });
    g.bench_function("encode_1000_requests", |b| {
        let mut out = Vec::with_capacity(17 * 1000);
        b.iter(|| {
            out.clear();
            for i in 0..1000u32 {
                Message::Request(BlockRequest {
                    index: black_box(i / 16),
                    begin: (i % 16) * 16384,
                    length: 16384,
                })
                .encode(&mut out);
            }
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);

//! The speed layer's per-voucher costs: parsing a voucher message, recovering its signer (the
//! verifier thread's work, one core), and the whole path through the ledger with group commit.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ringseed::speed::ledger::{self, Ledger, Verified};
use ringseed::speed::protocol::{Bid, SpeedMessage};
use ringseed::speed::voucher::{ChannelId, Domain, Voucher};
use ringseed::speed::wallet::{Address, Wallet};

const DOMAIN: Domain = Domain {
    chain_id: 199,
    contract: Address([0x32; 20]),
};
use std::hint::black_box;

fn vouchers(c: &mut Criterion) {
    let payer = Wallet::from_secret([1; 32]).unwrap();
    let seeder = Wallet::from_secret([2; 32]).unwrap();
    let msgs: Vec<Vec<u8>> = (1..=1000u128)
        .map(|a| {
            let v = Voucher::sign(&payer, DOMAIN, ChannelId([7; 32]), seeder.address(), a);
            SpeedMessage::Voucher(v).encode()
        })
        .collect();
    let parsed: Vec<Voucher> = msgs
        .iter()
        .map(|m| match SpeedMessage::parse(m) {
            Ok(SpeedMessage::Voucher(v)) => v,
            _ => unreachable!(),
        })
        .collect();
    let mut g = c.benchmark_group("speed");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("parse_1000_voucher_messages", |b| {
        b.iter(|| {
            for m in &msgs {
                black_box(SpeedMessage::parse(black_box(m)).is_ok());
            }
        })
    });
    g.sample_size(10);
    g.bench_function("verify_1000_signatures", |b| {
        b.iter(|| {
            for v in &parsed {
                black_box(Verified::check(*v, payer.address()).is_ok());
            }
        })
    });
    // Through the ledger: 1000 vouchers queued at once (one batch, one fsync per commit).
    g.bench_function("ledger_accept_1000_vouchers", |b| {
        b.iter_with_setup(
            || {
                let dir = tempfile::tempdir().unwrap();
                let writer = ringseed::db::DbWriter::start(
                    &dir.path().join("bench.db"),
                    &[(ledger::COMPONENT, ledger::MIGRATIONS)],
                )
                .unwrap();
                let l = Ledger::new(writer.handle(), seeder.address(), DOMAIN);
                let bid = Bid::sign(
                    &payer,
                    DOMAIN,
                    seeder.address(),
                    1,
                    ChannelId([7; 32]),
                    u128::MAX,
                );
                l.open_channel(bid, None)
                    .unwrap()
                    .recv_result()
                    .unwrap()
                    .unwrap();
                let verified: Vec<Verified> = parsed
                    .iter()
                    .map(|v| Verified::check(*v, payer.address()).unwrap())
                    .collect();
                (dir, writer, l, verified)
            },
            |(dir, writer, l, verified)| {
                let replies: Vec<_> = verified
                    .into_iter()
                    .map(|v| {
                        // try_call refuses when the writer's queue is full; 1000 fit.
                        l.accept(v, u128::MAX, [9; 20]).unwrap()
                    })
                    .collect();
                for r in replies {
                    black_box(r.recv_result().unwrap().is_ok());
                }
                writer.shutdown();
                drop(dir);
            },
        )
    });
    g.finish();
}

criterion_group!(benches, vouchers);
criterion_main!(benches);

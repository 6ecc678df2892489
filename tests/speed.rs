//! The BTT incentive layer end to end: the wallet, earnings and settle commands on a real
//! ledger database.
mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{ringseed, ringseed_ok};
use ringseed::speed::ledger::{self, Ledger, Verified};
use ringseed::speed::protocol::Bid;
use ringseed::speed::voucher::{ChannelId, Domain, Voucher};
use ringseed::speed::wallet::{Address, Wallet};

/// The contract the tests' seeders name (the v2 vectors' address; nothing is claimed here).
const DOMAIN: Domain = Domain {
    chain_id: 199,
    contract: Address([
        0x32, 0xdc, 0xab, 0x0e, 0xf3, 0xfb, 0x2d, 0xe2, 0xfc, 0xe1, 0xd2, 0xe0, 0x79, 0x9d, 0x36,
        0x23, 0x96, 0x71, 0xf0, 0x4a,
    ]),
};

fn config(dir: &Path) -> std::path::PathBuf {
    let state = dir.join("state");
    let path = dir.join("ringseed.toml");
    std::fs::write(
        &path,
        format!(
            "[state]\ndir = {:?}\n[speed]\nchain_id = 199\n",
            state.display().to_string()
        ),
    )
    .unwrap();
    path
}

#[test]
fn wallet_is_created_private_and_refused_when_exposed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let out = ringseed_ok(["--config".as_ref(), cfg.as_os_str(), "wallet".as_ref()]);
    let key = dir.path().join("state/wallet.key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let tron = out.lines().find_map(|l| l.strip_prefix("tron ")).unwrap();
    let evm = out.lines().find_map(|l| l.strip_prefix("evm  ")).unwrap();
    assert_eq!(Address::parse(tron).unwrap(), Address::parse(evm).unwrap());
    // Same key the second time.
    let again = ringseed_ok(["--config".as_ref(), cfg.as_os_str(), "wallet".as_ref()]);
    assert_eq!(again, out);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let refused = ringseed()
        .arg("--config")
        .arg(&cfg)
        .arg("wallet")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("group or others may read it"), "{err}");
}

#[test]
fn earnings_and_settle_read_the_ledger_and_export_each_claim_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let db = dir.path().join("state/ringseed.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    let seeder = Wallet::from_secret([2; 32]).unwrap();
    let writer =
        ringseed::db::DbWriter::start(&db, &[(ledger::COMPONENT, ledger::MIGRATIONS)]).unwrap();
    let l = Ledger::new(writer.handle(), seeder.address(), DOMAIN);
    for (i, amount) in [(1u8, 5_000_000_000_000_000_000u128), (2, 123)] {
        let payer = Wallet::from_secret([10 + i; 32]).unwrap();
        let channel = ChannelId([i; 32]);
        let bid = Bid::sign(&payer, DOMAIN, seeder.address(), 1, channel, u128::MAX);
        l.open_channel(bid, None)
            .unwrap()
            .recv_result()
            .unwrap()
            .unwrap();
        for a in [amount / 2, amount] {
            let v = Voucher::sign(&payer, DOMAIN, channel, seeder.address(), a);
            let v = Verified::check(v, payer.address()).unwrap();
            l.accept(v, u128::MAX, [7; 20])
                .unwrap()
                .recv_result()
                .unwrap()
                .unwrap();
        }
    }
    // Read-only beside the running writer.
    let json = ringseed_ok([
        "--config".as_ref(),
        cfg.as_os_str(),
        "earnings".as_ref(),
        "--json".as_ref(),
    ]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["total"], "5000000000000000123");
    assert_eq!(v["total_latest_vouchers"], "5000000000000000123");
    assert_eq!(v["by_payer"].as_array().unwrap().len(), 2);
    let table = ringseed_ok(["--config".as_ref(), cfg.as_os_str(), "earnings".as_ref()]);
    assert!(table.contains("5.000000 BTT"), "{table}");
    writer.shutdown();

    let claims = dir.path().join("claims.json");
    let out = ringseed_ok([
        "--config".as_ref(),
        cfg.as_os_str(),
        "settle".as_ref(),
        "--out".as_ref(),
        claims.as_os_str(),
    ]);
    assert!(out.contains("2 claim(s)"), "{out}");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&claims).unwrap()).unwrap();
    assert_eq!(doc["function"], "claim(bytes32,uint256,bytes)");
    assert_eq!(doc["claims"].as_array().unwrap().len(), 2);
    // Never overwritten, and a second export has nothing left.
    let again = ringseed()
        .arg("--config")
        .arg(&cfg)
        .args(["settle", "--out"])
        .arg(&claims)
        .output()
        .unwrap();
    assert!(!again.status.success());
    let second = dir.path().join("claims2.json");
    let out = ringseed_ok([
        "--config".as_ref(),
        cfg.as_os_str(),
        "settle".as_ref(),
        "--out".as_ref(),
        second.as_os_str(),
    ]);
    assert!(out.contains("0 claim(s)"), "{out}");
}

/// A blocking leecher over real TCP that downloads in a loop and, with a [`Payer`], bids and
/// pays as blocks arrive.
struct Leecher {
    stream: std::net::TcpStream,
    buf: Vec<u8>,
    their_speed_id: Option<u8>,
    payer: Option<Payer>,
    meta: ringseed::metainfo::Metainfo,
    next: u64,
    outstanding: usize,
    pub bytes: u64,
    unchoked: bool,
    /// Sign vouchers as blocks arrive (off: a payer that only bids and replays).
    pay_for_data: bool,
    /// Read at most this many bytes per second (the client, not the seeder, is the bottleneck,
    /// so bytes received measure time unchoked).
    rate: Option<u64>,
    anchor: (std::time::Instant, u64),
    /// When the payer saw its bid confirmed, and its first block after that.
    confirmed_at: Option<std::time::Instant>,
    first_block_after_confirm: Option<std::time::Instant>,
}

const OUR_SPEED_ID: u8 = 7;
const BLOCK: u32 = 16 << 10;

impl Leecher {
    fn connect(
        addr: std::net::SocketAddr,
        meta: &ringseed::metainfo::Metainfo,
        payer: Option<Payer>,
    ) -> Leecher {
        use ringseed::wire::extension::ExtHandshake;
        use ringseed::wire::{Handshake, Message};
        use std::io::Write;
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        // A seeder that stops answering fails the test instead of hanging it.
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        let id = meta.info.hash.wire_id();
        let mut out = Handshake::new(id, *b"-TS0001-speedtest000")
            .encode()
            .to_vec();
        let ext = ExtHandshake {
            m: vec![("rs_speed".into(), OUR_SPEED_ID)],
            ..Default::default()
        }
        .encode();
        Message::Extended {
            id: 0,
            payload: &ext,
        }
        .encode(&mut out);
        Message::Interested.encode(&mut out);
        stream.write_all(&out).unwrap();
        let mut hs = [0u8; 68];
        std::io::Read::read_exact(&mut stream, &mut hs).unwrap();
        Leecher {
            stream,
            buf: Vec::new(),
            their_speed_id: None,
            payer,
            meta: meta.clone(),
            next: 0,
            outstanding: 0,
            bytes: 0,
            unchoked: false,
            pay_for_data: true,
            rate: None,
            anchor: (std::time::Instant::now(), 0),
            confirmed_at: None,
            first_block_after_confirm: None,
        }
    }

    fn send_speed(&mut self, payload: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        let Some(id) = self.their_speed_id else {
            return Ok(());
        };
        let mut out = Vec::new();
        ringseed::wire::Message::Extended { id, payload }.encode(&mut out);
        self.stream.write_all(&out)
    }

    fn fill_requests(&mut self) -> std::io::Result<()> {
        use std::io::Write;
        let layout = &self.meta.info.layout;
        let total = layout.total_length;
        let mut out = Vec::new();
        while self.unchoked && self.outstanding < 32 {
            let at = self.next % total;
            let piece = (at / layout.piece_length) as u32;
            let begin = (at % layout.piece_length) as u32;
            let len = (BLOCK as u64).min(layout.piece_size(piece) - u64::from(begin)) as u32;
            self.next = at + u64::from(len);
            ringseed::wire::Message::Request(ringseed::wire::BlockRequest {
                index: piece,
                begin,
                length: len,
            })
            .encode(&mut out);
            self.outstanding += 1;
        }
        self.stream.write_all(&out)
    }

    /// Reads and handles one message; `Err` when the connection ends.
    fn step(&mut self) -> std::io::Result<()> {
        use ringseed::wire::{Message, parse_message};
        use std::io::Read;
        loop {
            match parse_message(&self.buf, 1 << 20) {
                Ok(Some((msg, used))) => {
                    let mut replies: Vec<Vec<u8>> = Vec::new();
                    let mut got = 0u64;
                    match msg {
                        Message::Extended { id: 0, payload } => {
                            let ext =
                                ringseed::wire::extension::ExtHandshake::parse(payload).unwrap();
                            self.their_speed_id = ext.id_of("rs_speed");
                        }
                        Message::Extended {
                            id: OUR_SPEED_ID,
                            payload,
                        } => {
                            if let Some(p) = &mut self.payer {
                                replies = p.on_message(payload);
                            }
                        }
                        Message::Unchoke => self.unchoked = true,
                        Message::Choke => {
                            self.unchoked = false;
                            self.outstanding = 0;
                        }
                        Message::Reject(_) => self.outstanding = self.outstanding.saturating_sub(1),
                        Message::Piece { data, .. } => {
                            self.outstanding = self.outstanding.saturating_sub(1);
                            got = data.len() as u64;
                        }
                        _ => {}
                    }
                    self.buf.drain(..used);
                    let now = std::time::Instant::now();
                    if self.confirmed_at.is_none()
                        && self.payer.as_ref().is_some_and(|p| p.confirmed())
                    {
                        self.confirmed_at = Some(now);
                    }
                    if got > 0
                        && self.confirmed_at.is_some()
                        && self.first_block_after_confirm.is_none()
                    {
                        self.first_block_after_confirm = Some(now);
                    }
                    if got > 0 {
                        self.bytes += got;
                        if let Some(rate) = self.rate {
                            // Pace from an anchor that never lags more than 20 ms: time spent
                            // choked must not become a burst at full speed later.
                            let (at, base) = self.anchor;
                            let due = at
                                + std::time::Duration::from_secs_f64(
                                    (self.bytes - base) as f64 / rate as f64,
                                );
                            let now = std::time::Instant::now();
                            if due > now {
                                std::thread::sleep(due - now);
                            } else if now - due > std::time::Duration::from_millis(20) {
                                self.anchor = (now, self.bytes);
                            }
                        }
                    }
                    if got > 0
                        && self.pay_for_data
                        && let Some(v) = self.payer.as_mut().and_then(|p| p.on_bytes(got))
                    {
                        replies.push(v);
                    }
                    for r in replies {
                        self.send_speed(&r)?;
                    }
                    return self.fill_requests();
                }
                Ok(None) => {
                    let mut chunk = [0u8; 64 << 10];
                    let n = self.stream.read(&mut chunk)?;
                    if n == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                    self.buf.extend_from_slice(&chunk[..n]);
                }
                Err(e) => return Err(std::io::Error::other(e.to_string())),
            }
        }
    }
}

use ringseed::speed::payer::Payer;

fn speed_config(dir: &Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("speed.toml");
    std::fs::write(
        &path,
        format!(
            "[state]\ndir = {:?}\n[speed]\nenabled = true\nchain_id = 199\ncontract = \"0x32dCAB0EF3FB2De2fce1D2E0799D36239671F04A\"\ncredit_window_kib = 256\n{extra}",
            dir.join("state").display().to_string()
        ),
    )
    .unwrap();
    path
}

fn payload(
    dir: &Path,
) -> (
    std::path::PathBuf,
    std::path::PathBuf,
    ringseed::metainfo::Metainfo,
) {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("paid.bin"), common::pattern(4 << 20, 11)).unwrap();
    let torrent = dir.join("paid.torrent");
    let meta = common::create_torrent(&data.join("paid.bin"), &torrent, &[]);
    (torrent, data, meta)
}

fn ledger_of(
    dir: &Path,
) -> (
    ringseed::speed::ledger::EarningsReport,
    Vec<(ChannelId, u128)>,
) {
    let conn = ringseed::db::open_read_only(&dir.join("state/ringseed.db")).unwrap();
    let report = ledger::report(&conn).unwrap();
    let channels = (1..=2u8)
        .map(|i| {
            let id = ChannelId([i; 32]);
            let c = ledger::load_channel(&conn, &id).unwrap();
            (id, c.map_or(0, |c| c.accepted))
        })
        .collect();
    (report, channels)
}

#[test]
fn kill_9_loses_no_acknowledged_voucher_and_counts_none_twice() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().unwrap();
    let (torrent, data, meta) = payload(dir.path());
    let cfg = speed_config(dir.path(), "");
    let global = ["--config".as_ref(), cfg.as_os_str()];
    let mut seeder = common::spawn_seeder_with(&torrent, &data, "127.0.0.1", &[], &global);
    let addr = seeder.addr;
    let acked: Arc<Mutex<Vec<u128>>> = Arc::new(Mutex::new(vec![0, 0]));
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (1..=2u8)
        .map(|i| {
            let (meta, acked, stop) = (meta.clone(), acked.clone(), stop.clone());
            std::thread::spawn(move || {
                let wallet = Wallet::from_secret([40 + i; 32]).unwrap();
                // 1 base unit per byte (times i): a voucher every MiB.
                let payer = Payer::new(wallet, ChannelId([i; 32]), u128::from(i) << 20, u128::MAX);
                let mut l = Leecher::connect(addr, &meta, Some(payer));
                while !stop.load(Ordering::Relaxed) && l.step().is_ok() {
                    let a = l.payer.as_ref().map_or(0, |p| p.acked());
                    acked.lock().unwrap()[usize::from(i - 1)] = a;
                }
                l.payer.map_or(0, |p| p.acked())
            })
        })
        .collect();
    // Kill while both are paying: each has had several vouchers acknowledged.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while acked.lock().unwrap().iter().any(|&a| a < 3 << 20) {
        assert!(
            std::time::Instant::now() < deadline,
            "payers never got 3 MiB acknowledged"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    common::signal(&seeder.child, nix::sys::signal::Signal::SIGKILL);
    seeder.child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    let seen: Vec<u128> = threads.into_iter().map(|t| t.join().unwrap()).collect();

    let (report, channels) = ledger_of(dir.path());
    for ((id, stored), seen) in channels.iter().zip(&seen) {
        assert!(*seen > 0);
        assert!(
            stored >= seen,
            "channel {id:?}: acknowledged {seen}, ledger has {stored}"
        );
    }
    assert_eq!(report.total, report.total_latest_vouchers);
    let total: u128 = report.total.parse().unwrap();
    assert_eq!(total, channels.iter().map(|c| c.1).sum::<u128>());

    // Restart on the same state; the payers come back and replay their last acknowledged
    // voucher: refused, nothing counted twice.
    let mut seeder = common::spawn_seeder_with(&torrent, &data, "127.0.0.1", &[], &global);
    for (i, seen) in (1..=2u8).zip(&seen) {
        let wallet = Wallet::from_secret([40 + i; 32]).unwrap();
        let payer = Payer::new(wallet, ChannelId([i; 32]), u128::from(i) << 20, u128::MAX);
        let mut l = Leecher::connect(seeder.addr, &meta, Some(payer));
        l.pay_for_data = false;
        // The bid's receipt reports the durable amount.
        while l.payer.as_ref().unwrap().acked() == 0 {
            l.step().unwrap();
        }
        assert_eq!(
            l.payer.as_ref().unwrap().acked(),
            channels[usize::from(i - 1)].1
        );
        let replay = l.payer.as_ref().unwrap().voucher_for(*seen).unwrap();
        l.send_speed(&replay).unwrap();
        while l.payer.as_ref().unwrap().refusals() == 0 {
            l.step().unwrap();
        }
        let stored = channels[usize::from(i - 1)].1;
        let expected = if stored == *seen {
            "replayed"
        } else {
            "decreasing"
        };
        assert_eq!(l.payer.as_ref().unwrap().last_refusal(), Some(expected));
    }
    common::signal(&seeder.child, nix::sys::signal::Signal::SIGTERM);
    assert!(seeder.child.wait().unwrap().success());
    let (after, _) = ledger_of(dir.path());
    assert_eq!(
        after.total, report.total,
        "earnings unchanged by the replays"
    );
}

/// Every kind of bad voucher sent to the real seeder comes back refused with its reason, is
/// counted under that reason in /metrics, and leaves the ledger as it was.
#[test]
fn bad_vouchers_are_refused_with_their_reason_by_the_running_seeder() {
    use ringseed::speed::protocol::SpeedMessage;
    let dir = tempfile::tempdir().unwrap();
    let (torrent, data, meta) = payload(dir.path());
    let cfg = speed_config(dir.path(), "");
    let global = ["--config".as_ref(), cfg.as_os_str()];
    let mut seeder = common::spawn_seeder_with(&torrent, &data, "127.0.0.1", &[], &global);
    let metrics = seeder
        .lines
        .by_ref()
        .find_map(|l| {
            let l = l.ok()?;
            l.strip_prefix("metrics on ").map(str::to_string)
        })
        .unwrap();
    let payee_line = seeder.lines.next().unwrap().unwrap();
    assert!(payee_line.starts_with("earning BTT as T"), "{payee_line}");
    let wallet = Wallet::from_secret([60; 32]).unwrap();
    let channel = ChannelId([1; 32]);
    let payer = Payer::new(wallet, channel, 1 << 20, 1_000_000);
    let mut l = Leecher::connect(seeder.addr, &meta, Some(payer));
    l.pay_for_data = false;
    while !l.payer.as_ref().unwrap().confirmed() {
        l.step().unwrap();
    }
    let p = |l: &Leecher| l.payer.as_ref().unwrap().acked();
    let offer_payee = {
        let v = l.payer.as_ref().unwrap().voucher_for(1).unwrap();
        match SpeedMessage::parse(&v).unwrap() {
            SpeedMessage::Voucher(v) => v.payee,
            _ => unreachable!(),
        }
    };
    l.send_speed(&l.payer.as_ref().unwrap().voucher_for(1000).unwrap())
        .unwrap();
    while p(&l) < 1000 {
        l.step().unwrap();
    }
    let refused = |l: &mut Leecher, payload: Vec<u8>| -> String {
        let before = l.payer.as_ref().unwrap().refusals();
        l.send_speed(&payload).unwrap();
        while l.payer.as_ref().unwrap().refusals() == before {
            l.step().unwrap();
        }
        l.payer
            .as_ref()
            .unwrap()
            .last_refusal()
            .unwrap()
            .to_string()
    };
    let payer_wallet = Wallet::from_secret([60; 32]).unwrap();
    let sign = |w: &Wallet, payee, amount| {
        SpeedMessage::Voucher(Voucher::sign(w, DOMAIN, channel, payee, amount)).encode()
    };
    let thief = Wallet::from_secret([61; 32]).unwrap();
    let other = Wallet::from_secret([62; 32]).unwrap().address();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("replayed", sign(&payer_wallet, offer_payee, 1000)),
        ("decreasing", sign(&payer_wallet, offer_payee, 999)),
        ("forged", sign(&thief, offer_payee, 2000)),
        ("wrong_payee", sign(&payer_wallet, other, 2000)),
        ("over_cap", sign(&payer_wallet, offer_payee, 1_000_001)),
        ("malformed", b"d1:t7:vouchere".to_vec()),
        ("wrong_chain", {
            let other_chain = Domain {
                chain_id: 1,
                ..DOMAIN
            };
            let v = Voucher::sign(&payer_wallet, other_chain, channel, offer_payee, 2000);
            SpeedMessage::Voucher(v).encode()
        }),
    ];
    for (reason, payload) in cases {
        assert_eq!(refused(&mut l, payload), reason);
    }
    // Bids must be signed by the payer they name: a stranger cannot shrink this channel's cap
    // (which would refuse the payer's next voucher as over_cap) or re-register it.
    let mut recap = Bid::sign(&thief, DOMAIN, offer_payee, 1 << 20, channel, 1);
    recap.payer = payer_wallet.address();
    let unsigned = Bid {
        signature: [0; 65],
        ..recap
    };
    for bid in [recap, unsigned] {
        assert_eq!(refused(&mut l, SpeedMessage::Bid(bid).encode()), "forged");
    }
    // A good one still goes through afterwards: bad vouchers and bids stall nothing, and the
    // cap is still the payer's own.
    l.send_speed(&sign(&payer_wallet, offer_payee, 5000))
        .unwrap();
    while p(&l) < 5000 {
        l.step().unwrap();
    }
    let body = http_get(&metrics);
    // One refusal each; `forged` three times: the voucher and the two bids.
    for (reason, n) in [
        ("replayed", 1),
        ("decreasing", 1),
        ("forged", 3),
        ("wrong_payee", 1),
        ("over_cap", 1),
        ("malformed", 1),
    ] {
        let line = format!("ringseed_speed_vouchers_rejected_total{{reason=\"{reason}\"}} {n}");
        assert!(body.contains(&line), "{line} missing in:\n{body}");
    }
    assert!(
        body.contains("ringseed_speed_vouchers_accepted_total 2"),
        "{body}"
    );
    // Channel ids cost nothing, so one connection may bid on 4 channels: 3 more go through (and
    // write no ledger row, having no voucher), the 5th is refused.
    let offer = ringseed::speed::protocol::Offer {
        chain_id: 199,
        contract: DOMAIN.contract,
        payee: offer_payee,
        min_price: 0,
        credit_window: 256 << 10,
    };
    let first = l.payer.take();
    for k in 2..=5u8 {
        let mut p = Payer::new(
            Wallet::from_secret([60; 32]).unwrap(),
            ChannelId([k; 32]),
            1 << 20,
            1_000_000,
        );
        let bid = p.on_message(&SpeedMessage::Offer(offer).encode()).remove(0);
        l.payer = Some(p);
        if k < 5 {
            l.send_speed(&bid).unwrap();
            while !l.payer.as_ref().unwrap().confirmed() {
                l.step().unwrap();
            }
        } else {
            assert_eq!(refused(&mut l, bid), "too_many_channels");
        }
    }
    l.payer = first;
    let body = http_get(&metrics);
    let line = "ringseed_speed_vouchers_rejected_total{reason=\"too_many_channels\"} 1";
    assert!(body.contains(line), "{line} missing in:\n{body}");
    common::signal(&seeder.child, nix::sys::signal::Signal::SIGTERM);
    assert!(seeder.child.wait().unwrap().success());
    let (report, channels) = ledger_of(dir.path());
    assert_eq!(report.total, "5000");
    assert_eq!(channels[0].1, 5000);
    assert_eq!(report.channels, 1, "bids without a voucher wrote rows");
}

fn http_get(url: &str) -> String {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = std::net::TcpStream::connect(host).unwrap();
    write!(s, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

/// A seeder on the real engine with `[speed]` on: one worker serving a generated `mib` MiB
/// torrent under `settings` (listen and workers set here) and the auction's `terms`.
struct SpeedSeeder {
    _dir: tempfile::TempDir,
    meta: ringseed::metainfo::Metainfo,
    svc: std::sync::Arc<ringseed::speed::service::SpeedService>,
    writer: ringseed::db::DbWriter,
    engine: ringseed::engine::Engine,
}

impl SpeedSeeder {
    fn start(
        mib: usize,
        seed: u64,
        terms: ringseed::choking::auction::Terms,
        settings: ringseed::engine::Settings,
    ) -> SpeedSeeder {
        use ringseed::engine::{Engine, Settings, Torrent};
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("c.bin"), common::pattern(mib << 20, seed)).unwrap();
        let meta = common::create_torrent(&data.join("c.bin"), &dir.path().join("c.torrent"), &[]);
        let setup = ringseed::speed::service::SpeedSetup {
            db_path: dir.path().join("state/ringseed.db"),
            key_path: dir.path().join("state/wallet.key"),
            terms,
            chain_id: 199,
            contract: DOMAIN.contract,
            chain: None,
        };
        let (svc, writer) = ringseed::speed::service::start_standalone(&setup).unwrap();
        let settings = Settings {
            workers: 1,
            pin_workers: false,
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            // Every test leecher connects from 127.0.0.1.
            max_connections_per_ip: 64,
            ..settings
        };
        let engine = Engine::start_with_speed(settings, Some(svc.clone())).unwrap();
        let (t, _) = Torrent::open(meta.clone(), &data, None).unwrap();
        engine.add_torrent(std::sync::Arc::new(t)).unwrap();
        SpeedSeeder {
            _dir: dir,
            meta,
            svc,
            writer,
            engine,
        }
    }

    fn stop(self) -> std::sync::Arc<ringseed::speed::service::SpeedService> {
        self.engine.stop();
        self.svc.stop();
        self.writer.shutdown();
        self.svc
    }
}

/// Contention on the real engine: 4 upload slots, 2 of them paid; payers at 1 and 3 units per
/// byte; 6 free peers that each download the torrent once. Every leecher reads at most 8 MiB/s,
/// so bytes measure time unchoked. Payers get more than any free peer, the higher price more,
/// and every free peer completes.
#[test]
fn under_contention_payers_get_more_and_every_free_peer_completes() {
    use ringseed::engine::Settings;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let seeder = SpeedSeeder::start(
        16,
        12,
        ringseed::choking::auction::Terms {
            paid_slots: 2,
            min_price: 1,
            credit_window: 16 << 20,
        },
        Settings {
            upload_slots: 4,
            rechoke_interval: std::time::Duration::from_millis(100),
            round_robin_quota: 1 << 20,
            ..Settings::default()
        },
    );
    let meta = seeder.meta.clone();
    let addr = seeder.engine.local_addr();
    let total = meta.info.layout.total_length;
    let stop = Arc::new(AtomicBool::new(false));
    let spawn = |price: Option<u128>, key: u8| {
        let (meta, stop) = (meta.clone(), stop.clone());
        std::thread::spawn(move || {
            let payer = price.map(|p| {
                let w = Wallet::from_secret([key; 32]).unwrap();
                Payer::new(w, ChannelId([key; 32]), p << 20, u128::MAX)
            });
            let free = payer.is_none();
            let mut l = Leecher::connect(addr, &meta, payer);
            l.rate = Some(8 << 20);
            while !stop.load(Ordering::Relaxed) && (!free || l.bytes < total) {
                if l.step().is_err() {
                    break;
                }
            }
            l.bytes
        })
    };
    let payers = [spawn(Some(1), 101), spawn(Some(3), 103)];
    let free: Vec<_> = (0..6).map(|i| spawn(None, 200 + i)).collect();
    let free_bytes: Vec<u64> = free.into_iter().map(|t| t.join().unwrap()).collect();
    stop.store(true, Ordering::Relaxed);
    let [low, high] = payers.map(|t| t.join().unwrap());
    let svc = seeder.stop();
    assert!(
        free_bytes.iter().all(|&b| b >= total),
        "a free peer did not complete: {free_bytes:?}"
    );
    let best_free = free_bytes.iter().copied().max().unwrap_or(0);
    eprintln!("payers: low {low}, high {high}; free peers {free_bytes:?}");
    assert!(high > low, "higher price {high} vs lower {low}");
    assert!(low > best_free, "payer {low} vs best free peer {best_free}");
    assert!(svc.stats.bytes_sold.load(Ordering::Relaxed) > 0);
    assert!(svc.stats.earned() > 0);
}

/// The mixed contention of issue 17 on the real engine: 8 upload slots, 4 of them paid, the
/// seeder's upload limit the bottleneck; 8 free peers arrive first and take every slot, then 8
/// payers bid. Each payer's first block comes within a second of its bid's confirmation (the
/// choking round is 2 s away: the slot is taken at once), payers receive at least twice the
/// free peers' bytes while both want data, and every free peer completes once the payers leave.
#[test]
fn a_confirmed_bid_takes_a_slot_at_once_and_payers_get_twice_the_free_bytes() {
    use ringseed::engine::Settings;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    use std::time::{Duration, Instant};
    let seeder = SpeedSeeder::start(
        16,
        17,
        ringseed::choking::auction::Terms {
            paid_slots: 4,
            min_price: 1,
            credit_window: 32 << 20,
        },
        Settings {
            upload_slots: 8,
            rechoke_interval: Duration::from_secs(2),
            optimistic_every: 1,
            upload_rate_limit: 32 << 20,
            ..Settings::default()
        },
    );
    let meta = seeder.meta.clone();
    let addr = seeder.engine.local_addr();
    let total = meta.info.layout.total_length;
    let stop_payers = Arc::new(AtomicBool::new(false));
    let (paid_bytes, free_bytes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let confirmed = Arc::new(AtomicUsize::new(0));
    let free_unchoked = Arc::new(AtomicUsize::new(0));
    let spawn = |key: Option<u8>| {
        let (meta, stop) = (meta.clone(), stop_payers.clone());
        let (paid, free, confirmed, free_unchoked) = (
            paid_bytes.clone(),
            free_bytes.clone(),
            confirmed.clone(),
            free_unchoked.clone(),
        );
        std::thread::spawn(move || {
            let payer = key.map(|k| {
                let w = Wallet::from_secret([k; 32]).unwrap();
                Payer::new(w, ChannelId([k; 32]), 2 << 20, u128::MAX)
            });
            let is_payer = payer.is_some();
            let mut l = Leecher::connect(addr, &meta, payer);
            let (mut seen, mut was_unchoked, mut counted) = (0, false, false);
            loop {
                if is_payer && stop.load(Ordering::Relaxed) {
                    break;
                }
                if !is_payer && l.bytes >= total {
                    break;
                }
                if l.step().is_err() {
                    break;
                }
                let group = if is_payer { &paid } else { &free };
                group.fetch_add(l.bytes - seen, Ordering::Relaxed);
                seen = l.bytes;
                if !is_payer && l.unchoked != was_unchoked {
                    was_unchoked = l.unchoked;
                    if l.unchoked {
                        free_unchoked.fetch_add(1, Ordering::Relaxed);
                    } else {
                        free_unchoked.fetch_sub(1, Ordering::Relaxed);
                    }
                }
                if !counted && l.confirmed_at.is_some() {
                    counted = true;
                    confirmed.fetch_add(1, Ordering::Relaxed);
                }
            }
            if !is_payer && was_unchoked {
                free_unchoked.fetch_sub(1, Ordering::Relaxed);
            }
            let wait = l
                .confirmed_at
                .zip(l.first_block_after_confirm)
                .map(|(c, b)| b.saturating_duration_since(c));
            (l.bytes, wait)
        })
    };
    // Free peers first: they take every slot on arrival.
    let free: Vec<_> = (0..8).map(|_| spawn(None)).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while free_unchoked.load(Ordering::Relaxed) < 8 {
        assert!(Instant::now() < deadline, "free peers were not unchoked");
        std::thread::sleep(Duration::from_millis(10));
    }
    let payers: Vec<_> = (0..8).map(|i| spawn(Some(150 + i))).collect();
    while confirmed.load(Ordering::Relaxed) < 8 {
        assert!(Instant::now() < deadline, "payers were not confirmed");
        std::thread::sleep(Duration::from_millis(10));
    }
    // From the last confirmation, count what each group receives until payers have 48 MiB more.
    let (paid0, free0) = (
        paid_bytes.load(Ordering::Relaxed),
        free_bytes.load(Ordering::Relaxed),
    );
    while paid_bytes.load(Ordering::Relaxed) - paid0 < 48 << 20 {
        assert!(
            Instant::now() < deadline + Duration::from_secs(20),
            "payers stalled"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let paid_window = paid_bytes.load(Ordering::Relaxed) - paid0;
    let free_window = free_bytes.load(Ordering::Relaxed) - free0;
    stop_payers.store(true, Ordering::Relaxed);
    let payer_results: Vec<(u64, Option<Duration>)> =
        payers.into_iter().map(|t| t.join().unwrap()).collect();
    let free_results: Vec<(u64, Option<Duration>)> =
        free.into_iter().map(|t| t.join().unwrap()).collect();
    seeder.stop();
    eprintln!(
        "window: payers {paid_window} B, free peers {free_window} B; payers' wait from \
         confirmation to first block: {:?}; free peers' bytes {:?}",
        payer_results.iter().map(|r| r.1).collect::<Vec<_>>(),
        free_results.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    for (i, (_, wait)) in payer_results.iter().enumerate() {
        let wait = wait.unwrap_or_else(|| panic!("payer {i} got no block after confirmation"));
        assert!(wait < Duration::from_secs(1), "payer {i} waited {wait:?}");
    }
    assert!(
        paid_window >= 2 * free_window,
        "payers {paid_window} vs free peers {free_window}"
    );
    assert!(
        free_results.iter().all(|r| r.0 >= total),
        "a free peer did not complete: {free_results:?}"
    );
}

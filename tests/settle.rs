//! Settlement on a real EVM (issue 17): a local anvil (from `contracts/node_modules`, installed
//! by scripts/test.sh with `npm ci --prefix contracts`) on loopback with BTTC's chain id 199;
//! the committed PaymentChannel artifact deployed with ringseed's own client; channels opened
//! and funded by payers with `ringseed channel open`; vouchers accepted into the node's ledger
//! through the seeder's own acceptance path; then `ringseed settle --submit`, killed with
//! SIGKILL while it waits for receipts and run again.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::ringseed;
use ringseed::speed::chain::abi;
use ringseed::speed::chain::rpc::{Rpc, parse_quantity};
use ringseed::speed::chain::send::send_and_wait;
use ringseed::speed::ledger::{Ledger, Verified};
use ringseed::speed::voucher::{ChannelId, Domain, Voucher};
use ringseed::speed::wallet::{Address, Wallet};
use serde_json::{Value, json};

const CHAIN: u64 = 199;
const BTT: u128 = 1_000_000_000_000_000_000;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn anvil_binary() -> Option<PathBuf> {
    let p = repo().join("contracts/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
    p.exists().then_some(p)
}

/// anvil on a free loopback port; killed on drop.
struct Anvil {
    child: Child,
    url: String,
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_anvil() -> Anvil {
    let bin = anvil_binary().expect(
        "anvil is missing: run `npm ci --prefix contracts` (scripts/test.sh does) to install it",
    );
    for _ in 0..3 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--chain-id",
                &CHAIN.to_string(),
                "--accounts",
                "0",
                "--silent",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start anvil");
        let anvil = Anvil {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let rpc = Rpc::new(&anvil.url).unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if rpc.chain_id().is_ok() {
                return anvil;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("anvil did not answer");
}

fn fund(rpc: &Rpc, who: &Address, amount: u128) {
    rpc.call(
        "anvil_setBalance",
        json!([who.to_evm(), format!("0x{amount:x}")]),
    )
    .unwrap();
}

fn write_key(path: &Path, secret: [u8; 32]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, ringseed::metainfo::hex(&secret)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The committed artifact's bytecode.
fn bytecode() -> Vec<u8> {
    let text = std::fs::read_to_string(repo().join("contracts/build/PaymentChannel.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let hex = v["bytecode"].as_str().unwrap();
    let hex = hex.strip_prefix("0x").unwrap_or(hex);
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn on_chain(rpc: &Rpc, contract: &Address, id: &ChannelId) -> abi::OnChainChannel {
    abi::decode_channel(&rpc.eth_call(contract, &abi::channels_calldata(id)).unwrap()).unwrap()
}

/// Gas fees `who` paid in blocks `from..=latest` (gasUsed × effectiveGasPrice of each of its
/// transactions), read back from the chain.
fn fees_paid(rpc: &Rpc, who: &Address, from: u64) -> u128 {
    let latest = parse_quantity(&rpc.call("eth_blockNumber", json!([])).unwrap()).unwrap() as u64;
    let mut fees = 0;
    for n in from..=latest {
        let block = rpc
            .call("eth_getBlockByNumber", json!([format!("0x{n:x}"), true]))
            .unwrap();
        for tx in block["transactions"].as_array().unwrap() {
            let sender = Address::parse(tx["from"].as_str().unwrap()).unwrap();
            if sender != *who {
                continue;
            }
            let hash: [u8; 32] = ringseed::speed::chain::rpc::parse_data(&tx["hash"])
                .unwrap()
                .try_into()
                .unwrap();
            fees += rpc.receipt(&hash).unwrap().unwrap().fee();
        }
    }
    fees
}

fn config(dir: &Path, contract: &Address) -> PathBuf {
    config_with(dir, contract, "")
}

/// [`config`] plus `extra` lines in `[speed]`.
fn config_with(dir: &Path, contract: &Address, extra: &str) -> PathBuf {
    let path = dir.join("ringseed.toml");
    std::fs::write(
        &path,
        format!(
            "[state]\ndir = {:?}\n[speed]\nenabled = true\nchain_id = {CHAIN}\ncontract = {:?}\ncredit_window_kib = 256\n{extra}",
            dir.join("state").display().to_string(),
            contract.to_evm()
        ),
    )
    .unwrap();
    path
}

fn settle(cfg: &Path, url: &str) -> Command {
    let mut cmd = ringseed();
    cmd.arg("--config").arg(cfg).args([
        "settle",
        "--submit",
        "--rpc",
        url,
        "--receipt-timeout",
        "60",
    ]);
    cmd
}

fn settle_json(cfg: &Path, url: &str) -> Value {
    let out = settle(cfg, url).output().unwrap();
    assert!(
        out.status.success(),
        "settle --submit failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn pending_claims(db: &Path) -> i64 {
    match ringseed::db::open_read_only(db) {
        Ok(c) => c
            .query_row("SELECT count(*) FROM speed_claims", [], |r| r.get(0))
            .unwrap_or(0),
        Err(_) => 0,
    }
}

#[test]
fn settle_submit_claims_every_voucher_exactly_once_even_across_a_kill_9() {
    let anvil = start_anvil();
    let rpc = Rpc::new(&anvil.url).unwrap();
    let dir = tempfile::tempdir().unwrap();

    // The contract, deployed from the committed artifact by ringseed's own client.
    let deployer = Wallet::from_secret([0x10; 32]).unwrap();
    fund(&rpc, &deployer.address(), 100 * BTT);
    let init = abi::deploy_data(&bytecode(), &Address([0; 20]));
    let (_, receipt) =
        send_and_wait(&rpc, &deployer, None, 0, init, Duration::from_secs(30)).unwrap();
    let contract = receipt.contract_address.expect("a contract address");
    let domain = Domain {
        chain_id: CHAIN,
        contract,
    };

    // The seeder: its key, its config naming the contract, a little coin for gas.
    let seeder_secret = [0x20; 32];
    let seeder = Wallet::from_secret(seeder_secret).unwrap();
    let me = seeder.address();
    write_key(&dir.path().join("state/wallet.key"), seeder_secret);
    let cfg = config(dir.path(), &contract);
    fund(&rpc, &me, BTT);

    // Payers open and fund channels with `ringseed channel open`: 3 payers × 4 channels.
    let expiry = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 86_400;
    let mut channels = Vec::new();
    for p in 0..3u8 {
        let secret = [0x30 + p; 32];
        let payer = Wallet::from_secret(secret).unwrap();
        fund(&rpc, &payer.address(), 1000 * BTT);
        let key = dir.path().join(format!("payer{p}.key"));
        write_key(&key, secret);
        for c in 0..4u8 {
            let id = ChannelId([0x40 + p * 4 + c; 32]);
            let deposit = 10 * BTT;
            let out = ringseed()
                .args(["channel", "open", "--rpc", &anvil.url])
                .args(["--contract", &contract.to_evm(), "--payee", &me.to_evm()])
                .args([
                    "--deposit",
                    &deposit.to_string(),
                    "--expiry",
                    &expiry.to_string(),
                ])
                .arg("--key")
                .arg(&key)
                .args(["--id", &id.to_hex()])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let opened: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(opened["channel"], id.to_hex());
            let c = on_chain(&rpc, &contract, &id);
            assert_eq!(
                (c.payer, c.payee, c.deposit, c.claimed),
                (payer.address(), me, deposit, 0)
            );
            channels.push((Wallet::from_secret(secret).unwrap(), id));
        }
    }

    // Vouchers into the node's ledger through the seeder's acceptance path (signature checked,
    // then accepted against the stored channel), several per channel: only the latest counts.
    let db = dir.path().join("state/ringseed.db");
    let pay = |rounds: std::ops::RangeInclusive<u128>, base: u128| {
        let writer = ringseed::db::DbWriter::start(&db, ringseed::DB_COMPONENTS).unwrap();
        let ledger = Ledger::new(writer.handle(), me, domain);
        let mut latest = Vec::new();
        for (k, (payer, id)) in channels.iter().enumerate() {
            let mut last = 0;
            for step in rounds.clone() {
                last = base + step * 1_000_000_007 * (k as u128 + 1);
                let v = Voucher::sign(payer, domain, *id, me, last);
                let v = Verified::check(v, payer.address()).unwrap();
                ledger
                    .accept(v, 10 * BTT, [7; 20])
                    .unwrap()
                    .recv_result()
                    .unwrap()
                    .unwrap();
            }
            latest.push(last);
        }
        writer.shutdown();
        latest
    };
    let latest = pay(1..=5, 0);
    let owed: u128 = latest.iter().sum();

    // Crash: mine every 3 s so the run is mid-wait, and kill it once its claims are recorded
    // (every recorded claim was sent, or is about to be).
    let start_block =
        parse_quantity(&rpc.call("eth_blockNumber", json!([])).unwrap()).unwrap() as u64 + 1;
    let balance0 = rpc.balance(&me).unwrap();
    rpc.call("evm_setAutomine", json!([false])).unwrap();
    rpc.call("evm_setIntervalMining", json!([3])).unwrap();
    let mut killed = settle(&cfg, &anvil.url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while pending_claims(&db) < 3 {
        assert!(
            Instant::now() < deadline,
            "settle --submit recorded no claims"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(killed.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    killed.wait().unwrap();
    assert!(
        pending_claims(&db) > 0,
        "the kill came after the run had finished"
    );
    // The rerun, still on 3-s blocks: re-sends what was in flight (or finds it mined), claims
    // the rest; every channel paid exactly its latest voucher, none twice (the balance would
    // show it), none lost.
    let report = settle_json(&cfg, &anvil.url);
    rpc.call("evm_setIntervalMining", json!([0])).unwrap();
    rpc.call("evm_setAutomine", json!([true])).unwrap();
    let statuses: Vec<&str> = report["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["status"].as_str().unwrap())
        .collect();
    println!(
        "after the kill: {statuses:?}, {} claims sent",
        report["claims_sent"]
    );
    assert!(
        statuses
            .iter()
            .all(|s| matches!(*s, "claimed" | "nothing_to_claim"))
    );
    for ((_, id), want) in channels.iter().zip(&latest) {
        assert_eq!(
            on_chain(&rpc, &contract, id).claimed,
            *want,
            "channel {}",
            id.to_hex()
        );
    }
    let fees = fees_paid(&rpc, &me, start_block);
    assert_eq!(
        rpc.balance(&me).unwrap() + fees,
        balance0 + owed,
        "balance + gas ≠ before + vouchers: {report:#}"
    );
    assert_eq!(pending_claims(&db), 0);
    let earnings = |field: &str| -> String {
        let out = ringseed()
            .arg("--config")
            .arg(&cfg)
            .args(["earnings", "--json"])
            .output()
            .unwrap();
        assert!(out.status.success());
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v[field].as_str().unwrap().to_string()
    };
    assert_eq!(earnings("total"), owed.to_string());
    assert_eq!(earnings("claimed"), owed.to_string());
    assert_eq!(earnings("unclaimed"), "0");

    // A second run pays nothing and sends nothing.
    let before = rpc.balance(&me).unwrap();
    let again = settle_json(&cfg, &anvil.url);
    assert_eq!(
        (again["paid"].as_str(), again["claims_sent"].as_u64()),
        (Some("0"), Some(0))
    );
    assert_eq!(rpc.balance(&me).unwrap(), before);

    // Channels stay open across settlements: more vouchers, one more run, timed (the figure
    // for docs/speed.md; not asserted).
    let latest2 = pay(6..=6, 0);
    let owed2: u128 = latest2.iter().zip(&latest).map(|(b, a)| b - a).sum();
    let block2 =
        parse_quantity(&rpc.call("eth_blockNumber", json!([])).unwrap()).unwrap() as u64 + 1;
    let t = Instant::now();
    let r2 = settle_json(&cfg, &anvil.url);
    let secs = t.elapsed().as_secs_f64();
    let gas: Vec<u64> = r2["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["gas_used"].as_u64().unwrap())
        .collect();
    println!(
        "settle --submit: {} claims in {secs:.2} s ({:.1} claims/s), gas per claim {:?}",
        gas.len(),
        gas.len() as f64 / secs,
        gas
    );
    assert_eq!(gas.len(), channels.len());
    assert_eq!(r2["paid"].as_str().unwrap(), owed2.to_string());
    let fees2 = fees_paid(&rpc, &me, block2);
    assert_eq!(rpc.balance(&me).unwrap() + fees2, before + owed2);
    assert_eq!(earnings("claimed"), (owed + owed2).to_string());
}

/// The whole path: a seeder with `[speed]` on, paying `ringseed bench` leechers whose channels
/// `bench --rpc` opens on chain first, then `settle --submit` pays out exactly what the seeder's
/// ledger accepted.
#[test]
fn paying_bench_leechers_are_paid_out_on_chain() {
    let anvil = start_anvil();
    let rpc = Rpc::new(&anvil.url).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let deployer = Wallet::from_secret([0x11; 32]).unwrap();
    fund(&rpc, &deployer.address(), 100 * BTT);
    let init = abi::deploy_data(&bytecode(), &Address([0; 20]));
    let (_, receipt) =
        send_and_wait(&rpc, &deployer, None, 0, init, Duration::from_secs(30)).unwrap();
    let contract = receipt.contract_address.unwrap();
    let seeder_secret = [0x21; 32];
    let me = Wallet::from_secret(seeder_secret).unwrap().address();
    write_key(&dir.path().join("state/wallet.key"), seeder_secret);
    fund(&rpc, &me, BTT);
    // The seeder reads each bid's channel on chain before granting paid slots.
    let cfg = config_with(dir.path(), &contract, &format!("rpc = {:?}\n", anvil.url));
    let payer_key = dir.path().join("payer.key");
    write_key(&payer_key, [0x31; 32]);
    let payer = Wallet::from_secret([0x31; 32]).unwrap();
    fund(&rpc, &payer.address(), 1000 * BTT);

    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("p.bin"), common::pattern(8 << 20, 5)).unwrap();
    let torrent = dir.path().join("p.torrent");
    common::create_torrent(&data.join("p.bin"), &torrent, &[]);
    let global = ["--config".as_ref(), cfg.as_os_str()];
    let mut seeder = common::spawn_seeder_with(&torrent, &data, "127.0.0.1", &[], &global);
    let metrics = seeder.metrics_addr();
    let windows = || common::metric_at(metrics, "ringseed_speed_credit_windows");

    let bench = ringseed()
        .args(["bench", "--peer", &seeder.addr.to_string(), "--peers", "2"])
        .args(["--duration", "2", "--json"])
        .args([
            "--pay",
            "1000000000000",
            "--budget",
            &(10 * BTT).to_string(),
        ])
        .args(["--rpc", &anvil.url, "--contract", &contract.to_evm()])
        .arg("--payer-key")
        .arg(&payer_key)
        .args(["--payee", &me.to_evm()])
        .arg(&torrent)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // While the leechers pay, each confirmed connection holds a credit window on its channel;
    // when they leave, their connections give the windows back.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut most = 0.0f64;
    while most < 1.0 && std::time::Instant::now() < deadline {
        most = most.max(windows());
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = bench.wait_with_output().unwrap();
    assert!(
        matches!(out.status.code(), Some(0 | 2)),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(most >= 1.0, "no connection ever held a credit window");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while windows() > 0.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "credit windows still held after the leechers left: {}",
            windows()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    common::signal(&seeder.child, nix::sys::signal::Signal::SIGTERM);
    assert!(seeder.child.wait().unwrap().success());

    let earned = |field: &str| -> u128 {
        let out = ringseed()
            .arg("--config")
            .arg(&cfg)
            .args(["earnings", "--json"])
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v[field].as_str().unwrap().parse().unwrap()
    };
    let total = earned("total");
    assert!(total > 0, "the seeder accepted no voucher");
    let start_block =
        parse_quantity(&rpc.call("eth_blockNumber", json!([])).unwrap()).unwrap() as u64 + 1;
    let before = rpc.balance(&me).unwrap();
    let report = settle_json(&cfg, &anvil.url);
    // Every channel the seeder took a voucher on is claimed (how many of the two leechers got
    // paid slots in so short a run is the auction's business, not this test's).
    let claimed = report["channels"].as_array().unwrap();
    assert!(!claimed.is_empty(), "{report:#}");
    assert!(
        claimed.iter().all(|c| c["status"] == "claimed"),
        "{report:#}"
    );
    let fees = fees_paid(&rpc, &me, start_block);
    assert_eq!(rpc.balance(&me).unwrap() + fees, before + total);
    assert_eq!(earned("claimed"), total);
    assert_eq!(earned("unclaimed"), 0);
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Opens channel `id` from `payer` to `payee` on chain.
fn open(
    rpc: &Rpc,
    contract: &Address,
    payer: &Wallet,
    id: &ChannelId,
    payee: &Address,
    expiry: u64,
    deposit: u128,
) {
    let data = abi::open_calldata(id, payee, expiry, deposit);
    let (_, r) = send_and_wait(
        rpc,
        payer,
        Some(contract),
        deposit,
        data,
        Duration::from_secs(30),
    )
    .unwrap();
    assert!(r.success, "open reverted");
}

/// With `[speed] rpc`, a bid is confirmed only when `channels(id)` shows a channel this seeder
/// can be paid from: each way a channel can fail is refused with its own reason (and counted),
/// a good channel is confirmed, a channel whose deposit the ledger's unclaimed vouchers have
/// spent is refused, and an unreachable node refuses rather than trusts.
#[test]
fn bids_are_checked_on_chain_before_paid_slots() {
    use ringseed::speed::onchain::ChainCheck;
    use ringseed::speed::protocol::Bid;
    use ringseed::speed::service::{Job, Outcome, PeerRef, SpeedSetup, start_standalone};
    use ringseed::speed::voucher::Rejection;

    let anvil = start_anvil();
    let rpc = Rpc::new(&anvil.url).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let deployer = Wallet::from_secret([0x11; 32]).unwrap();
    fund(&rpc, &deployer.address(), 100 * BTT);
    let init = abi::deploy_data(&bytecode(), &Address([0; 20]));
    let (_, receipt) =
        send_and_wait(&rpc, &deployer, None, 0, init, Duration::from_secs(30)).unwrap();
    let contract = receipt.contract_address.unwrap();
    let seeder_secret = [0x21; 32];
    let me = Wallet::from_secret(seeder_secret).unwrap().address();
    let key_path = dir.path().join("wallet.key");
    write_key(&key_path, seeder_secret);
    let payer = Wallet::from_secret([0x31; 32]).unwrap();
    let stranger = Wallet::from_secret([0x32; 32]).unwrap();
    fund(&rpc, &payer.address(), 1000 * BTT);

    let far = now_s() + 86_400;
    let id = |n: u8| ChannelId([n; 32]);
    open(&rpc, &contract, &payer, &id(1), &me, far, 10 * BTT);
    open(
        &rpc,
        &contract,
        &payer,
        &id(2),
        &Address([0x99; 20]),
        far,
        10 * BTT,
    );
    open(
        &rpc,
        &contract,
        &payer,
        &id(3),
        &me,
        now_s() + 600,
        10 * BTT,
    );
    open(&rpc, &contract, &payer, &id(4), &me, far, 0);
    // Holds less than one 256 KiB credit window at 1 BTT per MiB.
    open(&rpc, &contract, &payer, &id(5), &me, far, BTT / 8);
    // 1 BTT, to be spent by vouchers the chain has not seen claimed.
    open(&rpc, &contract, &payer, &id(6), &me, far, BTT);
    // Two credit windows at 1 BTT per MiB, and one, for connections sharing a channel.
    open(&rpc, &contract, &payer, &id(7), &me, far, BTT / 2);
    open(&rpc, &contract, &payer, &id(8), &me, far, BTT / 4);

    let domain = Domain {
        chain_id: CHAIN,
        contract,
    };
    let start = |url: &str, db: &str| {
        let setup = SpeedSetup {
            db_path: dir.path().join(db),
            key_path: key_path.clone(),
            terms: ringseed::choking::auction::Terms {
                paid_slots: 4,
                min_price: 0,
                credit_window: 256 << 10,
            },
            chain_id: CHAIN,
            contract,
            chain: Some(ChainCheck {
                url: url.to_string(),
                min_channel_life_s: 3600,
            }),
        };
        start_standalone(&setup).unwrap()
    };
    let peer = |conn_id: u64| PeerRef {
        worker: 0,
        slot: 0,
        conn_id,
    };
    let send = |svc: &ringseed::speed::service::SpeedService, conn_id: u64, bid: Bid| {
        svc.submit(Job::Bid {
            to: peer(conn_id),
            bid,
            // An address per connection: each takes a fresh window from its own allowance.
            fresh_from: Some(std::net::IpAddr::from([127, 1, 0, conn_id as u8])),
            funds: None,
        })
    };
    let answer = |rx: &crossbeam_channel::Receiver<Outcome>| match rx
        .recv_timeout(Duration::from_secs(20))
        .unwrap()
    {
        Outcome::Bid { to, result } => (to.conn_id, result.map(|c| c.accepted)),
        o => panic!("unexpected {o:?}"),
    };
    let ask = |svc: &ringseed::speed::service::SpeedService,
               rx: &crossbeam_channel::Receiver<Outcome>,
               conn_id: u64,
               bid: Bid|
     -> Result<u128, Rejection> {
        send(svc, conn_id, bid)?;
        let (to, result) = answer(rx);
        assert_eq!(to, conn_id);
        result
    };
    let (svc, writer) = start(&anvil.url, "a.db");
    let wake = std::sync::Arc::new(nix::sys::eventfd::EventFd::new().unwrap());
    let rx = svc.register_worker(0, wake);
    let bid =
        |who: &Wallet, n: u8, price: u128, cap: u128| Bid::sign(who, domain, me, price, id(n), cap);
    let cases = [
        (bid(&payer, 9, 1, BTT), Err(Rejection::NotOnChain)),
        (bid(&payer, 2, 1, BTT), Err(Rejection::NotOurChannel)),
        (bid(&payer, 3, 1, BTT), Err(Rejection::Expiring)),
        (bid(&payer, 4, 1, 0), Err(Rejection::Underfunded)),
        (bid(&payer, 5, BTT, BTT / 8), Err(Rejection::Underfunded)),
        // A cap above the deposit would let vouchers the contract cannot pay be accepted.
        (bid(&payer, 1, 1, 11 * BTT), Err(Rejection::Underfunded)),
        // Someone else's channel, bid with the bidder's own (valid) key.
        (bid(&stranger, 1, 1, BTT), Err(Rejection::Forged)),
        (bid(&payer, 1, 1_000, 10 * BTT), Ok(0)),
    ];
    for (i, (b, want)) in cases.into_iter().enumerate() {
        assert_eq!(ask(&svc, &rx, i as u64, b), want, "case {i}");
    }
    for (r, n) in [
        (Rejection::NotOnChain, 1),
        (Rejection::NotOurChannel, 1),
        (Rejection::Expiring, 1),
        (Rejection::Underfunded, 3),
        (Rejection::Forged, 1),
        (Rejection::ChainUnavailable, 0),
    ] {
        assert_eq!(svc.stats.rejected(r), n, "{r}");
    }
    assert_eq!(svc.stats.bids.load(std::sync::atomic::Ordering::Relaxed), 1);

    // What the ledger accepted on a channel and nobody claimed yet is spent too: the chain
    // still shows the whole deposit, the ledger knows most of it is owed. One credit window
    // (256 KiB) at 1 BTT per MiB needs BTT / 4 left.
    let pay = |conn_id: u64, amount: u128| {
        svc.submit(Job::Voucher {
            to: peer(conn_id),
            voucher: Voucher::sign(&payer, domain, id(6), me, amount),
            payer: payer.address(),
            cap: BTT,
            torrent: [6; 20],
        })
        .unwrap();
        match rx.recv_timeout(Duration::from_secs(20)).unwrap() {
            Outcome::Voucher { result, .. } => assert!(result.is_ok(), "{result:?}"),
            o => panic!("unexpected {o:?}"),
        }
    };
    assert_eq!(ask(&svc, &rx, 20, bid(&payer, 6, BTT, BTT)), Ok(0));
    pay(20, BTT * 3 / 4);
    // Each connection below bids after the one before it closed (its window ends with it).
    svc.gone(peer(20));
    // Exactly one window left: still confirmed.
    assert_eq!(
        ask(&svc, &rx, 21, bid(&payer, 6, BTT, BTT)),
        Ok(BTT * 3 / 4)
    );
    pay(21, BTT * 7 / 8);
    svc.gone(peer(21));
    // An eighth left, half a window: refused, though the chain shows 1 BTT unclaimed.
    assert_eq!(
        ask(&svc, &rx, 22, bid(&payer, 6, BTT, BTT)),
        Err(Rejection::Underfunded)
    );
    // A cheaper bid that an eighth still pays for is confirmed.
    assert_eq!(
        ask(&svc, &rx, 23, bid(&payer, 6, BTT / 2, BTT)),
        Ok(BTT * 7 / 8)
    );

    // Connections of one payer on one channel each take a credit window unpaid: the deposit
    // must cover all of them. Channel 7 holds two windows.
    assert_eq!(ask(&svc, &rx, 30, bid(&payer, 7, BTT, BTT / 2)), Ok(0));
    assert_eq!(ask(&svc, &rx, 31, bid(&payer, 7, BTT, BTT / 2)), Ok(0));
    assert_eq!(
        ask(&svc, &rx, 32, bid(&payer, 7, BTT, BTT / 2)),
        Err(Rejection::Underfunded),
        "a third window would be owed from two windows' deposit"
    );
    // A connection's own window is not counted against its re-bid (another cap, so it goes
    // to the ledger again).
    assert_eq!(ask(&svc, &rx, 30, bid(&payer, 7, BTT, BTT / 4)), Ok(0));
    // Once one closes, another takes its place.
    svc.gone(peer(30));
    assert_eq!(ask(&svc, &rx, 32, bid(&payer, 7, BTT, BTT / 2)), Ok(0));
    assert_eq!(
        ask(&svc, &rx, 33, bid(&payer, 7, BTT / 2, BTT / 2)),
        Err(Rejection::Underfunded),
        "even half a window is not left"
    );
    // Two bids at the same moment on a channel that holds one window: exactly one wins,
    // whatever order the on-chain check and the verifier take them in.
    send(&svc, 40, bid(&payer, 8, BTT, BTT / 4)).unwrap();
    send(&svc, 41, bid(&payer, 8, BTT, BTT / 4)).unwrap();
    let mut both = [answer(&rx), answer(&rx)];
    both.sort_by_key(|(conn, _)| *conn);
    assert!(
        matches!(
            both,
            [(40, Ok(0)), (41, Err(Rejection::Underfunded))]
                | [(40, Err(Rejection::Underfunded)), (41, Ok(0))]
        ),
        "{both:?}"
    );
    svc.stop();
    drop(writer);

    // A node that cannot be reached: refused, never trusted.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let (svc, writer) = start(&dead_url, "b.db");
    let wake = std::sync::Arc::new(nix::sys::eventfd::EventFd::new().unwrap());
    let rx = svc.register_worker(0, wake);
    assert_eq!(
        ask(&svc, &rx, 1, bid(&payer, 1, 1_000, 10 * BTT)),
        Err(Rejection::ChainUnavailable)
    );
    assert_eq!(svc.stats.rejected(Rejection::ChainUnavailable), 1);
    svc.stop();
    drop(writer);
}

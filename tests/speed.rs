//! The BTT incentive layer end to end: the wallet, earnings and settle commands on a real
//! ledger database.
mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{ringseed, ringseed_ok};
use ringseed::speed::ledger::{self, Ledger, Verified};
use ringseed::speed::protocol::Bid;
use ringseed::speed::voucher::{ChannelId, Voucher};
use ringseed::speed::wallet::{Address, Wallet};

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
    let l = Ledger::new(writer.handle(), seeder.address(), 199);
    for (i, amount) in [(1u8, 5_000_000_000_000_000_000u128), (2, 123)] {
        let payer = Wallet::from_secret([10 + i; 32]).unwrap();
        let channel = ChannelId([i; 32]);
        let bid = Bid {
            price: 1,
            channel,
            payer: payer.address(),
            cap: u128::MAX,
        };
        l.open_channel(bid).unwrap().recv_result().unwrap().unwrap();
        for a in [amount / 2, amount] {
            let v = Voucher::sign(&payer, 199, channel, seeder.address(), a);
            let v = Verified::check(v, payer.address()).unwrap();
            l.accept(v, [7; 20])
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

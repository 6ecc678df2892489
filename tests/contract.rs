//! The payment-channel contract (`contracts/PaymentChannel.sol`, issue 17) on a real local EVM:
//! runs the Node.js tests in `contracts/test/` (node's built-in test runner, a real `anvil` from
//! the npm package `@foundry-rs/anvil`, the contract compiled by `solc` from npm, vouchers signed
//! by `ethers` as wallets sign them). `scripts/test.sh` installs them with
//! `npm ci --prefix contracts`; without them this test fails and says so: it never skips, so CI
//! cannot pass without having run the contract's tests.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The fewest tests the Node files hold today: a run with fewer (a file not found, a suite
/// skipped) fails here rather than passing on nothing.
const MIN_TESTS: usize = 13;

fn contracts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contracts")
}

/// Why the Node.js side cannot run, if it cannot.
fn missing_tools(dir: &Path) -> Option<String> {
    match Command::new("node").arg("--version").output() {
        Ok(o) if o.status.success() => {}
        _ => {
            return Some(
                "`node` is not installed (scripts/test.sh installs Debian's nodejs and npm)".into(),
            );
        }
    }
    for dep in ["solc", "ethers", "@foundry-rs/anvil"] {
        if !dir
            .join("node_modules")
            .join(dep)
            .join("package.json")
            .is_file()
        {
            return Some(format!(
                "contracts/node_modules lacks {dep}: run `npm ci --prefix contracts` \
                 (scripts/test.sh does)"
            ));
        }
    }
    None
}

/// The `# name N` summary line of node's TAP output.
fn summary(out: &str, name: &str) -> Option<usize> {
    out.lines()
        .filter_map(|l| l.strip_prefix(&format!("# {name} ")))
        .find_map(|n| n.trim().parse().ok())
}

#[test]
fn payment_channel_contract_on_a_local_chain() {
    let dir = contracts_dir();
    if let Some(why) = missing_tools(&dir) {
        panic!("cannot run the contract's tests: {why}");
    }
    let mut files: Vec<String> = std::fs::read_dir(dir.join("test"))
        .expect("contracts/test is in the repository")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".test.mjs"))
        .map(|n| format!("test/{n}"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 3,
        "contracts/test has too few test files: {files:?}"
    );
    let out = Command::new("node")
        .args([
            "--test",
            "--test-reporter=tap",
            "--test-timeout=60000",
            "--test-concurrency=4",
        ])
        .args(&files)
        .current_dir(&dir)
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The gas figures and the vectors, for the log (docs/speed.md §6 quotes them).
    for line in stdout.lines().filter(|l| {
        let l = l.trim_start();
        l.starts_with("# gas ") || l.starts_with("# voucher ") || l.starts_with("# bid ")
    }) {
        println!("{}", line.trim_start());
    }
    let failed = summary(&stdout, "fail");
    let passed = summary(&stdout, "pass");
    assert!(
        out.status.success() && failed == Some(0),
        "the contract's tests failed ({:?}):\n{stdout}\n{stderr}",
        out.status
    );
    let passed = passed.unwrap_or(0);
    assert!(
        passed >= MIN_TESTS,
        "only {passed} contract tests passed, expected at least {MIN_TESTS}:\n{stdout}"
    );
    println!("{passed} contract tests passed");
}

/// `n` as a big-endian ABI word.
fn word(n: u128) -> [u8; 32] {
    ringseed::speed::voucher::abi_uint(n)
}

/// `a` as an ABI address word.
fn address_word(a: &ringseed::speed::wallet::Address) -> [u8; 32] {
    ringseed::speed::voucher::abi_address(a)
}

/// The EIP-712 digest: keccak256(0x19 0x01 ‖ domain separator ‖ struct hash).
fn typed_digest(domain: &[u8; 32], structure: &[u8; 32]) -> [u8; 32] {
    let mut m = vec![0x19, 0x01];
    m.extend_from_slice(domain);
    m.extend_from_slice(structure);
    ringseed::speed::wallet::keccak256(&m)
}

/// The v2 vectors of docs/speed.md (which `contracts/test/vectors.test.mjs` checks against ethers,
/// the deployed contract and a real claim) come out of ringseed's own Keccak, secp256k1 signing
/// (RFC 6979) and claim calldata byte for byte: the Rust side can switch to v2 with the
/// primitives it has, and its signatures will be the ones the contract pays.
#[test]
fn ringseed_primitives_reproduce_the_v2_vectors() {
    use ringseed::metainfo::hex;
    use ringseed::speed::voucher::ChannelId;
    use ringseed::speed::wallet::{Address, Wallet, keccak256, recover_digest};

    let payer = Wallet::from_secret([1; 32]).expect("a valid secret");
    let payee = Wallet::from_secret([2; 32])
        .expect("a valid secret")
        .address();
    // The contract: the payer's first deployment, keccak256(rlp([payer, nonce 0]))[12..].
    let mut rlp = vec![0xd6, 0x94];
    rlp.extend_from_slice(&payer.address().0);
    rlp.push(0x80);
    let mut contract = Address([0; 20]);
    contract.0.copy_from_slice(&keccak256(&rlp)[12..]);

    let domain_type =
        "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)";
    let voucher_type = "Voucher(bytes32 channel,address payee,uint256 amount)";
    let bid_type = "Bid(bytes32 channel,address payee,uint256 price,uint256 cap)";
    let mut d = Vec::new();
    d.extend_from_slice(&keccak256(domain_type.as_bytes()));
    d.extend_from_slice(&keccak256(b"ringseed"));
    d.extend_from_slice(&keccak256(b"1"));
    d.extend_from_slice(&word(199));
    d.extend_from_slice(&address_word(&contract));
    let domain = keccak256(&d);

    let channel = ChannelId([0x11; 32]);
    let amount: u128 = 1_000_000_000_000_000_000;
    let mut v = Vec::new();
    v.extend_from_slice(&keccak256(voucher_type.as_bytes()));
    v.extend_from_slice(&channel.0);
    v.extend_from_slice(&address_word(&payee));
    v.extend_from_slice(&word(amount));
    let voucher_struct = keccak256(&v);
    let voucher_digest = typed_digest(&domain, &voucher_struct);
    let voucher_sig = payer.sign(voucher_digest);

    let mut b = Vec::new();
    b.extend_from_slice(&keccak256(bid_type.as_bytes()));
    b.extend_from_slice(&channel.0);
    b.extend_from_slice(&address_word(&payee));
    b.extend_from_slice(&word(1_000_000_000_000_000)); // 0.001 BTT per MiB
    b.extend_from_slice(&word(10_000_000_000_000_000_000)); // cap 10 BTT
    let bid_struct = keccak256(&b);
    let bid_digest = typed_digest(&domain, &bid_struct);
    let bid_sig = payer.sign(bid_digest);

    assert_eq!(
        recover_digest(&voucher_sig, voucher_digest),
        Some(payer.address())
    );
    assert_eq!(recover_digest(&bid_sig, bid_digest), Some(payer.address()));
    let calldata = ringseed::speed::ledger::claim_calldata(&channel, amount, &voucher_sig);

    let doc = include_str!("../docs/speed.md");
    let expected = [
        ("payer", payer.address().to_evm()),
        ("payee", payee.to_evm()),
        ("contract", contract.to_evm()),
        ("domain typehash", hex(&keccak256(domain_type.as_bytes()))),
        ("voucher typehash", hex(&keccak256(voucher_type.as_bytes()))),
        ("bid typehash", hex(&keccak256(bid_type.as_bytes()))),
        ("domain separator", hex(&domain)),
        ("voucher struct", hex(&voucher_struct)),
        ("voucher digest", hex(&voucher_digest)),
        ("voucher signature", hex(&voucher_sig)),
        ("bid struct", hex(&bid_struct)),
        ("bid digest", hex(&bid_digest)),
        ("bid signature", hex(&bid_sig)),
        ("claim calldata", hex(&calldata)),
    ];
    for (name, value) in expected {
        let line = format!("{name:<18} {value}");
        println!("{line}");
        assert!(
            doc.lines().any(|l| l.trim_end() == line),
            "docs/speed.md's v2 vectors lack `{line}`"
        );
    }
}

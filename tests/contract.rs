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

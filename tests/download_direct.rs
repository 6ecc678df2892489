//! `ringseed download` with `engine.download_writes = "direct"`, from a `ringseed seed` on
//! loopback: a multi-file torrent whose files start and end mid-page and whose piece size
//! (48 KiB) divides no file comes out byte-identical, with exactly the whole pages of the
//! page-aligned files written with `O_DIRECT` (the rest through the page cache); on a
//! filesystem that refuses `O_DIRECT` (ramfs, in the test's own user and mount namespaces) the
//! download completes through the page cache with one warning.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{create_torrent, pattern, spawn_seeder_with, stat};
use serde_json::Value;

/// Files of the torrent (in `tree/`), in order: `a` is whole pages, so `b` starts at a page
/// boundary and ends mid-page; `c` and `d` start mid-page (nothing of them can go direct).
const FILES: [(&str, usize); 4] = [
    ("a.bin", 51 * 4096),
    ("b.bin", 1_000_003),
    ("c.bin", 17),
    ("d.bin", 500_001),
];

/// Bytes written with `O_DIRECT`: every whole page of `a` and `b`.
const DIRECT_BYTES: u64 = 51 * 4096 + (1_000_003 / 4096) * 4096;

struct Setup {
    dir: tempfile::TempDir,
    torrent: PathBuf,
    config: PathBuf,
    seeder: common::Seeder,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = self.seeder.child.kill();
        let _ = self.seeder.child.wait();
    }
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("data/tree");
    std::fs::create_dir_all(&tree).unwrap();
    for (i, (name, len)) in FILES.iter().enumerate() {
        std::fs::write(tree.join(name), pattern(*len, 40 + i as u64)).unwrap();
    }
    let torrent = dir.path().join("tree.torrent");
    create_torrent(&tree, &torrent, &["--no-date", "--piece-kib", "48"]);
    let config = dir.path().join("direct.toml");
    std::fs::write(&config, "[engine]\ndownload_writes = \"direct\"\n").unwrap();
    let seeder = spawn_seeder_with(&torrent, &dir.path().join("data"), "127.0.0.1", &[], &[]);
    Setup {
        dir,
        torrent,
        config,
        seeder,
    }
}

/// The `ringseed download` arguments: two workers, the seeder as only peer, JSON report.
fn download_args(s: &Setup, out: &Path) -> Vec<String> {
    [
        "--config",
        s.config.to_str().unwrap(),
        "download",
        s.torrent.to_str().unwrap(),
        "--data",
        out.to_str().unwrap(),
        "--json",
        "--metrics",
        "",
        "--stall-timeout",
        "30",
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--no-trackers",
        "--peer",
        &s.seeder.addr.to_string(),
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Runs `cmd` (at most a minute); returns its final JSON report and its stderr.
fn run(mut cmd: Command, stderr: &Path) -> (Value, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(stderr).unwrap())
        .spawn()
        .expect("start the download");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "still running after a minute: {}",
                std::fs::read_to_string(stderr).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    let err = std::fs::read_to_string(stderr).unwrap_or_default();
    assert!(status.success(), "{status}: {err}\n{out}");
    let report = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .rfind(|v| v.get("done").is_some())
        .unwrap_or_else(|| panic!("no report: {out}\n{err}"));
    assert_eq!(report["done"], true, "{report}");
    (report, err)
}

fn assert_same_files(s: &Setup, got: &Path) {
    for (name, _) in FILES {
        let want = std::fs::read(s.dir.path().join("data/tree").join(name)).unwrap();
        let have = std::fs::read(got.join("tree").join(name)).unwrap();
        assert!(have == want, "{name} differs");
    }
}

/// Downloads into `out` (on ext4 here, or tmpfs: both take `O_DIRECT`), checks the result.
fn direct_download_into(out: &Path) {
    let s = setup();
    let mut cmd = common::ringseed();
    cmd.args(download_args(&s, out));
    let (report, err) = run(cmd, &s.dir.path().join("stderr"));
    assert_eq!(report["progress"]["hash_failures"], 0, "{report}");
    assert_eq!(stat(&report, "write_errors"), 0, "{report}");
    assert_eq!(
        stat(&report, "direct_write_bytes"),
        DIRECT_BYTES,
        "{report}"
    );
    assert!(!err.contains("O_DIRECT"), "{err}");
    assert_same_files(&s, out);
}

#[test]
fn a_direct_download_of_files_ending_mid_page_is_byte_identical() {
    let out = tempfile::tempdir().unwrap();
    direct_download_into(&out.path().join("out"));
}

/// `/dev/shm` is tmpfs, which takes `O_DIRECT` since Linux 6.6 (writes still land in its page
/// cache): the same download there.
#[test]
fn a_direct_download_into_tmpfs_is_byte_identical() {
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        eprintln!("no /dev/shm: skipped");
        return;
    }
    let out = tempfile::tempdir_in(shm).unwrap();
    direct_download_into(&out.path().join("out"));
}

/// ramfs refuses `O_DIRECT` at open (`EINVAL`): the download completes through the page cache,
/// the torrent warned about once. The ramfs lives in the download's own user and mount
/// namespaces, so its files are copied out before the namespace goes.
#[test]
fn a_filesystem_refusing_o_direct_falls_back_to_buffered_with_one_warning() {
    let s = setup();
    let ram = s.dir.path().join("ram");
    let copy = s.dir.path().join("copy");
    std::fs::create_dir_all(&ram).unwrap();
    std::fs::create_dir_all(&copy).unwrap();
    let quoted: Vec<String> = download_args(&s, &ram)
        .iter()
        .map(|a| format!("'{a}'"))
        .collect();
    let script = format!(
        "mount -t ramfs ramfs '{ram}' || exit 99; '{bin}' {args}; rc=$?; \
         cp -a '{ram}/.' '{copy}/'; exit $rc",
        ram = ram.display(),
        copy = copy.display(),
        bin = env!("CARGO_BIN_EXE_ringseed"),
        args = quoted.join(" ")
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["-r", "-m", "sh", "-c", &script]);
    let (report, err) = run(cmd, &s.dir.path().join("stderr"));
    assert_eq!(stat(&report, "write_errors"), 0, "{report}");
    assert_eq!(stat(&report, "direct_write_bytes"), 0, "{report}");
    assert_eq!(
        err.matches("refuses O_DIRECT").count(),
        1,
        "one warning for the torrent: {err}"
    );
    assert_same_files(&s, &copy);
}

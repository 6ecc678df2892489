//! The command line as an operator meets it: broken torrents and configs give one clear error
//! line and exit code 2 (never a panic), the config printer round-trips, and the demo runs.

mod common;

use common::{Payload, create_torrent, ringseed, ringseed_ok, signal};

fn run_err(args: &[&std::ffi::OsStr]) -> (i32, String) {
    let out = ringseed().args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    (out.status.code().unwrap_or(-1), stderr)
}

/// Broken .torrent files, each with a word its error message must contain.
fn broken_corpus() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let mut deep = vec![b'l'; 1_000_000];
    deep.extend(std::iter::repeat_n(b'e', 1_000_000));
    let mut deep_info = b"d4:info".to_vec();
    deep_info.extend(std::iter::repeat_n(b'l', 1_000_000));
    let valid =
        b"d4:infod6:lengthi3e4:name1:a12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaaee"
            .to_vec();
    vec![
        ("empty", vec![], "ends"),
        ("truncated", valid[..valid.len() - 2].to_vec(), "ends"),
        ("truncated string", valid[..valid.len() - 9].to_vec(), "remain"),
        ("not a dict", b"i42e".to_vec(), "dictionary"),
        ("info wrong type", b"d4:info3:abce".to_vec(), "info"),
        ("unsorted keys", b"d4:infod4:name1:a6:lengthi3eee".to_vec(), "sorted"),
        ("duplicate keys", b"d4:infoi1e4:infoi1ee".to_vec(), "twice"),
        ("leading zero", b"d4:infod6:lengthi03eee".to_vec(), "leading zero"),
        ("huge string length", b"d4:info99999999999999999999:xe".to_vec(), "remain"),
        ("huge integer", b"d4:infod6:lengthi99999999999999999999eee".to_vec(), "64 bits"),
        (
            "huge file length",
            b"d4:infod5:filesld6:lengthi9223372036854775807e4:pathl1:aeed6:lengthi9223372036854775807e4:pathl1:beee4:name1:x12:piece lengthi16384e6:pieces0:ee".to_vec(),
            "add up to more than 281474976710656 bytes",
        ),
        (
            "negative length",
            b"d4:infod6:lengthi-5e4:name1:a12:piece lengthi16384e6:pieces0:ee".to_vec(),
            "negative",
        ),
        (
            "path traversal",
            b"d4:infod5:filesld6:lengthi1e4:pathl2:..6:passwdeee4:name1:x12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaaee".to_vec(),
            "unsafe path",
        ),
        (
            "absolute name",
            b"d4:infod6:lengthi3e4:name4:/etc12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaaee".to_vec(),
            "unsafe path",
        ),
        (
            "wrong piece count",
            b"d4:infod6:lengthi3e4:name1:a12:piece lengthi16384e6:pieces40:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaee".to_vec(),
            "pieces",
        ),
        ("deep nesting", deep, "deeper"),
        ("deep nesting inside info", deep_info, "deeper"),
        ("trailing garbage", [valid.clone(), b"xx".to_vec()].concat(), "after the end"),
    ]
}

#[test]
fn broken_torrents_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes, word) in broken_corpus() {
        let path = dir
            .path()
            .join(format!("{}.torrent", name.replace(' ', "_")));
        std::fs::write(&path, &bytes).unwrap();
        for cmd in ["info", "verify"] {
            let mut args: Vec<&std::ffi::OsStr> = vec![cmd.as_ref(), path.as_os_str()];
            if cmd == "verify" {
                args.extend(["--data".as_ref(), dir.path().as_os_str()]);
            }
            let (code, stderr) = run_err(&args);
            assert_eq!(code, 2, "{name}: {stderr}");
            assert!(stderr.starts_with("error: "), "{name}: {stderr}");
            assert!(
                stderr.contains(word),
                "{name}: expected {word:?} in {stderr}"
            );
        }
    }
}

#[test]
fn config_print_default_round_trips_and_bad_configs_fail() {
    let out = ringseed()
        .args(["config", "print-default"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("[hashing]") && text.contains("# Threads that hash"));
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, &text).unwrap();
    ringseed_ok(["config".as_ref(), "check".as_ref(), good.as_os_str()]);
    for (body, word) in [
        ("[hashing]\nthreads = 5000\n", "hashing.threads"),
        ("[hashing]\nnope = 1\n", "nope"),
        ("[unknown]\n", "unknown"),
        ("not toml at all [", "TOML"),
    ] {
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, body).unwrap();
        let (code, stderr) = run_err(&["config".as_ref(), "check".as_ref(), bad.as_os_str()]);
        assert_eq!(code, 2, "{body}: {stderr}");
        assert!(
            stderr.contains(word) || stderr.to_lowercase().contains(&word.to_lowercase()),
            "{body}: {stderr}"
        );
        // The same file given as --config to any command is refused before work starts.
        let (code, _) = run_err(&[
            "--config".as_ref(),
            bad.as_os_str(),
            "config".as_ref(),
            "print-default".as_ref(),
        ]);
        assert_eq!(code, 2);
    }
}

#[test]
fn config_threads_setting_is_used() {
    let p = Payload::new();
    let dir = p.dir.path();
    let cfg = dir.join("c.toml");
    std::fs::write(
        &cfg,
        "[hashing]\nthreads = 1\nbatch_kib = 64\n[create]\nversion = \"hybrid\"\n",
    )
    .unwrap();
    let t = dir.join("x.torrent");
    let stdout = ringseed_ok([
        "--config".as_ref(),
        cfg.as_os_str(),
        "create".as_ref(),
        p.multi.as_os_str(),
        "-o".as_ref(),
        t.as_os_str(),
    ]);
    assert!(
        stdout.contains("Hybrid"),
        "config's create.version ignored: {stdout}"
    );
}

#[test]
fn demo_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = ringseed()
        .args(["demo", "--size-mib", "8", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("demo ok"), "{stdout}");
    assert!(stdout.contains(" 0 bad, 0 missing"), "{stdout}");
    assert!(stdout.contains("every file byte-identical"), "{stdout}");
}

#[test]
fn shipped_config_is_the_printed_default() {
    let out = ringseed()
        .args(["config", "print-default"])
        .output()
        .unwrap();
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/ringseed.toml"
    ))
    .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        shipped,
        "systemd/ringseed.toml is stale: regenerate it with `ringseed config print-default`"
    );
}

/// `ringseed run` seeds what the config names: a directory of .torrent files (one of them
/// broken, which is skipped with an error, not fatal) plus a listed torrent; SIGTERM stops it.
#[test]
fn run_seeds_the_configured_torrents() {
    use std::io::{BufRead, BufReader};
    let p = Payload::new();
    let dir = p.dir.path();
    let tdir = dir.join("watch");
    std::fs::create_dir_all(&tdir).unwrap();
    for (src, name) in [(&p.single, "single.torrent"), (&p.multi, "multi.torrent")] {
        create_torrent(src, &tdir.join(name), &[]);
    }
    std::fs::write(tdir.join("broken.torrent"), b"d4:infoi1ee").unwrap();
    let listed = dir.join("listed.torrent");
    std::fs::rename(tdir.join("single.torrent"), &listed).unwrap();
    let cfg = dir.join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[engine]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n[control]\nlisten = \"127.0.0.1:0\"\n[state]\ndir = {:?}\n[torrents]\nwatch_interval_s = 0\ndir = {:?}\ndata_dir = {:?}\nlist = [{{ torrent = {:?}, data = {:?} }}]\n",
            dir.join("state").display().to_string(),
            tdir.display().to_string(),
            p.data_dir().display().to_string(),
            listed.display().to_string(),
            p.data_dir().display().to_string()
        ),
    )
    .unwrap();
    let mut child = ringseed()
        .arg("--config")
        .arg(&cfg)
        .args(["run", "--stats-every", "0", "--metrics", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(
        first.starts_with("seeding 2 torrent(s) on 127.0.0.1:"),
        "{first}"
    );
    // SIGHUP picks up a torrent that appeared in the directory.
    create_torrent(
        &p.single,
        &tdir.join("late.torrent"),
        &["--piece-kib", "32"],
    );
    signal(&child, nix::sys::signal::Signal::SIGHUP);
    let reloaded = lines
        .by_ref()
        .map(|l| l.unwrap())
        .find(|l| l.starts_with("SIGHUP: reloaded"))
        .expect("no reload line");
    assert!(
        reloaded.ends_with("1 torrent(s) added, limits applied"),
        "{reloaded}"
    );
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("broken.torrent"),
        "the broken torrent is named: {stderr}"
    );
}

//! Hostile files around a `ringseed run` node (issue 13, "Files"), against the real binary over
//! its control API:
//! - a FIFO and a symlink leading out, planted where torrents' files belong: their checks end
//!   with an error naming the file, the single check thread goes on to the next torrent, which
//!   libtorrent downloads byte-perfect; a file swapped for a link out while the node is down is
//!   refused on the resume path too;
//! - delete-data of a torrent whose files other torrents name (cross-seeding, one of them
//!   paused): their files stay, the answer lists them, and the other keeps seeding;
//! - a full disk under the state (a small tmpfs mounted in a private mount namespace): a refused
//!   add, pause, limit change or removal changes nothing, before or after a `kill -9` and
//!   restart, and what was answered 201/200 once there is room survives a `kill -9`.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::node::RunNode;
use common::{create_torrent, lt_tool, pattern};
use ringseed::metainfo::hex;
use serde_json::{Value, json};

const TOKEN: &str = "t0ken-for-file-tests";

/// The control API and the peer port of a node, as these tests use them.
trait Api {
    fn api(&self, method: &str, path: &str, body: &str) -> (u16, Value);
    fn list(&self) -> Vec<Value>;
    fn add(&self, torrent: &Path, extra: Value) -> (u16, Value);
    fn wait(&self, what: &str, secs: u64, done: impl Fn(&[Value]) -> bool) -> Vec<Value>;
    fn serves(&self, info_hash: &str) -> bool;
    fn peer(&self) -> SocketAddr;
}

impl Api for RunNode {
    /// One API request with the token; the status and the JSON body.
    fn api(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        let (status, text) =
            common::http::request(self.api, "127.0.0.1", method, path, body, Some(TOKEN));
        let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
        (status, v)
    }

    fn list(&self) -> Vec<Value> {
        let (status, v) = self.api("GET", "/api/v1/torrents", "");
        assert_eq!(status, 200, "{v}");
        v.as_array().unwrap().clone()
    }

    fn add(&self, torrent: &Path, extra: Value) -> (u16, Value) {
        let mut body = json!({ "path": torrent });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        self.api("POST", "/api/v1/torrents", &body.to_string())
    }

    /// Waits (at most `secs`) until `done` holds for the list.
    fn wait(&self, what: &str, secs: u64, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let list = self.list();
            if done(&list) {
                return list;
            }
            assert!(Instant::now() < deadline, "waiting for {what}: {list:#?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the node serves `info_hash`: it answers a handshake for it.
    fn serves(&self, info_hash: &str) -> bool {
        let id: Vec<u8> = (0..20)
            .map(|i| u8::from_str_radix(&info_hash[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        let mut s = std::net::TcpStream::connect(self.peer()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut hs = b"\x13BitTorrent protocol".to_vec();
        hs.extend_from_slice(&[0; 8]);
        hs.extend_from_slice(&id);
        hs.extend_from_slice(b"-TS0001-000000000001");
        s.write_all(&hs).unwrap();
        let mut answer = [0u8; 68];
        s.read_exact(&mut answer).is_ok() && answer[28..48] == id[..]
    }

    fn peer(&self) -> SocketAddr {
        self.peer.expect("the node printed its peer address")
    }
}

fn find<'a>(list: &'a [Value], hash: &str) -> Option<&'a Value> {
    list.iter().find(|t| t["info_hash"] == hash)
}

fn state_of(list: &[Value], hash: &str) -> String {
    find(list, hash)
        .map(|t| t["state"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("{hash} not listed: {list:#?}"))
}

fn write_config(dir: &Path, state: &Path, data: &Path) -> PathBuf {
    let cfg = dir.join("ringseed.toml");
    std::fs::write(
        &cfg,
        format!(
            "[engine]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n\
             [trackers]\nenabled = false\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n\
             [control]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n\
             [state]\ndir = {:?}\n\
             [torrents]\ndata_dir = {:?}\nwatch_interval_s = 0\n",
            state.display().to_string(),
            data.display().to_string(),
        ),
    )
    .unwrap();
    cfg
}

/// Starts `ringseed run` with `cfg`, through `wrap` (a command that runs it inside a mount
/// namespace) if given; returns once the API listens.
fn start(cfg: &Path, wrap: Option<Command>) -> RunNode {
    let Some(mut cmd) = wrap else {
        return RunNode::start(cfg);
    };
    cmd.arg(env!("CARGO_BIN_EXE_ringseed"))
        .arg("--config")
        .arg(cfg)
        .args(["run", "--stats-every", "0"])
        .stderr(Stdio::null());
    RunNode::spawn(cmd)
}

/// Makes `path` a symlink to a copy of its file at `outside` (same bytes, same mtime), by a
/// relative path that climbs out of `data`: whoever follows it reads what the torrent expects.
fn link_out(path: &Path, outside: &Path) {
    std::fs::copy(path, outside).unwrap();
    let mtime = std::fs::metadata(path).unwrap().modified().unwrap();
    std::fs::File::options()
        .write(true)
        .open(outside)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    std::fs::remove_file(path).unwrap();
    let depth = path.parent().unwrap().components().count() - 1;
    let up = PathBuf::from("../".repeat(depth)).join(outside.strip_prefix("/").unwrap());
    std::os::unix::fs::symlink(&up, path).unwrap();
    assert_eq!(
        std::fs::canonicalize(path).unwrap(),
        outside.canonicalize().unwrap()
    );
}

#[test]
fn a_fifo_and_a_link_out_are_refused_and_the_other_torrents_go_on() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = dir.join("data");
    let outside = dir.join("outside");
    std::fs::create_dir_all(data.join("fifo")).unwrap();
    std::fs::create_dir_all(data.join("link")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(data.join("good.bin"), pattern(1_000_003, 1)).unwrap();
    std::fs::write(data.join("fifo/a.bin"), pattern(300_001, 2)).unwrap();
    std::fs::write(data.join("fifo/b.bin"), pattern(200_003, 3)).unwrap();
    std::fs::write(data.join("link/x.bin"), pattern(100_001, 4)).unwrap();
    let mut hashes = Vec::new();
    for (name, src) in [("fifo", "fifo"), ("link", "link"), ("good", "good.bin")] {
        let t = dir.join(format!("{name}.torrent"));
        let meta = create_torrent(&data.join(src), &t, &["--piece-kib", "32"]);
        hashes.push((t, hex(&meta.info.hash.wire_id())));
    }
    let [(fifo_t, fifo), (link_t, link), (good_t, good)] = hashes.try_into().unwrap();
    // A FIFO where b.bin belongs: a blocking open waits for a writer for good.
    std::fs::remove_file(data.join("fifo/b.bin")).unwrap();
    nix::unistd::mkfifo(
        &data.join("fifo/b.bin"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    // A link out of the data directory where x.bin belongs, to a file with the right bytes.
    link_out(&data.join("link/x.bin"), &outside.join("x.bin"));

    let cfg = write_config(dir, &dir.join("state"), &data);
    let node = start(&cfg, None);
    // Checked in this order, one at a time, on the one check thread.
    for t in [&fifo_t, &link_t, &good_t] {
        let (status, v) = node.add(t, json!({}));
        assert_eq!(status, 201, "{v}");
    }
    let list = node.wait("the three checks", 15, |l| {
        l.len() == 3 && l.iter().all(|t| t["state"] != "checking")
    });
    let error_of = |hash: &str| {
        let t = find(&list, hash).unwrap();
        assert_eq!(t["state"], "error", "{t}");
        t["error"].as_str().unwrap().to_string()
    };
    let e = error_of(&fifo);
    assert!(e.contains("fifo/b.bin") && e.contains("FIFO"), "{e}");
    let e = error_of(&link);
    assert!(
        e.contains("link/x.bin") && e.contains("outside the torrent's directory"),
        "{e}"
    );
    assert_eq!(state_of(&list, &good), "seeding");
    assert!(!node.serves(&fifo) && !node.serves(&link));
    // The node goes on: libtorrent downloads the good torrent byte-perfect.
    let dl = tempfile::tempdir().unwrap();
    let out = lt_tool(&[
        "download",
        good_t.to_str().unwrap(),
        dl.path().to_str().unwrap(),
        &node.peer().to_string(),
        "60",
    ]);
    let r: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(r["done"], true, "{out}");
    assert_eq!(
        std::fs::read(dl.path().join("good.bin")).unwrap(),
        std::fs::read(data.join("good.bin")).unwrap()
    );
    node.stop();

    // While the node is down, good.bin becomes a link out to the same bytes with the same
    // mtime: its stamps match the last check, so the node resumes it without hashing, and the
    // open beneath the directory refuses it there too. The other two are checked again.
    link_out(&data.join("good.bin"), &outside.join("good.bin"));
    let node = start(&cfg, None);
    let list = node.wait("the restart", 15, |l| {
        l.len() == 3 && l.iter().all(|t| t["state"] != "checking")
    });
    for hash in [&fifo, &link, &good] {
        assert_eq!(state_of(&list, hash), "error", "{list:#?}");
    }
    let t = find(&list, &good).unwrap();
    assert_eq!(t["resumed"], false, "{t}");
    assert!(t["error"].as_str().unwrap().contains("good.bin"), "{t}");
    assert!(!node.serves(&good));
    node.stop();
}

#[test]
fn delete_data_keeps_the_files_other_torrents_name() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = dir.join("data");
    let pack = data.join("pack");
    std::fs::create_dir_all(&pack).unwrap();
    for (name, len, seed) in [
        ("a.bin", 300_001, 1),
        ("b.bin", 700_003, 2),
        ("c.bin", 65_537, 3),
    ] {
        std::fs::write(pack.join(name), pattern(len, seed)).unwrap();
    }
    let pack_bytes = |name: &str| std::fs::read(pack.join(name)).unwrap();
    let b_before = pack_bytes("b.bin");
    // The whole pack, and two cross-seeded torrents of single files in it.
    let whole_t = dir.join("pack.torrent");
    let whole = hex(&create_torrent(&pack, &whole_t, &[]).info.hash.wire_id());
    let b_t = dir.join("b.torrent");
    let b = hex(&create_torrent(&pack.join("b.bin"), &b_t, &[])
        .info
        .hash
        .wire_id());
    let c_t = dir.join("c.torrent");
    let c = hex(&create_torrent(&pack.join("c.bin"), &c_t, &[])
        .info
        .hash
        .wire_id());

    let cfg = write_config(dir, &dir.join("state"), &data);
    let node = start(&cfg, None);
    assert_eq!(node.add(&whole_t, json!({})).0, 201);
    assert_eq!(node.add(&b_t, json!({ "save_path": "pack" })).0, 201);
    // A paused torrent names its files all the same.
    let (status, v) = node.add(&c_t, json!({ "save_path": "pack", "paused": true }));
    assert_eq!(status, 201, "{v}");
    node.wait("the checks", 15, |l| {
        l.len() == 3 && l.iter().all(|t| t["state"] != "checking")
    });

    let (status, v) = node.api(
        "DELETE",
        &format!("/api/v1/torrents/{whole}?delete_data=true"),
        "",
    );
    assert_eq!(status, 200, "{v}");
    let mut kept: Vec<String> = v["kept"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    kept.sort();
    let shown = |n: &str| pack.join(n).display().to_string();
    assert_eq!(kept, vec![shown("b.bin"), shown("c.bin")], "{v}");
    assert_eq!(v["not_deleted"], json!([]), "{v}");
    assert!(
        !pack.join("a.bin").exists(),
        "the file only it named is gone"
    );
    assert_eq!(pack_bytes("b.bin"), b_before);
    assert_eq!(pack_bytes("c.bin").len(), 65_537);
    let list = node.list();
    assert_eq!(list.len(), 2);
    assert_eq!(state_of(&list, &b), "seeding");
    assert_eq!(state_of(&list, &c), "paused");
    // The cross-seeded torrent keeps seeding: libtorrent downloads it byte-perfect.
    let dl = tempfile::tempdir().unwrap();
    let out = lt_tool(&[
        "download",
        b_t.to_str().unwrap(),
        dl.path().to_str().unwrap(),
        &node.peer().to_string(),
        "60",
    ]);
    let r: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(r["done"], true, "{out}");
    assert_eq!(std::fs::read(dl.path().join("b.bin")).unwrap(), b_before);
    // The last one named deletes its file.
    let (status, v) = node.api(
        "DELETE",
        &format!("/api/v1/torrents/{b}?delete_data=true"),
        "",
    );
    assert_eq!((status, &v["kept"]), (200, &json!([])), "{v}");
    assert!(!pack.join("b.bin").exists());
    assert!(pack.join("c.bin").exists());
    node.stop();
}

/// Two single-file torrents in `data` (created): `one.bin` of `a` bytes and `two.bin` of `b`.
struct Two {
    one_t: PathBuf,
    one: String,
    two_t: PathBuf,
    two: String,
}

fn two_torrents(data: &Path, a: usize, b: usize) -> Two {
    std::fs::create_dir_all(data).unwrap();
    let dir = data.parent().unwrap();
    let mut made = Vec::new();
    for (name, size, seed) in [("one", a, 1u64), ("two", b, 2)] {
        std::fs::write(data.join(format!("{name}.bin")), pattern(size, seed)).unwrap();
        let t = dir.join(format!("{name}.torrent"));
        let meta = create_torrent(&data.join(format!("{name}.bin")), &t, &[]);
        made.push((t, hex(&meta.info.hash.wire_id())));
    }
    let (two_t, two) = made.pop().unwrap();
    let (one_t, one) = made.pop().unwrap();
    Two {
        one_t,
        one,
        two_t,
        two,
    }
}

#[test]
fn kill_9_right_after_answers_keeps_what_was_answered() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = dir.join("data");
    let Two {
        one_t,
        one,
        two_t,
        two,
    } = two_torrents(&data, 200_001, 300_007);
    let cfg = write_config(dir, &dir.join("state"), &data);

    let node = start(&cfg, None);
    let (status, v) = node.add(&one_t, json!({}));
    assert_eq!(status, 201, "{v}");
    node.kill9();
    let node = start(&cfg, None);
    node.wait("one after the restart", 15, |l| {
        find(l, &one).is_some_and(|t| t["state"] == "seeding")
    });
    let (status, v) = node.api("POST", &format!("/api/v1/torrents/{one}/pause"), "");
    assert_eq!(status, 200, "{v}");
    let (status, v) = node.add(&two_t, json!({ "paused": true }));
    assert_eq!(status, 201, "{v}");
    node.kill9();
    let node = start(&cfg, None);
    let list = node.wait("both after the restart", 15, |l| {
        l.len() == 2 && l.iter().all(|t| t["state"] != "checking")
    });
    assert_eq!(state_of(&list, &one), "paused");
    assert_eq!(state_of(&list, &two), "paused");
    assert!(!node.serves(&one));
    node.kill9();
}

/// A small tmpfs mounted over a directory inside a private mount namespace, held open by a
/// process in it: nodes started through [`Tmpfs::enter`] see it; this process reaches it
/// through `/proc/PID/root`. The mount goes away with the namespace when the holder dies.
struct Tmpfs {
    holder: Child,
    dir: PathBuf,
    user_ns: bool,
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

impl Tmpfs {
    fn mount(dir: &Path, size_kib: u64) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        // Root mounts in a new mount namespace; anyone else in a new user namespace too.
        let user_ns = {
            use std::os::unix::fs::MetadataExt;
            // /proc/self belongs to the effective user.
            std::fs::metadata("/proc/self").unwrap().uid() != 0
        };
        let mut cmd = Command::new("unshare");
        if user_ns {
            cmd.args(["--user", "--map-root-user"]);
        }
        let script = format!(
            "mount -t tmpfs -o size={size_kib}k tmpfs \"$0\" && echo mounted && exec sleep 600"
        );
        let mut holder = cmd
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("unshare (util-linux)");
        let mut line = String::new();
        BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        if line.trim() != "mounted" {
            let mut err = String::new();
            let _ = holder.stderr.take().unwrap().read_to_string(&mut err);
            panic!(
                "mounting a tmpfs in a private mount namespace failed (this test needs root or \
                 unprivileged user namespaces): {err}"
            );
        }
        Tmpfs {
            holder,
            dir: dir.to_path_buf(),
            user_ns,
        }
    }

    /// A command prefix that runs a program inside the namespace.
    fn enter(&self) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--target={}", self.holder.id()));
        if self.user_ns {
            cmd.args(["--user", "--preserve-credentials"]);
        }
        cmd.args(["--mount", "--"]);
        cmd
    }

    /// `rel` inside the mounted filesystem, as this process reaches it.
    fn path(&self, rel: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.holder.id()))
            .join(self.dir.strip_prefix("/").unwrap())
            .join(rel)
    }

    /// Writes a file until the filesystem is full.
    fn fill(&self) {
        let mut f = std::fs::File::create(self.path("filler")).unwrap();
        let chunk = vec![0u8; 64 << 10];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling the tmpfs: {e}"),
            }
        }
        // Whatever is left is less than a page.
        let _ = f.write_all(&chunk[..1]);
        assert!(
            f.write_all(&chunk[..4096]).is_err(),
            "the tmpfs is not full"
        );
    }

    fn free(&self) {
        std::fs::remove_file(self.path("filler")).unwrap();
    }
}

#[test]
fn a_full_disk_refuses_changes_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = dir.join("data");
    let Two {
        one_t,
        one,
        two_t,
        two,
    } = two_torrents(&data, 400_009, 500_009);
    // The state lives on a 2 MiB tmpfs; the data does not.
    let fs = Tmpfs::mount(&dir.join("state"), 2048);
    let cfg = write_config(dir, &dir.join("state"), &data);
    let node = start(&cfg, Some(fs.enter()));
    assert!(fs.path("ringseed.db").exists(), "the state is on the tmpfs");
    let (status, v) = node.add(&one_t, json!({}));
    assert_eq!(status, 201, "{v}");
    node.wait("one seeding", 15, |l| {
        find(l, &one).is_some_and(|t| t["state"] == "seeding")
    });
    let before = node.list();

    fs.fill();
    // Every change is refused with the database's error, and none takes effect.
    let (status, v) = node.add(&two_t, json!({}));
    assert_eq!(status, 500, "{v}");
    assert!(v["error"].as_str().unwrap().contains("database"), "{v}");
    let pause = format!("/api/v1/torrents/{one}/pause");
    let (status, v) = node.api("POST", &pause, "");
    assert_eq!(status, 500, "{v}");
    let limits = format!("/api/v1/torrents/{one}/limits");
    let (status, v) = node.api("PUT", &limits, &json!({ "ratio": 3 }).to_string());
    assert_eq!(status, 500, "{v}");
    let (status, v) = node.api("DELETE", &format!("/api/v1/torrents/{one}"), "");
    assert_eq!(status, 500, "{v}");
    let strip = |l: Vec<Value>| -> Vec<Value> {
        l.into_iter()
            .map(|mut t| {
                t.as_object_mut().unwrap().remove("seeding_s");
                t.as_object_mut().unwrap().remove("peers");
                t
            })
            .collect()
    };
    assert_eq!(strip(node.list()), strip(before.clone()), "nothing changed");
    assert!(node.serves(&one), "still served after the refused pause");
    // After a kill -9 and a restart (with room again), the state is what the API answered.
    node.kill9();
    fs.free();
    let node = start(&cfg, Some(fs.enter()));
    let list = node.wait("the restart", 15, |l| {
        l.iter().all(|t| t["state"] != "checking")
    });
    assert_eq!(list.len(), 1, "{list:#?}");
    assert_eq!(state_of(&list, &one), "seeding");
    assert_eq!(find(&list, &one).unwrap()["limits"]["ratio"], Value::Null);
    assert!(find(&list, &two).is_none());

    // With room, the same changes are answered as done, and survive a kill -9.
    let (status, v) = node.add(&two_t, json!({}));
    assert_eq!(status, 201, "{v}");
    let (status, v) = node.api("POST", &pause, "");
    assert_eq!(status, 200, "{v}");
    assert!(!node.serves(&one), "paused means not served");
    // Full again: a resume is refused and the torrent stays paused.
    fs.fill();
    let (status, v) = node.api("POST", &format!("/api/v1/torrents/{one}/resume"), "");
    assert_eq!(status, 500, "{v}");
    assert_eq!(state_of(&node.list(), &one), "paused");
    assert!(!node.serves(&one));
    node.kill9();
    fs.free();
    let node = start(&cfg, Some(fs.enter()));
    let list = node.wait("the second restart", 15, |l| {
        l.len() == 2 && l.iter().all(|t| t["state"] != "checking")
    });
    assert_eq!(state_of(&list, &one), "paused");
    assert_eq!(state_of(&list, &two), "seeding");
    node.stop();
}

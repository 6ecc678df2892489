//! `ringseed bench` finds what it is meant to find, on loopback: an honest engine delivers
//! exactly what it accounts for, a seeder that corrupts one block fails the run, a seeder that
//! stalls shows in the latency tail, and a thousand leechers are held at once.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::pattern;
use ringseed::bench::{self, BenchOptions, Stop};
use ringseed::create::{CreateOptions, create};
use ringseed::engine::{Engine, Settings, Torrent};
use ringseed::metainfo::Metainfo;
use ringseed::verify::Progress;
use ringseed::wire::{self, Handshake, Message};

const KIB: u64 = 1024;

/// A one-file payload of `len` bytes in `dir` and its torrent (written to `dir/t.torrent`).
fn payload(dir: &Path, len: usize, piece_kib: u64) -> (Vec<u8>, Metainfo) {
    let data = pattern(len, 7);
    let file = dir.join("payload.bin");
    std::fs::write(&file, &data).unwrap();
    let opts = CreateOptions {
        piece_length: Some(piece_kib * KIB),
        ..CreateOptions::default()
    };
    let (bytes, meta) = create(&file, &opts, &Progress::default()).unwrap();
    std::fs::write(dir.join("t.torrent"), bytes).unwrap();
    (data, meta)
}

fn engine_seeding(meta: &Metainfo, dir: &Path, settings: Settings) -> Engine {
    let engine = Engine::start(Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..settings
    })
    .unwrap();
    let (t, _) = Torrent::open(meta.clone(), dir, None).unwrap();
    engine.add_torrent(Arc::new(t)).unwrap();
    engine
}

/// Runs the bench against `engine` (the address is filled in) and shuts the engine down,
/// checking that the run passed without errors and that both sides count the same bytes.
fn bench_engine(
    engine: Engine,
    infos: &[ringseed::metainfo::Info],
    opts: BenchOptions,
) -> bench::BenchReport {
    let opts = BenchOptions {
        addr: engine.local_addr(),
        ..opts
    };
    let report = bench::run_torrents(infos, &opts, &mut |_| {}).unwrap();
    let up: u64 = engine.shutdown().iter().map(|s| s.bytes_up).sum();
    assert!(report.passed(), "{report:?}");
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.bytes, up, "bench and engine disagree");
    report
}

/// What the scripted seeder does wrong.
#[derive(Clone, Copy)]
enum Fault {
    /// Flips one byte of this block (piece index, offset).
    Corrupt { index: u32, begin: u32 },
    /// Sleeps before every `every`-th block it sends.
    Stall { every: u64, delay: Duration },
}

/// A tiny blocking seeder (std sockets, a thread per connection) with one deliberate fault.
fn faulty_seeder(data: Vec<u8>, meta: &Metainfo, fault: Fault) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let data = Arc::new(data);
    let info_hash = meta.info.hash.wire_id();
    let piece_length = meta.info.layout.piece_length;
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let data = data.clone();
            std::thread::spawn(move || {
                let _ = serve(stream, &data, info_hash, piece_length, fault);
            });
        }
    });
    addr
}

fn serve(
    mut s: TcpStream,
    data: &[u8],
    info_hash: [u8; 20],
    piece_length: u64,
    fault: Fault,
) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    let mut hs = [0u8; Handshake::LEN];
    s.read_exact(&mut hs)?;
    s.write_all(&Handshake::new(info_hash, *b"-TS0001-faultyseeder").encode())?;
    let mut out = Vec::new();
    Message::Unchoke.encode(&mut out);
    s.write_all(&out)?;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    let mut sent = 0u64;
    loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut pos = 0;
        while let Some((msg, used)) = wire::parse_message(&buf[pos..], 1 << 20)
            .map_err(|e| std::io::Error::other(e.to_string()))?
        {
            pos += used;
            let Message::Request(r) = msg else { continue };
            let at = (u64::from(r.index) * piece_length + u64::from(r.begin)) as usize;
            let mut block = data[at..at + r.length as usize].to_vec();
            sent += 1;
            match fault {
                Fault::Corrupt { index, begin } if (r.index, r.begin) == (index, begin) => {
                    block[100] ^= 0x40;
                }
                Fault::Stall { every, delay } if sent.is_multiple_of(every) => {
                    std::thread::sleep(delay);
                }
                _ => {}
            }
            out.clear();
            Message::Piece {
                index: r.index,
                begin: r.begin,
                data: &block,
            }
            .encode(&mut out);
            s.write_all(&out)?;
        }
        buf.drain(..pos);
    }
}

#[test]
fn bench_against_the_engine_counts_what_it_uploaded() {
    let dir = tempfile::tempdir().unwrap();
    let (_, meta) = payload(dir.path(), 8 << 20, 256);
    let engine = engine_seeding(
        &meta,
        dir.path(),
        Settings {
            workers: 2,
            ..Settings::default()
        },
    );
    let budget = 48 << 20;
    let report = bench_engine(
        engine,
        std::slice::from_ref(&meta.info),
        BenchOptions {
            peers: 8,
            reqq: 32,
            workers: 2,
            stop: Stop::Bytes(budget),
            pattern: bench::Pattern::Random,
            verify_every: 4,
            ..BenchOptions::default()
        },
    );
    assert!(report.pieces_verified > 0);
    assert_eq!(report.unanswered_requests, 0);
    assert_eq!(report.bytes, budget);
    assert_eq!(report.connected, 8);
    assert_eq!(report.latency_us.count, report.blocks);
}

#[test]
fn a_seeder_that_corrupts_one_block_fails_the_bench() {
    let dir = tempfile::tempdir().unwrap();
    let (data, meta) = payload(dir.path(), 4 << 20, 64);
    let addr = faulty_seeder(
        data,
        &meta,
        Fault::Corrupt {
            index: 17,
            begin: 16 << 10,
        },
    );
    // Through the CLI, for the exit code: one leecher walks the torrent once, checking all.
    let out = common::ringseed()
        .args([
            "bench",
            "--peer",
            &addr.to_string(),
            "--verify-all",
            "--json",
        ])
        .args(["--bytes", &(4u64 << 20).to_string()])
        .arg(dir.path().join("t.torrent"))
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a corrupt block passed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["passed"], false);
    assert_eq!(v["bad_pieces"], serde_json::json!([17]));
    assert_eq!(v["errors"]["bad_piece"], 1);
    assert_eq!(v["pieces_verified"], 64);
    assert_eq!(v["bytes"], 4 << 20);
}

#[test]
fn a_seeder_that_stalls_shows_in_the_latency_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (data, meta) = payload(dir.path(), 2 << 20, 64);
    let addr = faulty_seeder(
        data,
        &meta,
        Fault::Stall {
            every: 100,
            delay: Duration::from_millis(200),
        },
    );
    // One request at a time, so a stall delays only its own block.
    let report = bench::run(
        &meta.info,
        &BenchOptions {
            addr,
            peers: 1,
            reqq: 1,
            stop: Stop::Bytes(1000 * 16 * KIB),
            ..BenchOptions::default()
        },
        &mut |_| {},
    )
    .unwrap();
    let l = &report.latency_us;
    assert!(report.passed());
    assert_eq!(report.blocks, 1000);
    assert!(l.p99_9 >= 200_000, "p99.9 {} µs", l.p99_9);
    assert!(l.max >= 200_000, "max {} µs", l.max);
    assert!(l.p50 < 20_000, "p50 {} µs", l.p50);
}

#[test]
fn a_thousand_leechers_are_held() {
    // 1000 leechers and 1000 engine peers in one process need ~2100 descriptors; this box's
    // `ulimit -n` is 20 000.
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `rl` is a valid, writable rlimit for the duration of the call.
    let limit = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } == 0 {
        rl.rlim_cur
    } else {
        0
    };
    assert!(limit >= 2200, "ulimit -n is {limit}; this test needs 2200");
    let dir = tempfile::tempdir().unwrap();
    let (_, meta) = payload(dir.path(), 4 << 20, 64);
    let engine = engine_seeding(
        &meta,
        dir.path(),
        Settings {
            workers: 2,
            ..Settings::default()
        },
    );
    let report = bench::run(
        &meta.info,
        &BenchOptions {
            addr: engine.local_addr(),
            peers: 1000,
            reqq: 4,
            workers: 2,
            stop: Stop::Duration(Duration::from_secs(2)),
            ..BenchOptions::default()
        },
        &mut |_| {},
    )
    .unwrap();
    let stats = engine.shutdown();
    assert!(report.passed());
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.connected, 1000);
    assert_eq!(report.held_at_end, 1000);
    assert!(stats.iter().map(|s| s.handshakes).sum::<u64>() >= 1000);
    // The engine's 100 upload slots serve some of them meanwhile.
    assert!(report.bytes > 0);
}

#[test]
fn refused_connections_are_counted_and_nothing_received_is_not_a_pass() {
    let dir = tempfile::tempdir().unwrap();
    payload(dir.path(), 1 << 20, 64);
    // A port nobody listens on: bind, read the port, close.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = common::ringseed()
        .args(["bench", "--peer", &format!("127.0.0.1:{port}")])
        .args(["--peers", "3", "--duration", "1", "--json"])
        .arg(dir.path().join("t.torrent"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["errors"]["connect_refused"], 3);
    assert_eq!(v["connected"], 0);
    assert_eq!(v["bytes"], 0);
}

/// `len` bytes in `dir/name/payload.bin` and its torrent, for engines seeding several torrents.
fn payload_in(dir: &Path, name: &str, len: usize, seed: u64) -> Metainfo {
    let sub = dir.join(name);
    std::fs::create_dir_all(&sub).unwrap();
    let file = sub.join("payload.bin");
    std::fs::write(&file, pattern(len, seed)).unwrap();
    let opts = CreateOptions {
        piece_length: Some(64 * KIB),
        ..CreateOptions::default()
    };
    create(&file, &opts, &Progress::default()).unwrap().1
}

#[test]
fn rarest_first_counts_what_the_engine_uploaded() {
    let dir = tempfile::tempdir().unwrap();
    let (_, meta) = payload(dir.path(), 4 << 20, 64);
    let engine = engine_seeding(
        &meta,
        dir.path(),
        Settings {
            workers: 1,
            upload_slots: 0,
            ..Settings::default()
        },
    );
    let budget = 24 << 20;
    let report = bench_engine(
        engine,
        std::slice::from_ref(&meta.info),
        BenchOptions {
            peers: 6,
            reqq: 16,
            stop: Stop::Bytes(budget),
            pattern: bench::Pattern::RarestFirst,
            verify_every: 1,
            ..BenchOptions::default()
        },
    );
    assert_eq!(report.bytes, budget);
    // Every piece requested whole is checked (64 KiB pieces, 6 leechers, 24 MiB): at least the
    // pieces completed before the budget ran out.
    assert!(report.pieces_verified >= 300, "{}", report.pieces_verified);
}

#[test]
fn many_torrents_spread_the_load_and_each_count_matches_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let metas: Vec<Metainfo> = (0..3)
        .map(|i| {
            payload_in(
                dir.path(),
                &format!("t{i}"),
                (1 << 20) + i * 12345,
                i as u64,
            )
        })
        .collect();
    let engine = Engine::start(Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        workers: 2,
        upload_slots: 0,
        ..Settings::default()
    })
    .unwrap();
    let torrents: Vec<Arc<Torrent>> = metas
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let (t, _) = Torrent::open(m.clone(), &dir.path().join(format!("t{i}")), None).unwrap();
            let t = Arc::new(t);
            engine.add_torrent(t.clone()).unwrap();
            t
        })
        .collect();
    let infos: Vec<_> = metas.iter().map(|m| m.info.clone()).collect();
    let budget = 12 << 20;
    let report = bench_engine(
        engine,
        &infos,
        BenchOptions {
            peers: 9,
            reqq: 16,
            workers: 2,
            stop: Stop::Bytes(budget),
            pattern: bench::Pattern::ManyTorrents,
            verify_every: 2,
            ..BenchOptions::default()
        },
    );
    assert!(report.pieces_verified > 0);
    // Short last blocks (the sizes are not multiples of 16 KiB) leave the budget's last
    // reservation unused: the run stops within one block of it.
    assert!(report.bytes <= budget && report.bytes > budget - 16 * KIB);
    assert_eq!(report.bytes_by_torrent.len(), 3);
    for (i, t) in torrents.iter().enumerate() {
        assert!(report.bytes_by_torrent[i] > 0, "torrent {i} got nothing");
        assert_eq!(report.bytes_by_torrent[i], t.uploaded(), "torrent {i}");
    }
}

#[test]
fn a_run_draws_its_throughput_and_latency_into_an_svg() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("run.svg");
    let out = common::ringseed()
        .args([
            "bench",
            "--spawn-seeder",
            "--size-mib",
            "16",
            "--peers",
            "4",
        ])
        .args(["--duration", "2", "--json", "--svg"])
        .arg(&svg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The time series the chart draws is in the JSON too: one entry per whole second.
    let series = v["bytes_per_second"].as_array().unwrap();
    assert!(!series.is_empty() && series.len() <= 3, "{series:?}");
    assert!(series.iter().any(|b| b.as_u64().unwrap() > 0));
    let pct = v["latency_percentiles_us"].as_array().unwrap();
    assert_eq!(pct.len(), 17);
    assert_eq!(pct[16][1], v["latency_us"]["max"]);
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg"), "{}", &text[..100.min(text.len())]);
    for caption in ["GiB/s", "second of the run", "percentile", "latency"] {
        assert!(text.contains(caption), "no {caption:?} in the SVG");
    }
}

#[test]
fn a_sweep_runs_every_point_of_its_grid() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("sweep.svg");
    let out = common::ringseed()
        .args(["bench", "sweep", "--spawn-seeder", "--size-mib", "16"])
        .args(["--peers", "1,4", "--reqq", "8,32", "--paths", "copy,mmap"])
        .args(["--duration", "0.5", "--json", "--svg"])
        .arg(&svg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["passed"], true);
    let rows = v["rows"].as_array().unwrap();
    let mut points: Vec<(u64, u64, String)> = rows
        .iter()
        .map(|r| {
            assert!(r["gib_per_s"].as_f64().unwrap() > 0.0, "{r}");
            assert_eq!(r["errors"], 0, "{r}");
            assert!(r["seeder_cpu_seconds_per_gib"].as_f64().is_some(), "{r}");
            (
                r["peers"].as_u64().unwrap(),
                r["reqq"].as_u64().unwrap(),
                r["upload_path"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    points.sort();
    let mut want = Vec::new();
    for p in [1, 4] {
        for q in [8, 32] {
            for path in ["copy", "mmap"] {
                want.push((p, q, path.to_string()));
            }
        }
    }
    assert_eq!(points, want);
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg"));
    for label in ["reqq 8 copy", "reqq 32 mmap", "peers", "p99 ms"] {
        assert!(text.contains(label), "no {label:?} in the SVG");
    }

    // The terminal table: a header, one line per point, and the fastest.
    let out = common::ringseed()
        .args(["bench", "sweep", "--spawn-seeder", "--size-mib", "8"])
        .args(["--peers", "2", "--reqq", "4,16", "--duration", "0.3"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[0].contains("GiB/s") && lines[0].contains("p99 ms"));
    assert!(
        lines[1].split_whitespace().take(3).eq(["2", "4", "copy"]),
        "{text}"
    );
    assert!(
        lines[2].split_whitespace().take(3).eq(["2", "16", "copy"]),
        "{text}"
    );
    assert!(lines[3].starts_with("fastest:"));
}

/// The coalesced upload jobs lay pad files out as zeros on every path: a hybrid torrent of
/// odd-sized files (BEP 47 pads between them) is checked piece by piece through the copy and the
/// `mmap` path.
#[test]
fn padded_hybrid_torrent_verifies_on_the_copy_and_mmap_paths() {
    use ringseed::engine::UploadPath;
    let dir = tempfile::tempdir().unwrap();
    let top = dir.path().join("set");
    std::fs::create_dir_all(&top).unwrap();
    for (i, len) in [70_001usize, 5, 40_000, 123_457].iter().enumerate() {
        std::fs::write(top.join(format!("f{i}.bin")), pattern(*len, i as u64 + 11)).unwrap();
    }
    let opts = CreateOptions {
        version: ringseed::metainfo::Version::Hybrid,
        piece_length: Some(16 * KIB),
        ..CreateOptions::default()
    };
    let meta = create(&top, &opts, &Progress::default()).unwrap().1;
    assert!(meta.info.layout.files.iter().any(|f| f.pad), "no pad files");
    for path in [UploadPath::Copy, UploadPath::Mmap] {
        let engine = engine_seeding(
            &meta,
            dir.path(),
            Settings {
                workers: 1,
                upload_path: path,
                ..Settings::default()
            },
        );
        let total = meta.info.layout.total_length;
        let report = bench_engine(
            engine,
            std::slice::from_ref(&meta.info),
            BenchOptions {
                peers: 2,
                reqq: 16,
                stop: Stop::Bytes(2 * total),
                verify_every: 1,
                ..BenchOptions::default()
            },
        );
        assert!(
            report.pieces_verified >= u64::from(meta.info.layout.num_pieces),
            "{path:?}"
        );
    }
}

#[test]
fn a_mixed_run_reports_the_paying_and_the_free_leechers_apart() {
    // --spawn-seeder with --pay gives the seeder its speed layer (`rs_speed` offers, paid
    // slots); --paying-peers 2 of 4 makes leechers 0 and 1 pay and 2 and 3 free.
    let out = common::ringseed()
        .args([
            "bench",
            "--spawn-seeder",
            "--size-mib",
            "16",
            "--peers",
            "4",
        ])
        .args(["--pay", "1000", "--budget", "1000000000000000000"])
        .args(["--paying-peers", "2", "--duration", "2", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let g = &v["groups"];
    let (paying, free) = (&g["paying"], &g["free"]);
    assert_eq!(paying["leechers"], 2, "{g}");
    assert_eq!(free["leechers"], 2, "{g}");
    let bytes = |x: &serde_json::Value| x["bytes"].as_u64().unwrap();
    assert!(bytes(paying) > 0 && bytes(free) > 0, "{g}");
    // The groups split the run's bytes, nothing lost or counted twice.
    assert_eq!(bytes(paying) + bytes(free), v["bytes"].as_u64().unwrap());
    for group in [paying, free] {
        for key in [
            "leechers_with_blocks",
            "gib_per_s",
            "first_block_median_seconds",
            "first_block_max_seconds",
            "confirmed",
            "confirm_to_first_block_median_seconds",
            "confirm_to_first_block_max_seconds",
            "latency_p99_us",
        ] {
            assert!(group.get(key).is_some(), "no {key} in {group}");
        }
        // Every leecher that got bytes has a first block, so these are numbers here.
        assert!(group["first_block_median_seconds"].is_f64(), "{group}");
        assert!(group["latency_p99_us"].is_u64(), "{group}");
    }
    // Only payers bid, so only they are confirmed, and the groups agree with the payment totals.
    assert_eq!(free["confirmed"], 0);
    assert_eq!(v["payment"]["payers"], 2);
    assert_eq!(paying["confirmed"], v["payment"]["confirmed"]);
}

/// `bench --encrypt`: leechers dial with MSE and RC4 an engine that refuses anything else, and
/// every piece they check is right through the cipher.
#[test]
fn encrypted_leechers_download_through_rc4() {
    use ringseed::engine::encryption::{Encryption, Level, Policy};
    let dir = tempfile::tempdir().unwrap();
    let (_, meta) = payload(dir.path(), 4 << 20, 256);
    let engine = engine_seeding(
        &meta,
        dir.path(),
        Settings {
            workers: 1,
            encryption: Encryption {
                incoming: Policy::Forced,
                outgoing: Policy::Enabled,
                level: Level::Rc4,
                prefer_rc4: true,
            },
            ..Settings::default()
        },
    );
    // Plain handshakes would be refused (`forced`, RC4 only): every leecher that connects
    // went through MSE.
    let budget = 8 << 20;
    let report = bench_engine(
        engine,
        std::slice::from_ref(&meta.info),
        BenchOptions {
            peers: 4,
            reqq: 32,
            stop: Stop::Bytes(budget),
            verify_every: 1,
            encrypt: true,
            ..BenchOptions::default()
        },
    );
    assert!(report.pieces_verified > 0);
    assert_eq!(report.bytes, budget);
    assert_eq!(report.connected, 4);
}

/// A worker over its request-queue budget tells its peers a share of it (a second BEP 10
/// handshake) and rejects (BEP 6) what they queued past it; the leechers ask again, and every
/// block still arrives once and intact, with both sides counting the same rejects.
#[test]
fn a_worker_over_its_queue_budget_sheds_and_every_block_still_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let (_, meta) = payload(dir.path(), 8 << 20, 64);
    let engine = engine_seeding(
        &meta,
        dir.path(),
        Settings {
            workers: 1,
            upload_slots: 0,
            // 64 blocks (1 MiB): 32 leechers asking for 64 blocks each are far over it, and
            // are told the least share, 8.
            queue_budget_blocks: 64,
            ..Settings::default()
        },
    );
    let opts = BenchOptions {
        addr: engine.local_addr(),
        peers: 32,
        reqq: 64,
        stop: Stop::Bytes(96 << 20),
        verify_every: 1,
        ..BenchOptions::default()
    };
    let report = bench::run_torrents(std::slice::from_ref(&meta.info), &opts, &mut |_| {}).unwrap();
    let stats = engine.shutdown();
    assert!(report.passed(), "{report:?}");
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.bytes, stats.iter().map(|s| s.bytes_up).sum::<u64>());
    assert!(report.bytes >= 96 << 20);
    assert!(report.pieces_verified > 0);
    let shed: u64 = stats.iter().map(|s| s.shed).sum();
    let rejected: u64 = stats.iter().map(|s| s.rejected).sum();
    assert!(shed > 0, "nothing shed");
    // Every peer was unchoked throughout: its only rejects are the shed ones, and the
    // leechers saw each of them.
    assert_eq!(shed, rejected);
    assert_eq!(report.rejected_requests, rejected);
}

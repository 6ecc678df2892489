#!/usr/bin/env bash
# Downloads one payload from the same ringseed seeder with `ringseed download` and with a
# libtorrent leecher (python3-libtorrent), interleaved, and prints the medians and ratios:
# GiB/s, the downloader's CPU-seconds per GiB and its peak RSS; then the time from adding a
# magnet link (info-hash only, the seeder given as a peer) to the first byte on disk.
#
#   SIZE_MIB=2048 PAIRS=5 MAGNET_RUNS=5 perf/download_vs_libtorrent.sh
#
# Environment: SIZE_MIB (2048), PAIRS of full downloads (5), MAGNET_RUNS pairs (5),
# DLPERF_DIR (/tmp/ringseed-dlperf; downloads go to fresh directories in it, on the payload's
# filesystem), VERIFY=all|last (cmp every download, or the last pair's only), KEEP_PAYLOAD=1 to
# keep the payload for the next run, LT_PRESET / LT_SETTINGS to tune the libtorrent leecher (see
# perf/dl_measure.py), PROBE=0 to skip the page-cache write probe (below).
#
# The seeder (`ringseed seed --workers 1`, page-cached payload) runs on CPU 0 for the whole run;
# every downloader runs on CPU 1 (taskset), into a fresh directory, after `sync`, and that
# directory is removed after the run. Per run: wall seconds from the fork to the exit (wait4),
# CPU seconds (user + sys of every thread, rusage), peak RSS (ru_maxrss) and peak anonymous RSS
# (sampled; libtorrent 2.0 maps its files, whose pages ru_maxrss counts), and the time at which
# every byte of the file was in the page cache (st_blocks polled every 10 ms), the same for both.
#
# Before and after the downloads, a probe writes the payload's size with dd (1 MiB and 16 KiB
# writes) on the downloader's CPU: the page cache's own cost on this machine, for scale.
#
# DROP_CACHES=1 (the default when /proc/sys/vm/drop_caches is writable, i.e. as root) drops the
# page cache before every run and reads the seeder's payload back in: on a box whose memory is
# full of cache, writing a GiB into new page-cache pages costs 1.5-3 CPU-s of reclaim instead of
# 0.25-0.35 (dd of 1 GiB in 256 KiB writes on this VM, 2026-11-30), a cost both downloaders pay
# and which swamps what they differ in. Every run starts from the same free memory.
#
# DIRECT=1 adds a third downloader to every pair, `ringseed+direct`: ringseed with
# `engine.download_writes = "direct"` (O_DIRECT piece writes), with its own ratios to libtorrent.
#
# `ringseed download --json` looks for completion every 20 ms, so its wall time and its
# "data-in" time (every byte in the file) differ by at most that.
set -euo pipefail
SIZE_MIB=${SIZE_MIB:-2048}
PAIRS=${PAIRS:-5}
MAGNET_RUNS=${MAGNET_RUNS:-5}
DIR=${DLPERF_DIR:-/tmp/ringseed-dlperf}
VERIFY=${VERIFY:-all}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=/usr/bin/python3 # Debian's python, the one python3-libtorrent installs into
M="$ROOT/perf/dl_measure.py"

$PY -c 'import libtorrent' 2>/dev/null || { echo "needs python3-libtorrent (apt-get install python3-libtorrent)" >&2; exit 1; }
command -v taskset >/dev/null || { echo "needs taskset (util-linux)" >&2; exit 1; }
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
RS="$ROOT/target/release/ringseed"
SEED_CPU=0
DL_CPU=$(($(nproc) > 1 ? 1 : 0))
TICK=$(getconf CLK_TCK)
BYTES=$((SIZE_MIB << 20))

. "$ROOT/perf/lib.sh"
seed_payload "$DIR/seed" "$BYTES" # PAYLOAD, TORRENT; the payload read once into the page cache
INFO_HASH=$("$RS" info "$TORRENT" 2>/dev/null | awk '/^info-hash:/ {print $2; exit}' || true)
[ -n "$INFO_HASH" ] || INFO_HASH=$($PY "$ROOT/tests/helpers/lt_tool.py" hashes "$TORRENT" | cut -d' ' -f1)
MAGNET="magnet:?xt=urn:btih:$INFO_HASH"
NAME=$(basename "$PAYLOAD")

start_dl_seeder # PORT, SEEDER_PID; stopped (and the downloads removed) at exit
seeder_ticks() { awk '{print $14 + $15}' "/proc/$SEEDER_PID/stat"; }

# download CLIENT SOURCE OUT [--first-byte]: one measured download into the fresh directory OUT;
# prints dl_measure's JSON line.
download() {
  local client=$1 source=$2 out=$3
  shift 3
  local cmd
  if [ "$client" = ringseed ] || [ "$client" = ringseed+direct ]; then
    cmd=("$RS")
    [ "$client" = ringseed+direct ] && cmd+=(--config "$DIR/direct.toml")
    cmd+=(download "$source" --data "$out" --peer "127.0.0.1:$PORT" --no-trackers --metrics "" \
      --workers 1 --json)
  else
    cmd=($PY "$M" lt-leech "$source" "$out" "127.0.0.1:$PORT" 600)
  fi
  # The measuring process sits on the seeder's CPU and sleeps between its polls.
  taskset -c "$SEED_CPU" $PY "$M" run --cpu "$DL_CPU" --file "$out/$NAME" --size "$BYTES" "$@" -- "${cmd[@]}" \
    2>>"$DIR/$client.log"
}

if [ -w /proc/sys/vm/drop_caches ]; then DROP_CACHES=${DROP_CACHES:-1}; else DROP_CACHES=${DROP_CACHES:-0}; fi
# fresh_memory: the same free memory for every run (see DROP_CACHES above), the payload cached.
fresh_memory() {
  sync
  [ "$DROP_CACHES" = 1 ] || return 0
  echo 1 >/proc/sys/vm/drop_caches
  cat "$PAYLOAD" >/dev/null
}

RESULTS="$DIR/results.jsonl"
: >"$RESULTS"
CLIENTS="ringseed libtorrent"
if [ "${DIRECT:-0}" = 1 ]; then
  printf '[engine]\ndownload_writes = "direct"\n' >"$DIR/direct.toml"
  CLIENTS="ringseed ringseed+direct libtorrent"
fi
mkdir -p "$DIR/dl"

# write_probe: dd of the payload's size into a fresh file on the downloads' filesystem, with
# 1 MiB and with 16 KiB writes, on the downloader's CPU; one JSON line each in RESULTS. On a VM
# whose host takes back free guest memory (virtio-balloon free page reporting) the first touch
# of pages from large free blocks is slow, and large writes (large page-cache folios) pay it:
# this shows how much of a download's CPU the page cache alone costs on this machine.
write_probe() {
  local bs res
  [ "${PROBE:-1}" = 1 ] || return 0
  for bs in 1024 16; do
    rm -f "$DIR/dl/probe"
    fresh_memory
    res=$(taskset -c "$SEED_CPU" $PY "$M" run --cpu "$DL_CPU" --file "$DIR/dl/probe" --size "$BYTES" -- \
      dd if=/dev/zero of="$DIR/dl/probe" bs="${bs}K" count=$((BYTES / (bs << 10))) status=none)
    echo "$res" | $PY -c '
import json, sys
r = json.load(sys.stdin)
r.update(client="dd bs=%sK" % sys.argv[1], kind="probe", when=sys.argv[2])
print(json.dumps(r))' "$bs" "$1" >>"$RESULTS"
    rm -f "$DIR/dl/probe"
  done
}

echo "load before: $(uptime)" >&2
write_probe before
for pair in $(seq "$PAIRS"); do
  for client in $CLIENTS; do
    out="$DIR/dl/$client-$pair"
    rm -rf "$out" && mkdir -p "$out"
    fresh_memory
    s0=$(seeder_ticks)
    res=$(download "$client" "$TORRENT" "$out")
    s1=$(seeder_ticks)
    same=null
    if [ "$VERIFY" = all ] || [ "$pair" = "$PAIRS" ]; then
      if cmp -s "$PAYLOAD" "$out/$NAME"; then same=true; else same=false; fi
    fi
    echo "$res" | $PY -c '
import json, sys
r = json.load(sys.stdin)
r.update(client=sys.argv[1], pair=int(sys.argv[2]), kind="full", same=json.loads(sys.argv[3]),
         seeder_cpu_s=float(sys.argv[4]) / float(sys.argv[5]))
print(json.dumps(r))' "$client" "$pair" "$same" "$((s1 - s0))" "$TICK" | tee -a "$RESULTS" |
      $PY -c '
import json, sys
r = json.load(sys.stdin)
extra = ""
st = (r["result"] or {}).get("stats")
if st:
    extra = ", received %.1f %% of the size over %d connection(s)" % (
        100 * sum(s["bytes_down"] for s in st) / r["result"]["progress"]["size"], sum(s["connected_out"] for s in st))
print("%-15s pair %d: %6.2f s wall, data in at %s s, %5.2f CPU-s (%.2f user), maxrss %4.0f MiB, rc %d, same %s%s" % (
    r["client"], r["pair"], r["wall_s"], "%.2f" % r["full_s"] if r["full_s"] else "-", r["cpu_s"], r["user_s"],
    r["maxrss_kib"] / 1024, r["rc"], r["same"], extra), file=sys.stderr)'
    rm -rf "$out"
    kill -0 "$SEEDER_PID" 2>/dev/null || { echo "the seeder died; see $DIR/seeder.log" >&2; exit 1; }
  done
done
for run in $(seq "$MAGNET_RUNS"); do
  for client in ringseed libtorrent; do
    out="$DIR/dl/magnet-$client-$run"
    rm -rf "$out" && mkdir -p "$out"
    sync
    res=$(download "$client" "$MAGNET" "$out" --first-byte --timeout 60)
    echo "$res" | $PY -c '
import json, sys
r = json.load(sys.stdin)
r.update(client=sys.argv[1], pair=int(sys.argv[2]), kind="magnet")
print(json.dumps(r))' "$client" "$run" >>"$RESULTS"
    rm -rf "$out"
  done
done
write_probe after
echo "load after: $(uptime)" >&2

$PY - "$RESULTS" "$SIZE_MIB" "$PAIRS" "$MAGNET_RUNS" "$SEED_CPU" "$DL_CPU" <<'EOF'
import json, statistics, sys
path, size_mib, pairs, mruns, scpu, dcpu = sys.argv[1:]
gib = int(size_mib) / 1024
rows = [json.loads(l) for l in open(path) if l.strip()]
def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else float("nan")
names = [c for c in ("ringseed", "ringseed+direct", "libtorrent") if any(r["client"] == c for r in rows)]
full = {c: [r for r in rows if r["kind"] == "full" and r["client"] == c] for c in names}
bad = [r for rs in full.values() for r in rs if r["rc"] != 0 or r["timed_out"] or r["same"] is False
       or not (r["result"] or {}).get("done")]
for r in bad:
    print("FAILED: %s pair %d: rc %d, timed out %s, same %s, result %s" % (
        r["client"], r["pair"], r["rc"], r["timed_out"], r["same"], r["result"]))
m = {}
for c, rs in full.items():
    ok = [r for r in rs if r not in bad]
    m[c] = {
        "gibs": med([gib / r["wall_s"] for r in ok]),
        "wall": med([r["wall_s"] for r in ok]),
        "data_gibs": med([gib / r["full_s"] if r["full_s"] else None for r in ok]),
        "steady_gibs": med([gib / (r["full_s"] - r["first_byte_s"]) if r["full_s"] and r["first_byte_s"] else None for r in ok]),
        "first": med([r["first_byte_s"] for r in ok]),
        "cpu": med([r["cpu_s"] / gib for r in ok]),
        "rss": med([r["maxrss_kib"] / 1024 for r in ok]),
        "anon": med([r["anon_peak_kib"] / 1024 for r in ok]),
        "seeder": med([r["seeder_cpu_s"] / gib for r in ok]),
        "n": len(ok),
    }
print(f"payload {size_mib} MiB (1 MiB pieces) page-cached, seeded by `ringseed seed --workers 1` on CPU {scpu};"
      f" downloader on CPU {dcpu}, to disk (fresh directory each run); median of {pairs} interleaved pairs")
print(f"{'downloader':<15} {'wall s':>7} {'GiB/s':>7} {'data-in GiB/s':>13} {'steady GiB/s':>12} {'1st byte s':>10} "
      f"{'CPU-s/GiB':>9} {'maxRSS MiB':>10} {'anon MiB':>8} {'seeder CPU-s/GiB':>16} {'runs':>4}")
for c in names:
    x = m[c]
    print(f"{c:<15} {x['wall']:>7.2f} {x['gibs']:>7.3f} {x['data_gibs']:>13.3f} {x['steady_gibs']:>12.3f} {x['first']:>10.2f} "
          f"{x['cpu']:>9.3f} {x['rss']:>10.1f} {x['anon']:>8.1f} {x['seeder']:>16.3f} {x['n']:>4}")
r, l = m["ringseed"], m["libtorrent"]
ratio = lambda a, b: a / b if b else float("nan")
print(f"ratio ringseed/libtorrent: {ratio(r['gibs'], l['gibs']):.2f}x GiB/s (target >= 1.5), "
      f"{ratio(r['cpu'], l['cpu']):.2f}x CPU-s/GiB (target <= 0.5), {ratio(r['rss'], l['rss']):.2f}x max RSS, "
      f"{ratio(r['anon'], l['anon']):.2f}x anon RSS")
print(f"  by the time every byte was in the file (no exit tick): {ratio(r['data_gibs'], l['data_gibs']):.2f}x GiB/s; "
      f"from the first byte to the last: {ratio(r['steady_gibs'], l['steady_gibs']):.2f}x")
if "ringseed+direct" in m:
    d = m["ringseed+direct"]
    print(f"ratio ringseed+direct/libtorrent: {ratio(d['gibs'], l['gibs']):.2f}x GiB/s, "
          f"{ratio(d['cpu'], l['cpu']):.2f}x CPU-s/GiB, {ratio(d['rss'], l['rss']):.2f}x max RSS; "
          f"ringseed+direct/ringseed: {ratio(d['gibs'], r['gibs']):.2f}x GiB/s, {ratio(d['cpu'], r['cpu']):.2f}x CPU-s/GiB")
print("columns: GiB/s = size / (fork to exit); data-in = size / (fork to every byte in the file); steady = size /"
      " (first byte in the file to every byte); 1st byte s = fork to the first byte; maxRSS = ru_maxrss (counts the"
      " mapped file pages of libtorrent 2.0); anon = peak RssAnon (sampled every 50 ms)")
probes = [x for x in rows if x["kind"] == "probe"]
if probes:
    print(f"page-cache write probe (dd of {size_mib} MiB into a fresh file, CPU {dcpu}):", "; ".join(
        f"{x['when']} {x['client']}: {x['wall_s']:.2f} s, {x['cpu_s']:.2f} CPU-s" for x in probes))
mag = {c: [x for x in rows if x["kind"] == "magnet" and x["client"] == c] for c in ("ringseed", "libtorrent")}
if any(mag.values()):
    print(f"magnet (info-hash only, the seeder as a peer) to the first byte on disk, median of {mruns}:")
    for c in ("ringseed", "libtorrent"):
        xs = mag[c]
        miss = sum(1 for x in xs if x["first_byte_s"] is None)
        line = f"  {c:<11} {1000 * med([x['first_byte_s'] for x in xs]):7.0f} ms from the process start"
        if any(x["added_s"] is not None for x in xs):
            line += (f", {1000 * med([x['first_byte_s'] - x['added_s'] for x in xs if x['first_byte_s'] is not None and x['added_s'] is not None]):.0f} ms"
                     f" from add_torrent (metadata after {1000 * med([x['metadata_s'] - x['added_s'] for x in xs if x['metadata_s'] is not None and x['added_s'] is not None]):.0f} ms)")
        if miss:
            line += f"; {miss} run(s) saw no byte within 60 s"
        print(line)
EOF
echo "raw results: $RESULTS; logs: $DIR/*.log" >&2

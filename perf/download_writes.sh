#!/usr/bin/env bash
# `ringseed download` with buffered and with O_DIRECT piece writes (engine.download_writes),
# and optionally an older binary, interleaved, from one `ringseed seed --workers 1`: the
# medians of GiB/s and of the downloader's CPU-seconds per GiB.
#
#   SIZE_MIB=2048 RUNS=3 OLD=/path/to/older/ringseed perf/download_writes.sh
#
# Environment: SIZE_MIB (2048), RUNS per variant (3), OLD (a binary measured as "old", with
# its default config; unset: not measured), DLPERF_DIR (/tmp/ringseed-dlperf, shared with
# perf/download_vs_libtorrent.sh: KEEP_PAYLOAD=1 there leaves the payload for this one),
# RS (the binary measured as "buffered" and "direct"; default: a release build of this tree).
# Same conditions as perf/download_vs_libtorrent.sh: seeder on CPU 0, each downloader on CPU 1
# (`--workers 1`) into a fresh directory after `sync` (and, as root, dropped caches with the
# payload read back in), measured by perf/dl_measure.py (wall from fork to exit, CPU = user +
# sys of every thread).
set -euo pipefail
SIZE_MIB=${SIZE_MIB:-2048}
RUNS=${RUNS:-3}
DIR=${DLPERF_DIR:-/tmp/ringseed-dlperf}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=/usr/bin/python3
M="$ROOT/perf/dl_measure.py"
if [ -z "${RS:-}" ]; then
  cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
  RS="$ROOT/target/release/ringseed"
fi
SEED_CPU=0
DL_CPU=$(($(nproc) > 1 ? 1 : 0))
BYTES=$((SIZE_MIB << 20))

. "$ROOT/perf/lib.sh"
seed_payload "$DIR/seed" "$BYTES"
NAME=$(basename "$PAYLOAD")
mkdir -p "$DIR/dl"
printf '[engine]\ndownload_writes = "buffered"\n' >"$DIR/buffered.toml"
printf '[engine]\ndownload_writes = "direct"\n' >"$DIR/direct.toml"

start_dl_seeder # PORT, SEEDER_PID; stopped (and the downloads removed) at exit

if [ -w /proc/sys/vm/drop_caches ]; then DROP_CACHES=${DROP_CACHES:-1}; else DROP_CACHES=${DROP_CACHES:-0}; fi
fresh_memory() {
  sync
  [ "$DROP_CACHES" = 1 ] || return 0
  echo 1 >/proc/sys/vm/drop_caches
  cat "$PAYLOAD" >/dev/null
}

VARIANTS=(buffered direct)
[ -n "${OLD:-}" ] && VARIANTS=(old "${VARIANTS[@]}")
RESULTS="$DIR/writes.jsonl"
: >"$RESULTS"
echo "load before: $(uptime)" >&2
for run in $(seq "$RUNS"); do
  for v in "${VARIANTS[@]}"; do
    out="$DIR/dl/$v-$run"
    rm -rf "$out" && mkdir -p "$out"
    if [ "$v" = old ]; then
      cmd=("$OLD")
    else
      cmd=("$RS" --config "$DIR/$v.toml")
    fi
    cmd+=(download "$TORRENT" --data "$out" --peer "127.0.0.1:$PORT" --no-trackers --metrics "" \
      --workers 1 --json)
    fresh_memory
    res=$(taskset -c "$SEED_CPU" $PY "$M" run --cpu "$DL_CPU" --file "$out/$NAME" --size "$BYTES" -- \
      "${cmd[@]}" 2>>"$DIR/writes-$v.log")
    if cmp -s "$PAYLOAD" "$out/$NAME"; then same=true; else same=false; fi
    echo "$res" | $PY -c '
import json, sys
r = json.load(sys.stdin)
r.update(variant=sys.argv[1], run=int(sys.argv[2]), same=json.loads(sys.argv[3]))
print(json.dumps(r))' "$v" "$run" "$same" | tee -a "$RESULTS" | $PY -c '
import json, sys
r = json.load(sys.stdin)
print("%-9s run %d: %6.2f s wall, %5.2f CPU-s (%.2f user), rc %d, same %s" % (
    r["variant"], r["run"], r["wall_s"], r["cpu_s"], r["user_s"], r["rc"], r["same"]), file=sys.stderr)'
    rm -rf "$out"
  done
done
echo "load after: $(uptime)" >&2
$PY - "$RESULTS" "$SIZE_MIB" <<'EOF'
import json, statistics, sys
path, size_mib = sys.argv[1:]
gib = int(size_mib) / 1024
rows = [json.loads(l) for l in open(path) if l.strip()]
print(f"payload {size_mib} MiB, 1 MiB pieces; medians")
print(f"{'variant':<9} {'GiB/s':>7} {'CPU-s/GiB':>9} {'user/GiB':>8} {'sys/GiB':>8} {'ok runs':>7}")
base = None
for v in ("old", "buffered", "direct"):
    rs = [r for r in rows if r["variant"] == v and r["rc"] == 0 and r["same"]]
    if not rs:
        continue
    g = statistics.median(gib / r["wall_s"] for r in rs)
    c = statistics.median(r["cpu_s"] / gib for r in rs)
    u = statistics.median(r["user_s"] / gib for r in rs)
    s = statistics.median((r["cpu_s"] - r["user_s"]) / gib for r in rs)
    base = base or (g, c)
    print(f"{v:<9} {g:>7.3f} {c:>9.3f} {u:>8.3f} {s:>8.3f} {len(rs):>7}"
          f"   ({g / base[0]:.2f}x GiB/s, {c / base[1]:.2f}x CPU of the first row)")
EOF

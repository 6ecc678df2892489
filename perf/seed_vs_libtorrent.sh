#!/usr/bin/env bash
# Seeds one page-cached payload with ringseed and, in the same run, with libtorrent
# (python3-libtorrent, high_performance_seed preset), downloads each with the same leecher
# (libtorrent into tmpfs), seeder and leecher pinned to different cores, and prints GiB/s,
# the seeder's CPU-seconds per GiB and the ratios.
#
#   perf/seed_vs_libtorrent.sh [SIZE_GIB=2] [RUNS=3] [DIR=/tmp/ringseed-seedperf] [LEECHER=fetch|libtorrent]
#
# Leechers (until `ringseed bench` exists): `fetch` is `ringseed fetch`, one connection with 256
# requests outstanding that checks every piece in memory; `libtorrent` is a libtorrent session
# writing to tmpfs, much slower, so it caps both seeders and only the CPU-s/GiB tells them apart.
set -euo pipefail
SIZE_GIB=${1:-2}
RUNS=${2:-3}
DIR=${3:-/tmp/ringseed-seedperf}
LEECHER=${4:-fetch}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LT="$ROOT/tests/helpers/lt_tool.py"
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
RS="$ROOT/target/release/ringseed"
SEED_CPU=0
LEECH_CPU=$(( $(nproc) > 1 ? 1 : 0 ))
TICK=$(getconf CLK_TCK)

. "$ROOT/perf/lib.sh"
BYTES=$((SIZE_GIB << 30))
seed_payload "$DIR" "$BYTES"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# run_one NAME: starts the seeder, downloads once, prints "seconds cpu_seconds"
run_one() {
  local name=$1 port pid out
  port=$(free_port)
  out=$(mktemp -d /dev/shm/ringseed-leech.XXXX)
  if [ "$name" = ringseed ]; then
    taskset -c "$SEED_CPU" "$RS" seed "$DIR/payload.torrent" --data "$DIR/data" --skip-check --metrics "" \
      --listen "127.0.0.1:$port" --workers 1 --stats-every 0 >"$DIR/seeder.log" 2>&1 &
  else
    taskset -c "$SEED_CPU" /usr/bin/python3 "$LT" seed "$DIR/payload.torrent" "$DIR/data" "$port" >"$DIR/seeder.log" 2>&1 &
  fi
  pid=$!
  for _ in $(seq 100); do
    grep -qE '^(ready|seeding )' "$DIR/seeder.log" && break
    sleep 0.1
  done
  local c0 c1 res
  c0=$(cpu_ticks "$pid")
  if [ "$LEECHER" = fetch ]; then
    # libtorrent sometimes resets a connection that arrives right after it starts seeding;
    # retry a few times (the seeder's CPU for a refused attempt is negligible).
    res=""
    for _ in 1 2 3 4 5; do
      res=$(taskset -c "$LEECH_CPU" "$RS" fetch --json --peer "127.0.0.1:$port" "$DIR/payload.torrent" 2>/dev/null) && break
      sleep 1
    done
    res=$(echo "$res" | /usr/bin/python3 -c "import json,sys; r=json.load(sys.stdin); r['done']=True; print(json.dumps(r))")
  else
    res=$(taskset -c "$LEECH_CPU" /usr/bin/python3 "$LT" download "$DIR/payload.torrent" "$out" "127.0.0.1:$port" 600)
  fi
  c1=$(cpu_ticks "$pid")
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$out"
  echo "$res" | /usr/bin/python3 -c "import json,sys; r=json.load(sys.stdin); assert r['done'], r; print(r['seconds'], ($c1-$c0)/$TICK)"
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
declare -A secs cpu
for r in $(seq "$RUNS"); do
  for name in ringseed libtorrent; do
    read -r s c < <(run_one "$name")
    secs[$name]+="$s "
    cpu[$name]+="$c "
  done
done
report() { # name -> "gib_s cpu_per_gib"
  local s c
  s=$(tr ' ' '\n' <<<"${secs[$1]}" | grep . | median)
  c=$(tr ' ' '\n' <<<"${cpu[$1]}" | grep . | median)
  awk -v s="$s" -v c="$c" -v g="$SIZE_GIB" 'BEGIN {printf "%.3f %.3f\n", g / s, c / g}'
}
read -r rg rc < <(report ringseed)
read -r lg lc < <(report libtorrent)
echo "payload ${SIZE_GIB} GiB page-cached; seeder on cpu $SEED_CPU, leecher ($LEECHER) on cpu $LEECH_CPU; median of $RUNS runs"
printf "%-12s %10s %14s\n" seeder "GiB/s" "CPU-s per GiB"
printf "%-12s %10s %14s\n" ringseed "$rg" "$rc"
printf "%-12s %10s %14s\n" libtorrent "$lg" "$lc"
awk -v rg="$rg" -v rc="$rc" -v lg="$lg" -v lc="$lc" 'BEGIN {
  printf "ratio ringseed/libtorrent: %.2fx GiB/s (target >= 1.5), %.2fx CPU-s/GiB (target <= 0.5)\n", rg / lg, (lc > 0 ? rc / lc : 0) }'

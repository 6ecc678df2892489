#!/usr/bin/env bash
# What an idle peer costs the seeder: a `ringseed seed` process (one worker, default settings)
# is held at PEERS connected, handshaken, idle peers (`ringseed bench --idle`) and its resident
# set is read from /proc before and while they are held. Each count runs against a fresh seeder
# process; the per-peer figure is the growth divided by the peers held, and the slope between
# the smallest and the largest count (which cancels one-time costs such as the first ring
# buffers and allocator arenas).
#
#   perf/idle_peers.sh [PEER_COUNTS="1000 10000"] [SECONDS=8]
#
# 10 000 peers need ~10 000 descriptors in each process: the script raises the limit (as root it
# can raise the hard limit too).
set -euo pipefail
COUNTS=${1:-"1000 10000"}
SECS=${2:-8}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${IDLE_DIR:-/tmp/ringseed-idle}
PY=/usr/bin/python3
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
RS="$ROOT/target/release/ringseed"
ulimit -Hn 65536 2>/dev/null || true
ulimit -n "$(ulimit -Hn)"
max=0
for n in $COUNTS; do [ "$n" -gt "$max" ] && max=$n; done
if [ "$(ulimit -n)" -lt $((max + 200)) ]; then
  echo "ulimit -n is $(ulimit -n); $max peers need about $((max + 200)) in each process" >&2
fi

mkdir -p "$DIR/data"
head -c $((16 << 20)) /dev/urandom >"$DIR/data/idle.bin"
"$RS" create "$DIR/data/idle.bin" -o "$DIR/idle.torrent" --no-date >/dev/null
free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

SEEDER=""
cleanup() { [ -n "$SEEDER" ] && kill -TERM "$SEEDER" 2>/dev/null && wait "$SEEDER" 2>/dev/null; return 0; }
trap cleanup EXIT

declare -A growth
echo "load: $(uptime)" >&2
printf "%7s %12s %12s %12s %10s %14s\n" peers "held" "RSS before" "RSS held" "growth" "KiB per peer"
for n in $COUNTS; do
  port=$(free_port)
  "$RS" seed "$DIR/idle.torrent" --data "$DIR/data" --skip-check --metrics "" --no-trackers \
    --listen "127.0.0.1:$port" --workers 1 --stats-every 0 >"$DIR/seeder.log" 2>&1 &
  SEEDER=$!
  for _ in $(seq 100); do grep -q '^seeding ' "$DIR/seeder.log" && break; sleep 0.1; done
  sleep 0.5
  before=$(rss_kib "$SEEDER")
  out=$("$RS" bench "$DIR/idle.torrent" --peer "127.0.0.1:$port" --seeder-pid "$SEEDER" --idle \
    --peers "$n" --duration "$SECS" --timeout 30 --json 2>/dev/null || true)
  read -r held peak < <(echo "$out" | $PY -c 'import json,sys; r=json.load(sys.stdin); print(r["held_at_end"], r["seeder"]["rss_peak_bytes"] // 1024)')
  kill -TERM "$SEEDER" 2>/dev/null || true
  wait "$SEEDER" 2>/dev/null || true
  SEEDER=""
  g=$((peak - before))
  growth[$n]="$g $held"
  awk -v n="$n" -v h="$held" -v b="$before" -v p="$peak" -v g="$g" \
    'BEGIN { printf "%7d %12d %9.1f MiB %9.1f MiB %6.1f MiB %14.2f\n", n, h, b/1024, p/1024, g/1024, (h ? g/h : 0) }'
done
set -- $COUNTS
first=$1
last=${!#}
if [ "$first" != "$last" ]; then
  read -r g1 h1 <<<"${growth[$first]}"
  read -r g2 h2 <<<"${growth[$last]}"
  awk -v g1="$g1" -v h1="$h1" -v g2="$g2" -v h2="$h2" 'BEGIN {
    if (h2 > h1) printf "slope %d -> %d peers: %.2f KiB per idle peer (target <= 16)\n", h1, h2, (g2 - g1) / (h2 - h1) }'
fi

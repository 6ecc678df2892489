#!/usr/bin/env bash
# The seeder's memory and CPU under the hostile peers of tests/bad_peers.rs (issue 13): a
# `ringseed seed` process with the settings of that test (two workers, 4 upload slots, 32 MiB/s,
# handshake 3 s, message and send deadlines 5 s (the test: 4 s, below the config's least),
# 8 connections per address) serves a 48 MiB
# torrent of 64 KiB pieces. libtorrent downloads it alone, then again while the hostile peers
# attack: slowloris (SLOWLORIS connections trickling length prefixes, and a trickled handshake),
# 8 slot hoarders that never read, allowed-fast pinning, 8 floods of messages that change nothing,
# a metadata request flood, 40 connections from one address (the test
# `hostile_peers_against_a_seeder_process` drives them and checks each is cut off and the
# download is byte-perfect). Printed: the seeder's VmRSS and its peak (VmHWM) and its CPU time
# (utime + stime from /proc/PID/stat) at start, after the download alone and after the attacked
# one; its disconnects by reason from /metrics.
#
#   perf/hostile_peers.sh [SLOWLORIS=200]
#
# Loopback only. 1000 slowloris connections need about 1100 descriptors on each side: the script
# raises the limit.
set -euo pipefail
SLOW=${1:-200}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${HOSTILE_DIR:-/tmp/ringseed-hostile}
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
cargo test --release --quiet --manifest-path "$ROOT/Cargo.toml" --test bad_peers --no-run 2>/dev/null
RS="$ROOT/target/release/ringseed"
. "$ROOT/perf/lib.sh"
ulimit -Hn 65536 2>/dev/null || true
ulimit -n "$(ulimit -Hn)"

rm -rf "$DIR"
mkdir -p "$DIR/data"
random_bytes $((48 << 20)) >"$DIR/data/payload.bin"
"$RS" create "$DIR/data/payload.bin" -o "$DIR/payload.torrent" --no-date --piece-kib 64 >/dev/null
cat >"$DIR/ringseed.toml" <<EOF
[engine]
workers = 2
upload_slots = 4
upload_rate_limit_kib = 32768
handshake_timeout_s = 3
message_timeout_s = 5
send_timeout_s = 5
max_connections_per_ip = 8
EOF
port=$(free_port)
mport=$(free_port)
"$RS" --config "$DIR/ringseed.toml" seed "$DIR/payload.torrent" --data "$DIR/data" --skip-check \
  --no-trackers --listen "127.0.0.1:$port" --metrics "127.0.0.1:$mport" --stats-every 0 \
  >"$DIR/seeder.log" 2>&1 &
SEEDER=$!
cleanup() { kill -TERM "$SEEDER" 2>/dev/null && wait "$SEEDER" 2>/dev/null; return 0; }
trap cleanup EXIT
for _ in $(seq 100); do grep -q '^seeding ' "$DIR/seeder.log" && break; sleep 0.1; done
grep -q '^seeding ' "$DIR/seeder.log" || { cat "$DIR/seeder.log" >&2; exit 1; }
sleep 0.5

HZ=$(getconf CLK_TCK)
# sample LABEL: the seeder's VmRSS, VmHWM (MiB) and CPU seconds so far.
sample() {
  local rss hwm ticks
  rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$SEEDER/status")
  hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$SEEDER/status")
  # Fields after the command name (which has no spaces here): utime is 14th, stime 15th.
  ticks=$(awk '{print $14 + $15}' "/proc/$SEEDER/stat")
  awk -v l="$1" -v r="$rss" -v h="$hwm" -v t="$ticks" -v hz="$HZ" \
    'BEGIN { printf "%-28s VmRSS %7.1f MiB  VmHWM %7.1f MiB  CPU %7.2f s\n", l, r/1024, h/1024, t/hz }'
}
attack() {
  env RINGSEED_HOSTILE_SEEDER="127.0.0.1:$port" RINGSEED_HOSTILE_TORRENT="$DIR/payload.torrent" \
    RINGSEED_HOSTILE_DATA="$DIR/data/payload.bin" RINGSEED_HOSTILE_OUT="$DIR/$1" \
    RINGSEED_HOSTILE_SLOWLORIS="$SLOW" "${@:2}" \
    cargo test --release --quiet --manifest-path "$ROOT/Cargo.toml" --test bad_peers -- \
    --ignored --exact hostile_peers_against_a_seeder_process --nocapture 2>&1 |
    grep -E '^libtorrent took|panicked|FAILED' || true
}

echo "load: $(uptime)"
sample "started"
t0=$(date +%s.%N)
attack alone
t1=$(date +%s.%N)
sample "after libtorrent alone"
attack beside RINGSEED_HOSTILE_ATTACK=1
t2=$(date +%s.%N)
sample "after the attacked download"
awk -v a="$t0" -v b="$t1" -v c="$t2" 'BEGIN { printf "wall: %.1f s alone, %.1f s attacked (test process, with its setup)\n", b-a, c-b }'
echo "disconnects:"
python3 - "$mport" <<'EOF'
import sys, urllib.request
body = urllib.request.urlopen("http://127.0.0.1:%s/metrics" % sys.argv[1]).read().decode()
for line in body.splitlines():
    if line.startswith("ringseed_disconnects"):
        print("  " + line)
EOF

#!/usr/bin/env bash
# Is paying worth it? The mixed contention of issue 17: a seeder with upload_slots = 8,
# paid_slots = 4 and a 200 MiB/s upload limit (so the seeder, not the leechers, is the
# bottleneck), and one `ringseed bench` run of 16 leechers started together, the first 8 paying
# (`--paying-peers 8`), the rest free. Prints, per round and as medians, each group's bytes, time
# to first block (payers: from their bid's confirmation) and p99, and the payers/free ratio.
#
#   perf/paying_worth_it.sh [SIZE_MIB=1024] [ROUNDS=3] [SECONDS=20]
#
# With RINGSEED_OLD=/path/to/an/older/ringseed, each round also runs that binary as the seeder
# (same config, same bench), for a before/after in one command.
set -euo pipefail
SIZE_MIB=${1:-1024}
ROUNDS=${2:-3}
SECS=${3:-20}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${PAYING_DIR:-/tmp/ringseed-paying}
PRICE=1048576                 # base units per MiB
BUDGET=1000000000000000000000 # 1000 BTT per payer: never the limit in a run

cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
RS="$ROOT/target/release/ringseed"
SEED_CPU=0
BENCH_CPU=$(($(nproc) > 1 ? 1 : 0))
. "$ROOT/perf/lib.sh"
seed_payload "$DIR" $((SIZE_MIB << 20))

"$RS" config print-default | sed -e 's/^upload_slots = .*/upload_slots = 8/' \
  -e 's/^upload_rate_limit_kib = .*/upload_rate_limit_kib = 204800/' \
  -e "s|^dir = \"/var/lib/ringseed\"|dir = \"$DIR/state\"|" \
  -e '/^\[speed\]/,/^\[/ s/^paid_slots = .*/paid_slots = 4/' >"$DIR/plain.toml"
enable_speed "$DIR/plain.toml" "$DIR/seed.toml"

SEEDER_PID=""
cleanup() { [ -n "$SEEDER_PID" ] && kill -TERM "$SEEDER_PID" 2>/dev/null && wait "$SEEDER_PID" 2>/dev/null; return 0; }
trap cleanup EXIT

SEEDERS="new"
[ -n "${RINGSEED_OLD:-}" ] && SEEDERS="new old"
RESULTS="$DIR/results.jsonl"
: >"$RESULTS"
for round in $(seq "$ROUNDS"); do
  for which in $SEEDERS; do
    bin=$RS
    [ "$which" = old ] && bin=$RINGSEED_OLD
    rm -rf "$DIR/state"
    port=$(free_port)
    taskset -c "$SEED_CPU" "$bin" seed "$TORRENT" --data "$DIR/data" --skip-check --config "$DIR/seed.toml" \
      --metrics "" --no-trackers --listen "127.0.0.1:$port" --stats-every 0 >"$DIR/$which.log" 2>&1 &
    SEEDER_PID=$!
    for _ in $(seq 100); do ss -Hltn "sport = :$port" | grep -q . && break; sleep 0.1; done
    sleep 0.5
    taskset -c "$BENCH_CPU" "$RS" bench "$TORRENT" --peer "127.0.0.1:$port" --peers 16 --paying-peers 8 \
      --pay "$PRICE" --budget "$BUDGET" --duration "$SECS" --json 2>/dev/null |
      python3 -c 'import json,sys; r=json.load(sys.stdin); r["seeder_binary"]=sys.argv[1]; print(json.dumps(r))' "$which" >>"$RESULTS"
    kill -TERM "$SEEDER_PID" 2>/dev/null || true
    wait "$SEEDER_PID" 2>/dev/null || true
    SEEDER_PID=""
    echo "round $round, $which seeder done" >&2
  done
done

python3 - "$RESULTS" <<'EOF'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else float("nan")
print("16 leechers (8 paying, 8 free), seeder: 8 slots, 4 paid, 200 MiB/s; medians over rounds")
print(f"{'seeder':<7} {'group':<7} {'MiB':>9} {'first block ms (med/max)':>25} {'confirm->block ms':>18} {'p99 ms':>8}")
for which in ("new", "old"):
    rs = [r for r in runs if r.get("seeder_binary") == which and r.get("groups")]
    if not rs:
        continue
    for g in ("paying", "free"):
        gs = [r["groups"][g] for r in rs]
        mib = med([x["bytes"] / 2**20 for x in gs])
        fb = med([x["first_block_median_seconds"] for x in gs])
        fbx = med([x["first_block_max_seconds"] for x in gs])
        c2b = med([x.get("confirm_to_first_block_max_seconds") for x in gs])
        p99 = med([x["latency_p99_us"] / 1000 if x.get("latency_p99_us") is not None else None for x in gs])
        c2b_s = f"{c2b * 1000:>18.1f}" if c2b == c2b else f"{'':>18}"
        print(f"{which:<7} {g:<7} {mib:>9.1f} {fb * 1000:>12.1f} / {fbx * 1000:>10.1f} {c2b_s} {p99:>8.1f}")
    ratio = med([r["groups"]["paying"]["bytes"] / max(r["groups"]["free"]["bytes"], 1) for r in rs])
    print(f"{which:<7} payers/free bytes: {ratio:.2f}x (median of per-round ratios)")
EOF

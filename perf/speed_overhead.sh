#!/usr/bin/env bash
# What paying traffic costs the seeder: `ringseed seed` with and without the rs_speed extension,
# under the same `ringseed bench` load, every leecher bidding and paying in the paid runs.
#
#   perf/speed_overhead.sh [SIZE_MIB=512] [PAIRS=5] [SECONDS=5] [PEERS=16]
#
# The seeder runs as its own process pinned to CPU 0, so its voucher verifier and database
# writer share that core with the engine's worker (the worst case: a box whose every core
# serves); the bench and its payers (which sign the vouchers) are pinned to CPU 1. Plain and
# paid runs are interleaved and each paid run starts from an empty ledger. Prints each run, the
# medians, the paid/plain ratios of GiB/s and of the seeder's CPU-s/GiB (its whole process), and
# the CPU its speed threads took as a share of its workers' (steadier than throughput on a shared
# box: it is what paying traffic costs a seeder whose every core serves).
set -euo pipefail

SIZE_MIB=${1:-512}
PAIRS=${2:-5}
SECS=${3:-5}
PEERS=${4:-16}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${SPEED_OVERHEAD_DIR:-/tmp/ringseed-speed-overhead}
PRICE=1048576                  # base units per MiB
BUDGET=1000000000000000000000 # 1000 BTT per payer: never the limit in a run

cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
RS="$ROOT/target/release/ringseed"
SEED_CPU=0
BENCH_CPU=$(($(nproc) > 1 ? 1 : 0))

. "$ROOT/perf/lib.sh"
seed_payload "$DIR" $((SIZE_MIB << 20))

# Both seeders as compare.sh runs ringseed: one worker, every interested peer unchoked.
"$RS" config print-default | sed -e 's/^upload_slots = .*/upload_slots = 0/' -e 's/^workers = .*/workers = 1/' \
  -e "s|^dir = \"/var/lib/ringseed\"|dir = \"$DIR/state\"|" >"$DIR/plain.toml"
enable_speed "$DIR/plain.toml" "$DIR/pay.toml"

SEEDER_PID=""
cleanup() { [ -n "$SEEDER_PID" ] && kill -TERM "$SEEDER_PID" 2>/dev/null && wait "$SEEDER_PID" 2>/dev/null; return 0; }
trap cleanup EXIT


RESULTS="$DIR/results.tsv"
: >"$RESULTS"
for round in $(seq "$PAIRS"); do
  for mode in plain pay; do
    rm -rf "$DIR/state"
    port=$(free_port)
    taskset -c "$SEED_CPU" "$RS" seed "$TORRENT" --data "$DIR/data" --skip-check --config "$DIR/$mode.toml" \
      --metrics "" --no-trackers --listen "127.0.0.1:$port" --stats-every 0 >"$DIR/$mode.log" 2>&1 &
    SEEDER_PID=$!
    for _ in $(seq 100); do ss -Hltn "sport = :$port" | grep -q . && break; sleep 0.1; done
    sleep 0.5
    PAY=()
    [ "$mode" = pay ] && PAY=(--pay "$PRICE" --budget "$BUDGET")
    taskset -c "$BENCH_CPU" "$RS" bench "$TORRENT" --peer "127.0.0.1:$port" --seeder-pid "$SEEDER_PID" \
      "${PAY[@]}" --peers "$PEERS" --duration "$SECS" --json 2>/dev/null >"$DIR/$mode-$round.json" || true
    # CPU ticks of the seeder's threads by role, read before it exits: the engine's workers, and
    # the speed layer's verifier and database writer.
    ticks() { { cat /proc/"$SEEDER_PID"/task/*/stat 2>/dev/null || true; } | awk -v re="$1" '
      { c = $0; sub(/^[0-9]+ \(/, "", c); name = substr(c, 1, index(c, ") ") - 1); rest = substr(c, index(c, ") ") + 2)
        split(rest, f, " "); if (name ~ re) t += f[12] + f[13] } END { print t + 0 }'; }
    WORKER_TICKS=$(ticks '^ringseed-w')
    SPEED_TICKS=$(ticks '^ringseed-(verify|db)')
    kill -TERM "$SEEDER_PID" 2>/dev/null || true
    wait "$SEEDER_PID" 2>/dev/null || true
    SEEDER_PID=""
    python3 - "$DIR/$mode-$round.json" "$mode" "$round" "$WORKER_TICKS" "$SPEED_TICKS" >>"$RESULTS" <<'EOF'
import json, sys
path, mode, rnd, wt, st = sys.argv[1:6]
try:
    r = json.load(open(path))
except ValueError:
    print(mode, rnd, 0, "nan", 0, 0, wt, st, 0, sep="\t"); sys.exit()
p = r.get("payment") or {}
print(mode, rnd, r["gib_per_s_after_first_block"], r["seeder"]["cpu_seconds_per_gib"],
      p.get("vouchers_sent", 0), p.get("acked", 0), wt, st, p.get("confirmed", 0), sep="\t")
EOF
    tail -n 1 "$RESULTS" >&2
  done
done

python3 - "$RESULTS" <<'EOF'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().splitlines()]
by = {m: [r for r in rows if r[0] == m and float(r[2]) > 0] for m in ("plain", "pay")}
if not by["plain"] or not by["pay"]:
    sys.exit(f"no usable run: see the JSON files and logs in the directory of {sys.argv[1]}")
def med(m, i):
    return statistics.median(float(r[i]) for r in by[m])
g0, g1 = med("plain", 2), med("pay", 2)
c0, c1 = med("plain", 3), med("pay", 3)
plain_by_round = {r[1]: float(r[2]) for r in by["plain"]}
pairs = [float(r[2]) / plain_by_round[r[1]] for r in by["pay"] if r[1] in plain_by_round] or [float("nan")]
acked = [int(r[5]) for r in by["pay"]]
print(f"runs: {len(by['plain'])} pairs; vouchers per paid run (median): {med('pay', 4):.0f}; "
      f"paid runs with nothing acknowledged: {sum(a == 0 for a in acked)}; "
      f"payers confirmed per paid run: {min(int(r[8]) for r in by['pay'])} at least")
print(f"GiB/s      plain {g0:.3f}  paid {g1:.3f}  paid/plain {g1 / g0:.3f} "
      f"(per pair: {', '.join(f'{x:.3f}' for x in pairs)}; median {statistics.median(pairs):.3f})")
print(f"CPU-s/GiB  plain {c0:.3f}  paid {c1:.3f}  paid/plain {c1 / c0:.3f}")
shares = [int(r[7]) / int(r[6]) for r in by["pay"] if int(r[6]) > 0]
if shares:
    print(f"speed threads (verifier + database) CPU as a share of the workers' in paid runs: "
          f"median {100 * statistics.median(shares):.2f} % (min {100 * min(shares):.2f}, max {100 * max(shares):.2f})")
EOF

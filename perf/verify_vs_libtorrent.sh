#!/usr/bin/env bash
# Times `ringseed verify` on a multi-GiB page-cached payload against libtorrent's recheck of the
# same payload, in one run, and compares single-core hashing with `openssl speed -evp sha1`.
#
#   perf/verify_vs_libtorrent.sh [SIZE_GIB=4] [RUNS=5] [DIR=/tmp/ringseed-perf]
#
# Needs python3-libtorrent and openssl (Debian). Prints medians and ratios; the machine may be
# shared and noisy, so compare only figures taken in the same run.
set -euo pipefail
SIZE_GIB=${1:-4}
RUNS=${2:-5}
DIR=${3:-/tmp/ringseed-perf}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LT="/usr/bin/python3 $ROOT/tests/helpers/lt_tool.py"

cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
RS="$ROOT/target/release/ringseed"
. "$ROOT/perf/lib.sh"
CORES=$(nproc)

mkdir -p "$DIR/data/payload"
BYTES=$((SIZE_GIB << 30))
# Four files of unequal size so pieces straddle file boundaries.
if [ ! -f "$DIR/data/.complete-$SIZE_GIB" ]; then
  rm -f "$DIR"/data/payload/*
  i=0
  for frac in 50 25 15 10; do
    n=$((BYTES / 100 * frac + i * 4099))
    random_bytes "$n" >"$DIR/data/payload/part$i.bin"
    i=$((i + 1))
  done
  touch "$DIR/data/.complete-$SIZE_GIB"
fi
"$RS" create "$DIR/data/payload" -o "$DIR/payload.torrent" --no-date >/dev/null
TOTAL=$(du -cb "$DIR"/data/payload/* | tail -1 | cut -f1)
cat "$DIR"/data/payload/* >/dev/null # page cache warm

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
json_field() { /usr/bin/python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

# openssl: single core, 16 KiB blocks (its largest default size); GB/s = 10^9 bytes/s.
OPENSSL=$(openssl speed -evp sha1 -bytes 16384 -seconds 3 2>/dev/null | awk '/^sha1|^SHA1/ {v=$NF; sub(/k$/,"",v); print v*1000/1e9}' | tail -1)

one_core=(); all_cores=(); lt=()
for r in $(seq "$RUNS"); do
  one_core+=("$("$RS" verify --json --threads 1 --data "$DIR/data" "$DIR/payload.torrent" | json_field seconds)")
  all_cores+=("$("$RS" verify --json --data "$DIR/data" "$DIR/payload.torrent" | json_field seconds)")
  lt+=("$($LT check "$DIR/payload.torrent" "$DIR/data" | json_field seconds)")
done
s1=$(printf '%s\n' "${one_core[@]}" | median)
sN=$(printf '%s\n' "${all_cores[@]}" | median)
sL=$(printf '%s\n' "${lt[@]}" | median)

awk -v total="$TOTAL" -v s1="$s1" -v sN="$sN" -v sL="$sL" -v ossl="$OPENSSL" -v cores="$CORES" -v runs="$RUNS" 'BEGIN {
  g1 = total / s1 / 1e9; gN = total / sN / 1e9; gL = total / sL / 1e9
  printf "payload: %.2f GiB page-cached, %d cores, median of %d runs\n", total / 2^30, cores, runs
  printf "%-34s %8s %8s\n", "", "GB/s", "seconds"
  printf "%-34s %8.2f %8s\n", "openssl speed -evp sha1 (1 core)", ossl, "-"
  printf "%-34s %8.2f %8.3f\n", "ringseed verify --threads 1", g1, s1
  printf "%-34s %8.2f %8.3f\n", "ringseed verify (all cores)", gN, sN
  printf "%-34s %8.2f %8.3f\n", "libtorrent recheck", gL, sL
  printf "ratios: ringseed 1-core / openssl = %.3f (target >= 0.90)\n", g1 / ossl
  printf "        ringseed all cores / (cores x 1-core) = %.3f (target >= 0.90)\n", gN / (cores * g1)
  printf "        ringseed all cores / (cores x openssl) = %.3f\n", gN / (cores * ossl)
  printf "        ringseed / libtorrent = %.2fx (target > 1)\n", gN / gL
}'

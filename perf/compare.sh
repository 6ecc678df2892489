#!/usr/bin/env bash
# The whole-engine comparison, one command on a fresh machine: ringseed against the reference
# seeders Debian ships (libtorrent via python3-libtorrent with its high_performance_seed preset,
# aria2, Transmission), each driven by the same `ringseed bench` load at 1, 64 and 1024 peers,
# plus the loopback ceiling of this box (TCP from memory, the engine's socket settings).
#
#   perf/compare.sh [SIZE_MIB=1024] [RUNS=3] [SECONDS=6] [SEEDERS="ringseed libtorrent aria2 transmission"]
#
# Encryption (MSE/PE with RC4, every byte through the cipher): a seeder named NAME+rc4 runs
# NAME with incoming encryption forced to RC4 and the bench's leechers dial with `--encrypt`;
# `perf/compare.sh 1024 3 6 "ringseed ringseed+rc4 libtorrent libtorrent+rc4"` compares both
# with and without in one run (the +rc4 rows are also compared with each other).
#
# Upload paths: a seeder named ringseed+PATH (copy, mmap) runs ringseed with `upload_path =
# PATH` (`perf/compare.sh 1024 5 6 "ringseed+copy ringseed+mmap libtorrent"`); the table compares
# ringseed+mmap with ringseed+copy when both run. (`ringseed` alone runs `auto`, i.e. mmap.)
#
# VETH=1: every ringseed seeder runs in a network namespace and the bench reaches it over a veth
# pair (each leecher from its own address, as for Transmission below), a path closer to a NIC
# than loopback: the packets cross a device, and zero-copy sends are copied only on delivery.
# The loopback ceiling is then skipped; only ringseed seeders (ringseed, ringseed+PATH,
# ringseed-old) are allowed.
#
# Before and after a change: build the old commit's binary elsewhere and name it in
# RINGSEED_OLD; the seeder `ringseed-old` then runs it with the same config, in the same rounds
# (`RINGSEED_OLD=/tmp/old/ringseed perf/compare.sh 1024 5 6 "ringseed ringseed-old"`).
#
# Every seeder serves the same page-cached payload; the seeder runs on CPU 0 and the bench on
# CPU 1 (taskset). Rounds are interleaved (round 1 of every seeder, then round 2, ...), so a
# noisy neighbour hits all of them alike; the table shows medians over RUNS rounds and each
# figure's ratio to ringseed's. Seeder CPU-s/GiB and RSS come from /proc/PID of the seeder
# process (`ringseed bench --seeder-pid`); RSS is the peak sampled once a second.
#
# GiB/s is the steady rate, from the first block to the last (`gib_per_s_after_first_block`):
# Transmission unchokes only at its first 10-second rechoke, which would otherwise dominate.
#
# Transmission refuses peers on 127.0.0.0/8 ("martian" addresses) and allows one connection per
# IP, so it seeds inside a network namespace reached over a veth pair (a different path from
# loopback, noted in the table), and the leechers connect from 10.215.0.1 + i, a range routed to
# the host's lo (AnyIP) and back through the veth. Its runs last SECONDS + 12 s, so the steady
# part is as long as the others'. Without CAP_NET_ADMIN it is skipped.
set -euo pipefail
SIZE_MIB=${1:-1024}
RUNS=${2:-3}
SECS=${3:-6}
SEEDERS=${4:-"ringseed libtorrent aria2 transmission"}
PEERS="1 64 1024"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LT="$ROOT/tests/helpers/lt_tool.py"
DIR=${COMPARE_DIR:-/tmp/ringseed-compare}
PY=/usr/bin/python3 # Debian's python, the one python3-libtorrent installs into

# --- reference seeders from Debian, when missing -------------------------------------------
need=""
$PY -c 'import libtorrent' 2>/dev/null || need="$need python3-libtorrent"
command -v aria2c >/dev/null || need="$need aria2"
command -v transmission-cli >/dev/null || need="$need transmission-cli"
command -v taskset >/dev/null || need="$need util-linux"
command -v ss >/dev/null && command -v ip >/dev/null || need="$need iproute2"
if [ -n "$need" ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  echo "installing:$need" >&2
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq || true
  # shellcheck disable=SC2086
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >&2
fi

cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
RS="$ROOT/target/release/ringseed"
SEED_CPU=0
BENCH_CPU=$(($(nproc) > 1 ? 1 : 0))
# 1024 leechers and their seeder: ~2100 descriptors in two processes; raise the soft limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# --- payload, torrent, page cache ----------------------------------------------------------
. "$ROOT/perf/lib.sh"
seed_payload "$DIR" $((SIZE_MIB << 20))
# ringseed as an operator tuning for throughput would run it, like libtorrent's
# high_performance_seed (unchoke_slots_limit -1): every interested peer unchoked.
tuned() { "$1" config print-default | sed -e 's/^upload_slots = .*/upload_slots = 0/' -e 's/^workers = .*/workers = 1/'; }
tuned "$RS" >"$DIR/ringseed.toml"
# ringseed+rc4: MSE forced on incoming connections, RC4 the only method.
{ tuned "$RS" | sed -e 's/^encryption_in = .*/encryption_in = "forced"/' -e 's/^encryption_level = .*/encryption_level = "rc4"/'; } >"$DIR/ringseed-rc4.toml"
# ringseed+PATH: the upload path set.
for p in copy mmap; do
  tuned "$RS" | sed -e "s/^upload_path = .*/upload_path = \"$p\"/" >"$DIR/ringseed-$p.toml"
done
# The old binary gets its own defaults, tuned alike: it refuses keys added since.
if [ -n "${RINGSEED_OLD:-}" ]; then tuned "$RINGSEED_OLD" >"$DIR/ringseed-old.toml"; fi

# A port below the ephemeral range (32768+ by default), so no leecher's socket of an earlier run,
# e.g. in TIME_WAIT, holds it: aria2 binds 0.0.0.0 and fails on such a port.
free_port() {
  $PY -c '
import random, socket
for _ in range(200):
    p = random.randrange(20000, 30000)
    s = socket.socket()
    try:
        s.bind(("0.0.0.0", p)); print(p); break
    except OSError:
        pass
    finally:
        s.close()'
}
wait_listen() { # port [netns]
  for _ in $(seq 300); do
    if [ -n "${2:-}" ]; then
      ip netns exec "$2" ss -Hltn "sport = :$1" | grep -q . && return 0
    else
      ss -Hltn "sport = :$1" | grep -q . && return 0
    fi
    sleep 0.1
  done
  return 1
}

# --- Transmission's network namespace --------------------------------------------------------
NS="rscmp$$"
NS_HOST=10.214.0.1
NS_PEER=10.214.0.2
NS_SOURCES=10.215.0.0/16
ns_up=0
cleanup() {
  [ -n "${SEEDER_PID:-}" ] && kill -TERM "$SEEDER_PID" 2>/dev/null && wait "$SEEDER_PID" 2>/dev/null
  if [ "$ns_up" = 1 ]; then
    ip netns del "$NS" 2>/dev/null
    ip route del local "$NS_SOURCES" dev lo 2>/dev/null
  fi
  return 0
}
trap cleanup EXIT
VETH=${VETH:-0}
if [ "$VETH" = 1 ]; then
  for s in $SEEDERS; do
    case $s in ringseed | ringseed+* | ringseed-old) ;; *) echo "VETH=1 runs ringseed seeders only, not $s" >&2; exit 2 ;; esac
  done
fi
if [[ "$VETH" = 1 || " $SEEDERS " == *" transmission "* || " $SEEDERS " == *" transmission+rc4 "* ]]; then
  if ip netns add "$NS" 2>/dev/null; then
    ns_up=1
    ip link add "${NS}a" type veth peer name "${NS}b"
    ip link set "${NS}b" netns "$NS"
    ip addr add "$NS_HOST/30" dev "${NS}a"
    ip link set "${NS}a" up
    ip netns exec "$NS" ip addr add "$NS_PEER/30" dev "${NS}b"
    ip netns exec "$NS" ip link set "${NS}b" up
    ip netns exec "$NS" ip link set lo up
    # AnyIP: the whole source range is local to the host; the namespace routes it back.
    ip route add local "$NS_SOURCES" dev lo
    ip netns exec "$NS" ip route add "$NS_SOURCES" via "$NS_HOST"
  else
    [ "$VETH" = 1 ] && { echo "VETH=1 needs CAP_NET_ADMIN (a network namespace)" >&2; exit 2; }
    echo "no CAP_NET_ADMIN: Transmission (which refuses loopback peers) is skipped" >&2
    SEEDERS=$(echo "$SEEDERS" | tr ' ' '\n' | grep -v '^transmission' | tr '\n' ' ')
  fi
fi

# start_seeder NAME: starts it pinned to SEED_CPU; sets SEEDER_PID and TARGET (host:port);
# tries three ports before giving up on this round of this seeder.
start_seeder() {
  for _ in 1 2 3; do
    start_seeder_once "$1" && return 0
    echo "$1 did not come up (see $DIR/$1.log); trying another port" >&2
    stop_seeder
  done
  return 1
}

start_seeder_once() {
  local port log="$DIR/$1.log" rc4=0
  [[ $1 == *+rc4 ]] && rc4=1
  port=$(free_port)
  TARGET="127.0.0.1:$port"
  # VETH=1: the seeder listens inside the namespace; `in_ns` runs a command there.
  local in_ns=()
  if [ "$VETH" = 1 ]; then
    in_ns=(ip netns exec "$NS")
    TARGET="$NS_PEER:$port"
  fi
  case ${1%+rc4} in
  ringseed+copy | ringseed+mmap)
    taskset -c "$SEED_CPU" "${in_ns[@]}" "$RS" seed "$TORRENT" --data "$DIR/data" --skip-check --config "$DIR/ringseed-${1#ringseed+}.toml" \
      --metrics "" --no-trackers --listen "$TARGET" --stats-every 0 >"$log" 2>&1 &
    ;;
  ringseed-old)
    taskset -c "$SEED_CPU" "${in_ns[@]}" "${RINGSEED_OLD:?RINGSEED_OLD names the old binary}" seed "$TORRENT" --data "$DIR/data" \
      --skip-check --config "$DIR/ringseed-old.toml" --metrics "" --no-trackers --listen "$TARGET" --stats-every 0 >"$log" 2>&1 &
    ;;
  ringseed)
    local cfg="$DIR/ringseed.toml"
    [ "$rc4" = 1 ] && cfg="$DIR/ringseed-rc4.toml"
    taskset -c "$SEED_CPU" "${in_ns[@]}" "$RS" seed "$TORRENT" --data "$DIR/data" --skip-check --config "$cfg" \
      --metrics "" --no-trackers --listen "$TARGET" --stats-every 0 >"$log" 2>&1 &
    ;;
  libtorrent)
    local enc=""
    [ "$rc4" = 1 ] && enc=forced-rc4
    LT_ENC=$enc taskset -c "$SEED_CPU" $PY "$LT" seed "$TORRENT" "$DIR/data" "$port" >"$log" 2>&1 &
    ;;
  aria2)
    taskset -c "$SEED_CPU" aria2c --enable-dht=false --enable-dht6=false --bt-enable-lpd=false \
      --enable-peer-exchange=false --bt-seed-unverified=true --check-integrity=false --seed-ratio=0.0 \
      --bt-max-peers=0 --listen-port="$port" --dir="$DIR/data" --file-allocation=none \
      --summary-interval=0 --console-log-level=warn --auto-save-interval=0 \
      --bt-require-crypto=$([ "$rc4" = 1 ] && echo true || echo false) \
      --bt-min-crypto-level=$([ "$rc4" = 1 ] && echo arc4 || echo plain) "$TORRENT" >"$log" 2>&1 &
    ;;
  transmission)
    local home="$DIR/transmission-home"
    # No resume state: a resume file saved mid-verification makes the next start leech at 0 %.
    rm -rf "$home" && mkdir -p "$home"
    port=51413
    TARGET="$NS_PEER:$port"
    # Every peer unchoked and no peer limits, as the other seeders here; plain TCP only.
    cat >"$home/settings.json" <<EOF
{"utp-enabled": false, "encryption": $((rc4 * 2)), "dht-enabled": false, "lpd-enabled": false,
 "pex-enabled": false, "port-forwarding-enabled": false, "peer-port": $port,
 "peer-limit-global": 5000, "peer-limit-per-torrent": 5000, "upload-slots-per-torrent": 5000,
 "speed-limit-up-enabled": false, "ratio-limit-enabled": false, "cache-size-mb": 64}
EOF
    taskset -c "$SEED_CPU" ip netns exec "$NS" transmission-cli -w "$DIR/data" -g "$home" "$TORRENT" >"$log" 2>&1 &
    ;;
  esac
  SEEDER_PID=$!
  EXTRA=()
  [ "$rc4" = 1 ] && EXTRA=(--encrypt)
  RUN_SECS=$SECS
  if [ "$VETH" = 1 ]; then
    EXTRA+=(--source-base 10.215.0.1)
    wait_listen "$port" "$NS" || return 1
  elif [ "${1%+rc4}" = transmission ]; then
    EXTRA+=(--source-base 10.215.0.1)
    RUN_SECS=$((SECS + 12))
    wait_listen "$port" "$NS" || true
    # It hashes the whole payload before it seeds.
    for _ in $(seq 1500); do grep -q "Seeding" "$log" && break; sleep 0.2; done
  else
    wait_listen "$port" || return 1
  fi
  kill -0 "$SEEDER_PID" 2>/dev/null || return 1
  # libtorrent resets connections that arrive right after it starts seeding.
  if [ "${1%+rc4}" = libtorrent ]; then sleep 2; else sleep 0.5; fi
}

stop_seeder() {
  kill -TERM "$SEEDER_PID" 2>/dev/null || true
  wait "$SEEDER_PID" 2>/dev/null || true
  SEEDER_PID=""
}

RESULTS="$DIR/results.tsv"
: >"$RESULTS"
echo "load before: $(uptime)" >&2
for round in $(seq "$RUNS"); do
  for n in $PEERS; do
    [ "$VETH" = 1 ] && continue
    taskset -c "$SEED_CPU,$BENCH_CPU" "$RS" bench ceiling --conns "$n" --duration "$SECS" \
      --cpus "$SEED_CPU,$BENCH_CPU" --json |
      $PY -c 'import json,sys; r=json.load(sys.stdin)[0]; print("ceiling", r["conns"], sys.argv[1], r["gib_per_s"], r["sender_cpu_seconds_per_gib"], "nan", "nan", 0, 0, sep="\t")' "$round" >>"$RESULTS"
  done
  for s in $SEEDERS; do
    if ! start_seeder "$s"; then
      for n in $PEERS; do printf '%s\t%s\t%s\t0\tnan\tnan\tnan\t0\t1\n' "$s" "$n" "$round" >>"$RESULTS"; done
      continue
    fi
    for n in $PEERS; do
      # --reqq 64 keeps 1024 x 64 x 16 KiB = 1 GiB outstanding at most; --timeout 20 gives slow
      # seeders room before their leechers count as timeouts. A run in which no leecher got
      # through the handshake is tried again (twice at most), as a flaky start.
      for attempt in 1 2 3; do
        out=$(taskset -c "$BENCH_CPU" "$RS" bench "$TORRENT" --peer "$TARGET" --seeder-pid "$SEEDER_PID" \
          "${EXTRA[@]}" --peers "$n" --reqq 64 --duration "$RUN_SECS" --timeout 20 --json 2>/dev/null) || true
        echo "$out" | grep -q '"connected": 0,' || break
        echo "$s, $n peers, round $round: no leecher connected (attempt $attempt)" >&2
        sleep 1
      done
      echo "$out" | $PY -c '
import json, sys
name, n, rnd = sys.argv[1:4]
try:
    r = json.load(sys.stdin)
except ValueError:
    print(name, n, rnd, 0, "nan", "nan", "nan", 0, 1, sep="\t"); sys.exit()
s = r.get("seeder") or {}
print(name, n, rnd, r["gib_per_s_after_first_block"], s.get("cpu_seconds_per_gib", "nan"), r["latency_us"]["p99"] / 1000,
      s.get("rss_peak_bytes", 0) / 2**20, r["connected"], sum(r["errors"].values()) + (0 if r["passed"] else 1000000), sep="\t")
' "$s" "$n" "$round" >>"$RESULTS"
      sleep 1
    done
    stop_seeder
  done
  echo "round $round done: $(uptime)" >&2
done

# --- the table ------------------------------------------------------------------------------
$PY - "$RESULTS" "$SIZE_MIB" "$RUNS" "$SECS" "$SEED_CPU" "$BENCH_CPU" <<'EOF'
import math, statistics, sys
path, size, runs, secs, scpu, bcpu = sys.argv[1:]
rows = [l.rstrip("\n").split("\t") for l in open(path) if l.strip()]
data = {}
for name, n, rnd, gib, cpu, p99, rss, conn, errs in rows:
    d = data.setdefault((name, int(n)), {"gib": [], "cpu": [], "p99": [], "rss": [], "conn": [], "err": []})
    for k, v in (("gib", gib), ("cpu", cpu), ("p99", p99), ("rss", rss), ("conn", conn), ("err", errs)):
        d[k].append(float(v))
def med(xs):
    xs = [x for x in xs if not math.isnan(x)]
    return statistics.median(xs) if xs else float("nan")
def ok_runs(d):
    """The runs in which some leecher connected; the others are counted, not averaged."""
    keep = [i for i, c in enumerate(d["conn"]) if c > 0]
    return {k: [v[i] for i in keep] for k, v in d.items()}, len(d["conn"]) - len(keep)
def ratio(a, b):
    return a / b if b and not math.isnan(a) and not math.isnan(b) else float("nan")
print(f"payload {size} MiB page-cached; seeder on CPU {scpu}, bench on CPU {bcpu}; "
      f"{secs} s per run, reqq 64, 16 KiB blocks; median of {runs} rounds; "
      "GiB/s from the first block to the last")
print("ratios are seeder / ringseed (GiB/s: higher is better; CPU-s/GiB, p99, RSS: lower is better)")
names = []
for (name, _) in data:
    if name not in names:
        names.append(name)
hdr = (f"{'peers':>5} {'seeder':<19} {'GiB/s':>7} {'CPU-s/GiB':>9} {'p99 ms':>9} {'RSS MiB':>8} {'conn':>5} {'errors':>6} {'failed':>6}"
       f"   {'x GiB/s':>7} {'x CPU':>6} {'x p99':>6} {'x RSS':>6}")
for n in sorted({n for (_, n) in data}):
    print()
    print(hdr)
    base = data.get(("ringseed", n)) or data.get(("ringseed+copy", n))
    b = {k: med(v) for k, v in ok_runs(base)[0].items()} if base else None
    for name in names:
        d = data.get((name, n))
        if not d:
            continue
        good, failed = ok_runs(d) if name != "ceiling" else (d, 0)
        m = {k: med(v) for k, v in good.items()}
        label = name + (" (veth)" if name.startswith("transmission") else "")
        r = lambda k: ratio(m[k], b[k]) if b else float("nan")
        if name == "ceiling":
            print(f"{n:>5} {'loopback ceiling':<19} {m['gib']:>7.3f} {m['cpu']:>9.3f} {'':>9} {'':>8} {n:>5} {'':>6} {'':>6}   {r('gib'):>7.2f}")
        else:
            print(f"{n:>5} {label:<19} {m['gib']:>7.3f} {m['cpu']:>9.3f} {m['p99']:>9.2f} {m['rss']:>8.1f} {m['conn']:>5.0f} {m['err']:>6.0f} {failed:>6}   "
                  f"{r('gib'):>7.2f} {r('cpu'):>6.2f} {r('p99'):>6.2f} {r('rss'):>6.2f}")
    if b and ("ceiling", n) in data:
        c = med(data[("ceiling", n)]["gib"])
        print(f"      ringseed is {100 * b['gib'] / c:.0f} % of the loopback ceiling")
    lt = data.get(("libtorrent", n))
    if b and lt:
        l = {k: med(v) for k, v in ok_runs(lt)[0].items()}
        print(f"      targets: ringseed/libtorrent GiB/s {ratio(b['gib'], l['gib']):.2f}x (>= 1.5), "
              f"p99 {ratio(b['p99'], l['p99']):.2f}x (<= 0.5)")
    if b:
        for path in ("mmap",):
            d = data.get((f"ringseed+{path}", n))
            if not d:
                continue
            a = {k: med(v) for k, v in ok_runs(d)[0].items()}
            line = (f"      {path} / copy: GiB/s {ratio(a['gib'], b['gib']):.2f}x (>= 1), "
                    f"CPU-s/GiB {ratio(a['cpu'], b['cpu']):.2f}x (<= 0.6), p99 {ratio(a['p99'], b['p99']):.2f}x")
            if ("ceiling", n) in data:
                line += f"; {100 * a['gib'] / med(data[('ceiling', n)]['gib']):.0f} % of the loopback ceiling"
            print(line)
    rs_rc4, lt_rc4 = data.get(("ringseed+rc4", n)), data.get(("libtorrent+rc4", n))
    if rs_rc4 and lt_rc4:
        a = {k: med(v) for k, v in ok_runs(rs_rc4)[0].items()}
        l = {k: med(v) for k, v in ok_runs(lt_rc4)[0].items()}
        print(f"      encrypted (RC4): ringseed/libtorrent GiB/s {ratio(a['gib'], l['gib']):.2f}x, "
              f"CPU-s/GiB {ratio(a['cpu'], l['cpu']):.2f}x (< 1: ringseed's RC4 costs less)")
print()
print("the loopback row's CPU-s/GiB is the sender's; 'conn' is leechers whose handshake completed;"
      " 'errors' counts leechers that ended early (by kind in each run's --json); 'failed' counts"
      " rounds in which no leecher connected even after retries, left out of the medians")
EOF
echo "load after: $(uptime)" >&2
echo "raw results: $RESULTS" >&2

# Shared by the perf scripts: `. "$ROOT/perf/lib.sh"` after setting RS (the ringseed binary).

# random_bytes N: N pseudo-random bytes on stdout (AES-CTR of zeros: fast, incompressible, the
# same every run).
random_bytes() {
  (openssl enc -aes-128-ctr -pass pass:ringseed -nosalt -pbkdf2 </dev/zero 2>/dev/null || true) | head -c "$1"
}

# seed_payload DIR BYTES: DIR/data/payload.bin of BYTES pseudo-random bytes (kept when it already
# has that size), its torrent DIR/payload.torrent with 1 MiB pieces, and the payload read once to
# warm the page cache. Sets PAYLOAD and TORRENT.
seed_payload() {
  mkdir -p "$1/data"
  PAYLOAD="$1/data/payload.bin"
  TORRENT="$1/payload.torrent"
  if [ "$(stat -c %s "$PAYLOAD" 2>/dev/null || echo 0)" != "$2" ]; then
    echo "generating a $(($2 >> 20)) MiB payload" >&2
    random_bytes "$2" >"$PAYLOAD"
  fi
  "$RS" create "$PAYLOAD" -o "$TORRENT" --no-date --piece-kib 1024 >/dev/null
  cat "$PAYLOAD" >/dev/null
}

# enable_speed SRC DEST: DEST is config SRC with [speed] enabled (checked), naming a contract
# address nothing is deployed at (the perf runs measure the wire, nothing is claimed).
enable_speed() {
  sed -e '/^\[speed\]/,/^\[/ s/^enabled = false/enabled = true/' \
    -e '/^\[speed\]/,/^\[/ s/^contract = ""/contract = "0xbebebebebebebebebebebebebebebebebebebebe"/' "$1" >"$2"
  sed -n '/^\[speed\]/,/^\[/p' "$2" | grep -q '^enabled = true' ||
    { echo "could not enable [speed] in $2" >&2; exit 1; }
}

# free_port: a TCP port on 127.0.0.1 that nothing listens on now.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_dl_seeder: for the download benchmarks (RS, TORRENT, DIR, SEED_CPU set): `ringseed seed
# --workers 1` of $DIR/seed/data on a free loopback port, pinned to SEED_CPU; sets PORT and
# SEEDER_PID once it seeds. At exit the seeder stops, $DIR/dl goes, and $DIR/seed too unless
# KEEP_PAYLOAD=1.
start_dl_seeder() {
  SEEDER_PID=""
  trap dl_cleanup EXIT
  PORT=$(free_port)
  taskset -c "$SEED_CPU" "$RS" seed "$TORRENT" --data "$DIR/seed/data" --skip-check --metrics "" \
    --listen "127.0.0.1:$PORT" --no-trackers --workers 1 --stats-every 0 >"$DIR/seeder.log" 2>&1 &
  SEEDER_PID=$!
  for _ in $(seq 100); do grep -q '^seeding ' "$DIR/seeder.log" && break; sleep 0.1; done
  grep -q '^seeding ' "$DIR/seeder.log" || { cat "$DIR/seeder.log" >&2; exit 1; }
}

dl_cleanup() {
  [ -n "$SEEDER_PID" ] && kill -TERM "$SEEDER_PID" 2>/dev/null && wait "$SEEDER_PID" 2>/dev/null
  rm -rf "$DIR/dl"
  [ "${KEEP_PAYLOAD:-0}" = 1 ] || rm -rf "$DIR/seed"
  return 0
}

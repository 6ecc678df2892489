#!/usr/bin/python3
"""Measuring one download, for perf/download_vs_libtorrent.sh.

  dl_measure.py run --cpu N --file PATH --size BYTES [--first-byte] [--timeout S] -- CMD...
      Starts CMD pinned to CPU N (taskset) and prints one JSON line when it has exited:
        wall_s          process start (just before the fork) to exit (wait4)
        cpu_s           the process's user + system seconds (rusage of all its threads)
        maxrss_kib      peak resident set (ru_maxrss: anonymous and file pages)
        anon_peak_kib   peak RssAnon, sampled every 50 ms from /proc/PID/status (without the
                        file pages a client that mmaps its files counts in its RSS)
        first_byte_s    first time PATH had a block (st_blocks > 0: on ext4 delayed-allocation
                        blocks count as soon as a page is dirtied), polled every 2 ms
        full_s          first time PATH had st_blocks * 512 >= BYTES (every byte written to the
                        page cache), polled every 10 ms (2 ms with --first-byte)
        added_s         when the libtorrent leecher below said it added the torrent, if it did
        metadata_s      when the libtorrent leecher got the metadata of a magnet, if it did
        rc, result      CMD's exit status and its last stdout line that parses as JSON
      With --first-byte, CMD gets SIGTERM once PATH has its first block.

  dl_measure.py lt-leech SOURCE SAVE_PATH HOST:PORT [TIMEOUT_S]
      A libtorrent leecher: adds SOURCE (.torrent or magnet), connects to HOST:PORT, prints
      "added T" (CLOCK_MONOTONIC) as soon as the torrent is added, "metadata T" when a magnet's
      metadata arrives, and {"done": ..} once finished and flushed. Settings: libtorrent's
      defaults (no rate limits, 200 connections, 10 disk threads, its 2.0 disk I/O and
      max_queued_disk_bytes) except that DHT/LSD/UPnP/NAT-PMP and uTP are off and outgoing
      connections are plain TCP (ringseed's seeder speaks plain TCP; libtorrent would try MSE
      first); LT_SETTINGS (a JSON object) overrides any of them, LT_PRESET=high_performance_seed
      starts from that preset instead of the defaults.
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time


def run(argv):
    cpu, path, size, first_only, timeout = None, None, 0, False, 600.0
    i = 0
    while argv[i] != "--":
        a = argv[i]
        if a == "--cpu":
            cpu, i = argv[i + 1], i + 2
        elif a == "--file":
            path, i = argv[i + 1], i + 2
        elif a == "--size":
            size, i = int(argv[i + 1]), i + 2
        elif a == "--timeout":
            timeout, i = float(argv[i + 1]), i + 2
        elif a == "--first-byte":
            first_only, i = True, i + 1
        else:
            sys.exit("dl_measure run: unknown option %s" % a)
    cmd = argv[i + 1:]
    if cpu is not None:
        cmd = ["taskset", "-c", cpu] + cmd
    lines = []  # (monotonic, line)

    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=sys.stderr, text=True)
    exited = {}

    def reap():
        _, status, ru = os.wait4(p.pid, 0)
        exited["t"] = time.monotonic()
        exited["status"] = status
        exited["ru"] = ru

    def read_out():
        for line in p.stdout:
            lines.append((time.monotonic(), line.rstrip("\n")))

    reaper = threading.Thread(target=reap, daemon=True)
    reader = threading.Thread(target=read_out, daemon=True)
    reaper.start()
    reader.start()
    first = full = None
    anon_peak = 0
    next_rss = 0.0
    step = 0.002 if first_only else 0.01
    deadline = t0 + timeout
    killed = False
    while "t" not in exited:
        now = time.monotonic()
        if first is None or full is None:
            try:
                blocks = os.stat(path).st_blocks * 512
            except FileNotFoundError:
                blocks = 0
            if first is None and blocks > 0:
                first = now - t0
            if full is None and size and blocks >= size:
                full = now - t0
        if now >= next_rss:
            next_rss = now + 0.05
            try:
                with open("/proc/%d/status" % p.pid) as f:
                    for l in f:
                        if l.startswith("RssAnon:"):
                            anon_peak = max(anon_peak, int(l.split()[1]))
                            break
            except (FileNotFoundError, ProcessLookupError, ValueError):
                pass
        if not killed and ((first_only and first is not None) or now > deadline):
            killed = True
            try:
                os.kill(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        # Waiting on the reaper wakes this loop the moment the process exits.
        reaper.join(step if first is None or full is None else 0.05)
    reader.join(5)
    ru = exited["ru"]
    status = exited["status"]
    rc = os.waitstatus_to_exitcode(status)
    result, added, metadata = None, None, None
    for t, line in lines:
        if line.startswith("added "):
            added = float(line.split()[1]) - t0
        elif line.startswith("metadata "):
            metadata = float(line.split()[1]) - t0
        elif line.startswith("{"):
            try:
                result = json.loads(line)
            except ValueError:
                pass
    print(json.dumps({
        "wall_s": exited["t"] - t0,
        "cpu_s": ru.ru_utime + ru.ru_stime,
        "user_s": ru.ru_utime,
        "sys_s": ru.ru_stime,
        "maxrss_kib": ru.ru_maxrss,
        "anon_peak_kib": anon_peak,
        "first_byte_s": first,
        "full_s": full,
        "added_s": added,
        "metadata_s": metadata,
        "timed_out": killed and not first_only,
        "rc": rc,
        "result": result,
    }), flush=True)


def lt_leech(source, save_path, peer, timeout="600"):
    import libtorrent as lt

    host, port = peer.rsplit(":", 1)
    base = lt.high_performance_seed() if os.environ.get("LT_PRESET") == "high_performance_seed" \
        else lt.default_settings()
    base.update({
        "enable_dht": False, "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
        "listen_interfaces": "127.0.0.1:0",
        "alert_mask": lt.alert.category_t.status_notification | lt.alert.category_t.error_notification,
        "allow_multiple_connections_per_ip": True,
        "enable_outgoing_utp": False, "enable_incoming_utp": False,
        "out_enc_policy": 2, "in_enc_policy": 1,
        "download_rate_limit": 0, "upload_rate_limit": 0,
    })
    base.update(json.loads(os.environ.get("LT_SETTINGS", "{}")))
    ses = lt.session(base)
    if source.startswith("magnet:"):
        params = lt.parse_magnet_uri(source)
    else:
        params = lt.add_torrent_params()
        params.ti = lt.torrent_info(source)
    params.save_path = save_path
    h = ses.add_torrent(params)
    print("added %.6f" % time.monotonic(), flush=True)
    h.connect_peer((host, int(port)))
    connected = time.monotonic()
    deadline = connected + float(timeout)
    finished = h.status().is_seeding
    while not finished and time.monotonic() < deadline:
        ses.wait_for_alert(500)
        for a in ses.pop_alerts():
            if isinstance(a, lt.torrent_finished_alert):
                finished = True
            elif isinstance(a, lt.metadata_received_alert):
                print("metadata %.6f" % time.monotonic(), flush=True)
        if not finished and time.monotonic() - connected > 2 and h.status().num_peers == 0:
            h.connect_peer((host, int(port)))
            connected = time.monotonic()
    s = h.status()
    done = bool(s.is_seeding or finished)
    if done:
        # As lt_tool.py: wait until this torrent's writes have reached the file before leaving.
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "helpers"))
        from lt_flush import wait_flushed
        wait_flushed(ses, h)
    print(json.dumps({"done": done, "bytes": s.total_wanted_done, "state": str(s.state)}), flush=True)
    os._exit(0)  # python3-libtorrent 2.0.8 has crashed in the session's teardown


if __name__ == "__main__":
    if sys.argv[1] == "run":
        run(sys.argv[2:])
    elif sys.argv[1] == "lt-leech":
        lt_leech(*sys.argv[2:])
    else:
        sys.exit(__doc__)

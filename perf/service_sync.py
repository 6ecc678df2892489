#!/usr/bin/python3
"""The cost of syncing a service download's data before each resume save.

  SIZE_MIB=2048 RUNS=3 OLD=/path/to/baseline/ringseed perf/service_sync.py

`ringseed run` (the service, one worker) downloads one payload, added as a magnet link whose
`x.pe` is a `ringseed seed --workers 1` seeder of the page-cached payload. Since issue 12's
leftovers the service `fdatasync`s the files written since its last save before it saves a
download's verified bitfield (once a second); OLD, when given, is a binary without that (a build
of an earlier commit), run interleaved with this tree's binary in the same conditions. The
seeder runs on CPU 0, the node on CPU 1 (taskset), each run into fresh state and data
directories after a `sync`.

Per run, one JSON line: `data_s` (magnet added to every piece verified and written, polled from
the API every 20 ms), `seeding_s` (to state `seeding`: the completion, after its last sync, at
the next once-a-second tick), the node's CPU seconds to `data_s` (user + system, all threads),
GiB/s over `data_s`, whether the file is byte-identical, and for the new binary the syncs from
its debug log (count, median, p90, max and total milliseconds) and /metrics
(`ringseed_resume_syncs`, `ringseed_resume_sync_microseconds`). Then the medians per binary.

Environment: SIZE_MIB (2048), RUNS (3), OLD (none), SYNCPERF_DIR (/tmp/ringseed-syncperf; the
payload and the downloads, on the same filesystem), KEEP_PAYLOAD=1 keeps the payload.
"""
import json
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def http(method, url, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read().decode()


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def payload(base, size):
    """base/seed/data/payload.bin of `size` pseudo-random bytes and its torrent (1 MiB pieces)."""
    data = os.path.join(base, "seed", "data")
    os.makedirs(data, exist_ok=True)
    path = os.path.join(data, "payload.bin")
    if not os.path.exists(path) or os.path.getsize(path) != size:
        print("generating a %d MiB payload" % (size >> 20), file=sys.stderr)
        # AES-CTR of zeros, as perf/lib.sh's random_bytes: fast, incompressible, the same
        # every run.
        subprocess.run("openssl enc -aes-128-ctr -pass pass:ringseed -nosalt -pbkdf2 "
                       "</dev/zero 2>/dev/null | head -c %d >'%s'" % (size, path), shell=True)
    torrent = os.path.join(base, "seed", "payload.torrent")
    rs = os.path.join(ROOT, "target", "release", "ringseed")
    subprocess.run([rs, "create", path, "-o", torrent, "--no-date", "--piece-kib", "1024"],
                   check=True, stdout=subprocess.DEVNULL)
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass
    return path, torrent


def one(binary, base, magnet, info_hash, src):
    node = os.path.join(base, "node")
    shutil.rmtree(node, ignore_errors=True)
    os.makedirs(os.path.join(node, "data"))
    api_port, metrics_port = free_port(), free_port()
    cfg = os.path.join(node, "node.toml")
    with open(cfg, "w") as f:
        f.write('[engine]\nlisten = "127.0.0.1:0"\nworkers = 1\n'
                "[trackers]\nenabled = false\n"
                '[metrics]\nlisten = "127.0.0.1:%d"\n'
                '[control]\nlisten = "127.0.0.1:%d"\nno_token_from = ["127.0.0.1/32"]\n'
                '[state]\ndir = "%s/state"\n'
                '[torrents]\ndata_dir = "%s/data"\nwatch_interval_s = 0\n'
                % (metrics_port, api_port, node, node))
    subprocess.run(["sync"], check=True)
    log_path = os.path.join(node, "node.log")
    log = open(log_path, "w")
    env = dict(os.environ, RINGSEED_LOG="debug")
    proc = subprocess.Popen(["taskset", "-c", "1", binary, "--config", cfg, "run",
                             "--stats-every", "0"], stdout=subprocess.DEVNULL, stderr=log,
                            env=env)
    api = "http://127.0.0.1:%d/api/v1" % api_port
    try:
        for _ in range(200):
            try:
                http("GET", api + "/stats")
                break
            except OSError:
                time.sleep(0.05)
        c0 = cpu_s(proc.pid)
        t0 = time.monotonic()
        http("POST", api + "/torrents", {"magnet": magnet})
        data_s = cpu = None
        while True:
            t = json.loads(http("GET", api + "/torrents/" + info_hash))
            now = time.monotonic() - t0
            if data_s is None and t["pieces"] > 0 and t["verified_pieces"] == t["pieces"]:
                data_s, cpu = now, cpu_s(proc.pid) - c0
            if t["state"] == "seeding":
                seeding_s = now
                break
            if t["state"] == "error" or now > 900:
                raise RuntimeError("download failed: %s" % t)
            time.sleep(0.02)
        metrics = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % metrics_port,
                                         timeout=10).read().decode()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait()
        log.close()
    series = {}
    for line in metrics.splitlines():
        m = re.match(r"^(ringseed_resume_sync\w*?)(?:_total)? (\S+)$", line)
        if m:
            series[m.group(1)] = float(m.group(2))
    ms = [float(m.group(1)) for m in
          re.finditer(r"data synced before saving the resume bitfield.*?ms=([\d.]+)",
                      re.sub(r"\x1b\[[0-9;]*m", "", open(log_path).read()))]
    same = subprocess.run(["cmp", "-s", src, os.path.join(node, "data", "payload.bin")]).returncode == 0
    size = os.path.getsize(src)
    out = {
        "data_s": round(data_s, 3),
        "seeding_s": round(seeding_s, 3),
        "cpu_s": round(cpu, 3),
        "gib_s": round(size / data_s / (1 << 30), 3),
        "same": same,
    }
    if ms:
        ms.sort()
        out["syncs"] = {
            "count": len(ms),
            "median_ms": round(statistics.median(ms), 1),
            "p90_ms": round(ms[math.ceil(0.9 * len(ms)) - 1], 1),
            "max_ms": round(ms[-1], 1),
            "total_ms": round(sum(ms), 1),
            "metrics_syncs": series.get("ringseed_resume_syncs"),
            "metrics_ms": (series["ringseed_resume_sync_microseconds"] / 1000
                           if "ringseed_resume_sync_microseconds" in series else None),
        }
    if os.environ.get("KEEP_NODE") != "1":
        shutil.rmtree(node, ignore_errors=True)
    return out


def main():
    size = int(os.environ.get("SIZE_MIB", "2048")) << 20
    runs = int(os.environ.get("RUNS", "3"))
    base = os.environ.get("SYNCPERF_DIR", "/tmp/ringseed-syncperf")
    new = os.path.join(ROOT, "target", "release", "ringseed")
    binaries = [("new", new)]
    if os.environ.get("OLD"):
        binaries.append(("old", os.environ["OLD"]))
    src, torrent = payload(base, size)
    info = subprocess.run([new, "info", torrent], capture_output=True, text=True).stdout
    info_hash = re.search(r"^info-hash:\s+(\w+)", info, re.M).group(1)
    port = free_port()
    seeder_log = open(os.path.join(base, "seeder.log"), "w")
    seeder = subprocess.Popen(["taskset", "-c", "0", new, "seed", torrent, "--data",
                               os.path.dirname(src), "--skip-check", "--metrics", "",
                               "--listen", "127.0.0.1:%d" % port, "--no-trackers",
                               "--workers", "1", "--stats-every", "0"],
                              stdout=seeder_log, stderr=seeder_log)
    magnet = "magnet:?xt=urn:btih:%s&x.pe=127.0.0.1:%d" % (info_hash, port)
    results = {label: [] for label, _ in binaries}
    try:
        time.sleep(1)
        print("load before: %s" % open("/proc/loadavg").read().strip(), file=sys.stderr)
        for run in range(runs):
            for label, binary in binaries:
                r = one(binary, base, magnet, info_hash, src)
                r.update(binary=label, run=run + 1)
                print(json.dumps(r), flush=True)
                results[label].append(r)
        print("load after: %s" % open("/proc/loadavg").read().strip(), file=sys.stderr)
    finally:
        seeder.send_signal(signal.SIGTERM)
        seeder.wait()
        if os.environ.get("KEEP_PAYLOAD") != "1":
            shutil.rmtree(os.path.join(base, "seed"), ignore_errors=True)
    med = {}
    for label, rs in results.items():
        med[label] = {k: statistics.median(r[k] for r in rs)
                      for k in ("data_s", "seeding_s", "cpu_s", "gib_s")}
        print("%s: median GiB/s %.3f, to data %.2f s, to seeding %.2f s, CPU %.2f s, all same: %s"
              % (label, med[label]["gib_s"], med[label]["data_s"], med[label]["seeding_s"],
                 med[label]["cpu_s"], all(r["same"] for r in rs)))
    if "old" in med:
        print("new/old: GiB/s %.2f, CPU %.2f, to seeding %.2f"
              % (med["new"]["gib_s"] / med["old"]["gib_s"], med["new"]["cpu_s"] / med["old"]["cpu_s"],
                 med["new"]["seeding_s"] / med["old"]["seeding_s"]))


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""One box, many torrents: `ringseed run` with N small torrents (default 10 000).

  perf/scale.py [N=10000] [IDLE_PEERS=2000] [DIR=/tmp/ringseed-scale] [--binary PATH]

Prints, from one run each (the box is shared: repeat it for a range):
  - RSS of an empty node, of the node with N torrents, and the difference per torrent;
  - start-up time without resume data (every torrent hashed) and with it (none hashed), from
    process start until /metrics shows all N seeding, and the checks/resumes that proves which;
  - RSS per idle peer: IDLE_PEERS connections that complete the BitTorrent handshake and then
    send nothing, spread over the torrents.
Each torrent is one 64 KiB file in 16 KiB pieces, generated here (bencode written by hand).
"""
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bencode(v):
    if isinstance(v, int):
        return b"i%de" % v
    if isinstance(v, bytes):
        return b"%d:%s" % (len(v), v)
    if isinstance(v, str):
        return bencode(v.encode())
    if isinstance(v, dict):
        out = b"d"
        for k in sorted(v, key=lambda k: k.encode() if isinstance(k, str) else k):
            out += bencode(k) + bencode(v[k])
        return out + b"e"
    raise TypeError(v)


def make(n, d):
    data, tdir = os.path.join(d, "data"), os.path.join(d, "torrents")
    if os.path.isdir(tdir) and len(os.listdir(tdir)) == n:
        return data, tdir, [l.strip() for l in open(os.path.join(d, "hashes"))]
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(data)
    os.makedirs(tdir)
    hashes = []
    for i in range(n):
        payload = hashlib.sha256(b"%d" % i).digest() * 2048  # 64 KiB
        name = "f%06d.bin" % i
        with open(os.path.join(data, name), "wb") as f:
            f.write(payload)
        pieces = b"".join(hashlib.sha1(payload[o:o + 16384]).digest() for o in range(0, len(payload), 16384))
        info = {"length": len(payload), "name": name, "piece length": 16384, "pieces": pieces}
        hashes.append(hashlib.sha1(bencode(info)).hexdigest())
        with open(os.path.join(tdir, "t%06d.torrent" % i), "wb") as f:
            f.write(bencode({"info": info}))
    with open(os.path.join(d, "hashes"), "w") as f:
        f.write("\n".join(hashes) + "\n")
    return data, tdir, hashes


def rss_kib(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def settled_rss(pid, quiet=0.5, limit=20):
    """RSS once it has stayed within 1 % for `quiet` seconds (or after `limit` seconds)."""
    start, last, since = time.monotonic(), rss_kib(pid), time.monotonic()
    while time.monotonic() - start < limit:
        time.sleep(0.1)
        now = rss_kib(pid)
        if abs(now - last) > last / 100:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return rss_kib(pid)


def series(text, name):
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


class Node:
    def __init__(self, binary, d, tdir, data):
        state = os.path.join(d, "state")
        os.makedirs(state, exist_ok=True)
        cfg = os.path.join(d, "ringseed.toml")
        with open(cfg, "w") as f:
            f.write('[engine]\nlisten = "127.0.0.1:0"\nworkers = 2\n[trackers]\nenabled = false\n'
                    '[metrics]\nlisten = "127.0.0.1:0"\n[control]\nlisten = "127.0.0.1:0"\n'
                    '[state]\ndir = "%s"\n[torrents]\ndata_dir = "%s"\nwatch_interval_s = 0\n%s'
                    % (state, data, 'dir = "%s"\n' % tdir if tdir else ""))
        self.started = time.monotonic()
        self.p = subprocess.Popen([binary, "--config", cfg, "run", "--stats-every", "0"],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        lines = [self.p.stdout.readline() for _ in range(3)]
        self.peer = lines[0].split(" on ")[1].split()[0]
        self.metrics = lines[1].split(" on ")[1].strip()

    def scrape(self):
        return urllib.request.urlopen(self.metrics, timeout=30).read().decode()

    def wait_seeding(self, n):
        while True:
            text = self.scrape()
            if series(text, 'ringseed_torrents_by_state{state="seeding"}') == n:
                return time.monotonic() - self.started, text
            time.sleep(0.05)

    def stop(self):
        self.p.terminate()
        self.p.communicate(timeout=120)


def idle_peers(addr, hashes, count):
    host, port = addr.rsplit(":", 1)
    socks = []
    for i in range(count):
        s = socket.create_connection((host, int(port)))
        ih = bytes.fromhex(hashes[i % len(hashes)])
        s.sendall(b"\x13BitTorrent protocol" + bytes(8) + ih + b"-PY0001-%012d" % i)
        got = b""
        while len(got) < 68:
            chunk = s.recv(68 - len(got))
            if not chunk:
                raise RuntimeError("peer %d closed during the handshake" % i)
            got += chunk
        socks.append(s)
    return socks


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--binary")]
    binary = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--binary=")), None)
    n = int(args[0]) if len(args) > 0 else 10000
    peers = int(args[1]) if len(args) > 1 else 2000
    d = args[2] if len(args) > 2 else "/tmp/ringseed-scale"
    if binary is None:
        subprocess.run(["cargo", "build", "--release", "--quiet", "--manifest-path",
                        os.path.join(ROOT, "Cargo.toml")], check=True)
        binary = os.path.join(ROOT, "target/release/ringseed")
    t0 = time.monotonic()
    data, tdir, hashes = make(n, d)
    print("%d torrents of 64 KiB ready in %.1f s" % (n, time.monotonic() - t0))

    shutil.rmtree(os.path.join(d, "state"), ignore_errors=True)
    empty = Node(binary, d + "-empty", None, data)
    rss_empty = settled_rss(empty.p.pid)
    empty.stop()

    fresh = Node(binary, d, tdir, data)
    t_fresh, text = fresh.wait_seeding(n)
    checks = series(text, 'ringseed_torrent_checks_total{reason="new"}')
    fresh.stop()

    resumed = Node(binary, d, tdir, data)
    t_resume, text = resumed.wait_seeding(n)
    res = series(text, "ringseed_torrents_resumed_total")
    rechecked = sum(series(text, 'ringseed_torrent_checks_total{reason="%s"}' % r) or 0
                    for r in ("new", "changed"))
    # The allocator returns start-up garbage to the kernel lazily: let RSS settle first.
    rss_loaded = settled_rss(resumed.p.pid)
    # The first connections also set off the allocator's purge of start-up garbage, which
    # hides their own cost: measure between a quarter and all of the peers instead.
    first = peers // 4
    socks = idle_peers(resumed.peer, hashes, first)
    rss_quarter = settled_rss(resumed.p.pid)
    socks += idle_peers(resumed.peer, hashes[first:] + hashes[:first], peers - first)
    text = resumed.scrape()
    connected = sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines()
                    if l.startswith("ringseed_peers{"))
    rss_peers = settled_rss(resumed.p.pid)
    gone = [l for l in text.splitlines() if l.startswith("ringseed_disconnects_total{")]
    for s in socks:
        s.close()
    resumed.stop()

    print("start-up, no resume data:   %6.2f s  (%d torrents hashed)" % (t_fresh, checks or 0))
    print("start-up, with resume data: %6.2f s  (%d resumed, %d hashed)" % (t_resume, res or 0, rechecked))
    print("RSS empty node:             %6.1f MiB" % (rss_empty / 1024))
    print("RSS with %d torrents:    %6.1f MiB  -> %.1f KiB per torrent"
          % (n, rss_loaded / 1024, (rss_loaded - rss_empty) / n))
    print("RSS with %d idle peers:   %6.1f MiB  -> %.1f KiB per idle peer (%d connected)"
          % (peers, rss_peers / 1024, (rss_peers - rss_quarter) / (peers - first), int(connected)))
    if gone:
        print("disconnects: " + ", ".join(l.split("{", 1)[1] for l in gone))


if __name__ == "__main__":
    main()

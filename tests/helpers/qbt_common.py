"""Shared parts of the qBittorrent Web API reference scripts (qbt_flow.py, qbt_dump.py,
qbt_reference.py): bencoding, deterministic fixture torrents, a tiny HTTP tracker that answers
either a peer list or an error, and a qbittorrent-nox started on loopback with its own profile.

Pure standard library, so the fixtures can be made under any Python 3.9+; the scripts that talk
to a Web API add the PyPI packages from target/pydeps (see `use_pydeps`).
"""
import base64
import hashlib
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QBT = "/usr/bin/qbittorrent-nox"


def use_pydeps():
    """Puts target/pydeps (where scripts/test.sh installs qbittorrent-api from PyPI) first on
    sys.path, or the directory named by $QBT_PYDEPS."""
    path = os.environ.get("QBT_PYDEPS") or os.path.join(REPO, "target", "pydeps")
    if os.path.isdir(path) and path not in sys.path:
        sys.path.insert(0, path)


# ---------------------------------------------------------------------------------------------
# bencoding


def bencode(value):
    if isinstance(value, bool):
        raise TypeError("bencode has no booleans")
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, (bytes, bytearray)):
        return b"%d:%s" % (len(value), bytes(value))
    if isinstance(value, list):
        return b"l" + b"".join(bencode(v) for v in value) + b"e"
    if isinstance(value, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, v) for k, v in value.items())
        return b"d" + b"".join(bencode(k) + bencode(v) for k, v in items) + b"e"
    raise TypeError(f"cannot bencode {type(value)}")


def bdecode(data, pos=0):
    """Decodes one value at `pos`; returns (value, end). Dictionary keys stay bytes."""
    c = data[pos:pos + 1]
    if c == b"i":
        end = data.index(b"e", pos)
        return int(data[pos + 1:end]), end + 1
    if c == b"l":
        pos += 1
        out = []
        while data[pos:pos + 1] != b"e":
            v, pos = bdecode(data, pos)
            out.append(v)
        return out, pos + 1
    if c == b"d":
        pos += 1
        out = {}
        while data[pos:pos + 1] != b"e":
            k, pos = bdecode(data, pos)
            v, pos = bdecode(data, pos)
            out[k] = v
        return out, pos + 1
    if c.isdigit():
        colon = data.index(b":", pos)
        n = int(data[pos:colon])
        return data[colon + 1:colon + 1 + n], colon + 1 + n
    raise ValueError(f"bad bencoding at {pos}")


def info_span(torrent):
    """The byte range of the info dictionary's value inside a .torrent (for its SHA-1)."""
    if torrent[:1] != b"d":
        raise ValueError("not a dictionary")
    pos = 1
    while torrent[pos:pos + 1] != b"e":
        key, pos = bdecode(torrent, pos)
        start = pos
        _, pos = bdecode(torrent, pos)
        if key == b"info":
            return start, pos
    raise ValueError("no info dictionary")


def infohash_v1(torrent):
    start, end = info_span(torrent)
    return hashlib.sha1(torrent[start:end]).hexdigest()


def torrent_meta(path):
    """Name, v1 info-hash, total size, piece length and file list of a v1 .torrent file."""
    with open(path, "rb") as f:
        data = f.read()
    top, _ = bdecode(data)
    info = top[b"info"]
    if b"files" in info:
        files = [("/".join(p.decode() for p in f[b"path"]), f[b"length"]) for f in info[b"files"]]
    else:
        files = [(info[b"name"].decode(), info[b"length"])]
    return {
        "name": info[b"name"].decode(),
        "hash": infohash_v1(data),
        "size": sum(n for _, n in files),
        "piece_length": info[b"piece length"],
        "files": files,
        "multi": b"files" in info,
    }


# ---------------------------------------------------------------------------------------------
# fixtures


def det_bytes(seed, n):
    """`n` bytes that depend only on `seed`, so fixture info-hashes are the same every run."""
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(b"%s/%d" % (seed.encode(), counter)).digest()
        counter += 1
    return bytes(out[:n])


def make_torrent(data_dir, name, files, piece_length, announce=None, comment=None):
    """Writes the content under `data_dir` and returns the .torrent's bytes (BitTorrent v1).

    `files` is a list of (relative path, length); a single entry whose path equals `name` makes
    a single-file torrent, anything else a directory `name` holding the files."""
    single = len(files) == 1 and files[0][0] == name
    blob = bytearray()
    entries = []
    for rel, length in files:
        content = det_bytes(f"{name}/{rel}", length)
        path = os.path.join(data_dir, rel) if single else os.path.join(data_dir, name, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(content)
        blob += content
        entries.append({"length": length, "path": rel.split("/")})
    pieces = b"".join(
        hashlib.sha1(blob[i:i + piece_length]).digest() for i in range(0, len(blob), piece_length)
    )
    info = {"name": name, "piece length": piece_length, "pieces": pieces}
    if single:
        info["length"] = files[0][1]
    else:
        info["files"] = entries
    top = {"info": info, "creation date": 1700000000, "created by": "ringseed qbt fixtures"}
    if announce:
        top["announce"] = announce
    if comment:
        top["comment"] = comment
    return bencode(top)


def write_torrent(out_dir, data_dir, name, files, piece_length, announce=None, comment=None):
    data = make_torrent(data_dir, name, files, piece_length, announce, comment)
    path = os.path.join(out_dir, name + ".torrent")
    with open(path, "wb") as f:
        f.write(data)
    return path


def magnet(seed, name, trackers=()):
    """A magnet link for a torrent nobody has (its metadata never arrives)."""
    h = hashlib.sha1(b"ringseed magnet " + seed.encode()).hexdigest()
    q = f"magnet:?xt=urn:btih:{h}&dn={urllib.parse.quote(name)}"
    for t in trackers:
        q += "&tr=" + urllib.parse.quote(t, safe="")
    return q, h


# ---------------------------------------------------------------------------------------------
# a tiny HTTP tracker


class Tracker:
    """An HTTP tracker on 127.0.0.1 that answers every announce with no peers (`ok`) or with a
    `failure reason` (`error`). libtorrent's SSRF mitigation only lets a tracker on localhost be
    contacted with the path /announce, hence the fixed path; use two instances for two modes."""

    FAILURE = "ringseed-test: torrent not registered with this tracker"

    def __init__(self, mode, min_interval=60):
        """`min_interval`: the `min interval` answered (libtorrent defers a forced reannounce
        until it has passed)."""
        self.mode = mode
        self.announces = []
        tracker = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                url = urllib.parse.urlsplit(self.path)
                if url.path != "/announce":
                    self.send_error(404)
                    return
                q = urllib.parse.parse_qs(url.query)
                tracker.announces.append({k: v[0] for k, v in q.items() if k != "info_hash"})
                if tracker.mode == "error":
                    body = bencode({"failure reason": Tracker.FAILURE})
                else:
                    body = bencode({"interval": 1800, "min interval": min_interval, "complete": 1,
                                    "incomplete": 0, "peers": b""})
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/announce"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------------------------------------
# qbittorrent-nox


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pbkdf2_secret(password):
    """qBittorrent's WebUI\\Password_PBKDF2 value: base64(salt):base64(PBKDF2-HMAC-SHA512,
    100000 rounds, 64 bytes), as Utils::Password::PBKDF2::generate makes it."""
    salt = os.urandom(16)
    key = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 100000, 64)
    return base64.b64encode(salt).decode() + ":" + base64.b64encode(key).decode()


class Qbt:
    """qbittorrent-nox with its own profile, peers on 127.0.0.1 (interface lo), its Web UI on
    127.0.0.1 with a login required (LocalHostAuth=true) and qBittorrent's default CSRF and
    Host-header checks; no DHT/PeX/LSD/UPnP, so nothing leaves loopback."""

    def __init__(self, profile, username="admin", password="ringseed-ref", extra_prefs=""):
        """`extra_prefs`: more lines for the [Preferences] section (e.g. an alternative Web UI
        folder for tests/helpers/webui_qbt.py)."""
        self.username, self.password = username, password
        self.profile = profile
        config = os.path.join(profile, "qBittorrent", "config")
        os.makedirs(config, exist_ok=True)
        self.web_port, self.peer_port = free_port(), free_port()
        with open(os.path.join(config, "qBittorrent.conf"), "w") as f:
            f.write(
                "[LegalNotice]\nAccepted=true\n\n"
                "[BitTorrent]\n"
                "Session\\Interface=lo\n"
                "Session\\InterfaceName=lo\n"
                "Session\\InterfaceAddress=127.0.0.1\n"
                f"Session\\Port={self.peer_port}\n"
                "Session\\DHTEnabled=false\n"
                "Session\\PeXEnabled=false\n"
                "Session\\LSDEnabled=false\n"
                "\n[Preferences]\n"
                "Connection\\ResolvePeerCountries=false\n"
                "Connection\\UPnP=false\n"
                "General\\UseRandomPort=false\n"
                "WebUI\\Address=127.0.0.1\n"
                f"WebUI\\Port={self.web_port}\n"
                "WebUI\\LocalHostAuth=true\n"
                f"WebUI\\Username={username}\n"
                f"WebUI\\Password_PBKDF2=\"@ByteArray({pbkdf2_secret(password)})\"\n"
                "WebUI\\UseUPnP=false\n"
                + extra_prefs
            )
        self.log_path = os.path.join(profile, "qbittorrent.log")
        self.proc = subprocess.Popen(
            [QBT, f"--profile={profile}"],
            stdin=subprocess.DEVNULL,
            stdout=open(self.log_path, "wb"),
            stderr=subprocess.STDOUT,
        )
        self.url = f"http://127.0.0.1:{self.web_port}"
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"qbittorrent-nox exited: {self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/api/v2/app/version", timeout=2) as r:
                    r.read()
            except urllib.error.HTTPError:
                break  # 403 without a login: it answers
            except OSError:
                if time.monotonic() > deadline:
                    self.close()
                    raise RuntimeError(f"qbittorrent-nox did not answer: {self.log()}")
                time.sleep(0.2)
                continue
            break

    def version(self):
        return subprocess.run([QBT, "--version"], capture_output=True, text=True).stdout.strip()

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_for(what, fn, timeout=20.0, interval=0.25):
    """Polls `fn` until it returns something truthy; raises with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def dump_json(obj):
    return json.dumps(obj, indent=2, sort_keys=True)

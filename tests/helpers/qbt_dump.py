#!/usr/bin/python3
"""Dumps what a qBittorrent Web API v2 server answers for a fixed set of torrents, reduced to
shapes (keys -> JSON types) that two servers' dumps can be compared by, plus the HTTP status
codes it gives for bad inputs. qbittorrent-nox is the reference; ringseed must match its shapes
(issue 14, docs/qbittorrent-api.md).

  qbt_dump.py dump --url http://127.0.0.1:PORT --username U --password P --data-dir DIR
                   --out DUMP.json [--no-flood]
  qbt_dump.py compare REF.json OTHER.json     -> lists shape differences, exits 1 if any

`dump` writes the fixtures' content under DIR (the server must be allowed to save there), runs
two HTTP trackers on 127.0.0.1 (one answers with no peers, one with a failure reason), adds

  rs-single.bin  complete single-file torrent, seeding (category rs-cat-a, tags rs-tag1,rs-tag2,
                 upload limit 1 MiB/s)
  rs-multi       complete multi-file torrent (3 files, one in a subdirectory), seeding, tag
                 rs-tag1, share limits ratio 2.5 / 1440 min
  rs-stopped.bin complete, added stopped (paused)
  rs-magnet      a magnet whose metadata never arrives (no peers): waiting for metadata
  rs-error.bin   complete, its only tracker answers a failure reason
  rs-hybrid.bin  complete hybrid (v1 + v2) torrent, no tracker (made by libtorrent through
                 lt_tool.py; skipped without python3-libtorrent)

waits until each is settled and its tracker answered, then records app/version,
app/webapiVersion, app/buildInfo, app/preferences, torrents/info, torrents/properties,
torrents/files, torrents/trackers, torrents/categories, torrents/tags, transfer/info and
sync/maindata (rid 0, then deltas after a change, after no change and after deletion), then the
bad inputs (wrong login, unknown hashes, malformed multipart, a savepath the server cannot write,
unknown category, no session, unknown endpoint, wrong method) and last the login flood (its IP
ban lasts an hour in qBittorrent: run it last, or pass --no-flood). Everything it added is
deleted with its files before the flood.
"""
import argparse
import fnmatch
import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qbt_common as C  # noqa: E402

C.use_pydeps()
import requests  # noqa: E402

UNKNOWN_HASH = "0123456789abcdef0123456789abcdef01234567"

# Fields that are C++ doubles in qBittorrent and can hold a fraction (webui/api/serialize/
# serialize_torrent.cpp, torrentscontroller.cpp, appcontroller.cpp, synccontroller.cpp). Qt
# writes a whole double without a fraction (`1`, `0`, `-1`), so an integer seen there is still a
# float: `shape` calls these "float" whatever the sample. Every other number must stay an integer
# (a Go client decoding `1.0` into an int64 fails), including the doubles qBittorrent only ever
# fills with whole values (properties' eta, addition_date, creation_date).
DOUBLE_FIELDS = {"progress", "ratio", "ratio_limit", "max_ratio", "availability", "share_ratio",
                 "popularity", "relevance"}

# Objects whose keys are data (hashes, category names, tracker URLs), not field names.
DYNAMIC = {
    "torrents/categories": [()],
    "sync/maindata": [("torrents",), ("categories",), ("trackers",)],
    "sync/maindata delta": [("torrents",), ("categories",), ("trackers",)],
    "sync/maindata delta (no change)": [("torrents",), ("categories",), ("trackers",)],
    "sync/maindata delta (deleted)": [("torrents",), ("categories",), ("trackers",)],
}


# ---------------------------------------------------------------------------------------------
# shapes


def scalar_type(v, key=None):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "float" if key in DOUBLE_FIELDS else "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "string"
    raise TypeError(type(v))


def merge(a, b):
    """Joins two shapes of the same field seen in two samples."""
    if a is None:
        return b
    if b is None:
        return a
    if isinstance(a, dict) and isinstance(b, dict):
        return {k: merge(a.get(k), b.get(k)) for k in sorted(set(a) | set(b))}
    if isinstance(a, list) and isinstance(b, list):
        if not a or not b:
            return a or b
        return [merge(a[0], b[0])]
    if isinstance(a, str) and isinstance(b, str):
        # "float|int" outside DOUBLE_FIELDS would mean a double missing from that list
        return "|".join(sorted(set(a.split("|")) | set(b.split("|"))))
    return "|".join(sorted({json.dumps(a, sort_keys=True), json.dumps(b, sort_keys=True)}))


def shape(value, dynamic=(), path=()):
    """Reduces JSON to its shape: objects map keys to shapes, arrays hold the merged shape of
    their elements ([] if empty), scalars become "string", "bool", "int", "float" or "null"
    (a whole number in one of DOUBLE_FIELDS is "float"). An object at a path listed in
    `dynamic` has data for keys (hashes, names, URLs): its values are merged under the one
    key "*"."""
    if isinstance(value, dict):
        if path in dynamic:
            out = None
            for v in value.values():
                out = merge(out, shape(v, dynamic, path + ("*",)))
            return {"*": out} if out is not None else {}
        return {k: shape(v, dynamic, path + (k,)) for k, v in sorted(value.items())}
    if isinstance(value, list):
        out = None
        for v in value:
            out = merge(out, shape(v, dynamic, path + ("[]",)))
        return [out] if out is not None else []
    key = next((p for p in reversed(path) if p not in ("[]", "*")), None)
    return scalar_type(value, key)


# What a sync/maindata delta carries depends on what changed between two polls, and these
# change with the clock (or the swarm) alone: in a delta, one server may send them and the other
# not. Their types are still compared when both send them.
VOLATILE = {"eta", "seeding_time", "time_active", "last_activity", "dlspeed", "upspeed",
            "num_complete", "num_incomplete", "num_seeds", "num_leechs", "availability",
            "reannounce", "popularity", "server_state", "completion_on", "seen_complete"}


def only_volatile(sh):
    """Whether a delta's shape carries nothing but VOLATILE keys (a torrent whose seeding time
    ticked): sent by one server and not the other depending on the clock alone."""
    if isinstance(sh, dict):
        return all((k in VOLATILE) or (k == "*" and only_volatile(v)) for k, v in sh.items())
    return False


def compare(ref, other, path="", out=None, lenient=False):
    """Differences between two shapes, as readable lines; `ref` is qBittorrent's. With
    `lenient` (deltas), a VOLATILE key present on one side only is not a difference, nor is a
    `torrents` object that carries only VOLATILE keys."""
    out = [] if out is None else out
    if isinstance(ref, dict) and isinstance(other, dict):
        for k in sorted(set(ref) | set(other)):
            p = f"{path}.{k}" if path else k
            if (k not in other or k not in ref) and lenient and k in VOLATILE:
                continue
            one = ref.get(k) if k in ref else other.get(k)
            if (k not in other or k not in ref) and lenient and k == "torrents" \
                    and only_volatile(one):
                continue
            if k not in other:
                out.append(f"{p}: missing (qBittorrent: {json.dumps(ref[k])})")
            elif k not in ref:
                out.append(f"{p}: extra (not in qBittorrent): {json.dumps(other[k])}")
            else:
                compare(ref[k], other[k], p, out, lenient or "delta" in k)
    elif isinstance(ref, list) and isinstance(other, list):
        if ref and other:
            compare(ref[0], other[0], path + "[]", out, lenient)
    elif isinstance(ref, str) and isinstance(other, str):
        if not set(other.split("|")) <= set(ref.split("|")):
            out.append(f"{path}: {other} (qBittorrent: {ref})")
    elif ref != other and ref not in ([], {}) and other not in ([], {}):
        out.append(f"{path}: {json.dumps(other)} (qBittorrent: {json.dumps(ref)})")
    return out


# ---------------------------------------------------------------------------------------------
# the dump


class Dump:
    def __init__(self, args):
        self.args = args
        self.url = args.url.rstrip("/")
        u = urllib.parse.urlsplit(self.url)
        self.host, self.port = u.hostname, u.port or 80
        self.s = requests.Session()
        self.endpoints = {}
        self.bad = []
        self.timeout = args.timeout
        # categories, tags and share limits (a server without them: --no-organisation)
        self.org = not args.no_organisation

    # -- HTTP

    def call(self, method, ep, **kw):
        r = self.s.request(method, f"{self.url}/api/v2/{ep}", timeout=20, **kw)
        return r

    def ok(self, method, ep, **kw):
        r = self.call(method, ep, **kw)
        if r.status_code != 200:
            raise AssertionError(f"{ep}: {r.status_code} {r.text[:300]!r}")
        return r

    def json(self, ep, method="GET", **kw):
        return self.ok(method, ep, **kw).json()

    def record(self, name, r, value=None):
        """Keeps one endpoint's answer: status, content type, and the JSON (or text)."""
        entry = {"status": r.status_code, "content_type": r.headers.get("content-type")}
        if value is None:
            try:
                value = r.json()
            except ValueError:
                value = r.text
        entry["value"] = value
        if name in self.endpoints:
            self.endpoints[name].setdefault("more", []).append(entry)
        else:
            self.endpoints[name] = entry
        return value

    def raw(self, method, ep, headers=None, body=b"", cookie=True):
        """One request with exactly these bytes (requests would fix a malformed body)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=20)
        h = {"Host": f"{self.host}:{self.port}", "Content-Length": str(len(body))}
        if cookie:
            h["Cookie"] = "; ".join(f"{c.name}={c.value}" for c in self.s.cookies)
        h.update(headers or {})
        try:
            conn.putrequest(method, f"/api/v2/{ep}", skip_host=True, skip_accept_encoding=True)
            for k, v in h.items():
                conn.putheader(k, v)
            conn.endheaders(body)
            r = conn.getresponse()
            return r.status, r.read().decode(errors="replace")
        finally:
            conn.close()

    def bad_input(self, case, status, body, effect=None):
        entry = {"case": case, "status": status, "body": body[:300]}
        if effect is not None:
            entry["effect"] = effect
        self.bad.append(entry)
        print(f"bad input: {case}: {status} {body[:80]!r}", file=sys.stderr)

    # -- torrents

    def info(self, **params):
        return self.json("torrents/info", params=params)

    def one(self, h):
        ts = self.info(hashes=h)
        return ts[0] if len(ts) == 1 else None

    def trackers(self, h):
        return self.json("torrents/trackers", params={"hash": h})

    def add(self, torrent=None, urls=None, **fields):
        files = None
        if torrent:
            with open(torrent, "rb") as f:
                files = {"torrents": (os.path.basename(torrent), f.read(),
                                      "application/x-bittorrent")}
        data = {k: v for k, v in fields.items() if v is not None}
        if urls:
            data["urls"] = urls
        r = self.call("POST", "torrents/add", data=data, files=files)
        if r.status_code != 200:
            raise AssertionError(f"torrents/add: {r.status_code} {r.text!r}")
        return r.text

    def run(self):
        a = self.args
        data_dir = os.path.abspath(a.data_dir)
        os.makedirs(data_dir, exist_ok=True)
        tdir = tempfile.mkdtemp(prefix="qbt-dump-torrents-")
        ok_tr, err_tr = C.Tracker("ok"), C.Tracker("error")
        try:
            return self._run(data_dir, tdir, ok_tr, err_tr)
        finally:
            ok_tr.close()
            err_tr.close()
            shutil.rmtree(tdir, ignore_errors=True)

    def _run(self, data_dir, tdir, ok_tr, err_tr):
        # -- log in
        r = self.call("POST", "auth/login", data={"username": self.args.username,
                                                   "password": self.args.password})
        assert r.status_code == 200 and r.text in ("Ok.", ""), f"login: {r.status_code} {r.text!r}"
        login = {"status": r.status_code, "body": r.text,
                 "content_type": r.headers.get("content-type"),
                 "set_cookie": r.headers.get("set-cookie", "")}
        # the session id changes every run
        login["set_cookie"] = re.sub(r"=[^;]*", "=<session id>", login["set_cookie"], count=1)
        self.endpoints["auth/login"] = login
        r = self.call("POST", "auth/login", data={"username": self.args.username,
                                                   "password": self.args.password})
        self.endpoints["auth/login (with a session)"] = {
            "status": r.status_code, "body": r.text, "set_cookie": "set-cookie" in r.headers}

        version = self.record("app/version", self.ok("GET", "app/version"))
        api = self.record("app/webapiVersion", self.ok("GET", "app/webapiVersion"))
        new = tuple(int(x) for x in api.split(".")[:2]) >= (2, 11)
        self.record("app/buildInfo", self.call("GET", "app/buildInfo"))
        prefs = self.record("app/preferences", self.ok("GET", "app/preferences"))
        self.record("app/defaultSavePath", self.call("GET", "app/defaultSavePath"))
        print(f"server {version}, Web API {api}", file=sys.stderr)
        # qBittorrent's default queue (3 uploads, 5 torrents) would queue one of the fixtures;
        # room for all of them while the dump runs, restored at the end
        roomy = {"max_active_downloads": 10, "max_active_uploads": 10, "max_active_torrents": 10}
        self.ok("POST", "app/setPreferences", data={"json": json.dumps(roomy)})
        # (a server without queueing has none of these keys)
        working = {**prefs, **{k: v for k, v in roomy.items() if k in prefs}}

        # -- fixtures
        mk = C.write_torrent
        single = mk(tdir, data_dir, "rs-single.bin", [("rs-single.bin", 1048576 + 12345)], 262144,
                    announce=ok_tr.url)
        multi = mk(tdir, data_dir, "rs-multi", [("a.bin", 300000), ("sub/b.bin", 70000),
                                                ("sub/c.txt", 13)], 65536, announce=ok_tr.url,
                   comment="ringseed multi-file fixture")
        stopped = mk(tdir, data_dir, "rs-stopped.bin", [("rs-stopped.bin", 200000)], 65536,
                     announce=ok_tr.url)
        error = mk(tdir, data_dir, "rs-error.bin", [("rs-error.bin", 100000)], 65536,
                   announce=err_tr.url)
        mag, hmag = C.magnet("dump", "rs-magnet", [ok_tr.url])
        hs = {n: C.torrent_meta(p)["hash"] for n, p in
              (("single", single), ("multi", multi), ("stopped", stopped), ("error", error))}
        hs["magnet"] = hmag
        self.fixtures = {"hashes": hs, "magnet": mag.replace(ok_tr.url.split("/announce")[0],
                                                              "http://127.0.0.1:PORT")}

        org = self.org
        if org:
            for cat, path in (("rs-cat-a", os.path.join(data_dir, "cat-a")), ("rs-cat-b", "")):
                self.ok("POST", "torrents/createCategory", data={"category": cat,
                                                                  "savePath": path})
            self.ok("POST", "torrents/createTags", data={"tags": "rs-tag1,rs-tag2,rs-unused"})
        stop_field = "stopped" if new else "paused"
        self.add(single, savepath=data_dir, category="rs-cat-a" if org else None,
                 tags="rs-tag1,rs-tag2" if org else None,
                 skip_checking="true", upLimit=str(1048576))
        self.add(multi, savepath=data_dir, tags="rs-tag1" if org else None, skip_checking="true",
                 ratioLimit="2.5", seedingTimeLimit="1440")
        self.add(stopped, savepath=data_dir, skip_checking="true", **{stop_field: "true"})
        self.add(error, savepath=data_dir, skip_checking="true")
        self.add(urls=mag, savepath=data_dir)
        self.hybrid(tdir, data_dir, hs)

        def settled():
            ts = {t["hash"]: t for t in self.info()}
            if set(hs.values()) - set(ts):
                return False
            st = {n: ts[h]["state"] for n, h in hs.items()}
            if not (st["single"] == st["multi"] == st["error"] == st.get("hybrid", "stalledUP")
                    == "stalledUP"
                    and st["stopped"] in ("pausedUP", "stoppedUP") and st["magnet"] == "metaDL"):
                return False
            tr = {n: [t for t in self.trackers(h) if not t["url"].startswith("** [")]
                  for n, h in hs.items()}
            # --no-magnet-trackers: the server shows no trackers for a magnet without metadata
            working = ("single", "multi") if self.args.no_magnet_trackers else \
                ("single", "multi", "magnet")
            return (all(t and t[0]["status"] == 2 for n in working for t in [tr[n]])
                    and tr["error"][0]["status"] == 4 and tr["error"][0]["msg"]
                    and tr["stopped"][0]["status"] == 1)
        C.wait_for("the fixtures settled and their trackers answered", settled, self.timeout)

        # -- the reads
        self.record("torrents/info", self.ok("GET", "torrents/info"))
        self.record("torrents/info?filter=seeding&sort=name",
                    self.ok("GET", "torrents/info", params={"filter": "seeding", "sort": "name"}))
        for n, h in hs.items():
            for ep in ("torrents/properties", "torrents/files", "torrents/trackers",
                       "torrents/webseeds", "torrents/pieceStates"):
                v = self.record(ep, self.call("GET", ep, params={"hash": h}))
                self.endpoints[ep].setdefault("torrents", []).append(n)
                del v
        if self.org:
            self.record("torrents/categories", self.ok("GET", "torrents/categories"))
            self.record("torrents/tags", self.ok("GET", "torrents/tags"))
        self.record("transfer/info", self.ok("GET", "transfer/info"))
        full = self.record("sync/maindata", self.ok("GET", "sync/maindata", params={"rid": 0}))

        # -- a change, then the delta since `full`
        if org:
            self.ok("POST", "torrents/setCategory", data={"hashes": hs["multi"],
                                                           "category": "rs-cat-b"})
            self.ok("POST", "torrents/addTags", data={"hashes": hs["single"], "tags": "rs-tag3"})
            self.ok("POST", "torrents/setShareLimits",
                    data={"hashes": hs["single"], "ratioLimit": "1.25", "seedingTimeLimit": "30",
                          "inactiveSeedingTimeLimit": "15"})
        else:
            self.ok("POST", "torrents/setUploadLimit", data={"hashes": hs["single"],
                                                              "limit": "524288"})
        self.ok("POST", "torrents/" + ("stop" if new else "pause"), data={"hashes": hs["error"]})
        if org:
            self.ok("POST", "torrents/createCategory", data={"category": "rs-cat-c",
                                                              "savePath": data_dir})
        C.wait_for("the error torrent stopped",
                   lambda: self.one(hs["error"])["state"] in ("pausedUP", "stoppedUP"),
                   self.timeout)
        delta = self.record("sync/maindata delta",
                            self.ok("GET", "sync/maindata", params={"rid": full["rid"]}))
        time.sleep(1.6)  # past one refresh interval, so the next one is not served from cache
        self.record("sync/maindata delta (no change)",
                    self.ok("GET", "sync/maindata", params={"rid": delta["rid"]}))
        self.record("torrents/info after the change", self.ok("GET", "torrents/info"))

        # -- global share limits and queueing through app/setPreferences, read back, undone
        limits = {"max_ratio_enabled": True, "max_ratio": 1.75, "max_seeding_time_enabled": True,
                  "max_seeding_time": 600, "max_ratio_act": 0, "queueing_enabled": True,
                  "max_active_downloads": 2, "max_active_uploads": 4, "max_active_torrents": 6}
        if new:
            limits.update(max_inactive_seeding_time_enabled=True, max_inactive_seeding_time=300)
        self.ok("POST", "app/setPreferences", data={"json": json.dumps(limits)})
        after = self.json("app/preferences")
        self.endpoints["app/setPreferences (global limits)"] = {
            "sent": limits, "read_back": {k: after.get(k) for k in limits}}
        multi_info = self.one(hs["multi"])
        stopped_info = self.one(hs["stopped"])
        self.endpoints["torrents/info under global limits"] = {
            "per-torrent limits (rs-multi)": {k: multi_info[k] for k in (
                "ratio_limit", "max_ratio", "seeding_time_limit", "max_seeding_time")},
            "global limits (rs-stopped)": {k: stopped_info[k] for k in (
                "ratio_limit", "max_ratio", "seeding_time_limit", "max_seeding_time")}}
        self.ok("POST", "app/setPreferences", data={"json": json.dumps({
            k: working[k] for k in limits if k in working})})
        restored = self.json("app/preferences")
        assert all(restored[k] == working[k] for k in limits if k in working), \
            "preferences not restored"

        # -- bad inputs (each one's effect is checked where it could have one)
        self.bad_inputs(hs, data_dir, single, new)

        # -- delete everything, then the delta that says so
        before = self.json("sync/maindata", params={"rid": 0})["rid"]
        self.ok("POST", "torrents/delete", data={"hashes": "|".join(hs.values()),
                                                  "deleteFiles": "true"})
        C.wait_for("fixtures deleted", lambda: not (set(hs.values()) & {
            t["hash"] for t in self.info()}), self.timeout)
        if self.org:
            self.ok("POST", "torrents/removeCategories",
                    data={"categories": "rs-cat-a\nrs-cat-b\nrs-cat-c\nrs-new-category"})
            self.ok("POST", "torrents/deleteTags",
                    data={"tags": "rs-tag1,rs-tag2,rs-tag3,rs-unused"})
        self.record("sync/maindata delta (deleted)",
                    self.ok("GET", "sync/maindata", params={"rid": before}))
        gone = [p for p in ("rs-single.bin", "rs-multi", "rs-stopped.bin", "rs-error.bin",
                            "rs-hybrid.bin")
                if os.path.exists(os.path.join(data_dir, p))]
        assert not gone, f"deleteFiles left {gone}"

        self.ok("POST", "app/setPreferences", data={"json": json.dumps({
            k: prefs[k] for k in roomy if k in prefs})})
        if not self.args.no_flood:
            self.login_flood()
        self.logout()

        shapes = {}
        for name, e in self.endpoints.items():
            if "value" not in e:
                continue
            dyn = DYNAMIC.get(name, [])
            sh = shape(e["value"], dyn)
            for more in e.get("more", []):
                sh = merge(sh, shape(more["value"], dyn))
            shapes[name] = sh
        return {
            "server": {"version": version, "webapi_version": api},
            "preferences_selected": {k: prefs.get(k) for k in sorted(PREFS_OF_INTEREST)},
            "fixtures": self.fixtures,
            "tracker_failure_reason": C.Tracker.FAILURE,
            "endpoints": self.endpoints,
            "shapes": shapes,
            "bad_inputs": self.bad,
            "announces_seen": {"ok": ok_tr.announces[:3], "error": err_tr.announces[:1]},
        }

    def hybrid(self, tdir, data_dir, hs):
        """A hybrid (v1 + v2) torrent, made by libtorrent (tests/helpers/lt_tool.py create) when
        python3-libtorrent is there: its `hash` shows which info-hash the server uses as the
        torrent's id. Adds hs["hybrid"] = that id."""
        name = "rs-hybrid.bin"
        with open(os.path.join(data_dir, name), "wb") as f:
            f.write(C.det_bytes(name, 150000))
        out = os.path.join(tdir, name + ".torrent")
        lt_tool = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lt_tool.py")
        r = subprocess.run(["/usr/bin/python3", lt_tool, "create", os.path.join(data_dir, name),
                            out, "hybrid", "16384"], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            self.fixtures["hybrid"] = f"skipped (lt_tool.py create: {r.stderr.strip()[-200:]})"
            return
        with open(out, "rb") as f:
            data = f.read()
        start, end = C.info_span(data)
        v1 = hashlib.sha1(data[start:end]).hexdigest()
        v2 = hashlib.sha256(data[start:end]).hexdigest()
        self.add(out, savepath=data_dir, skip_checking="true")
        t = C.wait_for("the hybrid torrent listed",
                       lambda: next((t for t in self.info() if t["infohash_v1"] == v1), None),
                       self.timeout)
        hs["hybrid"] = t["hash"]
        self.fixtures["hybrid"] = {
            "infohash_v1": v1, "infohash_v2": v2, "hash": t["hash"],
            "hash_is": "v1" if t["hash"] == v1 else "v2[:40]" if t["hash"] == v2[:40] else "?"}

    def bad_inputs(self, hs, data_dir, single_torrent, new):
        count = lambda: len(self.info())  # noqa: E731
        n0 = count()
        cats0 = sorted(self.json("torrents/categories")) if self.org else []

        # wrong login, from a client without a session
        r = requests.post(f"{self.url}/api/v2/auth/login",
                          data={"username": self.args.username, "password": "wrong"}, timeout=20)
        self.bad_input("auth/login, wrong password", r.status_code, r.text,
                       {"set_cookie": "set-cookie" in r.headers})
        r = requests.post(f"{self.url}/api/v2/auth/login", data={}, timeout=20)
        self.bad_input("auth/login, no fields", r.status_code, r.text)
        # a good login resets the failed-attempt count, so the flood at the end starts at 0
        requests.post(f"{self.url}/api/v2/auth/login", data={
            "username": self.args.username, "password": self.args.password}, timeout=20)
        r = requests.get(f"{self.url}/api/v2/torrents/info", timeout=20)
        self.bad_input("torrents/info without a session cookie", r.status_code, r.text)
        r = requests.get(f"{self.url}/api/v2/torrents/info", cookies={"SID": "not-a-session"},
                         timeout=20)
        self.bad_input("torrents/info with an unknown SID", r.status_code, r.text)

        # unknown hashes
        for ep in ("torrents/properties", "torrents/files", "torrents/trackers",
                   "torrents/pieceStates"):
            r = self.call("GET", ep, params={"hash": UNKNOWN_HASH})
            self.bad_input(f"{ep}?hash=<unknown>", r.status_code, r.text)
        if isinstance(self.fixtures.get("hybrid"), dict):
            v1 = self.fixtures["hybrid"]["infohash_v1"]
            r = self.call("GET", "torrents/properties", params={"hash": v1})
            self.bad_input("torrents/properties?hash=<a hybrid's v1 hash, not its id>",
                           r.status_code, r.text[:40])
            r = self.call("GET", "torrents/info", params={"hashes": v1})
            self.bad_input("torrents/info?hashes=<a hybrid's v1 hash>", r.status_code,
                           r.text[:40])
        r = self.call("GET", "torrents/properties")
        self.bad_input("torrents/properties without hash", r.status_code, r.text)
        r = self.call("GET", "torrents/properties", params={"hash": "xyz"})
        self.bad_input("torrents/properties?hash=xyz (not hex)", r.status_code, r.text)
        r = self.call("GET", "torrents/info", params={"hashes": UNKNOWN_HASH})
        self.bad_input("torrents/info?hashes=<unknown>", r.status_code, r.text)
        for ep, extra in (("stop" if new else "pause", {}), ("start" if new else "resume", {}),
                          ("recheck", {}), ("reannounce", {}),
                          ("delete", {"deleteFiles": "false"}),
                          ("setShareLimits", {"ratioLimit": "1", "seedingTimeLimit": "1",
                                              "inactiveSeedingTimeLimit": "1"}),
                          ("setUploadLimit", {"limit": "1000"}),
                          ("addTags", {"tags": "rs-tag1"}),
                          ("setCategory", {"category": "rs-cat-a"}),
                          ("setForceStart", {"value": "true"})):
            r = self.call("POST", "torrents/" + ep, data={"hashes": UNKNOWN_HASH, **extra})
            self.bad_input(f"torrents/{ep} hashes=<unknown>", r.status_code, r.text)
        r = self.call("POST", "torrents/setShareLimits", data={"hashes": hs["single"]})
        self.bad_input("torrents/setShareLimits without limits", r.status_code, r.text)

        # malformed multipart
        boundary = "rsboundary7"
        with open(single_torrent, "rb") as f:
            tbytes = f.read()

        def part(name, value, filename=None, ctype=None):
            head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"'
            if filename:
                head += f'; filename="{filename}"'
            head += "\r\n"
            if ctype:
                head += f"Content-Type: {ctype}\r\n"
            return head.encode() + b"\r\n" + value + b"\r\n"
        mp = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        cases = [
            ("multipart, no closing boundary", mp,
             part("savepath", data_dir.encode()) + part("torrents", tbytes, "x.torrent")[:-2]),
            ("multipart, body not multipart at all", mp, b"this is not multipart\r\n"),
            ("multipart, Content-Type without a boundary",
             {"Content-Type": "multipart/form-data"},
             part("torrents", tbytes, "x.torrent") + f"--{boundary}--\r\n".encode()),
            ("multipart, part without Content-Disposition", mp,
             f"--{boundary}\r\nContent-Type: text/plain\r\n\r\nx\r\n--{boundary}--\r\n".encode()),
            ("multipart, torrents part is not a torrent", mp,
             part("torrents", b"d4:infoi1ee", "bad.torrent", "application/x-bittorrent")
             + f"--{boundary}--\r\n".encode()),
            ("multipart, neither urls nor torrents", mp,
             part("savepath", data_dir.encode()) + f"--{boundary}--\r\n".encode()),
            ("urlencoded, urls empty", {"Content-Type": "application/x-www-form-urlencoded"},
             b"urls="),
            ("urlencoded, urls not a URL or magnet",
             {"Content-Type": "application/x-www-form-urlencoded"}, b"urls=not-a-link"),
            ("Content-Length larger than the body", {**mp, "Content-Length": "99999"}, b"--x"),
        ]
        for case, headers, body in cases:
            if case.startswith("Content-Length"):
                st, text = self.raw_truncated(headers, body)
            else:
                st, text = self.raw("POST", "torrents/add", headers, body)
            self.bad_input(f"torrents/add: {case}", st, text, {"torrents_added": count() - n0})

        # a savepath the server cannot write (qBittorrent does not confine save paths)
        outside = "/proc/rs-outside"
        tdir = os.path.dirname(single_torrent)
        extra = C.write_torrent(tdir, tdir, "rs-outside.bin", [("rs-outside.bin", 5000)], 16384)
        hx = C.torrent_meta(extra)["hash"]
        with open(extra, "rb") as f:
            r = self.call("POST", "torrents/add", data={"savepath": outside},
                          files={"torrents": ("rs-outside.bin.torrent", f.read())})
        if r.status_code == 200 and r.text == "Ok.":
            t = C.wait_for("the outside torrent listed", lambda: self.one(hx), self.timeout)
            time.sleep(2)
            t = self.one(hx)
            self.bad_input("torrents/add savepath=/proc/rs-outside (a new torrent)",
                           r.status_code, r.text,
                           {"torrents_added": count() - n0, "state_after_2s": t["state"],
                            "save_path": t["save_path"]})
            self.ok("POST", "torrents/delete", data={"hashes": hx, "deleteFiles": "false"})
            C.wait_for("the outside torrent deleted", lambda: not self.one(hx), self.timeout)
        else:
            # a server that confines save paths (ringseed) refuses it: nothing is added
            time.sleep(0.5)
            self.bad_input("torrents/add savepath=/proc/rs-outside (a new torrent)",
                           r.status_code, r.text, {"torrents_added": count() - n0,
                                                   "listed": self.one(hx) is not None})
        # a torrent already present
        with open(single_torrent, "rb") as f:
            r = self.call("POST", "torrents/add", data={"savepath": data_dir,
                                                         "category": "rs-new-category"},
                          files={"torrents": ("x.torrent", f.read())})
        time.sleep(0.5)
        cats = sorted(self.json("torrents/categories")) if self.org else []
        self.bad_input("torrents/add of a torrent already present (with an unknown category)",
                       r.status_code, r.text,
                       {"torrents_added": count() - n0,
                        "categories_added": sorted(set(cats) - set(cats0) - {"rs-cat-c"}),
                        "category_after": self.one(hs["single"])["category"]})
        r = self.call("POST", "torrents/setLocation", data={"hashes": hs["stopped"],
                                                             "location": outside})
        time.sleep(0.5)
        self.bad_input("torrents/setLocation location=/proc/rs-outside", r.status_code, r.text,
                       {"save_path_after": self.one(hs["stopped"])["save_path"]})
        r = self.call("POST", "torrents/setLocation", data={"hashes": hs["stopped"],
                                                             "location": ""})
        self.bad_input("torrents/setLocation location=''", r.status_code, r.text)
        if not self.org:
            self.bad_inputs_end(hs, n0, count, new)
            return
        r = self.call("POST", "torrents/createCategory", data={"category": "rs-outside-cat",
                                                                "savePath": outside})
        cats = self.json("torrents/categories")
        self.bad_input("torrents/createCategory savePath=/proc/rs-outside", r.status_code, r.text,
                       {"created": "rs-outside-cat" in cats})
        if "rs-outside-cat" in cats:
            self.ok("POST", "torrents/removeCategories", data={"categories": "rs-outside-cat"})

        # unknown category
        r = self.call("POST", "torrents/setCategory", data={"hashes": hs["single"],
                                                             "category": "rs-no-such-category"})
        self.bad_input("torrents/setCategory category=<unknown>", r.status_code, r.text,
                       {"category_after": self.one(hs["single"])["category"]})
        r = self.call("POST", "torrents/editCategory", data={"category": "rs-no-such-category",
                                                              "savePath": data_dir})
        self.bad_input("torrents/editCategory category=<unknown>", r.status_code, r.text)
        r = self.call("POST", "torrents/createCategory", data={"category": "rs-cat-a",
                                                                "savePath": ""})
        self.bad_input("torrents/createCategory category=<exists>", r.status_code, r.text)
        for name in ("", "bad//name", "/lead"):
            r = self.call("POST", "torrents/createCategory", data={"category": name})
            self.bad_input(f"torrents/createCategory category={name!r}", r.status_code, r.text)
        r = self.call("POST", "torrents/removeCategories", data={"categories": "rs-nope"})
        self.bad_input("torrents/removeCategories categories=<unknown>", r.status_code, r.text)
        # add with an unknown category: qBittorrent creates the category
        mag2, h2 = C.magnet("unknown-category", "rs-magnet-2")
        r = self.call("POST", "torrents/add", data={"urls": mag2, "savepath": data_dir,
                                                     "category": "rs-new-category-2"})
        time.sleep(0.5)
        t2 = self.one(h2)
        cats = sorted(self.json("torrents/categories"))
        self.bad_input("torrents/add (new magnet) category=<unknown>", r.status_code, r.text,
                       {"added": t2 is not None, "category": t2 and t2["category"],
                        "category_created": "rs-new-category-2" in cats})
        if t2:
            self.ok("POST", "torrents/delete", data={"hashes": h2, "deleteFiles": "true"})
        self.ok("POST", "torrents/removeCategories",
                data={"categories": "rs-new-category\nrs-new-category-2"})
        self.bad_inputs_end(hs, n0, count, new)

    def bad_inputs_end(self, hs, n0, count, new):
        # endpoints and methods
        r = self.call("GET", "torrents/nosuchthing")
        self.bad_input("GET torrents/nosuchthing", r.status_code, r.text)
        r = self.call("GET", "nosuchscope/info")
        self.bad_input("GET nosuchscope/info", r.status_code, r.text)
        r = self.call("GET", "torrents/delete", params={"hashes": UNKNOWN_HASH})
        self.bad_input("GET torrents/delete (POST only)", r.status_code, r.text)
        r = self.call("GET", "torrents/" + ("pause" if new else "stop"),
                      params={"hashes": UNKNOWN_HASH})
        self.bad_input(f"GET torrents/{'pause' if new else 'stop'} (the other dialect)",
                       r.status_code, r.text)
        r = self.call("POST", "torrents/" + ("pause" if new else "stop"),
                      data={"hashes": UNKNOWN_HASH})
        self.bad_input(f"POST torrents/{'pause' if new else 'stop'} (the other dialect)",
                       r.status_code, r.text)
        r = self.call("POST", "torrents/info", data={"filter": "nosuchfilter"})
        self.bad_input("torrents/info filter=nosuchfilter", r.status_code,
                       r.text[:40] + ("..." if len(r.text) > 40 else ""))
        r = self.call("POST", "torrents/info", data={"sort": "nosuchfield"})
        self.bad_input("torrents/info sort=nosuchfield", r.status_code,
                       r.text[:40] + ("..." if len(r.text) > 40 else ""))
        r = self.call("POST", "app/setPreferences", data={"json": "{not json"})
        self.bad_input("app/setPreferences json=<not JSON>", r.status_code, r.text)
        r = self.call("POST", "torrents/info", headers={"Referer": "http://evil.example/"})
        self.bad_input("torrents/info with a cross-site Referer", r.status_code, r.text)
        r = self.call("POST", "torrents/info", headers={"Origin": "http://evil.example"})
        self.bad_input("torrents/info with a cross-site Origin", r.status_code, r.text)
        # (raw: requests would drop the cookie for a Host it was not set for)
        st, text = self.raw("POST", "torrents/info", {"Host": "evil.example"})
        self.bad_input("torrents/info with Host: evil.example", st, text[:40])
        st, text = self.raw("POST", "torrents/info", {"Host": "localhost:1"})
        self.bad_input("torrents/info with Host: localhost:1", st, text[:40])

        assert count() == n0, f"bad inputs changed the torrent count: {n0} -> {count()}"

    def raw_truncated(self, headers, body):
        """A request that promises more body than it sends, then half-closes: the server's
        answer (or a dropped connection: status 0)."""
        s = socket.create_connection((self.host, self.port), timeout=5)
        try:
            cookie = "; ".join(f"{c.name}={c.value}" for c in self.s.cookies)
            head = f"POST /api/v2/torrents/add HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n" \
                   f"Cookie: {cookie}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            s.sendall(head.encode() + b"\r\n" + body)
            s.shutdown(socket.SHUT_WR)
            data = b""
            try:
                while len(data) < 65536:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            except socket.timeout:
                return 0, "(no answer within 5 s)"
            if not data:
                return 0, "(connection closed without an answer)"
            line = data.split(b"\r\n", 1)[0].decode(errors="replace")
            body = data.split(b"\r\n\r\n", 1)[1].decode(errors="replace") if b"\r\n\r\n" in data \
                else ""
            return int(line.split()[1]), body
        finally:
            s.close()

    def login_flood(self):
        """Wrong logins in a row from one IP, then the right password: qBittorrent bans the IP
        (for WebUI\\BanDuration, 3600 s by default) after WebUI\\MaxAuthenticationFailCount
        (5) failures."""
        statuses = []
        for i in range(8):
            r = requests.post(f"{self.url}/api/v2/auth/login",
                              data={"username": self.args.username, "password": f"wrong{i}"},
                              timeout=20)
            statuses.append([r.status_code, r.text[:100]])
        r = requests.post(f"{self.url}/api/v2/auth/login",
                          data={"username": self.args.username, "password": self.args.password},
                          timeout=20)
        self.bad_input("login flood: 8 wrong passwords in a row", statuses[-1][0],
                       statuses[-1][1], {"each": statuses})
        self.bad_input("login flood: then the right password", r.status_code, r.text,
                       {"set_cookie": "set-cookie" in r.headers})
        r = self.call("GET", "app/version")
        self.bad_input("login flood: a request with a session made before the ban",
                       r.status_code, r.text)
        r = self.call("POST", "auth/login", data={"username": self.args.username,
                                                   "password": self.args.password})
        self.bad_input("login flood: auth/login with a session made before the ban",
                       r.status_code, r.text)

    def logout(self):
        cookies = {c.name: c.value for c in self.s.cookies}
        r = self.call("POST", "auth/logout")
        self.endpoints["auth/logout"] = {"status": r.status_code, "body": r.text,
                                         "set_cookie": r.headers.get("set-cookie")}
        r = requests.get(f"{self.url}/api/v2/app/version", cookies=cookies, timeout=20)
        self.endpoints["app/version after logout"] = {"status": r.status_code, "body": r.text}


# The app/preferences fields the seedbox tools read (issue 14), kept apart in the dump.
PREFS_OF_INTEREST = {
    "save_path", "temp_path", "temp_path_enabled", "max_ratio", "max_ratio_enabled",
    "max_seeding_time", "max_seeding_time_enabled", "max_inactive_seeding_time",
    "max_inactive_seeding_time_enabled", "max_ratio_act", "queueing_enabled",
    "max_active_downloads", "max_active_uploads", "max_active_torrents",
    "dont_count_slow_torrents", "dht", "pex", "lsd", "listen_port", "up_limit", "dl_limit",
    "auto_tmm_enabled", "start_paused_enabled", "add_stopped_enabled", "create_subfolder_enabled",
    "torrent_content_layout", "web_ui_port", "web_ui_address", "bypass_local_auth",
    "web_ui_session_timeout", "web_ui_max_auth_fail_count", "web_ui_ban_duration",
    "web_ui_csrf_protection_enabled", "web_ui_host_header_validation_enabled", "locale",
    "export_dir", "export_dir_fin", "add_trackers_enabled", "add_trackers", "max_connec",
    "max_connec_per_torrent", "max_uploads", "max_uploads_per_torrent", "encryption",
    "anonymous_mode", "incomplete_files_ext", "preallocate_all", "alt_up_limit", "alt_dl_limit",
    "scheduler_enabled", "slow_torrent_dl_rate_threshold", "slow_torrent_ul_rate_threshold",
    "slow_torrent_inactive_timer", "category_changed_tmm_enabled", "save_path_changed_tmm_enabled",
    "torrent_changed_tmm_enabled", "announce_to_all_trackers", "announce_to_all_tiers",
}


def read_allow(path):
    """The allow-list: (glob over a difference's path, reason) per line; `#` comments. A rule
    without a reason is refused: every deliberate difference says why."""
    rules = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            glob, _, reason = (x.strip() for x in line.partition("|"))
            if not glob or not reason:
                raise SystemExit(f"{path}:{n}: want `PATH-GLOB | reason`")
            rules.append((glob, reason))
    return rules


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dump")
    d.add_argument("--url", required=True)
    d.add_argument("--username", default="admin")
    d.add_argument("--password", required=True)
    d.add_argument("--data-dir", required=True)
    d.add_argument("--out", required=True)
    d.add_argument("--no-flood", action="store_true")
    d.add_argument("--no-organisation", action="store_true",
                   help="skip categories, tags and share limits (a server without them)")
    d.add_argument("--no-magnet-trackers", action="store_true",
                   help="do not wait for a magnet's tracker to work (a server that shows no "
                        "trackers before the metadata)")
    d.add_argument("--timeout", type=float, default=30.0)
    c = sub.add_parser("compare")
    c.add_argument("ref")
    c.add_argument("other")
    c.add_argument("--allow", help="allow-list file: `PATH-GLOB | reason` per line; a "
                   "difference whose path matches is listed as allowed, not failed")
    args = p.parse_args()
    if args.cmd == "compare":
        with open(args.ref) as f:
            ref = json.load(f)["shapes"]
        with open(args.other) as f:
            other = json.load(f)["shapes"]
        diffs = compare(ref, other)
        allowed, unused = [], []
        if args.allow:
            rules = read_allow(args.allow)
            used = set()
            left = []
            for d in diffs:
                where = d.split(": ", 1)[0]
                rule = next((r for r in rules if fnmatch.fnmatchcase(where, r[0])), None)
                if rule:
                    allowed.append(f"{d}  [allowed: {rule[1]}]")
                    used.add(rule[0])
                else:
                    left.append(d)
            diffs = left
            unused = [r[0] for r in rules if r[0] not in used]
        print(json.dumps({"differences": diffs, "allowed": allowed,
                          "allow_rules_unused": unused}, indent=2))
        sys.exit(1 if diffs else 0)
    started = time.monotonic()
    out = Dump(args).run()
    out["seconds"] = round(time.monotonic() - started, 2)
    with open(args.out, "w") as f:
        f.write(C.dump_json(out) + "\n")
    print(json.dumps({"ok": True, "out": args.out, "server": out["server"],
                      "endpoints": sorted(out["endpoints"]), "bad_inputs": len(out["bad_inputs"]),
                      "seconds": out["seconds"]}, indent=2))


if __name__ == "__main__":
    main()

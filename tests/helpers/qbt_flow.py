#!/usr/bin/python3
"""The seedbox tools' flow through the qBittorrent Web API v2, driven by the PyPI client library
`qbittorrent-api` (not written here), asserting each step's visible effect. It must pass against
qbittorrent-nox (the reference) and against ringseed alike (issue 14).

  qbt_flow.py --url http://127.0.0.1:PORT --username U --password P \\
              --torrent FILE.torrent --magnet 'magnet:?xt=urn:btih:...&dn=NAME' \\
              --data-dir DIR [--both-dialects] [--timeout S]

DIR must already hold the torrent's complete content (it is added with skip_checking and
savepath DIR, and deleted with its files at the end); the magnet's metadata must be unobtainable
(no peers), so it stays waiting for metadata; the server's queue must have room for one more
seeding torrent (a fresh qbittorrent-nox has). The flow: a wrong login is refused, log in, create
a category, add the .torrent with the category, two tags and skip_checking, add the magnet (no
category, no tags), list with every status filter, category, tag, hashes, sort, reverse, limit
and offset, set share limits, stop/start (pause/resume for Web API < 2.11.0, which is how
qbittorrent-api chooses; with --both-dialects the other dialect must work too), recheck with one
byte of the content corrupted and then restored, delete both with their files, remove the
category and tags, log out. Prints a JSON summary; exits 1 on the first failed assertion.
"""
import argparse
import json
import os
import secrets
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qbt_common as C  # noqa: E402

C.use_pydeps()
import qbittorrentapi  # noqa: E402
import requests  # noqa: E402
from packaging.version import Version  # noqa: E402

# qBittorrent's state strings, grouped as its torrent filters group them (base/torrentfilter.cpp
# and TorrentImpl::isUploading/isDownloading/isCompleted/isActive, 4.5.2 and 5.x alike).
SEEDING = {"uploading", "stalledUP", "checkingUP", "queuedUP", "forcedUP"}
STOPPED_UP = {"pausedUP", "stoppedUP"}
CHECKING = {"checkingUP", "checkingDL", "checkingResumeData"}
DOWNLOADING = {"downloading", "metaDL", "forcedMetaDL", "stalledDL", "checkingDL", "pausedDL",
               "stoppedDL", "queuedDL", "forcedDL"}


class Flow:
    def __init__(self, args):
        self.args = args
        self.steps = []
        self.summary = {"url": args.url, "steps": self.steps}
        self.timeout = args.timeout

    def step(self, step_name, **observed):
        self.steps.append({"step": step_name, **observed})
        print(f"ok: {step_name}", file=sys.stderr)

    def client(self, password):
        return qbittorrentapi.Client(
            host=self.args.url,
            username=self.args.username,
            password=password,
            REQUESTS_ARGS={"timeout": (5, 20)},
            VERIFY_WEBUI_CERTIFICATE=False,
        )

    def info(self, hashes, **kw):
        return self.qbt.torrents_info(torrent_hashes=hashes, **kw)

    def one(self, h):
        ts = self.info([h])
        return ts[0] if len(ts) == 1 else None

    def wait_state(self, h, what, pred):
        """Waits until torrent `h` satisfies `pred`; returns its JSON (a dict)."""
        return C.wait_for(f"{what} ({h})", lambda: (t := self.one(h)) and pred(t) and dict(t),
                          self.timeout)

    def names(self, hashes, **kw):
        return [t["hash"] for t in self.info(hashes, **kw)]

    def check_filter(self, hashes, expected, **kw):
        got = set(self.names(hashes, **kw))
        assert got == set(expected), f"torrents/info {kw}: got {sorted(got)}, want {sorted(expected)}"
        return sorted(got)

    def run(self):
        a = self.args
        meta = C.torrent_meta(a.torrent)
        ha = meta["hash"]
        mq = urllib.parse.parse_qs(urllib.parse.urlsplit(a.magnet).query)
        hm = mq["xt"][0].rsplit(":", 1)[1].lower()
        mname = mq.get("dn", [hm])[0]
        data_dir = os.path.abspath(a.data_dir)
        content = os.path.join(data_dir, meta["name"])
        assert os.path.exists(content), f"{content} must hold the torrent's content"
        self.summary["torrent"] = {"hash": ha, "name": meta["name"], "size": meta["size"]}
        self.summary["magnet"] = {"hash": hm, "name": mname}

        # --- log in: a wrong password is refused (LoginFailed), the right one gives a session
        bad = self.client(a.password + "-wrong")
        try:
            bad.auth_log_in()
            raise AssertionError("a wrong password logged in")
        except qbittorrentapi.LoginFailed:
            pass
        self.qbt = qbt = self.client(a.password)
        qbt.auth_log_in()
        assert qbt.is_logged_in, "not logged in after auth_log_in"
        cookies = {c.name: c.value for c in qbt._http_session.cookies}
        assert cookies, "login set no cookie"
        app_version = qbt.app_version()
        api = qbt.app_web_api_version()
        new = Version(api) >= Version("2.11.0")
        dialect = {"stop": "stop", "start": "start", "filter": "stopped"} if new else \
            {"stop": "pause", "start": "resume", "filter": "paused"}
        other = {"stop": "pause", "start": "resume", "filter": "paused"} if new else \
            {"stop": "stop", "start": "start", "filter": "stopped"}
        running_filter, other_running = ("running", "resumed") if new else ("resumed", "running")
        self.summary.update(app_version=app_version, webapi_version=api,
                            dialect="5.x (stop/start/stopped)" if new else
                            "4.x (pause/resume/paused)")
        self.step("login", cookie_names=sorted(cookies), app_version=app_version,
                  webapi_version=api, wrong_password="LoginFailed")

        # --- a category with its own save path
        tag = secrets.token_hex(3)
        org = not a.no_organisation
        cat, tags = f"rsflow-{tag}", [f"rsflow-a-{tag}", f"rsflow-b-{tag}"]
        if org:
            qbt.torrents_create_category(name=cat, save_path=data_dir)
            cats = qbt.torrents_categories()
            assert cat in cats, f"category {cat} not listed: {dict(cats)}"
            assert cats[cat]["name"] == cat
            assert cats[cat]["savePath"].rstrip("/") == data_dir, cats[cat]
            self.step("create category", category=dict(cats[cat]))
        else:
            cat, tags = "", []
            self.step("categories, tags and share limits skipped (--no-organisation)")

        # --- add the .torrent: category, tags, skip_checking
        res = qbt.torrents_add(torrent_files=a.torrent, save_path=data_dir,
                               category=cat or None, tags=tags or None,
                               is_skip_checking=True)
        assert res == "Ok." or (isinstance(res, dict) and res.get("success_count", 0) >= 1), \
            f"torrents/add answered {res!r}"
        # stalledUP: complete, running, no peer (a moment of queuedUP or checkingUP may come
        # first)
        t = self.wait_state(ha, "the .torrent seeding, complete",
                            lambda t: t["state"] == "stalledUP" and t["progress"] == 1)
        assert t["hash"] == ha and t["infohash_v1"] == ha, t
        assert t["name"] == meta["name"], t["name"]
        assert t["size"] == meta["size"] and t["total_size"] == meta["size"], t
        assert t["amount_left"] == 0 and t["completed"] == meta["size"], t
        assert t["category"] == cat, t["category"]
        assert sorted(filter(None, t["tags"].split(", "))) == sorted(tags), t["tags"]
        assert t["save_path"].rstrip("/") == data_dir, t["save_path"]
        assert t["content_path"].rstrip("/") == content, t["content_path"]
        self.step("add torrent", add_answer=res if isinstance(res, str) else dict(res),
                  state=t["state"], tags=t["tags"], save_path=t["save_path"],
                  content_path=t["content_path"])

        # --- add the magnet: no metadata arrives, so it waits in metaDL
        res = qbt.torrents_add(urls=a.magnet, save_path=data_dir)
        assert res == "Ok." or (isinstance(res, dict) and res.get("success_count", 0) >= 1), \
            f"torrents/add (magnet) answered {res!r}"
        m = self.wait_state(hm, "the magnet listed, waiting for metadata",
                            lambda t: t["state"] == "metaDL")
        assert m["name"] == mname, m["name"]
        assert m["progress"] == 0 and m["size"] == 0, m
        assert m["category"] == "" and m["tags"] == "", m
        self.step("add magnet", add_answer=res if isinstance(res, str) else dict(res),
                  state=m["state"], name=m["name"], size=m["size"])

        # --- list with filters; the hashes filter keeps other torrents of the server out
        both = [ha, hm]
        filters = {
            "all": both, "downloading": [hm], "seeding": [ha], "completed": [ha],
            dialect["filter"]: [], running_filter: both, "active": [hm], "inactive": [ha],
            "stalled": [ha], "stalled_uploading": [ha], "stalled_downloading": [],
            "checking": [], "errored": [],
        }
        seen = {}
        for f, want in filters.items():
            seen[f] = self.check_filter(both, want, status_filter=f)
        if org:
            seen["category=" + cat] = self.check_filter(both, [ha], category=cat)
            seen["category=''"] = self.check_filter(both, [hm], category="")
            seen["tag=" + tags[0]] = self.check_filter(both, [ha], tag=tags[0])
            seen["tag=''"] = self.check_filter(both, [hm], tag="")
            seen["category+filter"] = self.check_filter(both, [ha], category=cat,
                                                        status_filter="seeding")
        seen["hashes=" + ha] = self.check_filter([ha], [ha])
        order = self.names(both, sort="size")
        assert order == [hm, ha], f"sort=size: {order}"
        order_r = self.names(both, sort="size", reverse=True)
        assert order_r == [ha, hm], f"sort=size reverse: {order_r}"
        lim = self.names(both, sort="size", limit=1)
        assert lim == [hm], f"limit=1: {lim}"
        off = self.names(both, sort="size", offset=1)
        assert off == [ha], f"offset=1: {off}"
        neg = self.names(both, sort="size", offset=-1)
        assert neg == [ha], f"offset=-1: {neg}"
        lim_off = self.names(both, sort="size", reverse=True, limit=1, offset=1)
        assert lim_off == [hm], f"reverse limit=1 offset=1: {lim_off}"
        self.step("list with filters", filters=seen, sort_size=order, sort_size_reverse=order_r,
                  limit_1=lim, offset_1=off, offset_minus_1=neg)

        # --- share limits: per torrent, then unlimited (-1), then back to global (-2)
        if org:
            self.share_limits(api, ha)
        self.stop_start_recheck_delete(a, meta, ha, hm, both, content, new, dialect, other,
                                       running_filter, other_running)
        # --- clean up, log out: the old cookie no longer opens the API
        sid = {c.name: c.value for c in qbt._http_session.cookies}
        if org:
            qbt.torrents_remove_categories(categories=[cat])
            qbt.torrents_delete_tags(tags=tags)
            assert cat not in qbt.torrents_categories(), "category not removed"
            left = set(qbt.torrents_tags()) & set(tags)
            assert not left, f"tags not removed: {left}"
        qbt.auth_log_out()
        r = requests.post(a.url + "/api/v2/app/version", cookies=sid, timeout=10)
        assert r.status_code == 403, f"app/version after logout: {r.status_code} {r.text!r}"
        self.step("log out", status_after_logout=r.status_code)
        return self.summary

    def share_limits(self, api, ha):
        qbt = self.qbt
        inactive = Version(api) >= Version("2.9.2")
        kw = {"inactive_seeding_time_limit": 60} if inactive else {}
        qbt.torrents_set_share_limits(ratio_limit=1.5, seeding_time_limit=120,
                                      torrent_hashes=[ha], **kw)
        t = self.wait_state(ha, "share limits 1.5 / 120 min",
                            lambda t: t["ratio_limit"] == 1.5 and t["seeding_time_limit"] == 120)
        assert t["max_ratio"] == 1.5 and t["max_seeding_time"] == 120, t
        if inactive:
            assert t["inactive_seeding_time_limit"] == 60, t
        limited = {k: t[k] for k in ("ratio_limit", "seeding_time_limit", "max_ratio",
                                     "max_seeding_time", "inactive_seeding_time_limit",
                                     "max_inactive_seeding_time") if k in t}
        kw = {"inactive_seeding_time_limit": -1} if inactive else {}
        qbt.torrents_set_share_limits(ratio_limit=-1, seeding_time_limit=-1,
                                      torrent_hashes=[ha], **kw)
        t = self.wait_state(ha, "share limits -1 (none)",
                            lambda t: t["ratio_limit"] == -1 and t["seeding_time_limit"] == -1)
        unlimited = {k: t[k] for k in limited}
        kw = {"inactive_seeding_time_limit": -2} if inactive else {}
        qbt.torrents_set_share_limits(ratio_limit=-2, seeding_time_limit=-2,
                                      torrent_hashes=[ha], **kw)
        t = self.wait_state(ha, "share limits -2 (global)",
                            lambda t: t["ratio_limit"] == -2 and t["seeding_time_limit"] == -2)
        self.step("set share limits", limited=limited, unlimited=unlimited,
                  global_={k: t[k] for k in limited})

    def stop_start_recheck_delete(self, a, meta, ha, hm, both, content, new, dialect, other,
                                  running_filter, other_running):
        qbt = self.qbt

        # --- stop/start (qbittorrent-api picks stop/start or pause/resume by Web API version)
        qbt.torrents_stop(torrent_hashes=[ha])
        t = self.wait_state(ha, "stopped", lambda t: t["state"] in STOPPED_UP)
        stopped_state = t["state"]
        assert stopped_state == ("stoppedUP" if new else "pausedUP"), stopped_state
        s1 = self.check_filter(both, [ha], status_filter=dialect["filter"])
        self.check_filter(both, [hm], status_filter=running_filter)
        self.check_filter(both, [], status_filter="seeding")
        self.check_filter(both, [ha], status_filter="completed")
        qbt.torrents_start(torrent_hashes=[ha])
        t = self.wait_state(ha, "started again", lambda t: t["state"] in SEEDING - CHECKING)
        self.check_filter(both, [], status_filter=dialect["filter"])
        # the other dialect's endpoints, called directly
        probe = {}
        for verb in ("stop", "start"):
            try:
                qbt._post(_name="torrents", _method=other[verb], data={"hashes": ha})
                probe[other[verb]] = 200
            except qbittorrentapi.HTTPError as e:
                probe[other[verb]] = e.http_status_code
            if a.both_dialects:
                assert probe[other[verb]] == 200, f"torrents/{other[verb]}: {probe}"
                want = (lambda t: t["state"] in STOPPED_UP) if verb == "stop" else \
                    (lambda t: t["state"] in SEEDING - CHECKING)
                self.wait_state(ha, f"torrents/{other[verb]}", want)
                if verb == "stop":
                    self.check_filter(both, [ha], status_filter=other["filter"])
                    self.check_filter(both, [hm], status_filter=other_running)
        if not a.both_dialects and probe.get(other["stop"]) == 200:
            # the server knows both (ringseed): leave the torrent running again
            self.wait_state(ha, "running after the other dialect",
                            lambda t: t["state"] in SEEDING - CHECKING)
        self.step("stop/start", endpoints=[dialect["stop"], dialect["start"]],
                  stopped_state=stopped_state, stopped_filter={dialect["filter"]: s1},
                  started_state=t["state"], other_dialect_status=probe)

        # --- recheck: corrupt the first byte of the content, recheck: one piece is missing;
        # restore it, recheck: complete again
        first = content if not meta["multi"] else os.path.join(content, meta["files"][0][0])
        with open(first, "r+b") as f:
            orig = f.read(1)
            f.seek(0)
            f.write(bytes([orig[0] ^ 0xFF]))
        want_left = min(meta["piece_length"], meta["size"])
        try:
            qbt.torrents_recheck(torrent_hashes=[ha])
            bad = self.wait_state(ha, "recheck finds the corrupted piece",
                                  lambda t: t["state"] not in CHECKING and t["amount_left"] > 0)
        finally:
            with open(first, "r+b") as f:
                f.write(orig)
        assert bad["amount_left"] == want_left, (bad["amount_left"], want_left)
        assert bad["progress"] < 1 and bad["state"] in DOWNLOADING, bad
        self.check_filter(both, [ha, hm], status_filter="downloading")
        qbt.torrents_recheck(torrent_hashes=[ha])
        good = self.wait_state(ha, "recheck finds it complete",
                               lambda t: t["state"] in SEEDING - CHECKING and t["progress"] == 1)
        self.step("recheck", corrupted={k: bad[k] for k in ("state", "progress", "amount_left")},
                  restored={k: good[k] for k in ("state", "progress", "amount_left")})

        # --- delete both with their files
        qbt.torrents_delete(delete_files=True, torrent_hashes=both)
        C.wait_for("both torrents gone", lambda: not self.info(both), self.timeout)
        C.wait_for(f"{content} deleted", lambda: not os.path.exists(content), self.timeout)
        self.step("delete with files", content_exists=os.path.exists(content))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True)
    p.add_argument("--username", default="admin")
    p.add_argument("--password", required=True)
    p.add_argument("--torrent", required=True)
    p.add_argument("--magnet", required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--both-dialects", action="store_true",
                   help="require both stop/start and pause/resume (ringseed keeps both)")
    p.add_argument("--no-organisation", action="store_true",
                   help="skip categories, tags and share limits (a server without them)")
    p.add_argument("--timeout", type=float, default=20.0, help="seconds to wait for each effect")
    args = p.parse_args()
    flow = Flow(args)
    started = time.monotonic()
    try:
        summary = flow.run()
        summary["ok"] = True
    except (AssertionError, qbittorrentapi.APIError) as e:
        summary = flow.summary
        summary.update(ok=False, error=f"{type(e).__name__}: {e}")
    summary["seconds"] = round(time.monotonic() - started, 2)
    print(json.dumps(summary, indent=2, sort_keys=True))
    sys.exit(0 if summary["ok"] else 1)


if __name__ == "__main__":
    main()

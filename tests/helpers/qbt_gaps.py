#!/usr/bin/python3
"""The qBittorrent Web API calls beyond the basic flow (issue 14's remaining gaps), through the
PyPI client `qbittorrent-api`, asserting every visible effect. The same script passes against
qbittorrent-nox 4.5.2 and against ringseed (tests/qbt_api.rs runs both via qbt_ringseed.py):

- `torrents/add` with an http:// .torrent link (served here on loopback, the request seen),
  `rename`, `sequentialDownload`, `firstLastPiecePrio` (reported as `seq_dl`/`f_l_piece_prio`);
- `addTrackers`, `editTracker`, `removeTrackers`: the list changes and the new trackers get an
  announce (the live announcer uses them); `reannounce` makes a tracker hear from it again;
- `setLocation`: the data moves, the torrent keeps seeding there (a recheck finds it complete);
- `setCategory` + `setAutoManagement`: the data moves to the category's save path;
- `filePrio` on a three-file torrent: `torrents/files` shows the priorities;
- `renameFile`, `renameFolder`: the files move on disk and a recheck finds them complete;
- `transfer/setUploadLimit`, `setDownloadLimit`, `uploadLimit`, `downloadLimit`,
  `speedLimitsMode`;
- the statuses of bad input to these (unknown hash, unknown tracker, empty location).

  qbt_gaps.py --url URL --username U --password P --data-dir DIR

DIR must be writable by the server (inside ringseed's data root). Prints a JSON summary; exit 1
on the first failure.
"""
import argparse
import http.server
import json
import os
import sys
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qbt_common as C  # noqa: E402

C.use_pydeps()
import qbittorrentapi  # noqa: E402

STEPS = []


def step(what, **facts):
    STEPS.append({"step": what, **facts})


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


class FileServer:
    """Serves one .torrent at /NAME on 127.0.0.1 and counts the requests for it."""

    def __init__(self, name, data):
        self.hits = 0
        me = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                if self.path != "/" + name:
                    self.send_error(404)
                    return
                me.hits += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/x-bittorrent")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/{name}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def status_of(fn):
    """The HTTP status a client call ends with (200 when it returns)."""
    try:
        fn()
        return 200
    except qbittorrentapi.exceptions.HTTPError as e:
        return e.http_status_code
    except qbittorrentapi.exceptions.NotFound404Error:
        return 404


def listing(top):
    """Every file beneath `top`, relative, sorted."""
    return sorted(os.path.relpath(os.path.join(d, f), top)
                  for d, _, fs in os.walk(top) for f in fs)


def content_layouts(client, data):
    """`contentLayout`: each torrent's data is written where the layout puts it, then added
    (checked, not trusted): the check must find it complete there, and `content_path`, the file
    names and a delete with its files follow the layout."""
    src = os.path.join(data, "layout-src")
    one = "rs-lay.one.bin"
    single = C.make_torrent(src, one, [(one, 70_000)], 16384)
    multi = C.make_torrent(src, "rs-lay-multi", [("a.bin", 40_000), ("d/b.bin", 30_000)], 16384)
    cases = [
        # (layout, torrent, its files where the layout puts them, content_path)
        ("Subfolder", single, {one: "rs-lay.one/" + one}, "rs-lay.one/" + one),
        ("Original", single, {one: one}, one),
        ("NoSubfolder", single, {one: one}, one),
        ("Subfolder", multi, {"rs-lay-multi/a.bin": "rs-lay-multi/a.bin",
                              "rs-lay-multi/d/b.bin": "rs-lay-multi/d/b.bin"}, "rs-lay-multi"),
        ("NoSubfolder", multi, {"rs-lay-multi/a.bin": "a.bin",
                                "rs-lay-multi/d/b.bin": "d/b.bin"}, ""),
    ]
    seen = []
    for i, (layout, torrent, placed, content) in enumerate(cases):
        save = os.path.join(data, f"layout-{i}-{layout}")
        for frm, to in placed.items():
            os.makedirs(os.path.dirname(os.path.join(save, to)), exist_ok=True)
            with open(os.path.join(src, frm), "rb") as f, open(os.path.join(save, to), "wb") as g:
                g.write(f.read())
        h = C.infohash_v1(torrent)
        r = client.torrents_add(torrent_files={"x.torrent": torrent}, save_path=save,
                                content_layout=layout)
        expect(r == "Ok.", f"add {layout} answered {r!r}")
        t = C.wait_for(f"the {layout} check to find its data complete",
                       lambda: (x := client.torrents_info(torrent_hashes=h)) and
                       x[0]["progress"] == 1 and x[0]["state"] in ("stalledUP", "uploading")
                       and x[0], timeout=60)
        want = os.path.join(save, content) if content else save
        expect(t["content_path"].rstrip("/") == want, f"{layout}: content_path "
               f"{t['content_path']!r}, not {want!r}")
        names = sorted(f["name"] for f in client.torrents_files(torrent_hash=h))
        expect(names == sorted(placed.values()), f"{layout}: files {names}")
        on_disk = listing(save)
        moved = None
        if layout != "Original":
            # setLocation moves the files as the layout has them; a recheck finds them there
            moved = save + "-moved"
            client.torrents_set_location(location=moved, torrent_hashes=h)
            C.wait_for(f"the {layout} files to move",
                       lambda: listing(moved) == on_disk and listing(save) == [], timeout=30)
            client.torrents_recheck(torrent_hashes=h)
            C.wait_for(f"a recheck of the moved {layout} torrent",
                       lambda: (x := client.torrents_info(torrent_hashes=h)) and
                       x[0]["progress"] == 1 and x[0]["state"] in ("stalledUP", "uploading"),
                       timeout=60)
            got = client.torrents_info(torrent_hashes=h)[0]["content_path"].rstrip("/")
            want = os.path.join(moved, content) if content else moved
            expect(got == want, f"{layout} moved: content_path {got!r}, not {want!r}")
            save = moved
        client.torrents_delete(delete_files=True, torrent_hashes=h)
        C.wait_for(f"the {layout} torrent removed",
                   lambda: not client.torrents_info(torrent_hashes=h))
        C.wait_for(f"the {layout} files deleted (left: {listing(save)})",
                   lambda: listing(save) == [], timeout=30)
        expect(os.path.isdir(save), f"{layout}: the save path itself was removed")
        seen.append({"layout": layout, "files": len(placed), "moved": moved is not None,
                     "content_path": os.path.relpath(t["content_path"].rstrip("/"), data),
                     "names": names, "on_disk": on_disk})
    step("content layouts", cases=seen)


def seed_three_files(client, save, name):
    """Makes `name` (a.bin, d/b.bin, d/c.bin; 16 KiB pieces) under `save`, adds it there with
    the check skipped and waits until it seeds; returns its v1 hash."""
    torrent = C.make_torrent(save, name, [("a.bin", 40_000), ("d/b.bin", 30_000),
                                          ("d/c.bin", 20_000)], 16384)
    h = C.infohash_v1(torrent)
    r = client.torrents_add(torrent_files={"x.torrent": torrent}, save_path=save,
                            is_skip_checking=True)
    expect(r == "Ok.", f"add answered {r!r}")
    C.wait_for(f"{name} to seed",
               lambda: (x := client.torrents_info(torrent_hashes=h)) and
               x[0]["state"] in ("stalledUP", "uploading"))
    return h


def file_priorities(client, data):
    """`filePrio` on a seeding three-file torrent: the priorities `torrents/files` shows, the
    seed's size and progress (a seed counts whole, whatever its priorities), and the statuses of
    bad input (unknown hash, a priority not 0/1/6/7 or not a number, an index not a number or
    not a file of the torrent), which change nothing."""
    src = os.path.join(data, "prio-src")
    h = seed_three_files(client, src, "rs-prio")

    def prios():
        return [f["priority"] for f in client.torrents_files(torrent_hash=h)]

    expect(prios() == [1, 1, 1], f"priorities at first: {prios()}")
    client.torrents_file_priority(torrent_hash=h, file_ids=[1, 2], priority=0)
    client.torrents_file_priority(torrent_hash=h, file_ids=0, priority=6)
    got = C.wait_for("the priorities to show", lambda: (p := prios()) == [6, 0, 0] and p)
    bad = {
        "filePrio unknown hash": status_of(lambda: client.torrents_file_priority(
            torrent_hash="0" * 40, file_ids=0, priority=0)),
        "filePrio priority 2": status_of(lambda: client.torrents_file_priority(
            torrent_hash=h, file_ids=0, priority=2)),
        "filePrio priority x": status_of(lambda: client.torrents_file_priority(
            torrent_hash=h, file_ids=0, priority="x")),
        "filePrio id x": status_of(lambda: client.torrents_file_priority(
            torrent_hash=h, file_ids="x", priority=0)),
        "filePrio id 3 of 3 files": status_of(lambda: client.torrents_file_priority(
            torrent_hash=h, file_ids=3, priority=0)),
        "filePrio id -1": status_of(lambda: client.torrents_file_priority(
            torrent_hash=h, file_ids=-1, priority=0)),
    }
    expect(prios() == [6, 0, 0], f"bad input changed the priorities: {prios()}")
    files = client.torrents_files(torrent_hash=h)
    t = client.torrents_info(torrent_hashes=h)[0]
    # (qBittorrent writes a whole number as 1, ringseed as 1.0: the same JSON number)
    step("file priorities", priorities=got, statuses=bad, size=t["size"],
         progress=float(t["progress"]), amount_left=t["amount_left"],
         file_progress=[float(f["progress"]) for f in files])
    client.torrents_delete(delete_files=True, torrent_hashes=h)
    C.wait_for("the three-file torrent removed",
               lambda: not client.torrents_info(torrent_hashes=h))


def renames(client, data):
    """`renameFile` and `renameFolder` on a seeding three-file torrent: the files move on disk,
    `torrents/files` shows the new names, a recheck finds the data complete at its new places;
    bad input (a path that is not a file or folder of the torrent, one taken, an absolute or
    empty one, an unknown hash) changes nothing."""
    save = os.path.join(data, "rename-save")
    h = seed_three_files(client, save, "rs-ren")

    def names():
        return [f["name"] for f in client.torrents_files(torrent_hash=h)]

    client.torrents_rename_file(torrent_hash=h, old_path="rs-ren/a.bin",
                                new_path="rs-ren/e/a2.bin")
    C.wait_for("the file renamed", lambda: names()[0] == "rs-ren/e/a2.bin")
    client.torrents_rename_folder(torrent_hash=h, old_path="rs-ren/d", new_path="rs-ren/dd")
    want = ["rs-ren/e/a2.bin", "rs-ren/dd/b.bin", "rs-ren/dd/c.bin"]
    C.wait_for(f"the folder renamed (names {names()})", lambda: names() == want)
    C.wait_for("the files at their new places",
               lambda: listing(save) == sorted(want), timeout=30)
    bad = {
        "renameFile absent": status_of(lambda: client.torrents_rename_file(
            torrent_hash=h, old_path="rs-ren/zz.bin", new_path="rs-ren/z.bin")),
        "renameFile taken": status_of(lambda: client.torrents_rename_file(
            torrent_hash=h, old_path="rs-ren/e/a2.bin", new_path="rs-ren/dd/b.bin")),
        "renameFile absolute": status_of(lambda: client.torrents_rename_file(
            torrent_hash=h, old_path="rs-ren/e/a2.bin", new_path="/tmp/rs-x.bin")),
        "renameFile empty": status_of(lambda: client.torrents_rename_file(
            torrent_hash=h, old_path="rs-ren/e/a2.bin", new_path="")),
        "renameFile unknown hash": status_of(lambda: client.torrents_rename_file(
            torrent_hash="0" * 40, old_path="rs-ren/e/a2.bin", new_path="rs-ren/x.bin")),
        "renameFolder absent": status_of(lambda: client.torrents_rename_folder(
            torrent_hash=h, old_path="rs-ren/zz", new_path="rs-ren/x")),
        "renameFolder unknown hash": status_of(lambda: client.torrents_rename_folder(
            torrent_hash="0" * 40, old_path="rs-ren/dd", new_path="rs-ren/x")),
    }
    time.sleep(0.5)
    expect(names() == want, f"bad input changed the names: {names()}")
    expect(listing(save) == sorted(want), f"bad input changed the files: {listing(save)}")
    client.torrents_recheck(torrent_hashes=h)
    t = C.wait_for("a recheck to find the renamed files complete",
                   lambda: (x := client.torrents_info(torrent_hashes=h)) and
                   x[0]["state"] in ("stalledUP", "uploading") and x[0]["progress"] == 1
                   and x[0], timeout=60)
    step("renames", names=names(), on_disk=listing(save), statuses=bad,
         content_path=os.path.relpath(t["content_path"].rstrip("/"), data))
    client.torrents_delete(delete_files=True, torrent_hashes=h)
    C.wait_for("the renamed torrent removed",
               lambda: not client.torrents_info(torrent_hashes=h))
    C.wait_for(f"its renamed files deleted (left: {listing(save)})",
               lambda: listing(save) == [], timeout=30)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True)
    p.add_argument("--username", default="admin")
    p.add_argument("--password", required=True)
    p.add_argument("--data-dir", required=True)
    a = p.parse_args()
    data = os.path.abspath(a.data_dir)
    os.makedirs(data, exist_ok=True)
    started = time.monotonic()
    # `min interval` 1: libtorrent defers a forced reannounce until it has passed
    trackers = {k: C.Tracker("ok", min_interval=1) for k in ("a", "b", "c")}
    name = "rs-gaps.bin"
    torrent = C.make_torrent(data, name, [(name, 600_000)], 65536, announce=trackers["a"].url)
    h = C.infohash_v1(torrent)
    files = FileServer("rs-gaps.torrent", torrent)
    ok = False
    client = qbittorrentapi.Client(host=a.url, username=a.username, password=a.password,
                                   REQUESTS_ARGS={"timeout": 60})
    try:
        client.auth_log_in()

        def info():
            got = client.torrents_info(torrent_hashes=h)
            return got[0] if got else None

        def tracker_urls():
            return [t["url"] for t in client.torrents_trackers(torrent_hash=h)
                    if not t["url"].startswith("** [")]

        # -- add by URL, renamed, sequential, first/last piece priority
        r = client.torrents_add(urls=files.url, save_path=data, is_skip_checking=True,
                                rename="rs gaps renamed", is_sequential_download=True,
                                is_first_last_piece_priority=True)
        expect(r == "Ok.", f"add by URL answered {r!r}")
        t = C.wait_for("the torrent added from an http:// link", info)
        expect(files.hits >= 1, "the .torrent link was not fetched")
        t = C.wait_for("its state settles as seeding",
                       lambda: (x := info()) and x["state"] in ("stalledUP", "uploading") and x)
        expect(t["name"] == "rs gaps renamed", f"rename: name {t['name']!r}")
        expect(t["seq_dl"] is True, f"seq_dl {t['seq_dl']!r}")
        expect(t["f_l_piece_prio"] is True, f"f_l_piece_prio {t['f_l_piece_prio']!r}")
        expect(t["auto_tmm"] is False, "auto_tmm off when not asked for")
        step("add by URL", fetched=files.hits, name=t["name"], seq_dl=t["seq_dl"],
             f_l_piece_prio=t["f_l_piece_prio"], state=t["state"])
        client.torrents_toggle_sequential_download(torrent_hashes=h)
        client.torrents_toggle_first_last_piece_priority(torrent_hashes=h)
        t = info()
        expect((t["seq_dl"], t["f_l_piece_prio"]) == (False, False), "toggles")
        client.torrents_rename(torrent_hash=h, new_torrent_name="rs gaps again")
        C.wait_for("the rename", lambda: info()["name"] == "rs gaps again")
        step("toggles and rename", seq_dl=False, f_l_piece_prio=False, name="rs gaps again")

        # -- trackers: the announcer uses what is added and edited
        C.wait_for("the first announce", lambda: trackers["a"].announces, timeout=30)
        before = len(trackers["a"].announces)
        client.torrents_reannounce(torrent_hashes=h)
        C.wait_for("an announce after reannounce",
                   lambda: len(trackers["a"].announces) > before, timeout=30)
        step("reannounce", announces_before=before, announces_after=len(trackers["a"].announces))
        client.torrents_add_trackers(torrent_hash=h, urls=[trackers["b"].url])
        urls = tracker_urls()
        expect(urls == [trackers["a"].url, trackers["b"].url], f"after addTrackers: {urls}")
        tiers = [t["tier"] for t in client.torrents_trackers(torrent_hash=h)
                 if not t["url"].startswith("** [")]
        step("addTrackers", trackers=urls, tiers=tiers)
        # the only tracker left must hear from the torrent (with several, a tier's first
        # working tracker is the one announced to, BEP 12)
        client.torrents_remove_trackers(torrent_hash=h, urls=[trackers["a"].url])
        urls = tracker_urls()
        expect(urls == [trackers["b"].url], f"after removeTrackers: {urls}")
        client.torrents_reannounce(torrent_hashes=h)
        C.wait_for("an announce to the added tracker", lambda: trackers["b"].announces, timeout=30)
        step("removeTrackers", trackers=urls, announced=len(trackers["b"].announces))
        client.torrents_edit_tracker(torrent_hash=h, original_url=trackers["b"].url,
                                     new_url=trackers["c"].url)
        urls = tracker_urls()
        expect(urls == [trackers["c"].url], f"after editTracker: {urls}")
        client.torrents_reannounce(torrent_hashes=h)
        C.wait_for("an announce to the edited tracker", lambda: trackers["c"].announces,
                   timeout=30)
        step("editTracker", trackers=urls, announced=len(trackers["c"].announces))
        client.torrents_add_trackers(torrent_hash=h, urls=[trackers["a"].url])
        client.torrents_remove_trackers(torrent_hash=h, urls=[trackers["c"].url])
        urls = tracker_urls()
        expect(urls == [trackers["a"].url], f"back to the first tracker: {urls}")
        bad = {
            "addTrackers unknown hash": status_of(lambda: client.torrents_add_trackers(
                torrent_hash="0" * 40, urls=[trackers["b"].url])),
            "editTracker unknown origUrl": status_of(lambda: client.torrents_edit_tracker(
                torrent_hash=h, original_url="http://127.0.0.1:9/announce",
                new_url=trackers["b"].url)),
            "editTracker newUrl exists": status_of(lambda: client.torrents_edit_tracker(
                torrent_hash=h, original_url=trackers["a"].url, new_url=trackers["a"].url)),
            "removeTrackers unknown hash": status_of(lambda: client.torrents_remove_trackers(
                torrent_hash="0" * 40, urls=[trackers["a"].url])),
            "removeTrackers absent URL": status_of(lambda: client.torrents_remove_trackers(
                torrent_hash=h, urls=["http://127.0.0.1:9/announce"])),
            "setLocation unknown hash": status_of(lambda: client.torrents_set_location(
                location=data, torrent_hashes="0" * 40)),
            "setAutoManagement unknown hash": status_of(
                lambda: client.torrents_set_auto_management(enable=True,
                                                            torrent_hashes="0" * 40)),
            "setLocation empty": status_of(lambda: client.torrents_set_location(
                location="", torrent_hashes=h)),
            "rename empty": status_of(lambda: client.torrents_rename(
                torrent_hash=h, new_torrent_name="")),
            "rename unknown hash": status_of(lambda: client.torrents_rename(
                torrent_hash="0" * 40, new_torrent_name="x")),
        }
        expect(tracker_urls() == [trackers["a"].url], "bad tracker edits changed the list")
        step("bad input", statuses=bad)

        # -- setLocation: the data moves and keeps seeding from there
        moved = os.path.join(data, "moved here")
        client.torrents_set_location(location=moved, torrent_hashes=h)
        C.wait_for("save_path to change",
                   lambda: info()["save_path"].rstrip("/") == moved, timeout=30)
        C.wait_for("the file to move", lambda: os.path.exists(os.path.join(moved, name))
                   and not os.path.exists(os.path.join(data, name)), timeout=30)
        t = C.wait_for("it to seed from there",
                       lambda: (x := info()) and x["state"] in ("stalledUP", "uploading") and x)
        client.torrents_recheck(torrent_hashes=h)
        t = C.wait_for("a recheck at the new place to find it complete",
                       lambda: (x := info()) and x["state"] in ("stalledUP", "uploading")
                       and x["progress"] == 1 and x, timeout=60)
        expect(t["content_path"] == os.path.join(moved, name), f"content_path {t['content_path']}")
        step("setLocation", save_path=t["save_path"], content_path=t["content_path"],
             state=t["state"], progress=t["progress"])

        # -- automatic management follows the category's save path
        cat_path = os.path.join(data, "gaps-cat")
        client.torrents_create_category(name="rs-gaps-cat", save_path=cat_path)
        client.torrents_set_category(category="rs-gaps-cat", torrent_hashes=h)
        expect(info()["save_path"].rstrip("/") == moved, "manual mode: a category does not move")
        client.torrents_set_auto_management(enable=True, torrent_hashes=h)
        C.wait_for("automatic management to move it",
                   lambda: info()["save_path"].rstrip("/") == cat_path, timeout=30)
        C.wait_for("the file at the category's path",
                   lambda: os.path.exists(os.path.join(cat_path, name)), timeout=30)
        t = info()
        expect(t["auto_tmm"] is True, "auto_tmm")
        client.torrents_set_auto_management(enable=False, torrent_hashes=h)
        expect(info()["auto_tmm"] is False, "auto_tmm off again")
        step("setAutoManagement", save_path=t["save_path"], auto_tmm=True)

        # -- global rate limits
        lims = {}
        client.transfer_set_upload_limit(limit=1048576)
        client.transfer_set_download_limit(limit=2097152)
        lims["set"] = [client.transfer_upload_limit(), client.transfer_download_limit()]
        expect(lims["set"] == [1048576, 2097152], f"limits read back {lims['set']}")
        ti = client.transfer_info()
        expect((ti["up_rate_limit"], ti["dl_rate_limit"]) == (1048576, 2097152),
               "transfer/info's limits")
        client.transfer_set_upload_limit(limit=0)
        client.transfer_set_download_limit(limit=0)
        lims["unset"] = [client.transfer_upload_limit(), client.transfer_download_limit()]
        expect(lims["unset"] == [0, 0], f"unlimited reads back {lims['unset']}")
        lims["mode"] = client.transfer_speed_limits_mode()
        expect(str(lims["mode"]) == "0", f"speedLimitsMode {lims['mode']!r}")
        step("transfer limits", **lims)

        client.torrents_delete(delete_files=True, torrent_hashes=h)
        client.torrents_remove_categories(categories="rs-gaps-cat")

        content_layouts(client, data)
        file_priorities(client, data)
        renames(client, data)
        ok = True
    except Exception as e:  # noqa: BLE001
        step("FAILED", error=str(e), trace=traceback.format_exc()[-1500:])
    finally:
        files.close()
        for t in trackers.values():
            t.close()
    print(json.dumps({"ok": ok, "seconds": round(time.monotonic() - started, 1),
                      "steps": STEPS}, indent=2))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

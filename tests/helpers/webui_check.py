#!/usr/bin/python3
"""Drives ringseed's web UI (webui/) in a real headless Chromium and checks what it shows against
what the server's qBittorrent Web API v2 answers. Target-agnostic: the same UI runs on ringseed
and on qbittorrent-nox as its alternative UI (tests/helpers/webui_qbt.py), so this passing
against qbittorrent-nox proves the UI speaks the real API.

  webui_check.py --url http://127.0.0.1:PORT --username U --password P --data-dir DIR \\
                 [--screenshot target/webui/screenshot.png] [--timeout S]
  webui_check.py --url http://127.0.0.1:PORT --page-only [--screenshot PNG]

DIR is a directory the server may save into (ringseed: inside its data directory). The script
adds fixtures through the API (qbittorrent-api from PyPI, not written here): a seeding torrent
whose tracker answers `failure reason`, with a category and a tag; a stopped torrent whose name
is HTML; a magnet nobody has. Then, in the browser: log in; every fixture's row shows the API's
state (as `data-state`, with its readable label); the HTML name is text, not markup; sorting;
the state, category, tag and text filters; the details pane's general, files and trackers tabs
(the tracker's message verbatim); adding a .torrent by file upload through the add dialog;
stop and start; screenshots (light and dark); remove with its files through the confirm dialog;
a magnet through the add dialog, selected with the arrow keys and removed with Delete (Escape
cancels); no script error or CSP violation in the console; log out. Prints a JSON summary; exits 1 on the first
failure. Selenium drives Chromium through chromedriver (Debian packages `chromium`,
`chromium-driver`); selenium is pinned in scripts/test.sh.
"""
import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qbt_common as C  # noqa: E402

C.use_pydeps()
import qbittorrentapi  # noqa: E402
from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import NoAlertPresentException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
STOPPED = {"pausedUP", "pausedDL", "stoppedUP", "stoppedDL"}
# The labels webui/app.js gives the states these fixtures reach (a check that the UI maps them).
LABELS = {
    "stalledUP": "Seeding (idle)", "uploading": "Seeding", "queuedUP": "Queued to seed",
    "pausedUP": "Stopped (complete)", "stoppedUP": "Stopped (complete)",
    "metaDL": "Fetching metadata", "checkingUP": "Checking", "checkingResumeData": "Checking resume data",
}
HTML_NAME = '<img src=x onerror=alert(1)> & "q" <b>bold<b>.bin'  # no '/': it is a file name


def added(res):
    """torrents/add succeeded: `Ok.` (Web API < 2.14) or a JSON count (2.14+)."""
    return res == "Ok." or (isinstance(res, dict) and res.get("success_count", 0) >= 1)


class Check:
    def __init__(self, args):
        self.args = args
        self.timeout = args.timeout
        self.steps = []

    def step(self, name, **seen):
        self.steps.append({"step": name, **seen})
        print(f"ok: {name}", file=sys.stderr)

    def wait(self, what, fn, timeout=None):
        return C.wait_for(what, fn, timeout or self.timeout, 0.2)

    # -- the API side ------------------------------------------------------------------------

    def api(self):
        c = qbittorrentapi.Client(host=self.args.url, username=self.args.username,
                                  password=self.args.password, REQUESTS_ARGS={"timeout": (5, 20)})
        c.auth_log_in()
        return c

    def info(self, h):
        ts = self.qbt.torrents_info(torrent_hashes=[h])
        return dict(ts[0]) if len(ts) == 1 else None

    def fixtures(self, tmp):
        d = self.args.data_dir
        self.tracker = C.Tracker("error")
        self.qbt.torrents_create_category(name="webui-cat", save_path=d)
        seed = C.write_torrent(tmp, d, "webui-seed.bin", [("webui-seed.bin", 300_000)], 65536,
                               announce=self.tracker.url)
        html = C.write_torrent(tmp, d, HTML_NAME, [(HTML_NAME, 50_000)], 16384)
        self.upload = C.write_torrent(tmp, d, "webui-upload", [("a.bin", 120_000), ("sub/b.txt", 999)],
                                      32768)
        mag, self.h_mag = C.magnet("webui", "webui magnet")
        self.h_seed = C.torrent_meta(seed)["hash"]
        self.h_html = C.torrent_meta(html)["hash"]
        self.h_up = C.torrent_meta(self.upload)["hash"]
        for path, kw in ((seed, {"category": "webui-cat", "tags": "webui-t1"}),
                         (html, {"is_paused": True, "is_stopped": True})):
            with open(path, "rb") as f:
                r = self.qbt.torrents_add(torrent_files={os.path.basename(path): f.read()},
                                          save_path=d, is_skip_checking=True, **kw)
            assert added(r), f"add {path}: {r!r}"
        r = self.qbt.torrents_add(urls=mag, save_path=d)
        assert added(r), f"add magnet: {r!r}"
        self.wait("the seeding fixture seeding",
                  lambda: (t := self.info(self.h_seed)) and t["state"] in ("stalledUP", "uploading"))
        self.wait("the HTML-named fixture stopped",
                  lambda: (t := self.info(self.h_html)) and t["state"] in STOPPED)
        self.wait("the magnet fetching metadata",
                  lambda: (t := self.info(self.h_mag)) and t["state"] == "metaDL")
        self.step("fixtures added", seed=self.h_seed, html=self.h_html, magnet=self.h_mag)

    # -- the browser side --------------------------------------------------------------------

    def browser(self, profile):
        o = webdriver.ChromeOptions()
        o.binary_location = CHROMIUM
        for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                  "--window-size=1440,900", f"--user-data-dir={profile}", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--disable-default-apps", "--lang=en-US"):
            o.add_argument(a)
        o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=o)
        self.d.set_page_load_timeout(30)

    def js(self, script, *args):
        return self.d.execute_script(script, *args)

    def by_id(self, i):
        return self.d.find_element(By.ID, i)

    def rows(self):
        """[(hash, state, status text, name text)] of the list's rows, in display order."""
        return self.js("""return [...document.querySelectorAll('#torrents-body tr')].map(tr =>
            [tr.dataset.hash, tr.dataset.state, tr.querySelector('td.state').textContent,
             tr.querySelector('td.name').textContent]);""")

    def visible_hashes(self):
        return [r[0] for r in self.rows()]

    def row(self, h):
        return self.d.find_element(By.CSS_SELECTOR, f'#torrents-body tr[data-hash="{h}"]')

    def click_filter(self, attr, value):
        self.d.find_element(By.CSS_SELECTOR, f'.filters button[data-{attr}="{value}"]').click()

    def details_text(self, tab):
        return self.js("const b = document.getElementById('details-body');"
                       "return b.dataset.tab === arguments[0] ? b.textContent : null;", tab)

    def console_errors(self):
        """Script errors and CSP violations the browser logged."""
        return [e for e in self.d.get_log("browser")
                if e.get("level") == "SEVERE" and ("Content Security Policy" in e.get("message", "")
                                                   or "Uncaught" in e.get("message", ""))]

    def page_only(self):
        """Loads the page without logging in: the script ran (it shows the login form), the style
        applied, and the server's headers (CSP) let both in without a single violation."""
        with tempfile.TemporaryDirectory(prefix="rs-webui-") as tmp:
            self.browser(os.path.join(tmp, "chromium"))
            try:
                self.d.get(self.args.url + "/")
                self.wait("the login form", lambda: self.by_id("login-view").is_displayed())
                assert not self.by_id("app-view").is_displayed()
                radius = self.js("return getComputedStyle(document.querySelector('.card')).borderTopLeftRadius")
                assert radius == "10px", f"app.css not applied ({radius})"
                icon = self.js("const i = document.querySelector('.card h1 img'); return i.complete && i.naturalWidth")
                assert icon, "icon.svg not loaded"
                errors = self.console_errors()
                assert not errors, errors
                self.step("the page loads: script, style and icon under the server's CSP")
                if self.args.screenshot:
                    os.makedirs(os.path.dirname(os.path.abspath(self.args.screenshot)), exist_ok=True)
                    assert self.d.save_screenshot(self.args.screenshot)
                    self.step("screenshot", path=self.args.screenshot)
            finally:
                self.d.quit()
        return {"url": self.args.url, "steps": self.steps}

    def run(self):
        if self.args.page_only:
            return self.page_only()
        with tempfile.TemporaryDirectory(prefix="rs-webui-") as tmp:
            self.qbt = self.api()
            self.fixtures(tmp)
            self.browser(os.path.join(tmp, "chromium"))
            try:
                self.ui(tmp)
            finally:
                self.d.quit()
                self.tracker.close()
        return {"url": self.args.url, "steps": self.steps}

    def ui(self, tmp):
        d = self.d
        d.get(self.args.url + "/")
        self.wait("the login form", lambda: self.by_id("login-view").is_displayed())
        self.by_id("login-user").send_keys(self.args.username)
        self.by_id("login-pass").send_keys("wrong-" + self.args.password)
        self.by_id("login-submit").click()
        self.wait("a wrong login refused", lambda: self.by_id("login-error").text)
        assert not self.by_id("app-view").is_displayed()
        self.step("wrong login refused", message=self.by_id("login-error").text)
        self.by_id("login-pass").clear()
        self.by_id("login-pass").send_keys(self.args.password)
        self.by_id("login-submit").click()
        self.wait("the torrent list", lambda: self.by_id("app-view").is_displayed())
        self.step("logged in", version=self.by_id("st-version").text)

        # Every fixture's row shows the API's state, and the state's label.
        def states_match():
            shown = {h: (s, label) for h, s, label, _ in self.rows()}
            for h in (self.h_seed, self.h_html, self.h_mag):
                t = self.info(h)
                if not t or h not in shown or shown[h][0] != t["state"]:
                    return False
                if t["state"] in LABELS and shown[h][1] != LABELS[t["state"]]:
                    return False
            return shown
        shown = self.wait("the rows showing the API's states", states_match)
        self.step("rows show the states", states={h: s for h, s in shown.items()
                                                  if h in (self.h_seed, self.h_html, self.h_mag)})

        # A torrent's name is text, never markup.
        names = {h: n for h, _, _, n in self.rows()}
        assert names[self.h_html] == HTML_NAME, names[self.h_html]
        assert self.js("return document.querySelectorAll('#torrents-body img, #torrents-body b').length") == 0
        try:
            d.switch_to.alert.dismiss()
            raise AssertionError("a torrent name ran script")
        except NoAlertPresentException:
            pass
        self.step("an HTML name is shown as text", shown=names[self.h_html])

        # Sorting: by size both ways (sizes differ), the header says so.
        def sort_by(key):
            d.find_element(By.CSS_SELECTOR, f'#torrents th[data-key="{key}"] button').click()
            return d.find_element(By.CSS_SELECTOR, f'#torrents th[data-key="{key}"]').get_attribute("aria-sort")
        sizes = {h: (self.info(h) or {}).get("size") for h in (self.h_seed, self.h_html, self.h_mag)}
        first = sort_by("size")
        order1 = [h for h in self.visible_hashes() if h in sizes]
        second = sort_by("size")
        order2 = [h for h in self.visible_hashes() if h in sizes]
        assert {first, second} == {"ascending", "descending"}, (first, second)
        asc = order1 if first == "ascending" else order2
        assert [sizes[h] for h in asc] == sorted(sizes.values()), (asc, sizes)
        assert order2 == list(reversed(order1)), (order1, order2)
        sort_by("name")
        self.step("sorted by size both ways, then by name", ascending=asc)

        # Filters: state groups, category, tag, text.
        def only(what, expect):
            self.wait(f"filter {what}", lambda: set(self.visible_hashes()) == expect)
        for key, expect in (("stopped", {self.h_html}), ("seeding", {self.h_seed}),
                            ("downloading", {self.h_mag}), ("errored", set())):
            self.click_filter("filter", key)
            only(key, expect)
        self.click_filter("filter", "all")
        self.click_filter("category", "webui-cat")
        only("category webui-cat", {self.h_seed})
        self.click_filter("category", "*")
        self.click_filter("tag", "webui-t1")
        only("tag webui-t1", {self.h_seed})
        self.click_filter("tag", "*")
        self.by_id("search").send_keys("magnet")
        only("search 'magnet'", {self.h_mag})
        self.by_id("search").clear()
        self.by_id("search").send_keys("\u001b")  # Escape clears the search
        self.wait("all rows back", lambda: {self.h_seed, self.h_html, self.h_mag} <= set(self.visible_hashes()))
        self.step("filters: state, category, tag, search")

        # Details of the seeding fixture.
        self.row(self.h_seed).click()
        props = self.qbt.torrents_properties(torrent_hash=self.h_seed)
        self.wait("general details", lambda: (t := self.details_text("general")) and props["save_path"] in t
                  and "webui-seed.bin" in t)
        d.find_element(By.CSS_SELECTOR, '#details [data-tab="files"]').click()
        self.wait("files tab", lambda: self.js(
            "const b = document.getElementById('details-body'); return b.dataset.tab === 'files' && "
            "b.querySelectorAll('tbody tr').length") == len(self.qbt.torrents_files(torrent_hash=self.h_seed)))
        self.wait("the tracker's failure reason in the API",
                  lambda: any(t["msg"] == C.Tracker.FAILURE for t in self.qbt.torrents_trackers(torrent_hash=self.h_seed)))
        d.find_element(By.CSS_SELECTOR, '#details [data-tab="trackers"]').click()
        self.wait("trackers tab with the message",
                  lambda: (t := self.details_text("trackers")) and C.Tracker.FAILURE in t
                  and self.tracker.url in t and "Not working" in t)
        d.find_element(By.CSS_SELECTOR, '#details [data-tab="peers"]').click()
        self.wait("peers tab", lambda: self.details_text("peers") is not None)
        d.find_element(By.CSS_SELECTOR, '#details [data-tab="general"]').click()
        self.step("details: general, files, trackers (message verbatim), peers")

        # Add a .torrent by file upload through the dialog.
        self.by_id("btn-add").click()
        self.wait("the add dialog", lambda: self.by_id("add-dialog").is_displayed())
        self.by_id("add-files").send_keys(self.upload)
        self.by_id("add-savepath").send_keys(self.args.data_dir)
        Select(self.by_id("add-category")).select_by_value("webui-cat")
        self.by_id("add-tags").send_keys("webui-up")
        self.by_id("add-skip").click()
        self.by_id("add-submit").click()
        self.wait("the add dialog closed", lambda: not self.by_id("add-dialog").is_displayed())
        t = self.wait("the upload in the API", lambda: (t := self.info(self.h_up)) and t["state"] in ("stalledUP", "uploading") and t)
        assert t["category"] == "webui-cat" and "webui-up" in t["tags"], t
        self.wait("the upload's row seeding", lambda: any(
            h == self.h_up and s in ("stalledUP", "uploading") and label.startswith("Seeding")
            for h, s, label, _ in self.rows()))
        self.step("added by file upload", hash=self.h_up, state=t["state"], category=t["category"])

        # Stop and start it from the toolbar.
        self.row(self.h_up).click()
        self.by_id("btn-stop").click()
        self.wait("stopped in the API", lambda: (self.info(self.h_up) or {}).get("state") in STOPPED)
        self.wait("stopped in the list", lambda: any(h == self.h_up and s in STOPPED for h, s, _, _ in self.rows()))
        self.by_id("btn-start").click()
        self.wait("started in the API", lambda: (self.info(self.h_up) or {}).get("state") in ("stalledUP", "uploading"))
        self.wait("started in the list", lambda: any(h == self.h_up and s in ("stalledUP", "uploading") for h, s, _, _ in self.rows()))
        self.step("stop and start from the toolbar")

        # The screenshot: the list, the seeding fixture selected, its general details.
        self.row(self.h_seed).click()
        self.wait("general details", lambda: self.details_text("general") and props["save_path"] in self.details_text("general"))
        if self.args.screenshot:
            os.makedirs(os.path.dirname(os.path.abspath(self.args.screenshot)), exist_ok=True)
            assert d.save_screenshot(self.args.screenshot), "screenshot not saved"
            # The same in the dark scheme (prefers-color-scheme, emulated through DevTools).
            dark = os.path.splitext(self.args.screenshot)[0] + "-dark.png"
            light_bg = self.js("return getComputedStyle(document.body).backgroundColor")
            d.execute_cdp_cmd("Emulation.setEmulatedMedia",
                              {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
            bg = self.js("return getComputedStyle(document.body).backgroundColor")
            assert d.save_screenshot(dark), "dark screenshot not saved"
            d.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
            assert bg != light_bg, f"the dark scheme did not change the background ({bg})"
            self.step("screenshots", light=self.args.screenshot, dark=dark, dark_background=bg)

        # Remove the upload with its files through the confirm dialog.
        content = os.path.join(self.args.data_dir, "webui-upload")
        assert os.path.isdir(content)
        self.row(self.h_up).click()
        self.by_id("btn-remove").click()
        self.wait("the remove dialog", lambda: self.by_id("remove-dialog").is_displayed())
        assert "webui-upload" in self.by_id("remove-text").text
        self.by_id("remove-files").click()
        self.by_id("remove-submit").click()
        self.wait("gone from the API", lambda: self.info(self.h_up) is None)
        self.wait("gone from the list", lambda: self.h_up not in self.visible_hashes())
        self.wait("its files deleted", lambda: not os.path.exists(content))
        self.step("removed with its files")

        # A magnet through the dialog; then the keyboard: select it with the arrows, Delete asks,
        # Escape cancels, Delete again and confirm removes it.
        ui_mag, h_ui_mag = C.magnet("webui-dialog", "webui dialog magnet")
        self.by_id("btn-add").click()
        self.wait("the add dialog", lambda: self.by_id("add-dialog").is_displayed())
        self.by_id("add-urls").send_keys(ui_mag)
        self.by_id("add-savepath").send_keys(self.args.data_dir)
        self.by_id("add-submit").click()
        self.wait("the add dialog closed", lambda: not self.by_id("add-dialog").is_displayed())
        self.wait("the dialog's magnet in the API", lambda: (self.info(h_ui_mag) or {}).get("state") == "metaDL")
        self.wait("the dialog's magnet in the list", lambda: any(
            h == h_ui_mag and label == "Fetching metadata" for h, _, label, _ in self.rows()))
        self.by_id("search").send_keys("dialog")
        self.wait("only it listed", lambda: self.visible_hashes() == [h_ui_mag])
        self.by_id("torrents").click()
        self.js("document.activeElement.blur()")
        body = d.find_element(By.TAG_NAME, "body")
        body.send_keys(Keys.ESCAPE)  # no selection
        body.send_keys(Keys.ARROW_DOWN)
        self.wait("selected by the arrow key", lambda: self.js(
            "return [...document.querySelectorAll('#torrents-body tr[aria-selected=true]')].map(r => r.dataset.hash)") == [h_ui_mag])
        body.send_keys(Keys.DELETE)
        self.wait("the remove dialog by Delete", lambda: self.by_id("remove-dialog").is_displayed())
        d.switch_to.active_element.send_keys(Keys.ESCAPE)
        self.wait("the remove dialog cancelled", lambda: not self.by_id("remove-dialog").is_displayed())
        time.sleep(0.5)
        assert self.info(h_ui_mag) is not None, "Escape removed the torrent"
        body.send_keys(Keys.DELETE)
        self.wait("the remove dialog again", lambda: self.by_id("remove-dialog").is_displayed())
        self.by_id("remove-submit").click()
        self.wait("the magnet gone from the API", lambda: self.info(h_ui_mag) is None)
        self.by_id("search").clear()
        self.by_id("search").send_keys(Keys.ESCAPE)
        self.wait("the list back", lambda: self.h_mag in self.visible_hashes())
        self.step("magnet added through the dialog; keyboard select, Delete, Escape, remove", hash=h_ui_mag)

        # Status bar, console.
        status = self.by_id("st-dl").text + " " + self.by_id("st-ul").text
        assert "/s" in status, status
        errors = self.console_errors()
        assert not errors, errors
        self.step("status bar and console clean", status=status)

        self.by_id("btn-logout").click()
        self.wait("the login form after logout", lambda: self.by_id("login-view").is_displayed())
        self.step("logged out")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True)
    p.add_argument("--username", default="admin")
    p.add_argument("--password", default="")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--page-only", action="store_true",
                   help="only load the page (no login): script and style under the server's CSP")
    p.add_argument("--screenshot", default=None)
    p.add_argument("--timeout", type=float, default=30.0)
    args = p.parse_args(argv)
    if not args.page_only and not (args.password and args.data_dir):
        p.error("--password and --data-dir are required (unless --page-only)")
    args.data_dir = args.data_dir and os.path.abspath(args.data_dir)
    t0 = time.monotonic()
    summary = Check(args).run()
    summary["seconds"] = round(time.monotonic() - t0, 1)
    print(C.dump_json(summary))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except AssertionError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)

#!/usr/bin/python3
"""Runs tests/helpers/webui_check.py against a private qbittorrent-nox (Debian package) serving
ringseed's web UI (webui/) as its alternative Web UI: proof that the page speaks the real
qBittorrent Web API v2, not just ringseed's rendition of it.

  webui_qbt.py [--screenshot target/webui/qbittorrent-nox.png] [--keep-log DIR]

qBittorrent serves an alternative UI from `WebUI\\RootFolder`: `/` is `<root>/private/index.html`
with a session and `<root>/public/index.html` without one (a private path that does not exist
falls back to the public one), other paths likewise (`/webui/app.js` is
`<root>/public/webui/app.js`). The page decides itself whether to show the login form, so
every file goes under public/.
"""
import argparse
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qbt_common as C  # noqa: E402
import webui_check  # noqa: E402

ASSETS = os.path.join(C.REPO, "webui")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--screenshot", default=os.path.join(C.REPO, "target", "webui", "qbittorrent-nox.png"))
    p.add_argument("--timeout", type=float, default=30.0)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rs-webui-qbt-") as tmp:
        root = os.path.join(tmp, "ui")
        public = os.path.join(root, "public")
        os.makedirs(os.path.join(public, "webui"))
        for name in sorted(os.listdir(ASSETS)):
            dest = os.path.join(public, "index.html" if name == "index.html" else os.path.join("webui", name))
            shutil.copyfile(os.path.join(ASSETS, name), dest)
        data = os.path.join(tmp, "data")
        os.makedirs(data)
        qbt = C.Qbt(os.path.join(tmp, "profile"), extra_prefs=(
            "WebUI\\AlternativeUIEnabled=true\n"
            f"WebUI\\RootFolder={root}\n"))
        try:
            print(f"qbittorrent-nox {qbt.version()} at {qbt.url}, UI from {root}", file=sys.stderr)
            return webui_check.main(["--url", qbt.url, "--username", qbt.username,
                                     "--password", qbt.password, "--data-dir", data,
                                     "--screenshot", args.screenshot,
                                     "--timeout", str(args.timeout)])
        except BaseException:
            print(qbt.log(), file=sys.stderr)
            raise
        finally:
            qbt.close()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except AssertionError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)

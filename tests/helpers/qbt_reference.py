#!/usr/bin/python3
"""Runs the qBittorrent Web API reference scripts against a fresh qbittorrent-nox (Debian
package) on 127.0.0.1: qbt_flow.py (the seedbox tools' flow through the PyPI client
`qbittorrent-api`) and then qbt_dump.py (every endpoint's JSON and shape, the bad inputs, the
login flood). Writes OUT_DIR/flow.json, OUT_DIR/dump.json and OUT_DIR/qbittorrent.log; exits 1
if either script failed. docs/qbittorrent-api.md is written from these files.

  qbt_reference.py [OUT_DIR]        (default target/qbt-reference)
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qbt_common as C  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    out_dir = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                              os.path.join(C.REPO, "target", "qbt-reference"))
    os.makedirs(out_dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="qbt-reference-")
    started = time.monotonic()
    qbt = C.Qbt(os.path.join(work, "profile"))
    tracker = C.Tracker("ok")
    rc = 1
    try:
        flow_data = os.path.join(work, "flow-data")
        os.makedirs(flow_data)
        torrent = C.write_torrent(work, flow_data, "rs-flow.bin",
                                  [("rs-flow.bin", 2 * 1048576 + 777)], 262144,
                                  announce=tracker.url)
        magnet, _ = C.magnet("flow", "rs-flow-magnet", [tracker.url])
        common = ["--url", qbt.url, "--username", qbt.username, "--password", qbt.password]
        flow = subprocess.run(
            [sys.executable, os.path.join(HERE, "qbt_flow.py"), *common, "--torrent", torrent,
             "--magnet", magnet, "--data-dir", flow_data],
            capture_output=True, text=True, timeout=300)
        sys.stderr.write(flow.stderr)
        with open(os.path.join(out_dir, "flow.json"), "w") as f:
            f.write(flow.stdout)
        dump = subprocess.run(
            [sys.executable, os.path.join(HERE, "qbt_dump.py"), "dump", *common,
             "--data-dir", os.path.join(work, "dump-data"),
             "--out", os.path.join(out_dir, "dump.json")],
            capture_output=True, text=True, timeout=300)
        sys.stderr.write(dump.stderr)
        print(json.dumps({
            "qbittorrent": qbt.version(),
            "flow": "passed" if flow.returncode == 0 else f"FAILED ({flow.returncode})",
            "dump": "passed" if dump.returncode == 0 else f"FAILED ({dump.returncode})",
            "out_dir": out_dir,
            "seconds": round(time.monotonic() - started, 1),
        }, indent=2))
        if flow.returncode != 0:
            print(flow.stdout[-3000:], file=sys.stderr)
        rc = 0 if flow.returncode == 0 and dump.returncode == 0 else 1
    finally:
        tracker.close()
        qbt.close()
        shutil.copy(qbt.log_path, os.path.join(out_dir, "qbittorrent.log"))
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(rc)


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Checks ringseed's qBittorrent Web API against the real thing (issue 14), for tests/qbt_api.rs:
starts a fresh qbittorrent-nox (as qbt_reference.py does), runs qbt_flow.py (qbittorrent-api from
PyPI) and qbt_gaps.py against it, then dumps it with qbt_dump.py while the same flow drives the ringseed node at
URL in both dialects; then
dumps ringseed on the same fixtures and compares the two dumps' shapes against the allow-list
(qbt_allow.txt). Writes OUT/flow.json, OUT/flow-qbittorrent.json, OUT/gaps.json,
OUT/gaps-qbittorrent.json, OUT/reference-dump.json, OUT/ringseed-dump.json,
OUT/compare.json; prints a JSON summary; exits 1 if anything failed.

  qbt_ringseed.py --url http://127.0.0.1:PORT --password P --data-root DIR --out OUT
                  [--organisation]

DIR is the node's data root (`torrents.data_dir`): the fixtures are written under it. Without
--organisation (ringseed without categories and tags yet) the flow and the dump skip them.
"""
import argparse
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


def run(args, what, timeout=300):
    r = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        sys.stderr.write(f"--- {what} failed ({r.returncode}):\n{r.stdout[-3000:]}\n"
                         f"{r.stderr[-3000:]}\n")
    return r


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True)
    p.add_argument("--username", default="admin")
    p.add_argument("--password", required=True)
    p.add_argument("--data-root", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--organisation", action="store_true")
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    started = time.monotonic()
    work = tempfile.mkdtemp(prefix="qbt-ringseed-")
    summary = {"ok": False}
    qbt = None
    ref = None
    tracker = C.Tracker("ok")
    try:
        qbt = C.Qbt(os.path.join(work, "profile"))
        summary["reference"] = qbt.version()
        # The same flow passes against the real thing first (before the dump, whose last step,
        # the login flood, bans this address there).
        nox_data = os.path.join(work, "nox-flow-data")
        os.makedirs(nox_data, exist_ok=True)
        nox_torrent = C.write_torrent(work, nox_data, "rs-flow.bin",
                                      [("rs-flow.bin", 2 * 1048576 + 777)], 262144,
                                      announce=tracker.url)
        nox_magnet, _ = C.magnet("flow", "rs-flow-magnet", [tracker.url])
        nox_flow = run([os.path.join(HERE, "qbt_flow.py"), "--url", qbt.url,
                        "--username", qbt.username, "--password", qbt.password,
                        "--torrent", nox_torrent, "--magnet", nox_magnet,
                        "--data-dir", nox_data], "qbt_flow.py against qbittorrent-nox")
        with open(os.path.join(a.out, "flow-qbittorrent.json"), "w") as f:
            f.write(nox_flow.stdout)
        summary["flow_qbittorrent"] = "passed" if nox_flow.returncode == 0 else "FAILED"
        # the calls beyond the flow (qbt_gaps.py), against the real thing too
        nox_gaps = run([os.path.join(HERE, "qbt_gaps.py"), "--url", qbt.url,
                        "--username", qbt.username, "--password", qbt.password,
                        "--data-dir", os.path.join(work, "nox-gaps-data")],
                       "qbt_gaps.py against qbittorrent-nox")
        with open(os.path.join(a.out, "gaps-qbittorrent.json"), "w") as f:
            f.write(nox_gaps.stdout)
        summary["gaps_qbittorrent"] = "passed" if nox_gaps.returncode == 0 else "FAILED"
        # the reference, dumped in the background while the flow drives ringseed
        ref_out = os.path.join(a.out, "reference-dump.json")
        ref = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "qbt_dump.py"), "dump", "--url", qbt.url,
             "--username", qbt.username, "--password", qbt.password,
             "--data-dir", os.path.join(work, "ref-data"), "--out", ref_out],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        common = ["--url", a.url, "--username", a.username, "--password", a.password]
        org = [] if a.organisation else ["--no-organisation"]
        flow_data = os.path.join(a.data_root, "flow-data")
        os.makedirs(flow_data, exist_ok=True)
        torrent = C.write_torrent(work, flow_data, "rs-flow.bin",
                                  [("rs-flow.bin", 2 * 1048576 + 777)], 262144,
                                  announce=tracker.url)
        magnet, _ = C.magnet("flow", "rs-flow-magnet", [tracker.url])
        flow = run([os.path.join(HERE, "qbt_flow.py"), *common, "--torrent", torrent,
                    "--magnet", magnet, "--data-dir", flow_data, "--both-dialects", *org],
                   "qbt_flow.py against ringseed")
        with open(os.path.join(a.out, "flow.json"), "w") as f:
            f.write(flow.stdout)
        summary["flow"] = "passed" if flow.returncode == 0 else "FAILED"
        gaps = run([os.path.join(HERE, "qbt_gaps.py"), *common,
                    "--data-dir", os.path.join(a.data_root, "gaps-data")],
                   "qbt_gaps.py against ringseed")
        with open(os.path.join(a.out, "gaps.json"), "w") as f:
            f.write(gaps.stdout)
        summary["gaps"] = "passed" if gaps.returncode == 0 else "FAILED"

        rs_out = os.path.join(a.out, "ringseed-dump.json")
        dump = run([os.path.join(HERE, "qbt_dump.py"), "dump", *common,
                    "--data-dir", os.path.join(a.data_root, "dump-data"), "--out", rs_out,
                    "--no-magnet-trackers", *org], "qbt_dump.py dump against ringseed")
        summary["ringseed_dump"] = "passed" if dump.returncode == 0 else "FAILED"

        out, err = ref.communicate(timeout=300)
        if ref.returncode != 0:
            sys.stderr.write(f"--- reference dump failed:\n{out[-2000:]}\n{err[-3000:]}\n")
        summary["reference_dump"] = "passed" if ref.returncode == 0 else "FAILED"
        ref = None

        if dump.returncode == 0 and summary["reference_dump"] == "passed":
            cmp = run([os.path.join(HERE, "qbt_dump.py"), "compare", ref_out, rs_out,
                       "--allow", os.path.join(HERE, "qbt_allow.txt")], "qbt_dump.py compare")
            with open(os.path.join(a.out, "compare.json"), "w") as f:
                f.write(cmp.stdout)
            result = json.loads(cmp.stdout)
            summary["compare"] = {"differences": result["differences"],
                                  "allowed": len(result["allowed"]),
                                  "allow_rules_unused": result["allow_rules_unused"]}
            summary["ok"] = (flow.returncode == 0 and nox_flow.returncode == 0
                             and gaps.returncode == 0 and nox_gaps.returncode == 0
                             and cmp.returncode == 0)
    finally:
        if ref is not None:
            ref.kill()
            ref.wait()
        tracker.close()
        if qbt is not None:
            qbt.close()
            shutil.copy(qbt.log_path, os.path.join(a.out, "qbittorrent.log"))
        shutil.rmtree(work, ignore_errors=True)
    summary["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(summary, indent=2))
    sys.exit(0 if summary["ok"] else 1)


if __name__ == "__main__":
    main()

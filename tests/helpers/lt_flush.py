"""Waiting for libtorrent's writes to reach the files before a helper leaves with os._exit.

A piece can pass its hash check from libtorrent's store buffer before its write has reached the
file; a helper that then leaves with os._exit (python3-libtorrent 2.0.8 has crashed in the
session's teardown) loses that write, seen as a downloaded file that differs from the payload.
"""

import time

import libtorrent as lt


def wait_flushed(ses, h, secs=30):
    """Asks `h`'s torrent to flush its writes and waits (at most `secs`) until it has."""
    h.flush_cache()
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        ses.wait_for_alert(100)
        if any(isinstance(a, lt.cache_flushed_alert) for a in ses.pop_alerts()):
            return True
    return False

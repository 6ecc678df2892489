"""Runs a command and writes its peak resident set size (KiB) to a file.

    python3 peak_rss.py OUT_FILE CMD ARGS...

The command inherits stdin, stdout and stderr; this exits with its status (128 + the signal when
a signal killed it). The peak is the kernel's count for the one child (getrusage of
RUSAGE_CHILDREN after waiting for it), so it covers the whole run, however short. The child's
address space is capped at 4 GiB: a regression that allocates in proportion to a torrent's
claims (the v2 torrent of issue 13 reached 21 GB) fails the test instead of the machine.
"""

import resource
import subprocess
import sys

ADDRESS_SPACE = 4 << 30


def cap():
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def main():
    out, cmd = sys.argv[1], sys.argv[2:]
    status = subprocess.run(cmd, preexec_fn=cap).returncode
    with open(out, "w") as f:
        f.write("%d\n" % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    sys.exit(status if status >= 0 else 128 - status)


main()

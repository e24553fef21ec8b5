"""Run a benchmark child process and read its own peak RSS.

Linux keeps a process's peak RSS across exec, so a child forked straight from a (large)
benchmark process would report the parent's memory. A small launcher forks the real child
instead and reports that grandchild's own peak (floor: the launcher's ~10 MB).
"""

from __future__ import annotations

import subprocess
import sys
import time

LAUNCHER = r"""
import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
sys.stderr.write(f"\nMAXRSS_KB={usage.ru_maxrss}\n")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_child(argv: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """Run argv; return (seconds, peak RSS in MB of it and its children, stdout)."""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-S", "-c", LAUNCHER, *argv], env=env, capture_output=True
    )
    seconds = time.perf_counter() - started
    err = proc.stderr.decode()
    if proc.returncode != 0:
        raise SystemExit(f"{argv[:3]} failed: {err[-3000:]}")
    rss_kb = int(err.rsplit("MAXRSS_KB=", 1)[1].split()[0])
    return seconds, rss_kb // 1024, proc.stdout.decode()

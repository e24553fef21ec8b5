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


def _descendants_cpu_seconds(root: int) -> float:
    """User+system CPU seconds of every live descendant process of `root` (Linux /proc)."""
    import os

    children: dict[int, list[int]] = {}
    ticks: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
        ticks[int(entry)] = int(fields[11]) + int(fields[12])  # utime + stime
    total, todo = 0, list(children.get(root, []))
    while todo:
        pid = todo.pop()
        total += ticks.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total / os.sysconf("SC_CLK_TCK")


def wait_for_quiet_children(max_seconds: float = 120.0, idle_cpu: float = 0.05) -> float:
    """Wait until this process's children (the Prefect test server) use less than
    `idle_cpu` CPU-seconds a second: the events of one flow variant are still being
    stored after it ends and would slow the next one. Returns the seconds waited."""
    import os

    started = time.monotonic()
    last = _descendants_cpu_seconds(os.getpid())
    while time.monotonic() - started < max_seconds:
        time.sleep(1.0)
        now = _descendants_cpu_seconds(os.getpid())
        if now - last < idle_cpu:
            break
        last = now
    return time.monotonic() - started

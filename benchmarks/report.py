"""The side-by-side table the file benchmarks print (one row per tool, plus ratio rows)."""

from __future__ import annotations

from collections.abc import Sequence


def print_table(rows: Sequence[tuple], unit: str = "files", rate: str = "files/s") -> None:
    """Rows are (workload, tool, count, MB, seconds, peak RSS MB) or (workload, what, ratio)."""
    w = max([8] + [len(str(r[0])) for r in rows])
    t = max([24] + [len(str(r[1])) for r in rows])
    head = ("workload", "tool", unit, "MB", "s", rate, "MB/s", "RSS MB")
    print(
        f"\n{head[0]:<{w}} {head[1]:<{t}} "
        + "{:>7} {:>8} {:>8} {:>9} {:>8} {:>7}".format(*head[2:])
    )
    for row in rows:
        if len(row) == 3:
            print(f"{row[0]:<{w}} {row[1]:<{t}} {row[2]:>7.2f}x")
            continue
        label, tool, count, mb, seconds, peak = row
        print(
            f"{label:<{w}} {tool:<{t}} {count:>7} {mb:>8.1f} {seconds:>8.2f} "
            f"{count / seconds:>9.1f} {mb / seconds:>8.1f} {peak:>7.0f}"
        )

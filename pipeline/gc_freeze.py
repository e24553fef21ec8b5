"""Keep Python's cyclic garbage collector off the long-lived heap while a run lands items.

A flow-run process holds hundreds of thousands of long-lived objects (Prefect, pydantic,
SQLAlchemy, the blocks); every full collection walks them all, and landing 10,000 small
files allocates enough to trigger many (~10% of that run here, `benchmarks/
bench_small_files.py`). `gc.freeze()` moves the objects alive now to a permanent generation
that collections skip; `gc.unfreeze()` at the end hands them back, so an object that
meanwhile dies in a reference cycle is still collected, only after the run.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_depth = 0  # runs in this process inside the context (flows may run side by side)


@contextmanager
def long_lived_heap_frozen() -> Iterator[None]:
    """Freeze the heap for the duration; the last run to leave unfreezes it."""
    global _depth
    with _lock:
        _depth += 1
        if _depth == 1:
            gc.freeze()
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                gc.unfreeze()

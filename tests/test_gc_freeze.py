"""pipeline/gc_freeze.py: the heap is frozen while any run is inside, and handed back after."""

from __future__ import annotations

import gc
import threading
import weakref

from pipeline.gc_freeze import long_lived_heap_frozen


def test_frozen_inside_and_unfrozen_after_even_on_error() -> None:
    assert gc.get_freeze_count() == 0
    try:
        with long_lived_heap_frozen():
            assert gc.get_freeze_count() > 0
            raise RuntimeError("a failing run")
    except RuntimeError:
        pass
    assert gc.get_freeze_count() == 0


def test_side_by_side_runs_unfreeze_when_the_last_leaves() -> None:
    inside, release = threading.Event(), threading.Event()
    counts: list[int] = []

    def other_run() -> None:
        with long_lived_heap_frozen():
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=other_run)
    with long_lived_heap_frozen():
        thread.start()
        assert inside.wait(10)
    counts.append(gc.get_freeze_count())  # the other run is still inside
    release.set()
    thread.join(10)
    assert counts[0] > 0 and gc.get_freeze_count() == 0


def test_a_cycle_that_dies_during_the_run_is_collected_after() -> None:
    class Node:
        pass

    node = Node()
    node.self = node  # a reference cycle, alive when the heap is frozen
    ref = weakref.ref(node)
    with long_lived_heap_frozen():
        del node
        gc.collect()
        assert ref() is not None  # frozen: skipped by collections during the run
    gc.collect()
    assert ref() is None

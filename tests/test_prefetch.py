"""wsol.utils.prefetch: same items in the same order, errors at the item that raised, and the
producer stops when the consumer does."""

from __future__ import annotations

import threading
import time

import pytest

from wsol.utils.prefetch import prefetch


def test_items_and_order_are_those_of_the_iterable():
    assert list(prefetch(iter(range(100)), depth=3)) == list(range(100))
    assert list(prefetch([])) == []


def test_runs_ahead_in_another_thread():
    seen = []

    def produce():
        for i in range(3):
            seen.append(threading.current_thread().name)
            yield i

    it = prefetch(produce(), depth=1)
    assert next(it) == 0
    deadline = time.monotonic() + 5
    while len(seen) < 2 and time.monotonic() < deadline:  # item 1 is made before it is asked
        time.sleep(0.01)
    assert len(seen) >= 2 and set(seen) == {"wsol-prefetch"}
    assert list(it) == [1, 2]


def test_an_error_reaches_the_consumer_at_its_item():
    def produce():
        yield 1
        raise ValueError("bad image 2")

    it = prefetch(produce())
    assert next(it) == 1
    with pytest.raises(ValueError, match="bad image 2"):
        next(it)


def test_stopping_early_stops_the_producer():
    made = []

    def produce():
        for i in range(10_000):
            made.append(i)
            yield i

    it = prefetch(produce(), depth=2)
    assert next(it) == 0
    it.close()
    count = len(made)
    time.sleep(0.3)
    assert len(made) == count < 10_000
    with pytest.raises(ValueError, match="depth"):
        next(prefetch([1], depth=0))

"""Iterate in a background thread, a bounded number of items ahead of the consumer.

``DataLoader(num_workers=0)`` decodes every batch in the consumer's thread, between forward
passes. On a machine with few cores, loader worker processes compete with the forward pass's
own threads (and take seconds to start); one thread that prepares the next batch while the
forward pass runs (PIL's decode and resize and NumPy release the GIL) fills the cores that the
forward pass leaves idle without either cost. The items and their order are those of the
wrapped iterable; an exception raised while producing an item is raised in the consumer when
it reaches that item.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_DONE = object()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def prefetch(iterable: Iterable[T], depth: int = 1) -> Iterator[T]:
    """Yield the items of ``iterable``, produced by a daemon thread up to ``depth`` ahead.

    Stopping early (``break``, an exception in the consumer, ``close()``) stops the producer
    after the item it is working on.
    """
    if depth < 1:
        raise ValueError(f"prefetch depth must be >= 1, got {depth}")
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in iterable:
                while not stop.is_set():
                    try:
                        items.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put(_DONE)
        except BaseException as exc:  # noqa: BLE001  (handed to the consumer)
            items.put(_Failure(exc))

    thread = threading.Thread(target=produce, name="wsol-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                items.get_nowait()
            except queue.Empty:
                pass
            thread.join(timeout=0.05)

"""Inference streams: one batch split across CPU cores, one single-threaded forward per core.

On a CPU, torch parallelizes each operator over its intra-op (OpenMP) threads, and every
operator ends at a barrier. A forward pass of a small network is hundreds of short operators,
so when anything else needs a core (decoding the next batch, the box evaluator, the writer of
``wsol localize``) or the host takes a virtual core away, the other threads wait at the next
barrier. Running ``K`` chunks of the batch concurrently, each on a thread whose intra-op pool
is one thread, has no barriers between cores: a preempted stream delays only itself.

Numbers: in eval mode (BatchNorm on its running statistics) a forward pass computes each image
independently of the others in its batch, so the chunk an image lands in changes nothing; each
chunk runs on one intra-op thread, so streams give exactly the numbers of a one-thread run, on
any number of cores. ``tests/test_streams.py`` checks both for every backbone and method. With
bf16 autocast + channels_last (the default where the CPU has bf16) torch's multi-threaded call
gives those same numbers too; in float32 + NCHW torch's 1x1 convolutions split their reduction
by thread count, so a call on T threads can differ from one on 1 thread in the last bits
(e.g. 1e-9 on a feature map), and streams give the one-thread numbers.

Only methods whose forward pass keeps no state on the module may run in streams
(``WSOLMethod.stream_safe``; SPG's taps record a tensor per forward, gradient maps run a
backward pass); the others run as one call.

``streams`` values (``eval.streams``, :class:`wsol.Localizer`, :func:`wsol.engine.evaluate`):
``auto`` (the default): on a CPU as many streams as the caller has intra-op threads, on other
devices one; an integer ``K >= 1``: ``K`` streams on a CPU (1 = one call, torch's own
threading).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_STOP = object()


def check_streams(value: object, key: str) -> None:
    """Raise ValueError naming ``key`` unless ``value`` is ``auto`` or an integer >= 1."""
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return
    raise ValueError(f"{key} must be auto or an integer >= 1, got {value!r}")


def resolve_streams(value: int | str, device: Any) -> int:
    """The number of streams ``value`` means on ``device`` (a torch device or its name)."""
    import torch

    check_streams(value, "streams")
    if torch.device(device).type != "cpu":
        return 1
    if value == "auto":
        return max(1, torch.get_num_threads())
    return int(value)


class ForwardStreams:
    """``count`` worker threads, each with a one-thread intra-op pool, that run chunks of work
    concurrently (:meth:`map`). Use as a context manager, or call :meth:`close`.

    The workers are started and set to one intra-op thread before the constructor returns; the
    caller's own thread count (and the default that threads started later inherit) is then
    restored, so nothing outside the workers changes.
    """

    def __init__(self, count: int) -> None:
        import torch

        if count < 1:
            raise ValueError(f"streams must be >= 1, got {count}")
        self.count = int(count)
        self._queues: list[queue.SimpleQueue] = []
        self._threads: list[threading.Thread] = []
        if self.count == 1:
            return  # one call in the caller's thread: nothing to start
        caller_threads = torch.get_num_threads()
        ready = threading.Barrier(self.count + 1)
        try:
            for k in range(self.count):
                jobs: queue.SimpleQueue = queue.SimpleQueue()
                thread = threading.Thread(target=self._work, args=(jobs, ready), daemon=True,
                                          name=f"wsol-stream-{k}")
                thread.start()
                self._queues.append(jobs)
                self._threads.append(thread)
            ready.wait()
        finally:
            # A worker's set_num_threads(1) also set the default of threads started later.
            torch.set_num_threads(caller_threads)

    @staticmethod
    def _work(jobs: queue.SimpleQueue, ready: threading.Barrier) -> None:
        import torch

        torch.get_num_threads()  # torch's per-thread lazy init, before it could undo the next line
        torch.set_num_threads(1)
        ready.wait()
        while True:
            job = jobs.get()
            if job is _STOP:
                return
            fn, arg, future = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(arg))
            except BaseException as exc:  # noqa: BLE001  (raised in the caller by map)
                future.set_exception(exc)

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """``[fn(item) for item in items]``, item ``k`` on worker ``k % count``; the first
        exception is raised in the caller after every item has finished."""
        if not self._threads:
            return [fn(item) for item in items]
        futures: list[Future] = []
        for k, item in enumerate(items):
            future: Future = Future()
            self._queues[k % self.count].put((fn, item, future))
            futures.append(future)
        errors = [f.exception() for f in futures]
        for error in errors:
            if error is not None:
                raise error
        return [f.result() for f in futures]

    def close(self) -> None:
        """Stop the workers (idempotent)."""
        for jobs in self._queues:
            jobs.put(_STOP)
        for thread in self._threads:
            thread.join()
        self._queues, self._threads = [], []

    def __enter__(self) -> ForwardStreams:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # a forgotten close() must not leave threads blocked forever
        try:
            for jobs in self._queues:
                jobs.put(_STOP)
        except Exception:  # noqa: BLE001  (interpreter shutdown)
            pass

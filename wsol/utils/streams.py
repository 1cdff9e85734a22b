"""Inference streams and chunks: a CPU batch split into small forward calls, run one per core.

Two things slow a batch-32 forward pass on a small CPU:

- cache: one call runs every layer on all 32 images before the next layer, so the activations
  stream through memory; calls of a few images keep them in cache (``chunks.json``, one run of
  ``benchmarks/bench_chunks.py`` on this 2-core VM, bf16 + NHWC: EfficientNet-Lite0 155 img/s
  in calls of 4 over 2 streams vs 75 in one call of 32, ResNet50 44 vs 28). How much this
  gains depends on what else shares the caches: in a later, quieter run (``pipeline.json``)
  one call of 32 was as fast;
- barriers: torch parallelizes each operator over its intra-op (OpenMP) threads and ends it at
  a barrier, so when anything else takes a core (decoding the next batch, the box evaluator,
  the writer of ``wsol localize``, the host of a virtual machine) the other thread waits.
  Streams run chunks concurrently, each on a thread whose intra-op pool is one thread: a
  preempted stream delays only itself.

Numbers. Only the forward pass runs in chunks; the maps (CREAM's EM, the upsampling, the
normalization) are computed afterwards on the whole batch in the caller's thread, as without
streams. In eval mode a forward pass computes each image on its own (BatchNorm on its running
statistics), but a kernel may choose its summation order by batch size and thread count. With
bf16 autocast + channels_last (what ``auto`` precision is on a CPU with native bf16) every
backbone and method gives bit-identical outputs in any chunks on any number of streams, hence
bit-identical maps, logits and classes (``tests/test_streams.py``). In float32 they do not:
the linear head's matrix product and some convolutions sum in another order for other batch
sizes or thread counts (differences around 1e-9; torch's float32 results already depend on the
thread count). So ``auto`` turns streams and chunks on only on a CPU running bf16 autocast; in
float32 a batch runs as one call unless ``streams`` / ``chunk_size`` are set explicitly.

Only methods whose forward pass keeps no state on the module may run in streams
(``WSOLMethod.stream_safe``; SPG's taps record a tensor per forward, gradient maps run a
backward pass, adapted user models are unknown); the others run as one call.

``streams`` (``eval.streams``, :class:`wsol.Localizer`, :func:`wsol.engine.evaluate`): ``auto``
(the default): one stream per intra-op thread of the caller on a CPU in bf16, else one; an
integer ``K >= 1``: ``K`` streams on a CPU (1: the caller's thread, torch's own threading).
``chunk_size`` (``eval.chunk_size``): images per forward call; ``auto``: 4
(:data:`AUTO_CHUNK`) on a CPU in bf16, else the whole batch. A batch of 32 then runs as 8
calls of 4 spread over the streams (a last chunk of one image joins the one before it).
Nothing of this applies off the CPU.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_STOP = object()
_held = threading.local()  # .threads: the caller's count inside ForwardStreams.hold_cores


def check_streams(value: object, key: str) -> None:
    """Raise ValueError naming ``key`` unless ``value`` is ``auto`` or an integer >= 1 (the
    values of ``streams`` and of ``chunk_size``)."""
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return
    raise ValueError(f"{key} must be auto or an integer >= 1, got {value!r}")


check_chunk_size = check_streams  # the same values: auto or an integer >= 1

#: Images per forward call with ``chunk_size: auto`` on a CPU in bf16 (see the module docstring).
AUTO_CHUNK = 4


def _auto_applies(device: Any, amp: object) -> bool:
    """Where ``auto`` turns streams and chunks on: a CPU running bf16 autocast, where they were
    shown to keep every number (see the module docstring)."""
    import torch

    return torch.device(device).type == "cpu" and amp == "bf16"


def resolve_chunk_size(value: int | str, device: Any, amp: object = "bf16") -> int | None:
    """Images per forward call that ``value`` means on ``device`` with the resolved autocast
    ``amp`` (False, ``bf16``, ``fp16``); None: the whole batch, what ``auto`` means except on
    a CPU in bf16 (on a GPU one large call is what keeps it busy)."""
    check_chunk_size(value, "chunk_size")
    if value == "auto":
        return AUTO_CHUNK if _auto_applies(device, amp) else None
    return int(value)


def resolve_streams(value: int | str, device: Any, amp: object = "bf16") -> int:
    """The number of streams ``value`` means on ``device`` (a torch device or its name) with
    the resolved autocast ``amp``: ``auto`` is one per intra-op thread on a CPU in bf16, else
    one; off the CPU always one."""
    import torch

    check_streams(value, "streams")
    if torch.device(device).type != "cpu":
        return 1
    if value == "auto":
        return max(1, caller_threads()) if _auto_applies(device, amp) else 1
    return int(value)


def caller_threads() -> int:
    """The calling thread's intra-op thread count: torch's, or inside
    :meth:`ForwardStreams.hold_cores` the count it had before the block set it to one."""
    import torch

    return getattr(_held, "threads", None) or torch.get_num_threads()


class ForwardStreams:
    """``count`` worker threads, each with a one-thread intra-op pool, that run chunks of work
    concurrently (:meth:`map`); with ``count=1`` the chunks run in the caller's thread, on its
    intra-op threads. Use as a context manager, or call :meth:`close`.

    The workers are started and set to one intra-op thread before the constructor returns; the
    caller's own thread count (and the default that threads started later inherit) is then
    restored, so nothing outside the workers changes.
    """

    def __init__(self, count: int, chunk_size: int | None = None) -> None:
        import torch

        if count < 1:
            raise ValueError(f"streams must be >= 1, got {count}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.count = int(count)
        #: Images per forward call (None: the batch split into ``count`` equal parts).
        self.chunk_size = chunk_size
        # One queue for all workers: a chunk goes to whichever stream is free first, so a stream
        # slowed by other work on its core takes fewer chunks instead of holding up the batch.
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._finalizer: weakref.finalize | None = None
        if self.count == 1:
            return  # one call in the caller's thread: nothing to start
        caller_threads = torch.get_num_threads()
        ready = threading.Barrier(self.count + 1)
        try:
            for k in range(self.count):
                thread = threading.Thread(target=self._work, args=(self._jobs, ready),
                                          daemon=True, name=f"wsol-stream-{k}")
                thread.start()
                self._threads.append(thread)
            ready.wait()
        finally:
            # A worker's set_num_threads(1) also set the default of threads started later.
            torch.set_num_threads(caller_threads)
        # The workers are stopped and joined by close(), when this object is collected, or at
        # interpreter exit (before its teardown): workers still waiting on the queue while the
        # interpreter finalized made the process abort after its work was done ("terminate
        # called without an active exception", seen with Localizers dropped without close()).
        self._finalizer = weakref.finalize(self, _stop_workers, self._jobs,
                                           tuple(self._threads))

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

    @contextlib.contextmanager
    def hold_cores(self) -> Iterator[None]:
        """Run the block with the caller's own torch operations on one intra-op thread, and
        those of threads started in it (the prefetch thread's collation), while the workers
        hold the cores; the count is restored afterwards.

        A loop with a batch in flight computes the previous batch's maps in the caller while
        the streams run the next forward pass. On an intra-op pool of its own, each of those
        small operations ends at a barrier where the pool's other thread spins on a core a
        stream needs (``benchmarks/results/hold_cores.json``: ``wsol localize`` 1.19x, its
        process CPU 9.1 -> 7.5 s; ``evaluate`` and ``Localizer`` within the noise).
        :func:`resolve_streams` still sees the caller's count inside the block
        (:func:`caller_threads`). Nothing changes with ``count=1`` (the chunks run on the
        caller's threads) or inside another such block.
        """
        import torch

        if not self._threads or getattr(_held, "threads", None) is not None:
            yield
            return
        saved = torch.get_num_threads()
        _held.threads = saved
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(saved)
            _held.threads = None

    def submit(self, fn: Callable[[T], R], items: Sequence[T]) -> Pending[R]:
        """Queue ``fn(item)`` for every item, in order, and return at once; the workers take
        the items as they become free. With ``count=1`` nothing runs until
        :meth:`Pending.result`, which then runs them in its thread."""
        if not self._threads:
            return Pending(fn, list(items), None)
        futures: list[Future] = []
        for item in items:
            future: Future = Future()
            self._jobs.put((fn, item, future))
            futures.append(future)
        return Pending(fn, None, futures)

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """``[fn(item) for item in items]`` on the workers; the first exception is raised in
        the caller after every item has finished."""
        return self.submit(fn, items).result()

    def close(self) -> None:
        """Stop the workers and wait for them (idempotent)."""
        if self._finalizer is not None:
            self._finalizer()
        self._threads = []

    def __enter__(self) -> ForwardStreams:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _stop_workers(jobs: queue.SimpleQueue, threads: tuple[threading.Thread, ...]) -> None:
    """Ask every worker to stop after the items queued before, and join them (not the calling
    thread: a collection can run on a worker)."""
    for _ in threads:
        jobs.put(_STOP)
    current = threading.current_thread()
    for thread in threads:
        if thread is not current:
            thread.join()


class Pending(Generic[R]):
    """Work queued by :meth:`ForwardStreams.submit`; :meth:`result` waits for it."""

    def __init__(self, fn: Callable[[Any], R], items: list[Any] | None,
                 futures: list[Future] | None) -> None:
        self._fn, self._items, self._futures = fn, items, futures

    def result(self) -> list[R]:
        """The results in item order; the first exception is raised after every item has
        finished (nothing is left running behind it)."""
        if self._futures is None:
            items, self._items = self._items or [], None
            return [self._fn(item) for item in items]
        errors = [f.exception() for f in self._futures]
        for error in errors:
            if error is not None:
                raise error
        return [f.result() for f in self._futures]

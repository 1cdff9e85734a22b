"""Accumulators whose whole state is a few int64 count tensors, merged by addition.

A split evaluated in pieces (batches, processes) gives the same counts as evaluated at once, so
distributed evaluation is::

    flat = acc.to_tensor()          # one flat int64 tensor
    all_reduce_sum(flat)            # wsol.engine.distributed
    acc.load_tensor(flat)
    acc.compute()

Accumulators with ``num_threads > 1`` (box and mask localization) count in a thread pool:
``update`` checks its input, takes a private copy of what the work needs and returns at once, so
the caller's next forward pass overlaps the counting (OpenCV and NumPy release the GIL). Every
read of the counts (``compute``, ``counts``, ``to_tensor``, ``merge``, ``load_tensor``, ``reset``,
copying) first waits for the pending work; a worker's exception is raised there. Counts are sums
of integers, so they are identical whatever the number of threads or the order of completion.
"""

from __future__ import annotations

import copy
import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from wsol.errors import MetricError  # noqa: F401  (re-exported: wsol.metrics.counts.MetricError)

if TYPE_CHECKING:  # typing.Self is Python >= 3.11
    import torch
    from typing_extensions import Self


class Counts(np.ndarray):
    """An int64 NumPy array of counts. ``.numpy()`` returns it as a plain array, for code
    written when the counts were torch tensors. Counts need no torch: ``wsol evaluate-maps``
    runs without importing it; :meth:`CountAccumulator.to_tensor` makes the tensor."""

    def numpy(self) -> np.ndarray:
        return np.asarray(self)




def default_num_threads() -> int:
    """The default pool size for localization counting: ``min(4, os.cpu_count())``."""
    return max(1, min(4, os.cpu_count() or 1))


def resolve_num_threads(num_threads: int | None) -> int:
    """``None`` -> :func:`default_num_threads`; otherwise an int >= 1 (ValueError if not)."""
    if num_threads is None:
        return default_num_threads()
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
        raise ValueError(f"num_threads must be an integer >= 1 (or None), got {num_threads!r}")
    return num_threads


class CountAccumulator:
    """Base class: subclasses register their counts with :meth:`_add_counts` and describe the
    settings that must agree for two accumulators to merge in :meth:`settings`.

    Args:
        num_threads: 1 counts in the caller's thread; ``n > 1`` hands the work of
            :meth:`_submit` to a pool of ``n`` threads (see the module docstring).
    """

    #: Pending tasks allowed per thread before :meth:`_submit` waits for the oldest one.
    MAX_PENDING_PER_THREAD = 4

    def __init__(self, num_threads: int | None = 1) -> None:
        self._counts: dict[str, Counts] = {}
        self.num_threads = resolve_num_threads(num_threads)
        self._pool: ThreadPoolExecutor | None = None
        self._pending: deque[Future] = deque()

    # The count tensors are reached as attributes (``acc.num_images``) through these two
    # methods, so that reading one from outside waits for the pending work first. Internal
    # writes go through ``self._counts`` and do not wait.
    def __getattr__(self, name: str) -> Any:
        counts = self.__dict__.get("_counts")
        if counts is None or name not in counts:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        self.sync()
        return counts[name]

    def __setattr__(self, name: str, value: Any) -> None:
        counts = self.__dict__.get("_counts")
        if counts is not None and name in counts:
            if value is not counts[name]:  # ``acc.x = v``: copy into the registered array
                np.copyto(counts[name], _as_counts(value))
            return
        object.__setattr__(self, name, value)

    def _submit(self, fn: Callable[..., dict[str, np.ndarray]], *args: Any) -> None:
        """Run ``fn(*args)`` (a pure function of private data returning partial counts by name)
        now or in the pool; its counts are added by :meth:`sync`."""
        if self.num_threads == 1:
            self._absorb(fn(*args))
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.num_threads,
                                            thread_name_prefix=type(self).__name__)
        while self._pending and self._pending[0].done():
            self._absorb(self._pending.popleft().result())
        while len(self._pending) >= self.MAX_PENDING_PER_THREAD * self.num_threads:
            self._absorb(self._pending.popleft().result())  # bound the memory held by the queue
        self._pending.append(self._pool.submit(fn, *args))

    def _absorb(self, partial: dict[str, np.ndarray]) -> None:
        for name, value in partial.items():
            self._counts[name] += _as_counts(value)

    def sync(self) -> None:
        """Wait for the pending work and add its counts (re-raising a worker's exception)."""
        while self._pending:
            self._absorb(self._pending.popleft().result())

    def close(self) -> None:
        """:meth:`sync`, then stop the pool (a later update starts a new one)."""
        self.sync()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __getstate__(self) -> dict[str, Any]:
        self.sync()
        state = self.__dict__.copy()
        state["_pool"] = None
        state["_pending"] = deque()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def _add_counts(self, name: str, *shape: int) -> Counts:
        counts = np.zeros(shape, dtype=np.int64).view(Counts)
        self._counts[name] = counts
        return counts

    def settings(self) -> dict[str, Any]:
        raise NotImplementedError

    def counts(self) -> dict[str, Counts]:
        """The count arrays by name (live views: modify through :meth:`merge` only)."""
        self.sync()
        return dict(self._counts)

    def reset(self) -> None:
        self.sync()
        for counts in self._counts.values():
            counts.fill(0)

    def _check_compatible(self, other: CountAccumulator) -> None:
        if type(other) is not type(self):
            raise TypeError(f"cannot merge {type(other).__name__} into {type(self).__name__}")
        mine, theirs = self.settings(), other.settings()
        if mine.keys() != theirs.keys() or any(
                not _same(mine[k], theirs[k]) for k in mine):
            raise ValueError(f"cannot merge {type(self).__name__}s with different settings:"
                             f" {mine} vs {theirs}")

    def merge(self, other: Self) -> Self:
        """Add ``other``'s counts to this accumulator (in place) and return it."""
        self._check_compatible(other)
        self.sync()
        other.sync()
        for name, counts in self._counts.items():
            counts += other._counts[name]
        return self

    def __add__(self, other: Self) -> Self:
        return copy.deepcopy(self).merge(other)

    def to_tensor(self, device: torch.device | str | None = None) -> torch.Tensor:
        """All counts as one flat int64 tensor (fixed order), e.g. for ``all_reduce``."""
        import torch

        flat = torch.from_numpy(self.to_array())
        return flat if device is None else flat.to(device)

    def to_array(self) -> np.ndarray:
        """All counts as one flat int64 NumPy array (the layout of :meth:`to_tensor`)."""
        self.sync()
        return np.concatenate([c.reshape(-1) for c in self._counts.values()]).view(np.ndarray)

    def load_tensor(self, flat: torch.Tensor | np.ndarray) -> Self:
        """Replace the counts with those in ``flat`` (the layout of :meth:`to_tensor`; a tensor
        on any device or an array)."""
        self.sync()
        size = sum(c.size for c in self._counts.values())
        if flat.ndim != 1 or _numel(flat) != size:
            raise ValueError(f"{type(self).__name__}.load_tensor: expected a flat tensor of"
                             f" {size} counts, got shape {tuple(flat.shape)}")
        values = _as_counts(flat)
        offset = 0
        for counts in self._counts.values():
            n = counts.size
            counts[...] = values[offset:offset + n].reshape(counts.shape)
            offset += n
        return self


def _numel(value: Any) -> int:
    return int(np.prod(value.shape))


def _as_counts(value: Any) -> np.ndarray:
    """An int64 NumPy view or copy of counts given as an array, a tensor (any device) or a
    number."""
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.int64)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return bool(a == b)


def percent(count: np.ndarray | int, total: int) -> Any:
    """``count * 100. / total`` in float64, in the reference's order of operations."""
    return np.asarray(count, dtype=np.int64) * 100.0 / float(total)

"""Accumulators whose whole state is a few int64 count tensors, merged by addition.

A split evaluated in pieces (batches, processes) gives the same counts as evaluated at once, so
distributed evaluation is::

    flat = acc.to_tensor()          # one flat int64 tensor
    all_reduce_sum(flat)            # wsol.engine.distributed
    acc.load_tensor(flat)
    acc.compute()
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from wsol.errors import MetricError

if TYPE_CHECKING:  # typing.Self is Python >= 3.11
    from typing_extensions import Self




class CountAccumulator:
    """Base class: subclasses register their counts with :meth:`_add_counts` and describe the
    settings that must agree for two accumulators to merge in :meth:`settings`."""

    def __init__(self) -> None:
        self._counts: dict[str, torch.Tensor] = {}

    def _add_counts(self, name: str, *shape: int) -> torch.Tensor:
        tensor = torch.zeros(shape, dtype=torch.int64)
        self._counts[name] = tensor
        return tensor

    def settings(self) -> dict[str, Any]:
        raise NotImplementedError

    def counts(self) -> dict[str, torch.Tensor]:
        """The count tensors by name (live views: modify through :meth:`merge` only)."""
        return dict(self._counts)

    def reset(self) -> None:
        for tensor in self._counts.values():
            tensor.zero_()

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
        for name, tensor in self._counts.items():
            tensor += other._counts[name]
        return self

    def __add__(self, other: Self) -> Self:
        return copy.deepcopy(self).merge(other)

    def to_tensor(self, device: torch.device | str | None = None) -> torch.Tensor:
        """All counts as one flat int64 tensor (fixed order), e.g. for ``all_reduce``."""
        flat = torch.cat([t.reshape(-1) for t in self._counts.values()])
        return flat if device is None else flat.to(device)

    def load_tensor(self, flat: torch.Tensor) -> Self:
        """Replace the counts with those in ``flat`` (the layout of :meth:`to_tensor`)."""
        size = sum(t.numel() for t in self._counts.values())
        if flat.ndim != 1 or flat.numel() != size:
            raise ValueError(f"{type(self).__name__}.load_tensor: expected a flat tensor of"
                             f" {size} counts, got shape {tuple(flat.shape)}")
        flat = flat.detach().to("cpu", torch.int64)
        offset = 0
        for tensor in self._counts.values():
            n = tensor.numel()
            tensor.copy_(flat[offset:offset + n].reshape(tensor.shape))
            offset += n
        return self


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return bool(a == b)


def percent(count: torch.Tensor | int, total: int) -> Any:
    """``count * 100. / total`` in float64, in the reference's order of operations."""
    return np.asarray(count, dtype=np.int64) * 100.0 / float(total)

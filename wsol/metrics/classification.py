"""Top-1 / top-5 classification accuracy as counts, and the per-image flags Top-k Loc needs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from wsol.localization.boxes import is_tensor
from wsol.metrics.counts import CountAccumulator, MetricError, percent

if TYPE_CHECKING:
    import torch


def topk_correct(logits_or_topk: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray,
                 k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Per image: (GT is the top-1 class, GT is among the top ``k``).

    ``logits_or_topk`` is either ``(B, C)`` float scores (ranked here; ties broken by
    ``torch.topk``) or ``(B, k')`` integer class ids already ranked, best first.
    """
    if not is_tensor(logits_or_topk) and not is_tensor(labels):
        ranked = np.asarray(logits_or_topk)
        if np.issubdtype(ranked.dtype, np.integer):  # a ranking: no torch needed
            return _ranking_correct(ranked, np.asarray(labels), k)
    import torch

    scores = torch.as_tensor(logits_or_topk).detach()
    target = torch.as_tensor(labels).detach().to(scores.device).reshape(-1, 1).long()
    if scores.ndim != 2 or scores.shape[0] != target.shape[0]:
        raise ValueError(f"expected (B, C) logits or (B, k) class ranking for {target.shape[0]}"
                         f" labels, got shape {tuple(scores.shape)}")
    if scores.is_floating_point():
        ranking = scores.topk(min(k, scores.shape[1]), dim=1).indices
    else:
        ranking = scores[:, :k].long()
    hits = ranking == target
    return hits[:, 0].cpu().numpy(), hits.any(dim=1).cpu().numpy()


def _ranking_correct(ranking: np.ndarray, labels: np.ndarray,
                     k: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`topk_correct` for an integer NumPy ranking ``(B, k')``."""
    target = labels.reshape(-1, 1).astype(np.int64)
    if ranking.ndim != 2 or ranking.shape[0] != target.shape[0]:
        raise ValueError(f"expected (B, C) logits or (B, k) class ranking for {target.shape[0]}"
                         f" labels, got shape {tuple(ranking.shape)}")
    hits = ranking[:, :k].astype(np.int64) == target
    return hits[:, 0], hits.any(axis=1)


class ClassificationAccumulator(CountAccumulator):
    """Counts ``num_images``, ``top1_correct``, ``top5_correct`` (int64 scalars)."""

    def __init__(self) -> None:
        super().__init__()
        self.num_images = self._add_counts("num_images")
        self.top1_correct = self._add_counts("top1_correct")
        self.top5_correct = self._add_counts("top5_correct")

    def settings(self) -> dict[str, Any]:
        return {}

    def update(self, logits_or_topk: torch.Tensor | np.ndarray,
               labels: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Add a batch; returns the per-image (top-1, top-5) correctness flags."""
        top1, top5 = topk_correct(logits_or_topk, labels)
        self.add_flags(top1, top5)
        return top1, top5

    def add_flags(self, top1: np.ndarray, top5: np.ndarray) -> None:
        """Count per-image correctness flags computed elsewhere (:func:`topk_correct`)."""
        self.num_images += len(top1)
        self.top1_correct += int(np.count_nonzero(top1))
        self.top5_correct += int(np.count_nonzero(top5))

    def compute(self) -> dict[str, Any]:
        n = int(self.num_images)
        if n == 0:
            raise MetricError("ClassificationAccumulator.compute: no images were accumulated")
        return {"top1_acc": float(percent(self.top1_correct, n)),
                "top5_acc": float(percent(self.top5_correct, n))}

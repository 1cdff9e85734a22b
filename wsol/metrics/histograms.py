"""Score histograms over the PxAP bins (wsolevaluation's ``MaskEvaluator.accumulate``).

Bin edges are ``e = thresholds + [1, 2, 3]``; bin ``i`` holds the scores ``e_i <= s < e_{i+1}``
(``np.histogram``'s rule; scores are in [0, 1], so the closed last bin never matters). The bin
index is found by binary search on the float64 edges with the score promoted to float64, which
is exact, so the counts equal ``np.histogram``'s; tensors are binned on their own device and
only the ``(T + 2,)`` counts move to the CPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from wsol.localization.boxes import ScoreMap, is_tensor


def bin_edges(thresholds: np.ndarray) -> np.ndarray:
    """``thresholds + [1, 2, 3]`` as float64."""
    return np.append(np.asarray(thresholds, dtype=np.float64), [1.0, 2.0, 3.0])


def score_bins(scoremaps: ScoreMap, thresholds: np.ndarray, foreground: ScoreMap,
               background: ScoreMap | None = None) -> tuple[Any, Any]:
    """Histograms ``(T + 2,)`` int64 of the scores where ``foreground`` is true and where
    ``background`` is true (default: where ``foreground`` is false): CPU tensors for tensor
    maps (binned on their device), NumPy arrays for arrays (torch is not needed)."""
    edges = bin_edges(thresholds)
    n_bins = len(edges) - 1
    if is_tensor(scoremaps):
        import torch

        device = scoremaps.device
        fg = torch.as_tensor(foreground, device=device).bool()
        bg = ~fg if background is None else torch.as_tensor(background, device=device).bool()
        with torch.no_grad():
            scores = scoremaps.detach().to(torch.float64)
            index = torch.bucketize(scores, torch.from_numpy(edges).to(device), right=True) - 1
            index = index.clamp_(0, n_bins - 1)
            return (torch.bincount(index[fg], minlength=n_bins).cpu(),
                    torch.bincount(index[bg], minlength=n_bins).cpu())
    if is_tensor(foreground):
        foreground = foreground.cpu().numpy()
    if is_tensor(background):
        background = background.cpu().numpy()
    fg = np.asarray(foreground, dtype=bool)
    bg = ~fg if background is None else np.asarray(background, dtype=bool)
    scores = np.asarray(scoremaps, dtype=np.float64)
    index = np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, n_bins - 1)
    return (np.bincount(index[fg], minlength=n_bins).astype(np.int64),
            np.bincount(index[bg], minlength=n_bins).astype(np.int64))

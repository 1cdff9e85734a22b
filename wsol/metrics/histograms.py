"""Score histograms over the PxAP bins (wsolevaluation's ``MaskEvaluator.accumulate``).

Bin edges are ``e = thresholds + [1, 2, 3]``; bin ``i`` holds the scores ``e_i <= s < e_{i+1}``
(``np.histogram``'s rule; scores are in [0, 1], so the closed last bin never matters). The bin
index is found by binary search on the float64 edges with the score promoted to float64, which
is exact, so the counts equal ``np.histogram``'s; tensors are binned on their own device and
only the ``(T + 2,)`` counts move to the CPU.

On the CPU the compiled helper ``wsol.metrics._scorebins`` (optional, built with the package)
does the same comparisons in one pass without temporaries: start at ``floor(s / d)`` for a
uniform sweep (bisection otherwise) and walk to the bin where ``e_i <= s < e_{i+1}``; several
times faster than the vectorized search, and the same counts (``tests/test_metrics.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from wsol.localization.boxes import ScoreMap, is_tensor

try:
    from wsol.metrics import _scorebins
except ImportError:  # built as an optional extension
    _scorebins = None


def bin_edges(thresholds: np.ndarray) -> np.ndarray:
    """``thresholds + [1, 2, 3]`` as float64."""
    return np.append(np.asarray(thresholds, dtype=np.float64), [1.0, 2.0, 3.0])


def _step_hint(edges: np.ndarray) -> float:
    """``d`` when the thresholds look like ``np.arange(0, 1, d)`` (the compiled walk starts at
    ``floor(s / d)``; any start gives the same bin), else 0 (bisection)."""
    t = edges[:-3]
    if len(t) >= 2 and t[0] == 0 and t[1] > 0 and np.allclose(np.diff(t), t[1]):
        return float(t[1])
    return 0.0


def _compiled_bins(scores: np.ndarray, labels: np.ndarray, edges: np.ndarray,
                   n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    fg = np.zeros(n_bins, dtype=np.int64)
    bg = np.zeros(n_bins, dtype=np.int64)
    _scorebins.score_bins(np.ascontiguousarray(scores), scores.dtype == np.float64,
                          np.ascontiguousarray(labels, dtype=np.uint8), edges, _step_hint(edges),
                          fg, bg)
    return fg, bg


def _labels(fg, bg) -> np.ndarray:
    """1 where ``fg``, 0 where ``bg`` (and not ``fg``), 2 elsewhere."""
    out = np.full(fg.shape, 2, dtype=np.uint8)
    out[bg] = 0
    out[fg] = 1
    return out


def score_bins(scoremaps: ScoreMap, thresholds: np.ndarray, foreground: ScoreMap,
               background: ScoreMap | None = None, compiled: bool | None = None
               ) -> tuple[Any, Any]:
    """Histograms ``(T + 2,)`` int64 of the scores where ``foreground`` is true and where
    ``background`` is true (default: where ``foreground`` is false): CPU tensors for tensor
    maps (binned on their device), NumPy arrays for arrays (torch is not needed).
    ``compiled=False`` keeps to the vectorized search (None: the helper when it is built and
    the maps are on the CPU)."""
    edges = bin_edges(thresholds)
    n_bins = len(edges) - 1
    if compiled and _scorebins is None:
        raise ValueError("compiled=True, but wsol.metrics._scorebins is not built")
    # The helper walks ascending edges; otherwise (or when asked not to) the vectorized search.
    use_compiled = (_scorebins is not None and compiled is not False
                    and bool(np.all(np.diff(edges) >= 0)))
    if is_tensor(scoremaps):
        import torch

        device = scoremaps.device
        if (use_compiled and device.type == "cpu"
                and scoremaps.dtype in (torch.float32, torch.float64)):
            fg_np = torch.as_tensor(foreground).bool().cpu().numpy()
            bg_np = (~fg_np if background is None
                     else torch.as_tensor(background).bool().cpu().numpy())
            fg, bg = _compiled_bins(scoremaps.detach().contiguous().numpy(),
                                    _labels(fg_np, bg_np), edges, n_bins)
            return torch.from_numpy(fg), torch.from_numpy(bg)
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
    scores = np.asarray(scoremaps)
    if use_compiled and scores.dtype in (np.float32, np.float64):
        return _compiled_bins(scores, _labels(fg, bg), edges, n_bins)
    scores = scores.astype(np.float64)
    index = np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, n_bins - 1)
    return (np.bincount(index[fg], minlength=n_bins).astype(np.int64),
            np.bincount(index[bg], minlength=n_bins).astype(np.int64))

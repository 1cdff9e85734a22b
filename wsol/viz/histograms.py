"""Foreground / background activation histograms (CREAM Fig. 1).

For normalized maps ``M`` (values in [0, 1]) and a foreground region per image (the union of
its GT boxes, or a GT mask), the two histograms count

    fg[j] = #{pixels i in the foreground : edges[j] <= M_i < edges[j+1]}
    bg[j] = #{pixels i outside it        : edges[j] <= M_i < edges[j+1]}

over all images (the last bin also holds M_i = 1). CAM's fg and bg mass overlap at low
activations (the "mixup" that makes the threshold hard to choose); CREAM separates them.
Counting runs on the maps' device with the evaluator's binning
(:func:`wsol.metrics.histograms.score_bins`); only the count vectors leave it, and histograms of
several batches add up (``h1 + h2``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from wsol.metrics.histograms import bin_edges, score_bins
from wsol.viz._figure import new_figure


@dataclass(frozen=True)
class ActivationHistograms:
    """Pixel counts per activation bin: ``edges`` (n + 1,), ``fg`` and ``bg`` (n,)."""

    edges: np.ndarray
    fg: np.ndarray
    bg: np.ndarray

    def __post_init__(self) -> None:
        n = self.edges.size - 1
        if n < 1 or self.fg.shape != (n,) or self.bg.shape != (n,):
            raise ValueError(f"histograms need n + 1 edges and n counts each: got "
                             f"{self.edges.size} edges, fg {self.fg.shape}, bg {self.bg.shape}")

    def __add__(self, other: ActivationHistograms) -> ActivationHistograms:
        if not np.array_equal(self.edges, other.edges):
            raise ValueError("cannot add histograms with different bin edges")
        return ActivationHistograms(self.edges, self.fg + other.fg, self.bg + other.bg)

    def to_dict(self) -> dict:
        """``{"bins": edges, "fg": counts, "bg": counts}`` (JSON-ready lists)."""
        return {"bins": self.edges.tolist(), "fg": self.fg.tolist(), "bg": self.bg.tolist()}

    @classmethod
    def from_dict(cls, raw: Mapping) -> ActivationHistograms:
        """Inverse of :meth:`to_dict`; also reads the evaluator's ``score_histograms``
        (``bin_edges``, ``inside_gt_boxes``, ``outside_gt_boxes``). ``bins`` may also be the n
        left edges (the next edge is then taken one step further). Bins starting at or above 1
        (the evaluator's overflow edges ``[1, 2, 3]``) are folded into the last bin below 1."""
        keys = next((k for k in (("bins", "fg", "bg"),
                                 ("bin_edges", "inside_gt_boxes", "outside_gt_boxes"))
                     if all(key in raw for key in k)), None)
        if keys is None:
            raise ValueError(f"score histograms need bins/fg/bg or bin_edges/inside_gt_boxes/"
                             f"outside_gt_boxes, got keys {sorted(raw)}")
        edges, fg, bg = (np.asarray(raw[k], dtype=np.float64) for k in keys)
        if edges.size == fg.size and fg.size >= 2:
            edges = np.append(edges, edges[-1] + (edges[-1] - edges[-2]))
        if edges.size != fg.size + 1 or bg.shape != fg.shape:
            raise ValueError(f"score histograms: {edges.size} bin edges for {fg.size} fg and "
                             f"{bg.size} bg counts")
        over = int(np.searchsorted(edges[:-1], 1.0, side="left"))  # first bin starting at >= 1
        if 0 < over < fg.size:
            fg = np.append(fg[:over - 1], fg[over - 1:].sum())
            bg = np.append(bg[:over - 1], bg[over - 1:].sum())
            edges = np.append(edges[:over], 1.0)
        return cls(edges, fg, bg)

    def coarsen(self, factor: int) -> ActivationHistograms:
        """Merge every ``factor`` consecutive bins (a last partial group is merged too)."""
        if factor < 1:
            raise ValueError(f"factor must be >= 1, got {factor}")
        if factor == 1:
            return self
        starts = np.arange(0, self.fg.size, factor)
        edges = np.append(self.edges[starts], self.edges[-1])
        return ActivationHistograms(edges, np.add.reduceat(self.fg, starts),
                                    np.add.reduceat(self.bg, starts))


def boxes_to_mask(boxes: Sequence[Sequence[float]] | Tensor, size: tuple[int, int],
                  device: torch.device | str = "cpu") -> Tensor:
    """``(H, W)`` bool mask of the union of inclusive boxes ``(x0, y0, x1, y1)``."""
    h, w = size
    mask = torch.zeros(h, w, dtype=torch.bool, device=device)
    for box in boxes:
        x0, y0, x1, y1 = (int(v) for v in box)
        if x1 < x0 or y1 < y0:
            raise ValueError(f"box {(x0, y0, x1, y1)} has x1 < x0 or y1 < y0")
        mask[max(y0, 0):y1 + 1, max(x0, 0):x1 + 1] = True
    return mask


def activation_histograms(maps: Tensor, boxes: Sequence[Sequence[Sequence[float]] | Tensor]
                          | None = None, *, fg_masks: Tensor | None = None,
                          bins: int = 50) -> ActivationHistograms:
    """Fg / bg histograms of ``maps`` ``(B, H, W)`` in [0, 1] (see the module docstring).

    The foreground is the union of each image's GT ``boxes`` (inclusive coordinates in map
    pixels) or the given ``fg_masks`` ``(B, H, W)``; exactly one of the two is required.
    """
    if maps.ndim != 3:
        raise ValueError(f"maps must be (B, H, W), got shape {tuple(maps.shape)}")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    if (boxes is None) == (fg_masks is None):
        raise ValueError("give exactly one of boxes (per image) or fg_masks")
    if fg_masks is None:
        assert boxes is not None
        if len(boxes) != maps.shape[0]:
            raise ValueError(f"{len(boxes)} box lists for {maps.shape[0]} maps")
        fg_masks = torch.stack([boxes_to_mask(b, tuple(maps.shape[1:]), maps.device)
                                for b in boxes])
    elif fg_masks.shape != maps.shape:
        raise ValueError(f"fg_masks shape {tuple(fg_masks.shape)} != maps {tuple(maps.shape)}")
    # The evaluator's binning (edges = thresholds + [1, 2, 3]); from_dict folds the overflow
    # bins, so a score of exactly 1 lands in the last bin [1 - 1/bins, 1].
    thresholds = np.linspace(0.0, 1.0, bins + 1)[:-1]
    fg, bg = score_bins(maps.clamp(0, 1), thresholds, fg_masks.to(maps.device))
    return ActivationHistograms.from_dict({"bins": bin_edges(thresholds), "fg": fg.numpy(),
                                           "bg": bg.numpy()})


def plot_activation_histograms(histograms: Mapping[str, ActivationHistograms],
                               max_bins: int = 100, max_columns: int = 3) -> Figure:
    """One panel per method (``max_columns`` per row): the fg (red) and bg (blue) activation
    distributions, each scaled to sum to 1, as in CREAM Fig. 1; one legend for the figure.
    Histograms finer than ``max_bins`` are coarsened."""
    if not histograms:
        raise ValueError("plot_activation_histograms: no histograms given")
    ncols = min(len(histograms), max_columns)
    nrows = -(-len(histograms) // ncols)
    fig = new_figure(4.2 * ncols, 3.0 * nrows + 0.4)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[len(histograms):]:
        ax.set_visible(False)
    for k, (ax, (label, hist)) in enumerate(zip(axes, histograms.items())):
        hist = hist.coarsen(-(-hist.fg.size // max_bins))
        for counts, color, name in ((hist.fg, "tab:red", "foreground"),
                                    (hist.bg, "tab:blue", "background")):
            total = counts.sum()
            share = counts / total if total > 0 else counts
            ax.stairs(share, hist.edges, fill=True, alpha=0.45, color=color,
                      label=name if k == 0 else None)
        ax.set_title(label, fontsize="medium")
        ax.set_xlabel("normalized activation")
        ax.set_ylabel("share of pixels")
        ax.set_xlim(0, 1)
        ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", ncols=2, fontsize="small", frameon=False)
    return fig

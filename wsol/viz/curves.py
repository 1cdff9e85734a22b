"""Curves: BoxAcc versus the CAM threshold (CREAM Fig. 6) and the PxAP precision-recall curve.

BoxAcc(delta, t) is the percentage of images whose box at map threshold ``t`` has IoU >= delta
with a GT box (method-spec §4); MaxBoxAcc_delta = max_t BoxAcc(delta, t). Several methods are
drawn on one axis per IoU threshold delta, so a flatter, higher curve (CREAM's claim: robustness
to the threshold) is visible at a glance.

The PR curve is the PxAP curve of method-spec §4: precision_i = tp_i / (tp_i + fp_i) against
recall_i = tp_i / P over the thresholds, and PxAP = 100 * sum_i precision_i (recall_i - recall_{i-1}).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from wsol.metrics.results import BoxAccCurves

__all__ = ["BoxAccCurves", "plot_box_acc_curves", "plot_pr_curves", "pr_curve_from_results"]

if TYPE_CHECKING:  # matplotlib is imported by the plotting functions only
    from matplotlib.figure import Figure


def plot_box_acc_curves(curves: Mapping[str, BoxAccCurves], ious: Sequence[str] | None = None,
                        title: str | None = None,
                        colors: Mapping[str, object] | None = None) -> Figure:
    """One panel per IoU threshold, one line per method (the label is the mapping key, the
    colour ``colors[key]``); each panel's legend, under it, gives each method's maximum,
    MaxBoxAcc at that IoU."""
    from wsol.viz._figure import new_figure

    if not curves:
        raise ValueError("plot_box_acc_curves: no curves given")
    if ious is None:
        ious = sorted({iou for c in curves.values() for iou in c.by_iou}, key=_iou_key)
    fig = new_figure(4.2 * len(ious), 3.2 + 0.2 * len(curves))
    axes = fig.subplots(1, len(ious), squeeze=False)[0]
    for ax, iou in zip(axes, ious):
        for label, c in curves.items():
            if iou in c.by_iou:
                acc = c.by_iou[iou]
                ax.plot(c.thresholds, acc, label=f"{label} (max {acc.max():.1f})",
                        color=(colors or {}).get(label))
        ax.set_title(f"IoU >= {iou}%")
        ax.set_xlabel("CAM threshold")
        ax.set_ylabel("BoxAcc (%)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small", loc="upper center", bbox_to_anchor=(0.5, -0.2),
                  frameon=False)
    if title:
        fig.suptitle(title)
    return fig


def _iou_key(iou: str) -> float:
    try:
        return float(iou)
    except ValueError:
        return float("inf")


def pr_curve_from_results(results: Mapping) -> tuple[np.ndarray, np.ndarray] | None:
    """``(precision, recall)`` arrays from ``results["pr_curve"]`` (a mapping with
    ``precision`` and ``recall`` lists; a None precision, where nothing is predicted positive,
    becomes NaN); None when absent or in another form."""
    raw = results.get("pr_curve")
    if not isinstance(raw, Mapping) or "precision" not in raw or "recall" not in raw:
        return None
    precision = np.asarray(raw["precision"], dtype=np.float64)
    recall = np.asarray(raw["recall"], dtype=np.float64)
    if precision.shape != recall.shape:
        raise ValueError(f"pr_curve: precision has {precision.size} values, recall {recall.size}")
    return precision, recall


def plot_pr_curves(curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
                   pxap: Mapping[str, float] | None = None, title: str | None = None,
                   colors: Mapping[str, object] | None = None) -> Figure:
    """Precision against recall, one line per method; ``pxap`` values go into the legend
    (beside the plot)."""
    from wsol.viz._figure import new_figure

    if not curves:
        raise ValueError("plot_pr_curves: no curves given")
    fig = new_figure(7.6, 3.8)
    ax = fig.subplots()
    for label, (precision, recall) in curves.items():
        text = label if not pxap or label not in pxap else f"{label} (PxAP {pxap[label]:.1f})"
        keep = np.isfinite(precision) & np.isfinite(recall)
        order = np.argsort(recall[keep], kind="stable")
        ax.plot(recall[keep][order], precision[keep][order], label=text,
                color=(colors or {}).get(label))
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    ax.set_title(title or "Pixel precision-recall (PxAP)")
    return fig

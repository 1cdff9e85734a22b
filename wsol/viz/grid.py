"""A grid of images x methods: the image with its GT boxes, then each method's map overlay with
the GT boxes (red) and that method's predicted box (green), as in the qualitative figures of the
CAM / CREAM / B-CAM papers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from wsol.viz._figure import new_figure
from wsol.viz.overlay import render_overlay

BoxList = Sequence[Sequence[float]]


def plot_method_grid(images: Sequence[np.ndarray], maps: Mapping[str, Sequence[np.ndarray]], *,
                     gt_boxes: Sequence[BoxList] | None = None,
                     pred_boxes: Mapping[str, Sequence[BoxList]] | None = None,
                     row_titles: Sequence[str] | None = None, cell_inches: float = 2.2) -> Figure:
    """Rows are ``images`` (uint8 RGB); the first column shows each image with its GT boxes,
    then one column per key of ``maps`` (that method's maps, one per image, in [0, 1])."""
    n = len(images)
    if n == 0:
        raise ValueError("plot_method_grid: no images given")
    for name, column in maps.items():
        if len(column) != n:
            raise ValueError(f"method {name!r} has {len(column)} maps for {n} images")
        if pred_boxes is not None and name in pred_boxes and len(pred_boxes[name]) != n:
            raise ValueError(f"method {name!r} has {len(pred_boxes[name])} box lists for "
                             f"{n} images")
    if gt_boxes is not None and len(gt_boxes) != n:
        raise ValueError(f"{len(gt_boxes)} GT box lists for {n} images")
    if row_titles is not None and len(row_titles) != n:
        raise ValueError(f"{len(row_titles)} row titles for {n} images")
    cols = 1 + len(maps)
    aspect = float(np.mean([im.shape[0] / im.shape[1] for im in images]))  # rows / cols
    fig = new_figure(cell_inches * cols, cell_inches * aspect * n + 0.3)
    axes = fig.subplots(n, cols, squeeze=False)
    for r, image in enumerate(images):
        gts = gt_boxes[r] if gt_boxes is not None else ()
        cells = [("image", render_overlay(image, None, gt_boxes=gts))]
        for name, column in maps.items():
            boxes = pred_boxes[name][r] if pred_boxes is not None and name in pred_boxes else ()
            cells.append((name, render_overlay(image, column[r], boxes=boxes, gt_boxes=gts)))
        for c, (name, cell) in enumerate(cells):
            ax = axes[r, c]
            ax.imshow(cell)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize="small")
            if c == 0 and row_titles is not None:
                ax.set_ylabel(row_titles[r], fontsize="x-small")
    return fig

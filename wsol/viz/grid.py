"""A grid of images x methods: the image with its GT boxes, then each method's map overlay with
the GT boxes (red) and that method's predicted box (green), as in the qualitative figures of the
CAM / CREAM / B-CAM papers.

Each column has a header (``column_titles``: what the map is, e.g. ``CREAM (stage cam)``), each
cell an optional caption under it (``cell_labels``: e.g. the predicted class, its score and the
box IoU; drawn dark green or dark red by ``cell_ok``), and the figure a legend for the box
colours and a colour bar for the map (overlays of :func:`wsol.viz.overlay.render_overlay`).
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from wsol.viz._figure import new_figure
from wsol.viz.overlay import GT_COLOR, PRED_COLOR, render_overlay

BoxList = Sequence[Sequence[float]]

#: Caption colours: correct prediction, wrong prediction, unknown.
OK_COLOR, WRONG_COLOR, NEUTRAL_COLOR = "#1a7f37", "#b3261e", "#333333"


def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.fill(line, width, break_on_hyphens=False) or line
                     for line in text.split("\n"))


def plot_method_grid(images: Sequence[np.ndarray], maps: Mapping[str, Sequence[np.ndarray]], *,
                     gt_boxes: Sequence[BoxList] | None = None,
                     pred_boxes: Mapping[str, Sequence[BoxList]] | None = None,
                     row_titles: Sequence[str] | None = None, cell_inches: float = 2.2,
                     column_titles: Mapping[str, str] | None = None,
                     cell_labels: Mapping[str, Sequence[str]] | None = None,
                     cell_ok: Mapping[str, Sequence[bool | None]] | None = None,
                     legend: bool = True, colormap: str = "turbo") -> Figure:
    """Rows are ``images`` (uint8 RGB); the first column shows each image with its GT boxes,
    then one column per key of ``maps`` (that method's maps, one per image, in [0, 1]).

    ``column_titles`` replaces a column's key as its header; ``cell_labels[key][r]`` is the
    caption under cell ``(r, key)`` (the image column's key is ``"image"``), coloured by
    ``cell_ok[key][r]`` (True: green, False: red). ``legend`` adds the box legend and the map
    colour bar.
    """
    n = len(images)
    if n == 0:
        raise ValueError("plot_method_grid: no images given")
    for name, column in maps.items():
        if len(column) != n:
            raise ValueError(f"method {name!r} has {len(column)} maps for {n} images")
        if pred_boxes is not None and name in pred_boxes and len(pred_boxes[name]) != n:
            raise ValueError(f"method {name!r} has {len(pred_boxes[name])} box lists for "
                             f"{n} images")
    for what, per in (("cell labels", cell_labels), ("cell_ok values", cell_ok)):
        for name, column in (per or {}).items():
            if len(column) != n:
                raise ValueError(f"{what} of {name!r}: {len(column)} for {n} images")
    if gt_boxes is not None and len(gt_boxes) != n:
        raise ValueError(f"{len(gt_boxes)} GT box lists for {n} images")
    if row_titles is not None and len(row_titles) != n:
        raise ValueError(f"{len(row_titles)} row titles for {n} images")
    cols = 1 + len(maps)
    aspect = float(np.mean([im.shape[0] / im.shape[1] for im in images]))  # rows / cols
    captions = bool(cell_labels)
    row_h = cell_inches * aspect + (0.32 if captions else 0.0)
    header_h = 0.55
    fig = new_figure(cell_inches * cols + 0.4, row_h * n + header_h + (0.75 if legend else 0.0))
    axes = fig.subplots(n, cols, squeeze=False)
    chars = max(12, int(cell_inches * 11))  # header characters per line at "small" size
    for r, image in enumerate(images):
        gts = gt_boxes[r] if gt_boxes is not None else ()
        cells = [("image", render_overlay(image, None, gt_boxes=gts))]
        for name, column in maps.items():
            boxes = pred_boxes[name][r] if pred_boxes is not None and name in pred_boxes else ()
            cells.append((name, render_overlay(image, column[r], boxes=boxes, gt_boxes=gts,
                                               colormap=colormap)))
        for c, (name, cell) in enumerate(cells):
            ax = axes[r, c]
            ax.imshow(cell)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                title = (column_titles or {}).get(name, name)
                ax.set_title(_wrap(title, chars), fontsize="small")
            if c == 0 and row_titles is not None:
                ax.set_ylabel(_wrap(row_titles[r], chars), fontsize="x-small")
            if cell_labels and name in cell_labels:
                ok = (cell_ok or {}).get(name)
                state = ok[r] if ok is not None else None
                color = NEUTRAL_COLOR if state is None else OK_COLOR if state else WRONG_COLOR
                ax.set_xlabel(cell_labels[name][r], fontsize="x-small", color=color,
                              labelpad=2)
    if legend:
        _add_legend(fig, axes, colormap, captions)
    return fig


def _add_legend(fig: Figure, axes, colormap: str, captions: bool) -> None:
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.patches import Patch

    def rgb(color: tuple[int, int, int]) -> tuple[float, ...]:
        return tuple(v / 255 for v in color)

    handles = [Patch(facecolor="none", edgecolor=rgb(GT_COLOR), linewidth=2,
                     label="ground-truth box"),
               Patch(facecolor="none", edgecolor=rgb(PRED_COLOR), linewidth=2,
                     label="predicted box")]
    if captions:
        handles += [Patch(color=OK_COLOR, label="caption: top-1 class correct"),
                    Patch(color=WRONG_COLOR, label="caption: top-1 class wrong")]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize="small",
               frameon=False)
    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), colormaps[colormap]), ax=axes,
                       location="bottom", fraction=0.012, aspect=60, shrink=0.6, pad=0.01)
    bar.set_label("normalized map (overlay opacity grows with the value)", fontsize="small")
    bar.ax.tick_params(labelsize="x-small")

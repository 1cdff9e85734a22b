"""Training curves as small multiples: one panel per metric, one colour per run.

Each run's ``metrics.csv`` (one row per epoch, written by ``wsol train``) gives the panels

    loss | train Top-1 Cls | val Top-1 Cls | val GT-known Loc | val MaxBoxAccV2

(those a run has; a column that is empty in every run gives no panel). A run is drawn in the
same colour in every panel, the legend sits outside the panels, and on the panel of the metric
that selected the checkpoint (``train.select_metric``) the selected epoch is marked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["TRAINING_PANELS", "epoch_columns", "plot_training_curves", "run_colors"]

#: (metrics.csv column, panel title, y-axis label); ``train_loss`` stands for every loss column.
TRAINING_PANELS: tuple[tuple[str, str, str], ...] = (
    ("train_loss", "training loss", "loss"),
    ("train_top1_cls", "train Top-1 Cls", "%"),
    ("val_top1_cls", "val Top-1 Cls", "%"),
    ("val_gt_known_loc", "val GT-known Loc", "%"),
    ("val_MaxBoxAccV2", "val MaxBoxAccV2", "%"),
)

_STYLES = ("-", "--", ":", "-.")


def run_colors(names: Sequence[str]) -> dict[str, tuple[float, float, float, float]]:
    """A distinct colour per name (tab10, tab20 beyond ten), stable in the given order."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {name: cmap(k % cmap.N) for k, name in enumerate(names)}


def epoch_columns(epochs: Sequence[Mapping[str, str]]) -> dict[str, np.ndarray]:
    """The numeric columns of metrics.csv rows (NaN where a row has no value, e.g. epochs
    without validation); non-numeric columns are left out."""
    out: dict[str, np.ndarray] = {}
    keys: list[str] = []
    for row in epochs:
        keys.extend(k for k in row if k not in keys)
    for key in keys:
        values = []
        for row in epochs:
            text = row.get(key)
            try:
                values.append(float(text) if text not in (None, "") else np.nan)
            except (TypeError, ValueError):
                break
        else:
            if values and not np.all(np.isnan(values)):
                out[key] = np.asarray(values)
    return out


def plot_training_curves(runs: Mapping[str, Sequence[Mapping[str, str]]], *,
                         selected: Mapping[str, tuple[str, int]] | None = None,
                         colors: Mapping[str, object] | None = None) -> Figure:
    """Small multiples of ``runs`` (name -> metrics.csv rows), see the module docstring.

    ``selected`` maps a run to ``(metric column, epoch)`` of its selected checkpoint, marked
    with a ring on that metric's panel.
    """
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    from wsol.viz._figure import new_figure

    if not runs:
        raise ValueError("plot_training_curves: no runs given")
    cols = {name: epoch_columns(rows) for name, rows in runs.items()}
    colors = dict(colors or run_colors(list(runs)))
    panels = []
    for key, title, unit in TRAINING_PANELS:
        if key == "train_loss":
            present = any(k.endswith("loss") for c in cols.values() for k in c)
        else:
            present = any(key in c for c in cols.values())
        if present:
            panels.append((key, title, unit))
    if not panels:
        raise ValueError("plot_training_curves: no run has a known metrics.csv column "
                         f"({', '.join(k for k, _, _ in TRAINING_PANELS)})")
    loss_names = sorted({k for c in cols.values() for k in c if k.endswith("loss")})
    n = len(panels)
    ncols = min(n, 5)
    nrows = -(-n // ncols)
    fig = new_figure(2.9 * ncols, 2.5 * nrows + 0.5)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (key, title, unit) in zip(axes, panels):
        for name, c in cols.items():
            x = c.get("epoch", np.arange(1, len(next(iter(c.values()), [])) + 1))
            keys = [k for k in loss_names if k in c] if key == "train_loss" else \
                [key] if key in c else []
            for column in keys:
                keep = np.isfinite(c[column])
                style = _STYLES[loss_names.index(column) % 4] if key == "train_loss" else "-"
                ax.plot(x[keep], c[column][keep], color=colors[name], marker=".", markersize=4,
                        linestyle=style, linewidth=1.4)
            if selected and name in selected and selected[name][0] == key:
                epoch = selected[name][1]
                at = np.flatnonzero(x == epoch)
                if at.size:
                    ax.plot([epoch], [c[key][at[0]]], marker="o", markersize=9,
                            markerfacecolor="none", markeredgecolor=colors[name],
                            markeredgewidth=1.6)
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel("epoch")
        ax.set_ylabel(unit)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in axes[n:]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=colors[name], linewidth=2, label=name) for name in runs]
    if len(loss_names) > 1:
        handles += [Line2D([], [], color="0.4", linestyle=_STYLES[k % 4],
                           label=name) for k, name in enumerate(loss_names)]
    if selected:
        handles.append(Line2D([], [], color="0.3", marker="o", markerfacecolor="none",
                              linestyle="none", markersize=8, label="selected epoch"))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6),
               fontsize="small", frameon=False)
    return fig

"""The report page: runs side by side in one self-contained HTML file.

A run directory (written by ``wsol train``) holds ``config.yaml``, ``metrics.csv`` (one row per
epoch), ``results.json`` (the final test evaluation) and ``checkpoints/{best,last}.pt``; every
part is optional here, and what is missing becomes a note on the page. The page has:

- a metrics table (Top-1/Top-5 Cls, Top-1/Top-5 Loc, GT-known Loc, MaxBoxAcc, MaxBoxAccV2 and
  its per-IoU terms, PxAP, pIoU, the best threshold), the best value of each column in bold;
- BoxAcc-vs-threshold curves of all runs (CREAM Fig. 6), PR curves (mask runs), fg/bg
  activation histograms (CREAM Fig. 1) where the results have them, training curves;
- optionally an image x method grid (:mod:`wsol.viz.run_grid`).

Images are embedded as base64 PNG data URIs, styles are inline: the file can be mailed or
opened offline.
"""

from __future__ import annotations

import base64
import csv
import html
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from wsol.utils.io import read_json_object
from wsol.errors import RunDirError

#: (results key, column title); dotted keys read nested mappings.
METRIC_COLUMNS: tuple[tuple[str, str], ...] = (
    ("top1_cls", "Top-1 Cls"),
    ("top5_cls", "Top-5 Cls"),
    ("top1_loc", "Top-1 Loc"),
    ("top5_loc", "Top-5 Loc"),
    ("gt_known_loc", "GT-known Loc"),
    ("MaxBoxAcc", "MaxBoxAcc"),
    ("MaxBoxAccV2", "MaxBoxAccV2"),
    ("max_box_acc_by_iou.30", "IoU30"),
    ("max_box_acc_by_iou.50", "IoU50"),
    ("max_box_acc_by_iou.70", "IoU70"),
    ("PxAP", "PxAP"),
    ("pIoU", "pIoU"),
)




@dataclass
class RunSummary:
    """What the report reads from one run directory."""

    path: Path
    name: str
    config: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict)
    epochs: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def method(self) -> str:
        return str(self.config.get("method", {}).get("name") or self.results.get("method") or "?")

    @property
    def model(self) -> str:
        return str(self.config.get("model", {}).get("name") or "?")

    def checkpoint(self) -> Path | None:
        """``checkpoints/best.pt``, else ``checkpoints/last.pt``, else None."""
        for name in ("best.pt", "last.pt"):
            path = self.path / "checkpoints" / name
            if path.is_file():
                return path
        return None


def _read_json(path: Path) -> dict:
    try:
        return read_json_object(path)
    except ValueError as exc:
        raise RunDirError(str(exc)) from None


def load_run(run_dir: str | os.PathLike, name: str | None = None) -> RunSummary:
    """Read ``config.yaml``, ``results.json`` (else ``eval/test/results.json``) and
    ``metrics.csv`` of a run; raises :class:`RunDirError` when none of them is there."""
    import yaml

    path = Path(run_dir)
    if not path.is_dir():
        raise RunDirError(f"{path}: run directory does not exist")
    run = RunSummary(path=path, name=name or path.resolve().name)
    config_path = path / "config.yaml"
    if config_path.is_file():
        try:
            run.config = yaml.safe_load(config_path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise RunDirError(f"{config_path}: not valid YAML ({exc})") from None
    else:
        run.notes.append("no config.yaml")
    for rel in ("results.json", "eval/test/results.json"):
        if (path / rel).is_file():
            run.results = _read_json(path / rel)
            break
    else:
        run.notes.append("no results.json (no final evaluation)")
    metrics_path = path / "metrics.csv"
    if metrics_path.is_file():
        with open(metrics_path, newline="", encoding="utf-8") as f:
            run.epochs = list(csv.DictReader(f))
    if not (config_path.is_file() or run.results or run.epochs):
        raise RunDirError(f"{path}: not a wsol run directory (no config.yaml, results.json "
                          f"or metrics.csv)")
    return run


def unique_names(paths: Sequence[Path]) -> list[str]:
    """Short display names: the directory name, with parents added until they are distinct."""
    parts = [p.resolve().parts for p in paths]
    for depth in range(1, max((len(p) for p in parts), default=1) + 1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [str(p) for p in paths]


def metric_value(results: Mapping, key: str) -> float | None:
    """``results[key]`` for a dotted key (``max_box_acc_by_iou.50``); None when absent."""
    value: Any = results
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else None


def best_threshold(run: RunSummary) -> float | None:
    """The run's best box threshold at IoU 50, when its results record one."""
    from wsol.metrics.results import threshold_from_results

    try:
        return threshold_from_results(run.results, "50")
    except ValueError:
        return None


def metrics_table(runs: Sequence[RunSummary]) -> str:
    """The ``<table id="metrics">``: one row per run, one column per metric any run has (all
    metrics are percentages where higher is better; the best of each column is bold)."""
    columns = [(k, t) for k, t in METRIC_COLUMNS
               if any(metric_value(r.results, k) is not None for r in runs)]
    head = ["Run", "Method", "Model", "Epochs"] + [t for _, t in columns] + ["Best thr."]
    values = {k: [v for r in runs if (v := metric_value(r.results, k)) is not None]
              for k, _ in columns}
    # The best value of a column is bold when it beats at least one other run.
    best = {k: max(v) if min(v) < max(v) else None for k, v in values.items()}
    rows = []
    for run in runs:
        cells = [html.escape(run.name), html.escape(run.method), html.escape(run.model),
                 str(len(run.epochs)) if run.epochs else "&mdash;"]
        for key, _ in columns:
            value = metric_value(run.results, key)
            if value is None:
                cells.append("&mdash;")
            elif value == best[key]:
                cells.append(f"<b>{value:.2f}</b>")
            else:
                cells.append(f"{value:.2f}")
        thr = best_threshold(run)
        cells.append("&mdash;" if thr is None else f"{thr:.3f}")
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    header = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
    return (f'<table id="metrics"><thead>{header}</thead><tbody>{"".join(rows)}</tbody>'
            f"</table>")


@dataclass
class Section:
    """A titled block of the page: an optional PNG and optional notes."""

    title: str
    png: bytes | None = None
    notes: list[str] = field(default_factory=list)


def _numeric_columns(epochs: list[dict[str, str]]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for key in epochs[0]:
        try:
            out[key] = np.array([float(row[key]) for row in epochs])
        except (TypeError, ValueError):
            continue
    return out


def training_curves_figure(runs: Sequence[RunSummary]):
    """Losses (left) and validation metrics (right) per epoch from each run's metrics.csv."""
    from matplotlib.ticker import MaxNLocator

    from wsol.viz._figure import new_figure

    fig = new_figure(9.0, 3.4)
    ax_loss, ax_metric = fig.subplots(1, 2)
    for run in runs:
        cols = _numeric_columns(run.epochs)
        x = cols.get("epoch", np.arange(1, len(run.epochs) + 1))
        for key, values in cols.items():
            if "loss" in key.lower():
                ax_loss.plot(x, values, label=f"{run.name}: {key}")
            elif any(m in key for m in ("MaxBoxAcc", "top1", "PxAP", "gt_known")):
                ax_metric.plot(x, values, label=f"{run.name}: {key}")
    for ax, title in ((ax_loss, "loss"), (ax_metric, "validation (%)")):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize="x-small")
    return fig


def report_sections(runs: Sequence[RunSummary]) -> list[Section]:
    """The curve, histogram and training-curve sections for ``runs`` (figures as PNG)."""
    from wsol.viz._figure import figure_png
    from wsol.viz.curves import (
        BoxAccCurves,
        plot_box_acc_curves,
        plot_pr_curves,
        pr_curve_from_results,
    )
    from wsol.viz.histograms import ActivationHistograms, plot_activation_histograms

    sections = []
    curves = {r.name: c for r in runs if (c := BoxAccCurves.from_results(r.results)) is not None}
    sec = Section("BoxAcc vs. CAM threshold")
    if curves:
        sec.png = figure_png(plot_box_acc_curves(curves))
    sec.notes += [f"{r.name}: no box_acc_curves in its results" for r in runs
                  if r.name not in curves]
    sections.append(sec)

    pr = {r.name: c for r in runs if (c := pr_curve_from_results(r.results)) is not None}
    if pr:
        pxap = {r.name: v for r in runs if (v := metric_value(r.results, "PxAP")) is not None}
        sections.append(Section("Pixel precision-recall", figure_png(plot_pr_curves(pr, pxap))))

    hists, hist_notes = {}, []
    for r in runs:
        raw = r.results.get("score_histograms")
        if isinstance(raw, Mapping):
            try:
                hists[r.name] = ActivationHistograms.from_dict(raw)
            except ValueError as exc:
                hist_notes.append(f"{r.name}: unreadable score_histograms ({exc})")
    if hists or hist_notes:
        sections.append(Section("Foreground / background activations",
                                figure_png(plot_activation_histograms(hists)) if hists else None,
                                hist_notes))

    with_epochs = [r for r in runs if r.epochs]
    if with_epochs:
        sections.append(Section("Training", figure_png(training_curves_figure(with_epochs))))
    return sections


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; background: #fff; }
h1 { margin-bottom: 0.2em; } .meta { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 1em 0; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th { background: #eef; } td:nth-child(-n+3) { text-align: left; }
img { max-width: 100%; border: 1px solid #ddd; }
.note { color: #a60; font-size: 13px; margin: 0.2em 0; }
pre { background: #f6f6f6; padding: 0.6em; font-size: 12px; overflow-x: auto; }
"""


def _img_tag(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def render_report(runs: Sequence[RunSummary], sections: Sequence[Section],
                  title: str = "wsol report") -> str:
    """The whole HTML page as a string."""
    import yaml

    import wsol

    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="meta">{len(runs)} run(s), generated {when} by wsol {wsol.__version__}</p>',
        "<h2>Metrics</h2>", metrics_table(runs),
    ]
    for run in runs:
        parts += [f'<p class="note">{html.escape(run.name)}: {html.escape(n)}</p>'
                  for n in run.notes]
    for sec in sections:
        parts.append(f"<h2>{html.escape(sec.title)}</h2>")
        if sec.png is not None:
            parts.append(_img_tag(sec.png, sec.title))
        parts += [f'<p class="note">{html.escape(n)}</p>' for n in sec.notes]
    parts.append("<h2>Runs</h2>")
    for run in runs:
        parts.append(f"<details><summary>{html.escape(run.name)} &mdash; "
                     f"{html.escape(str(run.path))}</summary>"
                     f"<pre>{html.escape(yaml.safe_dump(run.config, sort_keys=False))}</pre>"
                     "</details>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"

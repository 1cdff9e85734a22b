"""The report page: result rows side by side in one self-contained HTML file.

The inputs (run directories, results JSON files) are read by :mod:`wsol.viz.report_data`: every
results file is a row, labelled with what produced it (training, ``wsol evaluate`` with its
settings, a mask evaluation, a ``cream fit`` plug-in). The page has:

- a metrics table: per row the maps evaluated (``CREAM (stage calibrated)``) and the method's
  inference settings, the model, the source, the checkpoint (selected epoch, on which split by
  which metric), the split and its number of images, then Top-1/Top-5 Cls, Top-1/Top-5 Loc,
  GT-known Loc, MaxBoxAcc, MaxBoxAccV2 and its per-IoU terms, PxAP, pIoU and the best IoU-50
  threshold; the best value of each column in bold. Top-5 columns are left out when every row
  has fewer than 6 classes (they are then trivially 100 / equal to GT-known), and marked
  ``n/a`` in such rows otherwise. Under it, the evaluation protocol the rows share;
- BoxAcc-vs-threshold curves of all rows (CREAM Fig. 6), PR curves (mask splits), fg/bg
  activation histograms (CREAM Fig. 1) where the results have them, training curves as small
  multiples (:mod:`wsol.viz.training`), one colour per row (per run for training curves);
- optionally an image x method grid (:mod:`wsol.viz.run_grid`) with its legend;
- each run's config, with paths relative to the report's folder.

Images are embedded as base64 PNG data URIs, styles are inline: the file can be mailed or
opened offline. Numbers are printed rounded (2 decimals for %, 3 for thresholds).
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from wsol.viz.report_data import (
    ResultRow,
    RunSummary,
    collect_rows,
    load_results_file,
    load_run,
    round_floats,
    unique_names,
)

__all__ = ["METRIC_COLUMNS", "ResultRow", "RunSummary", "Section", "best_threshold",
           "collect_rows", "load_results_file", "load_run", "metric_value", "metrics_table",
           "relative_paths", "render_report", "report_sections", "unique_names"]

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
TOP5_KEYS = ("top5_cls", "top5_loc")
IOU_PREFIX = "max_box_acc_by_iou."
#: Fewer classes than this make Top-5 trivial (every class is in the top 5).
TOP5_MIN_CLASSES = 6


def metric_value(results: Mapping, key: str) -> float | None:
    """``results[key]`` for a dotted key (``max_box_acc_by_iou.50``); None when absent."""
    value: Any = results
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else None


def best_threshold(row: ResultRow | RunSummary) -> float | None:
    """The row's best box threshold at IoU 50, when its results record one (rounded)."""
    from wsol.errors import WsolError
    from wsol.metrics.results import threshold_from_results

    try:
        return round_floats(threshold_from_results(row.results, "50"), 6)
    except (WsolError, ValueError):
        return None


def _few_classes(row: ResultRow) -> bool:
    n = row.num_classes
    return n is not None and n < TOP5_MIN_CLASSES


def _settings_text(row: ResultRow, shared: Mapping[str, Any]) -> str:
    parts = [f"{k}={v}" for k, v in row.inference_settings().items()]
    parts += [f"{k}={v}" for k, v in row.protocol_settings().items() if shared.get(k) != v]
    return ", ".join(parts)


def shared_protocol(rows: Sequence[ResultRow]) -> dict[str, Any]:
    """The protocol settings every row that records them agrees on."""
    seen = [r.protocol_settings() for r in rows if r.protocol_settings()]
    if not seen:
        return {}
    return {k: v for k, v in seen[0].items() if all(s.get(k) == v for s in seen)}


def protocol_sentence(shared: Mapping[str, Any]) -> str:
    """The shared protocol in words."""
    parts = []
    if "normalization" in shared:
        parts.append(f"maps {shared['normalization']}-normalized per image")
    if "image_size" in shared:
        parts.append(f"at {shared['image_size']}&times;{shared['image_size']}")
    if "cam_curve_interval" in shared:
        parts.append(f"box thresholds every {shared['cam_curve_interval']}")
    if "multi_contour" in shared:
        parts.append("boxes from every contour (MaxBoxAccV2 protocol)" if shared["multi_contour"]
                     else "boxes from the largest contour")
    return ("Protocol: " + ", ".join(parts) + ".") if parts else ""


def metrics_table(rows: Sequence[ResultRow], base: str | os.PathLike | None = None) -> str:
    """The ``<table id="metrics">``: one row per result, one column per metric any row has (all
    metrics are percentages where higher is better; the best of each column is bold), and the
    notes under it (``<p class="caption">``). A row's results file (its tooltip) is shown
    relative to ``base``."""
    few = [_few_classes(r) for r in rows]
    columns = [(k, t) for k, t in METRIC_COLUMNS
               if any(metric_value(r.results, k) is not None and not (k in TOP5_KEYS and f)
                      for r, f in zip(rows, few))]
    shared = shared_protocol(rows)
    ious = [t for k, t in columns if k.startswith(IOU_PREFIX)]
    metric_heads = []
    for k, t in columns:
        if not k.startswith(IOU_PREFIX):
            metric_heads.append(t)
            if k == "MaxBoxAccV2" and ious:
                metric_heads.append("MaxBoxAcc at " + " / ".join(ious))
    if ious and not any(k == "MaxBoxAccV2" for k, _ in columns):
        metric_heads.append("MaxBoxAcc at " + " / ".join(ious))
    head = ["Run", "Maps and inference settings", "Model", "Source and checkpoint",
            "Split (images)"] + metric_heads + ["Thr. IoU50"]
    values = {k: [v for r, f in zip(rows, few)
                  if (v := metric_value(r.results, k)) is not None
                  and not (k in TOP5_KEYS and f)] for k, _ in columns}
    # The best value of a column is bold when it beats at least one other row.
    best = {k: max(v) if v and min(v) < max(v) else None for k, v in values.items()}
    body = []
    for row, f in zip(rows, few):
        split = row.split or "?"
        n = row.num_images
        settings = _settings_text(row, shared)
        cells = [
            (f'<td class="label" title="{html.escape(_rel(row.path, Path(base or ".")))}">'
            f"{html.escape(row.label)}</td>"),
            f"<td>{html.escape(row.title())}"
            + (f'<br><span class="settings">{html.escape(settings)}</span>' if settings else "")
            + "</td>",
            f"<td>{html.escape(row.model)}</td>",
            (f"<td>{html.escape(row.source)}<br>"
            f'<span class="settings">{html.escape(row.checkpoint_text())}</span></td>'),
            f"<td>{html.escape(split)} ({n if n is not None else '?'})</td>",
        ]
        iou_parts: list[str] = []
        for key, _ in columns:
            value = metric_value(row.results, key)
            if key in TOP5_KEYS and f:
                text = "n/a&dagger;"
            elif value is None:
                text = "&mdash;"
            elif value == best[key]:
                text = f"<b>{value:.2f}</b>"
            else:
                text = f"{value:.2f}"
            if key.startswith(IOU_PREFIX):  # MaxBoxAcc at IoU 30 / 50 / 70 share one cell
                iou_parts.append(text)
                continue
            if key in TOP5_KEYS and f:
                cells.append('<td class="na" title="fewer than 6 classes: Top-5 is trivial">'
                             f"{text}</td>")
            else:
                cells.append(f"<td>{text}</td>")
            if key == "MaxBoxAccV2" and any(k.startswith(IOU_PREFIX) for k, _ in columns):
                cells.append(None)  # placeholder for the IoU cell
        if None in cells:
            cells[cells.index(None)] = f'<td class="iou">{" / ".join(iou_parts)}</td>'
        elif iou_parts:
            cells.append(f'<td class="iou">{" / ".join(iou_parts)}</td>')
        thr = best_threshold(row)
        cells.append("<td>&mdash;</td>" if thr is None else f"<td>{thr:.3f}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    header = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
    captions = [("All metrics in %, higher is better; the best of each column in bold. "
                "Thr. IoU50: the box threshold of the best BoxAcc at IoU 50 on that split.")]
    if (sentence := protocol_sentence(shared)):
        captions.append(sentence)
    classes = sorted({r.num_classes for r in rows if r.num_classes is not None})
    if any(few) and all(few):
        captions.append(f"Top-5 Cls / Top-5 Loc omitted: {', '.join(map(str, classes))} "
                        f"classes (fewer than {TOP5_MIN_CLASSES}) make them trivial.")
    elif any(few):
        captions.append(f"&dagger; fewer than {TOP5_MIN_CLASSES} classes: Top-5 is trivial.")
    table = (f'<div class="scroll"><table id="metrics"><thead>{header}</thead><tbody>{"".join(body)}</tbody>'
             "</table></div>")
    return table + "".join(f'<p class="caption">{c}</p>' for c in captions)


@dataclass
class Section:
    """A titled block of the page: an optional image (PNG, or JPEG when ``mime`` says so),
    optional notes and an optional caption (HTML) under the title."""

    title: str
    image: bytes | None = None
    notes: list[str] = field(default_factory=list)
    caption: str = ""
    anchor: str = ""
    mime: str = "image/png"


def row_colors(rows: Sequence[ResultRow]) -> dict[str, Any]:
    """One colour per row label (the same in every figure)."""
    from wsol.viz.training import run_colors

    return run_colors([r.label for r in rows])


def report_sections(rows: Sequence[ResultRow], runs: Sequence[RunSummary] = ()) -> list[Section]:
    """The curve, histogram and training-curve sections (figures as PNG)."""
    from wsol.viz._figure import figure_png
    from wsol.viz.curves import (
        BoxAccCurves,
        plot_box_acc_curves,
        plot_pr_curves,
        pr_curve_from_results,
    )
    from wsol.viz.histograms import ActivationHistograms, plot_activation_histograms
    from wsol.viz.training import plot_training_curves, run_colors

    colors = row_colors(rows)
    sections = []
    curves = {r.label: c for r in rows if (c := BoxAccCurves.from_results(r.results)) is not None}
    sec = Section("BoxAcc vs. CAM threshold", anchor="boxacc", caption=(
        "BoxAcc(&delta;, t): % of images whose box at map threshold t has IoU &ge; &delta; with "
        "a GT box; MaxBoxAcc is each curve's maximum (in the legend). A flat, high curve is "
        "robust to the threshold."))
    if curves:
        sec.image = figure_png(plot_box_acc_curves(curves, colors=colors))
    sec.notes += [f"{r.label}: no box_acc_curves in its results" for r in rows
                  if r.label not in curves]
    sections.append(sec)

    pr = {r.label: c for r in rows if (c := pr_curve_from_results(r.results)) is not None}
    if pr:
        pxap = {r.label: v for r in rows if (v := metric_value(r.results, "PxAP")) is not None}
        sections.append(Section("Pixel precision-recall", figure_png(
            plot_pr_curves(pr, pxap, colors=colors)), anchor="pr"))

    hists, hist_notes = {}, []
    for r in rows:
        raw = r.results.get("score_histograms")
        if isinstance(raw, Mapping):
            try:
                hists[r.label] = ActivationHistograms.from_dict(raw)
            except ValueError as exc:
                hist_notes.append(f"{r.label}: unreadable score_histograms ({exc})")
    if hists or hist_notes:
        sections.append(Section(
            "Foreground / background activations",
            figure_png(plot_activation_histograms(hists)) if hists else None, hist_notes,
            caption="Distribution of normalized map values inside (foreground) and outside "
                    "(background) the GT boxes; the less they overlap, the easier the "
                    "threshold.", anchor="histograms"))

    with_epochs = [r for r in runs if r.epochs]
    if with_epochs:
        first_row = {}
        for r in rows:
            if r.run is not None:
                first_row.setdefault(r.run.name, r.label)
        palette = run_colors([r.label for r in rows] + [run.name for run in with_epochs])
        run_color = {run.name: colors.get(first_row.get(run.name, ""), palette[run.name])
                     for run in with_epochs}
        selected = {}
        for run in with_epochs:
            metric = run.results.get("select_metric") or \
                (run.config.get("train") or {}).get("select_metric")
            epoch = run.results.get("epoch")
            if metric and isinstance(epoch, int) and run.results.get("selected_on"):
                selected[run.name] = (f"val_{metric}", epoch)
        fig = plot_training_curves({run.name: run.epochs for run in with_epochs},
                                   selected=selected, colors=run_color)
        sections.append(Section("Training", figure_png(fig), anchor="training", caption=(
            "Per-epoch metrics from each run's metrics.csv (train: on the training batches; "
            "val: the validation split). The ring marks the epoch whose checkpoint was "
            "selected.")))
    return sections


def relative_paths(value: Any, base: Path) -> Any:
    """``value`` with every string that is an absolute path written relative to ``base`` (the
    report's folder), in nested dicts/lists; floats rounded (:func:`round_floats`)."""
    if isinstance(value, str) and os.path.isabs(value):
        return os.path.relpath(value, base)
    if isinstance(value, Mapping):
        return {k: relative_paths(v, base) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [relative_paths(v, base) for v in value]
    return round_floats(value)


def _rel(path: Path | None, base: Path) -> str:
    if path is None:
        return ""
    return os.path.relpath(path.resolve(), base.resolve())


_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1500px; padding: 0 1.5em; color: #222; background: #fff; }
h1 { margin-bottom: 0.2em; } .meta { color: #666; margin-top: 0; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
nav a { margin-right: 1em; color: #335; }
table { border-collapse: collapse; margin: 1em 0 0.4em; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: right; white-space: nowrap; }
th { background: #eef; white-space: normal; vertical-align: bottom; max-width: 7em; }
td.iou { font-size: 12px; } tbody tr:nth-child(even) { background: #fafafe; }
td:nth-child(-n+5), th:nth-child(-n+5) { text-align: left; vertical-align: top; }
th:nth-child(-n+5) { vertical-align: bottom; max-width: none; }
.settings { display: inline-block; white-space: normal; max-width: 15em; font-size: 11.5px;
            color: #555; }
.scroll { overflow-x: auto; }
td.na { color: #999; }
img { max-width: 100%; border: 1px solid #ddd; }
.caption { color: #555; font-size: 13px; margin: 0.2em 0 0.6em; max-width: 70em; }
.note { color: #a60; font-size: 13px; margin: 0.2em 0; }
.legend span { display: inline-block; margin-right: 1.4em; font-size: 13px; }
.swatch { display: inline-block; width: 14px; height: 10px; border: 2px solid; margin-right: 4px;
          vertical-align: middle; }
pre { background: #f6f6f6; padding: 0.6em; font-size: 12px; overflow-x: auto; }
"""


def _img_tag(data_bytes: bytes, alt: str, mime: str = "image/png") -> str:
    data = base64.b64encode(data_bytes).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:{mime};base64,{data}">'


def render_report(runs: Sequence[RunSummary], sections: Sequence[Section],
                  title: str = "wsol report", rows: Sequence[ResultRow] | None = None,
                  out_dir: str | os.PathLike = ".") -> str:
    """The whole HTML page as a string; paths are shown relative to ``out_dir``."""
    import yaml

    import wsol

    base = Path(out_dir)
    rows = list(rows) if rows is not None else [r for run in runs for r in run.rows]
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    nav = " ".join(f'<a href="#{s.anchor}">{html.escape(s.title)}</a>' for s in sections
                   if s.anchor)
    parts = [
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        (f'<p class="meta">{len(rows)} result(s) from {len(runs)} run(s), generated {when} by '
        f"wsol {html.escape(wsol.__version__)}</p>"),
        f'<nav><a href="#metrics-section">Metrics</a> {nav} <a href="#runs">Runs</a></nav>',
        '<h2 id="metrics-section">Metrics</h2>', metrics_table(rows, base),
    ]
    for run in runs:
        parts += [f'<p class="note">{html.escape(run.name)}: {html.escape(n)}</p>'
                  for n in run.notes]
    for row in rows:
        parts += [f'<p class="note">{html.escape(row.label)}: {html.escape(n)}</p>'
                  for n in row.notes]
    for sec in sections:
        anchor = f' id="{sec.anchor}"' if sec.anchor else ""
        parts.append(f"<h2{anchor}>{html.escape(sec.title)}</h2>")
        if sec.caption:
            parts.append(f'<p class="caption">{sec.caption}</p>')
        if sec.image is not None:
            parts.append(_img_tag(sec.image, sec.title, sec.mime))
        parts += [f'<p class="note">{html.escape(n)}</p>' for n in sec.notes]
    parts.append('<h2 id="runs">Runs and result files</h2>')
    parts.append("<table><thead><tr><th>Row</th><th>Results file</th><th>Checkpoint</th>"
                 "</tr></thead><tbody>")
    for row in rows:
        parts.append(f"<tr><td>{html.escape(row.label)}</td>"
                     f"<td>{html.escape(_rel(row.path, base))}</td>"
                     f"<td>{html.escape(_rel(row.checkpoint, base))}</td></tr>")
    parts.append("</tbody></table>")
    for run in runs:
        config = relative_paths(run.config, base.resolve())
        parts.append(f"<details><summary>{html.escape(run.name)} &mdash; "
                     f"{html.escape(_rel(run.path, base))}</summary>"
                     f"<pre>{html.escape(yaml.safe_dump(config, sort_keys=False))}</pre>"
                     "</details>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"

"""``wsol report RUN_DIR_OR_RESULTS_JSON... --out report.html``: compare results on one page.

Every results file is a row (:mod:`wsol.viz.report_data`): a run directory gives its training
result and each ``wsol evaluate`` result under its ``eval/`` folder (CREAM calibrated, a B-CAM
mask evaluation, ...); a results JSON named on the command line (e.g. the evaluation of a
``wsol cream fit`` plug-in checkpoint) is a row of its own. The page (:mod:`wsol.viz.report`)
has the metrics table, BoxAcc-vs-threshold curves, PR curves and activation histograms where
the results have them, training curves, and a grid of ``--grid-images`` test images x rows
(:mod:`wsol.viz.run_grid`; ``--grid-select`` picks evenly spread, first, worst or best images by
IoU; skipped with a note when the data or a checkpoint is unavailable, or with
``--grid-images 0``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "report"
HELP = "compare runs and evaluations on one self-contained HTML page (metrics, curves, grid)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from wsol.viz.run_grid import GRID_SELECTIONS

    parser.description = (
        "Compare training runs and `wsol evaluate` results on one self-contained HTML page. "
        "Each results file becomes a row: a run directory's results.json and eval/**/*.json, "
        "and any results JSON given directly.")
    parser.add_argument("inputs", nargs="+", metavar="RUN_DIR_OR_RESULTS_JSON",
                        help="run directories (wsol train) and/or results JSON files "
                             "(wsol evaluate)")
    parser.add_argument("--out", required=True, help="the HTML file to write")
    parser.add_argument("--grid-images", type=int, default=12,
                        help="images in the image x method grid (0: no grid; default 12)")
    parser.add_argument("--grid-select", choices=GRID_SELECTIONS, default="spread",
                        help="which images: spread (evenly over the split, default), first, "
                             "worst or best (lowest / highest box IoU averaged over the grid's "
                             "columns)")
    parser.add_argument("--grid-pool", type=int, default=0,
                        help="worst/best: rank an evenly spread sample of this many images "
                             "(default 0: the whole split)")
    parser.add_argument("--split", default="test", help="split the grid images come from")
    parser.add_argument("--device", default="cpu", help="device for the grid's forward passes")
    parser.add_argument("--title", default="wsol report")
    parser.add_argument("--force", action="store_true", help="overwrite --out")


def run(args: argparse.Namespace) -> int:
    from wsol.errors import UserError
    from wsol.utils.io import atomic_write_text
    from wsol.viz._figure import figure_jpeg
    from wsol.viz.report import Section, collect_rows, render_report, report_sections

    out = Path(args.out)
    if out.exists() and not args.force:
        raise FileExistsError(f"--out {out} exists; use --force to overwrite it")
    if out.suffix.lower() not in (".html", ".htm"):
        raise UserError(f"--out {out}: expected an .html file")
    if args.grid_images < 0:
        raise UserError(f"--grid-images must be >= 0, got {args.grid_images}")
    if args.grid_pool < 0:
        raise UserError(f"--grid-pool must be >= 0, got {args.grid_pool}")
    runs, rows = collect_rows(args.inputs)
    if not rows and not any(r.epochs for r in runs):
        raise UserError("nothing to report: no results files and no metrics.csv in "
                        + ", ".join(args.inputs))
    sections = report_sections(rows, runs)
    if args.grid_images > 0:
        from wsol.viz.run_grid import build_run_grid

        fig, notes, how = build_run_grid(rows, args.grid_images, split=args.split,
                                         device=args.device, select=args.grid_select,
                                         pool=args.grid_pool or None)
        caption = ""
        if fig is not None:
            caption = (
                f"{how[0].upper() + how[1:]}. Each map column shows that row's map for the GT "
                "class as it was evaluated, its box at the row's best IoU-50 threshold and, "
                "under it, the predicted class, its softmax score and the box IoU. "
                '<span class="legend"><span><i class="swatch" style="border-color:#f00">'
                '</i>ground truth</span><span><i class="swatch" style="border-color:#0f0">'
                "</i>prediction</span></span>")
        sections.append(Section(f"Images x methods ({args.split})",
                                figure_jpeg(fig) if fig is not None else None, notes,
                                caption=caption, anchor="grid", mime="image/jpeg"))
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, render_report(runs, sections, title=args.title, rows=rows,
                                         out_dir=out.parent))
    print(f"wrote {out} ({len(rows)} result row(s) from {len(runs)} run(s), "
          f"{out.stat().st_size / 1024:.0f} KiB)")
    return 0

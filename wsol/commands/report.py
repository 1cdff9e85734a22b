"""``wsol report RUN_DIR... --out report.html``: compare runs on one self-contained HTML page.

The page (:mod:`wsol.viz.report`) has the metrics table, the BoxAcc-vs-threshold curves, PR
curves and activation histograms where the results have them, training curves, and a grid of
``--grid-images`` fixed test images x runs (:mod:`wsol.viz.run_grid`; skipped with a note when
a run's data or checkpoint is unavailable, or with ``--grid-images 0``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "report"
HELP = "compare training runs on one self-contained HTML page (metrics, curves, image grid)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories")
    parser.add_argument("--out", required=True, help="the HTML file to write")
    parser.add_argument("--grid-images", type=int, default=4,
                        help="test images in the image x method grid (0: no grid; default 4)")
    parser.add_argument("--split", default="test", help="split the grid images come from")
    parser.add_argument("--device", default="cpu", help="device for the grid's forward passes")
    parser.add_argument("--title", default="wsol report")
    parser.add_argument("--force", action="store_true", help="overwrite --out")


def run(args: argparse.Namespace) -> int:
    from wsol.utils.io import atomic_write_text
    from wsol.viz._figure import figure_png
    from wsol.viz.report import Section, load_run, render_report, report_sections, unique_names

    out = Path(args.out)
    if out.exists() and not args.force:
        raise FileExistsError(f"--out {out} exists; use --force to overwrite it")
    if args.grid_images < 0:
        raise ValueError(f"--grid-images must be >= 0, got {args.grid_images}")
    paths = [Path(p) for p in args.runs]
    runs = [load_run(p, name) for p, name in zip(paths, unique_names(paths))]
    sections = report_sections(runs)
    if args.grid_images > 0:
        from wsol.viz.run_grid import build_run_grid

        fig, notes = build_run_grid(runs, args.grid_images, split=args.split, device=args.device)
        sections.append(Section(f"{args.grid_images} {args.split} images x runs",
                                figure_png(fig) if fig is not None else None, notes))
    atomic_write_text(out, render_report(runs, sections, title=args.title))
    print(f"wrote {out} ({len(runs)} run(s), {out.stat().st_size / 1024:.0f} KiB)")
    return 0

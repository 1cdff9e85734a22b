"""Build the example under docs/example/ from trained CAM, CREAM and B-CAM runs.

    python docs/make_example.py --cam runs/cub10-cam --cream runs/cub10-cream \\
        --bcam runs/cub10-bcam [--cream-set method.iterations=3 ...] [--out docs/example]

The runs are ``wsol train`` run directories (the CUB-subset runs for the committed example; any
runs work, e.g. tiny_cnn runs on ``wsol prepare synthetic`` data). The script adds, with the
``wsol`` CLI only (every step is printed):

1. CREAM calibrated: ``wsol evaluate`` of the CREAM run at ``method.stage=calibrated``
   (``<cream>/eval/test/results_calibrated.json``); with ``--cream-set`` (inference settings
   chosen on val) also CREAM fused with those settings (``results_fused.json``);
2. B-CAM mask: ``wsol evaluate --eval-type mask`` of the B-CAM run
   (``<bcam>/eval/test/results_mask.json``);
3. the plug-in: ``wsol cream fit`` on the CAM run's checkpoint and its evaluation
   (``--plugin-dir``, default ``<cam>-cream-fit/``: ``cream.pt``, ``results_test.json``);
4. ``docs/example/report.html``: ``wsol report`` over the three runs and the plug-in's results
   (rows: CAM, CREAM fused, CREAM calibrated, B-CAM prob, B-CAM mask, plug-in);
5. ``docs/example/report.png``: a screenshot of the page in headless Chromium (1500 px wide,
   full page height, trailing white space cropped, 256 colours);
6. ``docs/example/localize/``: ``wsol localize`` overlays, boxes and manifest of the CREAM run
   on ``--localize-images`` test images at a box threshold chosen on val (largest contour,
   ``<cream>-localize/val_largest_contour.json``);
   the ``.npy`` maps are left out to keep the repository small.

Existing evaluations are reused; ``--force`` recomputes them.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TITLE = ("wsol on the CUB subset: CAM, CREAM and B-CAM (EfficientNet-Lite0, 10 classes, "
         "243 test images)")


def wsol(*args: str) -> None:
    cmd = [sys.executable, "-m", "wsol", *args]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=REPO, check=True)


def best_checkpoint(run: Path) -> Path:
    for name in ("best.pt", "last.pt"):
        if (run / "checkpoints" / name).is_file():
            return run / "checkpoints" / name
    raise SystemExit(f"{run}: no checkpoints/best.pt or last.pt (is it a wsol train run?)")


def evaluate(checkpoint: Path, output: Path, force: bool, *args: str) -> Path:
    if output.is_file() and not force:
        print(f"# reusing {output}")
        return output
    wsol("evaluate", "--checkpoint", str(checkpoint), "--split", "test", "--output", str(output),
         "--no-progress", "--force", *args)
    return output


def screenshot(html: Path, png: Path, width: int = 1500, max_height: int = 12000) -> Path:
    """Headless Chromium screenshot of the whole page: a tall window, then the white rows
    below the content are cropped."""
    import numpy as np
    from PIL import Image

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        raise SystemExit("headless Chromium is needed for the screenshot "
                         "(apt-get install -y chromium)")
    tmp = png.with_suffix(".full.png")
    profile = png.parent / ".chromium-profile"
    subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--user-data-dir={profile}", f"--screenshot={tmp}",
                    f"--window-size={width},{max_height}", html.resolve().as_uri()],
                   check=True, capture_output=True, timeout=180)
    shutil.rmtree(profile, ignore_errors=True)
    image = Image.open(tmp).convert("RGB")
    gray = np.asarray(image.convert("L"))
    content = np.flatnonzero((gray < 250).any(axis=1))
    bottom = min(gray.shape[0], int(content[-1]) + 40) if content.size else gray.shape[0]
    # 256 colours (median cut): about a quarter of the full-colour file, text stays sharp
    image.crop((0, 0, width, bottom)).quantize(colors=256, method=Image.Quantize.MEDIANCUT) \
        .save(png, optimize=True)
    tmp.unlink()
    print(f"# screenshot {png} ({width}x{bottom})")
    return png


def test_images(cream_run: Path, n: int) -> list[str]:
    """``n`` evenly spread test image paths of the run's data."""
    import yaml

    config = yaml.safe_load((cream_run / "config.yaml").read_text())
    root, meta = Path(config["data"]["root"]), Path(config["data"]["metadata"])
    ids = [line.split(",")[0].strip() for line in (meta / "test" / "image_ids.txt")
           .read_text().splitlines() if line.strip()]
    step = max(1, len(ids) // n)
    return [str(root / i) for i in ids[::step][:n]]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cam", type=Path, required=True, help="CAM run directory")
    parser.add_argument("--cream", type=Path, required=True, help="CREAM run directory")
    parser.add_argument("--bcam", type=Path, required=True, help="B-CAM run directory")
    parser.add_argument("--plugin-dir", type=Path, default=None,
                        help="where `cream fit` on the CAM run goes (default <cam>-cream-fit)")
    parser.add_argument("--cream-set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="CREAM inference settings chosen on val (method.iterations=3 ...) "
                             "for the fused and calibrated rows and the plug-in")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "example")
    parser.add_argument("--title", default=TITLE)
    parser.add_argument("--grid-images", type=int, default=12)
    parser.add_argument("--grid-select", default="spread")
    parser.add_argument("--localize-images", type=int, default=6,
                        help="test images for the `wsol localize` overlays (0: none)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--force", action="store_true", help="recompute existing evaluations")
    args = parser.parse_args(argv)
    for key in ("cam", "cream", "bcam", "plugin_dir", "out"):  # the CLI runs in the repository
        if getattr(args, key) is not None:
            setattr(args, key, getattr(args, key).resolve())

    cam_ckpt, cream_ckpt, bcam_ckpt = (best_checkpoint(r) for r in (args.cam, args.cream,
                                                                    args.bcam))
    cream_eval = args.cream / "eval" / "test"
    if args.cream_set:
        evaluate(cream_ckpt, cream_eval / "results_fused.json", args.force,
                 "method.stage=fused", *args.cream_set)
    evaluate(cream_ckpt, cream_eval / "results_calibrated.json", args.force,
             *args.cream_set, "method.stage=calibrated")
    evaluate(bcam_ckpt, args.bcam / "eval" / "test" / "results_mask.json", args.force,
             "--eval-type", "mask")
    plugin = args.plugin_dir or args.cam.with_name(args.cam.name + "-cream-fit")
    plugin_ckpt = plugin / "cream.pt"
    if args.force or not plugin_ckpt.is_file():
        plugin.mkdir(parents=True, exist_ok=True)
        wsol("cream", "fit", "--checkpoint", str(cam_ckpt), "--out", str(plugin_ckpt),
             "--force", "--no-progress", *args.cream_set)
    plugin_results = evaluate(plugin_ckpt, plugin / "results_test.json", args.force)

    args.out.mkdir(parents=True, exist_ok=True)
    report = args.out / "report.html"
    wsol("report", str(args.cam), str(args.cream), str(args.bcam), str(plugin_results),
         "--out", str(report), "--grid-images", str(args.grid_images), "--grid-select",
         args.grid_select, "--device", args.device, "--force", "--title", args.title)
    screenshot(report, args.out / "report.png")

    if args.localize_images > 0:
        # box threshold for `localize` (largest contour): chosen on val, never on test
        # (kept beside the run, not in its eval/, so that it is no row of the report)
        val = args.cream.with_name(args.cream.name + "-localize") / "val_largest_contour.json"
        if args.force or not val.is_file():
            wsol("evaluate", "--checkpoint", str(cream_ckpt), "--split", "val", "--output",
                 str(val), "--no-progress", "--force", "eval.multi_contour=false")
        loc = args.out / "localize"
        wsol("localize", "--checkpoint", str(cream_ckpt),
             *test_images(args.cream, args.localize_images), "--out", str(loc), "--force",
             "--overlay-format", "png", "--no-progress", "--device", args.device, "--threshold-from", str(val))
        shutil.rmtree(loc / "maps", ignore_errors=True)
    print(f"example written to {args.out}")


if __name__ == "__main__":
    main()

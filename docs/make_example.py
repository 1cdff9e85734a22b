"""Build the example under docs/example/ from the CUB-subset benchmark runs.

    python docs/make_example.py

Needs the runs of benchmarks/cub_subset.py (runs/cub10-cream) and benchmarks/cub_bcam.py
(runs/cub10-bcam-w1-0.4-0.4-0.2, the B-CAM run selected on val). Writes:

- runs/cub10-cream-selected/: the CREAM run with the inference settings chosen on val (from
  benchmarks/results/cub10_cream.json) as a run directory of its own (same weights and
  embeddings; its config and test results reflect those settings), so that `wsol report` shows
  CAM, CREAM and B-CAM side by side;
- docs/example/report.html: `wsol report` over CAM (the CREAM run at stage=cam), CREAM and B-CAM;
- docs/example/localize/: `wsol localize` overlays, maps' boxes and manifest for six CUB test
  images (the .npy maps are left out to keep the repository small).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "runs"
OUT = REPO / "docs" / "example"
CUB = REPO.parent / "shared" / "data" / "CUB_200_2011-classes001-010"


def wsol(*args: str) -> None:
    cmd = [sys.executable, "-m", "wsol", *args]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=REPO, check=True)


def main() -> None:
    from wsol.config import dump_config
    from wsol.engine.checkpoint import load_method, save_checkpoint
    from wsol.utils.io import atomic_write_text

    chosen = json.loads((REPO / "benchmarks" / "results" / "cub10_cream.json").read_text())
    best = chosen["selection"]["chosen"]
    overrides = [f"method.{k}={best[k]}" for k in ("stage", "iterations", "tau",
                                                    "feature_normalization", "pi_init")]
    src = RUNS / "cub10-cream"
    dst = RUNS / "cub10-cream-selected"
    if dst.exists():
        shutil.rmtree(dst)
    (dst / "checkpoints").mkdir(parents=True)
    method, info = load_method(src / "checkpoints" / "best.pt", overrides=overrides)
    save_checkpoint(dst / "checkpoints" / "best.pt", method, config=info["config"],
                    class_names=info["class_names"], epoch=info["epoch"],
                    best_metric=info["best_metric"], best_epoch=info["best_epoch"])
    atomic_write_text(dst / "config.yaml", dump_config(info["config"]))
    shutil.copy(src / "metrics.csv", dst / "metrics.csv")
    wsol("evaluate", "--checkpoint", str(dst / "checkpoints" / "best.pt"), "--split", "test",
         "--output", str(dst / "results.json"), "--no-progress")
    # the CAM baseline (the same weights at stage=cam) and B-CAM, as copies whose results.json
    # is re-evaluated by this version (with the fg/bg score histograms)
    views = {"cub10-cam-view": src, "cub10-bcam-view": RUNS / "cub10-bcam-w1-0.4-0.4-0.2"}
    for name, run in views.items():
        view = RUNS / name
        if view.exists():
            shutil.rmtree(view)
        shutil.copytree(run, view, ignore=shutil.ignore_patterns("last.pt"))
        wsol("evaluate", "--checkpoint", str(view / "checkpoints" / "best.pt"), "--split", "test",
             "--output", str(view / "results.json"), "--force", "--no-progress")
    OUT.mkdir(parents=True, exist_ok=True)
    wsol("report", str(RUNS / "cub10-cam-view"), str(dst), str(RUNS / "cub10-bcam-view"), "--out",
         str(OUT / "report.html"), "--grid-images", "6", "--force",
         "--title", "wsol on the CUB subset: CAM vs CREAM vs B-CAM (EfficientNet-Lite0, CPU)")
    split = dict(line.split()[:2] for line in (CUB / "train_test_split.txt").read_text().splitlines())
    names = dict(line.split() for line in (CUB / "images.txt").read_text().splitlines())
    test = [names[i] for i in names if split.get(i) == "0"]
    picks = [str(CUB / "images" / test[k]) for k in range(0, len(test), len(test) // 6)][:6]
    # box threshold for `localize` (largest contour): chosen on val, never on test
    val = dst / "eval" / "val" / "results_largest_contour.json"
    wsol("evaluate", "--checkpoint", str(dst / "checkpoints" / "best.pt"), "--split", "val",
         "--output", str(val), "--no-progress", "eval.multi_contour=false")
    loc = OUT / "localize"
    wsol("localize", "--checkpoint", str(dst / "checkpoints" / "best.pt"), *picks, "--out",
         str(loc), "--force", "--no-progress", "--threshold-from", str(val))
    shutil.rmtree(loc / "maps", ignore_errors=True)
    print(f"example written to {OUT}")


if __name__ == "__main__":
    main()

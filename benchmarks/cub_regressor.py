"""CREAM + box regressor on the CUB subset (Table 5's last row), with the wsol CLI.

    python benchmarks/cub_regressor.py [--cream-run runs/cub10-cream] [--epochs 8]

Uses the CREAM settings chosen on val by cub_subset.py (benchmarks/results/cub10_cream.json):
1. `wsol evaluate` on val with the fused map and the largest contour (v1, the pseudo-box rule)
   gives the threshold (best at IoU 50; chosen on val, never on test);
2. `wsol regressor pseudo-boxes` writes pseudo boxes for the train split from the fused maps at
   448x448 (PSOL's resolution) and reports their accuracy against the real train boxes;
3. `wsol regressor train`: class-agnostic EfficientNet-Lite0 (ImageNet) + MLP regressor on the
   pseudo boxes (random-resized-crop + flip), model selection on val's real boxes;
4. `wsol regressor evaluate` on test: class from the CREAM classifier, box from the regressor.

Writes benchmarks/results/cub10_regressor.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from _common import REPO, RESULTS, write_result

SHARED_IMAGES = REPO.parent / "shared" / "data" / "CUB_200_2011-classes001-010" / "images"


def wsol(*args: str) -> None:
    cmd = [sys.executable, "-m", "wsol", *args]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=REPO, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cream-run", default=str(REPO / "runs" / "cub10-cream"))
    parser.add_argument("--out", default=str(REPO / "runs" / "cub10-regressor"))
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--freeze-stages", type=int, default=4)
    args = parser.parse_args()
    t0 = time.time()
    chosen = json.loads((RESULTS / "cub10_cream.json").read_text())["selection"]["chosen"]
    method_args = ["method.stage=fused", f"method.iterations={chosen['iterations']}",
                   f"method.tau={chosen['tau']}",
                   f"method.feature_normalization={chosen['feature_normalization']}",
                   f"method.pi_init={chosen['pi_init']}"]
    ckpt = Path(args.cream_run) / "checkpoints" / "best.pt"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    val_json = out / "val_fused_v1.json"
    wsol("evaluate", "--checkpoint", str(ckpt), "--split", "val", "--output", str(val_json),
         "--force", "--no-progress", "eval.multi_contour=false", *method_args)
    pseudo = out / "pseudo"
    wsol("regressor", "pseudo-boxes", "--checkpoint", str(ckpt), "--out", str(pseudo),
         "--threshold-from", str(val_json), "--map-size", "448", "--force", *method_args)
    reg_run = out / "run"
    wsol("regressor", "train", "--run-dir", str(reg_run), "--metadata", str(pseudo),
         "--image-root", str(SHARED_IMAGES), "--val-metadata", str(REPO / "data" / "cub10" / "val"),
         "--model", "efficientnet_lite0", "--pretrained", "true", "--epochs", str(args.epochs),
         "--force", f"model.freeze_stages={args.freeze_stages}", "data.num_workers=0",
         "device=cpu", "train.amp=false", "train.channels_last=false")
    test_json = out / "test.json"
    wsol("regressor", "evaluate", "--regressor", str(reg_run / "checkpoints" / "best.pt"),
         "--classifier", str(ckpt), "--split", "test", "--output", str(test_json), "--force")
    pseudo_report = json.loads((pseudo / "train" / "pseudo_boxes.json").read_text())
    write_result("cub10_regressor", {
        "what": "CREAM (fused) pseudo boxes -> class-agnostic box regressor; test: class from "
                "the classifier, one box per image from the regressor (no threshold sweep)",
        "cream_settings": chosen, "threshold_from_val": json.loads(val_json.read_text()).get(
            "best_threshold_by_iou", {}).get("50"),
        "pseudo_boxes": {k: v for k, v in pseudo_report.items() if k != "boxes"},
        "regressor_epochs": args.epochs, "freeze_stages": args.freeze_stages,
        "test": json.loads(test_json.read_text()),
        "wall_time_s": round(time.time() - t0, 1)})


if __name__ == "__main__":
    main()

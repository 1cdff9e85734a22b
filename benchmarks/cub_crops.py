"""CAM, CREAM and B-CAM on a large-object version of the CUB subset (issue: B-CAM inverts).

    python benchmarks/cub_crops.py [--seed 0]

`wsol prepare crops` crops every CUB-subset image (train, val, test) around its box with a
seeded random margin so that the box covers 40-100% of the crop (data/cub10-crops). The shipped
CREAM and B-CAM configs are trained on it with only the data paths changed (the CUB-subset
budget, selection on val), then evaluated on the 243 test crops through the engine: CAM
(`method.stage=cam`), CREAM calibrated / fused (the inference settings chosen on the CUB val
split), B-CAM with its default polarity check (`polarity=border`), B-CAM as the official code
maps it (`polarity=none`) and B-CAM's threshold-free mask. Every row reports
`inside_gt_share`: the share of test images whose mean map value inside the GT box exceeds the
mean outside (the check that a map does not light up the background; MaxBoxAcc alone does not
show it on large objects). Writes benchmarks/results/cub10_crops.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from _common import REPO, write_result
from cub_seeds import CREAM_VAL_SETTINGS, SHARED_CUB, evaluate, train

ROWS = {
    "CAM": ("cream", {"stage": "cam"}, "prob"),
    "CREAM calibrated": ("cream", {"stage": "calibrated", **CREAM_VAL_SETTINGS}, "prob"),
    "CREAM fused": ("cream", {"stage": "fused", **CREAM_VAL_SETTINGS}, "prob"),
    "B-CAM": ("bcam", {}, "prob"),
    "B-CAM (official maps, polarity=none)": ("bcam", {"polarity": "none"}, "prob"),
    "B-CAM mask": ("bcam", {}, "mask"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", default=str(REPO / "runs"))
    parser.add_argument("--cub-metadata", default=str(REPO / "data" / "cub10"))
    parser.add_argument("--out", default=str(REPO / "data" / "cub10-crops"))
    args = parser.parse_args()
    cub, out = Path(args.cub_metadata), Path(args.out)
    if not (cub / "train").is_dir():
        subprocess.run([sys.executable, "-m", "wsol", "prepare", "cub", "--root", str(SHARED_CUB),
                        "--out", str(cub)], cwd=REPO, check=True)
    if not (out / "metadata" / "train").is_dir():
        subprocess.run([sys.executable, "-m", "wsol", "prepare", "crops", "--from", str(cub),
                        "--image-root", str(SHARED_CUB / "images"), "--out", str(out),
                        "--seed", "0", "--workers", "2"], cwd=REPO, check=True)
    data = [f"data.root={out / 'images'}", f"data.metadata={out / 'metadata'}"]
    runs = {"cream": Path(args.runs) / f"cub10-crops-seed{args.seed}-cream",
            "bcam": Path(args.runs) / f"cub10-crops-seed{args.seed}-bcam"}
    times = {"cream": train("cream_efficientnet_lite0_cub10", runs["cream"], args.seed,
                            out / "metadata", ["method.stage=cam"], out / "images"),
             "bcam": train("bcam_efficientnet_lite0_cub10", runs["bcam"], args.seed,
                           out / "metadata", [], out / "images")}
    table = {row: evaluate(runs[run], overrides, eval_type, data)
             for row, (run, overrides, eval_type) in ROWS.items()}
    for row, res in table.items():
        print(f"{row:40s} MaxBoxAccV2 {res['MaxBoxAccV2']:.2f} inside_gt_share "
              f"{res['inside_gt_share']:.3f}", flush=True)
    cover = json.loads((out / "crops.json").read_text()) if (out / "crops.json").is_file() else None
    write_result("cub10_crops", {
        "what": "CUB subset cropped around the boxes (box covers 40-100% of each crop, seed 0); "
                "EfficientNet-Lite0 (ImageNet), the shipped CUB-subset configs with only the data "
                "paths changed, selection on val, test = 243 crops",
        "seed": args.seed, "cream_inference_settings": CREAM_VAL_SETTINGS, "crops": cover,
        "table": {row: {k: v for k, v in res.items() if k != "box_acc_curve_50"}
                  for row, res in table.items()},
        "train_time_s": times})


if __name__ == "__main__":
    main()

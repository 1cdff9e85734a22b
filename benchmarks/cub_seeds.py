"""The headline CUB-subset table (CAM, CREAM, B-CAM) as mean +- std over seeds.

    python benchmarks/cub_seeds.py [--seeds 0 1 2] [--runs runs]

For every seed: `wsol train` with the shipped CREAM config (CAM's loss, CREAM's embeddings on
the side, model selection on val MaxBoxAccV2 of the CAM map, so the CAM row and the CREAM rows
share one training) and with the shipped B-CAM config, then the selected checkpoints are
evaluated on the 243 test images through the engine's evaluation (the one maps pipeline):
CAM (`method.stage=cam`), CREAM calibrated and fused with the inference settings chosen on val
by benchmarks/cub_subset.py (feature_normalization=l2, iterations=3, tau=0.3), B-CAM (its
gradient map, eval type prob) and B-CAM's threshold-free mask. Runs that already finished are
not retrained. Writes benchmarks/results/cub10_seeds.json; seeds already in that file and not
named in ``--seeds`` are kept (with the commit that produced them, ``seed_commits``), so
``--seeds 1 2`` adds two seeds to a finished seed 0 without retraining it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import FP32, REPO, RESULTS, git_commit, write_result

SHARED_CUB = REPO.parent / "shared" / "data" / "CUB_200_2011-classes001-010"
KEYS = ("top1_cls", "top1_loc", "gt_known_loc", "MaxBoxAccV2", "MaxBoxAcc", "inside_gt_share")
CREAM_VAL_SETTINGS = {"feature_normalization": "l2", "iterations": 3, "tau": 0.3}
ROWS = {
    "CAM": ("cream", {"stage": "cam"}, "prob"),
    "CREAM calibrated": ("cream", {"stage": "calibrated", **CREAM_VAL_SETTINGS}, "prob"),
    "CREAM fused": ("cream", {"stage": "fused", **CREAM_VAL_SETTINGS}, "prob"),
    "B-CAM": ("bcam", {}, "prob"),
    "B-CAM mask": ("bcam", {}, "mask"),
}


def train(config: str, run_dir: Path, seed: int, metadata: Path, extra: list[str],
          image_root: Path | None = None) -> float:
    if (run_dir / "results.json").is_file():
        return 0.0
    cmd = [sys.executable, "-m", "wsol", "train", "--config", config, "--run-dir", str(run_dir),
           f"seed={seed}", f"data.metadata={metadata}",
           f"data.root={image_root or SHARED_CUB / 'images'}", "--no-progress", *FP32, *extra]
    if (run_dir / "checkpoints" / "last.pt").is_file():
        cmd = [sys.executable, "-m", "wsol", "train", "--resume", "--run-dir", str(run_dir),
               "--no-progress"]
    t0 = time.time()
    subprocess.run(cmd, cwd=REPO, check=True)
    return time.time() - t0


def evaluate(run_dir: Path, method_overrides: dict, eval_type: str,
             data_overrides: list[str] | None = None) -> dict:
    from wsol.engine.checkpoint import load_method
    from wsol.engine.train import evaluate_split

    method, info = load_method(run_dir / "checkpoints" / "best.pt",
                               method_overrides=method_overrides,
                               overrides=data_overrides or [])
    res = evaluate_split(method, info["config"], "test", method.backbone.classifier.weight.device,
                         method.backbone, eval_type=eval_type)
    return {**{k: res[k] for k in KEYS if k in res}, "epoch": info["epoch"],
            "box_acc_curve_50": res["box_acc_curves"]["50"]}


def write_table(per_seed: dict, seed_commits: dict, times: dict) -> None:
    """Mean +- sample std over the seeds done so far; written after every seed."""
    table: dict = {}
    for row in ROWS:
        table[row] = {}
        for key in KEYS:
            values = [per_seed[s][row][key] for s in per_seed if per_seed[s][row].get(key)
                      is not None]
            if values:
                table[row][key] = {"mean": round(statistics.mean(values), 2),
                                   "std": round(statistics.stdev(values), 2)
                                   if len(values) > 1 else 0.0, "values": values}
    write_result("cub10_seeds", {
        "what": "CUB subset (classes 1-10): EfficientNet-Lite0 (ImageNet), 10 epochs on 250 "
                "images, selection on the 50-image val split, test = 243 images; mean +- "
                "sample std over seeds",
        "seeds": sorted(int(s) for s in per_seed), "seed_commits": seed_commits,
        "cream_inference_settings": CREAM_VAL_SETTINGS,
        "table": table, "per_seed": per_seed, "train_time_s": times})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--runs", default=str(REPO / "runs"))
    parser.add_argument("--metadata", default=str(REPO / "data" / "cub10"))
    args = parser.parse_args()
    metadata = Path(args.metadata)
    if not (metadata / "train").is_dir():
        subprocess.run([sys.executable, "-m", "wsol", "prepare", "cub", "--root", str(SHARED_CUB),
                        "--out", str(metadata)], cwd=REPO, check=True)
    previous_path = RESULTS / "cub10_seeds.json"
    previous = json.loads(previous_path.read_text()) if previous_path.is_file() else {}
    wanted = {str(s) for s in args.seeds}
    per_seed: dict[str, dict] = {s: v for s, v in previous.get("per_seed", {}).items()
                                 if s not in wanted}
    seed_commits: dict[str, str] = {s: previous.get("seed_commits", {}).get(s, previous["commit"])
                                    for s in per_seed}
    times: dict[str, float] = {k: v for k, v in previous.get("train_time_s", {}).items()
                               if k.split("/")[-1] not in wanted}
    commit = git_commit()
    for seed in args.seeds:
        runs = {"cream": Path(args.runs) / f"cub10-seed{seed}-cream",
                "bcam": Path(args.runs) / f"cub10-seed{seed}-bcam"}
        times[f"cream/{seed}"] = train("cream_efficientnet_lite0_cub10", runs["cream"], seed,
                                       metadata, ["method.stage=cam"])
        times[f"bcam/{seed}"] = train("bcam_efficientnet_lite0_cub10", runs["bcam"], seed,
                                      metadata, [])
        per_seed[str(seed)] = {row: evaluate(runs[run], overrides, eval_type)
                               for row, (run, overrides, eval_type) in ROWS.items()}
        seed_commits[str(seed)] = commit
        print(seed, {r: round(v["MaxBoxAccV2"], 2) for r, v in per_seed[str(seed)].items()},
              flush=True)
        write_table(per_seed, seed_commits, times)


if __name__ == "__main__":
    main()

"""B-CAM on the real CUB subset next to CAM and CREAM (same data, split, backbone and budget).

    python benchmarks/cub_bcam.py [--run-dir runs/cub10-bcam] [--cam-run runs/cub10-cream]

1. Trains `configs/bcam_efficientnet_lite0_cub10.yaml` (same schedule, frozen stages and
   selection rule as the CAM/CREAM config) with two settings of the stagger loss weights
   (r_ff/r_fb/r_bf/r_bb = 1/1/1/1, the ResNet default, and 1/0.4/0.4/0.2, the VGG/Inception
   default, which val selected and is now EfficientNet's default), unless the run directories
   hold finished runs. (The first run, runs/cub10-bcam, was trained when 1/1/1/1 was
   EfficientNet's default and has no rate keys in its config.yaml.)
2. Evaluates each on val and test: the official gradient map (`map_type=gradient`, CUB variant)
   and the classifier-weight map (`map_type=weight`) through the threshold sweep (eval type
   `prob`), and the threshold-free mask 1[fore > back] (eval type `mask`: its box accuracy).
   B-CAM's headline row is the (loss weights, map type) pair with the higher val MaxBoxAccV2.
3. Training cost: B-CAM's epoch time over CAM's from the two runs' metrics.csv (machine load may
   differ between runs) and, steadier, the ratio of one training step's time measured
   alternately in this process (EfficientNet-Lite0, batch 32, 224, frozen stages as configured).
4. Reads CAM's and CREAM's test rows from benchmarks/results/cub10_cream.json.

Writes benchmarks/results/cub10_bcam.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from _common import FP32, REPO, RESULTS, write_result

from wsol.config import load_config
from wsol.engine.build import build_from_config
from wsol.engine.checkpoint import load_method
from wsol.engine.train import evaluate_split

CONFIG = REPO / "configs" / "bcam_efficientnet_lite0_cub10.yaml"
KEYS = ("top1_cls", "top1_loc", "gt_known_loc", "MaxBoxAccV2", "MaxBoxAcc", "max_box_acc_by_iou")


CANDIDATES = {
    "w1-1-1-1": ["method.rate_ff=1.0", "method.rate_fb=1.0", "method.rate_bf=1.0",
                 "method.rate_bb=1.0"],
    "w1-0.4-0.4-0.2": ["method.rate_ff=1.0", "method.rate_fb=0.4", "method.rate_bf=0.4",
                       "method.rate_bb=0.2"],
}


def ensure_run(run_dir: Path, overrides: list[str]) -> None:
    if (run_dir / "results.json").is_file():
        return
    cmd = [sys.executable, "-m", "wsol", "train", "--config", str(CONFIG), "--run-dir",
           str(run_dir), "--no-progress", *FP32, *overrides]
    if (run_dir / "checkpoints" / "last.pt").is_file():
        cmd.append("--resume")
    subprocess.run(cmd, cwd=REPO, check=True)


def epoch_times(run_dir: Path) -> list[float]:
    return [float(r["epoch_time_s"]) for r in csv.DictReader(open(run_dir / "metrics.csv"))]


def step_time_ratio(reps: int = 4) -> dict:
    """Median time of one SGD step, B-CAM vs CAM, alternating on the same batch."""
    torch.manual_seed(0)
    out = {}
    methods = {}
    for name, cfg_name in (("cam", "cam"), ("bcam", "bcam")):
        cfg = load_config(REPO / "configs" / f"{cfg_name}_efficientnet_lite0_cub10.yaml")
        methods[name] = build_from_config(cfg, num_classes=10, pretrained=False).train()
    images = torch.randn(32, 3, 224, 224)
    labels = torch.randint(0, 10, (32,))
    opts = {n: torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1e-6)
            for n, m in methods.items()}

    def step(name: str) -> float:
        m, opt = methods[name], opts[name]
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        m.loss(m(images), labels).backward()
        opt.step()
        return time.perf_counter() - t0

    for name in methods:
        step(name)
    times = {n: [] for n in methods}
    for _ in range(reps):
        for name in methods:
            times[name].append(step(name))
    for name, ts in times.items():
        out[f"{name}_step_s"] = round(statistics.median(ts), 4)
    out["ratio_bcam_over_cam"] = round(out["bcam_step_s"] / out["cam_step_s"], 4)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run-dir", default=str(REPO / "runs" / "cub10-bcam"))
    parser.add_argument("--cam-run", default=str(REPO / "runs" / "cub10-cream"))
    args = parser.parse_args()
    t0 = time.time()
    device = torch.device("cpu")
    rows: dict[str, dict] = {}
    run_dirs = {}
    for name, overrides in CANDIDATES.items():
        run_dir = Path(args.run_dir) if name == "w1-1-1-1" else Path(f"{args.run_dir}-{name}")
        run_dirs[name] = run_dir
        ensure_run(run_dir, overrides)
        for map_type in ("gradient", "weight"):
            method, info = load_method(run_dir / "checkpoints" / "best.pt",
                                       overrides=[f"method.map_type={map_type}"])
            for split in ("val", "test"):
                res = evaluate_split(method, info["config"], split, device, method.backbone)
                rows[f"{name}/{split}/{map_type}/prob"] = {k: res[k] for k in KEYS}
                res = evaluate_split(method, info["config"], split, device, method.backbone,
                                     eval_type="mask")
                rows[f"{name}/{split}/{map_type}/mask"] = {k: res[k] for k in KEYS}
    best_name, best_map = max(
        ((n, m) for n in CANDIDATES for m in ("gradient", "weight")),
        key=lambda nm: rows[f"{nm[0]}/val/{nm[1]}/prob"]["MaxBoxAccV2"])
    run_dir = run_dirs[best_name]
    cam_times, bcam_times = epoch_times(Path(args.cam_run)), epoch_times(run_dir)
    others = {}
    cream_file = RESULTS / "cub10_cream.json"
    if cream_file.is_file():
        cream = json.loads(cream_file.read_text())
        others = cream["table5_test"]
    write_result("cub10_bcam", {
        "what": "B-CAM vs CAM and CREAM on the CUB subset (EfficientNet-Lite0, same budget)",
        "config": str(CONFIG.relative_to(REPO)), "selected_run_dir": str(run_dir),
        "selected_on_val": {"loss_weights": best_name, "map_type": best_map},
        "candidates": {n: {"overrides": o, "run_dir": str(run_dirs[n])}
                       for n, o in CANDIDATES.items()},
        "test": {"B-CAM (prob, selected)": rows[f"{best_name}/test/{best_map}/prob"],
                 "B-CAM (threshold-free mask, selected)":
                     rows[f"{best_name}/test/{best_map}/mask"],
                 **{k: v for k, v in others.items()}},
        "all_rows": rows,
        "training_time": {
            "cam_epoch_times_s": cam_times, "bcam_epoch_times_s": bcam_times,
            "epoch_time_ratio_medians": round(statistics.median(bcam_times)
                                              / statistics.median(cam_times), 4),
            "step_time_alternating": step_time_ratio()},
        "wall_time_s_this_script": round(time.time() - t0, 1)})


if __name__ == "__main__":
    main()

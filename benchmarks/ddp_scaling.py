"""Training throughput with 1 vs 2 processes on this machine (torchrun, gloo, CPU).

Runs one epoch of CAM training (EfficientNet-Lite0 at 224, batch 32 per process, the CUB subset's
train split) as `wsol train` in one process and under `torchrun --nproc_per_node=2`, and reports
images per second from the epoch time in metrics.csv. One process uses all cores (torch's
default threads); torchrun gives each of its processes OMP_NUM_THREADS=1, as it does by default.

    python benchmarks/ddp_scaling.py [--metadata data/cub10] [--model efficientnet_lite0]
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import FP32, REPO, write_result

SHARED_CUB = REPO.parent / "shared" / "data" / "CUB_200_2011-classes001-010"


def run(nproc: int, args: argparse.Namespace, tmp: Path) -> dict:
    run_dir = tmp / f"np{nproc}"
    launcher = ([sys.executable, "-m", "wsol"] if nproc == 1 else
                [sys.executable, "-m", "torch.distributed.run", "--standalone",
                 f"--nproc_per_node={nproc}", "-m", "wsol"])
    cmd = launcher + ["train", "--no-progress", "--run-dir", str(run_dir),
                      f"model.name={args.model}", f"model.pretrained={args.pretrained}",
                      f"data.root={args.image_root}", f"data.metadata={args.metadata}",
                      "data.val_split=null", "data.test_splits=[]", "data.num_workers=0",
                      f"data.batch_size={args.batch_size}", f"optim.epochs={args.epochs}",
                      "device=cpu", *FP32]
    subprocess.run(cmd, cwd=REPO, check=True)
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    n_images = sum(1 for line in open(Path(args.metadata) / "train" / "image_ids.txt")
                   if line.strip())
    times = [float(r["epoch_time_s"]) for r in rows]
    best = min(times)
    return {"processes": nproc, "epoch_times_s": times, "images": n_images,
            "images_per_s": round(n_images / best, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--metadata", default=str(REPO / "data" / "cub10"))
    parser.add_argument("--image-root", default=str(SHARED_CUB / "images"))
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--pretrained", default="true")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    if not (Path(args.metadata) / "train").is_dir():
        subprocess.run([sys.executable, "-m", "wsol", "prepare", "cub", "--root",
                        str(SHARED_CUB), "--out", args.metadata], cwd=REPO, check=True)
    with tempfile.TemporaryDirectory() as tmp:
        results = [run(n, args, Path(tmp)) for n in (1, 2)]
    speedup = results[1]["images_per_s"] / results[0]["images_per_s"]
    write_result("ddp_scaling", {
        "what": "CAM training throughput, 1 vs 2 processes (torchrun, gloo)",
        "model": args.model, "batch_size_per_process": args.batch_size,
        "runs": results, "speedup_2_over_1": round(speedup, 3)})


if __name__ == "__main__":
    main()

"""bf16 autocast + channels_last on the CUB subset: does the accuracy hold, and what does it buy?

    python benchmarks/cub_amp.py [--fp32-run runs/cub10-zoo/cam] [--runs runs]

Trains the shipped CREAM config (CAM's training, CREAM learned on the side; seed 0, the
budget and val selection of the README table) with ``train.amp=bf16 train.channels_last=true``
and compares it with the same config trained in fp32 (``train.amp=false``, pinned: the default
``auto`` picks bf16 on hardware that has it) (``--fp32-run``, e.g. the zoo's CAM run or
the seed-0 run of cub_seeds.py; trained here if absent). Each checkpoint is evaluated on the
243 test images at stage cam and calibrated, with the evaluation forward in fp32 and in
bf16 + channels_last. Records MaxBoxAccV2, top1_loc, gt_known_loc, top1_cls and the training
epoch times (img/s). Writes benchmarks/results/cub10_amp.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

from _common import REPO, write_result

from wsol.config import load_config, resolve_config_path

SHARED_CUB = REPO.parent / "shared" / "data" / "CUB_200_2011-classes001-010"
CONFIG = "cream_efficientnet_lite0_cub10"
KEYS = ("MaxBoxAccV2", "top1_loc", "gt_known_loc", "top1_cls")
EVAL_MODES = {"fp32": ["eval.amp=false", "eval.channels_last=false"],
              "bf16+channels_last": ["eval.amp=bf16", "eval.channels_last=true"]}


def cream_inference() -> list[str]:
    """CREAM's inference setting as the shipped config has it, passed explicitly: an fp32 run
    trained before the config carried it has the paper's values in its checkpoint."""
    method = load_config(resolve_config_path(CONFIG))["method"]
    return [f"method.{key}={method[key]}"
            for key in ("iterations", "feature_normalization", "inference_tau")]


def wsol(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "wsol", *args], cwd=REPO, check=True)


def data_args(metadata: Path) -> list[str]:
    return [f"data.metadata={metadata}", f"data.root={SHARED_CUB / 'images'}"]


def train(run_dir: Path, metadata: Path, extra: list[str]) -> dict:
    if not (run_dir / "results.json").is_file():
        if (run_dir / "checkpoints" / "last.pt").is_file():
            wsol("train", "--run-dir", str(run_dir), "--resume", "--no-progress")
        else:
            wsol("train", "--config", CONFIG, "--run-dir", str(run_dir), "--no-progress",
                 "seed=0", *data_args(metadata), *extra)
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    times = [float(r["epoch_time_s"]) for r in rows if r.get("epoch_time_s")]
    median = sorted(times)[len(times) // 2]
    return {"epoch_time_s": times, "median_epoch_time_s": median,
            "train_images_per_s": round(250 / median, 2)}


def evaluate(run_dir: Path, metadata: Path, stage: str, mode: str) -> dict:
    out = run_dir / "eval" / f"amp-test-{stage}-{mode.replace('+', '_')}.json"
    wsol("evaluate", "--checkpoint", str(run_dir / "checkpoints" / "best.pt"), "--split", "test",
         "--output", str(out), "--force", "--no-progress", f"method.stage={stage}",
         *(cream_inference() if stage != "cam" else []), *EVAL_MODES[mode],
         *data_args(metadata))
    res = json.loads(out.read_text())
    return {k: res[k] for k in KEYS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fp32-run", default=str(REPO / "runs" / "cub10-zoo" / "cam"))
    parser.add_argument("--runs", default=str(REPO / "runs"))
    parser.add_argument("--metadata", default=str(REPO / "data" / "cub10"))
    args = parser.parse_args()
    metadata = Path(args.metadata)
    if not (metadata / "train").is_dir():
        wsol("prepare", "cub", "--root", str(SHARED_CUB), "--out", str(metadata))
    runs = {"fp32": (Path(args.fp32_run), ["train.amp=false", "train.channels_last=false"]),
            "bf16+channels_last": (Path(args.runs) / "cub10-amp-bf16-cl",
                                   ["train.amp=bf16", "train.channels_last=true"])}
    result: dict = {}
    for name, (run_dir, extra) in runs.items():
        entry = {"run_dir": str(run_dir), "training": train(run_dir, metadata, extra)}
        for stage in ("cam", "calibrated"):
            for mode in EVAL_MODES:
                entry[f"{stage}/{mode}"] = evaluate(run_dir, metadata, stage, mode)
        result[name] = entry
        print(name, {k: v["MaxBoxAccV2"] for k, v in entry.items() if "/" in k}, flush=True)
    base, fast = result["fp32"], result["bf16+channels_last"]
    delta = {f"{stage}/{mode}": round(fast[f"{stage}/{mode}"]["MaxBoxAccV2"]
                                      - base[f"{stage}/fp32"]["MaxBoxAccV2"], 2)
             for stage in ("cam", "calibrated") for mode in EVAL_MODES}
    write_result("cub10_amp", {
        "what": "CUB subset, shipped CREAM config, seed 0: fp32 vs bf16 autocast + channels_last "
                "training, each evaluated with an fp32 and a bf16 + channels_last forward",
        "training_mode": result,
        "MaxBoxAccV2_delta_vs_fp32": delta,
        "train_speedup": round(base["training"]["median_epoch_time_s"]
                               / fast["training"]["median_epoch_time_s"], 3)})


if __name__ == "__main__":
    main()

"""Time the box evaluator: the reference-style path against the fast path, same numbers required.

On the 120 parity maps of ``../shared/fixtures/metric-parity/boxes`` (224x224, cast to float64 as
the reference did) at cam_curve_interval 0.001 (1000 thresholds), all contours (MaxBoxAccV2):

- slow: :func:`wsol.localization.reference.reference_num_correct`, one ``cv2.threshold`` +
  ``cv2.findContours`` per threshold and per-contour ``boundingRect`` as wsolevaluation does;
- fast: :class:`wsol.metrics.BoxAccumulator` (one ``findContours`` per distinct binarization, on
  its crop; vectorized boxes and IoU; it counts v1 and v2 in the same pass).

Both must give identical ``num_correct`` per IoU and threshold, equal to reference.json. Reports
wall-clock and CPU (process) ms/image; the machine may be shared, so CPU time is the steadier
number. Writes ``benchmarks/results/evaluator.json``.

    python benchmarks/bench_evaluator.py [--interval 0.001] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from wsol.data.metadata import read_metadata
from wsol.localization.reference import reference_num_correct
from wsol.metrics import BoxAccumulator
from wsol.metrics.boxes import V2
from wsol.metrics.evaluator import gt_boxes_in_eval_geometry

IOUS = (30, 50, 70)


def _timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fixtures",
                        default=str(REPO.parent / "shared" / "fixtures" / "metric-parity"
                                    / "boxes"))
    parser.add_argument("--interval", type=float, default=0.001)
    parser.add_argument("--repeats", type=int, default=3,
                        help="fast-path repeats (the best is kept)")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "evaluator.json"))
    args = parser.parse_args(argv)

    root = Path(args.fixtures)
    meta = read_metadata(root / "metadata" / "test")
    with np.load(root / "scoremaps.npz") as npz:
        maps = np.stack([npz[i] for i in meta.image_ids]).astype(np.float64)
    gt_all = gt_boxes_in_eval_geometry(meta)
    gts = [gt_all[i] for i in meta.image_ids]
    thresholds = np.arange(0, 1, args.interval)
    n = len(maps)
    cv2.setNumThreads(1)  # findContours is single-threaded anyway; keep the comparison fair
    load_before = os.getloadavg()

    slow, slow_wall, slow_cpu = _timed(
        lambda: reference_num_correct(list(maps), gts, thresholds, IOUS, True))

    def fast_pass():
        acc = BoxAccumulator(thresholds, IOUS, multi_contour=True)
        for start in range(0, n, 32):
            acc.update(maps[start:start + 32], gts[start:start + 32])
        return acc

    runs = [_timed(fast_pass) for _ in range(max(1, args.repeats))]
    acc = runs[0][0]
    fast_wall = min(r[1] for r in runs)
    fast_cpu = min(r[2] for r in runs)

    identical = all(np.array_equal(acc.num_correct[V2, i].numpy(), slow[d])
                    for i, d in enumerate(IOUS))
    reference = json.loads((root / "reference.json").read_text())
    ref = [r for r in reference["results"]
           if r["cam_curve_interval"] == args.interval and r["multi_contour_eval"]]
    matches_reference = bool(ref) and all(
        acc.num_correct[V2, i].tolist() == ref[0]["num_correct"][str(d)]
        for i, d in enumerate(IOUS))
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "git_commit": _git_commit(),
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "opencv": cv2.__version__,
            "torch": torch.__version__,
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        },
        "setting": {"images": n, "map_size": list(maps.shape[1:]),
                    "cam_curve_interval": args.interval, "thresholds": len(thresholds),
                    "iou_thresholds": list(IOUS), "multi_contour": True},
        "slow_reference_path": {"ms_per_image_wall": 1000 * slow_wall / n,
                                "ms_per_image_cpu": 1000 * slow_cpu / n},
        "fast_path": {"ms_per_image_wall": 1000 * fast_wall / n,
                      "ms_per_image_cpu": 1000 * fast_cpu / n, "repeats": len(runs),
                      "note": "best of the repeats; v1 and v2 counted in the same pass"},
        "speedup_wall": slow_wall / fast_wall,
        "speedup_cpu": slow_cpu / fast_cpu,
        "identical_num_correct": identical,
        "fast_equals_reference_json": matches_reference,
        "MaxBoxAccV2": acc.compute()["MaxBoxAccV2"],
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for label, key in (("slow (reference-style)", "slow_reference_path"), ("fast", "fast_path")):
        print(f"{label:<22}: {result[key]['ms_per_image_wall']:8.2f} ms/image wall,"
              f" {result[key]['ms_per_image_cpu']:8.2f} CPU")
    print(f"speedup {result['speedup_wall']:.1f}x wall, {result['speedup_cpu']:.1f}x CPU;"
          f" identical counts: {identical}; equal to reference.json: {matches_reference}")
    print(f"wrote {out}")
    return 0 if identical and matches_reference else 1


if __name__ == "__main__":
    raise SystemExit(main())

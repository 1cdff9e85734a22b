"""OpenMP wait policy: torch's default (threads spin a while at barriers) against
``OMP_WAIT_POLICY=PASSIVE`` (threads sleep at once), to see whether spinning OpenMP threads take
the cores that ``evaluate``'s decode and evaluator threads need. The run of 2026-12-03
(``results/omp_wait.json``, 5 pairs) says no: PASSIVE gave 0.86x ``evaluate``, 1.07x
``Localizer`` and 0.96x the bare forward, all within the machine's noise, so wsol does not set
it (a first 3-pair run with training epochs agreed: 0.95-1.01x).

    python benchmarks/bench_omp_wait.py [--pairs 3] [--skip-train]

Each measurement is a fresh process, since OpenMP reads the variable once, when torch loads it;
the two policies alternate, ``--pairs`` times. A process measures, at the default precision
(``auto``) on the CUB subset (the setting of ``bench_pipeline.py``), the bare forward, ``evaluate``
and ``Localizer`` in img/s (best of 2), then one training epoch (not with ``--skip-train``). Writes
benchmarks/results/omp_wait.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from _common import REPO, write_result

POLICIES = {"default": None, "PASSIVE": "PASSIVE"}


def child(metadata: Path, train: bool) -> None:
    import torch

    from bench_pipeline import (DEFAULT, SHARED_CUB, bare_forward, base_config, evaluate_once,
                                localize_once, train_epoch)
    from wsol.engine.build import build_from_config
    from wsol.engine.data import build_split

    config = base_config(metadata, None)
    method = build_from_config(config, num_classes=10).eval()
    dataset, meta, _ = build_split(config, "test", train=False, backbone=method.backbone)
    images = list(torch.stack([dataset[i]["image"] for i in range(len(dataset))]).split(32))
    paths = [SHARED_CUB / "images" / i for i in meta.image_ids]
    out = {"bare_forward": 0.0, "evaluate": 0.0, "localize": 0.0}
    for _ in range(2):
        out["bare_forward"] = max(out["bare_forward"], bare_forward(method, images, *DEFAULT))
        out["evaluate"] = max(out["evaluate"], evaluate_once(method, config, *DEFAULT)[0])
        out["localize"] = max(out["localize"], localize_once(method, paths, *DEFAULT))
    if train:
        out["train_epoch"] = train_epoch(config, *DEFAULT)
    print("RESULT " + json.dumps(out), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--metadata", default=str(REPO / "data" / "cub10"))
    parser.add_argument("--skip-train", action="store_true", help="no training epoch")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.metadata), not args.skip_train)
        return
    runs: dict[str, list[dict]] = {name: [] for name in POLICIES}
    for pair in range(args.pairs):
        for name, value in POLICIES.items():
            env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
            if value is not None:
                env["OMP_WAIT_POLICY"] = value
            proc = subprocess.run([sys.executable, __file__, "--child", "--metadata",
                                   args.metadata, *(["--skip-train"] if args.skip_train else [])],
                                  env=env, capture_output=True, text=True,
                                  check=True, cwd=REPO)
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
            runs[name].append(json.loads(line[len("RESULT "):]))
            print(pair, name, runs[name][-1], flush=True)
    keys = ("bare_forward", "evaluate", "localize") + (() if args.skip_train else
                                                       ("train_epoch",))
    best = {name: {k: max(r[k] for r in rs) for k in keys} for name, rs in runs.items()}
    for b in best.values():
        b["evaluate_vs_bare_forward"] = round(b["evaluate"] / b["bare_forward"], 3)
        b["localize_vs_bare_forward"] = round(b["localize"] / b["bare_forward"], 3)
    write_result("omp_wait", {
        "what": "img/s at the default precision (auto), CUB subset, EfficientNet-Lite0 with a "
                "fresh head, batch 32; one process per measurement, policies alternating; "
                "best over pairs (each process: best of 2, one training epoch)",
        "pairs": args.pairs, "runs": runs, "best": best,
        "passive_over_default": {k: round(best["PASSIVE"][k] / best["default"][k], 3)
                                 for k in keys}})


if __name__ == "__main__":
    main()

"""glibc's allocator thresholds and the forward pass: fresh processes alternating with and
without ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` raised, bare forward in one call
per batch and in the default streams layout, and `evaluate` at the default settings.

    python benchmarks/bench_malloc.py [--pairs 3]

glibc maps every allocation above its mmap threshold afresh and returns it on free; the
threshold grows with the blocks freed, up to 32 MB on 64-bit. A one-call forward of 32 images
at 224 allocates activations above that, so each is faulted in again at every batch; chunks of
4 images stay below it. wsol does not change the allocator (a process-wide setting; this
measures whether it should). Same data and model as ``bench_pipeline.py`` (the CUB subset's 243
test images, EfficientNet-Lite0 with its ImageNet weights and a seeded fresh 10-class head).
Each process reports the best of 2; medians over ``--pairs``; writes
benchmarks/results/malloc.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from _common import REPO, prepare_cub, write_result

RAISED = {"MALLOC_MMAP_THRESHOLD_": str(256 << 20), "MALLOC_TRIM_THRESHOLD_": str(512 << 20)}

CHILD = r"""
import json, sys
sys.path.insert(0, {bench!r})
import torch
import bench_pipeline as bp
from pathlib import Path
from wsol.engine.build import build_from_config
from wsol.engine.data import build_split
config = bp.base_config(Path({metadata!r}), None)
torch.manual_seed(0)
method = build_from_config(config, num_classes=10).eval()
dataset, meta, _ = build_split(config, "test", train=False, backbone=method.backbone)
images = list(torch.stack([dataset[i]["image"] for i in range(len(dataset))]).split(32))
auto = ("auto", "auto", "auto", "auto")
out = {{"bare_forward_one_call": max(bp.bare_forward(method, images, "auto", "auto")
                                     for _ in range(2)),
        "bare_forward_default_layout": max(bp.bare_forward(method, images, *auto)
                                           for _ in range(2)),
        "evaluate": max(bp.evaluate_once(method, config, *auto)[0] for _ in range(2))}}
print("RESULT " + json.dumps(out))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--metadata", default=str(REPO / "data" / "cub10"))
    args = parser.parse_args()
    shared = REPO.parent / "shared" / "data" / "CUB_200_2011-classes001-010"
    if not shared.is_dir():
        print(f"bench_malloc: skipped: needs {shared}")
        return
    metadata = Path(args.metadata)
    prepare_cub(metadata, shared)
    code = CHILD.format(bench=str(REPO / "benchmarks"), metadata=str(metadata))
    base_env = {k: v for k, v in os.environ.items() if k not in RAISED}
    rows: dict[str, list[dict]] = {"default": [], "raised": []}
    for pair in range(args.pairs):
        for arm in (("default", "raised") if pair % 2 == 0 else ("raised", "default")):
            env = dict(base_env, **(RAISED if arm == "raised" else {}))
            proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env,
                                  capture_output=True, text=True, check=True)
            line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
            rows[arm].append(json.loads(line[len("RESULT "):]))
            print(pair, arm, {k: round(v, 1) for k, v in rows[arm][-1].items()}, flush=True)
    keys = rows["default"][0].keys()
    median = {arm: {k: statistics.median(r[k] for r in rs) for k in keys}
              for arm, rs in rows.items()}
    ratio = {k: median["raised"][k] / median["default"][k] for k in keys}
    print({k: round(v, 3) for k, v in ratio.items()})
    write_result("malloc", {
        "what": "img/s, fresh processes alternating (order flipped every pair), best of 2 per "
                "process, medians over pairs; 243 CUB test images, batch 32 at 224, bf16 + "
                "channels_last (auto)",
        "raised": RAISED, "pairs": args.pairs, "img_per_s_median": median,
        "raised_over_default": ratio, "all": rows})


if __name__ == "__main__":
    main()

"""Shared by the benchmark scripts: provenance (command, commit, machine) and result writing."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

#: The precision every committed accuracy result was produced in. wsol's default is ``auto``
#: (bf16 + channels_last where the hardware has bf16, wsol.utils.precision); the benchmarks
#: that reproduce documented numbers pin float32 so that rerunning them gives those numbers.
#: benchmarks/cub_amp.py measures what ``auto`` changes. ``eval.streams=1``: those numbers came
#: from one call per batch; ``auto`` streams already keep that in float32 (wsol.utils.streams),
#: the pin only makes it explicit.
FP32 = ["train.amp=false", "train.channels_last=false", "eval.amp=false",
        "eval.channels_last=false", "eval.streams=1"]


def git_commit() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, check=True).stdout.strip()
        # The results a run writes are not part of the code it ran: a script that follows
        # another in the same worktree must not call that run's commit dirty.
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                ".", ":(exclude)benchmarks/results"],
                               cwd=REPO, capture_output=True, text=True).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> dict:
    import numpy
    import torch

    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "device": "cpu",
    }
    try:
        import cv2

        info["opencv"] = cv2.__version__
    except ImportError:
        pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info


def provenance() -> dict:
    return {"command": " ".join([Path(sys.executable).name, *sys.argv]),
            "commit": git_commit(), "machine": machine(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def write_result(name: str, payload: dict) -> Path:
    """Write ``benchmarks/results/<name>.json`` with provenance first."""
    from wsol.utils.io import atomic_write_json

    path = RESULTS / f"{name}.json"
    atomic_write_json(path, {**provenance(), **payload})
    print(f"wrote {path}")
    return path


def prepare_cub(metadata: Path, root: Path) -> None:
    """``wsol prepare cub`` of the CUB images at ``root`` into ``metadata``, unless its train
    and test splits are there already."""
    metadata = Path(metadata)
    if not all((metadata / split).is_dir() for split in ("train", "test")):
        subprocess.run([sys.executable, "-m", "wsol", "prepare", "cub", "--root", str(root),
                        "--out", str(metadata)], cwd=REPO, check=True)

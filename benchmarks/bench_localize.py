"""Throughput of ``wsol localize`` (images/s) on the CUB-200-2011 test images of classes 1-10.

Runs the command exactly as a user does (a fresh ``python -m wsol localize`` process on the image
files) and reports two rates:

- ``end_to_end``: images / wall time of the whole command (interpreter start, checkpoint load,
  decoding, forward, boxes, overlays, maps, JSON/CSV);
- ``pipeline``: images / the command's own timing of its batch loop (``manifest.json``
  ``seconds``: decode + forward + boxes + writing overlays and maps).

The test images are those of ``images.txt`` whose ``train_test_split.txt`` flag is 0 (243 in
``../shared/data/CUB_200_2011-classes001-010``).

Usage (from the repository root)::

    python benchmarks/bench_localize.py --checkpoint runs/cub_cam/checkpoints/best.pt
    python benchmarks/bench_localize.py --tiny --limit 5          # smoke run, random tiny_cnn

Prints the result and writes it with provenance (command, commit, machine) to
``benchmarks/results/localize.json`` (``localize_smoke.json`` for ``--tiny`` or ``--limit``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, write_result

if str(REPO) not in sys.path:  # run as a script from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO))
DEFAULT_CUB = Path(os.environ.get("WSOL_SHARED", REPO.parent / "shared")) / "data" / \
    "CUB_200_2011-classes001-010"


def cub_test_images(root: Path) -> list[Path]:
    """The test images (``is_training_image == 0``) listed in ``images.txt``, in its order."""
    for name in ("images.txt", "train_test_split.txt"):
        if not (root / name).is_file():
            raise FileNotFoundError(f"{root / name} does not exist (is --cub-root a CUB root?)")
    is_train: dict[str, str] = {}
    for line in (root / "train_test_split.txt").read_text().splitlines():
        if line.strip():
            image_id, flag = line.split()
            is_train[image_id] = flag
    paths = []
    for line in (root / "images.txt").read_text().splitlines():
        if line.strip():
            image_id, rel = line.split(maxsplit=1)
            if is_train.get(image_id) == "0":
                paths.append(root / "images" / rel)
    return paths


def tiny_checkpoint(path: Path, image_size: int) -> Path:
    """A random-weight tiny_cnn CAM checkpoint (for smoke runs without a trained model)."""
    import torch

    from wsol.config import load_config
    from wsol.engine.build import build_from_config
    from wsol.engine.checkpoint import save_checkpoint

    config = load_config(overrides=["model.name=tiny_cnn", "method.name=cam",
                                    f"data.image_size={image_size}"])
    torch.manual_seed(0)
    method = build_from_config(config, num_classes=10, pretrained=False)
    return save_checkpoint(path, method, config=config)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a trained wsol checkpoint")
    source.add_argument("--tiny", action="store_true", help="use a random tiny_cnn (smoke run)")
    parser.add_argument("--cub-root", type=Path, default=DEFAULT_CUB)
    parser.add_argument("--limit", type=int, default=None, help="only the first N test images")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--method", default=None, help="passed to wsol localize --method")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="passed to wsol localize --set")
    args = parser.parse_args()

    images = cub_test_images(args.cub_root)
    if args.limit is not None:
        images = images[:args.limit]
    if not images:
        raise SystemExit("no test images found")
    with tempfile.TemporaryDirectory(prefix="bench_localize_") as tmp:
        ckpt = Path(args.checkpoint) if args.checkpoint else \
            tiny_checkpoint(Path(tmp) / "tiny.pt", args.image_size)
        out = Path(tmp) / "out"
        cmd = [sys.executable, "-m", "wsol", "localize", "--checkpoint", str(ckpt),
               *map(str, images), "--out", str(out), "--batch-size", str(args.batch_size),
               "--device", args.device, "--image-size", str(args.image_size), "--no-progress"]
        if args.method:
            cmd += ["--method", args.method]
        for item in args.overrides:
            cmd += ["--set", item]
        env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            return proc.returncode
        manifest = json.loads((out / "manifest.json").read_text())
    n = manifest["counts"]["localized"]
    result = {
        "benchmark": "wsol localize",
        "images": n,
        "skipped": manifest["counts"]["skipped"],
        "checkpoint": str(ckpt) if args.checkpoint else "random tiny_cnn",
        "method": manifest["method"],
        "model": manifest["model"],
        "device": manifest["settings"]["device"],
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "torch_threads": os.environ.get("OMP_NUM_THREADS", "default"),
        "end_to_end_seconds": round(wall, 3),
        "end_to_end_images_per_second": round(n / wall, 2),
        "pipeline_seconds": manifest["seconds"],
        "pipeline_images_per_second": manifest["images_per_second"],
    }
    print(json.dumps(result, indent=2))
    write_result("localize_smoke" if args.tiny or args.limit else "localize", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

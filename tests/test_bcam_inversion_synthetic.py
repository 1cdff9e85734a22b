"""B-CAM's inversion on large objects, reproduced on a synthetic set and fixed by the polarity
check (wsol/methods/bcam.py, "Large objects, few classes").

The set has what the real failure had (3-class CUB crops of look-alike albatrosses): the object
fills 36-72 % of the image and looks the same in every class, so the class is told by the
context around it. B-CAM's stagger loss then gives the object branch the class-discriminative
pixels, the context, and the raw foreground map (``polarity=none``, the official behaviour)
lights the background on most test images. With ``polarity=border`` (the default) the maps that
are higher on the image border than inside are flipped and the map sits on the object.

What this set does not reproduce: on the real crops CAM's map stayed on the bird (ImageNet
features fire on it); here the tiny CNN is trained from scratch and has no such prior, so its
CAM is on the context too (inside share 0.38, seed 0, asserted < 0.5 below). The test is about
B-CAM's maps before and after the check.
Measured by this test, seeds 0 / 1 / 2 of the data and the training: inside share 0.23 / 0.15 /
0.27 without the check, 0.85 / 0.87 / 0.93 with it; MaxBoxAccV2 54.4 -> 56.7, 50.6 -> 50.0,
59.4 -> 66.7 (Pillow 13.0, OpenCV 5.1; with the versions of 2026-12-02 seed 1 gave 51.1 -> 51.1,
higher in the next digits: on 20 test images one box more or less moves MaxBoxAccV2 by 1.7, so
per seed the test asks for "no worse than that", and for the flip itself by the inside share).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wsol.config import load_config
from wsol.data.metadata import Metadata, write_metadata
from wsol.engine.checkpoint import load_method
from wsol.engine.train import evaluate_split, train

CONTEXT_COLORS = ((200, 40, 40), (40, 200, 40), (40, 40, 200))  # the class cue, around the object


def make_context_set(out: Path, per_class: dict[str, int], size: int = 64, seed: int = 0) -> None:
    """Each image: a class-coloured noisy background and, on 60-85 % of each side, the same
    grey striped object for every class; its box in wsolevaluation metadata."""
    for split_code, (split, n) in enumerate(per_class.items()):
        ids, labels, sizes, boxes = [], {}, {}, {}
        for label, color in enumerate(CONTEXT_COLORS):
            for k in range(n):
                rng = np.random.default_rng([seed, split_code, label, k])
                image = np.array(color, float) + rng.normal(0, 25, (size, size, 3))
                w, h = (int(s) for s in rng.uniform(0.6, 0.85, 2) * size)
                x0, y0 = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
                patch = 128 + rng.normal(0, 25, (h, w, 3))
                patch[:, ::6] -= 60
                image[y0:y0 + h, x0:x0 + w] = patch
                image_id = f"{split}/c{label}/{k:03d}.png"
                path = out / "images" / image_id
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path)
                ids.append(image_id)
                labels[image_id] = label
                sizes[image_id] = (size, size)
                boxes[image_id] = [(x0, y0, x0 + w - 1, y0 + h - 1)]
        write_metadata(Metadata(image_ids=ids, class_labels=labels, image_sizes=sizes,
                                boxes=boxes), out / "metadata" / split)


def train_on_context_set(tmp_path: Path, seed: int, *method: str) -> Path:
    """Make the set and train the tiny CNN on it for 20 epochs; returns the run directory."""
    data, run = tmp_path / "data", tmp_path / "run"
    make_context_set(data, {"train": 24, "val": 20, "test": 20}, seed=seed)
    config = load_config(None, [
        f"run_dir={run}", f"seed={seed}", "device=cpu", "model.name=tiny_cnn", "model.width=8",
        f"data.root={data / 'images'}", f"data.metadata={data / 'metadata'}",
        "data.resize_size=72", "data.crop_size=64", "data.image_size=64", "data.batch_size=16",
        "data.eval_batch_size=32", "data.num_workers=0", "optim.lr=0.01", "optim.epochs=20",
        "optim.lr_decay_every=100", "eval.cam_curve_interval=0.01", *method])
    train(config, progress=False)
    return run


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bcam_maps_invert_on_large_objects_without_the_polarity_check(seed, tmp_path, one_thread):
    run = train_on_context_set(tmp_path, seed, "method.name=bcam", "method.variant=cub",
                               "method.polarity=none")
    results = {}
    for polarity in ("none", "border"):
        method, info = load_method(run / "checkpoints" / "last.pt",
                                   method_overrides={"polarity": polarity})
        results[polarity] = evaluate_split(method, info["config"], "test", torch.device("cpu"),
                                           method.backbone)
    assert results["none"]["top1_cls"] >= 90.0          # the classifier itself is fine
    # Before the fix: the map is higher outside the box than inside on most images.
    assert results["none"]["inside_gt_share"] < 0.5
    # After: the check flips those maps and the map sits on the object.
    assert results["border"]["inside_gt_share"] >= 0.75
    # And the boxes are no worse: MaxBoxAccV2 within one test image at one IoU threshold
    # (100 / (3 * 20) points), better on seeds 0 and 2 (module docstring).
    assert results["border"]["MaxBoxAccV2"] >= results["none"]["MaxBoxAccV2"] - 100 / 60


@pytest.mark.slow
def test_cam_is_on_the_context_too_on_this_set(tmp_path, one_thread):
    """The limitation of the set (module docstring): trained from scratch, CAM's map also sits
    where the class is told, so this set is about B-CAM's maps, not B-CAM against CAM."""
    run = train_on_context_set(tmp_path, 0, "method.name=cam")
    method, info = load_method(run / "checkpoints" / "last.pt")
    res = evaluate_split(method, info["config"], "test", torch.device("cpu"), method.backbone)
    assert res["top1_cls"] >= 90.0
    assert res["inside_gt_share"] < 0.5

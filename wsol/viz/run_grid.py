"""The report's qualitative grid: each run's checkpoint on the same few test images.

The images are ``n`` fixed images of the first run whose data is available: indices
``round(i (L - 1) / (n - 1))``, ``i = 0..n-1``, of the split's ``image_ids.txt`` (evenly spread,
so a class-sorted split like CUB's shows several classes; the same every time). Each run's best
checkpoint (else last) localizes them for their GT class (as for GT-known Loc / MaxBoxAcc) at the
run's best IoU-50 threshold from its results (CAM's 0.2 when it has none). A CREAM run adds a
column with the CAM of its own backbone, so the re-activation is visible next to its baseline.
Everything is shown at the evaluation resolution ``S x S``; GT boxes are rescaled as in the
protocol, ``int(x * S / W)`` (:func:`wsol.localization.boxes.resize_boxes`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from wsol.viz.report import RunSummary, best_threshold

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from wsol.data.metadata import Metadata


def fixed_sample(image_ids: Sequence[str], n: int) -> list[str]:
    """``n`` evenly spread ids: indices ``round(i (L - 1) / (n - 1))`` (all ids when L <= n)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if len(image_ids) <= n:
        return list(image_ids)
    if n == 1:
        return [image_ids[0]]
    return [image_ids[round(i * (len(image_ids) - 1) / (n - 1))] for i in range(n)]


def _run_metadata(run: RunSummary, split: str) -> tuple[Metadata | None, str | None]:
    from wsol.engine.data import build_split

    data = run.config.get("data") or {}
    if not data.get("root") or not data.get("metadata"):
        return None, "its config has no data.root / data.metadata"
    try:
        meta = build_split(run.config, split, train=False, backbone=None, metadata_only=True)
    except ValueError as exc:
        return None, str(exc)
    if not Path(data["root"]).is_dir():
        return None, f"image root {data['root']} does not exist"
    return meta, None


def build_run_grid(runs: Sequence[RunSummary], n_images: int, *, split: str = "test",
                   device: str = "cpu") -> tuple[Figure | None, list[str]]:
    """The grid figure (None when no run could be shown) and notes on what was left out."""
    import torch

    from wsol.data.transforms import EvalTransform, ImageLoadError, load_image, resize
    from wsol.engine.checkpoint import load_method
    from wsol.localization.boxes import resize_boxes
    from wsol.localization.pipeline import DEFAULT_THRESHOLD, localize
    from wsol.methods.resolve import resolve_method
    from wsol.viz.grid import plot_method_grid

    notes: list[str] = []
    metas = {}
    for run in runs:
        meta, why = _run_metadata(run, split)
        if meta is None:
            notes.append(f"{run.name}: no grid column, data unavailable ({why})")
        else:
            metas[run.name] = meta
    if not metas:
        return None, notes
    first = next(r for r in runs if r.name in metas)
    ids = fixed_sample(metas[first.name].image_ids, n_images)
    size = int(first.config["data"].get("image_size", 224))
    root = Path(first.config["data"]["root"])
    try:
        originals = [load_image(root / i) for i in ids]
    except ImageLoadError as exc:
        return None, notes + [f"no grid: {exc}"]
    display = [np.asarray(resize(img, size)) for img in originals]
    gt_meta = metas[first.name]
    gt_boxes = [[tuple(resize_boxes(np.array(box), img.size, (size, size)).tolist())
                 for box in (gt_meta.boxes or {}).get(i, [])]
                for i, img in zip(ids, originals)]
    labels = torch.tensor([gt_meta.class_labels[i] for i in ids])

    maps: dict[str, list[np.ndarray]] = {}
    boxes: dict[str, list[list[tuple[float, ...]]]] = {}
    for run in runs:
        if run.name not in metas:
            continue
        missing = [i for i in ids if i not in metas[run.name].class_labels]
        ckpt = run.checkpoint()
        if missing or ckpt is None:
            notes.append(f"{run.name}: no grid column ("
                         + ("no checkpoints/best.pt or last.pt" if ckpt is None
                            else f"its {split} split lacks {missing[0]}") + ")")
            continue
        method, _ = load_method(ckpt, device)
        run_size = int(run.config["data"].get("image_size", 224))
        tf = EvalTransform(mean=method.backbone.input_mean, std=method.backbone.input_std,
                           size=run_size)
        images = torch.stack([tf(img) for img in originals])
        threshold = best_threshold(run)
        if threshold is None:
            notes.append(f"{run.name}: no best threshold in its results, boxes at "
                         f"{DEFAULT_THRESHOLD}")
            threshold = DEFAULT_THRESHOLD
        normalization = (run.config.get("eval") or {}).get("normalization", "minmax")
        variants = [(run.name, method)]
        if method.name == "cream":
            variants.append((f"{run.name} (cam)", resolve_method(method, "cam")))
        for column, variant in variants:
            result = localize(variant, images, labels, threshold, normalization)
            maps[column] = list(result.maps.float().cpu().numpy())
            scale = size / run_size
            boxes[column] = [[tuple(float(v) * scale for v in b)]
                             for b in result.boxes.cpu().tolist()]
        del method
    if not maps:
        return None, notes
    fig = plot_method_grid(display, maps, gt_boxes=gt_boxes, pred_boxes=boxes,
                           row_titles=[Path(i).stem for i in ids])
    return fig, notes

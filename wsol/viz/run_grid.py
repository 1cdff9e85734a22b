"""The report's qualitative grid: the same test images under every result row's checkpoint.

One column per result row that has a checkpoint, localized as that row was evaluated: its
``key=value`` overrides (CREAM's ``method.stage=calibrated``, ...), its ``eval_type`` (B-CAM's
threshold-free ``mask``), its normalization, and boxes at its best IoU-50 threshold from its
results (CAM's 0.2 when it has none). A CREAM run trained as such adds a column with the CAM of
its own backbone (``CREAM (stage cam)``), so the re-activation is visible next to its baseline.
Maps come from :func:`wsol.localization.compute_maps` for the GT class (as for GT-known Loc /
MaxBoxAcc); the box is the largest-contour box of that map
(:func:`wsol.localization.boxes_from_maps`), its IoU the best over the image's GT boxes at the
evaluation resolution; each cell's caption is the predicted (top-1) class, its softmax score and
that IoU.

Which images (``select``), from the split of the first column's data:

- ``spread`` (default): ``n`` fixed, evenly spread ids, indices ``round(i (L - 1) / (n - 1))``
  of the split's ``image_ids.txt`` (a class-sorted split like CUB's shows several classes);
- ``first``: the first ``n`` ids;
- ``worst`` / ``best``: the ``n`` images with the lowest / highest IoU averaged over the grid's
  columns (ties in file order), ranked over the whole split (or an evenly spread ``pool``).

Everything is shown at the evaluation resolution ``S x S``; GT boxes are rescaled as in the
protocol, ``int(x * S / W)`` (:func:`wsol.localization.boxes.resize_boxes`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from wsol.viz.report_data import ResultRow, round_floats

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["GRID_SELECTIONS", "build_run_grid", "fixed_sample"]

GRID_SELECTIONS = ("spread", "first", "worst", "best")


def fixed_sample(image_ids: Sequence[str], n: int) -> list[str]:
    """``n`` evenly spread ids: indices ``round(i (L - 1) / (n - 1))`` (all ids when L <= n)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if len(image_ids) <= n:
        return list(image_ids)
    if n == 1:
        return [image_ids[0]]
    return [image_ids[round(i * (len(image_ids) - 1) / (n - 1))] for i in range(n)]


@dataclass
class _Column:
    key: str
    title: str
    method: Any
    eval_type: str
    threshold: float
    normalization: str
    size: int
    class_names: list[str] | None
    config: dict = field(default_factory=dict)


@dataclass
class _Outputs:
    maps: list[np.ndarray]
    boxes: list[list[tuple[float, ...]]]  # display pixels
    ious: np.ndarray
    pred: list[int]
    scores: list[float]


def _threshold(row: ResultRow) -> float | None:
    from wsol.errors import WsolError
    from wsol.metrics.results import threshold_from_results

    try:
        return round_floats(threshold_from_results(row.results, "50"), 6)
    except (WsolError, ValueError):
        return None


def _columns(rows: Sequence[ResultRow], device: str, notes: list[str]) -> list[_Column]:
    from wsol.engine.checkpoint import load_method
    from wsol.engine.data import read_class_names
    from wsol.errors import WsolError
    from wsol.localization.pipeline import DEFAULT_THRESHOLD
    from wsol.methods.resolve import resolve_method
    from wsol.viz.report_data import method_title

    columns: list[_Column] = []
    for row in rows:
        if row.checkpoint is None:
            notes.append(f"{row.label}: no grid column (no checkpoint found for it)")
            continue
        overrides = [o for o in row.results.get("overrides") or [] if isinstance(o, str)]
        try:
            method, info = load_method(row.checkpoint, device, overrides=overrides)
        except (WsolError, ValueError) as exc:
            notes.append(f"{row.label}: no grid column ({exc})")
            continue
        config = info["config"]
        threshold = _threshold(row)
        if threshold is None:
            notes.append(f"{row.label}: no best threshold in its results, boxes at "
                         f"{DEFAULT_THRESHOLD}")
            threshold = DEFAULT_THRESHOLD
        names = info.get("class_names") or None
        if not names:
            try:
                names = read_class_names((config.get("data") or {}).get("class_names"))
            except WsolError:
                names = None
        common = {"eval_type": row.eval_type, "threshold": threshold,
                      "normalization": str(row.results.get("normalization")
                                        or (config.get("eval") or {}).get("normalization",
                                                                          "minmax")),
                      "size": int((config.get("data") or {}).get("image_size", 224)),
                      "class_names": list(names) if names else None, "config": config}
        columns.append(_Column(key=row.label, title=f"{row.label}\n{row.title()}", method=method,
                               **common))
        stage = getattr(method, "stage", None)
        if method.name == "cream" and row.source == "training" and stage != "cam":
            cam = resolve_method(method, "cam")
            cam_title = method_title("cream", {"stage": "cam"})
            columns.append(_Column(key=f"{row.label} (stage cam)",
                                   title=f"{row.label}\n{cam_title}", method=cam,
                                   **{**common, "eval_type": "prob"}))
    return columns


def _load_display(root: Path, ids: Sequence[str], size: int):
    from wsol.data.resample import resize_array
    from wsol.data.transforms import load_image

    originals = [load_image(root / i) for i in ids]  # RGB: resize_array gives resize()'s pixels
    return originals, [resize_array(img, (size, size)) for img in originals]


def _gt_boxes(meta, ids: Sequence[str], originals, size: int) -> list[np.ndarray]:
    from wsol.localization.boxes import resize_boxes

    out = []
    for i, img in zip(ids, originals):
        boxes = (meta.boxes or {}).get(i) or []
        out.append(resize_boxes(np.array(boxes, dtype=np.float64).reshape(-1, 4), img.size,
                                (size, size)) if boxes else np.zeros((0, 4), np.int64))
    return out


def _run_column(col: _Column, originals, labels, meta, ids, display_size: int) -> _Outputs:
    """Maps, boxes, IoUs, predictions of one column on a batch of original images."""
    import torch

    from wsol.data.transforms import EvalTransform
    from wsol.localization import box_iou, boxes_from_maps, compute_maps

    backbone = col.method.backbone
    tf = EvalTransform(mean=backbone.input_mean, std=backbone.input_std, size=col.size)
    images = torch.stack([tf(img) for img in originals])
    batch = compute_maps(col.method, images, torch.as_tensor(labels), None, col.normalization,
                         eval_type=col.eval_type)
    boxes = boxes_from_maps(batch.maps, col.threshold)
    probs = batch.logits.softmax(dim=1)
    score, pred = probs.max(dim=1)
    gts = _gt_boxes(meta, ids, originals, col.size)
    ious = np.array([float(box_iou(boxes[k:k + 1], gt).max()) if len(gt) else np.nan
                     for k, gt in enumerate(gts)])
    scale = display_size / col.size
    maps = list(batch.maps.float().cpu().numpy())
    return _Outputs(maps=maps,
                    boxes=[[tuple(float(v) * scale for v in b)] for b in boxes.tolist()],
                    ious=ious, pred=pred.cpu().tolist(), scores=score.cpu().tolist())


def _rank(columns: Sequence[_Column], meta, root: Path, ids: Sequence[str], n: int,
          select: str, batch_size: int) -> list[str]:
    """The ``n`` ids of ``ids`` with the lowest (worst) / highest (best) mean IoU."""
    from wsol.data.transforms import load_image

    mean_iou = np.zeros(len(ids))
    for start in range(0, len(ids), batch_size):
        chunk = list(ids[start:start + batch_size])
        originals = [load_image(root / i) for i in chunk]
        labels = [meta.class_labels[i] for i in chunk]
        ious = [_run_column(c, originals, labels, meta, chunk, c.size).ious for c in columns]
        mean_iou[start:start + len(chunk)] = np.nanmean(np.stack(ious), axis=0) \
            if ious else 0.0
    mean_iou = np.nan_to_num(mean_iou, nan=0.0)
    order = np.argsort(mean_iou if select == "worst" else -mean_iou, kind="stable")
    return [ids[k] for k in order[:n]]


def _class_name(names: list[str] | None, k: int) -> str:
    return names[k] if names and 0 <= k < len(names) else f"class {k}"


def build_run_grid(rows: Sequence[ResultRow], n_images: int, *, split: str = "test",
                   device: str = "cpu", select: str = "spread",
                   pool: int | None = None) -> tuple[Figure | None, list[str], str]:
    """The grid figure (None when nothing could be shown), notes on what was left out, and
    one sentence saying which images were chosen and how."""
    from wsol.data.transforms import ImageLoadError
    from wsol.engine.data import build_split
    from wsol.errors import WsolError
    from wsol.viz.grid import plot_method_grid

    if select not in GRID_SELECTIONS:
        raise ValueError(f"grid selection must be one of {GRID_SELECTIONS}, got {select!r}")
    notes: list[str] = []
    columns = _columns(rows, device, notes)
    if not columns:
        return None, notes, ""
    first = columns[0].config
    data = first.get("data") or {}
    if not data.get("root") or not data.get("metadata"):
        return None, notes + [("no grid: the checkpoint's config has no data.root / "
                              "data.metadata")], ""
    root = Path(data["root"])
    if not root.is_dir():
        return None, notes + [(f"no grid: data unavailable (image root {root} does not "
                              "exist)")], ""
    try:
        meta = build_split(first, split, train=False, backbone=None, metadata_only=True)
    except (WsolError, ValueError) as exc:
        return None, notes + [f"no grid: data unavailable ({exc})"], ""
    ids = list(meta.image_ids)
    if select == "spread":
        chosen = fixed_sample(ids, n_images)
        how = f"{len(chosen)} evenly spread {split} images"
    elif select == "first":
        chosen = ids[:n_images]
        how = f"the first {len(chosen)} {split} images"
    else:
        candidates = fixed_sample(ids, pool) if pool else ids
        try:
            chosen = _rank(columns, meta, root, candidates, n_images, select,
                           int(data.get("eval_batch_size", 32)))
        except ImageLoadError as exc:
            return None, notes + [f"no grid: {exc}"], ""
        how = (f"the {len(chosen)} {split} images with the {'lowest' if select == 'worst' else 'highest'} "
               f"box IoU averaged over the {len(columns)} map columns (of {len(candidates)} "
               "ranked)")
    size = int(data.get("image_size", 224))
    try:
        originals, display = _load_display(root, chosen, size)
    except ImageLoadError as exc:
        return None, notes + [f"no grid: {exc}"], ""
    labels = [meta.class_labels[i] for i in chosen]
    gt_display = _gt_boxes(meta, chosen, originals, size)
    names = next((c.class_names for c in columns if c.class_names), None)

    maps, boxes, captions, ok, titles = {}, {}, {}, {}, {}
    for col in columns:
        out = _run_column(col, originals, labels, meta, chosen, size)
        maps[col.key], boxes[col.key], titles[col.key] = out.maps, out.boxes, col.title
        col_names = col.class_names or names
        captions[col.key] = [
            f"{_class_name(col_names, p)} {s:.2f}" + ("" if np.isnan(iou) else f" · IoU {iou:.2f}")
            for p, s, iou in zip(out.pred, out.scores, out.ious)]
        ok[col.key] = [p == y for p, y in zip(out.pred, labels)]
        col.method = None  # release the weights
    captions["image"] = [f"GT: {_class_name(names, y)}" for y in labels]
    titles["image"] = "image\n(GT boxes)"
    row_titles = [str(Path(i).with_suffix("")) for i in chosen]
    fig = plot_method_grid(display, maps, gt_boxes=[g.tolist() for g in gt_display],
                           pred_boxes=boxes, row_titles=row_titles, column_titles=titles,
                           cell_labels=captions, cell_ok=ok,
                           cell_inches=2.0 if len(columns) > 4 else 2.2)
    return fig, notes, how

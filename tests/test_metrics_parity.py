"""Parity with the reference evaluator on shared/fixtures/metric-parity: every number in
reference.json, at cam_curve_interval 0.01 and 0.001, for v1 and v2 boxes and for masks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from wsol.data.metadata import read_metadata
from wsol.metrics import LocalizationEvaluator
from wsol.metrics.boxes import V1, V2


def _load(shared, kind):
    root = shared("fixtures", "metric-parity", kind)
    mask_root = root / "masks" if kind == "masks" else None
    meta = read_metadata(root / "metadata" / "test", mask_root=mask_root)
    with np.load(root / "scoremaps.npz") as npz:
        # float32 on disk, exactly representable: evaluated as float64, as the reference did.
        maps = np.stack([npz[i] for i in meta.image_ids]).astype(np.float64)
    reference = json.loads((root / "reference.json").read_text())
    assert reference["n_images"] == len(meta) == len(maps)
    return meta, maps, mask_root, reference["results"]


@pytest.mark.parametrize("interval", [0.01, 0.001])
def test_box_parity(shared, interval):
    meta, maps, _, results = _load(shared, "boxes")
    ev = LocalizationEvaluator(meta, cam_curve_interval=interval, multi_contour=True)
    for start in range(0, len(maps), 25):
        ev.update(maps[start:start + 25], meta.image_ids[start:start + 25])
    out = ev.compute()
    checked = 0
    for ref in results:
        if ref["cam_curve_interval"] != interval:
            continue
        checked += 1
        mode = V2 if ref["multi_contour_eval"] else V1
        for i, delta in enumerate(ev.iou_thresholds):
            assert ev.boxes.num_correct[mode, i].tolist() == ref["num_correct"][str(delta)], delta
            acc = (np.asarray(ref["num_correct"][str(delta)]) * 100.0 / len(maps)).max()
            assert acc == ref["max_box_acc"][str(delta)]
        if ref["multi_contour_eval"]:
            assert out["max_box_acc_by_iou"] == ref["max_box_acc"]
            assert out["MaxBoxAccV2"] == ref["MaxBoxAccV2"]
        else:
            assert out["MaxBoxAcc"] == ref["MaxBoxAcc"]
    assert checked == 2


def test_box_parity_largest_contour_mode_reports_v1(shared):
    meta, maps, _, results = _load(shared, "boxes")
    ev = LocalizationEvaluator(meta, cam_curve_interval=0.01, multi_contour=False)
    ev.update(torch.from_numpy(maps), meta.image_ids)  # tensors take the same path
    out = ev.compute()
    (ref,) = [r for r in results if r["cam_curve_interval"] == 0.01 and not r["multi_contour_eval"]]
    assert out["max_box_acc_by_iou"] == ref["max_box_acc"]
    assert out["gt_known_loc"] == ref["max_box_acc"]["50"] == out["MaxBoxAcc"]
    for delta, curve in out["box_acc_curves"].items():
        assert curve == (np.asarray(ref["num_correct"][delta]) * 100.0 / len(maps)).tolist()


@pytest.mark.parametrize("interval", [0.01, 0.001])
def test_mask_parity(shared, interval):
    meta, maps, mask_root, results = _load(shared, "masks")
    (ref,) = [r for r in results if r["cam_curve_interval"] == interval]
    ev = LocalizationEvaluator(meta, cam_curve_interval=interval, mask_root=mask_root)
    for start in range(0, len(maps), 16):
        ev.update(maps[start:start + 16], meta.image_ids[start:start + 16])
    out = ev.compute()
    assert ev.masks.fg_hist.tolist() == ref["gt_true_score_hist"]
    assert ev.masks.bg_hist.tolist() == ref["gt_false_score_hist"]
    assert out["PxAP"] == pytest.approx(ref["PxAP"], abs=1e-9)
    assert 0 < out["pIoU"] < 100 and out["num_images"] == len(maps)

"""Accumulators: definitions on hand-made cases, agreement with the plain reference on random
maps, merging by addition, the flat-tensor round trip, and the evaluator's input checks."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from test_localization_boxes import _blobby, _holey, _smooth

from wsol.data.metadata import MaskAnnotation, Metadata
from wsol.localization import ScoreMapError
from wsol.localization.reference import reference_histograms, reference_num_correct, reference_pxap
from wsol.metrics import (
    BoxAccumulator,
    ClassificationAccumulator,
    LocalizationEvaluator,
    MaskAccumulator,
    MetricError,
    load_gt_mask,
    topk_correct,
)
from wsol.metrics.boxes import V1, V2

T01 = np.arange(0, 1, 0.01)


def _square_map(size, box):
    x0, y0, x1, y1 = box
    scoremap = np.zeros((size, size))
    scoremap[y0:y1 + 1, x0:x1 + 1] = 1.0
    return scoremap


# ---------------------------------------------------------------- boxes


def test_box_accuracy_definitions_by_hand():
    # Image 0: the map is exactly the GT box -> predicted (10, 10, 30 + 1, 30 + 1) at every
    # threshold: IoU = 21*21 / (22*22) = 0.911 -> correct at 30, 50, 70.
    # Image 1: the map is far from the GT -> IoU 0 at every threshold.
    gt = [np.array([[10, 10, 30, 30]]), np.array([[40, 40, 60, 60]])]
    maps = np.stack([_square_map(64, (10, 10, 30, 30)), _square_map(64, (0, 0, 5, 5))])
    acc = BoxAccumulator(T01)
    acc.update(maps, gt, top1_correct=[False, True], top5_correct=[True, True])
    out = acc.compute()
    assert out["num_images"] == 2
    assert out["max_box_acc_by_iou"] == {"30": 50.0, "50": 50.0, "70": 50.0}
    assert out["MaxBoxAccV2"] == 50.0 and out["MaxBoxAcc"] == 50.0 and out["gt_known_loc"] == 50.0
    assert out["box_acc_curves"]["50"] == [50.0] * 100
    assert out["best_threshold_by_iou"]["50"] == 0.0  # the first maximizing threshold
    assert out["top1_loc"] == 0.0  # the only correct box has the wrong top-1 class
    assert out["top5_loc"] == 50.0
    assert out["top1_loc_by_iou"] == {"30": 0.0, "50": 0.0, "70": 0.0}


def test_threshold_choice_is_shared_by_the_split():
    # Two images whose boxes are right at different thresholds: the max over t of the
    # split's accuracy is 50, not 100.
    # A horizontal ramp: the foreground at t is the columns x >= x0(t), box (x0, 0, 63, 63).
    # Image 0 (GT = whole map) needs x0 <= 19 for IoU >= 0.7; image 1 (GT = x in 48..63)
    # needs 42 <= x0 <= 52: never both at one threshold.
    ramp = np.tile(np.linspace(0, 1, 64), (64, 1))
    gt = [np.array([[0, 0, 63, 63]]), np.array([[48, 0, 63, 63]])]
    curves = []
    for maps, boxes in ((ramp[None], gt[:1]), (ramp[None], gt[1:]), (np.stack([ramp, ramp]), gt)):
        acc = BoxAccumulator(T01, iou_thresholds=(70,))
        acc.update(maps, boxes)
        curves.append(np.asarray(acc.compute()["box_acc_curves"]["70"]))
    assert curves[0].max() == curves[1].max() == 100.0
    assert curves[0][0] == 100.0 and curves[1][75] == 100.0 and curves[1][0] == 0.0
    np.testing.assert_array_equal(curves[2], (curves[0] + curves[1]) / 2)
    assert curves[2].max() == 50.0


@pytest.mark.parametrize("seed", range(3))
def test_counts_equal_reference_on_random_maps(seed):
    rng = np.random.default_rng(seed)
    maps, gts = [], []
    for _ in range(6):
        maps += [_smooth(rng, 56, int(rng.integers(3, 8))), _blobby(rng, 56), _holey(rng, 56)]
    for _ in maps:
        x0, y0 = rng.integers(0, 40, 2)
        k = rng.integers(1, 3)
        gts.append(np.stack([[x0, y0, x0 + rng.integers(0, 16), y0 + rng.integers(0, 16)]] * k)
                   + np.arange(k)[:, None])
    thresholds = np.arange(0, 1, 0.02)
    acc = BoxAccumulator(thresholds, iou_thresholds=(30, 50, 70))
    acc.update(np.stack(maps), gts)
    for mode, multi in ((V1, False), (V2, True)):
        ref = reference_num_correct(maps, gts, thresholds, (30, 50, 70), multi)
        for i, d in enumerate((30, 50, 70)):
            np.testing.assert_array_equal(acc.num_correct[mode, i].numpy(), ref[d])


def test_merge_and_flat_tensor_equal_one_pass():
    rng = np.random.default_rng(7)
    maps = np.stack([_smooth(rng, 48, 5) for _ in range(6)])
    gts = [np.array([[5, 5, 30, 40]])] * 6
    top1 = np.array([1, 0, 1, 1, 0, 1], bool)
    whole = BoxAccumulator(T01, score_histograms=True)
    whole.update(maps, gts, top1_correct=top1, top5_correct=top1 | True)
    parts = [BoxAccumulator(T01, score_histograms=True) for _ in range(3)]
    for k, part in enumerate(parts):
        sl = slice(2 * k, 2 * k + 2)
        part.update(torch.from_numpy(maps[sl]), gts[sl], top1[sl], (top1 | True)[sl])
    merged = parts[0] + parts[1] + parts[2]
    assert merged.compute() == whole.compute()
    summed = sum(p.to_tensor() for p in parts)  # what all_reduce(SUM) produces
    assert summed.dtype == torch.int64 and summed.ndim == 1
    restored = BoxAccumulator(T01, score_histograms=True).load_tensor(summed)
    assert restored.compute() == whole.compute()
    torch.testing.assert_close(restored.to_tensor(), whole.to_tensor())


def test_merge_refuses_different_settings():
    with pytest.raises(ValueError, match="different settings"):
        BoxAccumulator(T01).merge(BoxAccumulator(np.arange(0, 1, 0.001)))
    with pytest.raises(ValueError, match="different settings"):
        BoxAccumulator(T01) + BoxAccumulator(T01, multi_contour=False)
    with pytest.raises(ValueError, match="expected a flat tensor"):
        BoxAccumulator(T01).load_tensor(torch.zeros(3, dtype=torch.int64))
    with pytest.raises(MetricError, match="no images"):
        BoxAccumulator(T01).compute()


def test_box_score_histograms():
    gt = [np.array([[2, 3, 9, 6]])]  # 8 x 4 = 32 pixels inside
    scoremap = _square_map(16, (2, 3, 9, 6))
    acc = BoxAccumulator(T01, score_histograms=True)
    acc.update(scoremap[None], gt)
    hist = acc.compute()["score_histograms"]
    # Score 1 falls in the bin [1, 2), index 100 of the 0.01 sweep.
    assert hist["inside_gt_boxes"][100] == 32 and sum(hist["inside_gt_boxes"]) == 32
    assert hist["outside_gt_boxes"][0] == 256 - 32 and sum(hist["outside_gt_boxes"]) == 256 - 32
    assert hist["bin_edges"][:2] == [0.0, 0.01] and hist["bin_edges"][-3:] == [1.0, 2.0, 3.0]


def test_box_score_histograms_in_the_pool_equal_np_histogram():
    """Histograms binned in the pool (2 threads, from a private copy of the maps, which the
    caller then overwrites) equal np.histogram of the pixels inside / outside the union of the
    boxes, clipped to the map; tensors and arrays alike."""
    rng = np.random.default_rng(3)
    maps = rng.random((6, 24, 24)).astype(np.float32)
    gts = [np.array([[2, 3, 9, 6]]), np.array([[0, 0, 23, 23]]), np.array([[5, 5, 8, 8],
           [7, 7, 12, 20]]), np.array([[-4, 10, 3, 40]]), np.array([[20, 20, 30, 30]]),
           np.array([[1, 1, 1, 1]])]
    inside = np.zeros(maps.shape, dtype=bool)
    for n, boxes in enumerate(gts):
        for x0, y0, x1, y1 in boxes:
            inside[n, max(y0, 0):min(y1, 23) + 1, max(x0, 0):min(x1, 23) + 1] = True
    edges = np.append(T01, [1.0, 2.0, 3.0])
    expected_fg = np.histogram(maps[inside], bins=edges)[0]
    expected_bg = np.histogram(maps[~inside], bins=edges)[0]
    for batch in (maps.copy(), torch.from_numpy(maps.copy())):
        acc = BoxAccumulator(T01, score_histograms=True, num_threads=2)
        acc.update(batch, gts)
        batch[:] = 0  # the pool works on its own copy
        np.testing.assert_array_equal(np.asarray(acc.fg_hist), expected_fg)
        np.testing.assert_array_equal(np.asarray(acc.bg_hist), expected_bg)
        acc.close()


# ---------------------------------------------------------------- masks


def test_pxap_reference_cases():
    gt = np.zeros((2, 20, 20), np.uint8)
    gt[0, 5:15, 5:15] = 1
    gt[1, :4, :] = 1
    gt[1, 10:, :3] = 255  # ignored
    positives, negatives = int((gt == 1).sum()), int((gt == 0).sum())
    perfect = MaskAccumulator(T01)
    perfect.update((gt == 1).astype(np.float64), gt)
    assert perfect.compute()["PxAP"] == pytest.approx(100.0)
    assert perfect.compute()["pIoU"] == pytest.approx(100.0)
    constant = MaskAccumulator(T01)
    constant.update(np.full((2, 20, 20), 0.37), gt)
    assert constant.compute()["PxAP"] == pytest.approx(100 * positives / (positives + negatives))
    # Ignored pixels are in neither histogram.
    assert int(constant.fg_hist.sum()) == positives and int(constant.bg_hist.sum()) == negatives


def test_mask_histograms_equal_np_histogram_including_edge_values():
    rng = np.random.default_rng(3)
    thresholds = np.arange(0, 1, 0.001)
    maps = rng.random((3, 32, 32))
    maps[0].ravel()[:1000] = thresholds  # scores exactly on the bin edges
    maps[1, :2] = 1.0
    maps = maps.astype(np.float32)  # float32 scores against float64 edges
    gt = rng.choice([0, 1, 255], size=(3, 32, 32), p=[0.6, 0.3, 0.1]).astype(np.uint8)
    acc = MaskAccumulator(thresholds)
    acc.update(maps[:2], gt[:2])
    acc.update(torch.from_numpy(maps[2:]), torch.from_numpy(gt[2:]))
    fg, bg = reference_histograms(list(maps), list(gt), thresholds)
    np.testing.assert_array_equal(acc.fg_hist.numpy(), fg)
    np.testing.assert_array_equal(acc.bg_hist.numpy(), bg)
    out = acc.compute()
    assert out["PxAP"] == pytest.approx(reference_pxap(fg, bg), abs=1e-12)
    curve = out["pr_curve"]
    assert len(curve["precision"]) == len(curve["recall"]) == len(curve["threshold"]) == 1002
    assert curve["threshold"][0] == 2.0 and curve["recall"][-1] == 1.0


def test_mask_errors():
    acc = MaskAccumulator(T01)
    with pytest.raises(ValueError, match="only 0"):
        acc.update(np.zeros((1, 4, 4)), np.full((1, 4, 4), 2, np.uint8))
    with pytest.raises(ValueError, match="same shape"):
        acc.update(np.zeros((1, 4, 4)), np.zeros((1, 4, 5), np.uint8))
    acc.update(np.zeros((1, 4, 4)), np.zeros((1, 4, 4), np.uint8))
    with pytest.raises(MetricError, match="no positive ground truth"):
        acc.compute()


def test_load_gt_mask_resizes_and_ignores(tmp_path):
    instance = np.zeros((40, 20), np.uint8)  # H=40, W=20 -> nearest to 8x8
    instance[:20, :10] = 255
    ignore = np.zeros((40, 20), np.uint8)
    ignore[10:30, :] = 1
    cv2.imwrite(str(tmp_path / "m.png"), instance)
    cv2.imwrite(str(tmp_path / "i.png"), ignore)
    mask = load_gt_mask(tmp_path, ["m.png"], "i.png", size=8)
    expected = np.zeros((8, 8), np.uint8)
    expected[:4, :4] = 1
    expected[2:6, :][expected[2:6, :] == 0] = 255  # ignore minus foreground
    np.testing.assert_array_equal(mask, expected)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_gt_mask(tmp_path, ["missing.png"], None, size=8)


# ---------------------------------------------------------------- classification, evaluator


def test_topk_correct_from_logits_and_rankings():
    logits = torch.tensor([[0.1, 0.9, 0.0, 0.2, 0.3, 0.4, 0.5],
                           [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.9]])
    top1, top5 = topk_correct(logits, torch.tensor([1, 6]))
    assert top1.tolist() == [True, False] and top5.tolist() == [True, True]
    top1, top5 = topk_correct(np.array([[3, 1, 2, 0, 4], [0, 1, 2, 4, 5]]), np.array([3, 3]))
    assert top1.tolist() == [True, False] and top5.tolist() == [True, False]
    acc = ClassificationAccumulator()
    acc.update(logits, torch.tensor([1, 2]))
    assert acc.compute() == {"top1_acc": 50.0, "top5_acc": 50.0}


def _box_metadata():
    ids = ["x/a.jpg", "x/b.jpg", "y/c.jpg"]
    return Metadata(image_ids=ids, class_labels={"x/a.jpg": 0, "x/b.jpg": 1, "y/c.jpg": 2},
                    image_sizes={"x/a.jpg": (128, 64), "x/b.jpg": (32, 32), "y/c.jpg": (64, 64)},
                    boxes={"x/a.jpg": [(20, 10, 59, 29)], "x/b.jpg": [(0, 0, 7, 7)],
                           "y/c.jpg": [(16, 16, 47, 47), (0, 0, 3, 3)]})


def test_evaluator_gt_geometry_and_topk_loc():
    meta = _box_metadata()
    ev = LocalizationEvaluator(meta, image_size=32, cam_curve_interval=0.01)
    # int(x * 32 / W): (20, 10, 59, 29) at 128x64 -> (5, 5, 14, 14)
    np.testing.assert_array_equal(ev._gt_boxes["x/a.jpg"], [[5, 5, 14, 14]])
    maps = np.stack([_square_map(32, (5, 5, 14, 14)), _square_map(32, (0, 0, 7, 7)),
                     _square_map(32, (0, 24, 3, 27))])  # the last is wrong
    ranking = torch.tensor([[0, 1, 2, 3, 4], [2, 3, 4, 5, 1], [2, 0, 1, 3, 4]])
    ev.update(maps, meta.image_ids, ranking)
    out = ev.compute()
    assert out["gt_known_loc"] == pytest.approx(200 / 3)
    assert out["top1_loc"] == pytest.approx(100 / 3)  # only x/a has a right box and top-1 class
    assert out["top5_loc"] == pytest.approx(200 / 3)
    assert out["top1_acc"] == pytest.approx(200 / 3)
    assert out["settings"]["multi_contour"] is True and out["num_images"] == 3


def test_evaluator_distributed_style_reduction():
    meta = _box_metadata()
    rng = np.random.default_rng(2)
    maps = np.stack([_smooth(rng, 32, 4) for _ in range(3)])
    logits = torch.from_numpy(rng.standard_normal((3, 6)))
    whole = LocalizationEvaluator(meta, image_size=32)
    whole.update(maps, meta.image_ids, logits)
    ranks = [LocalizationEvaluator(meta, image_size=32) for _ in range(2)]
    ranks[0].update(maps[:1], meta.image_ids[:1], logits[:1])
    ranks[1].update(maps[1:], meta.image_ids[1:], logits[1:])
    reduced = ranks[0].to_tensor() + ranks[1].to_tensor()
    result = LocalizationEvaluator(meta, image_size=32).load_tensor(reduced).compute()
    assert result == whole.compute()
    assert ranks[0].merge(ranks[1]).compute() == whole.compute()


def test_evaluator_rejects_bad_input():
    meta = _box_metadata()
    ev = LocalizationEvaluator(meta, image_size=32)
    good = np.zeros((1, 32, 32))
    with pytest.raises(ValueError, match="'nope.jpg' is not in the split"):
        ev.update(good, ["nope.jpg"])
    with pytest.raises(ValueError, match="expected \\(1, 32, 32\\)"):
        ev.update(np.zeros((1, 16, 16)), ["x/a.jpg"])
    bad = np.zeros((2, 32, 32))
    bad[1, 3, 3] = np.nan
    with pytest.raises(ScoreMapError, match="image 'x/b.jpg'.*NaN"):
        ev.update(bad, ["x/a.jpg", "x/b.jpg"], torch.tensor([[0, 1], [1, 0]]))
    assert int(ev.boxes.num_images) == 0  # nothing partial was counted
    assert int(ev.classification.num_images) == 0
    masks_meta = Metadata(image_ids=["a"], class_labels={"a": 0},
                          masks={"a": MaskAnnotation(["m.png"])})
    with pytest.raises(ValueError, match="mask_root"):
        LocalizationEvaluator(masks_meta)
    with pytest.raises(ValueError, match="no localization"):
        LocalizationEvaluator(Metadata(image_ids=["a"], class_labels={"a": 0}))
    with pytest.raises(ValueError, match="no entry in image_sizes"):
        LocalizationEvaluator(Metadata(image_ids=["a"], class_labels={"a": 0},
                                       boxes={"a": [(0, 0, 1, 1)]}))

"""Score map -> boxes: the reference unit cases (method-spec §4) and the fast path against a plain
per-threshold implementation on maps the fixtures do not contain."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from wsol.localization import ScoreMapError, box_iou, boxes_from_map, boxes_from_maps, resize_boxes
from wsol.localization.boxes import distinct_levels, level_contours, quantize_maps
from wsol.localization.reference import reference_boxes, reference_iou

# ---------------------------------------------------------------- reference unit cases


def test_iou_reference_cases():
    # Inclusive pixels: A = 5x5 = 25, B = 2x5 = 10, A∩B = x 3..4 (2) by y 2..5 (4) = 8 -> 8/27.
    iou = box_iou(np.array([[1, 2, 5, 6]]), np.array([[3, 1, 4, 5]]))
    assert iou[0, 0] == pytest.approx(8 / 27)
    assert box_iou(np.zeros((1, 4), int), np.zeros((1, 4), int))[0, 0] == 1.0
    with pytest.raises(ValueError, match="x0 <= x1"):
        box_iou(np.array([[5, 0, 4, 3]]), np.array([[0, 0, 1, 1]]))
    with pytest.raises(ValueError, match="non-negative"):
        box_iou(np.array([[-1, 0, 4, 3]]), np.array([[0, 0, 1, 1]]))


def test_iou_matrix_shape_and_symmetry():
    a = np.array([[0, 0, 9, 9], [5, 5, 14, 14], [20, 20, 20, 20]])
    b = np.array([[0, 0, 4, 4], [5, 5, 14, 14]])
    iou = box_iou(a, b)
    assert iou.shape == (3, 2)
    np.testing.assert_array_equal(iou, box_iou(b, a).T)
    assert iou[1, 1] == 1.0 and iou[2, 0] == 0.0
    assert iou[0, 0] == 25 / 100  # 5x5 box inside a 10x10 box


def test_resize_boxes_reference_case():
    # x: 1*35/10 = 3.5 -> 3, 4*35/10 = 14; y: 2*10/20 = 1, 3*10/20 = 1.5 -> 1.
    np.testing.assert_array_equal(resize_boxes((1, 2, 4, 3), (10, 20), (35, 10)), [3, 1, 14, 1])
    out = resize_boxes(np.array([[1, 2, 4, 3], [0, 0, 9, 19]]), (10, 20), (35, 10))
    np.testing.assert_array_equal(out, [[3, 1, 14, 1], [0, 0, 31, 9]])


V1_CASES = [
    ([[0, 0, 0, 0, 0], [0, .4, .4, .4, .6], [0, .4, 1, .8, .6], [0, .4, .4, .4, .6]],
     [[1, 1, 4, 3], [1, 1, 4, 3], [2, 1, 4, 3], [2, 2, 4, 3], [2, 2, 3, 3]]),
    ([[.4, 0, .2, .2, .2], [.4, .4, 0, .4, 0], [0, 0, 0, .4, 0], [1, .6, .8, .2, .2]],
     [[0, 0, 4, 3], [0, 0, 2, 2], [0, 3, 3, 3], [2, 3, 3, 3], [0, 3, 1, 3]]),
]


@pytest.mark.parametrize("scoremap,expected", V1_CASES)
def test_largest_contour_reference_cases(scoremap, expected):
    boxes = boxes_from_map(np.array(scoremap), np.arange(0, 1, 0.2), multi_contour=False)
    np.testing.assert_array_equal(np.concatenate(boxes), expected)


def test_nan_map_is_an_error():
    scoremap = np.zeros((8, 8))
    scoremap[3, 4] = np.nan
    with pytest.raises(ScoreMapError, match="NaN"):
        boxes_from_map(scoremap, [0.5])
    with pytest.raises(ScoreMapError, match="outside"):
        boxes_from_map(np.full((8, 8), 1.5), [0.5])


def test_hole_gives_its_own_box():
    scoremap = np.zeros((224, 224))
    scoremap[20:120, 20:120] = 1.0
    scoremap[50:90, 50:90] = 0.0
    # Outer border: pixels 20..119 -> (20, 20, 119 + 1, 119 + 1); the hole border runs on the
    # foreground pixels around the hole, 49..90 -> (49, 49, 91, 91).
    (v2,) = boxes_from_map(scoremap, [0.5], multi_contour=True)
    assert sorted(map(tuple, v2.tolist())) == [(20, 20, 120, 120), (49, 49, 91, 91)]
    (v1,) = boxes_from_map(scoremap, [0.5], multi_contour=False)
    assert v1.tolist() == [[20, 20, 120, 120]]


def test_empty_foreground_gives_zero_box():
    # max(img) = 0: thr = 0 and nothing is > 0.
    for boxes in boxes_from_map(np.zeros((16, 16)), [0.0, 0.5, 0.99]):
        assert boxes.tolist() == [[0, 0, 0, 0]]
    # A constant map is foreground everywhere (127 > floor(t * 127) for t < 1).
    for boxes in boxes_from_map(np.full((16, 16), 0.5), [0.0, 0.5, 0.99]):
        assert boxes.tolist() == [[0, 0, 15, 15]]
    # Thresholds >= 1 leave nothing above floor(t * max).
    assert boxes_from_map(np.full((16, 16), 0.5), [1.0])[0].tolist() == [[0, 0, 0, 0]]


def test_box_touching_border_is_clipped():
    scoremap = np.zeros((10, 12))
    scoremap[4:, 7:] = 1.0  # down to the last row / column
    (boxes,) = boxes_from_map(scoremap, [0.5])
    assert boxes.tolist() == [[7, 4, 11, 9]]  # x1 = min(7 + 5, 11), y1 = min(4 + 6, 9)


def test_quantization_truncates_in_the_maps_dtype():
    # 0.7 * 255 = 178.5 -> 178; 1/255 * 255 may land just below 1 and truncate to 0.
    x64 = np.array([[0.7, 1 / 255, 1.0]])
    np.testing.assert_array_equal(quantize_maps(x64), (x64 * 255).astype(np.uint8))
    x32 = x64.astype(np.float32)
    np.testing.assert_array_equal(quantize_maps(x32), (x32 * 255).astype(np.uint8))
    np.testing.assert_array_equal(quantize_maps(torch.from_numpy(x32)), quantize_maps(x32))


def test_cv2_threshold_floors_a_fractional_threshold_on_uint8():
    # The protocol relies on this: img > int(t * max) is what cv2.threshold computes.
    img = np.arange(256, dtype=np.uint8).reshape(16, 16)
    for thresh in (127.0, 127.2, 127.5, 127.9):
        _, binary = cv2.threshold(img, thresh, 255, cv2.THRESH_BINARY)
        np.testing.assert_array_equal(binary > 0, img > 127)


def test_distinct_levels_merge_equal_binarizations():
    img = np.array([[0, 10, 200]], dtype=np.uint8)
    thresholds = np.arange(0, 1, 0.001)
    levels, index = distinct_levels(img, thresholds)
    # Only img > L for L in [0, 10), [10, 200) differ (max 200 -> levels 0..199).
    assert len(levels) == 2
    for t, i in zip(thresholds, index):
        thr = int(t * 200)
        np.testing.assert_array_equal(img > levels[i], img > thr)


def test_torch_input_matches_numpy():
    rng = np.random.default_rng(0)
    scoremap = rng.random((40, 50)).astype(np.float32)
    thresholds = np.arange(0, 1, 0.05)
    a = boxes_from_map(scoremap, thresholds)
    b = boxes_from_map(torch.from_numpy(scoremap), thresholds)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_contour_area_is_cv2_contour_area():
    rng = np.random.default_rng(1)
    img = (rng.random((30, 30)) * 255).astype(np.uint8)
    table = level_contours(img, np.array([100, 200]))
    contours = [c for level in (100, 200) for c in cv2.findContours(
        (img > level).astype(np.uint8), cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[-2]]
    assert len(contours) == len(table.area2) > 20
    np.testing.assert_array_equal(table.area2 / 2, [cv2.contourArea(c) for c in contours])


# ---------------------------------------------------------------- fast path == reference


def _smooth(rng, size, low):
    coarse = rng.standard_normal((low, low)).astype(np.float32)
    up = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC).astype(np.float64)
    return (up - up.min()) / (up.max() - up.min())


def _blobby(rng, size):
    yy, xx = np.mgrid[:size, :size]
    out = np.zeros((size, size))
    for _ in range(rng.integers(1, 6)):
        cy, cx = rng.uniform(0, size, 2)
        sy, sx = rng.uniform(2, size / 4, 2)
        d2 = (yy - cy) ** 2 / (2 * sy ** 2) + (xx - cx) ** 2 / (2 * sx ** 2)
        out += rng.uniform(0.2, 1) * np.exp(-d2)
    out /= out.max()
    return np.round(out * rng.integers(2, 12)) / rng.integers(12, 14)  # few grey levels, plateaus


def _holey(rng, size):
    out = np.zeros((size, size))
    for _ in range(rng.integers(1, 5)):
        y0, x0 = rng.integers(0, size - 4, 2)
        y1, x1 = y0 + rng.integers(4, size - y0 + 1), x0 + rng.integers(4, size - x0 + 1)
        value = rng.uniform(0.3, 1)
        out[y0:y1, x0:x1] = np.maximum(out[y0:y1, x0:x1], value)
        if y1 - y0 > 4 and x1 - x0 > 4:  # punch a hole, sometimes with an island inside
            hy, hx = rng.integers(y0 + 1, y1 - 2), rng.integers(x0 + 1, x1 - 2)
            fill = rng.uniform(0, 0.3)  # drawn first, as the right-hand side of an assignment
            hy1, hx1 = rng.integers(hy + 1, y1 - 1), rng.integers(hx + 1, x1 - 1)
            out[hy:hy1, hx:hx1] = fill
            out[hy + 1:hy + 2, hx + 1:hx + 2] = value
    ring = (np.hypot(*np.mgrid[:size, :size] - size / 2) // 3) % 2  # concentric rings: nested holes
    return np.where(rng.random() < 0.3, np.maximum(out, ring * 0.5), out)


def _maps(seed):
    rng = np.random.default_rng(seed)
    yield "noise", rng.random((rng.integers(5, 30), rng.integers(5, 30)))
    yield "sparse", (rng.random((24, 20)) < 0.3) * rng.integers(1, 4, (24, 20)) / 3
    yield "smooth", _smooth(rng, 96, int(rng.integers(3, 10)))
    yield "blobby", _blobby(rng, 64)
    yield "holey", _holey(rng, 48)
    yield "float32", _smooth(rng, 64, 5).astype(np.float32)
    yield "low-max", _smooth(rng, 48, 4) * rng.uniform(0.01, 0.5)  # max(img) well below 255


@pytest.mark.parametrize("seed", range(6))
def test_fast_boxes_equal_reference_on_random_maps(seed):
    thresholds = np.arange(0, 1, 0.004)  # 250 thresholds: every distinct level is visited
    for name, scoremap in _maps(seed):
        for multi in (True, False):
            fast = boxes_from_map(scoremap, thresholds, multi_contour=multi)
            slow = reference_boxes(scoremap, thresholds, multi_contour=multi)
            for t, a, b in zip(thresholds, fast, slow):
                # Same boxes in the same order (v1 ties are broken by order).
                assert np.array_equal(a, b), f"{name} seed={seed} multi={multi} t={t}: {a} != {b}"


def test_fast_iou_equals_reference_iou():
    rng = np.random.default_rng(3)
    x0, y0 = rng.integers(0, 50, (2, 40))
    a = np.stack([x0, y0, x0 + rng.integers(0, 30, 40), y0 + rng.integers(0, 30, 40)], 1)
    b = a[rng.permutation(40)][:7]
    np.testing.assert_array_equal(box_iou(a, b), reference_iou(a, b))


def test_boxes_from_maps_is_the_batched_largest_contour_box():
    rng = np.random.default_rng(4)
    maps = np.stack([_smooth(rng, 40, 4) for _ in range(3)] + [np.zeros((40, 40))])
    out = boxes_from_maps(torch.from_numpy(maps), 0.37)
    assert out.shape == (4, 4) and out.dtype == np.int64
    for scoremap, box in zip(maps, out):
        (expected,) = reference_boxes(scoremap, [0.37], multi_contour=False)
        np.testing.assert_array_equal(box, expected[0])
    assert out[3].tolist() == [0, 0, 0, 0]


def test_invalid_tensor_maps_are_reported_with_their_batch_index():
    maps = torch.zeros(3, 8, 8)
    maps[2, 1, 1] = float("nan")
    with pytest.raises(ScoreMapError, match="batch index 2 has NaN") as info:
        quantize_maps(maps)
    assert info.value.index == 2
    maps[2, 1, 1] = -0.5
    with pytest.raises(ScoreMapError, match="batch index 2 has values outside"):
        quantize_maps(maps)
    with pytest.raises(ScoreMapError, match="float32 or float64"):
        quantize_maps(torch.zeros(2, 8, 8, dtype=torch.int64))
    with pytest.raises(ScoreMapError, match="float32 or float64"):
        quantize_maps(torch.zeros(2, 8, 8, dtype=torch.float16))

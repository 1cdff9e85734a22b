"""The component-tree evaluator (wsol.localization.leveltree) against per-level OpenCV tracing
(wsol.localization.boxes.level_contours, itself checked against the reference's loop) and the
reference's step-by-step loop: the same IoUs for v2, the same decisions at every cut for v1,
the same counts through the accumulator."""

from __future__ import annotations

import numpy as np
import pytest

from wsol.localization import leveltree
from wsol.localization.boxes import distinct_levels, level_contours
from wsol.localization.reference import reference_num_correct
from wsol.metrics.boxes import BoxAccumulator

pytestmark = pytest.mark.skipif(
    not leveltree.available(),
    reason="wsol.localization._leveltree is not built (no C compiler at install time)")

CUTS = np.array([0.3, 0.5, 0.7])


def _blobs(rng, h, w, n):
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.zeros((h, w))
    for _ in range(n):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        s = rng.uniform(2, max(h, w) / 3)
        out += rng.uniform(0.2, 1) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    return out / out.max()


def _rings(rng, h, w):
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot(yy - h / 2 + rng.uniform(-3, 3), xx - w / 2 + rng.uniform(-3, 3))
    return (np.cos(r / rng.uniform(1.5, 6)) + 1) / 2


def _maps(seed):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(1, 60, size=2)
    yield "noise", rng.random((h, w))
    yield "coarse-noise", np.round(rng.random((h, w)) * 4) / 4
    yield "blobs", _blobs(rng, h, w, int(rng.integers(1, 6)))
    yield "rings", _rings(rng, h, w)
    yield "blobs+noise", np.clip(_blobs(rng, h, w, 3) + 0.15 * rng.random((h, w)), 0, 1)


def _gt(rng, h, w):
    boxes = []
    for _ in range(int(rng.integers(1, 4))):
        x0, x1 = np.sort(rng.integers(0, w, size=2))
        y0, y1 = np.sort(rng.integers(0, h, size=2))
        boxes.append([x0, y0, x1, y1])
    return np.asarray(boxes, dtype=np.int64)


@pytest.mark.parametrize("seed", range(12))
def test_component_ious_match_opencv_contours(seed):
    rng = np.random.default_rng(100 + seed)
    for name, scoremap in _maps(seed):
        img = (scoremap * 255).astype(np.uint8)
        gt = _gt(rng, *img.shape)
        sweep = np.arange(0, 1, 0.001)
        levels, index = distinct_levels(img, sweep)
        traced = level_contours(img, levels)
        v1, v2 = traced.best_iou(gt)
        fg_max, fg_min, fg_count, hole_max, v1_max, v1_min = leveltree.component_ious(
            img, levels, gt)
        nonempty = traced.counts > 0
        assert ((fg_count > 0) == nonempty).all(), name
        # v2: every contour is a component's outer contour or a hole's: the same maximum.
        assert np.array_equal(np.maximum(fg_max, hole_max)[nonempty], v2[nonempty]), name
        # v1's box is the outer contour of one of the candidate components.
        assert (v1_min[nonempty] <= v1[nonempty]).all() and (v1[nonempty] <= v1_max[nonempty]).all()
        assert (fg_min <= v1_min).all() and (v1_max <= fg_max).all()
        (best,) = leveltree.threshold_best_ious(img[None], leveltree.threshold_table(sweep),
                                                [gt], CUTS)
        assert np.array_equal(best[1], v2[index]), name
        assert np.array_equal(best[0][:, None] >= CUTS, v1[index][:, None] >= CUTS), name


def test_component_count_is_the_number_of_outer_contours():
    rng = np.random.default_rng(7)
    import cv2
    for _ in range(20):
        img = (rng.random((23, 31)) * 255).astype(np.uint8)
        levels = np.arange(0, 256, 17, dtype=np.int64)
        _, _, count, *_ = leveltree.component_ious(img, levels, np.array([[0, 0, 5, 5]]))
        for level, c in zip(levels, count):
            binary = (img > level).astype(np.uint8)
            contours, hierarchy = cv2.findContours(binary, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
            outer = 0 if hierarchy is None else int((hierarchy[0, :, 3] < 0).sum())
            assert c == outer


def test_hole_box_is_the_hole_grown_by_one_pixel():
    img = np.zeros((9, 9), np.uint8)
    img[1:8, 1:8] = 200
    img[3:5, 4:6] = 10  # a hole: rows 3-4, columns 4-5
    # The hole's contour runs through columns 3-6, rows 2-5; its box ends one past that
    # (x + w, y + h), as the reference's boxes do: (3, 2, 7, 6).
    gt_hole = np.array([[3, 2, 7, 6]])
    fg_max, _, count, hole_max, _, _ = leveltree.component_ious(img, np.array([50]), gt_hole)
    assert count.tolist() == [1] and hole_max.tolist() == [1.0] and fg_max[0] < 1.0
    # The component's box: (1, 1, 8, 8), one past its last pixel.
    fg_max, *_ = leveltree.component_ious(img, np.array([50]), np.array([[1, 1, 8, 8]]))
    assert fg_max.tolist() == [1.0]


def test_background_touching_the_border_is_not_a_hole():
    img = np.full((6, 6), 200, np.uint8)
    img[2:4, 0:3] = 0  # open to the left border: a dent, not a hole
    hole_max = leveltree.component_ious(img, np.array([100]), np.array([[0, 0, 2, 2]]))[3]
    assert hole_max.tolist() == [-1.0]


def test_empty_foreground_and_argument_checks():
    img = np.zeros((5, 5), np.uint8)
    fg_max, fg_min, count, hole_max, _, _ = leveltree.component_ious(
        img, np.array([0, 3]), np.array([[0, 0, 1, 1]]))
    assert count.tolist() == [0, 0] and fg_max.tolist() == [-1, -1] and fg_min.tolist() == [2, 2]
    (best,) = leveltree.threshold_best_ious(img[None], leveltree.threshold_table([0.0]),
                                            [np.array([[0, 0, 0, 0]])], CUTS)
    assert best.tolist() == [[1.0], [1.0]]  # the (0, 0, 0, 0) box
    with pytest.raises(ValueError, match="ascending"):
        leveltree.component_ious(img, np.array([3, 3]), np.array([[0, 0, 1, 1]]))
    with pytest.raises(ValueError, match="maps"):
        leveltree.component_ious(np.zeros((2, 2, 2, 2), np.uint8), [np.array([0])],
                                 [np.array([[0, 0, 1, 1]])])
    with pytest.raises(ValueError, match="no GT box"):
        leveltree.component_ious(img, np.array([0]), np.zeros((0, 4)))


def test_batch_equals_one_map_at_a_time():
    rng = np.random.default_rng(5)
    imgs = (np.stack([_blobs(rng, 30, 40, 3) for _ in range(5)]) * 255).astype(np.uint8)
    levels = [distinct_levels(img, np.arange(0, 1, 0.01))[0] for img in imgs]
    gts = [_gt(rng, 30, 40) for _ in imgs]
    batch = leveltree.component_ious(imgs, levels, gts)
    single = [leveltree.component_ious(img, lv, gt) for img, lv, gt in zip(imgs, levels, gts)]
    for i, column in enumerate(batch):
        assert np.array_equal(column, np.concatenate([s[i] for s in single]))


def test_contour_area_bounds_hold_for_every_outer_contour():
    """The bounds that rule components out of v1: interior pixels <= contourArea <=
    (x1 - x0)(y1 - y0), on random binary images (the roughest shapes there are)."""
    import cv2
    rng = np.random.default_rng(9)
    checked = 0
    for _ in range(300):
        h, w = rng.integers(2, 30, size=2)
        binary = (rng.random((h, w)) < rng.uniform(0.3, 0.9)).astype(np.uint8)
        n, labels = cv2.connectedComponents(binary, connectivity=8)
        interior = cv2.erode(binary, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT,
                             borderValue=0)
        contours, hierarchy = cv2.findContours(binary, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
        for contour, link in zip(contours, [] if hierarchy is None else hierarchy[0]):
            if link[3] >= 0:  # a hole
                continue
            x, y = contour[0, 0]
            component = labels == labels[y, x]
            area = cv2.contourArea(contour)
            x0, y0, cw, ch = cv2.boundingRect(contour)
            assert int((interior.astype(bool) & component).sum()) <= area <= (cw - 1) * (ch - 1)
            checked += 1
    assert checked > 1000


def test_contour_area_is_at_most_the_pixel_count_without_holes():
    """The bound used at levels without holes: every outer contourArea <= its component's pixel
    count, on random binary images whose holes are filled in (and it fails with holes: the
    bound needs the condition)."""
    import cv2
    rng = np.random.default_rng(10)
    checked = exceeded_with_holes = 0
    for _ in range(300):
        h, w = rng.integers(2, 30, size=2)
        binary = (rng.random((h, w)) < rng.uniform(0.3, 0.9)).astype(np.uint8)
        for fill in (True, False):
            img = binary.copy()
            if fill:  # background components off the image edge (the holes) become foreground
                n, labels, stats, _ = cv2.connectedComponentsWithStats(1 - img, connectivity=4)
                for j in range(1, n):
                    x, y, cw, ch, _ = stats[j]
                    if x > 0 and y > 0 and x + cw < w and y + ch < h:
                        img[labels == j] = 1
            _, labels = cv2.connectedComponents(img, connectivity=8)
            contours, hierarchy = cv2.findContours(img, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
            for contour, link in zip(contours, [] if hierarchy is None else hierarchy[0]):
                if link[3] >= 0:
                    assert not fill  # no hole is left
                    continue
                x, y = contour[0, 0]
                size = int((labels == labels[y, x]).sum())
                area = cv2.contourArea(contour)
                if fill:
                    assert area <= size
                    checked += 1
                else:
                    exceeded_with_holes += area > size
    assert checked > 1000 and exceeded_with_holes > 0


@pytest.mark.parametrize("multi_contour", [False, True])
def test_accumulator_counts_equal_the_reference_loop(multi_contour):
    rng = np.random.default_rng(3)
    maps, gts = [], []
    for seed in range(6):
        for _, scoremap in _maps(seed):
            maps.append(scoremap)
            gts.append(_gt(rng, *scoremap.shape))
    thresholds = np.arange(0, 1, 0.01)
    ref = reference_num_correct(maps, gts, thresholds, (30, 50, 70), multi_contour)
    acc = BoxAccumulator(thresholds, multi_contour=multi_contour, num_threads=1)
    for scoremap, gt in zip(maps, gts):
        acc.update(scoremap[None], [gt])
    mode = 1 if multi_contour else 0
    for i, d in enumerate((30, 50, 70)):
        assert acc.num_correct[mode, i].tolist() == ref[d].tolist(), d


def test_accumulator_counts_equal_without_the_helper():
    rng = np.random.default_rng(11)
    maps = np.stack([np.clip(_blobs(rng, 40, 48, 4) + 0.1 * rng.random((40, 48)), 0, 1)
                     for _ in range(16)])
    gts = [_gt(rng, 40, 48) for _ in maps]
    thresholds = np.arange(0, 1, 0.001)
    with_tree = BoxAccumulator(thresholds, num_threads=1)
    assert with_tree.component_tree
    with_tree.update(maps, gts)
    traced = BoxAccumulator(thresholds, num_threads=1, component_tree=False)
    traced.update(maps, gts)
    assert np.array_equal(with_tree.num_correct, traced.num_correct)
    assert with_tree.num_correct[1].sum() > 0  # the maps do localize something



@pytest.mark.parametrize("thresholds", [[0.5, 0.1, 1.5, 0.1, 0.0, 0.999], np.arange(0, 1, 0.0005)])
def test_threshold_ious_equal_opencv_for_any_sweep(thresholds):
    """Unsorted, repeated and > 1 thresholds (an empty foreground), and a sweep finer than the
    256 grey levels: per threshold, the same v2 IoU and the same v1 decisions."""
    rng = np.random.default_rng(21)
    imgs = [(scoremap * 255).astype(np.uint8) for _, scoremap in _maps(0)]  # one size
    gts = [_gt(rng, *img.shape) for img in imgs]
    thresholds = np.asarray(thresholds, dtype=np.float64)
    table = leveltree.threshold_table(thresholds)
    best = leveltree.threshold_best_ious(np.stack(imgs), table, gts, CUTS)
    for img, gt, got in zip(imgs, gts, best):
        levels, index = distinct_levels(img, thresholds)
        v1, v2 = level_contours(img, levels).best_iou(gt)
        assert np.array_equal(got[1], v2[index])
        assert np.array_equal(got[0][:, None] >= CUTS, v1[index][:, None] >= CUTS)


def test_maps_longer_than_the_helper_takes_are_traced_with_opencv():
    """The helper keeps 16-bit boxes: it refuses a side over MAX_SIDE by name, and the
    accumulator traces such maps with OpenCV instead (the same counts as without the helper)."""
    side = leveltree.MAX_SIDE + 1
    rng = np.random.default_rng(5)
    maps = np.clip(_blobs(rng, 2, 64, 3), 0, 1)
    maps = np.repeat(maps, -(-side // 64), axis=1)[None, :, :side]  # (1, 2, 65536)
    gts = [np.array([[100, 0, 30000, 1]])]
    with pytest.raises(ValueError, match="at most 65535 a side"):
        leveltree.threshold_best_ious((maps * 255).astype(np.uint8),
                                      leveltree.threshold_table([0.5]), gts, CUTS)
    assert not leveltree.fits(maps.shape) and leveltree.fits((3, 65535, 2))
    thresholds = np.arange(0, 1, 0.01)
    counts = []
    for tree in (True, False):
        acc = BoxAccumulator(thresholds, num_threads=1, component_tree=tree)
        acc.update(maps, gts)
        counts.append(acc.num_correct)
    assert np.array_equal(*counts)

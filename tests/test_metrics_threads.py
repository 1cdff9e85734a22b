"""The evaluator's fast paths against the plain per-threshold reference: level pruning by the IoU
bound, the thread pool (same counts for any number of threads), and the accumulators' handling
of pending work (reads wait, copies and merges see every batch, the caller may reuse buffers)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from test_localization_boxes import _blobby, _holey, _maps, _smooth

from wsol.localization.boxes import level_contours
from wsol.localization.reference import reference_histograms, reference_num_correct
from wsol.metrics import BoxAccumulator, MaskAccumulator
from wsol.metrics.boxes import V1, V2, image_best_iou
from wsol.metrics.counts import default_num_threads

THRESHOLDS = np.arange(0, 1, 0.004)  # 250 thresholds: every distinct level of a 255 map


def _box_case(seed: int, size: int = 48):
    """Maps of every kind the box tests know, and GT boxes from tiny (a few pixels, near the
    origin: the (0, 0, 0, 0) box of an empty level can match them) to the whole map."""
    rng = np.random.default_rng(seed)
    maps = [_smooth(rng, size, int(rng.integers(3, 9))), _blobby(rng, size), _holey(rng, size),
            _smooth(rng, size, 4) * rng.uniform(0.01, 0.3),  # low maximum
            (rng.random((size, size)) < 0.2) * rng.random((size, size)),  # speckles
            np.zeros((size, size)),  # empty at every threshold
            np.full((size, size), rng.uniform(0.1, 1))]  # one box: the whole map
    gts = []
    for k in range(len(maps)):
        x0, y0 = (0, 0) if k % 3 == 0 else rng.integers(0, size - 2, 2)
        w, h = rng.integers(0, [3, 3] if k % 2 else [size - x0, size - y0])
        boxes = [[x0, y0, x0 + w, y0 + h]]
        if rng.random() < 0.5:
            boxes.append([0, 0, size - 1, size - 1])
        gts.append(np.array(boxes))
    return np.stack(maps), gts


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ious", [(30, 50, 70), (5, 95), (0, 100), (100,)])
def test_counts_equal_reference_for_any_thread_count(seed, ious):
    maps, gts = _box_case(seed)
    rng = np.random.default_rng(100 + seed)
    top1 = rng.random(len(maps)) < 0.5
    top5 = top1 | (rng.random(len(maps)) < 0.5)
    accs = []
    for threads in (1, 2, 3):
        acc = BoxAccumulator(THRESHOLDS, iou_thresholds=ious, num_threads=threads)
        for lo in range(0, len(maps), 3):  # several batches: several pending tasks
            sl = slice(lo, lo + 3)
            acc.update(maps[sl], gts[sl], top1[sl], top5[sl])
        accs.append(acc)
    for mode, multi in ((V1, False), (V2, True)):
        ref = reference_num_correct(list(maps), gts, THRESHOLDS, ious, multi)
        for i, d in enumerate(ious):
            for acc in accs:
                np.testing.assert_array_equal(acc.num_correct[mode, i].numpy(), ref[d])
    flat = accs[0].to_tensor()
    for acc in accs[1:]:
        torch.testing.assert_close(acc.to_tensor(), flat)
        assert acc.compute() == accs[0].compute()


@pytest.mark.parametrize("seed", range(3))
def test_pruned_levels_are_ones_the_reference_counts_wrong(seed):
    # image_best_iou with pruning may only lower IoUs that are below the smallest cut.
    thresholds = np.arange(0, 1, 0.01)
    pruned_any = False
    for _, scoremap in _maps(seed):
        img = (scoremap * 255).astype(np.uint8)
        height, width = img.shape
        gt = np.array([[0, 0, width // 5, height // 5]])  # a corner: high levels miss it
        full = image_best_iou(img, gt, thresholds, 0.0)
        pruned = image_best_iou(img, gt, thresholds, 0.5)
        changed = full != pruned
        assert (pruned[changed] == 0).all() and (full[changed] < 0.5).all()
        pruned_any |= bool(changed.any())
    assert pruned_any  # the bound does skip levels on these maps


def test_level_contours_needs_ascending_levels():
    with pytest.raises(ValueError, match="ascending"):
        level_contours(np.zeros((4, 4), np.uint8), np.array([3, 1]))


def test_reads_wait_for_pending_work_and_copies_see_it():
    maps, gts = _box_case(7)
    acc = BoxAccumulator(THRESHOLDS, num_threads=2)
    acc.update(maps, gts)
    # A deep copy (what ``+`` uses) and pickling wait for the pool, then leave it behind.
    twin = copy.deepcopy(acc)
    assert twin._pool is None and not twin._pending
    assert int(twin.num_images) == len(maps)
    both = acc + twin
    torch.testing.assert_close(both.num_correct, 2 * acc.num_correct)
    acc.update(maps, gts)
    torch.testing.assert_close(acc.to_tensor(), both.to_tensor())
    acc.reset()
    assert int(acc.num_images) == 0 and int(acc.num_correct.sum()) == 0
    acc.close()
    acc.update(maps, gts)  # a closed accumulator starts a new pool
    torch.testing.assert_close(acc.to_tensor(), twin.to_tensor())


def test_caller_may_reuse_its_buffers_after_update():
    maps, gts = _box_case(8)
    expected = BoxAccumulator(THRESHOLDS, num_threads=1)
    expected.update(maps, gts)
    buffer = torch.from_numpy(maps.copy())
    acc = BoxAccumulator(THRESHOLDS, num_threads=2)
    acc.update(buffer, gts)
    buffer.zero_()  # the next batch overwrites the buffer while the pool may still be tracing
    torch.testing.assert_close(acc.to_tensor(), expected.to_tensor())

    rng = np.random.default_rng(9)
    scores = rng.random((4, 32, 32))
    masks = rng.integers(0, 2, (4, 32, 32)).astype(np.uint8)
    masks[:, :4] = 255
    mask_acc = MaskAccumulator(THRESHOLDS, num_threads=3)
    mask_acc.update(scores, masks)
    fg_ref, bg_ref = reference_histograms(list(scores), list(masks), THRESHOLDS)
    scores[:] = 0.5
    masks[:] = 1
    assert mask_acc.fg_hist.tolist() == list(fg_ref)
    assert mask_acc.bg_hist.tolist() == list(bg_ref)


def test_input_errors_are_raised_by_update_before_counting():
    acc = BoxAccumulator(THRESHOLDS, num_threads=2)
    # Input errors are raised by update itself, before anything is counted or queued.
    with pytest.raises(ValueError, match="at least one GT box"):
        acc.update(np.zeros((1, 8, 8)), [np.zeros((0, 4))])
    assert int(acc.num_images) == 0


def test_num_threads_argument():
    assert BoxAccumulator(THRESHOLDS).num_threads == default_num_threads() >= 1
    assert MaskAccumulator(THRESHOLDS, num_threads=1).num_threads == 1
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="num_threads"):
            BoxAccumulator(THRESHOLDS, num_threads=bad)

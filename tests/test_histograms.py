"""Score histograms (wsol.metrics.histograms): the compiled helper and the vectorized search
against np.histogram, on scores at, just below and just above every bin edge."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsol.metrics import histograms
from wsol.metrics.histograms import bin_edges, score_bins

SWEEPS = [np.arange(0, 1, 0.001), np.arange(0, 1, 0.01), np.arange(0, 1, 1 / 3),
          np.array([0.0, 0.3, 0.31, 0.9]), np.array([0.5, 0.1, 0.7])]


def _scores(rng, dtype, thresholds):
    m = rng.random((6, 48, 48)).astype(dtype)
    t = np.asarray(thresholds).astype(dtype)
    k = min(len(t), m[0].size)
    m[1].flat[:k] = t[:k]
    m[2].flat[:k] = np.maximum(np.nextafter(t, dtype(-1)), 0)[:k]
    m[3].flat[:k] = np.nextafter(t, dtype(2))[:k]
    m[0, 0, :4] = [0, 1, np.nextafter(dtype(1), dtype(0)), 0.5]
    return m


def _np_histograms(m, fg, bg, edges):
    order = np.argsort(edges[:-3], kind="stable")  # np.histogram needs ascending edges
    if not np.array_equal(order, np.arange(len(order))):
        return None
    return (sum(np.histogram(m[i][fg[i]], bins=edges)[0] for i in range(len(m))),
            sum(np.histogram(m[i][bg[i]], bins=edges)[0] for i in range(len(m))))


@pytest.mark.parametrize("compiled", [None, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sweep", range(len(SWEEPS)))
def test_score_bins_equal_np_histogram(compiled, dtype, sweep):
    thresholds = SWEEPS[sweep]
    rng = np.random.default_rng(sweep)
    m = _scores(rng, dtype, thresholds)
    fg = rng.random(m.shape) < 0.3
    bg = ~fg & (rng.random(m.shape) < 0.8)  # some pixels in neither (ignored mask values)
    edges = bin_edges(thresholds)
    expected = _np_histograms(m, fg, bg, edges)
    got_np = score_bins(m, thresholds, fg, bg, compiled=compiled)
    got_t = score_bins(torch.from_numpy(m), thresholds, torch.from_numpy(fg),
                       torch.from_numpy(bg), compiled=compiled)
    default_bg = score_bins(m, thresholds, fg, compiled=compiled)
    if expected is None:  # unsorted thresholds: only the two paths can be compared
        expected = score_bins(m, thresholds, fg, bg, compiled=False)
    for got in (got_np, tuple(x.numpy() for x in got_t)):
        assert np.array_equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])
    assert default_bg[0].sum() + default_bg[1].sum() == m.size


def test_compiled_helper_is_used_when_built():
    if histograms._scorebins is None:
        pytest.skip("wsol.metrics._scorebins is not built (no C compiler at install time)")
    with pytest.raises(ValueError, match="ascending"):
        histograms._scorebins.score_bins(np.zeros(4, np.float32), False, np.zeros(4, np.uint8),
                                         np.array([0.0, 0.5, 0.2]), 0.0,
                                         np.zeros(2, np.int64), np.zeros(2, np.int64))

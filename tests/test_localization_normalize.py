"""Upsampling and per-image normalization (method-spec §1)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from wsol.localization import masks_from_map, normalize_maps, postprocess_maps, upsample_maps


def _reference_minmax(cam: np.ndarray) -> np.ndarray:
    """wsolevaluation's normalize_scoremap, in place as it is written there."""
    cam = cam.copy()
    if np.isnan(cam).any() or cam.min() == cam.max():
        return np.zeros_like(cam)
    cam -= cam.min()
    cam /= cam.max()
    return cam


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_minmax_is_bitwise_the_reference(dtype):
    rng = np.random.default_rng(0)
    maps = (rng.standard_normal((4, 30, 20)) * 7 + 3).astype(dtype)
    maps[2] = 5.0  # constant -> zeros
    maps[3, 4, 4] = np.nan  # NaN -> zeros
    expected = np.stack([_reference_minmax(m) for m in maps])
    out = normalize_maps(maps)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(normalize_maps(torch.from_numpy(maps)).numpy(), expected)
    np.testing.assert_array_equal(normalize_maps(maps[0]), expected[0])  # (H, W) input


def test_max_normalization():
    x = np.array([[[-1.0, 0.0, 2.0, 4.0]], [[-3.0, -1.0, -2.0, -1.0]]])
    np.testing.assert_array_equal(normalize_maps(x, "max"), [[[0, 0, 0.5, 1]], [[0, 0, 0, 0]]])


def test_pas_normalization():
    x = np.arange(20, dtype=np.float64).reshape(1, 4, 5) + 3  # min 3 -> s = 0..19
    # p = sorted(s)[int(0.9 * 20)] = 18; s / 18 clipped at 1.
    np.testing.assert_allclose(normalize_maps(x, "pas").ravel(), np.minimum(1, np.arange(20) / 18))
    # percentile 0.5 -> p = sorted(s)[10] = 10
    np.testing.assert_allclose(normalize_maps(x, "pas", percentile=0.5).ravel(),
                               np.minimum(1, np.arange(20) / 10))
    # p = 0 (more than 90% at the minimum): the limit 1[s > 0]
    flat = np.zeros((1, 4, 5))
    flat[0, 0, 0] = 2.0
    np.testing.assert_array_equal(normalize_maps(flat, "pas"), (flat > 0).astype(float))


def test_ivr_normalization():
    x = np.arange(20, dtype=np.float64).reshape(1, 4, 5)
    # q = sorted(s)[int(0.45 * 20)] = 9; max(0, s - 9) / 10
    expected = np.maximum(0, np.arange(20) - 9) / 10
    np.testing.assert_allclose(normalize_maps(x, "ivr").ravel(), expected)
    np.testing.assert_array_equal(normalize_maps(np.ones((2, 3, 3)), "ivr"), np.zeros((2, 3, 3)))


@pytest.mark.parametrize("method", ["minmax", "max", "pas", "ivr"])
def test_normalizations_are_per_image_and_in_unit_range(method):
    rng = np.random.default_rng(1)
    maps = torch.from_numpy(rng.standard_normal((3, 16, 16)))
    out = normalize_maps(maps, method)
    assert out.shape == maps.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    # Each map alone gives the same result as in the batch.
    for i in range(3):
        torch.testing.assert_close(normalize_maps(maps[i], method), out[i], rtol=0, atol=0)
    # Scaling a map by a positive factor does not change it (up to rounding).
    torch.testing.assert_close(normalize_maps(maps * 4.0, method), out)


def test_bad_arguments():
    with pytest.raises(ValueError, match="method must be one of"):
        normalize_maps(np.zeros((2, 2)), "softmax")
    with pytest.raises(ValueError, match="only applies to pas and ivr"):
        normalize_maps(np.zeros((2, 2)), "minmax", percentile=0.5)
    with pytest.raises(ValueError, match="shape"):
        normalize_maps(np.zeros((1, 2, 2, 2)))


@pytest.mark.parametrize("low", [7, 14, 28])
def test_upsample_matches_cv2_inter_cubic(low):
    rng = np.random.default_rng(low)
    raw = rng.standard_normal((2, low, low)).astype(np.float32)
    out = upsample_maps(torch.from_numpy(raw), size=(224, 224))
    assert out.shape == (2, 224, 224)
    for i in range(2):
        expected = cv2.resize(raw[i], (224, 224), interpolation=cv2.INTER_CUBIC)
        np.testing.assert_allclose(out[i].numpy(), expected, atol=2e-6)


def test_postprocess_is_upsample_then_normalize():
    rng = np.random.default_rng(5)
    raw = torch.from_numpy(rng.standard_normal((3, 14, 14)).astype(np.float32))
    out = postprocess_maps(raw, size=(224, 224))
    torch.testing.assert_close(out, normalize_maps(upsample_maps(raw, (224, 224))), rtol=0, atol=0)
    assert float(out.amin(dim=(1, 2)).max()) == 0.0 and float(out.amax(dim=(1, 2)).min()) == 1.0
    rect = postprocess_maps(raw, size=(64, 32), normalization="max")
    assert rect.shape == (3, 64, 32)


def test_masks_from_map():
    scoremap = np.array([[0.0, 0.25, 0.5], [0.75, 1.0, 0.5]])
    masks = masks_from_map(scoremap, [0.0, 0.5, 0.9])
    np.testing.assert_array_equal(masks, [scoremap >= 0.0, scoremap >= 0.5, scoremap >= 0.9])
    on_tensor = masks_from_map(torch.from_numpy(scoremap), [0.0, 0.5, 0.9])
    np.testing.assert_array_equal(on_tensor.numpy(), masks)
    # Box-protocol foreground: uint8(255 s) > floor(t * 255).
    quantized = masks_from_map(scoremap, [0.5], quantized=True)
    np.testing.assert_array_equal(quantized[0], (scoremap * 255).astype(np.uint8) > 127)

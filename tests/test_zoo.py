"""The wsolevaluation method zoo (HaS, ACoL, SPG, ADL, CutMix): training-only behaviour happens
in training and not at eval, and every method builds on every backbone."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.nn import functional as F

from wsol.methods import build_method, list_methods
from wsol.methods.adl import ADLayer
from wsol.methods.cutmix import MixedTargets
from wsol.methods.has import hide_patches
from wsol.methods.spg import spg_mask
from wsol.models import create_model

ZOO = ("has", "acol", "spg", "adl", "cutmix")


def tiny(num_classes: int = 3, **kw):
    torch.manual_seed(0)
    return create_model("tiny_cnn", num_classes=num_classes, width=4, **kw)


def test_zoo_is_registered():
    assert set(ZOO) <= set(list_methods())


# ----------------------------------------------------------------------------- HaS
def test_has_hides_grid_patches_in_training_only(one_thread):
    method = build_method("has", tiny())
    images = torch.ones(4, 3, 32, 32)
    labels = torch.zeros(4, dtype=torch.long)
    torch.manual_seed(1)
    hidden, targets = method.train().prepare_batch(images, labels)
    assert torch.equal(targets, labels)
    visible = hidden[:, 0]
    # Hidden pixels come in aligned 4x4 blocks, the same in every channel.
    blocks = visible.unfold(1, 4, 4).unfold(2, 4, 4)          # (B, 8, 8, 4, 4)
    assert torch.equal(blocks.amin(dim=(-1, -2)), blocks.amax(dim=(-1, -2)))
    assert torch.equal(hidden[:, 0], hidden[:, 2])
    share = float((blocks[..., 0, 0] == 0).float().mean())
    assert 0.35 < share < 0.65                                # drop_rate 0.5 of 256 patches
    assert set(visible.unique().tolist()) == {0.0, 1.0}
    same, _ = method.eval().prepare_batch(images, labels)
    assert same is images
    assert torch.equal(hide_patches(images, 4, 1.0)[0], torch.zeros_like(images))
    assert torch.equal(hide_patches(images, 0, 0.5)[0], images)
    with pytest.raises(ValueError, match="grid_size"):
        build_method("has", tiny(), grid_size=-1)


# ----------------------------------------------------------------------------- CutMix
def test_cutmix_mixes_images_and_labels_in_the_loss(one_thread):
    method = build_method("cutmix", tiny()).train()
    images = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 3, 32, 32)
    labels = torch.tensor([0, 1, 2, 1])
    torch.manual_seed(3)
    mixed, targets = method.prepare_batch(images, labels)
    assert isinstance(targets, MixedTargets) and 0.0 < targets.lam < 1.0
    r1, c1, r2, c2, height, width = method._pasted
    inside = torch.zeros(32, 32, dtype=torch.bool)
    inside[r1:r2, c1:c2] = True
    assert abs(targets.lam - (1 - float(inside.float().mean()))) < 1e-9   # lam from the box
    partner = mixed[:, 0, r1, c1].long()                      # image b's box comes from perm[b]
    assert torch.equal(targets.labels_b, labels[partner]) and torch.equal(targets.labels_a, labels)
    assert torch.equal(mixed[:, :, inside], images[partner][:, :, inside])
    assert torch.equal(mixed[:, :, ~inside], images[:, :, ~inside])
    outputs = method(mixed)
    loss = method.loss(outputs, targets)
    expected = (targets.lam * F.cross_entropy(outputs["logits"], targets.labels_a)
                + (1 - targets.lam) * F.cross_entropy(outputs["logits"], targets.labels_b))
    assert torch.allclose(loss, expected)
    assert not torch.allclose(loss, F.cross_entropy(outputs["logits"], labels))
    # Without mixing (eval mode or prob 0): plain labels, plain CE.
    same, plain = method.eval().prepare_batch(images, labels)
    assert same is images and plain is labels
    never = build_method("cutmix", tiny(), prob=0.0).train()
    assert never.prepare_batch(images, labels)[1] is labels


# ----------------------------------------------------------------------------- ADL
def test_adl_layer_drops_peak_or_weights_by_importance():
    x = torch.zeros(1, 2, 4, 4)
    x[0, :, 1, 1] = 10.0                                      # the peak
    x[0, :, 2, 2] = 5.0
    layer = ADLayer(drop_rate=1.0, threshold=0.9).train()
    out = layer(x)
    assert out[0, :, 1, 1].abs().sum() == 0 and torch.equal(out[0, :, 2, 2], x[0, :, 2, 2])
    importance = ADLayer(drop_rate=0.0, threshold=0.9).train()(x)
    assert torch.allclose(importance, x * torch.sigmoid(x.mean(dim=1, keepdim=True)))
    assert ADLayer().eval()(x) is x


def test_adl_method_drops_in_training_and_is_cam_at_eval(one_thread):
    adl = build_method("adl", tiny(), drop_rate=1.0)
    assert adl.positions == ["stage2", "stage3"]
    cam = build_method("cam", tiny())
    cam.load_state_dict(adl.state_dict())                     # same keys: hooks add no weights
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        adl.eval(), cam.eval()
        assert torch.equal(adl(images)["features"], cam(images)["features"])
        adl.train(), cam.train()
        dropped = adl(images)["features"]
    # The last ADL sits on F: the pixels at >= 0.9 x max of the channel mean are zero.
    att = dropped.mean(dim=1)
    assert (att == 0).any(dim=(1, 2)).all()
    with pytest.raises(ValueError, match="no submodule"):
        build_method("adl", tiny(), positions=["stage9"])


# ----------------------------------------------------------------------------- ACoL
def test_acol_erases_the_discriminative_region_for_head_b(one_thread):
    method = build_method("acol", tiny()).train()
    seen = {}
    method.head_b.register_forward_pre_hook(lambda m, args: seen.__setitem__("x", args[0]))
    images, labels = torch.randn(2, 3, 32, 32), torch.tensor([2, 0])
    images_, labels_ = method.prepare_batch(images, labels)
    outputs = method(images_)
    assert torch.equal(outputs["erase_classes"], labels)        # erased at the GT class
    trunk, map_a = outputs["features"], outputs["map_a"]
    a = map_a[torch.arange(2), labels]
    a = (a - a.amin(dim=(1, 2), keepdim=True)) / (a.amax(dim=(1, 2), keepdim=True)
                                                  - a.amin(dim=(1, 2), keepdim=True))
    erased = (a >= 0.7).unsqueeze(1).expand_as(trunk)
    assert erased.any() and (~erased).any()
    assert torch.equal(seen["x"][erased], torch.zeros_like(trunk[erased]))
    assert torch.equal(seen["x"][~erased], trunk[~erased])
    loss = method.loss(outputs, labels_)
    assert torch.allclose(loss, F.cross_entropy(outputs["logits"], labels)
                          + F.cross_entropy(outputs["logits_b"], labels))
    loss.backward()
    assert method.head_b[0].weight.grad is not None
    assert all(p.grad is None for p in method.backbone.classifier.parameters())  # frozen
    # Eval: no labels -> erased at the prediction; maps of another class recompute head B.
    method.eval()
    with torch.no_grad():
        out = method(images)
        assert torch.equal(out["erase_classes"], out["logits"].argmax(dim=1))
        other = (out["erase_classes"] + 1) % 3
        maps = method.localization_maps(out, other)
        again = method.localization_maps(method(images, labels=other), other)
    assert maps.shape == (2, 2, 2) and torch.allclose(maps, again)


# ----------------------------------------------------------------------------- SPG
def test_spg_mask_rules():
    prob = torch.zeros(1, 10, 10)
    prob[0, :5] = 0.9                                         # 50 pixels above 0.7
    prob[0, 5:, :] = 0.3
    mask = spg_mask(prob, 0.7, 0.01)
    assert (mask[0, :5] == 1).all() and (mask[0, 5:] == -1).all()
    few = torch.full((1, 10, 10), 0.5)
    few[0, 0, :3] = torch.tensor([0.6, 0.65, 0.2])            # nothing above 0.7: 0.7 x max
    few[0, 9, 9] = 0.0
    mask = spg_mask(few, 0.7, 0.01)
    assert mask[0, 0, 0] == 1 and mask[0, 0, 1] == 1 and mask[0, 9, 9] == 0
    assert mask[0, 5, 5] == 1                                 # 0.5 > 0.7 x 0.65


def test_spg_losses_present_in_training_only(one_thread):
    method = build_method("spg", tiny()).train()
    images, labels = torch.randn(2, 3, 32, 32), torch.tensor([1, 2])
    images_, targets = method.prepare_batch(images, labels)
    outputs = method(images_)
    assert outputs["attention"].shape == (2, 32, 32) and outputs["fused_attention"].shape == (2, 32, 32)
    terms = method.loss_terms(outputs, targets)
    assert set(terms) == {"cls", "b2_attention", "b1_b2", "c_fused"}
    assert all(torch.isfinite(t) and t > 0 for t in terms.values())
    loss = method.loss(outputs, targets)
    assert torch.allclose(loss, sum(terms.values()))
    loss.backward()
    for branch in (method.b1a, method.b2a, method.b_shared, method.branch_c):
        assert branch[0].weight.grad is not None and branch[0].weight.grad.abs().sum() > 0
    method.eval()
    with torch.no_grad():
        out = method(images)
    assert set(out) == {"features", "logits"}
    assert method.localization_maps(out, labels).shape == (2, 2, 2)


# ----------------------------------------------------------------------------- every backbone
def _check_builds(backbone, name: str, size: int, creams=(False, True)) -> None:
    for cream in creams:
        method = build_method(name, copy.deepcopy(backbone), cream=cream).eval()
        images = torch.randn(2, 3, size, size)
        with torch.no_grad():
            outputs = method(images)
            classes = torch.tensor([0, 2])
            maps = method.localization_maps(outputs, classes)
            h, w = method.cream_features(outputs).shape[-2:]
            assert maps.shape == (2, h, w) and torch.isfinite(maps).all()
            if cream:
                stages = method.maps_by_stage(outputs, classes)
                assert {k: tuple(v.shape) for k, v in stages.items()} == {
                    "cam": (2, h, w), "calibrated": (2, h, w), "fused": (2, h, w)}
                assert method.fg_embeddings.shape[1] == method.cream_features(outputs).shape[1]


@pytest.mark.parametrize("name", ZOO)
def test_every_method_builds_on_small_backbones(name, one_thread):
    _check_builds(tiny(), name, 32)
    _check_builds(create_model("efficientnet_lite0", num_classes=3), name, 64)


@pytest.mark.slow
@pytest.mark.parametrize("backbone_name", ["vgg16", "resnet50", "inception_v3"])
def test_architecture_specific_methods_build_on_paper_backbones(backbone_name):
    torch.manual_seed(0)
    backbone = create_model(backbone_name, num_classes=3)
    for name in ("acol", "spg", "adl"):
        _check_builds(backbone, name, 64, creams=(True,))  # stage "cam" = the plain map

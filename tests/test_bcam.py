"""B-CAM (wsol/methods/bcam.py): aggregation, stagger loss, detach semantics, maps and masks.

Expected values are derived by hand in the comments (method-spec §3).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from wsol.methods import build_method, list_methods
from wsol.methods.bcam import (
    BCAM,
    StaggerWeights,
    aggregate,
    default_loss_weights,
    gradient_weighted_map,
    masks_from_maps,
    stagger_loss,
)
from wsol.models.base import WSOLBackbone


class _SmallNet(WSOLBackbone):
    """conv(3->D, stride 4) + ReLU -> GAP -> Linear(D, C); no BatchNorm (batch-independent)."""

    def __init__(self, num_classes: int = 3, dim: int = 8) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.feature_dim = dim
        self.conv = nn.Conv2d(3, dim, kernel_size=4, stride=4)
        self.classifier = nn.Linear(dim, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        return torch.relu(self.conv(x))


def _method(num_classes: int = 3, dim: int = 8, heads: int = 3, seed: int = 0,
            random_aggregators: bool = True, **kw) -> BCAM:
    torch.manual_seed(seed)
    kw.setdefault("backbone_name", "resnet50")
    kw.setdefault("polarity", "none")  # the official maps; the check: test_bcam_inversion.py
    m = BCAM(_SmallNet(num_classes, dim), num_heads=heads, **kw)
    if random_aggregators:
        with torch.no_grad():
            m.object_aggregator.weight.normal_(0, 0.5)
            m.background_aggregator.weight.normal_(0, 0.5)
    return m.eval()


def _features(b: int = 2, d: int = 8, h: int = 3, w: int = 4, seed: int = 1) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, d, h, w, generator=g) + 0.1


# ------------------------------------------------------------------ aggregation
def test_zero_initialized_aggregators_pool_like_gap():
    m = _method(random_aggregators=False)
    assert torch.count_nonzero(m.object_aggregator.weight) == 0
    feats = _features()
    out = m.head(feats)
    gap = feats.mean(dim=(2, 3))
    w_b = m.background_classifier
    # z_o = z_b = GAP(F): the object logits are exactly the CAM backbone's head.
    torch.testing.assert_close(out["logits"], m.backbone.forward_head(feats))
    torch.testing.assert_close(out["logits_back_rev"], m.backbone.forward_head(feats))
    torch.testing.assert_close(out["logits_back"], w_b(gap))
    torch.testing.assert_close(out["logits_rev"], w_b(gap))
    torch.testing.assert_close(out["object_attention"], torch.full((2, 3, 4), 1 / 12))


def test_one_hot_attention_picks_that_pixel():
    feats = _features(b=1, h=2, w=3)
    att = torch.zeros(1, 2, 6)
    att[0, 0, 4] = 1.0  # head 0 -> pixel (1, 1)
    att[0, 1, 2] = 1.0  # head 1 -> pixel (0, 2)
    expected = (feats[0, :, 1, 1] + feats[0, :, 0, 2]) / 2  # mean over heads
    torch.testing.assert_close(aggregate(att, feats)[0], expected)


def test_aggregator_softmax_concentrates_on_a_marked_pixel():
    m = _method(dim=4, heads=5, random_aggregators=False)
    feats = torch.rand(1, 4, 3, 3)
    feats[0, 0] = 0.0
    feats[0, 0, 2, 1] = 60.0  # channel 0 marks pixel (2, 1)
    with torch.no_grad():
        m.background_aggregator.weight[:, 0] = 1.0  # every head scores channel 0
    out = m.head(feats)
    # softmax puts weight 1 / (1 + 8 e^-60) on the marked pixel: z_b = f_(2,1).
    z_b = feats[0, :, 2, 1]
    torch.testing.assert_close(out["logits_back"][0], m.background_classifier(z_b))
    assert out["background_attention"][0, 2, 1].item() == pytest.approx(1.0)


# ------------------------------------------------------------------ loss
@pytest.mark.parametrize("weights", [(1, 1, 1, 1), (1, 0.4, 0.4, 0.2), (0.3, 0.5, 0.7, 1.1)])
def test_loss_with_zero_logits_is_ln2_times_sum_of_weights(weights):
    # C = 2, all logits 0: CE = ln 2; each MLSM term = mean_c -log sigma(0) = ln 2.
    zeros = torch.zeros(3, 2)
    outputs = {k: zeros for k in ("logits", "logits_back", "logits_rev", "logits_back_rev")}
    loss = stagger_loss(outputs, torch.tensor([0, 1, 1]), StaggerWeights(*weights))
    assert loss.item() == pytest.approx(math.log(2) * sum(weights), rel=1e-6)


def test_loss_hand_case_with_nonzero_logits():
    ln3 = math.log(3)  # sigma(ln 3) = 3/4, sigma(-ln 3) = 1/4
    outputs = {
        "logits": torch.tensor([[ln3, 0.0]]),           # CE, y = 0: -log(3/4) = ln(4/3)
        "logits_rev": torch.tensor([[ln3, ln3]]),       # target 1-y = [0, 1]: (ln 4 + ln 4/3) / 2
        "logits_back": torch.tensor([[ln3, -ln3]]),     # target [1, 1]: (ln 4/3 + ln 4) / 2
        "logits_back_rev": torch.tensor([[ln3, ln3]]),  # target [0, 0]: ln 4
    }
    half = (math.log(4) + math.log(4 / 3)) / 2
    expected = math.log(4 / 3) + 0.4 * half + 0.4 * half + 0.2 * math.log(4)
    loss = stagger_loss(outputs, torch.tensor([0]), StaggerWeights(1.0, 0.4, 0.4, 0.2))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("labels, match", [
    (torch.tensor([0, 1]), "shape"),
    (torch.tensor([0, 1, 3]), r"\[0, 3\)"),
    (torch.tensor([0.0, 1.0, 1.0]), "integer"),
])
def test_loss_rejects_bad_labels(labels, match):
    m = _method()
    out = m(torch.rand(3, 3, 12, 16))
    with pytest.raises(ValueError, match=match):
        m.loss(out, labels)


# ------------------------------------------------------------------ detach semantics
def _grad_wrt(output: Tensor, inp: Tensor) -> Tensor:
    (g,) = torch.autograd.grad(output.sum(), inp, retain_graph=True, allow_unused=True)
    return torch.zeros_like(inp) if g is None else g


def test_background_classifier_terms_reach_features_only_through_the_aggregators():
    # Zero aggregators: the attention path carries W_agg^T (...) = 0, so W_b z_b' and W_b z_o'
    # give F exactly no gradient, while the object-classifier terms (live value path) do.
    m = _method(random_aggregators=False)
    feats = _features().requires_grad_(True)
    out = m.head(feats)
    assert torch.count_nonzero(_grad_wrt(out["logits_back"], feats)) == 0
    assert torch.count_nonzero(_grad_wrt(out["logits_rev"], feats)) == 0
    assert _grad_wrt(out["logits"], feats).abs().sum() > 0
    assert _grad_wrt(out["logits_back_rev"], feats).abs().sum() > 0
    # ... while the attention itself is trained by them.
    (g_agg,) = torch.autograd.grad(out["logits_back"][:, 0].sum(), m.background_aggregator.weight)
    assert g_agg.abs().sum() > 0


def test_background_term_gradient_lies_in_the_aggregator_row_space():
    # With K = 3 < D = 8 heads, dF of W_b z_b' = A^T (d attention scores) at every pixel, so it
    # vanishes after projecting out span(A's rows); W_o z_b's gradient does not.
    m = _method(dim=8, heads=3)
    feats = _features().requires_grad_(True)
    out = m.head(feats)
    rows = m.background_aggregator.weight.detach().view(3, 8)
    q, _ = torch.linalg.qr(rows.T)  # (8, 3) orthonormal basis of the row space
    proj = torch.eye(8) - q @ q.T

    def off_span(g: Tensor) -> Tensor:
        return torch.einsum("ed,bdhw->behw", proj, g).abs().max()

    g_back = _grad_wrt(out["logits_back"], feats)
    assert g_back.abs().max() > 1e-4
    assert off_span(g_back) < 1e-6
    assert off_span(_grad_wrt(out["logits_back_rev"], feats)) > 1e-3


def test_background_loss_terms_give_backbone_no_gradient_with_zero_aggregators():
    torch.manual_seed(0)
    images, labels = torch.rand(4, 3, 12, 16), torch.tensor([0, 1, 2, 0])
    # r_fb, r_bf only: the backbone is reached only through the (zero) aggregators.
    m = _method(random_aggregators=False, rate_ff=0, rate_fb=1, rate_bf=1, rate_bb=0).train()
    m.loss(m(images), labels).backward()
    for p in m.backbone.parameters():
        assert p.grad is None or torch.count_nonzero(p.grad) == 0
    assert m.background_classifier.weight.grad.abs().sum() > 0
    assert m.background_aggregator.weight.grad.abs().sum() > 0
    # r_bb alone (W_o z_b, value path live) does train the backbone.
    m2 = _method(random_aggregators=False, rate_ff=0, rate_fb=0, rate_bf=0, rate_bb=1).train()
    m2.loss(m2(images), labels).backward()
    assert m2.backbone.conv.weight.grad.abs().sum() > 0


# ------------------------------------------------------------------ gradient maps
def test_gradient_map_variants_by_hand():
    grads = torch.tensor([[[[1.0, 3.0]], [[-1.0, -1.0]]]])  # (1, 2, 1, 2): g = (2, -1)
    feats = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])
    # cub: 2 * G_0 - 1 * G_1 = [3, 7]; ilsvrc: 2 * G_0 + 0 * G_1 = [2, 6];
    # openimages: 2 * F_0 - 1 * F_1 = [2, -1].
    torch.testing.assert_close(gradient_weighted_map(grads, feats, "cub"),
                               torch.tensor([[[3.0, 7.0]]]))
    torch.testing.assert_close(gradient_weighted_map(grads, feats, "ilsvrc"),
                               torch.tensor([[[2.0, 6.0]]]))
    torch.testing.assert_close(gradient_weighted_map(grads, feats, "openimages"),
                               torch.tensor([[[2.0, -1.0]]]))
    with pytest.raises(ValueError, match="variant"):
        gradient_weighted_map(grads, feats, "voc")


def _reference_maps(m: BCAM, image: Tensor, cls: int, variant: str) -> tuple[Tensor, Tensor]:
    """One image, official style: backward through the whole net, read dS/dF at F."""
    maps = []
    for key, minus in (("logits", "logits_rev"), ("logits_back", "logits_back_rev")):
        feats = m.backbone.forward_features(image[None])
        feats.retain_grad()
        out = m.head(feats)
        score = out[key][0, cls]
        if variant != "openimages":
            score = score - out[minus][0, cls]
        score.backward()
        g, f = feats.grad[0], feats.detach()[0]
        w = g.mean(dim=(1, 2))
        if variant == "cub":
            maps.append(sum(g[d] * w[d] for d in range(g.shape[0])))
        elif variant == "ilsvrc":
            maps.append(sum(g[d] * max(w[d].item(), 0.0) for d in range(g.shape[0])))
        else:
            maps.append(sum(f[d] * w[d] for d in range(g.shape[0])))
    m.zero_grad(set_to_none=True)
    return maps[0], maps[1]


@pytest.mark.parametrize("variant", ["cub", "ilsvrc", "openimages"])
def test_batched_gradient_maps_equal_a_per_image_autograd_loop(variant):
    m = _method(variant=variant)
    images, classes = torch.rand(3, 3, 12, 16), torch.tensor([2, 0, 1])
    with torch.no_grad():
        out = m(images)
    fore, back = m.foreground_background_maps(out, classes)
    assert fore.shape == back.shape == (3, 3, 4)
    torch.testing.assert_close(m.localization_maps(out, classes), fore)
    torch.testing.assert_close(m.background_maps(out, classes), back)
    for b in range(3):
        ref_fore, ref_back = _reference_maps(m, images[b], int(classes[b]), variant)
        torch.testing.assert_close(fore[b], ref_fore, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(back[b], ref_back, rtol=1e-4, atol=1e-6)
    assert fore.abs().max() > 0 and back.abs().max() > 0


@pytest.mark.parametrize("map_type", ["gradient", "weight"])
@pytest.mark.parametrize("grad_mode", [True, False])
def test_localization_populates_no_parameter_grad(map_type, grad_mode):
    m = _method(map_type=map_type)
    classes = torch.tensor([1, 2])
    with torch.set_grad_enabled(grad_mode):  # the engine's enable_grad / no_grad contexts
        out = m(torch.rand(2, 3, 12, 16))
        fore = m.localization_maps(out, classes)
        mask = m.localization_masks(out, classes, (12, 16))
    assert all(p.grad is None for p in m.parameters())
    assert not fore.requires_grad and not mask.requires_grad
    assert m.maps_need_grad is False  # maps work from a no_grad forward: no graph needed


def test_gradient_maps_work_on_inference_mode_outputs():
    m = _method()
    with torch.inference_mode():
        out = m(torch.rand(2, 3, 12, 16))
    assert m.localization_maps(out, torch.tensor([0, 1])).shape == (2, 3, 4)


# ------------------------------------------------------------------ weight maps and masks
def test_weight_maps_are_per_pixel_logits():
    m = _method(map_type="weight")
    feats = _features()
    classes = torch.tensor([2, 1])
    fore, back = m.foreground_background_maps({"features": feats}, classes)
    cam = m.backbone.class_activation_maps(feats, classes)
    torch.testing.assert_close(fore, cam + m.backbone.classifier.bias[classes].view(2, 1, 1))
    w_b, b_b = m.background_classifier.weight, m.background_classifier.bias
    torch.testing.assert_close(back[1], torch.einsum("dhw,d->hw", feats[1], w_b[1]) + b_b[1])


def test_mask_ties_go_to_background():
    fore = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])
    back = fore.clone()
    assert not masks_from_maps(fore, back, (2, 2)).any()
    assert not masks_from_maps(fore, back, (8, 6), normalization="minmax").any()
    back[0, 1, 1] = 2.0  # only pixel (1, 1) has fore > back
    mask = masks_from_maps(fore, back, (2, 2))
    assert mask.dtype == torch.bool and mask.shape == (1, 2, 2)
    assert mask.tolist() == [[[False, False], [False, True]]]


def test_masks_from_maps_upsample_bilinearly_then_compare():
    # fore - back = [-1, 1] along x; bilinear (align_corners=False) to width 4 samples it at
    # x = -0.25, 0.25, 0.75, 1.25 -> clamped [-1, -0.5, 0.5, 1]: mask [F, F, T, T].
    fore = torch.tensor([[[0.0, 2.0]]])
    back = torch.ones(1, 1, 2)
    assert masks_from_maps(fore, back, (1, 4)).tolist() == [[[False, False, True, True]]]
    with pytest.raises(ValueError, match="size"):
        masks_from_maps(fore, back, (0, 4))
    with pytest.raises(ValueError, match="fore and back"):
        masks_from_maps(fore, back[0], (1, 4))


@pytest.mark.parametrize("norm", ["auto", "none"])
def test_identical_classifiers_give_an_all_background_mask(norm):
    m = _method(map_type="weight", mask_normalization=norm)
    with torch.no_grad():
        m.background_classifier.weight.copy_(m.backbone.classifier.weight)
        m.background_classifier.bias.copy_(m.backbone.classifier.bias)
    out = m(torch.rand(2, 3, 12, 16))
    mask = m.localization_masks(out, torch.tensor([0, 2]), (24, 32))
    assert mask.shape == (2, 24, 32) and mask.dtype == torch.bool
    assert not mask.any()


def test_localization_rejects_bad_classes():
    m = _method()
    out = m(torch.rand(2, 3, 12, 16))
    with pytest.raises(ValueError, match="classes"):
        m.localization_maps(out, torch.tensor([0]))
    with pytest.raises(ValueError, match="classes"):
        m.localization_maps(out, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="features"):
        m.localization_maps({"logits": out["logits"]}, torch.tensor([0, 1]))


# ------------------------------------------------------------------ configuration
def test_default_loss_weights_per_backbone():
    assert default_loss_weights("resnet50") == (1.0, 1.0, 1.0, 1.0)
    assert default_loss_weights("vgg16") == (1.0, 0.4, 0.4, 0.2)
    assert default_loss_weights("inception_v3") == (1.0, 0.4, 0.4, 0.2)
    assert default_loss_weights("efficientnet_lite0") == (1.0, 0.4, 0.4, 0.2)
    assert default_loss_weights("tiny_cnn") == default_loss_weights("TinyCNN")
    with pytest.raises(ValueError, match="alexnet"):
        default_loss_weights("alexnet")


def test_constructor_resolves_and_validates_weights():
    m = BCAM(_SmallNet(), backbone_name="vgg16", rate_bb=0.5)
    assert m.loss_weights == StaggerWeights(1.0, 0.4, 0.4, 0.5)
    explicit = BCAM(_SmallNet(), rate_ff=1, rate_fb=2, rate_bf=3, rate_bb=4)
    assert explicit.loss_weights == (1.0, 2.0, 3.0, 4.0)
    with pytest.raises(ValueError, match="backbone_name"):
        BCAM(_SmallNet())  # class name _SmallNet names no known family
    with pytest.raises(ValueError, match="rate_bf"):
        BCAM(_SmallNet(), backbone_name="resnet50", rate_bf=-1)
    for bad in ({"map_type": "cam"}, {"variant": "voc"}, {"num_heads": 0},
                {"mask_normalization": "max"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            BCAM(_SmallNet(), backbone_name="resnet50", **bad)


def _tiny_backbone(num_classes: int) -> WSOLBackbone:
    from wsol.models import create_model

    try:
        return create_model("tiny_cnn", num_classes, width=4)
    except ValueError:  # tiny_cnn not registered in this checkout
        return _SmallNet(num_classes, dim=16)


def test_end_to_end_with_a_tiny_backbone():
    assert "bcam" in list_methods()
    torch.manual_seed(0)
    m = build_method("bcam", _tiny_backbone(2), backbone_name="tiny_cnn", num_heads=4)
    # Two classes: a bright square in the top-left or bottom-right corner, over noise.
    images = torch.rand(8, 3, 64, 64) * 0.2
    labels = torch.tensor([0, 1] * 4)
    for i, y in enumerate(labels.tolist()):
        sl = slice(4, 28) if y == 0 else slice(36, 60)
        images[i, :, sl, sl] += 1.0
    groups = m.param_groups(0.01)
    head = [g for g in groups if g["name"] == "bcam_head"]
    assert len(head) == 1 and head[0]["lr"] == pytest.approx(0.1)
    own = {id(p) for mod in (m.object_aggregator, m.background_aggregator,
                             m.background_classifier) for p in mod.parameters()}
    assert {id(p) for p in head[0]["params"]} == own
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    m.train()
    losses = []
    for _ in range(15):
        loss = m.loss(m(images), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
    m.eval()
    with torch.no_grad():
        out = m(images)
    fmap = m.localization_maps(out, labels)
    mask = m.localization_masks(out, labels, (64, 64))
    assert fmap.shape == out["features"].shape[:1] + out["features"].shape[2:]
    assert mask.shape == (8, 64, 64) and mask.dtype == torch.bool
    assert torch.isfinite(fmap).all()
    # W_o is the backbone's classifier: a CAM-style backbone checkpoint round-trips.
    again = BCAM(_tiny_backbone(2), backbone_name="tiny_cnn", num_heads=4)
    again.load_state_dict(m.state_dict())
    again.eval()
    with torch.no_grad():
        torch.testing.assert_close(again(images)["logits"], out["logits"])

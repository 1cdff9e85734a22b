"""B-CAM on large objects: the ``inside_gt_share`` diagnostic, the polarity check and the
background-classifier initialization (wsol/methods/bcam.py "Large objects, few classes").

Expected values are derived by hand in the comments.
"""

from __future__ import annotations

import math

import pytest
import torch

from wsol.errors import MetricError
from wsol.methods.bcam import BCAM, evidence_region, inverted_maps
from wsol.metrics.inside import box_union_masks, inside_gt_share, inside_outside_means
from wsol.models import create_model


# ------------------------------------------------------------------ inside_gt_share
def test_inside_gt_share_counts_images_whose_box_mean_wins():
    maps = torch.zeros(3, 8, 8)
    maps[0, 2:5, 2:5] = 1.0          # on the box -> inside
    maps[1] = 1.0
    maps[1, 2:5, 2:5] = 0.0          # the complement of the box lit -> outside
    maps[2] = 0.5                    # constant: a tie counts as not inside
    boxes = [[(2, 2, 4, 4)]] * 3     # inclusive: 3 x 3 pixels
    res = inside_gt_share(maps, boxes)
    torch.testing.assert_close(res.inside, torch.tensor([1.0, 0.0, 0.5]))
    torch.testing.assert_close(res.outside, torch.tensor([0.0, 1.0, 0.5]))
    assert res.num_defined == 3 and res.num_inside == 1
    assert res.share == pytest.approx(1 / 3)


def test_inside_gt_share_uses_the_union_of_boxes_and_excludes_full_image_boxes():
    maps = torch.zeros(2, 6, 6)
    maps[0, 0:2, 0:2] = 1.0          # 4 px, inside the first box
    boxes = [[(0, 0, 1, 1), (4, 4, 5, 5)],   # union 8 px: inside mean 4/8, outside 0/28
             [(0, 0, 5, 5)]]                 # covers the whole map: undefined
    inside, outside, defined = inside_outside_means(maps, boxes)
    assert defined.tolist() == [True, False]
    assert inside[0].item() == pytest.approx(0.5) and outside[0].item() == 0.0
    assert math.isnan(inside[1].item()) and math.isnan(outside[1].item())
    res = inside_gt_share(maps, boxes)
    assert (res.num_defined, res.num_inside, res.share) == (1, 1, 1.0)
    # No defined image at all: nan, not 0 or 1.
    assert math.isnan(inside_gt_share(maps[1:], boxes[1:]).share)


def test_box_union_masks_clip_to_the_map():
    m = box_union_masks([[(-3, 4, 2, 99)], []], (6, 5))
    assert m.shape == (2, 6, 5)
    assert m[0].sum().item() == 3 * 2  # x 0..2, y 4..5
    assert not m[1].any()


def test_inside_gt_share_rejects_bad_input():
    with pytest.raises(MetricError, match="B, H, W"):
        inside_gt_share(torch.zeros(4, 4), [[(0, 0, 1, 1)]])
    with pytest.raises(MetricError, match="one entry per map"):
        inside_gt_share(torch.zeros(2, 4, 4), [[(0, 0, 1, 1)]])
    with pytest.raises(MetricError, match=r"boxes\[0\].*x1 < x0"):
        inside_gt_share(torch.zeros(1, 4, 4), [[(3, 0, 1, 1)]])
    with pytest.raises(MetricError, match=r"\(K, 4\)"):
        inside_gt_share(torch.zeros(1, 4, 4), [[(0, 0, 1)]])


# ------------------------------------------------------------------ polarity check
def test_inverted_maps_compares_the_map_on_the_evidence_region():
    evidence = torch.zeros(3, 4, 4)
    evidence[:, 1:3, 1:3] = 1.0                       # region R: the centre 2 x 2
    maps = torch.zeros(3, 4, 4)
    maps[0, 1:3, 1:3] = 2.0                           # agrees with R -> kept
    maps[1] = 2.0
    maps[1, 1:3, 1:3] = 0.0                           # lights up the complement -> inverted
    region = evidence_region(evidence, 0.2)
    region[2] = True                                  # full region: no contrast -> kept
    assert inverted_maps(maps, region).tolist() == [False, True, False]


def _bcam(**kw) -> BCAM:
    torch.manual_seed(0)
    return BCAM(create_model("tiny_cnn", 3, width=4), backbone_name="tiny_cnn", num_heads=2,
                **kw).eval()


def test_polarity_flips_the_sign_of_inverted_maps_only():
    plain = _bcam(polarity="none")
    checked = _bcam(polarity="cam")
    checked.load_state_dict(plain.state_dict())
    images = torch.randn(6, 3, 64, 64)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    with torch.no_grad():
        out = plain(images)
    raw_fore, raw_back = plain.foreground_background_maps(out, labels)
    fore, back = checked.foreground_background_maps(out, labels)
    flips = checked.polarity_flips(out, labels)
    evidence = checked.object_evidence(out, labels)
    assert evidence is not None
    # The flip decision is exactly inverted_maps(raw map, CAM region).
    assert flips.tolist() == inverted_maps(raw_fore, evidence_region(evidence, 0.2)).tolist()
    sign = torch.where(flips, -1.0, 1.0).view(-1, 1, 1)
    torch.testing.assert_close(fore, raw_fore * sign)
    torch.testing.assert_close(back, raw_back * sign)
    torch.testing.assert_close(checked.localization_maps(out, labels), fore)
    # After the check no map is inverted any more with respect to the same region.
    assert not inverted_maps(fore, evidence_region(evidence, 0.2)).any()
    assert not plain.polarity_flips(out, labels).any()


def test_new_options_are_validated():
    with pytest.raises(ValueError, match="polarity"):
        _bcam(polarity="flip")
    with pytest.raises(ValueError, match="polarity_tau"):
        _bcam(polarity_tau=1.5)
    with pytest.raises(ValueError, match="background_init"):
        _bcam(background_init="xavier")


# ------------------------------------------------------------------ W_b initialization
@pytest.mark.parametrize("num_classes", [2, 3, 10, 200])
def test_background_classifier_init_scale(num_classes):
    """He-normal std is sqrt(2 / fan): fan_out = C gives rows of norm ~ sqrt(2 D / C) (29 for
    EfficientNet's D = 1280 and C = 3, 4.5 for the official ResNet D = 2048, C = 200);
    fan_in = D gives ~ sqrt(2) whatever C."""
    torch.manual_seed(0)
    dim = 256
    backbone = create_model("tiny_cnn", num_classes, width=dim // 8)
    for init, expected in (("fan_out", math.sqrt(2 * dim / num_classes)),
                           ("fan_in", math.sqrt(2.0))):
        m = BCAM(backbone, backbone_name="tiny_cnn", num_heads=1, background_init=init)
        norms = m.background_classifier.weight.norm(dim=1)
        assert norms.mean().item() == pytest.approx(expected, rel=0.15)


def test_border_polarity_flips_maps_that_light_up_the_image_border():
    from wsol.methods.bcam import interior_region

    region = interior_region(2, (7, 7))
    assert region[0].sum().item() == 25  # 1-pixel band on a 7 x 7 map (EfficientNet at 224)
    assert not interior_region(1, (2, 2)).any()  # no interior: nothing is flipped
    m = _bcam()  # default polarity: border
    assert m.polarity == "border"
    images = torch.randn(4, 3, 64, 64)
    labels = torch.tensor([0, 1, 2, 0])
    with torch.no_grad():
        out = m(images)
    m.polarity = "none"
    raw = m.localization_maps(out, labels)
    m.polarity = "border"
    flips = m.polarity_flips(out, labels)
    assert flips.tolist() == inverted_maps(raw, interior_region(4, tuple(raw.shape[1:]))).tolist()
    fixed = m.localization_maps(out, labels)
    torch.testing.assert_close(fixed, torch.where(flips.view(-1, 1, 1), -raw, raw))
    assert not inverted_maps(fixed, interior_region(4, tuple(raw.shape[1:]))).any()

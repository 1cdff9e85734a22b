"""CREAM (method-spec §2): Eq.3-12 functions, the method class and fit_embeddings."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from wsol.methods import build_method
from wsol.methods.cam import CAM
from wsol.methods.cream import (
    CREAM,
    calibrate,
    cam_guided_mask,
    em_reactivation,
    fit_embeddings,
    fuse,
    masked_mean_features,
    momentum_update,
)
from wsol.models import create_model
from wsol.models.base import WSOLBackbone


pytestmark = pytest.mark.usefixtures("one_thread")


class SmallBackbone(WSOLBackbone):
    """Two conv layers -> (B, 6, H/4, W/4), GAP + linear classifier."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.num_classes, self.feature_dim = num_classes, 6
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.Conv2d(8, 6, 3, stride=2, padding=1), nn.ReLU())
        self.classifier = nn.Linear(6, num_classes)

    def forward_features(self, x):
        return self.body(x)


class ColorBackbone(WSOLBackbone):
    """Fixed features: 4x4 average of (R, G, B, 0.1) -> (B, 4, H/4, W/4); CAM of class 0 = R."""

    def __init__(self) -> None:
        super().__init__()
        self.num_classes, self.feature_dim = 2, 4
        self.classifier = nn.Linear(4, 2)
        with torch.no_grad():
            self.classifier.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 0, 1.0, 0]]))
            self.classifier.bias.zero_()

    def forward_features(self, x):
        const = torch.full_like(x[:, :1], 0.1)
        return nn.functional.avg_pool2d(torch.cat([x, const], dim=1), 4)


def tiny_backbone(num_classes: int = 3) -> WSOLBackbone:
    """The project's tiny_cnn (output stride 16)."""
    return create_model("tiny_cnn", num_classes=num_classes, pretrained=False, width=8)


def red_square_batch(n: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Blue images with a red square at a per-image position; returns images and object masks
    at feature resolution (size / 4)."""
    gen = torch.Generator().manual_seed(1)
    images = torch.zeros(n, 3, size, size)
    images[:, 2] = 1.0
    masks = torch.zeros(n, size // 4, size // 4, dtype=torch.bool)
    for b in range(n):
        y, x = (int(v) * 4 for v in torch.randint(0, 4, (2,), generator=gen))
        images[b, :, y:y + 12, x:x + 12] = torch.tensor([1.0, 0, 0]).view(3, 1, 1)
        masks[b, y // 4:y // 4 + 3, x // 4:x // 4 + 3] = True
    return images, masks


# ----------------------------------------------------------------------------- Eq.3-4
def test_cam_guided_mask_by_hand():
    cams = torch.tensor([[[0.0, 1.0], [2.0, 10.0]], [[-1.0, -0.5], [0.0, 1.0]]])
    # normalized: [[0, .1], [.2, 1]] and [[0, .25], [.5, 1]]
    expected = torch.tensor([[[False, False], [False, True]], [[False, True], [True, True]]])
    assert torch.equal(cam_guided_mask(cams, tau=0.2), expected)


def test_cam_guided_mask_constant_or_nan_is_empty():
    cams = torch.stack([torch.full((3, 3), 5.0), torch.rand(3, 3)])
    cams[1, 0, 0] = float("nan")
    assert not cam_guided_mask(cams).any()
    with pytest.raises(ValueError, match="cams"):
        cam_guided_mask(torch.rand(3, 3))


def test_masked_mean_features_by_hand():
    features = torch.arange(8, dtype=torch.float32).view(1, 2, 2, 2)  # channel 0: 0..3, 1: 4..7
    mask = torch.tensor([[[True, False], [False, True]]])
    f_fg, f_bg, valid_fg, valid_bg = masked_mean_features(features, mask)
    assert torch.allclose(f_fg, torch.tensor([[1.5, 5.5]]))     # pixels 0 and 3
    assert torch.allclose(f_bg, torch.tensor([[1.5, 5.5]]))     # pixels 1 and 2
    mask = torch.tensor([[[True, True], [True, False]]])
    f_fg, f_bg, _, _ = masked_mean_features(features, mask)
    assert torch.allclose(f_fg, torch.tensor([[1.0, 5.0]]))
    assert torch.allclose(f_bg, torch.tensor([[3.0, 7.0]]))
    f_fg, f_bg, valid_fg, valid_bg = masked_mean_features(
        features.expand(2, -1, -1, -1), torch.tensor([[[False] * 2] * 2, [[True] * 2] * 2]))
    assert valid_fg.tolist() == [False, True] and valid_bg.tolist() == [True, False]
    assert torch.equal(f_fg[0], torch.zeros(2))
    assert torch.allclose(f_bg[0], torch.tensor([1.5, 5.5]))


def test_momentum_update_rules():
    emb0 = torch.arange(12, dtype=torch.float32).view(4, 3)
    feats = torch.tensor([[1.0, 1, 1], [3, 3, 3], [100, 100, 100], [5, 6, 7]])
    labels = torch.tensor([0, 0, 0, 2])
    valid = torch.tensor([True, True, False, True])            # the 100s are not used
    emb = emb0.clone()
    counts = momentum_update(emb, feats, labels, valid, gamma=0.0)
    assert counts.tolist() == [2, 0, 1, 0]
    assert torch.equal(emb[0], torch.tensor([2.0, 2, 2]))       # batch mean of class 0
    assert torch.equal(emb[2], torch.tensor([5.0, 6, 7]))
    assert torch.equal(emb[[1, 3]], emb0[[1, 3]])               # absent classes unchanged
    emb = emb0.clone()
    momentum_update(emb, feats, labels, valid, gamma=1.0)
    assert torch.equal(emb, emb0)
    emb = emb0.clone()
    momentum_update(emb, feats, labels, valid, gamma=0.8)
    assert torch.allclose(emb[0], 0.8 * emb0[0] + 0.2 * torch.tensor([2.0, 2, 2]))
    with pytest.raises(ValueError, match="gamma"):
        momentum_update(emb, feats, labels, valid, gamma=1.5)
    with pytest.raises(ValueError, match="labels"):
        momentum_update(emb, feats, torch.tensor([0, 0, 0, 4]), valid, gamma=0.5)


# ----------------------------------------------------------------------------- Eq.5-9
def test_em_responsibilities_sum_to_one_and_match_eq8():
    torch.manual_seed(0)
    feats, mu = torch.randn(3, 5, 7), torch.randn(3, 2, 5)
    z, _, pi = em_reactivation(feats, mu, scale=8.0, iterations=3)
    assert z.shape == (3, 2, 7)
    assert torch.allclose(z.sum(dim=1), torch.ones(3, 7), atol=1e-6)
    assert torch.allclose(pi.sum(dim=1), torch.ones(3), atol=1e-6)
    # T = 1: Eq.8 with the initial centroids and pi = 1/2, written out per pixel.
    z1, _, _ = em_reactivation(feats, mu, scale=8.0, iterations=1)
    b, i = 1, 4
    cos = [nn.functional.cosine_similarity(feats[b, :, i], mu[b, k], dim=0) for k in range(2)]
    e = [0.5 * math.exp(8.0 * float(c)) for c in cos]
    assert z1[b, 0, i].item() == pytest.approx(e[0] / (e[0] + e[1]), rel=1e-5)


def test_em_t2_is_one_refinement_of_t1():
    torch.manual_seed(1)
    feats, mu = torch.rand(2, 4, 9), torch.rand(2, 2, 4)
    z1, mu1, pi1 = em_reactivation(feats, mu, scale=5.0, iterations=1)
    # M-step by hand (Eq.9), then one E-step with the refined parameters.
    n_k = z1.sum(dim=2)
    mu_ref = torch.einsum("bkn,bdn->bkd", z1, feats) / n_k.unsqueeze(2)
    assert torch.allclose(mu1, mu_ref, atol=1e-6) and torch.allclose(pi1, n_k / 9)
    z2, _, _ = em_reactivation(feats, mu, scale=5.0, iterations=2)
    z_ref, _, _ = em_reactivation(feats, mu_ref, scale=5.0, iterations=1, pi_init=n_k / 9)
    assert torch.allclose(z2, z_ref, atol=1e-6)


def test_em_zero_scale_gives_mixing_weights():
    torch.manual_seed(2)
    feats, mu = torch.randn(2, 6, 10), torch.randn(2, 2, 6)
    pi = torch.tensor([0.3, 0.7])
    for t in (1, 3):
        z, _, pi_out = em_reactivation(feats, mu, scale=0.0, iterations=t, pi_init=pi)
        assert torch.allclose(z, pi.view(1, 2, 1).expand(2, 2, 10), atol=1e-6)
        assert torch.allclose(pi_out, pi.expand(2, 2), atol=1e-6)


def test_em_recovers_well_separated_clusters():
    gen = torch.Generator().manual_seed(3)
    bsz, dim, npix = 4, 16, 64
    # Orthogonal cluster directions (cos = 0): well separated for s = 8.
    centers = torch.linalg.qr(torch.randn(bsz, dim, 2, generator=gen))[0].transpose(1, 2) * 3.0
    labels = torch.rand(bsz, npix, generator=gen) < 0.3          # True = cluster 0
    feats = torch.where(labels.unsqueeze(1), centers[:, 0].unsqueeze(2), centers[:, 1].unsqueeze(2))
    feats = feats + 0.05 * torch.randn(bsz, dim, npix, generator=gen)
    # A rough start: each initial centroid is 30% the other cluster plus noise.
    mu0 = (0.7 * centers + 0.3 * centers.flip(1)
           + 0.3 * torch.randn(bsz, 2, dim, generator=gen))
    z1, _, pi1 = em_reactivation(feats, mu0, scale=8.0, iterations=1)
    z, mu, pi = em_reactivation(feats, mu0, scale=8.0, iterations=4)
    truth = labels.float().mean(dim=1)
    assert not torch.allclose(pi1[:, 0], truth, atol=0.02)     # one assignment is not enough
    assert torch.equal(z[:, 0] > 0.5, labels)
    assert torch.allclose(pi[:, 0], truth, atol=0.01)
    assert (nn.functional.cosine_similarity(mu, centers, dim=2) > 0.99).all()


def test_em_batched_equals_per_image_loop():
    torch.manual_seed(4)
    feats, mu = torch.randn(5, 8, 12), torch.randn(5, 2, 8)
    pis = torch.softmax(torch.randn(5, 2), dim=1)
    for norm in ("none", "l2"):
        z, m, p = em_reactivation(feats, mu, 8.0, 2, pis, feature_normalization=norm)
        for b in range(5):
            zb, mb, pb = em_reactivation(feats[b:b + 1], mu[b:b + 1], 8.0, 2, pis[b:b + 1],
                                         feature_normalization=norm)
            assert torch.allclose(z[b:b + 1], zb, atol=1e-6)
            assert torch.allclose(m[b:b + 1], mb, atol=1e-5)
            assert torch.allclose(p[b:b + 1], pb, atol=1e-6)


def test_em_is_numerically_safe_and_validates():
    feats = torch.zeros(1, 3, 4)
    feats[0, :, 0] = torch.tensor([1e30, 0, 0])              # huge and zero-norm pixels
    z, mu, pi = em_reactivation(feats, torch.randn(1, 2, 3), scale=1e4, iterations=3)
    assert torch.isfinite(z).all() and torch.isfinite(mu).all() and torch.isfinite(pi).all()
    with pytest.raises(ValueError, match="iterations"):
        em_reactivation(feats, torch.randn(1, 2, 3), iterations=0)
    with pytest.raises(ValueError, match="mu_init"):
        em_reactivation(feats, torch.randn(1, 3, 3))


# ----------------------------------------------------------------------------- Eq.10-12
def test_calibrate_by_hand_and_ties():
    z0 = torch.tensor([[0.9, 0.8, 0.1, 0.2], [0.9, 0.8, 0.1, 0.2], [0.5, 0.5, 0.3, 0.1]])
    z = torch.stack([z0, 1 - z0], dim=1)
    region = torch.tensor([[True, True, False, False],         # P_0 = .85 -> component 0
                           [False, False, True, True],         # P_0 = .15 -> component 1
                           [True, True, False, False]])        # tie (.5 / .5) -> component 0
    out = calibrate(z, region)
    assert torch.equal(out[0], z0[0]) and torch.equal(out[1], 1 - z0[1])
    assert torch.equal(out[2], z0[2])
    empty = calibrate(z, torch.zeros(3, 4, dtype=torch.bool))   # empty region -> component 0
    assert torch.equal(empty, z0)


def test_swapping_initial_embeddings_gives_same_calibrated_map():
    torch.manual_seed(5)
    feats = torch.randn(3, 8, 20)
    mu = torch.randn(3, 2, 8)
    region = torch.rand(3, 20) > 0.6
    z, _, _ = em_reactivation(feats, mu, 8.0, 2)
    zs, _, _ = em_reactivation(feats, mu.flip(1), 8.0, 2)
    assert torch.allclose(zs, z.flip(1), atol=1e-6)
    assert torch.allclose(calibrate(z, region), calibrate(zs, region), atol=1e-6)


def test_fuse_adds_normalized_cam():
    z_hat = torch.tensor([[0.5, 0.25, 1.0, 0.0]])
    cam = torch.tensor([[[2.0, 4.0], [6.0, 10.0]]])             # minmax -> 0, .25, .5, 1
    assert torch.allclose(fuse(z_hat, cam), torch.tensor([[[0.5, 0.5], [1.5, 1.0]]]))
    assert torch.allclose(fuse(z_hat, torch.full((1, 2, 2), 3.0)), z_hat.view(1, 2, 2))


# ----------------------------------------------------------------------------- the method
def test_buffers_saved_seeded_and_never_trained():
    torch.manual_seed(0)
    method = build_method("cream", SmallBackbone(3))
    assert isinstance(method, CREAM) and method.fg_embeddings.shape == (3, 6)
    state = method.state_dict()
    assert {"fg_embeddings", "bg_embeddings", "update_count"} <= set(state)
    again = CREAM(SmallBackbone(3), init_seed=0)
    assert torch.equal(again.fg_embeddings, method.fg_embeddings)
    assert not torch.equal(CREAM(SmallBackbone(3), init_seed=1).fg_embeddings, method.fg_embeddings)
    assert not torch.equal(method.fg_embeddings, method.bg_embeddings)
    images, labels = torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 0])
    outputs = method(images)
    method.loss(outputs, labels).backward()
    method.update_state(outputs, labels)
    assert all(not b.requires_grad and b.grad is None for b in method.buffers())
    assert all(p.grad is not None for p in method.parameters())
    assert not any(n.endswith("embeddings") for n, _ in method.named_parameters())


def test_update_state_matches_eq3_eq4_and_skips_empty_masks():
    method = CREAM(ColorBackbone(), gamma=0.5)
    images, masks = red_square_batch(3)
    images[2] = 0.5                                             # constant image: CAM constant
    fg0, bg0 = method.fg_embeddings.clone(), method.bg_embeddings.clone()
    labels = torch.tensor([0, 0, 0])
    method.update_state(method(images), labels)
    red, blue = torch.tensor([1.0, 0, 0, 0.1]), torch.tensor([0, 0, 1.0, 0.1])
    assert torch.allclose(method.fg_embeddings[0], 0.5 * fg0[0] + 0.5 * red, atol=1e-6)
    assert torch.allclose(method.bg_embeddings[0], 0.5 * bg0[0] + 0.5 * blue, atol=1e-6)
    assert torch.equal(method.fg_embeddings[1], fg0[1])
    assert method.update_count.tolist() == [[2, 0], [2, 0]]    # image 2 skipped for both
    each = CREAM(ColorBackbone(), gamma=0.5, skip_empty="each")
    each.update_state(each(images), labels)
    assert each.update_count.tolist() == [[2, 0], [3, 0]]


def test_stages_and_t0_give_cam():
    torch.manual_seed(0)
    backbone = SmallBackbone(3)
    images, classes = torch.rand(2, 3, 32, 32), torch.tensor([1, 2])
    with torch.no_grad():
        cam = CAM(backbone).localization_maps(CAM(backbone)(images), classes)
        for kw in ({"iterations": 0}, {"stage": "cam"}, {"iterations": 0, "stage": "calibrated"}):
            method = CREAM(backbone, **kw)
            assert torch.equal(method.localization_maps(method(images), classes), cam)
        method = CREAM(backbone, stage="fused")
        outputs = method(images)
        maps = method.maps_by_stage(outputs, classes)
        assert torch.equal(maps["cam"], cam)
        assert maps["calibrated"].shape == (2, 8, 8)
        assert ((maps["calibrated"] >= 0) & (maps["calibrated"] <= 1)).all()
        assert torch.allclose(maps["fused"], fuse(maps["calibrated"], cam))
        assert torch.equal(method.localization_maps(outputs, classes), maps["fused"])
    with pytest.raises(ValueError, match="stage"):
        CREAM(backbone, stage="final")


def test_cream_localizes_the_object_with_fitted_embeddings():
    method = CREAM.from_cam(CAM(ColorBackbone()), stage="calibrated")
    images, masks = red_square_batch(6)
    loader = [{"image": images[:4], "label": torch.zeros(4, dtype=torch.long)},
              {"image": images[4:], "label": torch.zeros(2, dtype=torch.long)}]
    fit_embeddings(method, loader, "cpu", mode="mean", progress=False)
    assert torch.allclose(method.fg_embeddings[0], torch.tensor([1.0, 0, 0, 0.1]), atol=1e-6)
    assert torch.allclose(method.bg_embeddings[0], torch.tensor([0, 0, 1.0, 0.1]), atol=1e-6)
    with torch.no_grad():
        z_hat = method.localization_maps(method(images), torch.zeros(6, dtype=torch.long))
    assert (z_hat[masks] > 0.99).all() and (z_hat[~masks] < 0.01).all()


def test_fit_embeddings_mean_is_order_free_and_momentum_is_the_training_rule():
    torch.manual_seed(0)
    backbone = SmallBackbone(3).eval()
    images, labels = torch.rand(12, 3, 16, 16), torch.tensor([0, 1, 2, 0] * 3)
    batches = [{"image": images[i:i + 4], "label": labels[i:i + 4]} for i in (0, 4, 8)]
    a = fit_embeddings(CREAM(backbone), batches, "cpu", mode="mean", progress=False)
    b = fit_embeddings(CREAM(backbone), batches[::-1], "cpu", mode="mean", progress=False)
    assert torch.allclose(a.fg_embeddings, b.fg_embeddings, atol=1e-6)
    with torch.no_grad():        # exact per-class average of Eq.4's f_fg over the split
        feats = backbone.forward_features(images)
        f_fg, _, valid, _ = masked_mean_features(
            feats, cam_guided_mask(backbone.class_activation_maps(feats, labels)))
    for c in range(3):
        sel = (labels == c) & valid
        assert torch.allclose(a.fg_embeddings[c], f_fg[sel].mean(dim=0), atol=1e-5)
    assert a.update_count[0].tolist() == [int(((labels == c) & valid).sum()) for c in range(3)]
    m = fit_embeddings(CREAM(backbone), batches, "cpu", mode="momentum", progress=False)
    ref = CREAM(backbone)
    with torch.no_grad():
        for batch in batches:
            ref.update_state(ref(batch["image"]), batch["label"])
    assert torch.equal(m.fg_embeddings, ref.fg_embeddings)
    with pytest.raises(ValueError, match="mode"):
        fit_embeddings(CREAM(backbone), batches, "cpu", mode="median")
    with pytest.raises(ValueError, match="batch 0"):
        fit_embeddings(CREAM(backbone), [(images, labels)], "cpu", progress=False)


def test_from_cam_shares_backbone_and_rejects_other_input():
    cam = CAM(SmallBackbone(3))
    cream = CREAM.from_cam(cam, gamma=0.9)
    assert cream.backbone is cam.backbone and cream.gamma == 0.9
    assert CREAM.from_cam(cam.backbone).backbone is cam.backbone
    with pytest.raises(ValueError, match="from_cam"):
        CREAM.from_cam(nn.Linear(2, 2))


def test_end_to_end_training_with_tiny_backbone():
    torch.manual_seed(0)
    method = build_method("cream", tiny_backbone(3))
    optimizer = torch.optim.SGD(method.param_groups(0.01), lr=0.01)
    images, labels = torch.rand(8, 3, 64, 64), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    fg0 = method.fg_embeddings.clone()
    method.train()
    for _ in range(2):
        outputs = method(images)
        loss = method.loss(outputs, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        method.update_state(outputs, labels)
    assert torch.isfinite(loss)
    assert not torch.equal(method.fg_embeddings, fg0) and (method.update_count > 0).any()
    method.eval()
    with torch.no_grad():
        outputs = method(images)
        maps = method.localization_maps(outputs, outputs["logits"].argmax(dim=1))
    h, w = outputs["features"].shape[2:]
    assert (h, w) == (4, 4) and maps.shape == (8, h, w) and torch.isfinite(maps).all()
    restored = build_method("cream", tiny_backbone(3))
    restored.load_state_dict(method.state_dict())
    restored.eval()
    with torch.no_grad():
        again = restored.localization_maps(restored(images), outputs["logits"].argmax(dim=1))
    assert torch.allclose(again, maps, atol=1e-6)


# ----------------------------------------------------------------------------- distributed
def _two_rank_worker(rank: int, init_file: str, result_file: str) -> None:
    import torch.distributed as dist

    from wsol.engine.distributed import all_reduce_sum

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        torch.set_num_threads(1)
        feats = torch.arange(24, dtype=torch.float32).view(6, 4)
        labels = torch.tensor([0, 1, 0, 2, 0, 1])
        mine = slice(0, 2) if rank == 0 else slice(2, 6)          # uneven split of one batch
        emb = torch.ones(3, 4)
        momentum_update(emb, feats[mine], labels[mine], torch.ones(6, dtype=torch.bool)[mine], 0.5,
                        reduce=all_reduce_sum)
        # Momentum fit with uneven shards: rank 0 has 1 batch, rank 1 has 2 (must not hang).
        images, _ = red_square_batch(6)
        method = CREAM(ColorBackbone(), gamma=0.5)
        zeros = torch.zeros(6, dtype=torch.long)
        batches = ([{"image": images[:2], "label": zeros[:2]}] if rank == 0 else
                   [{"image": images[2:4], "label": zeros[2:4]},
                    {"image": images[4:], "label": zeros[4:]}])
        method.reduce_fn = all_reduce_sum  # as the engine sets it
        fit_embeddings(method, batches, "cpu", mode="momentum", progress=False)
        torch.save({"emb": emb, "fg": method.fg_embeddings, "count": method.update_count},
                   f"{result_file}.{rank}")
    finally:
        dist.destroy_process_group()


def test_two_ranks_apply_identical_updates(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_two_rank_worker, args=(str(tmp_path / "init"), str(tmp_path / "out")), nprocs=2)
    r0, r1 = (torch.load(tmp_path / f"out.{r}") for r in (0, 1))
    feats = torch.arange(24, dtype=torch.float32).view(6, 4)
    expected = torch.ones(3, 4)                                  # the single-process result
    momentum_update(expected, feats, torch.tensor([0, 1, 0, 2, 0, 1]),
                    torch.ones(6, dtype=torch.bool), 0.5)
    assert torch.equal(r0["emb"], r1["emb"]) and torch.allclose(r0["emb"], expected)
    assert torch.equal(r0["fg"], r1["fg"]) and torch.equal(r0["count"], r1["count"])
    assert r0["count"][0, 0].item() == 6
    # Step 1 merges rank 0's batch with rank 1's first batch; step 2 is rank 1's second batch.
    images, _ = red_square_batch(6)
    zeros = torch.zeros(6, dtype=torch.long)
    single = fit_embeddings(CREAM(ColorBackbone(), gamma=0.5),
                            [{"image": images[:4], "label": zeros[:4]},
                             {"image": images[4:], "label": zeros[4:]}],
                            "cpu", mode="momentum", progress=False)
    assert torch.allclose(r0["fg"], single.fg_embeddings, atol=1e-6)

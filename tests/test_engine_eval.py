"""The engine's evaluation reports the polarity check (inside_gt_share) of its maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_overrides

from wsol.config import load_config
from wsol.engine.checkpoint import load_method
from wsol.engine.train import evaluate_split, train
from wsol.metrics.evaluator import gt_boxes_in_eval_geometry
from wsol.metrics.inside import inside_gt_share

pytestmark = pytest.mark.usefixtures("one_thread")


def test_inside_gt_share_matches_the_saved_maps(synthetic, tmp_path):
    run = tmp_path / "run"
    train(load_config(None, tiny_overrides(synthetic, run, "optim.epochs=1")), progress=False)
    method, info = load_method(run / "checkpoints" / "best.pt")
    maps_dir = tmp_path / "maps"
    res = evaluate_split(method, info["config"], "test", torch.device("cpu"), method.backbone,
                         scoremap_dir=maps_dir)
    from wsol.engine.data import build_split

    _, meta, _ = build_split(info["config"], "test", train=False, backbone=None)
    gt = gt_boxes_in_eval_geometry(meta, info["config"]["data"]["image_size"])
    ids = list(meta.image_ids)
    maps = torch.stack([torch.from_numpy(np.load(maps_dir / f"{i}.npy")) for i in ids])
    expected = inside_gt_share(maps, [gt[i] for i in ids])
    assert res["inside_gt_images"] == {"defined": expected.num_defined,
                                       "inside": expected.num_inside}
    assert res["inside_gt_share"] == pytest.approx(expected.share)
    # An inverted map flips the share.
    inverted = inside_gt_share(1 - maps, [gt[i] for i in ids])
    assert inverted.num_inside <= expected.num_defined - expected.num_inside

"""CREAM trains exactly like CAM (Eq.3-4 only maintain side buffers): same seed, same weights."""

from __future__ import annotations

import torch

from conftest import tiny_overrides
from wsol.config import load_config
from wsol.engine.checkpoint import load_checkpoint
from wsol.engine.train import train


def test_cream_training_gives_cams_weights_and_learns_embeddings(synthetic, tmp_path):
    runs = {}
    for name in ("cam", "cream"):
        cfg = load_config(None, tiny_overrides(synthetic, tmp_path / name, f"method.name={name}",
                                               "optim.epochs=1", "data.test_splits=[]"))
        train(cfg, progress=False)
        runs[name] = load_checkpoint(tmp_path / name / "checkpoints" / "last.pt")["state_dict"]
    cam, cream = runs["cam"], runs["cream"]
    backbone_keys = [k for k in cam if k.startswith("backbone.")]
    assert backbone_keys and all(torch.equal(cam[k], cream[k]) for k in backbone_keys)
    counts = cream["update_count"]
    assert int(counts.min()) > 0  # every class absorbed training samples in both embeddings
    init = torch.randn(2, *cream["fg_embeddings"].shape,
                       generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(cream["fg_embeddings"], init[0])

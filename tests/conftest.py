"""Shared test fixtures. Tests that need ``../shared`` skip with a reason when it is absent."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("WSOL_SHARED", REPO.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """Path under ../shared, or skip the test when it is not there."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the project's ../shared reference data), which is absent")
    return path


@contextlib.contextmanager
def torch_threads(count: int):
    """torch's intra-op thread count set to ``count`` inside the block, restored after it."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def one_thread():
    """Tiny tensors: one intra-op thread is fastest and immune to a busy shared CPU."""
    with torch_threads(1):
        yield


@pytest.fixture
def two_threads():
    """Two intra-op threads, whatever the machine has (streams and thread-count checks)."""
    with torch_threads(2):
        yield


@pytest.fixture
def shared():
    return shared_path


def run_cli(*args: str, check: bool = True, launcher: list[str] | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run ``python -m wsol ARGS`` (or ``launcher + ARGS``) in a real subprocess."""
    cmd = (launcher or [sys.executable, "-m", "wsol"]) + list(args)
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n"
                             f"{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory) -> Path:
    """A small synthetic WSOL dataset (3 classes, 64 px), made once per test session."""
    out = tmp_path_factory.mktemp("synthetic") / "data"
    run_cli("prepare", "synthetic", "--out", str(out), "--num-classes", "3",
            "--train-per-class", "16", "--val-per-class", "4", "--test-per-class", "6",
            "--image-size", "64", "--seed", "0")
    return out


def tiny_overrides(data: Path, run_dir: Path, *extra: str) -> list[str]:
    """``key=value`` overrides of a fast tiny-CNN run on the synthetic fixture."""
    return [f"run_dir={run_dir}", "model.name=tiny_cnn", "model.width=8",
            f"data.root={data / 'images'}", f"data.metadata={data / 'metadata'}",
            "data.resize_size=72", "data.crop_size=64", "data.image_size=64",
            "data.batch_size=16", "data.eval_batch_size=32", "data.num_workers=0",
            "optim.lr=0.01", "optim.epochs=2", "optim.lr_decay_every=1",
            "eval.cam_curve_interval=0.01", "device=cpu", *extra]

"""Trust nothing from outside, lose nothing: checkpoint payloads, --force, exact resume with
loader workers, best/last consistency, locks, resume from the run's own config, pre-flight
errors. Also the loop's own invariants (best-epoch selection, per-epoch seeds)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, run_cli, tiny_overrides

from wsol.cli import main as wsol_main
from wsol.config import load_config
from wsol.engine.checkpoint import load_checkpoint, load_method
from wsol.engine.loop import epoch_seed, sample_seed
from wsol.engine.rundir import LOCK, MARKER, RunDir
from wsol.engine.train import train
from wsol.errors import CheckpointError, ConfigError, MetadataError, RunDirError, WsolError

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_config(data: Path, run_dir: Path, *extra: str) -> dict:
    return load_config(None, tiny_overrides(data, run_dir, *extra))


@pytest.fixture(scope="module")
def trained(synthetic, tmp_path_factory) -> Path:
    """A finished 2-epoch CREAM run on the synthetic set."""
    run_dir = tmp_path_factory.mktemp("safety") / "run"
    train(tiny_config(synthetic, run_dir, "method.name=cream"), progress=False)
    return run_dir


# ----------------------------------------------------------------------------- payloads
class _Payload:
    """Unpickling this runs ``open(marker, "w")``: what a hostile checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _hostile_checkpoint(path: Path, marker: Path, like: Path) -> Path:
    """A copy of a real checkpoint with a code-running object hidden in it."""
    state = torch.load(like, weights_only=True)
    state["config"]["note"] = _Payload(marker)
    torch.save(state, path)
    return path


def test_no_command_runs_code_from_a_checkpoint(trained, synthetic, tmp_path):
    marker = tmp_path / "PWNED"
    bad = _hostile_checkpoint(tmp_path / "bad.pt", marker, trained / "checkpoints" / "best.pt")
    # The payload is real: an unrestricted load does run it.
    torch.load(bad, weights_only=False)
    assert marker.exists()
    marker.unlink()
    images = synthetic / "images"
    one_image = next(p for p in images.rglob("*") if p.is_file())
    commands = [
        ["evaluate", "--checkpoint", str(bad), "--split", "test", "--output",
         str(tmp_path / "r.json")],
        ["localize", "--checkpoint", str(bad), str(one_image), "--out", str(tmp_path / "loc")],
        ["cream", "fit", "--checkpoint", str(bad), "--out", str(tmp_path / "c.pt")],
        ["regressor", "pseudo-boxes", "--checkpoint", str(bad), "--out", str(tmp_path / "pb"),
         "--threshold", "0.3"],
        ["regressor", "evaluate", "--regressor", str(bad), "--classifier", str(bad),
         "--split", "test"],
    ]
    for args in commands:
        code = wsol_main(args)
        assert code == 2, args
        assert not marker.exists(), f"wsol {' '.join(args[:2])} ran the payload"
    # train --resume and report read checkpoints of a run directory.
    run = tmp_path / "hostile-run"
    (run / "checkpoints").mkdir(parents=True)
    for name in ("config.yaml", MARKER):
        (run / name).write_bytes((trained / name).read_bytes())
    _hostile_checkpoint(run / "checkpoints" / "last.pt", marker,
                        trained / "checkpoints" / "last.pt")
    assert wsol_main(["train", "--resume", "--run-dir", str(run), "--no-progress"]) == 2
    assert not marker.exists()
    wsol_main(["report", str(run), "--out", str(tmp_path / "report.html")])
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="weights_only"):
        load_method(bad)


# ----------------------------------------------------------------------------- --force
def test_force_removes_only_wsol_files_and_refuses_foreign_dirs(trained, synthetic, tmp_path):
    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "chapter1.tex").write_text("precious")
    cfg = tiny_config(synthetic, foreign, "optim.epochs=1")
    with pytest.raises(RunDirError, match="not a wsol run"):
        train(cfg, progress=False, force=True)
    assert (foreign / "chapter1.tex").read_text() == "precious"
    # A wsol run with a user's file in it: refused, nothing deleted.
    run = tmp_path / "run"
    train(tiny_config(synthetic, run, "optim.epochs=1"), progress=False)
    (run / "notes.txt").write_text("mine")
    proc = run_cli("train", "--force", *tiny_overrides(synthetic, run, "optim.epochs=1"),
                   check=False)
    assert proc.returncode == 2 and "notes.txt" in proc.stderr
    assert (run / "notes.txt").read_text() == "mine"
    assert (run / "checkpoints" / "best.pt").is_file()
    # Without the foreign file --force replaces the run.
    (run / "notes.txt").unlink()
    before = load_checkpoint(run / "checkpoints" / "last.pt")["epoch"]
    train(tiny_config(synthetic, run, "optim.epochs=2"), progress=False, force=True)
    assert before == 1 and load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 2


# ----------------------------------------------------------------------------- exact resume
def test_resume_is_bit_exact_with_loader_workers(synthetic, tmp_path):
    extra = ("data.num_workers=2", "data.persistent_workers=true", "optim.epochs=3",
             "method.name=cream")
    full = tmp_path / "full"
    train(tiny_config(synthetic, full, *extra), progress=False)
    parts = tmp_path / "parts"
    train(tiny_config(synthetic, parts, *extra), progress=False, stop_after_epochs=2)
    # --resume alone continues the run from its own config.yaml (no overrides repeated); in
    # this process, so that the intra-op thread count (and float summation order) is the same.
    assert wsol_main(["train", "--resume", "--run-dir", str(parts), "--no-progress"]) == 0
    a = load_checkpoint(full / "checkpoints" / "last.pt")
    b = load_checkpoint(parts / "checkpoints" / "last.pt")
    assert a["epoch"] == b["epoch"] == 3
    differing = [k for k in a["state_dict"] if not torch.equal(a["state_dict"][k],
                                                               b["state_dict"][k])]
    assert differing == []
    # Same augmentation with and without workers: the data do not depend on num_workers.
    zero = tmp_path / "zero"
    train(tiny_config(synthetic, zero, "data.num_workers=0", "optim.epochs=3",
                      "method.name=cream"), progress=False)
    c = load_checkpoint(zero / "checkpoints" / "last.pt")
    assert all(torch.equal(a["state_dict"][k], c["state_dict"][k]) for k in a["state_dict"])


def test_resume_refuses_changed_config_and_finished_runs_say_so(trained, synthetic, tmp_path):
    proc = run_cli("train", "--resume", "--run-dir", str(trained), "optim.lr=0.5", check=False)
    assert proc.returncode == 2 and "optim.lr" in proc.stderr and "--allow-change" in proc.stderr
    proc = run_cli("train", "--resume", "--run-dir", str(trained), "model.width=16",
                   "--allow-change", check=False)
    assert proc.returncode == 2 and "model.width" in proc.stderr
    before = (trained / "results.json").read_text()
    proc = run_cli("train", "--resume", "--run-dir", str(trained), "--no-progress")
    assert proc.returncode == 0 and "already finished" in proc.stdout
    assert (trained / "results.json").read_text() == before


def test_deleted_metrics_csv_and_leftover_tmp_files(synthetic, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(synthetic, run), progress=False, stop_after_epochs=1)
    (run / "metrics.csv").unlink()
    leftover = run / "checkpoints" / ".last.pt.abc123.tmp"
    leftover.write_bytes(b"half a checkpoint")
    result = train(tiny_config(synthetic, run), progress=False, resume=True)
    assert result["finished"]
    assert not leftover.exists()
    rows = list(csv.DictReader((run / "metrics.csv").read_text().splitlines()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]


def test_a_kill_between_best_and_last_cannot_evaluate_the_wrong_model(synthetic, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(synthetic, run, "optim.epochs=3", "train.select_metric=top1_cls"),
          progress=False, stop_after_epochs=2)
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    # A best.pt that does not hold the epoch last.pt names (a stale file) is caught.
    stale = dict(last, epoch=int(last["best_epoch"]) - 1 if last["best_epoch"] > 1 else 99)
    stale.pop("optimizer"), stale.pop("scheduler"), stale.pop("rng"), stale.pop("history")
    if last["best_epoch"] == last["epoch"]:
        # best is the last epoch: resume repairs best.pt from last.pt
        torch.save(dict(stale, epoch=0), run / "checkpoints" / "best.pt")
        train(tiny_config(synthetic, run, "optim.epochs=3", "train.select_metric=top1_cls"),
              progress=False, resume=True)
        final = json.loads((run / "results.json").read_text())
        best = load_checkpoint(run / "checkpoints" / "best.pt")
        assert final["epoch"] == best["epoch"] == best["best_epoch"]
    else:
        torch.save(dict(stale, epoch=0), run / "checkpoints" / "best.pt")
        with pytest.raises(CheckpointError, match="best"):
            train(tiny_config(synthetic, run, "optim.epochs=3", "train.select_metric=top1_cls"),
                  progress=False, resume=True)


# ----------------------------------------------------------------------------- locks
def test_one_writer_per_run_directory(synthetic, tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run.mkdir()
        (run / MARKER).write_text(json.dumps({"format": "wsol-run"}))
        import socket

        (run / LOCK).write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(),
                                            "started": "now", "command": "wsol train X"}))
        (run / "checkpoints").mkdir()
        with pytest.raises(RunDirError, match=f"in use by process {holder.pid}"):
            RunDir(run).open(resume=True, force=False)
        proc = run_cli("train", "--force", *tiny_overrides(synthetic, run), check=False)
        assert proc.returncode == 2 and str(holder.pid) in proc.stderr
    finally:
        holder.kill()
        holder.wait()
    # The holder is gone: its lock is stale and taken over.
    train(tiny_config(synthetic, run, "optim.epochs=1"), progress=False, force=True)
    assert not (run / LOCK).exists()
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 1


def test_two_concurrent_trainers(synthetic, tmp_path):
    run = tmp_path / "run"
    args = ["train", *tiny_overrides(synthetic, run, "optim.epochs=40"), "--no-progress"]
    first = subprocess.Popen([sys.executable, "-m", "wsol", *args], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(600):
            if (run / LOCK).exists():
                break
            if first.poll() is not None:
                pytest.fail(f"the first trainer ended early: {first.stderr.read()}")
            import time

            time.sleep(0.1)
        second = run_cli("train", "--resume", "--run-dir", str(run), check=False)
        assert second.returncode == 2
        assert f"in use by process {first.pid}" in second.stderr
    finally:
        first.kill()
        first.wait()


# ----------------------------------------------------------------------------- pre-flight
@pytest.mark.parametrize("override, match", [
    ("train.eval_every=0", "train.eval_every"),
    ("optim.epochs=0", "optim.epochs"),
    ("train.select_metric=MaxBoxAccv2", "select_metric"),
    ("data.test_splits=[test,nosuch]", "nosuch"),
    ("device=cuda", "CUDA"),
    ("model.num_classes=3", "class count comes from the metadata"),
])
def test_errors_before_the_first_step(synthetic, tmp_path, override, match):
    run = tmp_path / "run"
    proc = run_cli("train", *tiny_overrides(synthetic, run, override), check=False)
    assert proc.returncode == 2, proc.stderr
    assert match in proc.stderr and "Traceback" not in proc.stderr
    assert not (run / "checkpoints").exists()  # failed before any work


def test_labels_and_classes_checked_before_training(synthetic, tmp_path):
    meta = tmp_path / "meta"
    for split in ("train", "val", "test"):
        (meta / split).mkdir(parents=True)
        for name in ("image_ids.txt", "class_labels.txt", "image_sizes.txt", "localization.txt"):
            (meta / split / name).write_text((synthetic / "metadata" / split / name).read_text())
    labels = (meta / "test" / "class_labels.txt").read_text().splitlines()
    image_id = labels[0].split(",")[0]
    labels[0] = f"{image_id},7"
    (meta / "test" / "class_labels.txt").write_text("\n".join(labels) + "\n")
    cfg = tiny_config(synthetic, tmp_path / "run", f"data.metadata={meta}")
    with pytest.raises(MetadataError, match="class_labels.txt:1"):
        train(cfg, progress=False)
    assert not (tmp_path / "run").exists()


def test_checkpoint_for_another_class_count_is_a_clear_error(trained, tmp_path):
    state = torch.load(trained / "checkpoints" / "best.pt", weights_only=True)
    state["num_classes"] = 5
    torch.save(state, tmp_path / "five.pt")
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_method(tmp_path / "five.pt")


def test_yaml_1_1_floats_are_numbers(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("optim:\n  lr: 1e-3\n")
    assert load_config(cfg)["optim"]["lr"] == pytest.approx(0.001)
    assert load_config(None, ["optim.lr=5E-4"])["optim"]["lr"] == pytest.approx(0.0005)
    with pytest.raises(ConfigError, match="optim.lr"):
        load_config(None, ["optim.lr=fast"])


def test_scoremap_ids_cannot_escape_the_output_dir(tmp_path):
    from wsol.engine.evaluate import save_scoremaps

    out = tmp_path / "maps"
    with pytest.raises(WsolError):
        save_scoremaps(torch.zeros(1, 4, 4), ["../../escaped"], out)
    assert not (tmp_path / "escaped.npy").exists() and not out.exists()


def test_cli_prints_input_errors_but_keeps_tracebacks_of_bugs(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("optim: [1, 2\n")
    proc = run_cli("train", "--config", str(bad), "--run-dir", str(tmp_path / "r"), check=False)
    assert proc.returncode == 2 and "not valid YAML" in proc.stderr
    assert "Traceback" not in proc.stderr


# ----------------------------------------------------------------------------- the loop
def test_best_checkpoint_is_the_best_validation_epoch(synthetic, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(synthetic, run, "optim.epochs=4", "optim.lr=0.05",
                      "train.select_metric=top1_cls"), progress=False)
    rows = list(csv.DictReader((run / "metrics.csv").read_text().splitlines()))
    values = [float(r["val_top1_cls"]) for r in rows]
    best_epoch = values.index(max(values)) + 1  # first epoch with the maximum
    assert load_checkpoint(run / "checkpoints" / "best.pt")["epoch"] == best_epoch
    assert json.loads((run / "results.json").read_text())["epoch"] == best_epoch
    assert len(set(values)) > 1, "the test needs epochs that differ on val"


def test_epoch_and_sample_seeds_vary():
    assert len({epoch_seed(0, e, 0) for e in range(10)}) == 10
    assert len({epoch_seed(0, 0, r) for r in range(4)}) == 4
    assert len({sample_seed(0, e, i) for e in range(5) for i in range(50)}) == 250
    assert sample_seed(1, 0, 0) != sample_seed(0, 0, 0)


def test_augmentation_differs_between_epochs(synthetic):
    from wsol.engine.data import build_split

    cfg = tiny_config(synthetic, Path("unused"))
    dataset, _, _ = build_split(cfg, "train", train=True, backbone=None)
    a = dataset[(0, sample_seed(0, 0, 0))]["image"]
    b = dataset[(0, sample_seed(0, 1, 0))]["image"]
    again = dataset[(0, sample_seed(0, 0, 0))]["image"]
    assert torch.equal(a, again) and not torch.equal(a, b)


def test_a_run_that_fails_before_its_first_epoch_leaves_no_directory(synthetic, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(WsolError):
        # fails when the model is built (after the pre-flight checks), before any step
        train(tiny_config(synthetic, run, "model.nosuch_option=1"), progress=False)
    assert not run.exists()


def test_class_names_from_the_metadata_are_stored_in_the_checkpoint(synthetic, tmp_path):
    names = synthetic / "class_names.txt"  # `wsol prepare synthetic` writes it
    if not names.is_file():
        pytest.skip("the synthetic fixture has no class_names.txt")
    run = tmp_path / "run"
    train(tiny_config(synthetic, run, "optim.epochs=1"), progress=False)
    state = load_checkpoint(run / "checkpoints" / "best.pt")
    assert state["class_names"] == names.read_text().splitlines()


def test_an_unwritable_output_fails_before_the_evaluation(trained, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = run_cli("evaluate", "--checkpoint", str(trained / "checkpoints" / "best.pt"),
                   "--split", "test", "--output", str(blocker / "results.json"), check=False)
    assert proc.returncode == 2 and "cannot write there" in proc.stderr
    assert "nothing was evaluated" in proc.stderr and "Traceback" not in proc.stderr


def test_demo_force_removes_only_its_own_output(tmp_path):
    from wsol.commands.demo import DEMO_MARKER, clear_demo_dir

    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "chapter1.tex").write_text("precious")
    with pytest.raises(RunDirError, match="not a wsol demo output"):
        clear_demo_dir(foreign, force=True)
    assert (foreign / "chapter1.tex").read_text() == "precious"
    demo = tmp_path / "demo"
    (demo / "run").mkdir(parents=True)
    (demo / DEMO_MARKER).write_text("{}")
    (demo / "summary.json").write_text("{}")
    (demo / "mine.txt").write_text("keep")
    with pytest.raises(RunDirError, match="mine.txt"):
        clear_demo_dir(demo, force=True)
    assert (demo / "summary.json").exists() and (demo / "mine.txt").exists()
    (demo / "mine.txt").unlink()
    clear_demo_dir(demo, force=True)
    assert not any(demo.iterdir())
    with pytest.raises(FileExistsError):
        (demo / "x").write_text("x")
        clear_demo_dir(demo, force=False)

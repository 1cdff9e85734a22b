"""The one training loop: :func:`fit` trains any :class:`Task`; behaviour around it lives in hooks.

A task supplies what differs between the things wsol trains (the WSOL classifier of
:mod:`wsol.engine.train`, the box regressor of :mod:`wsol.engine.regressor`): its model, its
training set, one training step, the no-grad state update after the optimizer step, and
validation / final evaluation. Everything else is written once, here:

- seeding: ``seed + rank`` at start, every epoch reseeded from ``(seed, epoch, rank)``, and
  every training *sample* augmented from its own seed ``(seed, epoch, index)``
  (:class:`SeededSampler`), so an epoch's data do not depend on ``num_workers``,
  ``persistent_workers`` or where a run was interrupted: ``--resume`` is bit-exact;
- SGD with parameter groups and step decay (:func:`build_optimizer`);
- mixed precision (``train.amp``: bf16 autocast on CPU and CUDA, fp16 + GradScaler on CUDA;
  ``auto`` picks bf16 where the hardware has it) and ``train.channels_last``, resolved into
  the config before it is saved (:func:`resolve_train_precision`);
- DistributedDataParallel under torchrun (rank 0 writes; buffers broadcast every epoch);
- no host synchronisation per step: the loss is summed on the device and checked for NaN/inf
  every ``train.check_every`` steps and at the end of every epoch (before anything is saved);
- the run directory (:class:`~wsol.engine.rundir.RunDir`: marker, lock, ``--force`` rules);
- hooks after every epoch, in order: validation + best-epoch selection (:class:`EvalHook`),
  checkpoints (:class:`CheckpointHook`: ``best.pt`` *before* ``last.pt``, so ``last.pt`` never
  names a best epoch whose ``best.pt`` is not written yet), ``metrics.csv``
  (:class:`MetricsCSVHook`, rebuilt from the history stored in ``last.pt``), the console line
  with images/s and ETA (:class:`ConsoleHook`).

Selection: the validation metric ``task.select_metric`` is maximized; the first epoch with the
largest finite value wins (strictly greater replaces).
"""

from __future__ import annotations

import csv
import io
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from wsol.engine import distributed as dist_utils
from wsol.engine.checkpoint import (
    load_checkpoint,
    read_checkpoint_file,
    restore_rng_state,
    save_checkpoint,
    unwrap,
)
from wsol.engine.rundir import RunDir
from wsol.errors import CheckpointError, ConfigError, RunDirError
from wsol.utils.precision import (autocast_context, check_amp, check_channels_last,
                                   resolve_amp, resolve_channels_last)
from wsol.utils.io import atomic_write_text

__all__ = [
    "CheckpointHook",
    "ConsoleHook",
    "EpochState",
    "EvalHook",
    "Hook",
    "MetricsCSVHook",
    "SeededSampler",
    "StepOutput",
    "Task",
    "build_optimizer",
    "epoch_seed",
    "fit",
    "sample_seed",
    "seed_everything",
]


# --------------------------------------------------------------------------------------------
# Seeding
# --------------------------------------------------------------------------------------------

def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (all devices); optionally force deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of epoch ``epoch`` on rank ``rank`` (model-side randomness: dropout, HaS, ...)."""
    return (seed * 1_000_003 + epoch * 10_007 + rank) % 2**31


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of training sample ``index`` in ``epoch`` (rank-independent)."""
    return (seed * 2_654_435_761 + epoch * 40_503 + index * 97 + 12_345) % 2**31


class SeededSampler(Sampler):
    """A :class:`DistributedSampler` (shuffled, ``set_epoch`` per epoch) that yields
    ``(index, sample_seed)`` pairs; datasets that accept such a key (``WSOLDataset``) draw the
    sample's augmentation from that seed, in whichever worker process loads it."""

    def __init__(self, dataset: Dataset, *, seed: int, world_size: int, rank: int) -> None:
        self.inner = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True,
                                        seed=seed, drop_last=False)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.inner.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in self.inner:
            yield index, sample_seed(self.seed, self.epoch, int(index))

    def __len__(self) -> int:
        return len(self.inner)


def build_optimizer(model: nn.Module, optim_cfg: dict):
    """SGD over ``model.param_groups`` (new layers at ``lr x new_layer_lr_mult``) and the step
    decay schedule (``lr x lr_decay_factor`` every ``lr_decay_every`` epochs)."""
    optimizer = torch.optim.SGD(
        model.param_groups(optim_cfg["lr"], optim_cfg["new_layer_lr_mult"],
                           optim_cfg["weight_decay"]),
        lr=optim_cfg["lr"], momentum=optim_cfg["momentum"],
        nesterov=bool(optim_cfg["nesterov"]) and optim_cfg["momentum"] > 0,
        weight_decay=optim_cfg["weight_decay"])
    scheduler = torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=max(1, int(optim_cfg["lr_decay_every"])),
        gamma=optim_cfg["lr_decay_factor"])
    return optimizer, scheduler


# --------------------------------------------------------------------------------------------
# Task contract
# --------------------------------------------------------------------------------------------

@dataclass
class StepOutput:
    """One training step: the differentiable ``loss`` (mean over the batch), the model
    ``outputs`` (for the state update), the batch size ``n`` and per-epoch ``stats`` (sums over
    the batch, on the device; names in ``Task.stat_names``)."""

    loss: Tensor
    outputs: Any
    n: int
    stats: Tensor | None = None


class Task:
    """What :func:`fit` trains. Subclasses set :attr:`model` and :attr:`train_set` and
    implement :meth:`train_step`; the rest has defaults."""

    #: Checkpoint ``kind``.
    kind: str = "classifier"
    #: Names of the per-epoch sums in ``StepOutput.stats``; the epoch row reports their mean
    #: per sample as ``train_<name>`` (percentages where the task multiplies by 100).
    stat_names: tuple[str, ...] = ()
    #: Validation key that picks ``best.pt`` (maximized); None keeps the last epoch.
    select_metric: str | None = None
    model: nn.Module
    train_set: Dataset
    #: Extra plain-data entries stored in every checkpoint (class names, ...).
    checkpoint_extra: dict[str, Any] = {}

    def train_step(self, model: nn.Module, batch: dict, device: torch.device) -> StepOutput:
        raise NotImplementedError

    def after_step(self, step: StepOutput, batch: dict, device: torch.device) -> None:
        """No-grad state update after the optimizer step (default: nothing)."""

    def validate(self, device: torch.device) -> dict | None:
        """Validation metrics after an epoch (all ranks take part), or None (no val split)."""
        return None

    def final_evaluation(self, run_dir: Path, device: torch.device, progress: bool) -> dict:
        """Evaluation of the selected model (already loaded) once training is finished."""
        return {}


# --------------------------------------------------------------------------------------------
# Hooks
# --------------------------------------------------------------------------------------------

@dataclass
class EpochState:
    """What hooks see after an epoch."""

    epoch: int  # completed epochs (1-based number of the epoch just done)
    epochs: int
    row: dict[str, Any]
    history: list[dict[str, Any]]
    best_metric: float | None
    best_epoch: int | None
    improved: bool = False
    images_per_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class Hook:
    """Called after every epoch, on every rank (hooks that write check ``main``)."""

    def after_epoch(self, state: EpochState) -> None:  # pragma: no cover - interface
        pass


class EvalHook(Hook):
    """Validate every ``eval_every`` epochs (and after the last) and track the best epoch."""

    def __init__(self, task: Task, device: torch.device, eval_every: int) -> None:
        self.task, self.device, self.eval_every = task, device, int(eval_every)

    def after_epoch(self, state: EpochState) -> None:
        due = state.epoch % self.eval_every == 0 or state.epoch == state.epochs
        select = self.task.select_metric
        if select is None:
            state.best_metric, state.best_epoch, state.improved = None, state.epoch, True
            if due:
                results = self.task.validate(self.device)
                if results:
                    state.row.update(_scalar_metrics(results, "val_"))
            return
        if not due:
            return
        results = self.task.validate(self.device)
        if results is None:
            state.best_metric, state.best_epoch, state.improved = None, state.epoch, True
            return
        state.row.update(_scalar_metrics(results, "val_"))
        if select not in results:
            raise ConfigError(f"train.select_metric {select!r} is not a validation result; "
                              f"choose one of {sorted(_scalar_metrics(results, ''))}")
        value = float(results[select])
        if math.isfinite(value) and (state.best_metric is None or value > state.best_metric):
            state.best_metric, state.best_epoch, state.improved = value, state.epoch, True


class CheckpointHook(Hook):
    """``best.pt`` on improvement, then ``last.pt`` (with optimizer, schedule, RNG and the
    metric history), both atomic, rank 0 only."""

    def __init__(self, run_dir: Path, task: Task, optimizer, scheduler, config: dict) -> None:
        self.ckpt_dir = run_dir / "checkpoints"
        self.task, self.optimizer, self.scheduler, self.config = task, optimizer, scheduler, config

    def after_epoch(self, state: EpochState) -> None:
        if not dist_utils.is_main_process():
            return
        common = dict(config=self.config, kind=self.task.kind, epoch=state.epoch,
                      best_metric=state.best_metric, best_epoch=state.best_epoch,
                      **self.task.checkpoint_extra)
        if state.improved:
            save_checkpoint(self.ckpt_dir / "best.pt", self.task.model, **common)
        save_checkpoint(self.ckpt_dir / "last.pt", self.task.model, optimizer=self.optimizer,
                        scheduler=self.scheduler, include_rng=True,
                        extra={"history": state.history}, **common)


class MetricsCSVHook(Hook):
    """``metrics.csv``: one row per epoch (a view of the history kept in ``last.pt``)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "metrics.csv"

    def after_epoch(self, state: EpochState) -> None:
        if dist_utils.is_main_process():
            write_csv(self.path, state.history)


class ConsoleHook(Hook):
    """The epoch line: metrics, images/s and the estimated time left."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.times: list[float] = []

    def after_epoch(self, state: EpochState) -> None:
        if not (self.enabled and dist_utils.is_main_process()):
            return
        self.times.append(float(state.row.get("epoch_time_s", 0.0)))
        left = (state.epochs - state.epoch) * (sum(self.times) / len(self.times))
        items = " ".join(f"{k}={v}" for k, v in state.row.items())
        print(f"{items} img_per_s={state.images_per_s:.1f} eta={_fmt_time(left)}", flush=True)


def _fmt_time(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _scalar_metrics(results: dict, prefix: str) -> dict:
    return {f"{prefix}{k}": round(float(v), 6) for k, v in results.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def write_csv(path: Path, rows: list[dict]) -> None:
    """Rows (dicts) as a CSV with the union of their keys, written atomically."""
    fields: list[str] = []
    for row in rows:
        fields.extend(k for k in row if k not in fields)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


# --------------------------------------------------------------------------------------------
# Resume
# --------------------------------------------------------------------------------------------

def check_best_consistent(ckpt_dir: Path, last: dict) -> None:
    """``best.pt`` must hold the epoch ``last.pt`` names as best. A ``best.pt`` newer than
    ``last.pt`` (a kill between the two writes) belongs to the epoch about to be re-run and is
    fine; a missing or older one is repaired from ``last.pt`` when the best epoch *is* the last
    epoch, else it is an error (the best weights are lost)."""
    best_epoch, epoch = last.get("best_epoch"), int(last["epoch"])
    if best_epoch is None:
        return
    path = ckpt_dir / "best.pt"
    best = read_checkpoint_file(path, "cpu") if path.is_file() else None
    best_at = int(best["epoch"]) if isinstance(best, dict) and "epoch" in best else None
    if best_at == best_epoch or (best_at is not None and best_at > epoch):
        return
    if best_epoch == epoch:
        keep = {k: v for k, v in last.items()
                if k not in ("optimizer", "scheduler", "rng", "history")}
        from wsol.utils.io import atomic_torch_save

        atomic_torch_save(path, keep)
        print(f"wsol: repaired {path} from last.pt (epoch {epoch})", flush=True)
        return
    raise CheckpointError(f"{path} holds epoch {best_at} but last.pt names epoch {best_epoch} as "
                          "the best; the best weights are lost (not written by wsol?)")


# --------------------------------------------------------------------------------------------
# fit
# --------------------------------------------------------------------------------------------

def check_loop_config(config: dict) -> None:
    """The loop's own config values (epochs, eval_every, lr, check_every, amp), checked before
    any work."""
    optim, train = config["optim"], config["train"]
    if int(optim["epochs"]) < 1:
        raise ConfigError(f"optim.epochs must be >= 1, got {optim['epochs']}")
    if int(train.get("eval_every", 1)) < 1:
        raise ConfigError(f"train.eval_every must be >= 1, got {train.get('eval_every')}")
    if not float(optim["lr"]) > 0:
        raise ConfigError(f"optim.lr must be > 0, got {optim['lr']}")
    if int(train.get("check_every", 50)) < 1:
        raise ConfigError(f"train.check_every must be >= 1, got {train.get('check_every')}")
    try:
        check_amp(train.get("amp", False), "train.amp")
        check_channels_last(train.get("channels_last", False), "train.channels_last")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def train_precision(config: dict, device: torch.device) -> tuple[Any, bool]:
    """``(amp, channels_last)`` that ``train.amp`` / ``train.channels_last`` mean on ``device``
    (:mod:`wsol.utils.precision`); a ConfigError naming the key if one cannot run there."""
    train = config["train"]
    try:
        amp = resolve_amp(train.get("amp", False), device)
    except ValueError as exc:
        raise ConfigError(f"train.amp: {exc}") from None
    try:
        channels_last = resolve_channels_last(train.get("channels_last", False), device)
    except ValueError as exc:
        raise ConfigError(f"train.channels_last: {exc}") from None
    return amp, channels_last


def resolve_train_precision(config: dict, device: torch.device) -> None:
    """Replace ``train.amp`` / ``train.channels_last`` (``auto`` by default) in ``config`` by
    :func:`train_precision`, so that the saved config and a resumed run use the precision the
    run started with. ``eval.*`` keeps ``auto``: a checkpoint evaluated on other hardware takes
    that hardware's fastest setting (results record it)."""
    config["train"]["amp"], config["train"]["channels_last"] = train_precision(config, device)


def fit(task: Task, config: dict, *, run: RunDir, device: torch.device, resume: bool = False,
        progress: bool = True, stop_after_epochs: int | None = None,
        hooks: list[Hook] | None = None) -> dict:
    """Train ``task`` for ``config["optim"]["epochs"]`` epochs in the (opened) run directory.

    Returns ``{"epochs_completed", "finished", "best_epoch", "best_metric"}`` plus, once
    finished, the task's final evaluation of the selected checkpoint under ``"final"``.
    ``stop_after_epochs`` stops after that many epochs of this call (as if interrupted at an
    epoch boundary); ``resume`` continues from ``checkpoints/last.pt``.
    """
    from tqdm import tqdm

    check_loop_config(config)
    rank, world = dist_utils.get_rank(), dist_utils.get_world_size()
    main = rank == 0
    run_dir, ckpt_dir = run.path, run.path / "checkpoints"
    seed = int(config["seed"])
    deterministic = bool(config.get("deterministic", False))
    optim_cfg, train_cfg, data_cfg = config["optim"], config["train"], config["data"]
    method = task.model
    optimizer, scheduler = build_optimizer(method, optim_cfg)

    start_epoch, best_metric, best_epoch = 0, None, None
    history: list[dict] = []
    if resume:
        state = load_checkpoint(ckpt_dir / "last.pt", map_location="cpu", kind=task.kind)
        method.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if "rng" in state:
            restore_rng_state(state["rng"])
        start_epoch = int(state["epoch"])
        best_metric, best_epoch = state.get("best_metric"), state.get("best_epoch")
        history = list(state.get("history") or [])[:start_epoch]
        if main:
            check_best_consistent(ckpt_dir, state)

    resolve_train_precision(config, device)
    channels_last = bool(train_cfg["channels_last"])
    if channels_last:
        method.to(memory_format=torch.channels_last)
    model: nn.Module = method
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(
            method, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=False)
    sampler = SeededSampler(task.train_set, seed=seed, world_size=world, rank=rank)
    workers = int(data_cfg["num_workers"])
    pin = data_cfg.get("pin_memory", "auto")
    loader = DataLoader(
        task.train_set, batch_size=int(data_cfg["batch_size"]), sampler=sampler,
        num_workers=workers, pin_memory=(device.type == "cuda") if pin == "auto" else bool(pin),
        persistent_workers=bool(data_cfg.get("persistent_workers", True)) and workers > 0,
        drop_last=False)
    amp = train_cfg["amp"]
    use_scaler = amp == "fp16" and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    epochs = int(optim_cfg["epochs"])
    max_steps = train_cfg.get("max_steps_per_epoch")
    check_every = int(train_cfg.get("check_every", 50))
    all_hooks = [EvalHook(task, device, train_cfg.get("eval_every", 1)),
                 CheckpointHook(run_dir, task, optimizer, scheduler, config),
                 MetricsCSVHook(run_dir), ConsoleHook(progress), *(hooks or [])]

    epochs_run = 0
    for epoch in range(start_epoch, epochs):
        if stop_after_epochs is not None and epochs_run >= stop_after_epochs:
            break
        seed_everything(epoch_seed(seed, epoch, rank), deterministic)
        sampler.set_epoch(epoch)
        model.train()
        t0 = time.time()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        seen = torch.zeros((), dtype=torch.float64, device=device)
        stats_sum: Tensor | None = None
        lr = optimizer.param_groups[0]["lr"]
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", leave=False, unit="batch",
                   disable=not (progress and main))
        for step, batch in enumerate(bar):
            if max_steps is not None and step >= max_steps:
                break
            optimizer.zero_grad(set_to_none=True)
            with autocast_context(device, amp):
                out = task.train_step(model, batch, device)
            scaler.scale(out.loss).backward()
            scaler.step(optimizer)
            scaler.update()
            task.after_step(out, batch, device)
            loss_sum += out.loss.detach().double() * out.n
            seen += out.n
            if out.stats is not None:
                s = out.stats.detach().double()
                stats_sum = s if stats_sum is None else stats_sum + s
            if (step + 1) % check_every == 0:
                _check_finite(loss_sum, epoch, step)
                if progress and main:
                    bar.set_postfix(loss=f"{float(loss_sum / seen):.3f}")
        _check_finite(loss_sum, epoch, None)
        scheduler.step()
        dist_utils.broadcast_buffers(method)  # one model on every rank for eval and checkpoint
        totals = torch.cat([loss_sum.view(1), seen.view(1),
                            stats_sum if stats_sum is not None
                            else torch.zeros(len(task.stat_names), dtype=torch.float64,
                                             device=device)])
        dist_utils.all_reduce_sum(totals)
        n = float(totals[1].clamp(min=1))
        elapsed = time.time() - t0
        row: dict[str, Any] = {"epoch": epoch + 1, "lr": lr,
                               "train_loss": round(float(totals[0]) / n, 6)}
        for k, name in enumerate(task.stat_names):
            row[f"train_{name}"] = round(float(totals[2 + k]) / n, 4)
        row["epoch_time_s"] = round(elapsed, 3)
        history.append(row)
        state_ = EpochState(epoch=epoch + 1, epochs=epochs, row=row, history=history,
                            best_metric=best_metric, best_epoch=best_epoch,
                            images_per_s=float(totals[1]) / max(elapsed, 1e-9))
        for hook in all_hooks:
            hook.after_epoch(state_)
        best_metric, best_epoch = state_.best_metric, state_.best_epoch
        epochs_run += 1
        dist_utils.barrier()

    if channels_last:
        method.to(memory_format=torch.contiguous_format)
    completed = len(history)
    summary: dict[str, Any] = {"epochs_completed": completed, "finished": completed >= epochs,
                               "best_epoch": best_epoch, "best_metric": best_metric,
                               "select_metric": task.select_metric}
    if summary["finished"]:
        chosen = ckpt_dir / "best.pt" if (ckpt_dir / "best.pt").is_file() else ckpt_dir / "last.pt"
        state = load_checkpoint(chosen, map_location="cpu", kind=task.kind)
        if best_epoch is not None and int(state["epoch"]) != int(best_epoch):
            raise CheckpointError(f"{chosen} holds epoch {state['epoch']}, but the run's best "
                                  f"epoch is {best_epoch}")
        unwrap(method).load_state_dict(state["state_dict"])
        summary["checkpoint"] = str(chosen)
        summary["epoch"] = int(state["epoch"])
        summary["final"] = task.final_evaluation(run_dir, device, progress)
    dist_utils.barrier()
    return summary


def _check_finite(loss_sum: Tensor, epoch: int, step: int | None) -> None:
    if not bool(torch.isfinite(loss_sum)):
        where = f"step {step + 1}" if step is not None else "the end of the epoch"
        raise FloatingPointError(f"epoch {epoch + 1}: the training loss became {float(loss_sum)} "
                                 f"(checked at {where}); lower optim.lr or check the data")


def finished_results(run_dir: Path) -> dict | None:
    """The results of a finished run (``results.json``), or None."""
    from wsol.utils.io import read_json_object

    path = run_dir / "results.json"
    if not path.is_file():
        return None
    try:
        return read_json_object(path, "results")
    except (RunDirError, ValueError):
        return None

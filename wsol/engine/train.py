"""The training engine: one function, :func:`train`, driven by a resolved config.

SGD with parameter groups (pretrained layers at ``lr``, new layers at ``lr x new_layer_lr_mult``),
step decay, seeding (``seed + rank``, reseeded at every epoch start so that an epoch's randomness
depends only on (seed, epoch, rank)), optional deterministic algorithms, evaluation on the val
split every N epochs, ``last.pt`` every epoch and ``best.pt`` on improvement (both atomic),
``--resume`` restoring model, optimizer, schedule, RNG and epoch, ``metrics.csv`` (one row per
epoch), ``config.yaml`` and ``results.json`` in the run directory, which is never overwritten
without ``force``. Under torchrun the model is wrapped in DistributedDataParallel, the training
data is sharded by DistributedSampler (``set_epoch`` every epoch), evaluation is sharded without
duplicates and all-reduced, and rank 0 alone writes files.
"""

from __future__ import annotations

import csv
import io
import math
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from wsol.config import ConfigError, dump_config
from wsol.engine import distributed as dist_utils
from wsol.engine.build import build_from_config
from wsol.engine.checkpoint import (
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    unwrap,
)
from wsol.engine.data import build_split, read_class_names, split_dir_name
from wsol.engine.evaluate import evaluate, make_eval_loader
from wsol.utils.io import atomic_write_json, atomic_write_text


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (all devices); optionally force deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return (seed * 1_000_003 + epoch * 10_007 + rank) % 2**31


def build_optimizer(model, optim_cfg: dict):
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


def restore_training(state: dict, model, optimizer, scheduler, config: dict,
                     sections: tuple[str, ...], run_dir: Path):
    """Load a ``last.pt`` state for ``--resume``: weights, optimizer, schedule, RNG; check that
    the config ``sections`` that shape the model did not change. Returns ``(start_epoch,
    best_metric, best_epoch, metrics rows so far)``."""
    for section in sections:
        if state["config"][section] != config[section]:
            raise ConfigError(f"--resume: {section} config differs from the checkpoint's "
                              f"({state['config'][section]} vs {config[section]})")
    model.load_state_dict(state["state_dict"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if "rng" in state:
        restore_rng_state(state["rng"])
    start_epoch = int(state["epoch"])
    rows = _read_csv(run_dir / "metrics.csv")[:start_epoch]
    return start_epoch, state.get("best_metric"), state.get("best_epoch"), rows


def prepare_run_dir(run_dir: Path, resume: bool, force: bool) -> None:
    """Refuse to clobber an existing run unless ``force``; check a resumable state exists."""
    last = run_dir / "checkpoints" / "last.pt"
    exists = run_dir.exists() and any(run_dir.iterdir())
    if resume:
        if not last.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint to resume at {last}")
        return
    if exists:
        if not force:
            raise FileExistsError(
                f"run directory {run_dir} already exists and is not empty; use --resume to "
                "continue it or --force to overwrite it")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)


def _write_csv(path: Path, rows: list[dict]) -> None:
    fields: list[str] = []
    for row in rows:
        fields.extend(k for k in row if k not in fields)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _scalar_metrics(results: dict, prefix: str) -> dict:
    return {f"{prefix}{k}": round(float(v), 6) for k, v in results.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _eval_kwargs(config: dict, device: torch.device) -> dict:
    ev = config["eval"]
    return dict(device=device, image_size=config["data"]["image_size"],
                cam_curve_interval=ev["cam_curve_interval"], iou_thresholds=ev["iou_thresholds"],
                multi_contour=ev["multi_contour"], normalization=ev["normalization"],
                amp=config["train"]["amp"])


def evaluate_split(method, config: dict, split: str, device: torch.device, backbone,
                   progress: bool = False, **overrides) -> dict:
    """Evaluate ``method`` on ``split`` of the configured data (all ranks take part)."""
    dataset, metadata, mask_root = build_split(config, split, train=False, backbone=backbone)
    data = config["data"]
    loader = make_eval_loader(dataset, data["eval_batch_size"], data["num_workers"],
                              pin_memory=_pin_memory(config, device))
    kwargs = {**_eval_kwargs(config, device), **overrides}
    results = evaluate(method, loader, metadata, mask_root=mask_root, progress=progress, **kwargs)
    results["split"] = split
    return results


def _pin_memory(config: dict, device: torch.device) -> bool:
    pin = config["data"]["pin_memory"]
    return device.type == "cuda" if pin == "auto" else bool(pin)


def train(config: dict, *, resume: bool = False, force: bool = False, progress: bool = True,
          stop_after_epochs: int | None = None) -> dict:
    """Train ``config`` end to end; returns the final results (test split metrics).

    ``stop_after_epochs`` stops cleanly after that many epochs of this invocation (as if the job
    were interrupted at an epoch boundary); ``resume=True`` continues from ``last.pt``.
    """
    from tqdm import tqdm

    if not config.get("run_dir"):
        raise ConfigError("run_dir is not set (use --run-dir or run_dir=... )")
    device = dist_utils.init_distributed(config["device"])
    rank, world = dist_utils.get_rank(), dist_utils.get_world_size()
    main = rank == 0
    run_dir = Path(config["run_dir"])
    ckpt_dir = run_dir / "checkpoints"
    if main:
        prepare_run_dir(run_dir, resume, force)
    dist_utils.barrier()
    seed = int(config["seed"])
    seed_everything(seed + rank, config["deterministic"])

    data = config["data"]
    class_names = read_class_names(data.get("class_names"))
    # The backbone's input normalization decides the transforms: build the method first.
    train_meta = build_split(config, data["train_split"], train=True, backbone=None,
                             metadata_only=True)
    method = build_from_config(config, num_classes=train_meta.num_classes).to(device)
    backbone = method.backbone
    train_set, _, _ = build_split(config, data["train_split"], train=True, backbone=backbone,
                                  metadata=train_meta)

    optim_cfg = config["optim"]
    optimizer, scheduler = build_optimizer(method, optim_cfg)

    start_epoch, best_metric, best_epoch = 0, None, None
    rows: list[dict] = []
    if resume:
        state = load_checkpoint(ckpt_dir / "last.pt", map_location="cpu")
        start_epoch, best_metric, best_epoch, rows = restore_training(
            state, method, optimizer, scheduler, config, ("model", "method"), run_dir)
    if main:
        atomic_write_text(run_dir / "config.yaml", dump_config(config))

    model = method
    if world > 1:
        model = DistributedDataParallel(
            method, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=False)
    sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True,
                                 seed=seed, drop_last=False)
    loader = DataLoader(
        train_set, batch_size=data["batch_size"], sampler=sampler,
        num_workers=data["num_workers"], pin_memory=_pin_memory(config, device),
        persistent_workers=bool(data["persistent_workers"]) and data["num_workers"] > 0,
        drop_last=False)
    use_amp = bool(config["train"]["amp"]) and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    select = config["train"]["select_metric"]
    val_split = data.get("val_split")
    epochs = int(optim_cfg["epochs"])
    max_steps = config["train"].get("max_steps_per_epoch")
    epochs_run = 0

    for epoch in range(start_epoch, epochs):
        if stop_after_epochs is not None and epochs_run >= stop_after_epochs:
            break
        seed_everything(_epoch_seed(seed, epoch, rank), config["deterministic"])
        sampler.set_epoch(epoch)
        model.train()
        t0 = time.time()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        stats = torch.zeros(2, dtype=torch.float64, device=device)  # correct, seen
        lr = optimizer.param_groups[0]["lr"]
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", leave=False,
                   disable=not (progress and main))
        for step, batch in enumerate(bar):
            if max_steps is not None and step >= max_steps:
                break
            images = batch["image"].to(device, non_blocking=True)
            labels = torch.as_tensor(batch["label"]).to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            images, targets = method.prepare_batch(images, labels)
            with torch.autocast("cuda", enabled=use_amp):
                outputs = model(images)
                loss = method.loss(outputs, targets)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"epoch {epoch + 1}, step {step}: loss is {loss.item()}")
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            method.update_state({k: v.detach() for k, v in outputs.items()}, labels)
            n = labels.shape[0]
            loss_sum += loss.detach().double() * n
            stats += torch.stack([(outputs["logits"].argmax(1) == labels).sum().double(),
                                  torch.tensor(float(n), dtype=torch.float64, device=device)])
            if main and progress:
                bar.set_postfix(loss=f"{loss.item():.3f}")
        scheduler.step()
        dist_utils.broadcast_buffers(method)  # one model on every rank for eval and checkpoint
        dist_utils.all_reduce_sum(loss_sum)
        dist_utils.all_reduce_sum(stats)
        row = {"epoch": epoch + 1, "lr": lr,
               "train_loss": round(float(loss_sum / stats[1].clamp(min=1)), 6),
               "train_top1_cls": round(float(100 * stats[0] / stats[1].clamp(min=1)), 4),
               "epoch_time_s": round(time.time() - t0, 3)}
        improved = False
        do_eval = val_split and ((epoch + 1) % int(config["train"]["eval_every"]) == 0
                                 or epoch + 1 == epochs)
        if do_eval:
            results = evaluate_split(method, config, val_split, device, backbone)
            row.update(_scalar_metrics(results, "val_"))
            if select not in results:
                raise ConfigError(f"train.select_metric {select!r} is not a result key; "
                                  f"choose one of {sorted(_scalar_metrics(results, ''))}")
            value = float(results[select])
            if best_metric is None or (math.isfinite(value) and value > best_metric):
                best_metric, best_epoch, improved = value, epoch + 1, True
        elif not val_split:
            best_metric, best_epoch, improved = None, epoch + 1, True
        rows.append(row)
        epochs_run += 1
        if main:
            _write_csv(run_dir / "metrics.csv", rows)
            common = dict(config=config, class_names=class_names, epoch=epoch + 1,
                          best_metric=best_metric, best_epoch=best_epoch)
            save_checkpoint(ckpt_dir / "last.pt", method, optimizer=optimizer,
                            scheduler=scheduler, include_rng=True, **common)
            if improved:
                save_checkpoint(ckpt_dir / "best.pt", method, **common)
            print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
        dist_utils.barrier()

    if world > 1:
        sync = buffer_sync_report(method)
        if main:
            atomic_write_json(run_dir / "ranks.json", {"world_size": world, "buffers": sync})
    finished = len(rows) >= epochs
    final: dict = {"run_dir": str(run_dir), "epochs_completed": len(rows), "finished": finished}
    if finished:
        final.update(final_evaluation(method, config, run_dir, device, progress))
    dist_utils.barrier()
    return final


def buffer_sync_report(method) -> dict:
    """Max |difference| of every buffer of ``method`` (BatchNorm statistics, CREAM's context
    embeddings, ...) between each rank and rank 0: all zeros when the ranks agree exactly."""
    import torch.distributed as dist

    report = {}
    for name, buf in unwrap(method).named_buffers():
        gathered = [torch.empty_like(buf) for _ in range(dist_utils.get_world_size())]
        dist.all_gather(gathered, buf.contiguous())
        report[name] = [float((g.double() - gathered[0].double()).abs().max()) if g.numel() else 0.0
                        for g in gathered]
    return report


def final_evaluation(method, config: dict, run_dir: Path, device: torch.device,
                     progress: bool = False) -> dict:
    """Evaluate ``best.pt`` (or ``last.pt``) on every test split; write results.json (rank 0)."""
    ckpt_dir = run_dir / "checkpoints"
    chosen = ckpt_dir / "best.pt" if (ckpt_dir / "best.pt").is_file() else ckpt_dir / "last.pt"
    state = load_checkpoint(chosen, map_location="cpu")
    unwrap(method).load_state_dict(state["state_dict"])
    out: dict = {"checkpoint": str(chosen), "epoch": state["epoch"],
                 "selected_on": config["data"].get("val_split"),
                 "select_metric": config["train"]["select_metric"], "splits": {}}
    for split in config["data"]["test_splits"]:
        results = evaluate_split(unwrap(method), config, split, device, unwrap(method).backbone,
                                 progress=progress)
        out["splits"][split] = results
        if dist_utils.is_main_process():
            atomic_write_json(run_dir / "eval" / split_dir_name(split) / "results.json", results)
    if dist_utils.is_main_process():
        first = config["data"]["test_splits"][0] if config["data"]["test_splits"] else None
        summary = {**(out["splits"].get(first, {}) if first else {}), **{
            k: v for k, v in out.items() if k != "splits"}}
        summary["method"] = config["method"]["name"]
        summary["model"] = config["model"]["name"]
        atomic_write_json(run_dir / "results.json", summary)
    return out

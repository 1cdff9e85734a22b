"""Training a WSOL classifier (any method of :mod:`wsol.methods`): the classifier task of the
one loop (:mod:`wsol.engine.loop`) and :func:`train`, driven by a resolved config.

Per step: ``images, targets = method.prepare_batch(x, y)`` (HaS, CutMix), ``outputs =
model(images)``, ``loss = method.loss(outputs, targets)``; after the optimizer step
``method.update_state(outputs, y)`` (CREAM's Eq.3-4 embeddings). Validation on ``data.val_split``
every ``train.eval_every`` epochs selects ``best.pt`` by ``train.select_metric``; once finished,
``best.pt`` is evaluated on every test split (``eval/<split>/results.json`` and the run's
``results.json``). Everything that can be checked before the first step (config values, splits,
labels against the class count, the selection metric, the device, the run directory) is
checked by :func:`preflight` first, so a bad run fails in seconds with one error naming the
key, file or line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from wsol.config import dump_config
from wsol.data.metadata import Metadata, check_split_labels
from wsol.engine import distributed as dist_utils
from wsol.engine.build import build_from_config
from wsol.engine.checkpoint import unwrap
from wsol.engine.data import build_split, read_class_names, split_dir_name
from wsol.engine.evaluate import evaluate, make_eval_loader
from wsol.engine.loop import (StepOutput, Task, check_loop_config, finished_results, fit,
                              resolve_train_precision, train_precision)
from wsol.engine.rundir import RunDir
from wsol.errors import ConfigError
from wsol.metrics.results import metric_names
from wsol.utils.checks import check_choice
from wsol.utils.io import atomic_write_json, atomic_write_text

__all__ = ["ClassifierTask", "evaluate_split", "final_evaluation", "preflight", "train"]


def _eval_kwargs(config: dict, device: torch.device) -> dict:
    ev = config["eval"]
    return dict(device=device, image_size=config["data"]["image_size"],
                cam_curve_interval=ev["cam_curve_interval"], iou_thresholds=ev["iou_thresholds"],
                multi_contour=ev["multi_contour"], normalization=ev["normalization"],
                amp=ev.get("amp", "auto"), channels_last=ev.get("channels_last", "auto"),
                num_threads=ev.get("threads"), streams=ev.get("streams", "auto"),
                chunk_size=ev.get("chunk_size", "auto"))


def evaluate_split(method, config: dict, split: str, device: torch.device, backbone,
                   progress: bool = False, **overrides) -> dict:
    """Evaluate ``method`` on ``split`` of the configured data (all ranks take part)."""
    dataset, metadata, mask_root = build_split(config, split, train=False, backbone=backbone)
    data = config["data"]
    pin = data["pin_memory"]
    loader = make_eval_loader(dataset, data["eval_batch_size"], data["num_workers"],
                              pin_memory=device.type == "cuda" if pin == "auto" else bool(pin))
    kwargs = {**_eval_kwargs(config, device), **overrides}
    results = evaluate(method, loader, metadata, mask_root=mask_root, progress=progress, **kwargs)
    results["split"] = split
    return results


def class_names_of(config: dict) -> tuple[list[str] | None, Path | None]:
    """Class names of a run: ``data.class_names``, else the ``class_names.txt`` that
    ``wsol prepare`` writes next to (cub, folder, voc) or above (synthetic) the split dirs."""
    data = config["data"]
    names_file = Path(data["class_names"]) if data.get("class_names") else None
    if names_file is None and data.get("metadata"):
        found = [d / "class_names.txt" for d in (Path(data["metadata"]),
                                                 Path(data["metadata"]).parent)
                 if (d / "class_names.txt").is_file()]
        names_file = found[0] if found else None
    return read_class_names(names_file), names_file


def num_classes_of(config: dict, train_meta: Metadata) -> int:
    """The task's class count: the class names' count when known (a split may lack the last
    classes), else the metadata's largest label + 1."""
    names, names_file = class_names_of(config)
    if names is None:
        return train_meta.num_classes
    if len(names) < train_meta.num_classes:
        raise ConfigError(f"{names_file}: {len(names)} class names, but the labels of "
                          f"{config['data']['train_split']!r} go up to "
                          f"{train_meta.num_classes - 1}")
    return len(names)


def preflight(config: dict) -> tuple[Metadata, dict[str, Metadata]]:
    """Check everything that can be checked before training; returns the train metadata and
    the metadata of the val/test splits. Raises one :class:`~wsol.errors.WsolError` naming the
    key, file or line."""
    from wsol.utils.device import resolve_device

    check_loop_config(config)
    if not config.get("run_dir"):
        raise ConfigError("run_dir is not set (use --run-dir or run_dir=...)")
    train_precision(config, resolve_device(config["device"], "device"))  # fp16 on a CPU fails
    data = config["data"]
    if not data.get("root"):
        raise ConfigError("data.root is not set (the image root)")
    if not Path(data["root"]).is_dir():
        raise ConfigError(f"data.root: {data['root']} is not a directory")
    train_meta = build_split(config, data["train_split"], train=True, backbone=None,
                             metadata_only=True)
    num_classes = num_classes_of(config, train_meta)
    others: dict[str, Metadata] = {}
    splits = ([data["val_split"]] if data.get("val_split") else []) + list(data["test_splits"])
    for split in splits:
        meta = build_split(config, split, train=False, backbone=None, metadata_only=True)
        check_split_labels(train_meta, meta, split, num_classes)
        others[split] = meta
    select = config["train"]["select_metric"]
    if data.get("val_split"):
        val = others[data["val_split"]]
        known = metric_names(val.localization_type, config["eval"]["iou_thresholds"])
        if select not in known:
            raise ConfigError(f"train.select_metric {select!r} is not a metric of split "
                              f"{data['val_split']!r} ({val.localization_type or 'no'} "
                              f"annotations); choose one of {', '.join(known)}")
    if "num_classes" in config["model"]:
        raise ConfigError("model.num_classes cannot be set: the class count comes from the "
                          f"metadata ({num_classes} classes in {data['train_split']!r})")
    return train_meta, others


def check_select_stage(method, stage: str | None) -> str | None:
    """``train.select_stage``: the map stage that validation scores (so the one ``best.pt`` is
    selected on), e.g. ``cam`` to select a CREAM run on the method's own map and report the
    configured ``method.stage`` (calibrated, fused) on test. ``None``: the configured stage."""
    if stage is None:
        return None
    stages = getattr(type(method), "stages", None)
    if not hasattr(method, "stage") or not stages:
        raise ConfigError(f"train.select_stage={stage!r}: method {method.name!r} has no map "
                          "stages (only CREAM and its add-on have: set method.cream=true or "
                          "remove train.select_stage)")
    check_choice("train", "select_stage", stage, stages)
    return stage


class ClassifierTask(Task):
    """A WSOL method trained with its own loss on image-level labels."""

    kind = "classifier"
    stat_names = ("top1_cls",)

    def __init__(self, config: dict, device: torch.device, train_meta: Metadata) -> None:
        data = config["data"]
        self.config = config
        self.method = build_from_config(config,
                                        num_classes=num_classes_of(config, train_meta)).to(device)
        self.model = self.method
        self.method.reduce_fn = dist_utils.all_reduce_sum  # CREAM's cross-rank Eq.4 sums
        self.train_set, _, _ = build_split(config, data["train_split"], train=True,
                                           backbone=self.method.backbone, metadata=train_meta)
        self.select_metric = config["train"]["select_metric"] if data.get("val_split") else None
        self.select_stage = check_select_stage(self.method, config["train"].get("select_stage"))
        self.class_names, _ = class_names_of(config)
        self.checkpoint_extra = {"class_names": self.class_names}

    def train_step(self, model: nn.Module, batch: dict, device: torch.device) -> StepOutput:
        images = batch["image"].to(device, non_blocking=True)
        labels = torch.as_tensor(batch["label"]).to(device, non_blocking=True)
        if self.config["train"].get("channels_last"):
            images = images.contiguous(memory_format=torch.channels_last)
        images, targets = self.method.prepare_batch(images, labels)
        outputs = model(images)
        loss = self.method.loss(outputs, targets)
        correct = (outputs["logits"].detach().argmax(1) == labels).sum().double() * 100
        return StepOutput(loss=loss, outputs=outputs, n=int(labels.shape[0]),
                          stats=correct.view(1))

    def after_step(self, step: StepOutput, batch: dict, device: torch.device) -> None:
        labels = torch.as_tensor(batch["label"]).to(device, non_blocking=True)
        self.method.update_state({k: v.detach().float() for k, v in step.outputs.items()},
                                 labels)

    def validate(self, device: torch.device) -> dict | None:
        val = self.config["data"].get("val_split")
        if not val:
            return None
        if self.select_stage is None:
            return evaluate_split(self.method, self.config, val, device, self.method.backbone)
        configured, self.method.stage = self.method.stage, self.select_stage
        try:
            return evaluate_split(self.method, self.config, val, device, self.method.backbone)
        finally:
            self.method.stage = configured

    def final_evaluation(self, run_dir: Path, device: torch.device, progress: bool) -> dict:
        return final_evaluation(self.method, self.config, run_dir, device, progress)


def train(config: dict, *, resume: bool = False, force: bool = False, progress: bool = True,
          stop_after_epochs: int | None = None) -> dict:
    """Train ``config`` end to end; returns the final results (test split metrics).

    ``stop_after_epochs`` stops cleanly after that many epochs of this invocation (as if the job
    were interrupted at an epoch boundary); ``resume=True`` continues from ``last.pt``. A
    finished run is not trained or evaluated again: its results are returned with
    ``"already_finished": True``.
    """
    train_meta, _ = preflight(config)
    device = dist_utils.init_distributed(config["device"])
    main = dist_utils.is_main_process()
    run = RunDir(config["run_dir"], kind="classifier")
    if resume and main and (done := finished_results(run.path)) is not None:
        return {**done, "already_finished": True}
    created = not run.path.exists()
    try:
        if main:
            run.open(resume=resume, force=force)
        dist_utils.barrier()
        seed = int(config["seed"])
        from wsol.engine.loop import seed_everything

        seed_everything(seed + dist_utils.get_rank(), config["deterministic"])
        resolve_train_precision(config, device)  # train.amp=auto -> what ran, saved below
        task = ClassifierTask(config, device, train_meta)
        if main:
            atomic_write_text(run.path / "config.yaml", dump_config(config))
        summary = fit(task, config, run=run, device=device, resume=resume, progress=progress,
                      stop_after_epochs=stop_after_epochs)
        if dist_utils.get_world_size() > 1:
            sync = buffer_sync_report(task.method)
            if main:
                atomic_write_json(run.path / "ranks.json",
                                  {"world_size": dist_utils.get_world_size(), "buffers": sync})
    except BaseException:
        if main and created and run.is_wsol_run():
            run.discard_if_unused()  # a run that failed before its first epoch leaves nothing
        raise
    finally:
        run.release()
    final: dict[str, Any] = {"run_dir": str(run.path),
                             "epochs_completed": summary["epochs_completed"],
                             "finished": summary["finished"]}
    if summary["finished"]:
        final.update(summary["final"])
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
    """Evaluate the loaded (selected) model on every test split; write the results (rank 0)."""
    ckpt_dir = run_dir / "checkpoints"
    chosen = ckpt_dir / "best.pt" if (ckpt_dir / "best.pt").is_file() else ckpt_dir / "last.pt"
    from wsol.engine.checkpoint import load_checkpoint

    state = load_checkpoint(chosen, map_location="cpu")
    out: dict = {"checkpoint": str(chosen), "epoch": state["epoch"],
                 "selected_on": config["data"].get("val_split"),
                 "select_metric": config["train"]["select_metric"],
                 "select_stage": config["train"].get("select_stage"), "splits": {}}
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

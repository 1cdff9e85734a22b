"""Pipelines against the bare forward pass, in one run: img/s of the bare forward, `evaluate`,
`localize` and a training epoch, for fp32 / channels_last / bf16 autocast / both.

    python benchmarks/bench_pipeline.py [--checkpoint runs/cub10-seed0-cream/checkpoints/best.pt]
        [--reps 2]

Data: the CUB subset (classes 1-10; `wsol prepare cub` into data/cub10 if missing), 243 test
images for the inference pipelines, the 250 training images for the epoch. Model:
EfficientNet-Lite0; the checkpoint (default: the CUB-subset CREAM run of cub_seeds.py, whose
CAM map is evaluated) or, without one, the ImageNet weights with a fresh 10-class head.

- bare forward: ``method(images)`` under ``no_grad`` on batches of 32 already decoded and
  normalized in memory, one call per batch on torch's intra-op threads: the ceiling every
  pipeline is measured against;
- bare forward in the mode's layout: the same batches in the mode's streams and chunks
  (:mod:`wsol.utils.streams`: calls of 4 images spread over one single-threaded stream per
  core, where they apply), nothing else: the ceiling of that layout itself;
- evaluate: the engine's evaluation end to end (the config's default loader: ``data.num_workers``
  of the shipped CUB-subset config, 0 on this 2-core machine, the next batch decoded in a
  prefetch thread;
  forward, maps, upsampling, normalization, the box evaluator at interval 0.001, IoU 30/50/70);
- localize: ``wsol.Localizer`` on the image files (decode, resize, forward, maps, boxes in
  original pixels), no files written;
- localize CLI: ``wsol localize``'s worker (:func:`wsol.commands.localize.localize_images`)
  on the image files, writing every overlay (JPEG, the default) and map; reading, forward and
  writing overlap;
- validation: ``evaluate_split`` on the 50-image val split, the call the training loop's
  validation makes every epoch;
- train epoch: one epoch of the one training loop (no validation), images/s from its
  ``epoch_time_s``.

``default`` is what the engine does with no settings (``auto``: bf16 autocast + channels_last
on a CPU with native bf16, float32 elsewhere; one inference stream per intra-op thread); what
it resolved to is recorded. ``default_one_call`` is the same with ``streams=1`` and one call
per batch (torch's own threading, the engine before streams and chunks); ``fp32_streams`` is
float32 with 2 streams and chunks of 4 set explicitly (``auto`` keeps one call in float32: its
numbers can differ in the last bits, and the MaxBoxAccV2 column shows whether the metric moved). The
four precision modes run at the default (``auto``) streams and chunks.

Modes alternate inside each repetition (fp32, channels_last, bf16, channels_last + bf16) so a
noisy shared machine affects them alike; the best of ``--reps`` is kept. MaxBoxAccV2 of each
evaluation is recorded to show the metrics hold. Writes benchmarks/results/pipeline.json.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from _common import REPO, prepare_cub, write_result

SHARED_CUB = REPO.parent / "shared" / "data" / "CUB_200_2011-classes001-010"
#: mode -> (amp, channels_last, streams, chunk_size)
MODES = {"fp32": (False, False, "auto", "auto"), "channels_last": (False, True, "auto", "auto"),
         "bf16": ("bf16", False, "auto", "auto"),
         "channels_last+bf16": ("bf16", True, "auto", "auto")}
#: The engine's default (``auto``), resolved on this machine (wsol.utils.precision, streams).
DEFAULT = ("auto", "auto", "auto", "auto")
WHOLE = 1_000_000  # a chunk size no batch reaches: one call per batch
EXTRA = {"default_one_call": ("auto", "auto", 1, WHOLE), "fp32_streams": (False, False, 2, 4)}


def base_config(metadata: Path, checkpoint: Path | None) -> dict:
    from wsol.config import load_config, resolve_config_path

    if checkpoint is not None:
        from wsol.engine.checkpoint import load_checkpoint

        config = load_checkpoint(checkpoint)["config"]
    else:
        config = load_config(resolve_config_path("cream_efficientnet_lite0_cub10"))
    config = load_config(None, [f"data.root={SHARED_CUB / 'images'}",
                                f"data.metadata={metadata}", "method.stage=cam"], base=config)
    return config


def layout(method, amp, streams, chunk) -> tuple[int, int | None]:
    from wsol.localization.pipeline import inference_streams
    from wsol.utils.precision import resolve_amp

    return inference_streams(method, streams, chunk, "cpu", resolve_amp(amp, "cpu"))


def bare_forward(method, images: list[torch.Tensor], amp, channels_last, streams=1,
                 chunk=WHOLE) -> float:
    from wsol.localization.pipeline import autocast_context
    from wsol.utils.precision import resolve_channels_last
    from wsol.utils.streams import ForwardStreams

    channels_last = resolve_channels_last(channels_last, "cpu")
    method.eval()
    if channels_last:
        method.to(memory_format=torch.channels_last)
        images = [x.contiguous(memory_format=torch.channels_last) for x in images]

    def forward(x):  # grad mode and autocast are per thread
        with torch.no_grad(), autocast_context(torch.device("cpu"), amp):
            method(x)

    count, size = layout(method, amp, streams, chunk)
    with ForwardStreams(count) as pool:
        t0 = time.perf_counter()
        for x in images:
            pool.map(forward, x.split(size or -(-x.shape[0] // count)))
        elapsed = time.perf_counter() - t0
    method.to(memory_format=torch.contiguous_format)
    return sum(x.shape[0] for x in images) / elapsed


def evaluate_once(method, config: dict, amp, channels_last, streams, chunk,
                  split: str = "test") -> tuple[float, float]:
    from wsol.engine.train import evaluate_split

    t0 = time.perf_counter()
    res = evaluate_split(method, config, split, torch.device("cpu"), method.backbone, amp=amp,
                         channels_last=channels_last, streams=streams, chunk_size=chunk)
    return res["num_images"] / (time.perf_counter() - t0), res["MaxBoxAccV2"]


def localize_cli_once(method, paths: list[Path], amp, channels_last, streams, chunk) -> float:
    from wsol.commands.localize import ImageItem, LocalizeSettings, localize_images

    items = [ImageItem(p, f"{k:04d}-{p.stem}") for k, p in enumerate(paths)]
    settings = LocalizeSettings(threshold=0.2, batch_size=32, amp=amp, channels_last=channels_last,
                                streams=streams, chunk_size=chunk)
    with tempfile.TemporaryDirectory() as tmp:
        report = localize_images(method, items, Path(tmp), settings)
    assert len(report.records) == len(paths), report.skipped
    return len(paths) / report.seconds


def localize_once(method, paths: list[Path], amp, channels_last, streams, chunk) -> float:
    from wsol.api import Localizer

    loc = Localizer(method, batch_size=32, amp=amp, channels_last=channels_last, streams=streams,
                    chunk_size=chunk)
    t0 = time.perf_counter()
    out = loc([str(p) for p in paths])
    assert len(out.boxes) == len(paths)
    return len(paths) / (time.perf_counter() - t0)


def train_epoch(config: dict, amp, channels_last: bool) -> float:
    import csv

    from wsol.config import load_config
    from wsol.engine.train import train

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(None, [f"run_dir={tmp}/run", "optim.epochs=1", "data.val_split=null",
                                 "data.test_splits=[]", f"train.amp={str(amp).lower()}",
                                 f"train.channels_last={str(channels_last).lower()}"],
                          base=config)
        cfg["model"]["pretrained"] = True
        train(cfg, progress=False)
        row = next(csv.DictReader(open(Path(tmp) / "run" / "metrics.csv")))
    return 250 / float(row["epoch_time_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", default=str(REPO / "runs" / "cub10-seed0-cream" /
                                                     "checkpoints" / "best.pt"))
    parser.add_argument("--metadata", default=str(REPO / "data" / "cub10"))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--modes", nargs="+", default=None,
                        help="only these modes (default: all)")
    parser.add_argument("--out", default="pipeline",
                        help="results name: benchmarks/results/<out>.json")
    args = parser.parse_args()
    metadata = Path(args.metadata)
    prepare_cub(metadata, SHARED_CUB)
    checkpoint = Path(args.checkpoint) if Path(args.checkpoint).is_file() else None
    config = base_config(metadata, checkpoint)

    from wsol.engine.build import build_from_config
    from wsol.engine.checkpoint import load_method
    from wsol.engine.data import build_split

    if checkpoint is not None:
        method, _ = load_method(checkpoint, method_overrides={"stage": "cam"})
    else:
        torch.manual_seed(0)  # the fresh head: the same MaxBoxAccV2 in every run
        method = build_from_config(config, num_classes=10).eval()
    dataset, meta, _ = build_split(config, "test", train=False, backbone=method.backbone)
    batch = torch.stack([dataset[i]["image"] for i in range(len(dataset))])
    images = list(batch.split(32))
    paths = [SHARED_CUB / "images" / i for i in meta.image_ids]

    from wsol.utils.precision import precision_record

    modes = {**MODES, "default": DEFAULT, **EXTRA}
    if args.modes:
        unknown = sorted(set(args.modes) - set(modes))
        if unknown:
            parser.error(f"unknown modes {unknown}; known: {sorted(modes)}")
        modes = {m: modes[m] for m in args.modes}
    results: dict[str, dict] = {m: {} for m in modes}
    for mode, (amp, cl, streams, chunk) in modes.items():
        results[mode]["streams"], results[mode]["chunk_size"] = layout(method, amp, streams, chunk)
    if "default" in results:
        results["default"]["resolved"] = precision_record(*DEFAULT[:2], "cpu")
    for rep in range(args.reps):
        for mode, (amp, cl, streams, chunk) in modes.items():
            r = results[mode]
            r["bare_forward"] = max(r.get("bare_forward", 0.0),
                                    bare_forward(method, images, amp, cl))
            if (r["streams"], r["chunk_size"]) != (1, None):
                r["bare_forward_layout"] = max(r.get("bare_forward_layout", 0.0),
                                               bare_forward(method, images, amp, cl, streams,
                                                            chunk))
            ips, acc = evaluate_once(method, config, amp, cl, streams, chunk)
            r["evaluate"] = max(r.get("evaluate", 0.0), ips)
            r["MaxBoxAccV2"] = acc
            r["localize"] = max(r.get("localize", 0.0),
                                localize_once(method, paths, amp, cl, streams, chunk))
            r["localize_cli"] = max(r.get("localize_cli", 0.0),
                                    localize_cli_once(method, paths, amp, cl, streams, chunk))
            r["validation"] = max(r.get("validation", 0.0),
                                  evaluate_once(method, config, amp, cl, streams, chunk,
                                                "val")[0])
            if not args.skip_train and rep == 0 and mode not in EXTRA:
                r["train_epoch"] = train_epoch(config, amp, cl)
            print(rep, mode, {k: round(v, 2) for k, v in r.items()
                              if isinstance(v, (int, float))}, flush=True)
    for mode, r in results.items():
        for key in ("evaluate", "localize", "localize_cli", "validation", "train_epoch"):
            if key in r:
                r[f"{key}_vs_bare_forward"] = round(r[key] / r["bare_forward"], 3)
                if "bare_forward_layout" in r:
                    r[f"{key}_vs_bare_forward_layout"] = round(
                        r[key] / r["bare_forward_layout"], 3)
    write_result(args.out, {
        "what": "img/s on the CUB subset (243 test / 250 train images), EfficientNet-Lite0, "
                "batch 32 at 224, CPU; best of reps; modes alternate within each rep",
        "checkpoint": str(checkpoint) if checkpoint else "ImageNet weights, fresh 10-class head",
        "reps": args.reps, "data_num_workers": config["data"]["num_workers"],
        "eval_cam_curve_interval": config["eval"]["cam_curve_interval"], "results": results,
        "MaxBoxAccV2_delta_vs_fp32": ({m: round(r["MaxBoxAccV2"] - results["fp32"]["MaxBoxAccV2"],
                                                3) for m, r in results.items()}
                                      if "fp32" in results else None)})


if __name__ == "__main__":
    main()

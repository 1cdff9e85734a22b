"""Host-side costs per image next to the bare forward, in one run: what bounds `evaluate`'s
share of the forward on a small CPU (benchmarks/README.md, "Pipelines").

    python benchmarks/bench_host_costs.py [--reps 3]

- decode + eval transform: ``WSOLDataset[i]`` on the 243 CUB-subset test images (JPEG decode,
  resize to 224, to tensor, normalize), one thread; with the compiled resize
  (``wsol.data.resample``, the default) and with PIL's own, alternating (the same numbers);
- box evaluator: ``BoxAccumulator(num_threads=1)`` on the 120 parity maps at interval 0.001,
  batches of 32 (component tree, and the OpenCV path);
- score histograms: ``score_bins`` on those maps as float32 tensors with their GT-box masks,
  compiled helper vs vectorized search (the same counts, checked);
- maps and polarity: ``postprocess_maps`` (bicubic 14 -> 224, min-max) of 32 raw maps and
  ``inside_outside_means`` of the parity maps with their GT boxes (what ``evaluate`` does in
  its own thread after each forward);
- localize writing: what ``wsol localize`` does per image in a writer thread (the map resized
  to the photo, the overlay rendered and encoded as JPEG / PNG / not at all, the float16
  ``.npy``), on 64 CUB test photos at their original size, OpenCV on one thread;
- bare forward: EfficientNet-Lite0 (ImageNet weights, fresh 10-class head), batch 32 at 224,
  fp32 and channels_last + bf16 (the ``auto`` default on a CPU with native bf16) in one call per
  batch, and bf16 in the default streams and chunks (wsol.utils.streams), wall ms per image and
  core-ms (wall x torch threads).

Best of ``--reps``; writes benchmarks/results/host_costs.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from _common import REPO, prepare_cub, write_result

SHARED = REPO.parent / "shared"
CUB = SHARED / "data" / "CUB_200_2011-classes001-010"
PARITY = SHARED / "fixtures" / "metric-parity" / "boxes"


def best_ms(fn, n_items: int, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return 1000 * best / n_items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--metadata", default=str(REPO / "data" / "cub10"))
    args = parser.parse_args()
    if not CUB.is_dir() or not (PARITY / "scoremaps.npz").is_file():
        print(f"bench_host_costs: skipped: needs {CUB} and {PARITY}")
        return
    metadata = Path(args.metadata)
    prepare_cub(metadata, CUB)

    from wsol.config import load_config, resolve_config_path
    from wsol.data.metadata import read_metadata
    from wsol.engine.build import build_from_config
    from wsol.engine.data import build_split
    from wsol.localization.pipeline import autocast_context
    from wsol.metrics import BoxAccumulator
    from wsol.metrics.evaluator import gt_boxes_in_eval_geometry
    from wsol.metrics.histograms import score_bins
    from wsol.localization.normalize import postprocess_maps
    from wsol.metrics.inside import box_union_masks, inside_outside_means
    from wsol.utils.precision import precision_record

    config = load_config(resolve_config_path("cream_efficientnet_lite0_cub10"),
                         [f"data.root={CUB / 'images'}", f"data.metadata={metadata}",
                          "method.stage=cam"])
    method = build_from_config(config, num_classes=10).eval()
    dataset, _, _ = build_split(config, "test", train=False, backbone=method.backbone)
    out: dict = {}
    from wsol.data import resample

    def decode_all(helper: bool) -> None:
        resample.available = fast if helper else (lambda: False)
        try:
            for i in range(len(dataset)):
                dataset[i]
        finally:
            resample.available = fast

    fast = resample.available
    times: dict[bool, float] = {True: float("inf"), False: float("inf")}
    for _ in range(args.reps):  # alternating: the compiled resize, then PIL's own
        for helper in (True, False):
            times[helper] = min(times[helper], best_ms(lambda: decode_all(helper),
                                                       len(dataset), 1))
    out["decode_transform_ms"] = times[True]
    out["decode_transform_pil_resize_ms"] = times[False]
    out["compiled_resize"] = bool(fast())

    meta = read_metadata(PARITY / "metadata" / "test")
    ids = list(meta.image_ids)
    with np.load(PARITY / "scoremaps.npz") as npz:
        maps = np.stack([npz[i] for i in ids]).astype(np.float64)
    gts_by_id = gt_boxes_in_eval_geometry(meta)
    gts = [gts_by_id[i] for i in ids]
    thresholds = np.arange(0, 1, 0.001)

    def boxes(tree: bool) -> None:
        acc = BoxAccumulator(thresholds, num_threads=1, component_tree=tree)
        for lo in range(0, len(ids), 32):
            acc.update(maps[lo:lo + 32], gts[lo:lo + 32])
        acc.sync()

    out["box_evaluator_ms"] = {"component_tree": best_ms(lambda: boxes(True), len(ids), args.reps),
                               "opencv": best_ms(lambda: boxes(False), len(ids), args.reps)}
    t_maps = torch.from_numpy(maps.astype(np.float32))
    inside = box_union_masks(gts, t_maps.shape[-2:], t_maps.device)
    same = [score_bins(t_maps, thresholds, inside, compiled=c) for c in (None, False)]
    out["score_histograms_same_counts"] = all(torch.equal(a, b) for a, b in zip(*same))
    out["score_histograms_ms"] = {
        name: best_ms(lambda c=c: score_bins(t_maps, thresholds, inside, compiled=c),
                      len(ids), args.reps)
        for name, c in (("compiled", None), ("vectorized", False))}

    raw = torch.rand(len(ids), 14, 14, generator=torch.Generator().manual_seed(0))
    out["maps_ms"] = best_ms(lambda: [postprocess_maps(part, (224, 224), "minmax")
                                      for part in raw.split(32)], len(ids), args.reps)
    out["polarity_ms"] = best_ms(lambda: [inside_outside_means(t_maps[lo:lo + 32],
                                                               gts[lo:lo + 32])
                                          for lo in range(0, len(ids), 32)], len(ids), args.reps)

    # wsol localize's per-image writing (one writer thread): map resized to the photo, overlay
    # rendered and encoded, .npy written, on the CUB test photos at their original size
    import tempfile

    import cv2

    from wsol.commands.localize import OVERLAY_FORMATS, _write_image_outputs
    from wsol.data.transforms import load_image

    photos = [np.asarray(load_image(dataset.image_root / image_id))
              for image_id in dataset.image_ids[:64]]
    smooth = postprocess_maps(raw[:len(photos)], (224, 224), "minmax").numpy()
    write_ms = {}
    with tempfile.TemporaryDirectory() as tmp:
        prev = cv2.getNumThreads()
        cv2.setNumThreads(1)  # what one writer thread costs, not OpenCV's own pool
        try:
            for fmt in OVERLAY_FORMATS:
                def write_all(fmt=fmt) -> None:
                    for k, photo in enumerate(photos):
                        _write_image_outputs(Path(tmp), f"{fmt}-{k}", photo, smooth[k],
                                             [10, 10, 100, 100], "bird 0.93", fmt)
                write_ms[fmt] = best_ms(write_all, len(photos), args.reps)
        finally:
            cv2.setNumThreads(prev)
    out["localize_write_ms"] = write_ms
    out["localize_photo_pixels_mean"] = float(np.mean([p.shape[0] * p.shape[1] for p in photos]))

    from wsol.localization.pipeline import inference_streams
    from wsol.utils.streams import ForwardStreams

    batch = torch.stack([dataset[i]["image"] for i in range(64)])
    forward = {}
    cpu = torch.device("cpu")
    layouts = (("fp32", False, False, (1, None)), ("channels_last+bf16", "bf16", True, (1, None)),
               ("channels_last+bf16_default_layout", "bf16", True,
                inference_streams(method, "auto", "auto", cpu, "bf16")))
    for name, amp, cl, (count, chunk) in layouts:
        x = batch.contiguous(memory_format=torch.channels_last) if cl else batch
        if cl:
            method.to(memory_format=torch.channels_last)

        def one(part, amp=amp):
            with torch.no_grad(), autocast_context(cpu, amp):
                method(part)

        with ForwardStreams(count) as pool:
            def run(x=x, pool=pool, chunk=chunk):
                for part in x.split(32):
                    pool.map(one, part.split(chunk or 32))

            run()  # warm-up (oneDNN kernels)
            wall = best_ms(run, len(batch), args.reps)
        forward[name] = {"wall_ms": wall, "core_ms": wall * torch.get_num_threads(),
                         "streams": count, "chunk_size": chunk}
        method.to(memory_format=torch.contiguous_format)
    out["bare_forward"] = forward
    host = (out["decode_transform_ms"] + out["box_evaluator_ms"]["component_tree"]
            + out["score_histograms_ms"]["compiled"] + out["maps_ms"] + out["polarity_ms"])
    out["host_ms_counted"] = host
    out["evaluate_share_ceiling"] = {
        name: f["core_ms"] / (f["core_ms"] + host) for name, f in forward.items()}
    localize_host = out["decode_transform_ms"] + out["maps_ms"]
    out["localize_cli_share_ceiling"] = {
        fmt: {name: f["core_ms"] / (f["core_ms"] + localize_host + w)
              for name, f in forward.items()} for fmt, w in write_ms.items()}
    out["default_precision"] = precision_record("auto", "auto", "cpu")
    out["note"] = ("ceiling = forward core-ms / (forward core-ms + host ms counted here), i.e. "
                   "perfect overlap on all cores; every per-image step of evaluate is counted "
                   "(decode + transform, box evaluator, histograms, maps, polarity), not the "
                   "per-batch Python overhead")
    write_result("host_costs", out)
    print({k: v for k, v in out.items() if k != "note"})


if __name__ == "__main__":
    main()

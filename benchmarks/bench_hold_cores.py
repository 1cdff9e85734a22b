"""``ForwardStreams.hold_cores`` on and off, alternating in one process: img/s and process CPU
seconds of `evaluate`, `Localizer` and `wsol localize`'s worker at the default settings.

    python benchmarks/bench_hold_cores.py [--pairs 4]

While the inference streams run the next forward pass, the loops compute the previous batch's
maps in the caller's thread and decode the next batch in a prefetch thread. With the caller on
torch's default intra-op pool (two threads here), the pool's second thread spins at the end of
each of those small operations on a core that a stream needs; ``hold_cores`` runs them on one
thread for the loop. "off" replaces it with a block that changes nothing (the code before
57554d3), "on" is the engine's default. Same data and model as ``bench_pipeline.py`` (the CUB
subset's 243 test images, EfficientNet-Lite0 with its ImageNet weights and a seeded fresh
10-class head). Medians over ``--pairs``; writes benchmarks/results/hold_cores.json.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from pathlib import Path

import torch

import bench_pipeline as bp
from _common import REPO, prepare_cub, write_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--metadata", default=str(REPO / "data" / "cub10"))
    args = parser.parse_args()
    metadata = Path(args.metadata)
    if not bp.SHARED_CUB.is_dir():
        print(f"bench_hold_cores: skipped: needs {bp.SHARED_CUB}")
        return
    prepare_cub(metadata, bp.SHARED_CUB)

    from wsol.engine.build import build_from_config
    from wsol.engine.data import build_split
    from wsol.utils.streams import ForwardStreams

    config = bp.base_config(metadata, None)
    torch.manual_seed(0)
    method = build_from_config(config, num_classes=10).eval()
    _, meta, _ = build_split(config, "test", train=False, backbone=method.backbone)
    paths = [bp.SHARED_CUB / "images" / i for i in meta.image_ids]
    auto = ("auto", "auto", "auto", "auto")
    runs = {"evaluate": lambda: bp.evaluate_once(method, config, *auto)[0],
            "localize": lambda: bp.localize_once(method, paths, *auto),
            "localize_cli": lambda: bp.localize_cli_once(method, paths, *auto)}
    held = ForwardStreams.hold_cores

    def unchanged(self):
        return contextlib.nullcontext()

    rows: dict[str, dict[str, list[float]]] = {
        k: {"on": [], "off": [], "cpu_s_on": [], "cpu_s_off": []} for k in runs}
    for name, run in runs.items():  # one untimed run each (caches, lazy imports)
        run()
    for pair in range(args.pairs):
        for arm in (("off", "on") if pair % 2 == 0 else ("on", "off")):
            ForwardStreams.hold_cores = held if arm == "on" else unchanged
            for name, run in runs.items():
                c0 = time.process_time()
                rows[name][arm].append(run())
                rows[name][f"cpu_s_{arm}"].append(time.process_time() - c0)
        ForwardStreams.hold_cores = held
        print(pair, {k: {a: round(v[a][-1], 1) for a in ("off", "on")} for k, v in rows.items()},
              flush=True)
    summary = {}
    for name, r in rows.items():
        med = {k: statistics.median(v) for k, v in r.items()}
        summary[name] = {"img_per_s_median": {"off": med["off"], "on": med["on"]},
                         "speedup": med["on"] / med["off"],
                         "process_cpu_s_median": {"off": med["cpu_s_off"], "on": med["cpu_s_on"]},
                         "all": r}
    print({k: round(v["speedup"], 3) for k, v in summary.items()})
    write_result("hold_cores", {
        "what": "img/s and process CPU seconds per run (243 CUB test images), hold_cores off vs "
                "on, alternating (order flipped every pair), medians over pairs; default "
                "settings (auto: bf16 + channels_last, 2 streams x 4 here)",
        "pairs": args.pairs, "torch_threads": torch.get_num_threads(), "results": summary})


if __name__ == "__main__":
    main()

"""Forward-pass throughput by call size and streams, in one run: why ``eval.chunk_size`` and
``eval.streams`` default to what they do (wsol.utils.streams).

    python benchmarks/bench_chunks.py [--reps 3]

For EfficientNet-Lite0 and ResNet50 (fresh weights: speed does not depend on them), batches of
32 random images at 224, bf16 autocast + channels_last (the ``auto`` precision on a CPU with
native bf16), under ``no_grad``, img/s of:

- ``one_call_B``: the batch in calls of B images on torch's intra-op threads (B = 32: one call);
- ``streams_B``: the batch split into calls of B images spread over one stream per intra-op
  thread (:class:`wsol.utils.streams.ForwardStreams`), each stream on one thread.

Layouts alternate inside each repetition; best of ``--reps``. Writes
benchmarks/results/chunks.json.
"""

from __future__ import annotations

import argparse
import time

import torch

from _common import write_result

LAYOUTS = (("one_call", 32), ("one_call", 8), ("one_call", 4), ("streams", 16), ("streams", 8),
           ("streams", 4), ("streams", 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--batches", type=int, default=4, help="batches of 32 per measurement")
    args = parser.parse_args()

    from wsol.localization.pipeline import autocast_context
    from wsol.methods import build_method
    from wsol.models import create_model
    from wsol.utils.streams import ForwardStreams

    cpu = torch.device("cpu")
    results: dict[str, dict[str, float]] = {}
    with ForwardStreams(torch.get_num_threads()) as pool:
        for model in ("efficientnet_lite0", "resnet50"):
            torch.manual_seed(0)
            method = build_method("cam", create_model(model, num_classes=10)).eval()
            method.to(memory_format=torch.channels_last)
            batches = [torch.randn(32, 3, 224, 224).contiguous(memory_format=torch.channels_last)
                       for _ in range(args.batches)]

            def forward(x: torch.Tensor) -> None:
                with torch.no_grad(), autocast_context(cpu, "bf16"):
                    method(x)

            def run(kind: str, size: int) -> float:
                t0 = time.perf_counter()
                for batch in batches:
                    parts = batch.split(size)
                    if kind == "streams":
                        pool.map(forward, parts)
                    else:
                        for part in parts:
                            forward(part)
                return 32 * len(batches) / (time.perf_counter() - t0)

            run("one_call", 8)  # warm-up
            best: dict[str, float] = {}
            for _ in range(args.reps):
                for kind, size in LAYOUTS:
                    key = f"{kind}_{size}"
                    best[key] = max(best.get(key, 0.0), run(kind, size))
            results[model] = {k: round(v, 2) for k, v in best.items()}
            results[model]["best_vs_one_call_32"] = round(
                max(best.values()) / best["one_call_32"], 3)
            print(model, results[model], flush=True)
    write_result("chunks", {
        "what": "forward img/s by call size and streams, bf16 autocast + channels_last, batches "
                "of 32 at 224, no_grad; best of reps, layouts alternating",
        "streams": torch.get_num_threads(), "reps": args.reps, "batches": args.batches,
        "results": results})


if __name__ == "__main__":
    main()

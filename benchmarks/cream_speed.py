"""CREAM's cost over CAM, as ratios measured in one run (issue: EM + calibration + fusion add at
most 10% to CAM's inference time at batch 32; training with embedding updates at most 3%).

Inference: forward + GT-class map for a batch of 32 at 224, CAM vs CREAM (T=2, fused), on
EfficientNet-Lite0 (D=1280, 14x14). Training: one SGD step (forward, CE loss, backward, step)
for CAM vs the same step plus CREAM's embedding update. The two variants alternate within each
repetition so that machine load affects both alike; the ratio of medians is reported, with
EM's own time per image for T = 0..4 (the paper's Table 7 timing column).

    python benchmarks/cream_speed.py [--reps 7] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from _common import write_result

from wsol.methods import build_method
from wsol.models import create_model


def timed(fn, reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--model", default="efficientnet_lite0")
    args = parser.parse_args()
    torch.manual_seed(0)
    backbone = create_model(args.model, num_classes=200, pretrained=False)
    cam = build_method("cam", backbone).eval()
    cream = build_method("cream", backbone, iterations=2, stage="fused").eval()
    images = torch.randn(args.batch_size, 3, args.image_size, args.image_size)
    labels = torch.randint(0, 200, (args.batch_size,))

    def infer(method):
        with torch.no_grad():
            out = method(images)
            method.localization_maps(out, labels)

    for m in (cam, cream):
        infer(m)  # warm-up
    cam_t, cream_t = [], []
    for _ in range(args.reps):
        cam_t += timed(lambda: infer(cam), 1)
        cream_t += timed(lambda: infer(cream), 1)
    inf_ratio = statistics.median(cream_t) / statistics.median(cam_t)

    with torch.no_grad():
        outputs = cam(images)
    em_ms = {}
    for t in range(5):
        cream.iterations = t
        with torch.no_grad():
            em = timed(lambda: cream.localization_maps(outputs, labels), args.reps)
        em_ms[str(t)] = round(1000 * statistics.median(em) / args.batch_size, 3)
    cream.iterations = 2
    with torch.no_grad():
        cam_map = timed(lambda: cam.localization_maps(outputs, labels), args.reps)
    cam_map_ms = 1000 * statistics.median(cam_map) / args.batch_size

    cam.train()
    cream.train()
    opt = torch.optim.SGD(backbone.parameters(), lr=1e-6, momentum=0.9)

    def step(method, update: bool):
        opt.zero_grad(set_to_none=True)
        out = method(images)
        loss = method.loss(out, labels)
        loss.backward()
        opt.step()
        if update:
            method.update_state({k: v.detach() for k, v in out.items()}, labels)

    step(cam, False)
    step(cream, True)
    cam_s, cream_s = [], []
    for _ in range(max(3, args.reps // 2)):
        cam_s += timed(lambda: step(cam, False), 1)
        cream_s += timed(lambda: step(cream, True), 1)
    train_ratio = statistics.median(cream_s) / statistics.median(cam_s)

    payload = {
        "what": "CREAM overhead over CAM (ratios of medians, alternating runs)",
        "model": args.model, "batch_size": args.batch_size, "image_size": args.image_size,
        "inference": {"cam_ms_per_image": round(1000 * statistics.median(cam_t) / args.batch_size, 3),
                      "cream_ms_per_image": round(1000 * statistics.median(cream_t) / args.batch_size, 3),
                      "ratio": round(inf_ratio, 4), "target_ratio_at_most": 1.10},
        "em_map_ms_per_image_by_T": em_ms,
        "cam_map_ms_per_image": round(cam_map_ms, 4),
        "training_step": {"cam_s": round(statistics.median(cam_s), 4),
                          "cream_s": round(statistics.median(cream_s), 4),
                          "ratio": round(train_ratio, 4), "target_ratio_at_most": 1.03},
    }
    print(payload)
    write_result("cream_speed", payload)


if __name__ == "__main__":
    main()

"""``wsol demo``: the whole pipeline in a few CPU minutes, on data it makes itself.

1. generates the seeded synthetic dataset (objects whose class is told by a small part while the
   box covers the whole body: CAM's partial-activation problem in miniature);
2. trains CAM on a tiny CNN;
3. evaluates it on the test split (Top-1 Cls, Top-1 Loc, GT-known, MaxBoxAccV2, PxAP);
4. fits CREAM's context embeddings on the trained CAM (one pass, no retraining) and evaluates
   the calibrated and fused maps;
5. writes overlays of a few test images (image | CAM | CREAM with GT and predicted boxes).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

NAME = "demo"
HELP = "run the whole pipeline on a synthetic dataset (CPU, a few minutes)"


#: What `wsol demo` writes into --out; `--force` removes these and nothing else.
DEMO_MARKER = ".wsol-demo.json"
DEMO_ENTRIES = (DEMO_MARKER, "data", "run", "summary.json", "overlays.png")


def clear_demo_dir(out: Path, force: bool) -> None:
    """Refuse a non-empty ``out`` unless ``force``; with ``force`` refuse a directory that is
    not a demo output (no marker) or holds anything the demo does not write, then remove only
    the demo's own entries."""
    from wsol.errors import RunDirError

    if not (out.exists() and any(out.iterdir())):
        return
    if not force:
        raise FileExistsError(f"{out} exists and is not empty; use --force or another --out")
    if not (out / DEMO_MARKER).is_file():
        raise RunDirError(f"--force: {out} is not a wsol demo output (no {DEMO_MARKER}); "
                          "refusing to delete anything in it")
    foreign = sorted(p.name for p in out.iterdir() if p.name not in DEMO_ENTRIES)
    if foreign:
        raise RunDirError(f"--force: {out} holds entries the demo did not write "
                          f"({', '.join(foreign[:3])}); refusing to delete anything")
    for name in DEMO_ENTRIES:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="wsol-demo", help="output directory (default wsol-demo)")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="overwrite --out")
    parser.add_argument("--no-progress", action="store_true")


def demo_config(data: Path, run_dir: Path, image_size: int, epochs: int, seed: int) -> dict:
    from wsol.config import load_config

    return load_config(None, [
        f"run_dir={run_dir}", f"seed={seed}", "device=cpu",
        "model.name=tiny_cnn", "model.width=16",
        f"data.root={data / 'images'}", f"data.metadata={data / 'metadata'}",
        f"data.mask_metadata={data / 'metadata_masks'}", f"data.mask_root={data / 'masks'}",
        "data.test_splits=[test, 'masks:test']",
        f"data.resize_size={image_size + image_size // 8}", f"data.crop_size={image_size}",
        f"data.image_size={image_size}", "data.batch_size=32", "data.eval_batch_size=64",
        "data.num_workers=0", f"data.class_names={data / 'class_names.txt'}",
        "optim.lr=0.02", f"optim.epochs={epochs}", f"optim.lr_decay_every={max(1, epochs * 2 // 3)}",
        "optim.weight_decay=0.0005", "eval.cam_curve_interval=0.01",
    ])


def _row(name: str, res: dict) -> str:
    keys = ("top1_cls", "top1_loc", "gt_known_loc", "MaxBoxAccV2", "PxAP")
    return f"{name:<16}" + "".join(f"{res.get(k, float('nan')):>14.2f}" for k in keys)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from wsol.data.synthetic import make_synthetic
    from wsol.engine.checkpoint import load_method, save_checkpoint
    from wsol.engine.data import build_split
    from wsol.engine.evaluate import make_eval_loader
    from wsol.engine.train import evaluate_split, train
    from wsol.localization.pipeline import localize
    from wsol.methods.cream import CREAM, fit_embeddings
    from wsol.viz._figure import save_png
    from wsol.viz.grid import plot_method_grid

    out = Path(args.out)
    clear_demo_dir(out, args.force)
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_MARKER).write_text(json.dumps({"format": "wsol-demo"}) + "\n")
    data, run_dir = out / "data", out / "run"
    print(f"[1/5] synthetic dataset -> {data}")
    make_synthetic(data, image_size=args.image_size, seed=args.seed)
    names = [line.split(",", 1)[1] for line in (data / "classes.txt").read_text().splitlines()
             if line.strip()]
    (data / "class_names.txt").write_text("\n".join(names) + "\n")

    print(f"[2/5] training CAM (tiny_cnn, {args.epochs} epochs) -> {run_dir}")
    config = demo_config(data, run_dir, args.image_size, args.epochs, args.seed)
    result = train(config, progress=not args.no_progress)
    cam_res = result["splits"]["test"]
    cam_res["PxAP"] = result["splits"]["masks:test"]["PxAP"]

    print("[3/5] fitting CREAM's context embeddings on the trained CAM (no retraining)")
    cam_method, info = load_method(run_dir / "checkpoints" / "best.pt")
    torch.manual_seed(args.seed)
    # EM on unit features (feature_normalization="l2"): the setting the CUB benchmark chose on val.
    cream = CREAM.from_cam(cam_method, feature_normalization="l2", iterations=3)
    train_set, _, _ = build_split(info["config"], "train", train=False, backbone=cream.backbone)
    with torch.no_grad():
        fit_embeddings(cream, make_eval_loader(train_set, 64), "cpu",
                       progress=not args.no_progress)
    cream_config = {**info["config"], "method": {"name": "cream", "feature_normalization": "l2",
                                                 "iterations": 3}}
    save_checkpoint(run_dir / "cream.pt", cream, config=cream_config,
                    class_names=info["class_names"], epoch=info["epoch"])

    print("[4/5] evaluating CREAM on the test split")
    rows = [("CAM", cam_res)]
    for stage in ("calibrated", "fused"):
        cream.stage = stage
        res = evaluate_split(cream, cream_config, "test", torch.device("cpu"), cream.backbone)
        res["PxAP"] = evaluate_split(cream, cream_config, "masks:test", torch.device("cpu"),
                                     cream.backbone)["PxAP"]
        rows.append((f"CREAM {stage}", res))
    summary = {name: {k: res[k] for k in ("top1_cls", "top1_loc", "gt_known_loc",
                                          "MaxBoxAccV2", "PxAP") if k in res}
               for name, res in rows}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    print(f"[5/5] overlays -> {out / 'overlays.png'}")
    test_set, test_meta, _ = build_split(info["config"], "test", train=False,
                                         backbone=cream.backbone)
    picks = list(range(0, len(test_set), max(1, len(test_set) // 6)))[:6]
    images = torch.stack([test_set[i]["image"] for i in picks])
    labels = torch.tensor([test_set[i]["label"] for i in picks])
    raw_images = []
    for i in picks:
        from wsol.data.transforms import load_image

        img = load_image(test_set.image_path(i)).resize((args.image_size, args.image_size))
        raw_images.append(np.asarray(img))
    maps, boxes = {}, {}
    cream.stage = "fused"
    for name, method in (("CAM", cam_method), ("CREAM", cream)):
        loc = localize(method, images, labels)
        maps[name] = list(loc.maps.cpu().numpy())
        boxes[name] = [[b] for b in loc.boxes.cpu().tolist()]
    s = args.image_size
    gts = []
    for i in picks:
        image_id = test_set.image_ids[i]
        w, h = test_meta.image_sizes[image_id]
        gts.append([[x0 * s / w, y0 * s / h, x1 * s / w, y1 * s / h]
                    for x0, y0, x1, y1 in test_meta.boxes[image_id]])
    fig = plot_method_grid(raw_images, maps, gt_boxes=gts, pred_boxes=boxes,
                           row_titles=[names[int(lbl)] for lbl in labels])
    save_png(fig, out / "overlays.png")

    header = f"{'':<16}" + "".join(f"{k:>14}" for k in ("Top-1 Cls", "Top-1 Loc", "GT-known",
                                                         "MaxBoxAccV2", "PxAP"))
    print("\n" + header)
    for name, res in rows:
        print(_row(name, res))
    print(f"\nrun directory: {run_dir}\nsummary: {out / 'summary.json'}\n"
          f"overlays: {out / 'overlays.png'}")
    return 0

"""The method zoo with and without CREAM on the real CUB subset (paper Table 1 / Fig. 6 analogue).

    python benchmarks/cub_zoo.py [--methods cam,has,acol,spg,adl,cutmix] [--epochs N]
                                 [--max-steps S] [--runs-dir runs/cub10-zoo] [--plot-only]

For each method (EfficientNet-Lite0, ImageNet weights, the CAM baseline's CPU budget and
selection: ``configs/{method}_efficientnet_lite0_cub10.yaml``, for CAM
``configs/cream_efficientnet_lite0_cub10.yaml`` as in ``cub_subset.py``):

1. Trains once with CREAM's embeddings learned on the side (``cream: true``; CREAM never changes
   the method's weights, tests/test_cream_zoo.py), selecting the epoch on val by the MaxBoxAccV2
   of the method's own map (``method.stage=cam``), exactly as the CAM baseline.
2. Evaluates the selected checkpoint on the 243 test images three times with ``wsol evaluate``:
   ``plain`` (stage cam: the method's own map), ``cream_calibrated`` and ``cream_fused``. CREAM's
   inference settings are the ones ``cub_subset.py`` chose on val for CAM (T = 3, tau = 0.3,
   M-step on unit features; ``--cream-settings paper`` uses T = 2, tau = 0.2, raw features); they
   are applied to every method unchanged, not re-selected per method.
3. Writes ``benchmarks/results/cub10_zoo.json``: ``{"methods": {NAME: {"plain": {...},
   "cream_fused": {...}, "cream_calibrated": {...}, "training": {...}}}}`` with MaxBoxAccV2,
   MaxBoxAcc, top1_loc, gt_known_loc, top1_cls, max_box_acc_by_iou and the BoxAcc-vs-threshold
   curve at IoU 50, plus command, commit and machine; and the Fig. 6 analogue
   ``benchmarks/results/cub10_zoo_fig6.png`` (BoxAcc vs threshold at IoU 50 for CAM, HaS, SPG,
   plain solid and +CREAM dashed).

Resumable: a method already in the JSON with the same budget is skipped; a run directory with a
``last.pt`` but no ``results.json`` is resumed. ``--epochs`` / ``--max-steps`` shrink the budget
for smoke tests (the JSON records the budget; a smoke result is not the benchmark).
``--last-epoch`` also evaluates each run's ``last.pt`` (plain and CREAM calibrated) into
``"last_epoch"``: a diagnostic of the val selection, not the benchmark.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

from _common import FP32, REPO, RESULTS, git_commit, write_result

SHARED_CUB = REPO.parent / "shared" / "data" / "CUB_200_2011-classes001-010"
METHODS = ("cam", "has", "acol", "spg", "adl", "cutmix")
KEYS = ("MaxBoxAccV2", "MaxBoxAcc", "top1_loc", "gt_known_loc", "top1_cls", "top5_cls",
        "max_box_acc_by_iou")
STAGES = {"plain": "cam", "cream_calibrated": "calibrated", "cream_fused": "fused"}
CREAM_SETTINGS = {
    "chosen": ["method.iterations=3", "method.tau=0.3", "method.feature_normalization=l2"],
    "paper": ["method.iterations=2", "method.tau=0.2", "method.feature_normalization=none"],
}
FIG6_METHODS = ("cam", "has", "spg")
NAME = "cub10_zoo"


def config_for(method: str) -> Path:
    name = "cream" if method == "cam" else method
    return REPO / "configs" / f"{name}_efficientnet_lite0_cub10.yaml"


def wsol(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "wsol", *args], cwd=REPO, check=True)


def data_args(metadata: Path) -> list[str]:
    return [f"data.metadata={metadata}", f"data.root={SHARED_CUB / 'images'}"]


def budget_args(epochs: int | None, max_steps: int | None) -> list[str]:
    out = []
    if epochs is not None:
        out.append(f"optim.epochs={epochs}")
    if max_steps is not None:
        out.append(f"train.max_steps_per_epoch={max_steps}")
    return out


def train(method: str, run_dir: Path, metadata: Path, budget: list[str]) -> dict:
    """Train (or resume, or reuse) one run; returns its training summary."""
    t0 = time.time()
    if not (run_dir / "results.json").is_file():
        cmd = ["train", "--config", str(config_for(method)), "--run-dir", str(run_dir),
               "--no-progress", "method.stage=cam", *data_args(metadata), *budget, *FP32]
        if (run_dir / "checkpoints" / "last.pt").is_file():
            cmd = ["train", "--run-dir", str(run_dir), "--resume", "--no-progress"]
        wsol(*cmd)
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    return {"epochs": len(rows),
            "epoch_time_s": [float(r["epoch_time_s"]) for r in rows if r.get("epoch_time_s")],
            "val_MaxBoxAccV2_by_epoch": [float(r.get("val_MaxBoxAccV2") or "nan") for r in rows],
            "wall_time_s_this_call": round(time.time() - t0, 1)}


def evaluate(run_dir: Path, metadata: Path, stage: str, settings: list[str],
             checkpoint: str = "best") -> dict:
    out = run_dir / "eval" / (f"zoo-test-{stage}.json" if checkpoint == "best"
                              else f"zoo-test-{checkpoint}-{stage}.json")
    wsol("evaluate", "--checkpoint", str(run_dir / "checkpoints" / f"{checkpoint}.pt"),
         "--split", "test",
         "--output", str(out), "--force", "--no-progress", f"method.stage={stage}",
         *(settings if stage != "cam" else []), *data_args(metadata))
    res = json.loads(out.read_text())
    summary = {k: res[k] for k in KEYS if k in res}
    curves = res.get("box_acc_curves", {})
    summary["box_acc_curve_iou50"] = curves.get("50") or curves.get(50)
    summary["cam_curve_interval"] = res.get("settings", {}).get("cam_curve_interval")
    return summary


def plot_fig6(results: dict, path: Path) -> Path | None:
    """BoxAcc vs threshold at IoU 50: plain solid, + CREAM (calibrated) dashed."""
    import numpy as np

    from wsol.viz._figure import new_figure, save_png

    methods = [m for m in FIG6_METHODS if "plain" in results.get(m, {})]
    if not methods:
        return None
    fig = new_figure(7.0, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    colors = {"cam": "tab:blue", "has": "tab:orange", "spg": "tab:green"}
    for m in methods:
        for key, style, label in (("plain", "-", m.upper()),
                                  ("cream_calibrated", "--", f"{m.upper()} + CREAM")):
            curve = results[m][key].get("box_acc_curve_iou50")
            if not curve:
                continue
            thr = np.arange(len(curve)) * (results[m][key].get("cam_curve_interval") or 0.001)
            ax.plot(thr, curve, style, color=colors.get(m), label=label, linewidth=1.6)
    ax.set_xlabel("CAM threshold")
    ax.set_ylabel("BoxAcc at IoU 50 (%)")
    ax.set_ylim(0, 100)
    ax.set_title("CUB subset test (243 images), EfficientNet-Lite0")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    return save_png(fig, path)


def write(name: str, cream_settings: str, results: dict) -> None:
    write_result(name, {
        "what": "wsolevaluation zoo + CREAM on the CUB subset (EfficientNet-Lite0, ImageNet "
                "weights, CAM baseline budget, selection on val by the method's own map)",
        "cream_inference_overrides": CREAM_SETTINGS[cream_settings],
        "methods": results})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=",".join(METHODS),
                        help="comma-separated subset of " + ",".join(METHODS))
    parser.add_argument("--epochs", type=int, default=None, help="override optim.epochs (smoke)")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="train.max_steps_per_epoch (smoke)")
    parser.add_argument("--runs-dir", default=str(REPO / "runs" / "cub10-zoo"))
    parser.add_argument("--metadata", default=str(REPO / "data" / "cub10"))
    parser.add_argument("--cream-settings", choices=sorted(CREAM_SETTINGS), default="chosen")
    parser.add_argument("--name", default=NAME, help="results file name (benchmarks/results/)")
    parser.add_argument("--plot-only", action="store_true", help="only redraw the PNG")
    parser.add_argument("--last-epoch", action="store_true",
                        help="also evaluate each run's last.pt (plain and CREAM calibrated)")
    args = parser.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"--methods: unknown {unknown}; choose from {', '.join(METHODS)}")
    path = RESULTS / f"{args.name}.json"
    previous = json.loads(path.read_text()) if path.is_file() else {}
    results: dict = dict(previous.get("methods", {}))
    for entry in results.values():        # entries written before per-method commits existed
        entry.setdefault("commit", previous.get("commit"))
    png = RESULTS / f"{args.name}_fig6.png"
    if args.plot_only:
        print(f"wrote {plot_fig6(results, png)}")
        return
    metadata = Path(args.metadata)
    if not (metadata / "train").is_dir():
        wsol("prepare", "cub", "--root", str(SHARED_CUB), "--out", str(metadata))
    budget = budget_args(args.epochs, args.max_steps)
    budget_key = {"epochs": args.epochs, "max_steps_per_epoch": args.max_steps,
                  "cream_settings": args.cream_settings}
    for method in methods:
        done = results.get(method, {})
        if done.get("budget") == budget_key and "failed" not in done:
            print(f"{method}: already in {path}, skipped")
            continue
        run_dir = Path(args.runs_dir) / method
        t0 = time.time()
        entry = {"config": str(config_for(method).relative_to(REPO)), "budget": budget_key,
                 "commit": git_commit()}
        try:
            entry["training"] = train(method, run_dir, metadata, budget)
        except subprocess.CalledProcessError as err:   # e.g. a diverged training: go on
            print(f"{method}: training failed ({err}); see {run_dir}", flush=True)
            results[method] = {**entry, "failed": f"wsol train exited with {err.returncode}",
                               "run_dir": str(run_dir)}
            write(args.name, args.cream_settings, results)
            continue
        for key, stage in STAGES.items():
            entry[key] = evaluate(run_dir, metadata, stage, CREAM_SETTINGS[args.cream_settings])
        entry["wall_time_s"] = round(time.time() - t0, 1)
        results[method] = entry
        print(f"{method}: MaxBoxAccV2 plain {entry['plain']['MaxBoxAccV2']:.1f}, "
              f"+CREAM calibrated {entry['cream_calibrated']['MaxBoxAccV2']:.1f}, "
              f"fused {entry['cream_fused']['MaxBoxAccV2']:.1f}", flush=True)
        write(args.name, args.cream_settings, results)
    if args.last_epoch:
        # Diagnostic, not the benchmark: the last epoch's checkpoint, plain and + CREAM
        # calibrated (shows what val selection hides when it picks an early epoch).
        for method in methods:
            entry = results.get(method, {})
            run_dir = Path(args.runs_dir) / method
            if "plain" not in entry or "last_epoch" in entry:
                continue
            if not (run_dir / "checkpoints" / "last.pt").is_file():
                continue
            entry["last_epoch"] = {
                key: evaluate(run_dir, metadata, STAGES[key],
                              CREAM_SETTINGS[args.cream_settings], checkpoint="last")
                for key in ("plain", "cream_calibrated")}
            write(args.name, args.cream_settings, results)
    print(f"wrote {plot_fig6(results, png)}")


if __name__ == "__main__":
    main()

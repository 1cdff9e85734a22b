"""Time wsol's box evaluator against the real reference, clovaai/wsolevaluation, run unmodified.

On the 120 parity maps of ``../shared/fixtures/metric-parity/boxes`` (224x224, float64 as the
reference requires) at cam_curve_interval 0.001 (1000 thresholds), all contours (MaxBoxAccV2):

- in-process, one thread: alternating every ``--chunk`` (32) images, wsolevaluation's
  ``BoxEvaluator.accumulate(scoremap, image_id)`` on each image (its only API), wsol's
  ``BoxAccumulator(num_threads=1).update`` on the chunk as one batch (as ``evaluate`` and
  ``evaluate-maps`` call it)
  (which counts v1 and v2 in the same pass, from one component tree per map when the compiled
  helper is built) and the same with ``component_tree=False`` (every level traced with OpenCV,
  the path of an install without a C compiler); all in this process, CPU time and wall time per
  image, several rounds (the median round is reported); and the same alternating every single
  image (each call then starts on caches the other two just used);
- thread scaling: ``BoxAccumulator(num_threads=N)`` over the 120 maps in batches of 32, wall
  time, N alternating;
- whole process: ``python -m wsol evaluate-maps`` on the maps saved as ``.npy`` vs the
  reference's own entry ``evaluation.evaluate_wsol`` (its DataLoader, 4 workers) in a fresh
  interpreter, alternating; plus whether ours imported torch (it should not).

Counts must be identical: the reference's ``num_correct`` equals ours and reference.json, for v2
and v1, and the component tree's equal the OpenCV path's. The reference needs NumPy's removed aliases (``np.float``, ``np.int``, ...): they are
restored by setting them on the numpy module before its import; its modules import torchvision
and munch, which the evaluation never uses: absent ones are replaced by empty stand-ins (the
JSON records which). Nothing of the reference is copied into this repository.

    git clone https://github.com/clovaai/wsolevaluation /tmp/wsolevaluation
    flock /tmp/wsol-heavy.lock python benchmarks/bench_evaluator.py --reference /tmp/wsolevaluation

(``--reference`` defaults to ``$WSOL_REFERENCE_EVALUATION``; without it the script says so and
exits.) Writes ``benchmarks/results/evaluator.json``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import types
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from _common import write_result

from wsol.data.metadata import read_metadata
from wsol.localization import leveltree
from wsol.metrics import BoxAccumulator
from wsol.metrics.boxes import V1, V2
from wsol.metrics.evaluator import gt_boxes_in_eval_geometry

IOUS = [30, 50, 70]

# Run before the reference is imported, in this process and in the whole-process runner.
REFERENCE_SHIMS = '''
import sys, types
import numpy as np
for _name, _value in (("float", float), ("int", int), ("bool", bool), ("object", object),
                      ("str", str), ("complex", complex)):
    if _name not in np.__dict__:  # removed in NumPy 1.24; the reference uses them
        setattr(np, _name, _value)
STUBBED = []
try:
    import torchvision  # noqa: F401  (data_loaders imports transforms; evaluation never uses it)
except ImportError:
    _tv = types.ModuleType("torchvision")
    _tv.transforms = types.ModuleType("torchvision.transforms")
    sys.modules["torchvision"] = _tv
    sys.modules["torchvision.transforms"] = _tv.transforms
    STUBBED.append("torchvision")
try:
    import munch  # noqa: F401  (configure_metadata returns a munch.Munch of paths)
except ImportError:
    class _Munch(dict):
        __getattr__ = dict.__getitem__

        def __setattr__(self, key, value):
            self[key] = value
    sys.modules["munch"] = types.SimpleNamespace(Munch=_Munch)
    STUBBED.append("munch (a dict with attribute access)")
'''


def load_reference(path: Path) -> tuple[types.ModuleType, list[str]]:
    """Import wsolevaluation's ``evaluation`` module from ``path``, unmodified."""
    namespace: dict = {}
    exec(REFERENCE_SHIMS, namespace)  # noqa: S102  (our own shim code, above)
    sys.path.insert(0, str(path))
    return importlib.import_module("evaluation"), namespace["STUBBED"]


def _commit_of(path: Path) -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True,
                              text=True, check=True).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


def in_process(ref, meta_ref, ids, maps, gts, thresholds, rounds, chunk):
    """Alternating, one chunk of ``chunk`` images at a time: the reference accumulates them one
    by one (its only API), ours (component tree when built) and ours tracing every level with
    OpenCV each take the chunk as one batch, as their evaluation loops do. ``chunk=1`` is the
    per-image alternation (every call starts with caches the others have just used)."""
    rows = []
    tree = leveltree.available()
    stack = np.stack([maps[i] for i in ids])
    for _ in range(rounds):
        evaluator = ref.BoxEvaluator(metadata=meta_ref, dataset_name="CUB", split="test",
                                     cam_threshold_list=list(thresholds),
                                     iou_threshold_list=IOUS, mask_root="",
                                     multi_contour_eval=True)
        ours = BoxAccumulator(thresholds, IOUS, multi_contour=True, num_threads=1)
        traced = BoxAccumulator(thresholds, IOUS, multi_contour=True, num_threads=1,
                                component_tree=False)
        names = ["ref", "ours", "ours_opencv"]
        t = {f"{k}_{c}": 0.0 for k in names for c in ("cpu", "wall")}
        for lo in range(0, len(ids), chunk):
            part = ids[lo:lo + chunk]
            batch, boxes = stack[lo:lo + chunk], [gts[i] for i in part]

            def reference_chunk():
                for image_id in part:
                    evaluator.accumulate(maps[image_id], image_id)

            for name, step in (("ref", reference_chunk),
                               ("ours", lambda: ours.update(batch, boxes)),
                               ("ours_opencv", lambda: traced.update(batch, boxes))):
                cpu, wall = time.process_time(), time.perf_counter()
                step()
                t[f"{name}_cpu"] += time.process_time() - cpu
                t[f"{name}_wall"] += time.perf_counter() - wall
        rows.append({k: 1000 * v / len(ids) for k, v in t.items()})
    counts_ref = {d: evaluator.num_correct[d].astype(np.int64).tolist() for d in IOUS}
    counts_ours = {d: ours.num_correct[V2, i].tolist() for i, d in enumerate(IOUS)}
    same_paths = bool(np.array_equal(ours.num_correct, traced.num_correct))
    return rows, counts_ref, counts_ours, ours, same_paths, tree


def fallback_levels(ids, maps, gts, thresholds) -> dict:
    """How many of the maps' distinct non-empty binarizations the component tree settles, and
    how many it leaves to OpenCV (its v1 candidates disagree about an IoU cut)."""
    from wsol.localization.boxes import distinct_levels

    cuts = np.asarray(IOUS) / 100
    nonempty = traced = 0
    for image_id in ids:
        img = (maps[image_id] * 255).astype(np.uint8)
        levels, _ = distinct_levels(img, thresholds)
        _, _, count, _, v1_max, v1_min = leveltree.component_ious(img, levels, gts[image_id])
        open_ = (count > 0) & ((v1_min[:, None] >= cuts) != (v1_max[:, None] >= cuts)).any(1)
        nonempty += int((count > 0).sum())
        traced += int(open_.sum())
    return {"distinct_nonempty_levels": nonempty, "levels_traced_by_opencv": traced}


def _summary(rows, note):
    median = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    return median, {
        "ms_per_image_median": median,
        "rounds": rows,
        "speedup_cpu": median["ref_cpu"] / median["ours_cpu"],
        "speedup_wall": median["ref_wall"] / median["ours_wall"],
        "speedup_cpu_opencv_path": median["ref_cpu"] / median["ours_opencv_cpu"],
        "note": note,
    }


def v1_counts(ref, meta_ref, ids, maps, thresholds):
    evaluator = ref.BoxEvaluator(metadata=meta_ref, dataset_name="CUB", split="test",
                                 cam_threshold_list=list(thresholds), iou_threshold_list=IOUS,
                                 mask_root="", multi_contour_eval=False)
    for image_id in ids:
        evaluator.accumulate(maps[image_id], image_id)
    return {d: evaluator.num_correct[d].astype(np.int64).tolist() for d in IOUS}


def thread_scaling(ids, maps, gts, thresholds, threads, rounds):
    stack = np.stack([maps[i] for i in ids])
    boxes = [gts[i] for i in ids]
    walls: dict[int, list[float]] = {n: [] for n in threads}
    results = {}
    for _ in range(rounds):
        for n in threads:
            wall = time.perf_counter()
            acc = BoxAccumulator(thresholds, IOUS, num_threads=n)
            for lo in range(0, len(ids), 32):
                acc.update(stack[lo:lo + 32], boxes[lo:lo + 32])
            flat = acc.to_array()  # waits for the pool
            walls[n].append(1000 * (time.perf_counter() - wall) / len(ids))
            acc.close()
            results[n] = flat
    identical = all(np.array_equal(results[n], results[threads[0]]) for n in threads)
    return {str(n): statistics.median(w) for n, w in walls.items()}, walls, identical


def whole_process(reference, maps_dir, split_dir, ref_metadata_root, workdir, interval, rounds):
    ours_cmd = [sys.executable, "-m", "wsol", "evaluate-maps", "--scoremap-root", str(maps_dir),
                "--metadata-root", str(split_dir), "--cam-curve-interval", str(interval),
                "--output", str(workdir / "ours.json"), "--force"]
    runner = workdir / "run_reference.py"
    runner.write_text(REFERENCE_SHIMS + textwrap.dedent(f'''
        sys.path.insert(0, {str(reference)!r})
        import evaluation
        evaluation.evaluate_wsol(scoremap_root={str(maps_dir) + "/"!r},
                                 metadata_root={str(ref_metadata_root)!r}, mask_root="",
                                 dataset_name="CUB", split="test", multi_contour_eval=True,
                                 multi_iou_eval=True, iou_threshold_list=[30, 50, 70],
                                 cam_curve_interval={interval!r})
    '''))
    ref_cmd = [sys.executable, str(runner)]
    walls: dict[str, list[float]] = {"ours": [], "reference": []}
    outputs = {}
    for _ in range(rounds):
        for name, cmd in (("ours", ours_cmd), ("reference", ref_cmd)):
            wall = time.perf_counter()
            proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
            walls[name].append(time.perf_counter() - wall)
            if proc.returncode != 0:
                raise SystemExit(f"{name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
            outputs[name] = proc.stdout
    # The same command in-process, once, to record whether it imported torch.
    probe = subprocess.run([sys.executable, "-c", "import sys; from wsol.cli import main;"
                            f" code = main({ours_cmd[3:]!r}); print('torch' in sys.modules)"],
                           cwd=REPO, capture_output=True, text=True, check=True)
    ref_value = float(outputs["reference"].strip().splitlines()[-1].split(":")[-1])
    ours_value = json.loads((workdir / "ours.json").read_text())["MaxBoxAccV2"]
    return {
        "commands": {"ours": " ".join(ours_cmd[1:]),
                     "reference": "evaluation.evaluate_wsol(...) via " + runner.name},
        "seconds_median": {k: statistics.median(v) for k, v in walls.items()},
        "seconds_all": walls,
        "speedup": statistics.median(walls["reference"]) / statistics.median(walls["ours"]),
        "ours_imported_torch": probe.stdout.strip().splitlines()[-1] == "True",
        "MaxBoxAccV2": {"ours": ours_value, "reference": ref_value},
        "same_MaxBoxAccV2": abs(ours_value - ref_value) < 1e-9,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", default=os.environ.get("WSOL_REFERENCE_EVALUATION"),
                        help="a clovaai/wsolevaluation checkout (default"
                             " $WSOL_REFERENCE_EVALUATION)")
    parser.add_argument("--reference-commit", default=None,
                        help="the reference's commit, when DIR is not a git checkout")
    parser.add_argument("--fixtures", default=str(REPO.parent / "shared" / "fixtures"
                                                  / "metric-parity" / "boxes"))
    parser.add_argument("--interval", type=float, default=0.001)
    parser.add_argument("--rounds", type=int, default=3, help="in-process rounds (median)")
    parser.add_argument("--process-rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--chunk", type=int, default=32,
                        help="images per alternation step of the in-process comparison")
    args = parser.parse_args(argv)

    if not args.reference or not (Path(args.reference) / "evaluation.py").is_file():
        print("bench_evaluator: skipped: the reference evaluator is needed; clone"
              " https://github.com/clovaai/wsolevaluation and pass --reference DIR (or set"
              f" WSOL_REFERENCE_EVALUATION); got {args.reference!r}")
        return 0
    reference = Path(args.reference).resolve()
    root = Path(args.fixtures)
    if not (root / "scoremaps.npz").is_file():
        print(f"bench_evaluator: skipped: no parity fixtures at {root}")
        return 0
    ref, stubbed = load_reference(reference)
    split_dir = root / "metadata" / "test"
    meta = read_metadata(split_dir)
    ids = list(meta.image_ids)
    with np.load(root / "scoremaps.npz") as npz:
        maps = {i: npz[i].astype(np.float64) for i in ids}  # the reference requires np.float
    gts = gt_boxes_in_eval_geometry(meta)
    meta_ref = ref.configure_metadata(str(split_dir))
    thresholds = np.arange(0, 1, args.interval)
    cv2.setNumThreads(1)  # findContours is single-threaded; keep the comparison one-threaded
    load_before = os.getloadavg()

    rows, counts_ref, counts_ours, ours, same_paths, tree = in_process(
        ref, meta_ref, ids, maps, gts, thresholds, args.rounds, args.chunk)
    rows_1, _, counts_1, _, same_1, _ = in_process(ref, meta_ref, ids, maps, gts, thresholds,
                                                   args.rounds, 1)
    v1_ref = v1_counts(ref, meta_ref, ids, maps, thresholds)
    v1_ours = {d: ours.num_correct[V1, i].tolist() for i, d in enumerate(IOUS)}
    expected = json.loads((root / "reference.json").read_text())["results"]
    stored = {bool(r["multi_contour_eval"]): r["num_correct"] for r in expected
              if r["cam_curve_interval"] == args.interval}
    parity = {
        "component_tree_equals_opencv_path_v1_and_v2": same_paths and same_1,
        "v2_ours_equals_reference_run": counts_ours == counts_ref == counts_1,
        "v1_ours_equals_reference_run": v1_ours == v1_ref,
        "v2_equals_reference_json": (True in stored and all(
            counts_ours[d] == stored[True][str(d)] for d in IOUS)),
        "v1_equals_reference_json": (False in stored and all(
            v1_ours[d] == stored[False][str(d)] for d in IOUS)),
    }
    note = ("one process, one thread; ours counts v1 and v2 together; 'ours' uses the component"
            " tree (wsol.localization.leveltree) when built, 'ours_opencv' traces every level with"
            " cv2.findContours; the reference accumulates image by image, its only API")
    median, in_chunks = _summary(rows, f"alternating every {args.chunk} images, ours as one batch"
                                 " (as the evaluation loops call it); " + note)
    median_1, per_image = _summary(rows_1, "alternating every image (each call finds caches the"
                                   " others just used); " + note)
    scaling, scaling_all, scaling_identical = thread_scaling(ids, maps, gts, thresholds,
                                                            args.threads, args.rounds)
    cv2.setNumThreads(-1)
    with tempfile.TemporaryDirectory(prefix="wsol-bench-evaluator-") as tmp:
        work = Path(tmp)
        maps_dir = work / "maps"
        for image_id in ids:
            path = maps_dir / f"{image_id}.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, maps[image_id])
        (work / "meta" / "CUB").mkdir(parents=True)
        (work / "meta" / "CUB" / "test").symlink_to(split_dir.resolve())
        process = whole_process(reference, maps_dir, split_dir, work / "meta", work,
                                args.interval, args.process_rounds)
    one = scaling[str(args.threads[0])]
    payload = {
        "reference": {"repository": "https://github.com/clovaai/wsolevaluation",
                      "commit": _commit_of(reference) or args.reference_commit, "stand_ins_for_unused_imports": stubbed,
                      "numpy_aliases_restored": ["float", "int", "bool", "object", "str",
                                                 "complex"]},
        "setting": {"images": len(ids), "map_size": [224, 224], "dtype": "float64",
                    "cam_curve_interval": args.interval, "thresholds": len(thresholds),
                    "iou_thresholds": IOUS, "multi_contour": True,
                    "fixtures": "shared/fixtures/metric-parity/boxes"},
        "load_average": {"before": [round(x, 2) for x in load_before],
                         "after": [round(x, 2) for x in os.getloadavg()]},
        "in_process_one_thread": {**in_chunks, "chunk": args.chunk,
                                   "component_tree_built": tree,
                                   **(fallback_levels(ids, maps, gts, thresholds) if tree
                                      else {})},
        "in_process_one_thread_per_image": per_image,
        "thread_scaling": {
            "ms_per_image_wall_median": scaling,
            "all": {str(k): v for k, v in scaling_all.items()},
            "speedup_vs_reference_wall": {n: median["ref_wall"] / v for n, v in scaling.items()},
            "scaling_vs_one_thread": {n: one / v for n, v in scaling.items()},
            "identical_counts": scaling_identical,
        },
        "whole_process": process,
        "parity": parity,
    }
    write_result("evaluator", payload)
    print(f"in-process per image: reference {median_1['ref_cpu']:.2f} ms/image CPU, ours"
          f" {median_1['ours_cpu']:.2f}: {per_image['speedup_cpu']:.1f}x")
    print(f"in-process, one thread, chunks of {args.chunk}: reference {median['ref_cpu']:.2f}"
          " ms/image CPU, ours"
          f" {median['ours_cpu']:.2f}: {payload['in_process_one_thread']['speedup_cpu']:.1f}x"
          f" CPU ({payload['in_process_one_thread']['speedup_wall']:.1f}x wall); OpenCV path"
          f" {median['ours_opencv_cpu']:.2f} ms/image")
    for n, v in scaling.items():
        print(f"{n} thread(s): {v:.2f} ms/image wall,"
              f" {payload['thread_scaling']['speedup_vs_reference_wall'][n]:.1f}x the reference")
    print(f"whole process: ours {process['seconds_median']['ours']:.2f} s, reference"
          f" {process['seconds_median']['reference']:.2f} s: {process['speedup']:.1f}x"
          f" (torch imported: {process['ours_imported_torch']})")
    print(f"parity: {parity}")
    ok = all(parity.values()) and scaling_identical and process["same_MaxBoxAccV2"]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

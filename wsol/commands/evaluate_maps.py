"""``wsol evaluate-maps``: the wsolevaluation protocol on score maps saved as ``.npy`` files.

Reads ``<scoremap-root>/<image_id>.npy`` for every image id of the split (the wsolevaluation
layout: the image id keeps its sub-directories and extension, e.g. ``test/c00/img_0000.jpg.npy``),
each a ``(S, S)`` float32 or float64 map with values in [0, 1], evaluated in its stored dtype as
the reference does. ``--metadata-root`` is the split directory holding ``image_ids.txt``,
``class_labels.txt``, ``image_sizes.txt`` and ``localization.txt``; a directory with a ``test/``
sub-directory (a dataset's metadata root) means its ``test`` split.

Box splits give ``MaxBoxAccV2`` (all contours), ``MaxBoxAcc`` (largest contour, IoU 50), and per IoU
threshold ``max_box_acc_by_iou``, ``box_acc_curves`` (% per threshold) and
``best_threshold_by_iou`` in the chosen contour mode (``--largest-contour``: v1). Mask splits
(``--mask-root``) give ``PxAP``, ``pIoU`` and ``pr_curve``. ``--predictions`` (CSV
``image_id,top1[,top2..top5]``, class ids) adds Top-1 / Top-5 Loc and classification accuracy.

Every map is checked (present, a plain ``.npy`` file, shape ``S x S``, float32/float64, no NaN,
values in [0, 1]); the ``.npy`` header is read and checked before any data, so an ``.npz``
archive or a pickle saved under a ``.npy`` name, an object array, or a header announcing a huge
or wrong shape is refused without being loaded (``np.load(allow_pickle=False)`` reads the rest).
Any problem is reported with its image id and file and nothing is written. An existing
``--output`` is only replaced with ``--force``; the JSON is written atomically.

Speed: the maps are read by a pool of threads (``--io-threads``) a bounded window ahead of the
evaluation, and the boxes are traced by the evaluator's own pool (``--threads``). The command
imports neither torch nor the models (see ``python -X importtime -m wsol evaluate-maps``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

NAME = "evaluate-maps"
HELP = "evaluate saved score maps (<root>/<image_id>.npy) with the wsolevaluation protocol"

BATCH = 64
MAX_LISTED = 10
#: Maps read ahead of the evaluation, per I/O thread (bounds the memory held).
READ_AHEAD = 32


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scoremap-root", required=True, metavar="DIR",
                        help="directory of <image_id>.npy score maps")
    parser.add_argument("--metadata-root", required=True, metavar="DIR",
                        help="split directory (image_ids.txt, ...), or a directory with a"
                             " test/ split")
    parser.add_argument("--mask-root", metavar="DIR", help="root of the mask PNGs (mask splits)")
    parser.add_argument("--cam-curve-interval", type=float, default=0.01,
                        help="threshold sweep np.arange(0, 1, interval) (default 0.01)")
    parser.add_argument("--iou-thresholds", type=int, nargs="+", default=[30, 50, 70],
                        metavar="DELTA", help="IoU thresholds in %% (default 30 50 70)")
    parser.add_argument("--largest-contour", action="store_true",
                        help="report the largest contour's boxes (MaxBoxAcc v1) per IoU"
                             " instead of all contours")
    parser.add_argument("--predictions", metavar="FILE",
                        help="CSV image_id,top1[,top2..top5] of predicted class ids:"
                             " adds Top-1/Top-5 Loc")
    parser.add_argument("--image-size", type=int, default=224, help="map size S (default 224)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="threads tracing the boxes / binning the masks"
                             " (default min(4, CPUs); 1: no pool)")
    parser.add_argument("--io-threads", type=int, default=None, metavar="N",
                        help="threads reading the .npy files (default min(8, 2 x CPUs))")
    parser.add_argument("--output", required=True, metavar="FILE", help="results JSON")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --output")


def resolve_split_dir(metadata_root: str | Path) -> Path:
    """The split directory: ``metadata_root``, or its ``test/`` when it has no image_ids.txt."""
    root = Path(metadata_root)
    if not (root / "image_ids.txt").is_file() and (root / "test" / "image_ids.txt").is_file():
        return root / "test"
    return root


def read_predictions(path: str | Path, class_labels: dict[str, int]) -> dict[str, list[int]]:
    """``image_id -> ranked class ids`` from a CSV ``image_id,top1[,top2..top5]`` (no header)."""
    from wsol.errors import UserError

    path = Path(path)
    if not path.is_file():
        raise UserError(f"--predictions {path}: no such file")
    out: dict[str, list[int]] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, start=1):
            line = raw.strip()
            if not line:
                continue
            fields = [x.strip() for x in line.split(",")]
            image_id, ranks = fields[0], fields[1:]
            if not 1 <= len(ranks) <= 5:
                raise UserError(
                    f"{path}:{lineno}: expected image_id,top1[,top2..top5], got {line!r}")
            if image_id not in class_labels:
                raise UserError(f"{path}:{lineno}: unknown image id {image_id!r}")
            if image_id in out:
                raise UserError(f"{path}:{lineno}: duplicate image id {image_id!r}")
            try:
                out[image_id] = [int(r) for r in ranks]
            except ValueError:
                raise UserError(
                    f"{path}:{lineno}: class ids must be integers, got {line!r}") from None
    missing = [i for i in class_labels if i not in out]
    if missing:
        raise UserError(f"{path}: no prediction for image id {missing[0]!r}"
                         f" ({len(missing)} image(s) without one)")
    return out


def load_scoremap(path: Path, size: int) -> Any:
    """Read one ``(size, size)`` float32/float64 map from a ``.npy`` file, checking the header
    first; raises :class:`~wsol.errors.ScoreMapError` naming ``path``."""
    import numpy as np
    from numpy.lib import format as npy_format

    from wsol.errors import ScoreMapError

    try:
        f = open(path, "rb")  # noqa: SIM115  (closed by the with below)
    except FileNotFoundError:
        raise ScoreMapError(f"missing score map {path}") from None
    except OSError as exc:
        raise ScoreMapError(f"unreadable score map {path} ({exc.strerror or exc})") from None
    with f:
        head = f.read(6)
        if head.startswith(b"PK\x03\x04"):
            raise ScoreMapError(f"score map {path} is an .npz archive, not an .npy array"
                                " (save each map with np.save)")
        if head != npy_format.MAGIC_PREFIX:
            kind = "a pickle" if head[:1] == b"\x80" else "not an .npy file"
            raise ScoreMapError(f"score map {path} is {kind} (no .npy header)")
        f.seek(0)
        try:
            version = npy_format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = npy_format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = npy_format.read_array_header_2_0(f)
        except (ValueError, SyntaxError, TypeError) as exc:
            raise ScoreMapError(f"score map {path} has an invalid .npy header ({exc})") from None
        if dtype.hasobject:
            raise ScoreMapError(f"score map {path} holds Python objects (a pickled array);"
                                " refused")
        if tuple(shape) != (size, size):
            raise ScoreMapError(f"score map {path} has shape {tuple(shape)}, expected"
                                f" ({size}, {size})")
        if dtype not in (np.float32, np.float64):
            raise ScoreMapError(f"score map {path} has dtype {dtype}, expected float32 or"
                                " float64")
        f.seek(0)
        try:
            scoremap = np.load(f, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise ScoreMapError(f"unreadable score map {path} ({exc})") from None
    if fortran:
        scoremap = np.ascontiguousarray(scoremap)
    return scoremap


def _load_map(root: Path, image_id: str, size: int) -> tuple[Any, str | None]:
    """``(map, None)`` or ``(None, problem)``."""
    from wsol.errors import ScoreMapError
    from wsol.localization.boxes import check_scoremaps

    path = root / f"{image_id}.npy"
    try:
        scoremap = load_scoremap(path, size)
        check_scoremaps(scoremap)  # no NaN, values in [0, 1]
    except ScoreMapError as exc:
        message = str(exc)
        return None, message if str(path) in message else f"{path}: {message}"
    return scoremap, None


def _default_io_threads() -> int:
    return max(1, min(8, 2 * (os.cpu_count() or 1)))


def evaluate_maps(args: argparse.Namespace) -> dict[str, Any]:
    """Read, check and evaluate every map; raises :class:`~wsol.errors.UserError` listing the
    bad ones (nothing is evaluated past the first problem; every map is still checked)."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from wsol.data.metadata import read_metadata
    from wsol.errors import UserError
    from wsol.metrics import LocalizationEvaluator

    split_dir = resolve_split_dir(args.metadata_root)
    meta = read_metadata(split_dir)
    if meta.localization_type == "masks":
        if args.mask_root is None:
            raise UserError(f"{split_dir} holds masks: --mask-root is needed")
        meta = read_metadata(split_dir, mask_root=args.mask_root)  # checks every mask file exists
    predictions = None
    if args.predictions:
        predictions = read_predictions(args.predictions, meta.class_labels)
    root = Path(args.scoremap_root)
    if not root.is_dir():
        raise UserError(f"--scoremap-root {root}: no such directory")
    io_threads = getattr(args, "io_threads", None) or _default_io_threads()
    evaluator = LocalizationEvaluator(
        meta, image_size=args.image_size, cam_curve_interval=args.cam_curve_interval,
        iou_thresholds=tuple(args.iou_thresholds), multi_contour=not args.largest_contour,
        mask_root=args.mask_root, num_threads=getattr(args, "threads", None))
    problems: list[str] = []
    batch_maps: list[np.ndarray] = []
    batch_ids: list[str] = []

    def flush() -> None:
        if batch_ids:
            ranking = None
            if predictions is not None:
                # Pad short rankings with -1 (never a class) so every row has the same length.
                ranking = np.array([predictions[i] + [-1] * (5 - len(predictions[i]))
                                    for i in batch_ids], dtype=np.int64)
            evaluator.update(np.stack(batch_maps), batch_ids, ranking)
            batch_maps.clear()
            batch_ids.clear()

    with ThreadPoolExecutor(io_threads, thread_name_prefix="read-npy") as pool:
        pending: deque = deque()
        ids = iter(meta.image_ids)
        window = READ_AHEAD * io_threads

        def refill() -> None:
            for image_id in ids:
                pending.append((image_id, pool.submit(_load_map, root, image_id,
                                                      args.image_size)))
                if len(pending) >= window:
                    return

        refill()
        while pending:
            image_id, future = pending.popleft()
            if len(pending) < window // 2:
                refill()
            scoremap, problem = future.result()
            if problem is not None:
                problems.append(f"{image_id}: {problem}")
                continue
            if problems:
                continue  # nothing will be written: only keep checking
            if batch_maps and (scoremap.dtype != batch_maps[0].dtype or len(batch_ids) == BATCH):
                flush()  # batches keep each map's own dtype (float32 maps quantize in float32)
            batch_maps.append(scoremap)
            batch_ids.append(image_id)
    if problems:
        evaluator.close()
        listed = "\n  ".join(problems[:MAX_LISTED])
        extra = len(problems) - MAX_LISTED
        more = f"\n  ... and {extra} more" if extra > 0 else ""
        raise UserError(f"{len(problems)} of {len(meta)} score maps cannot be evaluated; nothing"
                        f" was written:\n  {listed}{more}")
    flush()
    results = evaluator.compute()
    evaluator.close()
    results["metadata_split"] = str(split_dir)
    return results


def format_summary(results: dict[str, Any]) -> str:
    """A two-column table of the headline numbers (in %)."""
    rows: list[tuple[str, Any]] = [("images", results["num_images"])]
    if "MaxBoxAccV2" in results:
        mode = "v2, all contours" if results["settings"]["multi_contour"] else "v1, largest contour"
        rows += [("MaxBoxAccV2", results["MaxBoxAccV2"]), ("MaxBoxAcc", results["MaxBoxAcc"])]
        rows += [(f"MaxBoxAcc@{d} ({mode})", v) for d, v in results["max_box_acc_by_iou"].items()]
        rows += [(f"best threshold@{d}", v) for d, v in results["best_threshold_by_iou"].items()]
    for key, label in (("PxAP", "PxAP"), ("pIoU", "pIoU"), ("gt_known_loc", "GT-known Loc"),
                       ("top1_loc", "Top-1 Loc"), ("top5_loc", "Top-5 Loc"),
                       ("top1_acc", "Top-1 Cls"), ("top5_acc", "Top-5 Cls")):
        if results.get(key) is not None:
            rows.append((label, results[key]))
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v:8.3f}" if isinstance(v, float) else f"{k:<{width}}  {v:>8}"
             for k, v in rows]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from wsol.errors import UserError
    from wsol.utils.io import atomic_write_json

    output = Path(args.output)
    if output.exists() and not args.force:
        raise UserError(f"--output {output} exists; use --force to overwrite it")
    if not 0 < args.cam_curve_interval < 1:
        raise UserError(f"--cam-curve-interval must be in (0, 1), got {args.cam_curve_interval}")
    for name in ("threads", "io_threads"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    results = evaluate_maps(args)
    results["arguments"] = {k: v for k, v in vars(args).items() if not k.startswith("_")}
    print(format_summary(results))
    atomic_write_json(output, results)
    print(f"wrote {output}")
    return 0

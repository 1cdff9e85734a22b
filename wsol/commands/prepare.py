"""``wsol prepare {cub,ilsvrc,openimages,synthetic}``: build or check dataset metadata.

- ``cub``: original CUB_200_2011 layout -> wsolevaluation metadata ``<out>/{train,val,test}``
  (see :mod:`wsol.data.prepare` for the conversion and the carved ``val`` split).
- ``ilsvrc`` / ``openimages``: check an image root (and mask root) against the official
  metadata; exit status 1 and a list of what is missing when anything is.
- ``synthetic``: generate the procedural dataset of :mod:`wsol.data.synthetic`.
- ``folder``: class subfolders (+ a boxes CSV) -> metadata (:mod:`wsol.data.folder`).
- ``voc``: PASCAL VOC2012 -> metadata (image-label rule and splits: :mod:`wsol.data.voc`).
- ``crops``: crop a box dataset around its objects (large objects; :mod:`wsol.data.crops`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from wsol.errors import UserError

NAME = "prepare"
HELP = ("build metadata for CUB, VOC2012, a class-folder tree, large-object crops or a synthetic "
        "dataset; check ILSVRC / OpenImages image roots")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="dataset", metavar="DATASET")
    sub.required = True

    p = sub.add_parser("cub", help="convert the original CUB-200-2011 layout to metadata",
                       description="Convert CUB_200_2011 (images.txt, image_class_labels.txt, "
                       "train_test_split.txt, bounding_boxes.txt, images/) to wsolevaluation "
                       "metadata <out>/{train,val,test}. val = K train images per class moved "
                       "out of train (CUBV2 is not available).")
    p.add_argument("--root", required=True, help="the CUB_200_2011 directory")
    p.add_argument("--out", required=True, help="metadata directory to write")
    p.add_argument("--val-per-class", type=_positive_int, default=5, metavar="K",
                   help="train images per class moved to the val split (default 5; 0 = no val)")
    p.add_argument("--seed", type=_positive_int, default=0, help="seed of the val choice")
    p.add_argument("--workers", type=_positive_int, default=1,
                   help="threads decoding images (default 1)")
    p.add_argument("--force", action="store_true", help="overwrite existing metadata")
    p.set_defaults(_prepare=_run_cub)

    for name, masks in (("ilsvrc", False), ("openimages", True)):
        p = sub.add_parser(name, help=f"check an {name} image root against official metadata",
                           description=f"Check that every image listed in the official {name} "
                           "metadata exists under --image-root" +
                           (" (and every mask under --mask-root)" if masks else "") +
                           "; exit 1 if anything is missing.")
        p.add_argument("--image-root", required=True,
                       help="directory the image ids are relative to")
        p.add_argument("--metadata-root", required=True,
                       help=f"official metadata: .../metadata or .../metadata/"
                       f"{'ILSVRC' if name == 'ilsvrc' else 'OpenImages'}")
        if masks:
            p.add_argument("--mask-root", help="directory the mask paths are relative to")
        p.add_argument("--splits", nargs="+", default=["train", "val", "test"],
                       choices=["train", "val", "test"], help="splits to check (default all)")
        p.add_argument("--decode", action="store_true",
                       help="also decode every image to find corrupt files (slow)")
        p.add_argument("--report",
                       help="write the full list of problems here (CSV split,kind,path)")
        p.add_argument("--show", type=_positive_int, default=5,
                       help="how many missing files to print per split (default 5)")
        p.set_defaults(_prepare=_run_check, _dataset_dir="ILSVRC" if name == "ilsvrc"
                       else "OpenImages")

    p = sub.add_parser("synthetic", help="generate a small procedural WSOL dataset",
                       description="Generate a seeded synthetic dataset (images, box metadata, "
                       "mask metadata) under --out; see wsol.data.synthetic.")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--num-classes", type=int, default=4)
    p.add_argument("--train-per-class", type=_positive_int, default=100)
    p.add_argument("--val-per-class", type=_positive_int, default=10)
    p.add_argument("--test-per-class", type=_positive_int, default=25)
    p.add_argument("--image-size", type=int, default=96, help="longer image side in pixels")
    p.add_argument("--seed", type=_positive_int, default=0)
    p.add_argument("--force", action="store_true", help="overwrite an existing dataset")
    p.set_defaults(_prepare=_run_synthetic)

    p = sub.add_parser("folder", help="a folder of class subfolders (+ boxes CSV) to metadata",
                       description="Convert <root>/<class>/<image> (+ an optional boxes CSV "
                       "relative_path,x0,y0,x1,y1, inclusive 0-based pixels) to wsolevaluation "
                       "metadata <out>/{train,val,test} + class_names.txt (class = subfolder "
                       "name, sorted). val/test are carved per class from the images (with a "
                       "box, when --boxes is given), seeded. See wsol.data.folder.")
    p.add_argument("--root", required=True, help="directory of class subfolders")
    p.add_argument("--boxes", help="CSV relative_path,x0,y0,x1,y1 (paths relative to --root)")
    p.add_argument("--out", required=True, help="metadata directory to write")
    p.add_argument("--val-per-class", type=_positive_int, default=5, metavar="K",
                   help="images per class moved to val (default 5; 0 = no val)")
    p.add_argument("--test-per-class", type=_positive_int, default=0, metavar="K",
                   help="images per class moved to test (default 0 = no test)")
    p.add_argument("--seed", type=_positive_int, default=0, help="seed of the val/test choice")
    p.add_argument("--workers", type=_positive_int, default=1,
                   help="threads decoding images (default 1)")
    p.add_argument("--force", action="store_true", help="overwrite existing metadata")
    p.set_defaults(_prepare=_run_folder)

    p = sub.add_parser("voc", help="convert PASCAL VOC2012 to metadata (all boxes per image)",
                       description="Convert VOCdevkit/VOC2012 (JPEGImages, Annotations, "
                       "ImageSets/Main) to wsolevaluation metadata <out>/{train,val,test} + "
                       "class_names.txt (20 classes, alphabetical). Image label = the class "
                       "with the largest total box area (B-CAM's official VOC code is "
                       "multi-label; all classes are kept in image_classes.csv). Default "
                       "splits: train = Main/train, test = Main/val, val carved from train. "
                       "See wsol.data.voc.")
    p.add_argument("--root", required=True, help="the VOCdevkit/VOC2012 directory")
    p.add_argument("--out", required=True, help="metadata directory to write")
    p.add_argument("--train-set", default="train",
                   help="train image list: a name in ImageSets/Main or a file (default train)")
    p.add_argument("--test-set", default="val",
                   help="test image list: a name in ImageSets/Main or a file (default val)")
    p.add_argument("--val-set", help="val image list (default: carve --val-per-class images "
                   "per class out of the train list)")
    p.add_argument("--val-per-class", type=_positive_int, default=5, metavar="K",
                   help="train images per class moved to val when --val-set is not given "
                   "(default 5; 0 = no val)")
    p.add_argument("--seed", type=_positive_int, default=0, help="seed of the val choice")
    p.add_argument("--boxes", choices=["all", "label"], default="all",
                   help="write every box of an image (default) or only its label class's")
    p.add_argument("--exclude-difficult", action="store_true",
                   help="drop objects marked difficult (from the label and the boxes)")
    p.add_argument("--workers", type=_positive_int, default=1,
                   help="threads decoding images (default 1)")
    p.add_argument("--force", action="store_true", help="overwrite existing metadata")
    p.set_defaults(_prepare=_run_voc)

    p = sub.add_parser("crops", help="crop a box dataset around its objects (large objects)",
                       description="Crop every image of a wsolevaluation box dataset around "
                       "its (union) box with a seeded random margin, so that the box covers a "
                       "uniformly drawn MIN..MAX share of the crop; writes <out>/images, "
                       "<out>/metadata/<split>, crops.csv and crops.json (see "
                       "wsol.data.crops).")
    p.add_argument("--from", dest="source", required=True, metavar="DIR",
                   help="metadata directory with train/val/test split directories (wsol "
                   "prepare cub/voc/folder output), or a directory with metadata/ and images/")
    p.add_argument("--image-root", help="directory the image ids are relative to (default "
                   "<from>/images when --from has metadata/)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seed", type=_positive_int, default=0)
    p.add_argument("--min-cover", type=float, default=0.4,
                   help="smallest share of the crop area covered by the box (default 0.4)")
    p.add_argument("--max-cover", type=float, default=1.0,
                   help="largest share of the crop area covered by the box (default 1.0)")
    p.add_argument("--box", choices=["union", "first"], default="union",
                   help="crop around the union of an image's boxes (default) or its first box")
    p.add_argument("--workers", type=_positive_int, default=1,
                   help="threads decoding and encoding images (default 1)")
    p.add_argument("--force", action="store_true",
                   help="overwrite an existing output (files are replaced, nothing deleted)")
    p.set_defaults(_prepare=_run_crops)


def run(args: argparse.Namespace) -> int:
    return int(args._prepare(args))


def _run_cub(args: argparse.Namespace) -> int:
    from wsol.data.prepare import prepare_cub

    root = Path(args.root)
    if not root.is_dir():
        raise UserError(f"--root {root} is not a directory")
    start = time.perf_counter()
    metas = prepare_cub(root, args.out, val_per_class=args.val_per_class, seed=args.seed,
                        force=args.force, workers=args.workers)
    for split, meta in metas.items():
        print(f"{split}: {len(meta)} images, {meta.num_classes} classes -> "
              f"{Path(args.out) / split}")
    print(f"done in {time.perf_counter() - start:.1f}s")
    return 0


def _run_check(args: argparse.Namespace) -> int:
    from wsol.data.prepare import check_dataset, resolve_metadata_root
    from wsol.utils.io import atomic_write_text

    meta_root = resolve_metadata_root(args.metadata_root, args._dataset_dir)
    checks = check_dataset(args.image_root, meta_root, getattr(args, "mask_root", None),
                           splits=args.splits, decode=args.decode)
    rows: list[str] = []
    for check in checks:
        print(check.summary(first=args.show))
        rows += [f"{check.split},{kind},{path}\n" for kind, path in check.problems()]
    if args.report:
        atomic_write_text(args.report, "".join(rows))
        print(f"full list ({len(rows)} problem(s)) written to {args.report}")
    if all(c.skipped is not None for c in checks):
        raise UserError(f"nothing to check: no split under {meta_root} has an image_ids.txt")
    if rows:
        print(f"{len(rows)} problem(s) found")
        return 1
    return 0


def _run_synthetic(args: argparse.Namespace) -> int:
    from wsol.data.synthetic import make_synthetic

    start = time.perf_counter()
    metas = make_synthetic(args.out, num_classes=args.num_classes,
                           train_per_class=args.train_per_class,
                           val_per_class=args.val_per_class, test_per_class=args.test_per_class,
                           image_size=args.image_size, seed=args.seed, force=args.force)
    out = Path(args.out)
    for split, meta in metas.items():
        print(f"{split}: {len(meta)} images -> {out / 'metadata' / split}")
    print(f"image root {out / 'images'}; masks {out / 'masks'} "
          f"(metadata {out / 'metadata_masks'}); {time.perf_counter() - start:.1f}s")
    return 0



def _run_crops(args: argparse.Namespace) -> int:
    from wsol.data.crops import prepare_crops

    start = time.perf_counter()
    out = Path(args.out)
    metas = prepare_crops(args.source, out, image_root=args.image_root, seed=args.seed,
                          min_cover=args.min_cover, max_cover=args.max_cover, box=args.box,
                          force=args.force, workers=args.workers)
    import json

    stats = json.loads((out / "crops.json").read_text())["splits"]
    for split, meta in metas.items():
        cover = stats[split]["cover"]
        print(f"{split}: {len(meta)} crops -> {out / 'metadata' / split} (box cover min "
              f"{cover['min']:.3f} mean {cover['mean']:.3f} max {cover['max']:.3f}; "
              f"{stats[split]['clipped']} above target: image too small for it)")
    print(f"image root {out / 'images'}; {time.perf_counter() - start:.1f}s")
    return 0


def _run_voc(args: argparse.Namespace) -> int:
    from wsol.data.voc import prepare_voc

    start = time.perf_counter()
    metas = prepare_voc(args.root, args.out, train_set=args.train_set, test_set=args.test_set,
                        val_set=args.val_set, val_per_class=args.val_per_class, seed=args.seed,
                        boxes=args.boxes, exclude_difficult=args.exclude_difficult,
                        force=args.force, workers=args.workers)
    out = Path(args.out)
    for split, meta in metas.items():
        nboxes = sum(len(b) for b in (meta.boxes or {}).values())
        print(f"{split}: {len(meta)} images, {nboxes} boxes -> {out / split}")
    print(f"class names {out / 'class_names.txt'}; image root {Path(args.root) / 'JPEGImages'};"
          f" {time.perf_counter() - start:.1f}s")
    return 0


def _run_folder(args: argparse.Namespace) -> int:
    from wsol.data.folder import prepare_folder

    start = time.perf_counter()
    metas = prepare_folder(args.root, args.out, boxes=args.boxes,
                           val_per_class=args.val_per_class, test_per_class=args.test_per_class,
                           seed=args.seed, force=args.force, workers=args.workers)
    out = Path(args.out)
    for split, meta in metas.items():
        print(f"{split}: {len(meta)} images, {meta.num_classes} classes, "
              f"{len(meta.boxes or {})} with boxes -> {out / split}")
    print(f"class names {out / 'class_names.txt'}; image root {args.root}; "
          f"{time.perf_counter() - start:.1f}s")
    return 0

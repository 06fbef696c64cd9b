"""Command line: `python -m components.convert_dataset [SOURCE] --source-dir D --output O`.

SOURCE (first argument, or `--source`) is folders, shapes, coco, voc or cityscapes, e.g.

    python -m components.convert_dataset coco --images val2017 \
        --annotations instances_val2017.json --output out

Flags this parser does not know (`--runner`, `--project`, `--region`, `--temp_location`,
`--num_workers`, ...) are handed to Beam as pipeline options.
"""

from __future__ import annotations

import argparse
import logging
import posixpath
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from components.convert_dataset import catalog, errors

SOURCE_CHOICES = catalog.SOURCE_NAMES


def _image_size(text: str) -> tuple[int, int]:
    """'128' or '96x128' (height x width)."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) <= 0:
        raise argparse.ArgumentTypeError(f"expected SIZE or HEIGHTxWIDTH, got {text!r}")
    return parts[0], parts[1]


def _radius_range(text: str) -> tuple[float, float]:
    """'0.15,0.35' (min,max fractions of the short side)."""
    try:
        parts = [float(p) for p in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX, got {text!r}")
    return parts[0], parts[1]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m components.convert_dataset",
        description="Convert labeled images into sharded TFRecords of Model Garden tf.Examples. "
        "Unknown flags (--runner, --project, --temp_location, ...) go to Apache Beam.",
        # Abbreviations could swallow Beam flags that share a prefix with ours.
        allow_abbrev=False,
    )
    parser.add_argument(
        "--source",
        default=None,
        choices=SOURCE_CHOICES,
        help="dataset layout (default folders); may also be given as the first argument",
    )
    parser.add_argument(
        "--task",
        default=None,
        choices=("segmentation", "classification", "detection"),
        help="segmentation: masks in image/segmentation/class/encoded; classification: "
        "image/class/label (shapes images are labelled by their dominant shape); detection: "
        "image/object/* boxes and classes (default: detection for coco, else segmentation; "
        "coco with segmentation reads COCO panoptic)",
    )
    parser.add_argument(
        "--source-dir",
        help="dataset folder: images/<split> + masks/<split> for segmentation, "
        "<split>/<class_name>/ for classification, annotations/instances_<split>.json + "
        "images/<split>/ for coco; the VOC year folder (VOCdevkit/VOC2012) for voc; the folder "
        "holding leftImg8bit/ and gtFine/ for cityscapes; for --source shapes the folder to "
        "generate into (default: a temporary folder)",
    )
    parser.add_argument(
        "--class-names",
        default="",
        help="classification with folders: comma-separated class order (ids follow it); "
        "default: the sorted class folder names",
    )
    detection = parser.add_argument_group("coco source (detection)")
    detection.add_argument(
        "--annotations",
        action="append",
        default=[],
        metavar="[SPLIT=]FILE",
        help="COCO instances JSON; repeat as SPLIT=FILE for several splits. One plain FILE "
        "is the split --splits names, else the split its name suggests (instances_val2017.json "
        "→ val2017). Default: <source-dir>/annotations/instances_<split>.json",
    )
    detection.add_argument(
        "--images",
        action="append",
        default=[],
        metavar="[SPLIT=]DIR",
        help="image folder of the annotations' file names; repeat as SPLIT=DIR for several "
        "splits. Default: <source-dir>/images/<split>",
    )
    detection.add_argument(
        "--masks",
        action="append",
        default=[],
        metavar="[SPLIT=]DIR",
        help="coco with --task segmentation (panoptic): the folder of panoptic PNGs; --annotations "
        "then names the panoptic JSON. Default: <source-dir>/annotations/panoptic_<split>/",
    )
    detection.add_argument(
        "--include-masks",
        action="store_true",
        help="detection (coco, cityscapes): also write the instance masks "
        "(image/object/mask, one PNG per object)",
    )
    detection.add_argument(
        "--keep-category-ids",
        action="store_true",
        help="coco detection: class ids are the COCO category ids (as Model Garden's "
        "create_coco_tf_record writes them) instead of 1..N",
    )
    parser.add_argument_group("voc source (detection)").add_argument(
        "--drop-difficult",
        action="store_true",
        help="leave out objects VOC marks difficult (default: keep them, flagged in "
        "image/object/difficult and iscrowd in the groundtruth JSON)",
    )
    parser.add_argument("--output", required=True, help="output folder for the TFRecords")
    parser.add_argument(
        "--splits",
        default=None,
        help="comma-separated split names (default train,validation; train,val for voc and "
        "cityscapes; for coco with --annotations, the splits those name); OUT=SOURCE writes "
        "the source's split under another name, e.g. train,validation=val",
    )
    parser.add_argument("--num-shards", type=int, default=4)
    parser.add_argument(
        "--target-shard-size",
        default=None,
        metavar="SIZE",
        help="instead of --num-shards: shards of about SIZE (e.g. 200MB, 1GiB), counted per "
        "split from the input file sizes",
    )
    parser.add_argument("--compression", choices=("none", "gzip"), default="none")
    parser.add_argument("--strict", action="store_true", help="fail if any record is bad")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier conversion")
    parser.add_argument(
        "--direct-running-mode",
        default="in_memory",
        choices=("in_memory", "multi_threading", "multi_processing"),
    )
    parser.add_argument("--direct-num-workers", type=int, default=1)
    shapes = parser.add_argument_group("shapes source")
    shapes.add_argument("--num-train", type=int, default=64)
    shapes.add_argument("--num-validation", type=int, default=16)
    shapes.add_argument("--image-size", type=_image_size, default=(128, 128))
    shapes.add_argument("--seed", type=int, default=0)
    shapes.add_argument("--min-objects", type=int, default=1)
    shapes.add_argument("--max-objects", type=int, default=4)
    shapes.add_argument(
        "--radius-range",
        type=_radius_range,
        default=(0.08, 0.25),
        help="MIN,MAX object radius as a fraction of the short side (default 0.08,0.25)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="do not show the records loaded / total (a bar on a terminal, else a log line "
        "every ~10 s)",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def _print_summary(summary: dict[str, Any], output: str) -> None:
    print(f"Wrote {summary['records']} records to {output} (fingerprint {summary['fingerprint']})")
    if summary.get("class_names"):
        print(f"  classes: {', '.join(summary['class_names'])}")
    if summary.get("annotation_files"):
        for split, path in summary["annotation_files"].items():
            print(f"  {split} groundtruth (COCO JSON): {output.rstrip('/')}/{path}")
    for split, s in summary["splits"].items():
        line = f"  {split}: {s['records']} records in {len(s['shards'])} shards"
        if s["bad_records"]:
            reasons = ", ".join(f"{r} {n}" for r, n in s["bad_records_by_reason"].items())
            line += f", {s['bad_records']} bad ({reasons})"
        print(line)
    if summary["bad_records"]:
        print(f"Bad records are listed in {output.rstrip('/')}/bad_records.jsonl")
    if summary.get("report"):
        paths = [f"{output.rstrip('/')}/{name}" for name in summary["report"].values()]
        print(f"Dataset report: {', '.join(paths)}")


def _parse_split_paths(values: Iterable[str], option: str) -> dict[str | None, str]:
    """'DIR' or 'SPLIT=DIR' values of a repeatable option → {split or None: path}.

    Raises:
      ConversionError: a split named twice, or an unnamed value together with others.
    """
    out: dict[str | None, str] = {}
    for value in values:
        split, sep, path = value.partition("=")
        # gs://bucket/a=b has '=' after a '/': that is a path, not SPLIT=PATH.
        if not sep or "/" in split or not split:
            split, path = None, value
        if split in out:
            raise errors.ConversionError(
                f"{option}: {'split ' + split if split else 'a path'} is given twice"
            )
        out[split] = path
    if None in out and len(out) > 1:
        raise errors.ConversionError(
            f"{option}: give either one path, or SPLIT=PATH for every split, not both"
        )
    return out


def _split_from_annotation_file(path: str) -> str:
    """The split an annotation file's name suggests: instances_val2017.json or
    panoptic_val2017.json → 'val2017'."""
    stem = posixpath.splitext(posixpath.basename(path))[0]
    for prefix in ("instances_", "panoptic_"):
        if stem.startswith(prefix) and len(stem) > len(prefix):
            return stem.removeprefix(prefix)
    return stem


def _split_names(text: str | None) -> dict[str, str]:
    """--splits 'train,validation=val' → {output split: source split}."""
    out: dict[str, str] = {}
    for item in (text or "").split(","):
        name, sep, source = (part.strip() for part in item.partition("="))
        if not name:
            continue
        if sep and not source:
            raise errors.ConversionError(f"--splits: {item!r} names no source split after '='")
        if name in out:
            raise errors.ConversionError(f"--splits: split {name!r} is given twice")
        out[name] = source or name
    return out


def _coco_paths(
    args: argparse.Namespace,
) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """The source's splits, {split: annotation file} and {split: image folder} from --splits,
    --annotations and --images (paths are keyed by the source's split names)."""
    annotations = _parse_split_paths(args.annotations, "--annotations")
    image_dirs = _parse_split_paths(args.images, "--images")
    splits = list(_split_names(args.splits).values())
    if not splits:
        named = [s for s in annotations if s is not None]
        if None in annotations:
            named = [_split_from_annotation_file(annotations[None])]
        splits = named or list(catalog.default_splits(args.source))
    return (
        splits,
        _per_split(annotations, splits, "--annotations"),
        _per_split(image_dirs, splits, "--images"),
    )


def _per_split(paths: dict[str | None, str], splits: list[str], option: str) -> dict[str, str]:
    """{split or None: path} → {split: path}, a path without a split belonging to the one split.

    Raises:
      ConversionError: an unnamed path with several splits, or a split not being converted.
    """
    if None in paths and len(splits) != 1:
        raise errors.ConversionError(
            f"{option}: a path without SPLIT= needs exactly one split, got {splits}; "
            "write SPLIT=PATH per split"
        )
    unknown = sorted(set(paths) - {None} - set(splits))
    if unknown:
        raise errors.ConversionError(
            f"{option}: splits {unknown} are not among the converted splits {splits}"
        )
    return {(split or splits[0]): path for split, path in paths.items()}


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the conversion; returns the process exit code (0 ok, 1 bad input or failure)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # `convert coco --images ...`: a leading source name, as `vision-pipelines convert` takes it.
    leading_source = argv.pop(0) if argv and argv[0] in SOURCE_CHOICES else None
    args, beam_args = _parser().parse_known_args(argv)
    if leading_source and args.source and args.source != leading_source:
        print(
            f"error: source given twice: {leading_source!r} and --source {args.source!r}",
            file=sys.stderr,
        )
        return 2
    args.source = leading_source or args.source or "folders"
    if args.task is None:
        args.task = catalog.default_task(args.source)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    # Imported here so `--help` and argument errors stay fast (Beam and TensorFlow load slowly).
    from components.convert_dataset import pipeline, progress

    if not args.no_progress:
        # The non-terminal display logs; its lines show without --verbose.
        logging.getLogger(progress.__name__).setLevel(logging.INFO)
    shapes_options = None
    if args.source == "shapes":
        shapes_options = {
            "num_train": args.num_train,
            "num_validation": args.num_validation,
            "image_size": args.image_size,
            "seed": args.seed,
            "min_objects": args.min_objects,
            "max_objects": args.max_objects,
            "radius_range": args.radius_range,
        }
    try:
        if (args.annotations or args.images or args.masks) and args.source != "coco":
            raise errors.ConversionError(
                "--annotations, --images and --masks belong to --source coco"
            )
        if args.masks and args.task != "segmentation":
            raise errors.ConversionError(
                "--masks (panoptic PNG folders) belongs to coco with --task segmentation"
            )
        extra_source_options = None
        if args.drop_difficult:
            if args.source != "voc" or args.task != "detection":
                raise errors.ConversionError(
                    "--drop-difficult belongs to --source voc with --task detection"
                )
            extra_source_options = {"keep_difficult": False}
        if args.keep_category_ids:
            if args.source not in ("coco", "shapes") or args.task != "detection":
                raise errors.ConversionError(
                    "--keep-category-ids belongs to coco or shapes with --task detection"
                )
            extra_source_options = {"keep_category_ids": True}
        target_shard_bytes = None
        if args.target_shard_size is not None:
            try:
                target_shard_bytes = pipeline.parse_byte_size(args.target_shard_size)
            except ValueError as e:
                raise errors.ConversionError(f"--target-shard-size: {e}") from e
        splits, annotation_files, image_dirs = _coco_paths(args)
        mask_dirs = _per_split(_parse_split_paths(args.masks, "--masks"), splits, "--masks")
        renamed = _split_names(args.splits)
        summary = pipeline.run(
            source_dir=args.source_dir,
            output_dir=args.output,
            # OUT=SOURCE entries write a source split under another name.
            splits=renamed if any(k != v for k, v in renamed.items()) else splits,
            num_shards=args.num_shards,
            compression=None if args.compression == "none" else args.compression,
            strict=args.strict,
            overwrite=args.overwrite,
            beam_args=beam_args,
            source=args.source,
            shapes_options=shapes_options,
            direct_running_mode=args.direct_running_mode,
            direct_num_workers=args.direct_num_workers,
            task=args.task,
            class_names=[c.strip() for c in args.class_names.split(",") if c.strip()] or None,
            annotation_files=annotation_files or None,
            image_dirs=image_dirs or None,
            include_masks=args.include_masks,
            mask_dirs=mask_dirs or None,
            extra_source_options=extra_source_options,
            target_shard_bytes=target_shard_bytes,
            progress=not args.no_progress,
        )
    except errors.ConversionError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # A failed Beam job or storage error: say what, not where.
        if args.debug:
            raise
        print(f"error: conversion failed: {type(e).__name__}: {e}", file=sys.stderr)
        print("(rerun with --debug for the traceback)", file=sys.stderr)
        return 1
    _print_summary(summary, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())

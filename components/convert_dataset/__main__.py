"""Command line: `python -m components.convert_dataset --source folders --source-dir D --output O`.

Flags this parser does not know (`--runner`, `--project`, `--region`, `--temp_location`,
`--num_workers`, ...) are handed to Beam as pipeline options.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from components.convert_dataset import errors


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
    parser.add_argument("--source", default="folders", choices=("folders", "shapes"))
    parser.add_argument(
        "--task",
        default="segmentation",
        choices=("segmentation", "classification"),
        help="segmentation: masks in image/segmentation/class/encoded; classification: "
        "image/class/label (shapes images are labelled by their dominant shape)",
    )
    parser.add_argument(
        "--source-dir",
        help="dataset folder: images/<split> + masks/<split> for segmentation, "
        "<split>/<class_name>/ for classification; for --source shapes the folder to generate "
        "into (default: a temporary folder)",
    )
    parser.add_argument(
        "--class-names",
        default="",
        help="classification with folders: comma-separated class order (ids follow it); "
        "default: the sorted class folder names",
    )
    parser.add_argument("--output", required=True, help="output folder for the TFRecords")
    parser.add_argument("--splits", default="train,validation", help="comma-separated split names")
    parser.add_argument("--num-shards", type=int, default=4)
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
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def _print_summary(summary: dict[str, Any], output: str) -> None:
    print(f"Wrote {summary['records']} records to {output} (fingerprint {summary['fingerprint']})")
    if summary.get("class_names"):
        print(f"  classes: {', '.join(summary['class_names'])}")
    for split, s in summary["splits"].items():
        line = f"  {split}: {s['records']} records in {len(s['shards'])} shards"
        if s["bad_records"]:
            reasons = ", ".join(f"{r} {n}" for r, n in s["bad_records_by_reason"].items())
            line += f", {s['bad_records']} bad ({reasons})"
        print(line)
    if summary["bad_records"]:
        print(f"Bad records are listed in {output.rstrip('/')}/bad_records.jsonl")


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the conversion; returns the process exit code (0 ok, 1 bad input or failure)."""
    args, beam_args = _parser().parse_known_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    # Imported here so `--help` and argument errors stay fast (Beam and TensorFlow load slowly).
    from components.convert_dataset import pipeline

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
        summary = pipeline.run(
            source_dir=args.source_dir,
            output_dir=args.output,
            splits=[s.strip() for s in args.splits.split(",") if s.strip()],
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

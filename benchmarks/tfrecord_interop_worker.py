"""Decodes and parses TFRecords with one library; used by `modelgarden_tfrecord_interop.py`.

Runs under either environment: `--impl vision_core` (this project's venv) or `--impl modelgarden`
(the reference venv, which has `official.vision` but not vision_core). Both import dataloader
modules of the same names and call them alike, so the two outputs describe the same work:

  detection       TfExampleDecoder(include_mask=True).decode, then the RetinaNet parser (eval)
  segmentation    segmentation_input.Decoder, its image/mask decoded, then its Parser (eval)
  classification  classification_input.Decoder, then its Parser (eval) with
                  decode_jpeg_only=False, and a note whether the default (True) parses PNGs

    python benchmarks/tfrecord_interop_worker.py --impl modelgarden --jobs JOBS.json \
        --outputs OUT.npz

JOBS.json is a list of {"name", "kind", "files"}. OUT.npz holds `<job>|<record>|<path>` arrays
(strings as sha256 hex digests); OUT.npz.json holds per-job notes and errors.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

RETINANET = {
    "output_size": [64, 64],
    "min_level": 3,
    "max_level": 5,
    "num_scales": 3,
    "aspect_ratios": [0.5, 1.0, 2.0],
    "anchor_size": 4.0,
    "dtype": "float32",
}
SEGMENTATION_SIZE = [48, 48]
CLASSIFICATION_SIZE = [48, 48]


def _modules(impl: str):
    if impl == "modelgarden":
        from official.vision.dataloaders import (
            classification_input,
            retinanet_input,
            segmentation_input,
            tf_example_decoder,
        )
    else:
        from vision_core.dataloaders import (
            classification_input,
            retinanet_input,
            segmentation_input,
            tf_example_decoder,
        )
    return tf_example_decoder, retinanet_input, segmentation_input, classification_input


def _flatten(value, prefix: str, out: dict) -> None:
    """Nested dicts/tuples of tensors → {path: numpy array}; strings become sha256 digests."""
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(item, f"{prefix}/{key}" if prefix else str(key), out)
        return
    if isinstance(value, tuple | list):
        for i, item in enumerate(value):
            _flatten(item, f"{prefix}/{i}", out)
        return
    array = np.asarray(value.numpy() if hasattr(value, "numpy") else value)
    if array.dtype == object or array.dtype.kind == "S":
        flat = [hashlib.sha256(bytes(v)).hexdigest() for v in array.ravel()]
        array = np.asarray(flat, dtype="U64").reshape(array.shape)
    out[prefix] = array


def _run_job(job: dict, impl: str, out: dict) -> dict:
    import tensorflow as tf

    decoder_mod, retinanet_mod, seg_mod, cls_mod = _modules(impl)
    notes: dict = {"records": 0}
    kind = job["kind"]
    if kind == "detection":
        decoder = decoder_mod.TfExampleDecoder(include_mask=True)
        parse = retinanet_mod.Parser(**RETINANET).parse_fn(is_training=False)
    elif kind == "segmentation":
        decoder = seg_mod.Decoder()
        parse = seg_mod.Parser(output_size=SEGMENTATION_SIZE).parse_fn(is_training=False)
    elif kind == "classification":
        decoder = cls_mod.Decoder()
        parse = cls_mod.Parser(
            output_size=CLASSIFICATION_SIZE, num_classes=3, decode_jpeg_only=False
        ).parse_fn(is_training=False)
        default_parse = cls_mod.Parser(output_size=CLASSIFICATION_SIZE, num_classes=3).parse_fn(
            is_training=False
        )
    else:
        raise ValueError(f"kind must be detection, segmentation or classification, got {kind!r}")
    for index, record in enumerate(tf.data.TFRecordDataset(job["files"])):
        prefix = f"{job['name']}|{index}|"
        decoded = decoder.decode(record)
        flat: dict = {}
        _flatten(decoded, "decoded", flat)
        if kind == "segmentation":
            # The decoder returns encoded bytes; compare the pixels they hold too.
            flat["decoded/image_pixels"] = tf.io.decode_image(
                decoded["image/encoded"], channels=3
            ).numpy()
            flat["decoded/mask_pixels"] = tf.io.decode_image(
                decoded["image/segmentation/class/encoded"], channels=1
            ).numpy()
        image, labels = parse(decoded)
        _flatten({"image": image, "labels": labels}, "parsed", flat)
        if kind == "classification" and index == 0:
            try:
                default_parse(decoded)
                notes["default_decode_jpeg_only_parses_png"] = True
            except Exception as e:  # noqa: BLE001 - the failure itself is the finding.
                notes["default_decode_jpeg_only_parses_png"] = False
                notes["default_decode_jpeg_only_error"] = f"{type(e).__name__}: {e}"[:300]
        for key, array in flat.items():
            out[prefix + key] = array
        notes["records"] += 1
    return notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--impl", choices=("vision_core", "modelgarden"), required=True)
    parser.add_argument("--jobs", required=True)
    parser.add_argument("--outputs", required=True)
    args = parser.parse_args()
    with open(args.jobs) as f:
        jobs = json.load(f)
    import tensorflow as tf

    arrays: dict = {}
    notes: dict = {"_versions": {"tensorflow": tf.__version__}}
    if args.impl == "modelgarden":
        from importlib.metadata import version

        notes["_versions"]["tf-models-official"] = version("tf-models-official")
    for job in jobs:
        try:
            notes[job["name"]] = _run_job(job, args.impl, arrays)
        except Exception as e:  # noqa: BLE001 - reported per job, the others still run.
            notes[job["name"]] = {"error": f"{type(e).__name__}: {e}"[:1000]}
    np.savez(args.outputs, **arrays)
    with open(args.outputs + ".json", "w") as f:
        json.dump(notes, f, indent=1)


if __name__ == "__main__":
    main()

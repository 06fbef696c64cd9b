"""TFRecord interoperability with Model Garden, both directions, on one small generated dataset.

Input: the shapes dataset (validation split) with its COCO JSON rewritten the way real COCO
files look to both converters: sparse category ids (circle 3, square 7, triangle 12), polygon
segmentations (each object's convex hull) and one crowd object as an uncompressed RLE. A COCO
panoptic version of the same images is made too (objects = things, the rest = stuff 'backdrop'
id 92, a 2-pixel void frame).

(a) ours → Model Garden: our converter writes detection (+ masks), segmentation and
    classification records; `tfrecord_interop_worker.py` decodes and parses (eval mode) them under
    Model Garden (reference venv) and under vision_core; every tensor is compared.
(b) Model Garden → ours: `python -m official.vision.data.create_coco_tf_record` converts the same
    JSON; its records are decoded and parsed by both libraries and compared. Then the two
    converters' records of the same input are compared with each other (decoded by our
    decoder): the class ids differ by design (ours contiguous 1..N, Model Garden the COCO ids)
    unless ours runs with keep_category_ids.
(c) panoptic: both converters write the panoptic set; the category and instance masks are
    compared, and our semantic mask is checked against Model Garden's layout (things → 1, stuff
    → COCO id - 90, void 0) after that mapping.

Prints one JSON object. Needs the reference venv (../shared/tools/modelgarden-venv.sh).

    python benchmarks/modelgarden_tfrecord_interop.py [--modelgarden-python PY] [--images N]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
import tempfile
from collections import defaultdict

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from components.convert_dataset import pipeline, rle, shapes  # noqa: E402
from vision_core.dataloaders import tf_example_keys as keys  # noqa: E402
from vision_core.dataloaders.tf_example_decoder import TfExampleDecoder  # noqa: E402

WORKER = os.path.join(HERE, "tfrecord_interop_worker.py")
DEFAULT_MG_PYTHON = os.path.expanduser("~/.cache/modelgarden-venv/bin/python")
MG_TOOL = "official.vision.data.create_coco_tf_record"
SPARSE_IDS = {1: 3, 2: 7, 3: 12}
BACKDROP = {"id": 92, "name": "backdrop", "isthing": 0}
SPLIT = "validation"
# Model Garden's panoptic reader multiplies uint8 channels by 256, which NumPy 2 rejects; this
# launcher runs its unchanged tool with the PNG reader widened to int64 first.
_PATCHED_TOOL = f"""
import sys
import numpy as np
from absl import app
from official.vision.data import tfrecord_lib
import {MG_TOOL} as tool
_read = tfrecord_lib.read_image
tfrecord_lib.read_image = lambda path: _read(path).astype(np.int64)
app.run(tool.main, argv=["create_coco_tf_record", *sys.argv[1:]])
"""


# --------------------------------------------------------------------------------------- inputs
def _convex_hull(mask: np.ndarray) -> list[float]:
    """The convex hull of a mask's pixel squares as a flat COCO polygon [x0, y0, x1, y1, ...]."""
    ys, xs = np.nonzero(mask)
    corners = {
        (x + dx, y + dy) for x, y in zip(xs.tolist(), ys.tolist()) for dx in (0, 1) for dy in (0, 1)
    }
    points = sorted(corners)

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list = []
    upper: list = []
    for p in points:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(points):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return [float(v) for point in lower[:-1] + upper[:-1] for v in point]


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def build_inputs(root: str, num_images: int, size: int, seed: int) -> dict:
    """Writes the shapes dataset and the benchmark's COCO and COCO panoptic files."""
    shapes_dir = os.path.join(root, "shapes")
    options = {
        "num_train": 0,
        "num_validation": num_images,
        "image_size": (size, size),
        "seed": seed,
    }
    shapes.generate_shapes_dataset(shapes_dir, **options)
    with open(os.path.join(shapes_dir, "annotations", f"instances_{SPLIT}.json")) as f:
        source = json.load(f)

    instances = {**source, "annotations": []}
    instances["categories"] = [{**c, "id": SPARSE_IDS[c["id"]]} for c in source["categories"]]
    panoptic_dir = os.path.join(root, f"panoptic_{SPLIT}")
    os.makedirs(panoptic_dir)
    panoptic = {
        "images": source["images"],
        "annotations": [],
        "categories": [{**c, "isthing": 1} for c in instances["categories"]] + [BACKDROP],
    }
    for image in source["images"]:
        anns = [a for a in source["annotations"] if a["image_id"] == image["id"]]
        ids = np.full((size, size), 261, np.int64)  # backdrop: 261 = 5 + 1 * 256
        segments = [{"id": 261, "category_id": BACKDROP["id"], "iscrowd": 0}]
        for k, ann in enumerate(anns):
            visible = rle.decode(ann["segmentation"])
            out = {**ann, "category_id": SPARSE_IDS[ann["category_id"]]}
            if image is source["images"][0] and k == 0:
                # A crowd object, stored as COCO stores crowds: an uncompressed RLE.
                out.update(
                    iscrowd=1,
                    segmentation={"size": [size, size], "counts": rle.mask_to_counts(visible)},
                )
            else:
                out["segmentation"] = [_convex_hull(visible)]
            instances["annotations"].append(out)
            segment_id = 70000 + 37 * k  # needs all three channels
            ids[visible.astype(bool)] = segment_id
            segments.append(
                {"id": segment_id, "category_id": out["category_id"], "iscrowd": out["iscrowd"]}
            )
        ids[:2, :] = ids[-2:, :] = ids[:, :2] = ids[:, -2:] = 0  # void frame
        png_name = os.path.splitext(image["file_name"])[0] + ".png"
        rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
        with open(os.path.join(panoptic_dir, png_name), "wb") as f:
            f.write(_png(rgb))
        panoptic["annotations"].append(
            {"image_id": image["id"], "file_name": png_name, "segments_info": segments}
        )
    paths = {
        "shapes_dir": shapes_dir,
        "shapes_options": options,
        "image_dir": os.path.join(shapes_dir, "images", SPLIT),
        "instances": os.path.join(root, f"instances_{SPLIT}.json"),
        "panoptic": os.path.join(root, f"panoptic_{SPLIT}.json"),
        "panoptic_dir": panoptic_dir,
    }
    with open(paths["instances"], "w") as f:
        json.dump(instances, f)
    with open(paths["panoptic"], "w") as f:
        json.dump(panoptic, f)
    return paths


# ----------------------------------------------------------------------------------- converters
def convert_ours(paths: dict, out: str) -> dict:
    """Our converter, every task; returns {name: (folder, summary)}."""
    common = {"splits": [SPLIT], "num_shards": 1}
    coco_paths = {
        "annotation_files": {SPLIT: paths["instances"]},
        "image_dirs": {SPLIT: paths["image_dir"]},
    }
    runs = {
        "detection": dict(source="coco", task="detection", include_masks=True, **coco_paths),
        "detection_kept": dict(
            source="coco",
            task="detection",
            include_masks=True,
            extra_source_options={"keep_category_ids": True},
            **coco_paths,
        ),
        "segmentation": dict(source="folders", task="segmentation"),
        "classification": dict(
            source="shapes", task="classification", shapes_options=paths["shapes_options"]
        ),
        "panoptic": dict(
            source="coco",
            task="segmentation",
            annotation_files={SPLIT: paths["panoptic"]},
            image_dirs={SPLIT: paths["image_dir"]},
            mask_dirs={SPLIT: paths["panoptic_dir"]},
        ),
    }
    results = {}
    for name, kwargs in runs.items():
        folder = os.path.join(out, name)
        source_dir = paths["shapes_dir"] if kwargs["source"] in ("folders", "shapes") else None
        summary = pipeline.run(source_dir, folder, **common, **kwargs)
        results[name] = (folder, summary)
    return results


def _run_tool(cmd: list[str]) -> dict:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    return {"returncode": proc.returncode, "last_stderr_line": lines[-1] if lines else ""}


def convert_modelgarden(python: str, paths: dict, out: str) -> dict:
    """Model Garden's create_coco_tf_record: detection, then panoptic (as is, and patched)."""
    results = {}
    prefix = os.path.join(out, "detection", SPLIT)
    os.makedirs(os.path.dirname(prefix))
    detection_flags = [
        f"--image_dir={paths['image_dir']}",
        f"--object_annotations_file={paths['instances']}",
        f"--output_file_prefix={prefix}",
        "--num_shards=1",
        "--include_masks",
        "--num_processes=0",
    ]
    results["detection"] = _run_tool([python, "-m", MG_TOOL, *detection_flags])
    results["detection"]["files"] = tf.io.gfile.glob(prefix + "-*")
    for name, launcher in (
        ("panoptic_as_is", ["-m", MG_TOOL]),
        ("panoptic", ["-c", _PATCHED_TOOL]),
    ):
        prefix = os.path.join(out, name, SPLIT)
        os.makedirs(os.path.dirname(prefix))
        flags = [
            f"--image_dir={paths['image_dir']}",
            f"--image_info_file={paths['panoptic']}",
            f"--panoptic_annotations_file={paths['panoptic']}",
            f"--panoptic_masks_dir={paths['panoptic_dir']}",
            "--include_panoptic_masks",
            f"--output_file_prefix={prefix}",
            "--num_shards=1",
            "--num_processes=0",
        ]
        results[name] = _run_tool([python, *launcher, *flags])
        results[name]["files"] = tf.io.gfile.glob(prefix + "-*")
    return results


# ----------------------------------------------------------------------------------- comparison
def run_worker(python: str, jobs: list[dict], tmp: str, impl: str) -> tuple[dict, dict]:
    jobs_path = os.path.join(tmp, "jobs.json")
    with open(jobs_path, "w") as f:
        json.dump(jobs, f)
    out = os.path.join(tmp, f"{impl}.npz")
    cmd = [python, WORKER, "--impl", impl, "--jobs", jobs_path, "--outputs", out]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{impl} worker failed: {proc.stderr.strip()[-2000:]}")
    with open(out + ".json") as f:
        notes = json.load(f)
    return dict(np.load(out)), notes


def _group(path: str) -> str:
    """parsed/labels/cls_targets/3 → parsed/labels/cls_targets/*: one figure per tensor family."""
    return re.sub(r"/\d+(?=/|$)", "/*", path)


def _positive_box_targets(arrays: dict, prefix: str) -> dict:
    """{level: box target rows of positive anchors}: Model Garden leaves the other rows unused."""
    weights = arrays[prefix + "parsed/labels/box_weights"].reshape(-1)
    levels = sorted(
        (int(k.rsplit("/", 1)[1]), k)
        for k in arrays
        if k.startswith(prefix + "parsed/labels/box_targets/")
    )
    out, offset = {}, 0
    for level, key in levels:
        rows = arrays[key].reshape(-1, 4)
        out[level] = rows[weights[offset : offset + len(rows)] > 0]
        offset += len(rows)
    return out


def compare_job(ours: dict, theirs: dict, job: str) -> dict:
    """Every tensor of one job, vision_core vs Model Garden: max |diff| or mismatch counts."""

    def paths(arrays):
        return {k.split("|", 2)[2] for k in arrays if k.startswith(job + "|")}

    records = {int(k.split("|")[1]) for k in ours if k.startswith(job + "|")}
    report: dict = {"records_compared": len(records)}
    only_ours = sorted({_group(p) for p in paths(ours) - paths(theirs)})
    only_theirs = sorted({_group(p) for p in paths(theirs) - paths(ours)})
    max_abs: dict = defaultdict(float)
    mismatches: dict = defaultdict(int)
    shapes_differ: dict = {}
    for index in sorted(records):
        prefix = f"{job}|{index}|"
        common = paths(ours) & paths(theirs)
        for path in sorted(common):
            a, b = ours[prefix + path], theirs[prefix + path]
            group = _group(path)
            if "/box_targets/" in path:
                continue  # compared on positive anchors below
            if a.shape != b.shape:
                shapes_differ[group] = f"vision_core {a.shape} vs modelgarden {b.shape}"
                if a.size != b.size:
                    mismatches[group + " (size)"] += 1
                    continue
                a, b = a.reshape(-1), b.reshape(-1)
            if a.dtype.kind == "U" or b.dtype.kind == "U":
                mismatches[group] += int(np.sum(a != b))
            elif a.dtype == bool or b.dtype == bool:
                mismatches[group] += int(np.sum(a.astype(bool) != b.astype(bool)))
            else:
                diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
                max_abs[group] = max(max_abs[group], float(np.max(diff, initial=0.0)))
        if prefix + "parsed/labels/box_weights" in ours:
            a, b = _positive_box_targets(ours, prefix), _positive_box_targets(theirs, prefix)
            for level in a:
                group = "parsed/labels/box_targets/* (positive anchors)"
                if a[level].shape != b.get(level, np.zeros(0)).shape:
                    mismatches[group + " (shape)"] += 1
                else:
                    diff = np.max(np.abs(a[level] - b[level]), initial=0.0)
                    max_abs[group] = max(max_abs[group], float(diff))
    decoded_keys = sorted(
        {p.split("/", 1)[1] for p in paths(ours) & paths(theirs) if p.startswith("decoded/")}
    )
    report["decoded_keys_compared"] = decoded_keys
    report["parsed_tensor_families_compared"] = len(
        {_group(p) for p in paths(ours) & paths(theirs) if p.startswith("parsed/")}
    )
    report["max_abs_diff"] = dict(sorted(max_abs.items()))
    # Exact comparisons (strings as digests, booleans, sizes), zero counts included.
    report["mismatches"] = dict(sorted(mismatches.items()))
    report["total_mismatches"] = sum(mismatches.values())
    report["worst_max_abs_diff"] = max(max_abs.values(), default=0.0)
    if shapes_differ:
        report["shapes_differ (values compared flattened)"] = shapes_differ
    if only_ours or only_theirs:
        report["only_vision_core"], report["only_modelgarden"] = only_ours, only_theirs
    return report


def _tfrecord_files(folder_or_files) -> list[str]:
    if isinstance(folder_or_files, list):
        return sorted(folder_or_files)
    return sorted(tf.io.gfile.glob(os.path.join(folder_or_files, f"{SPLIT}-*.tfrecord")))


def _examples(files: list[str]) -> list[tf.train.Example]:
    return [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(files)]


def _feature_value(feature: tf.train.Feature) -> list:
    kind = feature.WhichOneof("kind")
    return list(getattr(feature, kind).value) if kind else []


def _show(values: list) -> list:
    """A few feature values, readable: short text as text, floats rounded, bytes as sizes."""
    shown = []
    for v in values[:4]:
        if isinstance(v, bytes):
            shown.append(v.decode() if len(v) < 80 and v.isascii() else f"<{len(v)} bytes>")
        elif isinstance(v, float):
            shown.append(round(v, 6))
        else:
            shown.append(v)
    return shown + (["..."] if len(values) > 4 else [])


def compare_converters(ours_files, kept_files, mg_files, category_ids) -> dict:
    """Our converter's detection records vs Model Garden's, for the same COCO JSON."""
    decoder = TfExampleDecoder(include_mask=True)

    def decode(files):
        out = {}
        for record in tf.data.TFRecordDataset(files):
            d = {k: v.numpy() for k, v in decoder.decode(record).items()}
            out[d["source_id"].decode()] = d
        return out

    ours, kept, mg = decode(ours_files), decode(kept_files), decode(mg_files)
    raw_ours = {
        e.features.feature[keys.IMAGE_SOURCE_ID].bytes_list.value[0].decode(): e
        for e in _examples(ours_files)
    }
    raw_mg = {
        e.features.feature[keys.IMAGE_SOURCE_ID].bytes_list.value[0].decode(): e
        for e in _examples(mg_files)
    }
    report = {
        "records_compared": len(set(ours) & set(mg)),
        "records_only_ours": sorted(set(ours) - set(mg)),
        "records_only_modelgarden": sorted(set(mg) - set(ours)),
    }
    to_coco = np.asarray((0, *category_ids))
    figures = defaultdict(float)
    counts = defaultdict(int)
    for sid in sorted(set(ours) & set(mg)):
        a, k, b = ours[sid], kept[sid], mg[sid]
        if a["groundtruth_boxes"].shape != b["groundtruth_boxes"].shape:
            counts["object_count_mismatches"] += 1
            continue
        counts["objects_compared"] += len(b["groundtruth_classes"])
        for key in ("groundtruth_boxes", "groundtruth_area", "image"):
            diff = np.abs(a[key].astype(np.float64) - b[key].astype(np.float64))
            figures[key] = max(figures[key], float(np.max(diff, initial=0.0)))
        counts["is_crowd_mismatches"] += int(
            np.sum(a["groundtruth_is_crowd"] != b["groundtruth_is_crowd"])
        )
        counts["instance_mask_pixel_mismatches"] += int(
            np.sum(a["groundtruth_instance_masks"] != b["groundtruth_instance_masks"])
        )
        counts["class_mismatches_contiguous_vs_coco_ids"] += int(
            np.sum(a["groundtruth_classes"] != b["groundtruth_classes"])
        )
        counts["class_mismatches_after_mapping_coco_category_ids"] += int(
            np.sum(to_coco[a["groundtruth_classes"]] != b["groundtruth_classes"])
        )
        counts["class_mismatches_keep_category_ids"] += int(
            np.sum(k["groundtruth_classes"] != b["groundtruth_classes"])
        )
    report.update(max_abs_diff=dict(figures), **counts)
    # Raw tf.Example features: which keys each side writes, and values that differ.
    differing: dict = {}
    keys_ours, keys_mg = set(), set()
    for sid in sorted(set(raw_ours) & set(raw_mg)):
        fa, fb = raw_ours[sid].features.feature, raw_mg[sid].features.feature
        keys_ours |= set(fa)
        keys_mg |= set(fb)
        for key in sorted(set(fa) & set(fb)):
            va, vb = _feature_value(fa[key]), _feature_value(fb[key])
            if key == keys.OBJECT_MASK:
                # PNG encoder settings may differ; the decoded pixels are compared above.
                continue
            if va != vb and key not in differing:
                differing[key] = {"ours": _show(va), "modelgarden": _show(vb)}
    report["raw_keys_compared"] = sorted(keys_ours & keys_mg)
    report["raw_keys_only_ours"] = sorted(keys_ours - keys_mg)
    report["raw_keys_only_modelgarden"] = sorted(keys_mg - keys_ours)
    report["raw_values_differing (first record that differs)"] = differing
    return report


def compare_panoptic(ours_files, mg_files, categories) -> dict:
    """Category, instance and semantic masks of the two converters' panoptic records."""
    spec = {
        keys.IMAGE_SOURCE_ID: tf.io.FixedLenFeature([], tf.string),
        keys.SEGMENTATION_CLASS_ENCODED: tf.io.FixedLenFeature([], tf.string),
        keys.PANOPTIC_CATEGORY_MASK: tf.io.FixedLenFeature([], tf.string),
        keys.PANOPTIC_INSTANCE_MASK: tf.io.FixedLenFeature([], tf.string),
    }

    def read(files):
        out = {}
        for record in tf.data.TFRecordDataset(files):
            p = tf.io.parse_single_example(record, spec)
            out[p[keys.IMAGE_SOURCE_ID].numpy().decode()] = {
                k: tf.io.decode_png(p[k], channels=1).numpy()[..., 0] for k in list(spec)[1:]
            }
        return out

    ours, mg = read(ours_files), read(mg_files)
    is_thing = {c["id"]: bool(c["isthing"]) for c in categories}
    ids = sorted(is_thing)
    # Model Garden's semantic layout, from a category mask: things → 1, stuff → id - 90, void 0.
    mg_layout = np.zeros(256, np.int64)
    for c in ids:
        mg_layout[c] = 1 if is_thing[c] else c - 90
    counts = defaultdict(int)
    for sid in sorted(set(ours) & set(mg)):
        a, b = ours[sid], mg[sid]
        counts["pixels_compared"] += a[keys.PANOPTIC_CATEGORY_MASK].size
        counts["thing_pixels_modelgarden"] += int(np.sum(b[keys.PANOPTIC_INSTANCE_MASK] > 0))
        counts["void_pixels_modelgarden"] += int(np.sum(b[keys.PANOPTIC_CATEGORY_MASK] == 0))
        for key, name in (
            (keys.PANOPTIC_CATEGORY_MASK, "category_mask"),
            (keys.PANOPTIC_INSTANCE_MASK, "instance_mask"),
        ):
            counts[f"{name}_pixel_mismatches"] += int(np.sum(a[key] != b[key]))
        ours_sem, mg_sem = a[keys.SEGMENTATION_CLASS_ENCODED], b[keys.SEGMENTATION_CLASS_ENCODED]
        counts["semantic_pixels_differing_by_design"] += int(np.sum(ours_sem != mg_sem))
        expected = mg_layout[a[keys.PANOPTIC_CATEGORY_MASK]]
        counts["semantic_mismatches_after_mapping_to_modelgarden_layout"] += int(
            np.sum(expected != mg_sem)
        )
    return {
        "records_compared": len(set(ours) & set(mg)),
        "records_only_ours": sorted(set(ours) - set(mg)),
        "records_only_modelgarden": sorted(set(mg) - set(ours)),
        **counts,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modelgarden-python", default=DEFAULT_MG_PYTHON)
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not os.path.exists(args.modelgarden_python):
        sys.exit(f"Model Garden interpreter not found: {args.modelgarden_python}")

    with tempfile.TemporaryDirectory() as tmp:
        paths = build_inputs(os.path.join(tmp, "in"), args.images, args.size, args.seed)
        ours = convert_ours(paths, os.path.join(tmp, "ours"))
        mg = convert_modelgarden(args.modelgarden_python, paths, os.path.join(tmp, "mg"))
        jobs = [
            {"name": f"ours_{name}", "kind": name, "files": _tfrecord_files(ours[name][0])}
            for name in ("detection", "segmentation", "classification")
        ]
        jobs.append(
            {"name": "mg_detection", "kind": "detection", "files": mg["detection"]["files"]}
        )
        arrays_ours, notes_ours = run_worker(sys.executable, jobs, tmp, "vision_core")
        arrays_mg, notes_mg = run_worker(args.modelgarden_python, jobs, tmp, "modelgarden")
        errors = {
            side: {job: n["error"] for job, n in notes.items() if "error" in n}
            for side, notes in (("vision_core", notes_ours), ("modelgarden", notes_mg))
        }
        with open(paths["panoptic"]) as f:
            panoptic_categories = json.load(f)["categories"]
        summary_det = ours["detection"][1]
        report = {
            "benchmark": "modelgarden_tfrecord_interop",
            "versions": {
                "vision_core_side": notes_ours["_versions"],
                "modelgarden_side": notes_mg["_versions"],
            },
            "dataset": {
                "images": args.images,
                "size": args.size,
                "seed": args.seed,
                "coco_category_ids": summary_det["coco_category_ids"],
                "our_class_names": summary_det["class_names"],
                "objects": sum(summary_det["splits"][SPLIT]["class_histogram"].values()),
            },
            "worker_errors": errors,
            "ours_to_modelgarden": {
                job["name"]: compare_job(arrays_ours, arrays_mg, job["name"]) for job in jobs[:3]
            },
            "modelgarden_to_ours": {
                "mg_detection": compare_job(arrays_ours, arrays_mg, "mg_detection")
            },
            "classification_default_decode_jpeg_only": {
                "vision_core": notes_ours["ours_classification"].get(
                    "default_decode_jpeg_only_parses_png"
                ),
                "modelgarden": notes_mg["ours_classification"].get(
                    "default_decode_jpeg_only_parses_png"
                ),
                "modelgarden_error": notes_mg["ours_classification"].get(
                    "default_decode_jpeg_only_error"
                ),
            },
            "modelgarden_converter_runs": {
                name: {k: v for k, v in r.items() if k != "files"} | {"files": len(r["files"])}
                for name, r in mg.items()
            },
            "converters_detection": compare_converters(
                _tfrecord_files(ours["detection"][0]),
                _tfrecord_files(ours["detection_kept"][0]),
                mg["detection"]["files"],
                summary_det["coco_category_ids"],
            ),
        }
        report["notes"] = [
            "Class ids: our converter numbers the categories 1..N (coco_category_ids maps them "
            "back); Model Garden's create_coco_tf_record writes the COCO ids themselves. "
            "keep_category_ids=True (CLI --keep-category-ids) writes the COCO ids as well.",
            "Model Garden's panoptic decoder (official/projects/panoptic/dataloaders) is not in "
            "the tf-models-official wheel, so our panoptic records are checked against its "
            "converter's records (converters_panoptic) rather than decoded by it.",
            "panoptic_as_is is Model Garden's tool unchanged: under NumPy 2 its PNG reader "
            "overflows (uint8 * 256); 'panoptic' runs the same tool with the reader widened.",
        ]
        if mg["panoptic"]["files"] and mg["panoptic"]["returncode"] == 0:
            report["converters_panoptic"] = compare_panoptic(
                _tfrecord_files(ours["panoptic"][0]),
                mg["panoptic"]["files"],
                panoptic_categories,
            )
    print(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()

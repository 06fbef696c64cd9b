"""Numerical parity of the detection ops with Model Garden, on identical inputs.

Compares anchors, box encoding/decoding, clipping and IoU, the anchor labeler, the RetinaNet
loss (Model Garden's `RetinaNetTask.build_losses`) and both detection generators (every NMS
version, class-agnostic NMS, soft-NMS, a pool too small for the detections asked for, and
sparse scores). Inputs are drawn here with a fixed seed and handed to
`detection_worker.py` under each library's interpreter. Prints one JSON object of maximum
absolute differences (and, for detections, count and class mismatches); needs the reference
venv (../shared/tools/modelgarden-venv.sh).

    python benchmarks/modelgarden_detection_parity.py [--modelgarden-python PY]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "detection_worker.py")
DEFAULT_MG_PYTHON = os.path.expanduser("~/.cache/modelgarden-venv/bin/python")
sys.path.insert(0, HERE)
from detection_worker import GENERATOR_CASES, TWO_STAGE_CASES  # noqa: E402

LEVELS = range(3, 8)
ANCHORS_PER_LOCATION = 9


def _random_boxes(rng: np.random.Generator, count: int, size: float) -> np.ndarray:
    corner = rng.uniform(0, size * 0.8, [count, 2])
    extent = rng.uniform(8, size * 0.5, [count, 2])
    return np.concatenate([corner, corner + extent], axis=-1).astype(np.float32)


def make_inputs(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    data = {
        "boxes": _random_boxes(rng, 20, 256),
        "anchor_rows": _random_boxes(rng, 20, 256),
        "codes": rng.normal(0, 1, [20, 4]).astype(np.float32),
    }
    data["codes"][:3, 2:] = 6.0  # above log(1000/16): decode must clamp
    overlap_gt = _random_boxes(rng, 10, 256).reshape(2, 5, 4)
    overlap_gt[:, 3:] = -1.0  # padded groundtruth rows
    overlap_boxes = _random_boxes(rng, 20, 256).reshape(2, 10, 4)
    overlap_boxes[1, -1] = -1.0  # a padded box row
    data.update(overlap_gt=overlap_gt, overlap_boxes=overlap_boxes)

    for i in range(2):
        data[f"gt_boxes_{i}"] = _random_boxes(rng, 6, 256)
        data[f"gt_labels_{i}"] = rng.integers(1, 21, 6).astype(np.int64)
        data[f"gt_weights_{i}"] = rng.uniform(0.5, 1.0, 6).astype(np.float32)
    data["loss_classes"] = np.array(21)
    for level in LEVELS:
        side = 256 // 2**level
        shape = [2, side, side, ANCHORS_PER_LOCATION]
        data[f"loss_cls_{level}"] = rng.normal(-4, 1.5, shape[:3] + [9 * 21]).astype(np.float32)
        data[f"loss_box_{level}"] = rng.normal(0, 0.3, shape[:3] + [9 * 4]).astype(np.float32)
        logits = rng.normal(-4, 1.5, shape[:3] + [9 * 21]).astype(np.float32)
        data[f"gen_scores_{level}"] = logits
        data[f"sparse_scores_{level}"] = logits - 4.0
        data[f"gen_boxes_{level}"] = rng.normal(0, 0.5, shape[:3] + [9 * 4]).astype(np.float32)

    rois = _random_boxes(rng, 200, 256).reshape(2, 100, 4)
    data.update(
        rois=rois,
        roi_scores=rng.normal(0, 2, [2, 100, 21]).astype(np.float32),
        roi_boxes=rng.normal(0, 0.3, [2, 100, 21 * 4]).astype(np.float32),
    )
    return data


def _run(python: str, impl: str, inputs: str, outputs: str) -> dict[str, np.ndarray] | dict:
    cmd = [python, WORKER, "--impl", impl, "--mode", "parity", "--inputs", inputs]
    proc = subprocess.run([*cmd, "--outputs", outputs], capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-3:], "command": cmd}
    return dict(np.load(outputs))


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        return float("nan")
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)), initial=0.0))


def _compare_detections(ours: dict, theirs: dict, prefix: str) -> dict:
    count_ours = ours[f"{prefix}_num_detections"]
    count_theirs = theirs[f"{prefix}_num_detections"]
    report = {
        "num_detections": count_ours.tolist(),
        "num_detections_modelgarden": count_theirs.tolist(),
    }
    box_diff = score_diff = 0.0
    class_mismatches = 0
    for image, (n_ours, n_theirs) in enumerate(zip(count_ours, count_theirs)):
        n = min(n_ours, n_theirs)
        sl = (image, slice(0, n))
        box_diff = max(
            box_diff,
            _max_abs(
                ours[f"{prefix}_detection_boxes"][sl], theirs[f"{prefix}_detection_boxes"][sl]
            ),
        )
        score_diff = max(
            score_diff,
            _max_abs(
                ours[f"{prefix}_detection_scores"][sl], theirs[f"{prefix}_detection_scores"][sl]
            ),
        )
        class_mismatches += int(
            np.sum(
                ours[f"{prefix}_detection_classes"][sl] != theirs[f"{prefix}_detection_classes"][sl]
            )
        )
    report.update(boxes=box_diff, scores=score_diff, class_mismatches=class_mismatches)
    return report


def compare(ours: dict, theirs: dict) -> dict:
    report: dict = {}
    report["anchors"] = max(_max_abs(ours[k], theirs[k]) for k in ours if k.startswith("anchors_"))
    for key in (
        "encode_plain",
        "encode_weighted",
        "decode_plain",
        "decode_weighted",
        "bbox_overlap",
        "clip_boxes",
        "loss",
    ):
        report[key] = _max_abs(ours[key], theirs[key])
    labels = {"cls_targets": 0.0, "cls_weights": 0.0, "box_weights": 0.0, "box_targets": 0.0}
    for i in range(2):
        for key in ("cls_targets", "cls_weights", "box_weights"):
            labels[key] = max(
                labels[key], _max_abs(ours[f"label_{key}_{i}"], theirs[f"label_{key}_{i}"])
            )
        # Model Garden leaves an unused encoding at non-positive anchors; compare positives.
        positive = theirs[f"label_box_weights_{i}"] > 0
        labels["box_targets"] = max(
            labels["box_targets"],
            _max_abs(
                ours[f"label_box_targets_{i}"][positive], theirs[f"label_box_targets_{i}"][positive]
            ),
        )
        labels[f"positives_image{i}"] = int(positive.sum())
    report["anchor_labeler"] = labels
    report["multilevel_detection_generator"] = {
        name: _compare_detections(ours, theirs, f"gen_{name}") for name in GENERATOR_CASES
    }
    report["detection_generator"] = {
        name: _compare_detections(ours, theirs, f"two_stage_{name}") for name in TWO_STAGE_CASES
    }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modelgarden-python", default=DEFAULT_MG_PYTHON)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not os.path.exists(args.modelgarden_python):
        sys.exit(f"Model Garden interpreter not found: {args.modelgarden_python}")

    with tempfile.TemporaryDirectory() as tmp:
        inputs = os.path.join(tmp, "inputs.npz")
        np.savez(inputs, **make_inputs(args.seed))
        ours = _run(sys.executable, "vision_core", inputs, os.path.join(tmp, "ours.npz"))
        theirs = _run(args.modelgarden_python, "modelgarden", inputs, os.path.join(tmp, "mg.npz"))
    if "error" in ours or "error" in theirs:
        print(
            json.dumps(
                {"vision_core": ours.get("error"), "modelgarden": theirs.get("error")}, indent=2
            )
        )
        sys.exit(1)
    print(
        json.dumps(
            {
                "benchmark": "modelgarden_detection_parity",
                "seed": args.seed,
                "max_abs_diff": compare(ours, theirs),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

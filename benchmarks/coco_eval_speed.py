"""COCO evaluation time: our COCOEvaluator vs plain pycocotools on the same detections.

Synthetic COCO-sized validation: `--num-images` images of 640x480 with about 7 objects each
(1-13, uniform) over 80 categories, and 100 detections per image (groundtruth boxes jittered by a
few pixels, mostly with the right class, plus random boxes), scores uniform.

Timed, each from the same numpy arrays:
- `pycocotools`: COCO.loadRes on the result list + COCOeval evaluate / accumulate / summarize
  (the result list and the groundtruth COCO object are built before the clock starts).
- `ours_pycocotools`: COCOEvaluator.update_state per batch + result() (conversion included).
- `ours_faster_coco_eval`: the same with backend='faster_coco_eval' (when installed).

Prints one JSON object with the seconds, the speed-ups and the largest difference between the
evaluators' 12 summary numbers. Usage:
    python benchmarks/coco_eval_speed.py [--num-images 5000] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import time
from importlib import metadata

import numpy as np

SUMMARY = (
    "AP", "AP50", "AP75", "APs", "APm", "APl",
    "ARmax1", "ARmax10", "ARmax100", "ARs", "ARm", "ARl",
)  # fmt: skip
HEIGHT, WIDTH = 480, 640


def synthetic(num_images: int, num_classes: int, detections: int, seed: int) -> tuple[dict, dict]:
    """Batched groundtruths and predictions in the evaluator's format (pixels, yxyx)."""
    rng = np.random.default_rng(seed)
    max_objects = 13
    counts = rng.integers(1, max_objects + 1, num_images)
    # Object sizes spread over COCO's small / medium / large ranges.
    sizes = np.exp(rng.uniform(np.log(8), np.log(300), (num_images, max_objects, 2)))
    sizes = np.minimum(sizes, [HEIGHT - 1, WIDTH - 1])
    corner = rng.uniform(0, 1, (num_images, max_objects, 2)) * ([HEIGHT, WIDTH] - sizes)
    boxes = np.concatenate([corner, corner + sizes], -1)
    classes = rng.integers(1, num_classes + 1, (num_images, max_objects))
    valid = np.arange(max_objects)[None] < counts[:, None]
    groundtruths = {
        "source_id": np.arange(1, num_images + 1),
        "height": np.full(num_images, HEIGHT),
        "width": np.full(num_images, WIDTH),
        "num_detections": counts,
        "boxes": np.where(valid[..., None], boxes, -1.0),
        "classes": np.where(valid, classes, -1),
        "is_crowds": ((rng.uniform(size=classes.shape) < 0.01) & valid).astype(np.int64),
        "areas": np.where(valid, sizes[..., 0] * sizes[..., 1], -1.0),
    }
    pick = (rng.uniform(size=(num_images, detections)) * counts[:, None]).astype(np.int64)
    det_boxes = np.take_along_axis(boxes, pick[..., None], 1)
    det_boxes = det_boxes + rng.normal(0, 0.06, det_boxes.shape) * np.tile(
        np.take_along_axis(sizes, pick[..., None], 1), 2
    )
    random_corner = rng.uniform(0, [HEIGHT - 20, WIDTH - 20], (num_images, detections, 2))
    random_boxes = np.concatenate(
        [random_corner, random_corner + rng.uniform(8, 200, (num_images, detections, 2))], -1
    )
    is_random = rng.uniform(size=(num_images, detections)) < 0.5
    det_classes = np.where(
        rng.uniform(size=(num_images, detections)) < 0.85,
        np.take_along_axis(classes, pick, 1),
        rng.integers(1, num_classes + 1, (num_images, detections)),
    )
    predictions = {
        "source_id": groundtruths["source_id"],
        "detection_boxes": np.clip(
            np.where(is_random[..., None], random_boxes, det_boxes), 0, [HEIGHT, WIDTH] * 2
        ).astype(np.float32),
        "detection_classes": det_classes,
        "detection_scores": rng.uniform(size=(num_images, detections)).astype(np.float32),
        "num_detections": np.full(num_images, detections),
        "image_info": np.tile(
            np.array([[HEIGHT, WIDTH], [HEIGHT, WIDTH], [1.0, 1.0], [0.0, 0.0]], np.float32),
            (num_images, 1, 1),
        ),
    }
    return groundtruths, predictions


def plain_pycocotools(groundtruths: dict, predictions: dict) -> tuple[float, list[float]]:
    """Seconds for loadRes + evaluate + accumulate + summarize, and the 12 stats."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from vision_core.evaluation import coco_utils

    dataset = coco_utils.convert_groundtruths_to_coco_dataset(groundtruths)
    for i, ann in enumerate(dataset["annotations"]):
        ann["id"] = i + 1
    results = coco_utils.convert_predictions_to_coco_annotations(predictions)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = dataset
        gt.createIndex()
        tic = time.perf_counter()
        coco_eval = COCOeval(gt, gt.loadRes(results), "bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
        seconds = time.perf_counter() - tic
    return seconds, [float(v) for v in coco_eval.stats]


def ours(groundtruths: dict, predictions: dict, batch_size: int, backend: str):
    """Seconds for update_state over all batches + result(), and the 12 stats."""
    from vision_core.evaluation import coco_evaluator

    evaluator = coco_evaluator.COCOEvaluator(backend=backend)
    num_images = len(groundtruths["source_id"])
    tic = time.perf_counter()
    for start in range(0, num_images, batch_size):
        part = slice(start, start + batch_size)
        evaluator.update_state(
            {k: v[part] for k, v in groundtruths.items()},
            {k: v[part] for k, v in predictions.items()},
        )
    result = evaluator.result()
    seconds = time.perf_counter() - tic
    return seconds, [result[k] for k in SUMMARY]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--num-images", type=int, default=5000)
    parser.add_argument("--num-classes", type=int, default=80)
    parser.add_argument("--detections", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    groundtruths, predictions = synthetic(
        args.num_images, args.num_classes, args.detections, args.seed
    )
    timings, stats = {}, {}
    timings["pycocotools"], stats["pycocotools"] = plain_pycocotools(groundtruths, predictions)
    backends = ["pycocotools"]
    versions = {"pycocotools": metadata.version("pycocotools")}
    try:
        versions["faster_coco_eval"] = metadata.version("faster-coco-eval")
        backends.append("faster_coco_eval")
    except metadata.PackageNotFoundError:
        pass
    for backend in backends:
        name = f"ours_{backend}"
        timings[name], stats[name] = ours(groundtruths, predictions, args.batch_size, backend)
    reference = np.array(stats["pycocotools"])
    print(
        json.dumps(
            {
                "benchmark": "coco_eval_speed",
                "command": "python benchmarks/coco_eval_speed.py "
                + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
                "num_images": args.num_images,
                "groundtruth_objects": int(groundtruths["num_detections"].sum()),
                "detections": int(predictions["num_detections"].sum()),
                "seconds": {k: round(v, 2) for k, v in timings.items()},
                "speedup_vs_pycocotools": {
                    k: round(timings["pycocotools"] / v, 2)
                    for k, v in timings.items()
                    if k != "pycocotools"
                },
                "AP": {k: round(v[0], 6) for k, v in stats.items()},
                "max_abs_stat_difference_vs_pycocotools": {
                    k: float(np.max(np.abs(np.array(v) - reference)))
                    for k, v in stats.items()
                    if k != "pycocotools"
                },
                "versions": versions,
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

"""Runs detection ops in one library; used by `detection_postprocess.py` and
`modelgarden_detection_parity.py`.

It runs under either environment: `--impl vision_core` (this project's venv) or
`--impl modelgarden` (the reference venv from ../shared/tools/modelgarden-venv.sh, which has
`official.vision` but not vision_core). Both sides import modules of the same names and call
them the same way, so the figures and arrays describe the same computation. Inputs come from
an .npz written by the caller, so both libraries see identical numbers.

    python benchmarks/detection_worker.py --impl vision_core --mode time --inputs IN.npz
    python benchmarks/detection_worker.py --impl modelgarden --mode parity --inputs IN.npz \
        --outputs OUT.npz
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# Generator settings compared in parity mode: name -> (raw score inputs, constructor overrides).
# "gen" logits are dense (about a quarter of the pairs above the 0.05 threshold), "sparse"
# ones leave fewer candidates than max_num_detections.
GENERATOR_CASES = {
    "v1": ("gen", {"nms_version": "v1"}),
    "v2": ("gen", {"nms_version": "v2"}),
    "batched": ("gen", {"nms_version": "batched"}),
    "v2_class_agnostic": ("gen", {"nms_version": "v2", "use_class_agnostic_nms": True}),
    "v1_soft_nms": ("gen", {"nms_version": "v1", "soft_nms_sigma": 0.5}),
    # A pool of 50 candidates cannot yield 100 detections: exercises the exact fallback.
    "v2_top_k_50": ("gen", {"nms_version": "v2", "pre_nms_top_k": 50}),
    "sparse_v1": ("sparse", {"nms_version": "v1"}),
    "sparse_v2": ("sparse", {"nms_version": "v2"}),
    "sparse_batched": ("sparse", {"nms_version": "batched"}),
}
TWO_STAGE_CASES = ("v1", "v2", "batched")


def _modules(impl: str):
    if impl == "modelgarden":
        from official.vision.modeling.layers import detection_generator
        from official.vision.ops import anchor, box_ops
    else:
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from vision_core.modeling.layers import detection_generator
        from vision_core.ops import anchor, box_ops
    return anchor, box_ops, detection_generator


def _levels(data: dict, prefix: str, batch_slice=slice(None)) -> dict:
    import tensorflow as tf

    return {
        key[len(prefix) :]: tf.constant(value[batch_slice])
        for key, value in data.items()
        if key.startswith(prefix)
    }


def _retinanet_loss(impl: str, outputs: dict, labels: dict, num_classes: int):
    """(total, cls, box) from Model Garden's RetinaNetTask.build_losses or ours."""
    if impl == "modelgarden":
        from official.vision.configs import retinanet as retinanet_cfg
        from official.vision.tasks import retinanet as retinanet_task

        config = retinanet_cfg.RetinaNetTask(model=retinanet_cfg.RetinaNet(num_classes=num_classes))
        task = retinanet_task.RetinaNetTask(config)
        total, cls_loss, box_loss, _ = task.build_losses(outputs, labels)
        return total, cls_loss, box_loss
    from vision_core.losses import retinanet_losses

    return retinanet_losses.retinanet_loss(
        outputs["cls_outputs"], outputs["box_outputs"], labels, num_classes
    )


def parity(impl: str, data: dict) -> dict[str, np.ndarray]:
    import tensorflow as tf

    anchor, box_ops, detection_generator = _modules(impl)
    out: dict[str, np.ndarray] = {}
    # Anchors, including a size that is not a multiple of the strides.
    for size in ([256, 256], [100, 150]):
        boxes = anchor.Anchor(3, 7, 3, [0.5, 1.0, 2.0], 4.0, size).multilevel_boxes
        for level, value in boxes.items():
            out[f"anchors_{size[0]}x{size[1]}_{level}"] = value.numpy()

    # Box coding and overlaps.
    boxes, anchors = tf.constant(data["boxes"]), tf.constant(data["anchor_rows"])
    for name, weights in (("plain", None), ("weighted", [10.0, 10.0, 5.0, 5.0])):
        out[f"encode_{name}"] = box_ops.encode_boxes(boxes, anchors, weights).numpy()
        codes = tf.constant(data["codes"])
        out[f"decode_{name}"] = box_ops.decode_boxes(codes, anchors, weights).numpy()
    out["bbox_overlap"] = box_ops.bbox_overlap(
        tf.constant(data["overlap_boxes"]), tf.constant(data["overlap_gt"])
    ).numpy()
    out["clip_boxes"] = box_ops.clip_boxes(codes * 100.0, [64.0, 48.0]).numpy()

    # Anchor labels for two images, then the RetinaNet loss on the batch.
    multilevel = anchor.Anchor(3, 7, 3, [0.5, 1.0, 2.0], 4.0, [256, 256]).multilevel_boxes
    labeler = anchor.AnchorLabeler(match_threshold=0.5, unmatched_threshold=0.4)
    per_image = []
    for i in range(2):
        result = labeler.label_anchors(
            multilevel,
            tf.constant(data[f"gt_boxes_{i}"]),
            tf.constant(data[f"gt_labels_{i}"])[:, None],
            gt_weights=tf.constant(data[f"gt_weights_{i}"]),
        )
        cls_t, box_t, _, cls_w, box_w = result
        flat_cls = np.concatenate([v.numpy().reshape(-1) for v in cls_t.values()])
        flat_box = np.concatenate([v.numpy().reshape(-1, 4) for v in box_t.values()])
        out[f"label_cls_targets_{i}"] = flat_cls
        out[f"label_box_targets_{i}"] = flat_box
        out[f"label_cls_weights_{i}"] = cls_w.numpy()
        out[f"label_box_weights_{i}"] = box_w.numpy()
        per_image.append((cls_t, box_t, cls_w, box_w))
    labels = {
        "cls_targets": {lv: tf.stack([p[0][lv] for p in per_image]) for lv in multilevel},
        "box_targets": {lv: tf.stack([p[1][lv] for p in per_image]) for lv in multilevel},
        "cls_weights": tf.stack([p[2] for p in per_image]),
        "box_weights": tf.stack([p[3] for p in per_image]),
    }
    outputs = {
        "cls_outputs": _levels(data, "loss_cls_"),
        "box_outputs": _levels(data, "loss_box_"),
    }
    total, cls_loss, box_loss = _retinanet_loss(impl, outputs, labels, int(data["loss_classes"]))
    out["loss"] = np.array([float(total), float(cls_loss), float(box_loss)])

    # One-stage generator on RetinaNet-shaped raw outputs.
    gen_anchors = {lv: tf.tile(a[None], [2, 1, 1, 1]) for lv, a in multilevel.items()}
    image_shape = tf.constant([[256.0, 256.0], [200.0, 240.0]])
    raw_boxes = _levels(data, "gen_boxes_")
    for name, (inputs, overrides) in GENERATOR_CASES.items():
        raw_scores = _levels(data, f"{inputs}_scores_")
        gen = detection_generator.MultilevelDetectionGenerator(**overrides)
        result = tf.function(gen.__call__)(raw_boxes, raw_scores, gen_anchors, image_shape)
        for key in ("detection_boxes", "detection_scores", "detection_classes", "num_detections"):
            out[f"gen_{name}_{key}"] = result[key].numpy()

    # Two-stage generator on per-RoI outputs.
    for version in TWO_STAGE_CASES:
        gen = detection_generator.DetectionGenerator(nms_version=version)
        result = tf.function(gen.__call__)(
            tf.constant(data["roi_boxes"]),
            tf.constant(data["roi_scores"]),
            tf.constant(data["rois"]),
            tf.constant([[256.0, 256.0], [200.0, 240.0]]),
        )
        for key in ("detection_boxes", "detection_scores", "detection_classes", "num_detections"):
            out[f"two_stage_{version}_{key}"] = result[key].numpy()
    return out


def timing(impl: str, data: dict, versions: list[str], repeats: int) -> dict:
    import tensorflow as tf

    anchor, _, detection_generator = _modules(impl)
    results = {}
    for size in (int(s) for s in data["sizes"]):
        multilevel = anchor.Anchor(3, 7, 3, [0.5, 1.0, 2.0], 4.0, [size, size]).multilevel_boxes
        anchors = {lv: a[None] for lv, a in multilevel.items()}
        raw_scores = _levels(data, f"scores_{size}_")
        raw_boxes = _levels(data, f"boxes_{size}_")
        image_shape = tf.constant([[float(size), float(size)]])
        for version in versions:
            gen = detection_generator.MultilevelDetectionGenerator(nms_version=version)
            fn = tf.function(gen.__call__)
            start = time.perf_counter()
            fn(raw_boxes, raw_scores, anchors, image_shape)["num_detections"].numpy()
            first = time.perf_counter() - start
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                fn(raw_boxes, raw_scores, anchors, image_shape)["num_detections"].numpy()
                times.append(time.perf_counter() - start)
            results[f"{version}@{size}"] = {
                "first_call_s": first,
                "median_s": statistics.median(times),
                "min_s": min(times),
            }
    return {"impl": impl, "tensorflow": tf.__version__, "results": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--impl", choices=["vision_core", "modelgarden"], required=True)
    parser.add_argument("--mode", choices=["time", "parity"], required=True)
    parser.add_argument("--inputs", required=True)
    parser.add_argument("--outputs", help="parity mode: .npz to write")
    parser.add_argument("--versions", nargs="+", default=["v2"])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)

    data = dict(np.load(args.inputs))
    if args.mode == "parity":
        np.savez(args.outputs, **parity(args.impl, data))
        print(json.dumps({"impl": args.impl, "outputs": args.outputs}))
    else:
        print(json.dumps(timing(args.impl, data, args.versions, args.repeats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

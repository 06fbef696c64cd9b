"""COCO detection (and instance mask) evaluation (Model Garden's
`official.vision.evaluation.coco_evaluator`).

    evaluator = COCOEvaluator(annotation_file=None, include_mask=False)
    for groundtruths, predictions in batches:       # dicts of numpy arrays or tensors
        evaluator.update_state(groundtruths, predictions)
    metrics = evaluator.result()                    # {'AP': ..., 'AP50': ..., ...}; resets

The matching and averaging are pycocotools' COCOeval (or, with `backend='faster_coco_eval'`,
faster-coco-eval's C++ port of the same algorithm). This module only converts batches to COCO
form and reads COCOeval's precision/recall tables back, so the figures are the ones the COCO
leaderboard computes.

Differences from Model Garden, all deliberate:
- Metrics are Python floats (Model Garden returns numpy float32).
- Per-category metrics work with stock pycocotools (Model Garden reads a `category_stats` field
  that only its internal fork has, so they come out empty) and are always keyed by category id;
  with known category names a `per_category_ap` {name: AP} mapping is added.
- Only the first `num_detections` detections of an image are evaluated, and an image evaluated
  twice (e.g. a padded last batch) counts once.
- Every image passed to `update_state` is evaluated, also one without detections (Model Garden
  takes the image list from the detections, so such an image's objects would go unmissed).
- Keypoint evaluation is not implemented.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vision_core.evaluation import coco_utils

logger = logging.getLogger(__name__)

# (name, average precision?, IoU threshold or None for 0.50:0.95, area range, maxDets index):
# the rows of COCOeval.summarize() for boxes and masks, in its order.
_SUMMARY_ROWS = (
    ("AP", True, None, "all", 2),
    ("AP50", True, 0.5, "all", 2),
    ("AP75", True, 0.75, "all", 2),
    ("APs", True, None, "small", 2),
    ("APm", True, None, "medium", 2),
    ("APl", True, None, "large", 2),
    ("ARmax1", False, None, "all", 0),
    ("ARmax10", False, None, "all", 1),
    ("ARmax100", False, None, "all", 2),
    ("ARs", False, None, "small", 2),
    ("ARm", False, None, "medium", 2),
    ("ARl", False, None, "large", 2),
)
# Model Garden's per-category names for the same rows, in the same order.
_PER_CATEGORY_NAMES = (
    "Precision mAP ByCategory",
    "Precision mAP ByCategory@50IoU",
    "Precision mAP ByCategory@75IoU",
    "Precision mAP ByCategory (small)",
    "Precision mAP ByCategory (medium)",
    "Precision mAP ByCategory (large)",
    "Recall AR@1 ByCategory",
    "Recall AR@10 ByCategory",
    "Recall AR@100 ByCategory",
    "Recall AR (small) ByCategory",
    "Recall AR (medium) ByCategory",
    "Recall AR (large) ByCategory",
)
MASK_COORDINATES = ("box", "image")


def summarize(coco_eval: Any, category_index: int | None = None) -> list[float]:
    """COCOeval's 12 summary numbers, for all categories or for one, without printing.

    The same averages as `COCOeval.summarize()`: the mean of the precision (or recall) entries
    that are not -1 for the row's IoU thresholds, area range and detection limit; -1 when there
    are none (no groundtruth). Unlike `summarize()`, 'AP' uses the last detection limit even
    when it is not 100.

    Args:
      coco_eval: a COCOeval after `evaluate()` and `accumulate()`.
      category_index: a position in `coco_eval.params.catIds`, or None for all categories.
    """
    params = coco_eval.params
    precision = np.asarray(coco_eval.eval["precision"])  # [T, R, K, A, M]
    recall = np.asarray(coco_eval.eval["recall"])  # [T, K, A, M]
    if category_index is not None:
        precision = precision[:, :, category_index : category_index + 1]
        recall = recall[:, category_index : category_index + 1]
    area_labels = list(params.areaRngLbl)
    iou_thresholds = np.asarray(params.iouThrs)
    stats = []
    for _, is_ap, iou, area, max_det in _SUMMARY_ROWS:
        table = precision if is_ap else recall
        values = table[..., area_labels.index(area), max_det]
        if iou is not None:
            values = values[np.isclose(iou_thresholds, iou)]
        values = values[values > -1]
        stats.append(float(np.mean(values)) if values.size else -1.0)
    return stats


def _select(batch: Mapping[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
    """The kept examples of every per-example array in a batch."""
    return {k: v[keep] if v.ndim and v.shape[0] == keep.size else v for k, v in batch.items()}


class COCOEvaluator:
    """Accumulates detections (and groundtruths) batch by batch; `result()` gives COCO AP/AR."""

    def __init__(
        self,
        annotation_file: str | None = None,
        include_mask: bool = False,
        need_rescale_bboxes: bool = True,
        per_category_metrics: bool = False,
        max_num_eval_detections: int = 100,
        *,
        category_names: Mapping[int, str] | Sequence[str] | None = None,
        mask_coordinates: str = "box",
        backend: str = "pycocotools",
    ):
        """Initializes the evaluator.

        Args:
          annotation_file: a COCO instances JSON (local or gs://) holding the groundtruth of the
            evaluated images, e.g. the convert step's `annotations/instances_validation.json`.
            None: the groundtruth comes with every `update_state` call.
          include_mask: also evaluate instance masks (`mask_`-prefixed metrics); predictions
            must carry `detection_masks` and groundtruths (without an annotation file) `masks`.
          need_rescale_bboxes: detection boxes are in the resized network input and are divided
            by `image_info[:, 2]` (the y/x scale) to get back to original-image pixels.
          per_category_metrics: add Model Garden's per-category entries
            ('Precision mAP ByCategory/<category id>', ...) and, when category names are known,
            `per_category_ap` {name: AP} over the categories that have groundtruth.
          max_num_eval_detections: the largest detection limit (COCO's maxDets[2]); the metric
            is named `ARmax<this>`.
          category_names: names by category id ({id: name}, or a sequence indexed by id); the
            annotation file's names are used when not given.
          mask_coordinates: 'box' — `detection_masks` are [B, K, mask_h, mask_w] relative to
            each box and are pasted into the original image (Model Garden's Mask R-CNN); 'image'
            — they are [B, K, H, W] in original-image pixels.
          backend: 'pycocotools' (the reference) or 'faster_coco_eval' (faster-coco-eval, the
            same algorithm in C++; must be installed).

        Raises:
          ValueError: a bad `max_num_eval_detections`, `mask_coordinates` or `backend`.
        """
        if isinstance(max_num_eval_detections, bool) or not isinstance(
            max_num_eval_detections, int | np.integer
        ):
            raise ValueError(
                f"max_num_eval_detections: expected an integer, got {max_num_eval_detections!r}"
            )
        if max_num_eval_detections < 10:
            raise ValueError(
                "max_num_eval_detections: expected >= 10 (the limits are 1, 10 and this), got "
                f"{max_num_eval_detections}"
            )
        if mask_coordinates not in MASK_COORDINATES:
            raise ValueError(
                f"mask_coordinates: expected one of {MASK_COORDINATES}, got {mask_coordinates!r}"
            )
        coco_utils.coco_classes(backend)  # Fails now, not after a whole evaluation pass.
        self._annotation_file = annotation_file or None
        self._include_mask = bool(include_mask)
        self._need_rescale_bboxes = bool(need_rescale_bboxes)
        self._per_category_metrics = bool(per_category_metrics)
        self.max_num_eval_detections = int(max_num_eval_detections)
        if category_names is not None and not isinstance(category_names, Mapping):
            category_names = dict(enumerate(category_names))
        self._category_names = {int(k): str(v) for k, v in (category_names or {}).items()}
        self._mask_coordinates = mask_coordinates
        self._backend = backend
        self._metric_names = [name for name, *_ in _SUMMARY_ROWS]
        self._metric_names[8] = f"ARmax{self.max_num_eval_detections}"
        if self._include_mask:
            self._metric_names += [f"mask_{name}" for name in self._metric_names[:12]]

        self._required_prediction_fields = [
            "source_id",
            "detection_classes",
            "detection_scores",
            "detection_boxes",
        ]
        if self._need_rescale_bboxes or (self._include_mask and mask_coordinates == "box"):
            self._required_prediction_fields.append("image_info")
        if self._include_mask:
            self._required_prediction_fields.append("detection_masks")
        self._required_groundtruth_fields = ["source_id", "height", "width", "classes", "boxes"]
        if self._include_mask:
            self._required_groundtruth_fields.append("masks")

        self._groundtruth = None
        if self._annotation_file:
            # Loaded once: the same file serves every evaluation pass.
            self._groundtruth = coco_utils.COCOWrapper(
                eval_type="mask" if self._include_mask else "box",
                annotation_file=self._annotation_file,
                backend=backend,
            )
        self.reset_states()

    @property
    def name(self) -> str:
        return "coco_metric"

    @property
    def metric_names(self) -> list[str]:
        """The summary metrics `result()` returns, in COCO's order."""
        return list(self._metric_names)

    def reset_states(self) -> None:
        """Forgets everything accumulated, for a fresh evaluation pass."""
        self._image_ids: list[int] = []
        self._seen_images: set[int] = set()
        self._detections: list[dict[str, Any]] = []
        self._gt_images: list[dict[str, Any]] = []
        self._gt_annotations: list[dict[str, Any]] = []
        self._gt_seen: set[int] = set()
        self._duplicates = 0

    def update_state(
        self, groundtruths: Mapping[str, Any] | None, predictions: Mapping[str, Any]
    ) -> None:
        """Adds one batch.

        Args:
          groundtruths: ignored with an annotation file (may be None); else numpy arrays or
            tensors: `source_id`, `height`, `width` [B], `boxes` [B, K, 4] ([ymin, xmin, ymax,
            xmax] in original-image pixels), `classes` [B, K], `num_detections` [B] (rows after
            it are padding), optional `is_crowds` and `areas` [B, K], and with `include_mask`
            `masks` ([B, K] PNG strings or [B, K, H, W] arrays).
          predictions: `source_id` [B] (the COCO image id), `detection_boxes` [B, N, 4] (pixels
            of the network input with `need_rescale_bboxes`, else of the original image),
            `detection_classes` and `detection_scores` [B, N], `num_detections` [B],
            `image_info` [B, 4, 2] (Model Garden's: original size, scaled size, scale, offset),
            and with `include_mask` `detection_masks`.

        Raises:
          ValueError: a required field is missing, or a source id is not an integer.
        """
        predictions = {k: coco_utils.to_numpy(v) for k, v in predictions.items()}
        missing = [k for k in self._required_prediction_fields if k not in predictions]
        if missing:
            raise ValueError(
                f"predictions: missing {missing}; required {self._required_prediction_fields}"
            )
        if self._need_rescale_bboxes:
            scale = predictions["image_info"][:, 2, :].astype(np.float64)  # [B, (y, x)]
            predictions["detection_boxes"] = (
                predictions["detection_boxes"] / np.tile(scale, 2)[:, None, :]
            )
        image_ids = coco_utils.source_ids_to_int(predictions["source_id"])
        keep = self._first_occurrences(image_ids, self._seen_images)
        if not keep.all():
            self._duplicates += int((~keep).sum())
            predictions = _select(predictions, keep)
            image_ids = image_ids[keep]
        self._seen_images.update(image_ids.tolist())
        self._image_ids.extend(image_ids.tolist())
        self._detections.extend(
            coco_utils.convert_predictions_to_coco_annotations(
                predictions, self._include_mask, self._mask_coordinates
            )
        )
        if self._annotation_file:
            return
        if groundtruths is None:
            raise ValueError("groundtruths: required when there is no annotation_file")
        groundtruths = {k: coco_utils.to_numpy(v) for k, v in groundtruths.items()}
        missing = [k for k in self._required_groundtruth_fields if k not in groundtruths]
        if missing:
            raise ValueError(
                f"groundtruths: missing {missing}; required {self._required_groundtruth_fields}"
            )
        gt_ids = coco_utils.source_ids_to_int(groundtruths["source_id"])
        keep = self._first_occurrences(gt_ids, self._gt_seen)
        if not keep.all():
            groundtruths = _select(groundtruths, keep)
            gt_ids = gt_ids[keep]
        self._gt_seen.update(gt_ids.tolist())
        dataset = coco_utils.convert_groundtruths_to_coco_dataset(
            groundtruths, include_mask=self._include_mask
        )
        self._gt_images.extend(dataset["images"])
        self._gt_annotations.extend(dataset["annotations"])

    @staticmethod
    def _first_occurrences(ids: np.ndarray, seen: set[int]) -> np.ndarray:
        keep = np.zeros(ids.shape, bool)
        batch_seen: set[int] = set()
        for i, value in enumerate(ids.tolist()):
            if value not in seen and value not in batch_seen:
                keep[i] = True
                batch_seen.add(value)
        return keep

    def result(self) -> dict[str, Any]:
        """Evaluates everything accumulated, then resets; see `evaluate`."""
        try:
            return self.evaluate()
        finally:
            self.reset_states()

    def _groundtruth_wrapper(self) -> coco_utils.COCOWrapper:
        if self._groundtruth is not None:
            return self._groundtruth
        annotations = [{**a, "id": i + 1} for i, a in enumerate(self._gt_annotations)]
        categories = sorted({a["category_id"] for a in annotations})
        dataset = {
            "images": list(self._gt_images),
            "annotations": annotations,
            "categories": [
                {"id": c, "name": self._category_names[c]}
                if c in self._category_names
                else {"id": c}
                for c in categories
            ],
        }
        return coco_utils.COCOWrapper(
            eval_type="mask" if self._include_mask else "box",
            gt_dataset=dataset,
            backend=self._backend,
        )

    def _run(self, groundtruth: coco_utils.COCOWrapper, eval_type: str) -> Any:
        results = groundtruth.load_results(self._detections, eval_type)
        iou_type = "segm" if eval_type == "mask" else "bbox"
        kwargs = {"print_function": logger.debug} if self._backend != "pycocotools" else {}
        with coco_utils.quiet_stdout():
            coco_eval = groundtruth.eval_cls(groundtruth.coco, results, iou_type, **kwargs)
            coco_eval.params.imgIds = sorted(self._image_ids)
            coco_eval.params.maxDets = [1, 10, self.max_num_eval_detections]
            coco_eval.evaluate()
            coco_eval.accumulate()
        return coco_eval

    def evaluate(self) -> dict[str, Any]:
        """COCO metrics of everything accumulated (without resetting).

        Returns:
          {'AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'ARmax1', 'ARmax10', 'ARmax100', 'ARs',
          'ARm', 'ARl'} as floats (-1 where there is no groundtruth to average over), the same
          with a `mask_` prefix with `include_mask`, and with `per_category_metrics` the
          per-category entries described in `__init__`.

        Raises:
          ValueError: nothing was accumulated, or a prediction's image is not in the
            annotation file.
        """
        if not self._image_ids:
            raise ValueError("nothing to evaluate: update_state was never called with images")
        if self._duplicates:
            logger.warning(
                "%d images were passed more than once; each is evaluated once", self._duplicates
            )
        groundtruth = self._groundtruth_wrapper()
        names = {**groundtruth.category_names(), **self._category_names}
        runs = [("", self._run(groundtruth, "box"))]
        if self._include_mask:
            runs.append(("mask_", self._run(groundtruth, "mask")))
        metrics: dict[str, Any] = {}
        for prefix, coco_eval in runs:
            for (name, *_), value in zip(_SUMMARY_ROWS, summarize(coco_eval)):
                if name == "ARmax100":
                    name = f"ARmax{self.max_num_eval_detections}"
                metrics[prefix + name] = value
            if self._per_category_metrics:
                metrics.update(self._per_category(coco_eval, prefix, names))
        return metrics

    @staticmethod
    def _per_category(coco_eval: Any, prefix: str, names: Mapping[int, str]) -> dict[str, Any]:
        key_prefix = "mask " if prefix else ""
        out: dict[str, Any] = {}
        by_name: dict[str, float] = {}
        for index, category_id in enumerate(coco_eval.params.catIds):
            stats = summarize(coco_eval, index)
            for key, value in zip(_PER_CATEGORY_NAMES, stats):
                out[f"{key_prefix}{key}/{category_id}"] = value
            if category_id in names and stats[0] > -1:
                by_name[names[category_id]] = stats[0]
        if names:
            out[f"{prefix}per_category_ap"] = by_name
        return out

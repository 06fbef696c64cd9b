"""COCO-format conversions for the COCO evaluator (Model Garden's
`official.vision.evaluation.coco_utils`), computed with pycocotools.

The evaluator hands this module numpy batches keyed as in Model Garden (`source_id`,
`detection_boxes` [B, K, 4] as [ymin, xmin, ymax, xmax] pixels, ...) and gets back COCO JSON
structures: a groundtruth dataset {'images', 'annotations', 'categories'} and a list of result
annotations. The conversions work on whole batches with numpy; only the final dicts are built per
object, because that is the form pycocotools reads.

`COCOWrapper` builds the groundtruth and result objects for either COCO implementation the
evaluator supports: pycocotools (the reference) or faster-coco-eval (the same algorithm in C++).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_api

logger = logging.getLogger(__name__)

BACKENDS = ("pycocotools", "faster_coco_eval")
EVAL_TYPES = ("box", "mask")


@contextlib.contextmanager
def quiet_stdout():
    """Sends what pycocotools prints to the log: library code must not write to stdout."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        yield
    text = buffer.getvalue().strip()
    if text:
        logger.debug("pycocotools: %s", text)


def coco_classes(backend: str) -> tuple[type, type]:
    """(COCO, COCOeval) classes of `backend` ('pycocotools' or 'faster_coco_eval')."""
    if backend == "pycocotools":
        from pycocotools import coco, cocoeval

        return coco.COCO, cocoeval.COCOeval
    if backend == "faster_coco_eval":
        try:
            import faster_coco_eval
        except ImportError as e:
            raise ImportError(
                "backend='faster_coco_eval' needs the faster-coco-eval package "
                "(pip install faster-coco-eval)"
            ) from e
        return faster_coco_eval.COCO, faster_coco_eval.COCOeval_faster
    raise ValueError(f"backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")


def to_numpy(value: Any) -> np.ndarray:
    """A numpy array from a numpy array, a tf.Tensor, a list, or a tuple of per-replica parts
    (concatenated along the batch axis, as a distribution strategy returns them)."""
    if isinstance(value, tuple):
        return np.concatenate([to_numpy(v) for v in value], axis=0)
    if hasattr(value, "numpy"):
        value = value.numpy()
    return np.asarray(value)


def source_ids_to_int(source_ids: Any) -> np.ndarray:
    """Image ids as int64: COCO image ids are integers; string ids must hold one."""
    ids = to_numpy(source_ids).reshape(-1)
    if ids.dtype.kind in "iu":
        return ids.astype(np.int64)
    try:
        return np.array([int(v) for v in ids.tolist()], dtype=np.int64)
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"source_id: COCO evaluation needs integer image ids, got {ids[:5].tolist()}..."
        ) from e


def yxyx_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """[..., ymin, xmin, ymax, xmax] → COCO's [..., x, y, width, height]."""
    boxes = np.asarray(boxes, dtype=np.float64)
    return np.stack(
        [
            boxes[..., 1],
            boxes[..., 0],
            boxes[..., 3] - boxes[..., 1],
            boxes[..., 2] - boxes[..., 0],
        ],
        axis=-1,
    )


def _resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize with half-pixel centres and edge clamping (OpenCV's INTER_LINEAR)."""
    in_h, in_w = image.shape

    def axis(out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = (np.arange(out_size, dtype=np.float64) + 0.5) * (in_size / out_size) - 0.5
        src = np.clip(src, 0.0, in_size - 1)
        lo = np.floor(src).astype(np.int64)
        hi = np.minimum(lo + 1, in_size - 1)
        return lo, hi, src - lo

    y0, y1, wy = axis(height, in_h)
    x0, x1, wx = axis(width, in_w)
    top = image[y0][:, x0] * (1 - wx) + image[y0][:, x1] * wx
    bottom = image[y1][:, x0] * (1 - wx) + image[y1][:, x1] * wx
    return top * (1 - wy)[:, None] + bottom * wy[:, None]


def paste_instance_masks(
    masks: np.ndarray, boxes: np.ndarray, image_height: int, image_width: int
) -> np.ndarray:
    """Pastes box-relative instance masks onto the image canvas, as Model Garden does.

    Each [mask_h, mask_w] mask is padded by one zero pixel on every side (so the resize does not
    smear its border outwards), its box grown to match the padding, resized bilinearly to the
    box's whole-pixel extent, thresholded at 0.5 and cut to the image.

    Args:
      masks: [N, mask_h, mask_w] probabilities relative to `boxes`.
      boxes: [N, 4] boxes as [ymin, xmin, ymax, xmax] in image pixels.
      image_height: canvas height.
      image_width: canvas width.

    Returns:
      uint8 [N, image_height, image_width] binary masks.
    """
    masks = np.asarray(masks, dtype=np.float32)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    count, mask_h, mask_w = masks.shape
    out = np.zeros((count, image_height, image_width), np.uint8)
    if count == 0:
        return out
    scale = max((mask_w + 2.0) / mask_w, (mask_h + 2.0) / mask_h)
    half_h = (boxes[:, 2] - boxes[:, 0]) * 0.5 * scale
    half_w = (boxes[:, 3] - boxes[:, 1]) * 0.5 * scale
    centre_y = (boxes[:, 0] + boxes[:, 2]) * 0.5
    centre_x = (boxes[:, 1] + boxes[:, 3]) * 0.5
    # Truncation toward zero, as Model Garden's int32 cast does.
    grown = np.stack(
        [centre_x - half_w, centre_y - half_h, centre_x + half_w, centre_y + half_h], axis=1
    ).astype(np.int32)
    padded = np.zeros((mask_h + 2, mask_w + 2), np.float32)
    for i in range(count):
        padded[1:-1, 1:-1] = masks[i]
        x0, y0, x1, y1 = (int(v) for v in grown[i])
        w = max(x1 - x0 + 1, 1)
        h = max(y1 - y0 + 1, 1)
        binary = (_resize_bilinear(padded, h, w) > 0.5).astype(np.uint8)
        cx0, cx1 = min(max(x0, 0), image_width), min(max(x1 + 1, 0), image_width)
        cy0, cy1 = min(max(y0, 0), image_height), min(max(y1 + 1, 0), image_height)
        if cx1 > cx0 and cy1 > cy0:
            out[i, cy0:cy1, cx0:cx1] = binary[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
    return out


def encode_binary_masks(masks: np.ndarray) -> list[dict[str, Any]]:
    """Compressed COCO RLEs ({'size', 'counts': str}) of [N, H, W] binary masks."""
    masks = np.asarray(masks)
    if masks.shape[0] == 0:
        return []
    rles = mask_api.encode(np.asfortranarray((masks > 0).astype(np.uint8).transpose(1, 2, 0)))
    for rle in rles:
        # JSON-serializable, like a COCO annotation file.
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def decode_png_mask(data: bytes) -> np.ndarray:
    """A PNG instance mask as uint8 {0, 1} (any non-zero pixel is foreground)."""
    return (np.asarray(Image.open(io.BytesIO(bytes(data)))) > 0).astype(np.uint8)


def convert_predictions_to_coco_annotations(
    predictions: Mapping[str, Any],
    include_mask: bool = False,
    mask_coordinates: str = "box",
) -> list[dict[str, Any]]:
    """One batch of detections → COCO result annotations (without ids).

    Args:
      predictions: numpy arrays for one batch: `source_id` [B], `detection_boxes` [B, K, 4]
        ([ymin, xmin, ymax, xmax] in original-image pixels), `detection_classes` [B, K],
        `detection_scores` [B, K], optional `num_detections` [B] (default K; later slots are
        padding and ignored), and with `include_mask` `detection_masks` plus `image_info`
        [B, 4, 2] (row 0 is the original image size).
      include_mask: add an RLE `segmentation` per detection.
      mask_coordinates: 'box' — `detection_masks` are [B, K, mask_h, mask_w] relative to each
        box (Model Garden's Mask R-CNN output) and are pasted into the image; 'image' — they are
        [B, K, H, W] masks in original-image pixels.

    Returns:
      [{'image_id', 'category_id', 'bbox' (x, y, w, h), 'score'[, 'segmentation']}] in batch
      order, detections of one image in slot order.
    """
    if mask_coordinates not in ("box", "image"):
        raise ValueError(f"mask_coordinates: expected 'box' or 'image', got {mask_coordinates!r}")
    image_ids = source_ids_to_int(predictions["source_id"])
    boxes = to_numpy(predictions["detection_boxes"]).astype(np.float64)
    classes = to_numpy(predictions["detection_classes"]).astype(np.int64)
    scores = to_numpy(predictions["detection_scores"]).astype(np.float64)
    batch, slots = classes.shape[:2]
    if "num_detections" in predictions:
        counts = np.minimum(to_numpy(predictions["num_detections"]).reshape(-1), slots)
    else:
        counts = np.full([batch], slots)
    valid = np.arange(slots)[None, :] < counts[:, None]
    xywh = yxyx_to_xywh(boxes)

    rows, cols = np.nonzero(valid)
    annotations = [
        {"image_id": i, "category_id": c, "bbox": b, "score": s}
        for i, c, b, s in zip(
            image_ids[rows].tolist(),
            classes[rows, cols].tolist(),
            xywh[rows, cols].tolist(),
            scores[rows, cols].tolist(),
        )
    ]
    if include_mask:
        masks = to_numpy(predictions["detection_masks"])
        image_info = to_numpy(predictions["image_info"]) if "image_info" in predictions else None
        start = 0
        for b in range(batch):
            n = int(counts[b])
            if mask_coordinates == "box":
                if image_info is None:
                    raise ValueError("predictions: pasting box masks needs 'image_info'")
                height, width = (int(v) for v in image_info[b, 0])
                binary = paste_instance_masks(masks[b, :n], boxes[b, :n], height, width)
            else:
                binary = masks[b, :n] > 0.5
            for ann, rle in zip(annotations[start : start + n], encode_binary_masks(binary)):
                ann["segmentation"] = rle
            start += n
    return annotations


def convert_groundtruths_to_coco_dataset(
    groundtruths: Mapping[str, Any],
    label_map: Mapping[int, str] | None = None,
    include_mask: bool = False,
) -> dict[str, Any]:
    """One batch of groundtruths → a COCO dataset {'images', 'annotations', 'categories'}.

    Args:
      groundtruths: numpy arrays for one batch: `source_id`, `height`, `width` [B], `boxes`
        [B, K, 4] ([ymin, xmin, ymax, xmax] in original-image pixels), `classes` [B, K],
        optional `num_detections` [B] (default: the rows whose class is > 0), `is_crowds`
        [B, K] (default 0), `areas` [B, K] (default the box area; with masks the mask area),
        and with `include_mask` `masks`: [B, K] PNG strings (Model Garden's form) or
        [B, K, H, W] arrays in image pixels.
      label_map: {category id: name}; all of them become categories. Default: the ids present.
      include_mask: add an RLE `segmentation` per object from `masks`.

    Returns:
      The dataset; annotation ids are left for the caller to number.
    """
    image_ids = source_ids_to_int(groundtruths["source_id"])
    heights = to_numpy(groundtruths["height"]).reshape(-1).astype(np.int64)
    widths = to_numpy(groundtruths["width"]).reshape(-1).astype(np.int64)
    boxes = to_numpy(groundtruths["boxes"]).astype(np.float64)
    classes = to_numpy(groundtruths["classes"]).astype(np.int64)
    batch, slots = classes.shape[:2]
    if "num_detections" in groundtruths:
        counts = to_numpy(groundtruths["num_detections"]).reshape(-1).astype(np.int64)
        if np.any(counts > slots):
            logger.warning(
                "groundtruths: num_detections up to %d but only %d rows; extra ones ignored",
                int(counts.max()),
                slots,
            )
            counts = np.minimum(counts, slots)
        valid = np.arange(slots)[None, :] < counts[:, None]
    else:
        valid = classes > 0
    crowds = (
        to_numpy(groundtruths["is_crowds"]).astype(np.int64)
        if "is_crowds" in groundtruths
        else np.zeros_like(classes)
    )
    xywh = yxyx_to_xywh(boxes)
    areas = (
        to_numpy(groundtruths["areas"]).astype(np.float64)
        if "areas" in groundtruths
        else xywh[..., 2] * xywh[..., 3]
    )

    images = [
        {"id": i, "height": h, "width": w}
        for i, h, w in zip(image_ids.tolist(), heights.tolist(), widths.tolist())
    ]
    rows, cols = np.nonzero(valid)
    annotations = [
        {"image_id": i, "category_id": c, "bbox": b, "area": a, "iscrowd": z}
        for i, c, b, a, z in zip(
            image_ids[rows].tolist(),
            classes[rows, cols].tolist(),
            xywh[rows, cols].tolist(),
            areas[rows, cols].tolist(),
            crowds[rows, cols].tolist(),
        )
    ]
    if include_mask:
        if "masks" not in groundtruths:
            raise ValueError("groundtruths: include_mask needs 'masks'")
        masks = to_numpy(groundtruths["masks"])
        for ann, r, c in zip(annotations, rows.tolist(), cols.tolist()):
            value = masks[r, c]
            binary = decode_png_mask(value) if masks.dtype.kind in "SOU" else value > 0.5
            ann["segmentation"] = encode_binary_masks(np.asarray(binary)[None])[0]
            if "areas" not in groundtruths:
                ann["area"] = float(mask_api.area(ann["segmentation"]))
    if label_map:
        categories = [{"id": int(k), "name": str(v)} for k, v in sorted(label_map.items())]
    else:
        categories = [{"id": c} for c in sorted({a["category_id"] for a in annotations})]
    return {"images": images, "annotations": annotations, "categories": categories}


def load_annotation_file(path: str) -> dict[str, Any]:
    """Reads a COCO JSON file from a local path or any filesystem TensorFlow reads (gs://)."""
    if "://" in path:
        import tensorflow as tf

        with tf.io.gfile.GFile(path, "rb") as f:
            return json.loads(f.read())
    with open(path, "rb") as f:
        return json.loads(f.read())


class COCOWrapper:
    """A COCO groundtruth object, and results loaded against it without copying.

    pycocotools' `COCO.loadRes` deep-copies the categories, rewrites every result in place and
    adds a polygon per box; this builds the result object from the annotations directly, with the
    `area` and `iscrowd` fields COCOeval reads (box area for 'box', mask area for 'mask').
    """

    def __init__(
        self,
        eval_type: str = "box",
        annotation_file: str | None = None,
        gt_dataset: Mapping[str, Any] | None = None,
        backend: str = "pycocotools",
    ):
        """Builds the groundtruth object.

        Args:
          eval_type: 'box' or 'mask' (which field of a result gives its area).
          annotation_file: a COCO instances JSON file (local or gs://).
          gt_dataset: the groundtruth as a COCO dataset dict (exactly one of the two is given).
          backend: 'pycocotools' or 'faster_coco_eval'.
        """
        if eval_type not in EVAL_TYPES:
            raise ValueError(f"eval_type: expected one of {EVAL_TYPES}, got {eval_type!r}")
        if (annotation_file is None) == (gt_dataset is None):
            raise ValueError("give exactly one of annotation_file and gt_dataset")
        self.eval_type = eval_type
        self.backend = backend
        self._coco_cls, self.eval_cls = coco_classes(backend)
        dataset = dict(load_annotation_file(annotation_file) if annotation_file else gt_dataset)
        dataset.setdefault("annotations", [])
        dataset.setdefault("categories", [])
        self.coco = self._index(dataset)

    def _index(self, dataset: dict[str, Any]) -> Any:
        with quiet_stdout():
            coco = self._coco_cls()
            coco.dataset = dataset
            coco.createIndex()
        return coco

    @property
    def image_ids(self) -> set[int]:
        return set(self.coco.imgs)

    @property
    def category_ids(self) -> list[int]:
        return sorted(self.coco.cats)

    def category_names(self) -> dict[int, str]:
        """{id: name} of the categories that have a name."""
        return {i: str(c["name"]) for i, c in self.coco.cats.items() if "name" in c}

    def load_results(
        self, annotations: Sequence[dict[str, Any]], eval_type: str | None = None
    ) -> Any:
        """A COCO object of result annotations (dicts from
        `convert_predictions_to_coco_annotations`) for `eval_type` 'box' or 'mask' (default: the
        wrapper's own).

        Raises:
          ValueError: a result's image is not in the groundtruth.
        """
        unknown = {a["image_id"] for a in annotations} - self.image_ids
        if unknown:
            raise ValueError(
                f"predictions for image ids {sorted(unknown)[:10]} that the groundtruth does "
                f"not have ({len(unknown)} in all); source_id must be the COCO image id"
            )
        eval_type = eval_type or self.eval_type
        if eval_type not in EVAL_TYPES:
            raise ValueError(f"eval_type: expected one of {EVAL_TYPES}, got {eval_type!r}")
        results = []
        if eval_type == "mask":
            segmentations = [a["segmentation"] for a in annotations]
            areas = mask_api.area(segmentations).tolist() if segmentations else []
            for i, (a, area) in enumerate(zip(annotations, areas)):
                results.append({**a, "id": i + 1, "area": float(area), "iscrowd": 0})
        else:
            for i, a in enumerate(annotations):
                box = a["bbox"]
                results.append(
                    {
                        "id": i + 1,
                        "image_id": a["image_id"],
                        "category_id": a["category_id"],
                        "bbox": box,
                        "score": a["score"],
                        "area": box[2] * box[3],
                        "iscrowd": 0,
                    }
                )
        dataset = {
            "images": self.coco.dataset["images"],
            "categories": self.coco.dataset["categories"],
            "annotations": results,
        }
        return self._index(dataset)

"""Semantic segmentation metrics (Model Garden's `official.vision.evaluation.segmentation_metrics`).

* `MeanIoU` / `PerClassIoU`: Model Garden's confusion-matrix metrics. `update_state(y_true,
  y_pred)` takes the parser's labels dict (`masks`, `valid_masks`, `image_info`) and logits (or
  the model's output dict). Predictions are resized to the groundtruth, or, with
  `rescale_predictions=True`, mapped back to each image's original pixels via `image_info`.
* `SegmentationMetrics`: the tutorial's Keras metric reporting mean IoU, with per-class IoU and a
  boundary F-score (DAVIS / Cityscapes boundary F-measure).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf
import tf_keras


def _logits_of(y_pred: Any) -> Any:
    if isinstance(y_pred, dict):
        if "logits" not in y_pred:
            raise ValueError(
                f"y_pred: expected a model output dict with 'logits', got keys {sorted(y_pred)}"
            )
        return y_pred["logits"]
    return y_pred


def _rescale_and_pad_predictions(
    predictions: tf.Tensor, images_info: tf.Tensor, output_size: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """Maps predictions made on preprocessed inputs back onto original-image pixels.

    The whole prediction canvas is resized to `desired_size / scale` (the canvas size in
    original pixels), the original image area is cut out at the preprocessing offset, and the
    result is zero-padded at the bottom/right to `output_size` (the groundtruth size).

    Returns:
      (predictions [B, out_h, out_w, C] float32, inside [B, out_h, out_w] bool that is True on
      pixels of the original image).
    """
    predictions = tf.cast(predictions, tf.float32)
    out_h, out_w = output_size[0], output_size[1]

    def one(args):
        logits, info = args
        image_shape = tf.cast(info[0], tf.int32)
        rescale_size = tf.cast(tf.math.ceil(info[1] / info[2]), tf.int32)
        offset = tf.cast(info[3], tf.int32)
        resized = tf.image.resize(logits, rescale_size, method="bilinear")
        crop = resized[
            offset[0] : offset[0] + image_shape[0], offset[1] : offset[1] + image_shape[1], :
        ]
        crop = crop[:out_h, :out_w, :]
        shape = tf.shape(crop)
        return tf.pad(crop, [[0, out_h - shape[0]], [0, out_w - shape[1]], [0, 0]])

    rescaled = tf.map_fn(
        one,
        (predictions, tf.cast(images_info, tf.float32)),
        fn_output_signature=tf.TensorSpec([None, None, predictions.shape[-1]], tf.float32),
    )
    image_shape = tf.cast(images_info[:, 0, :], tf.int32)
    rows = tf.range(out_h)[tf.newaxis, :, tf.newaxis]
    cols = tf.range(out_w)[tf.newaxis, tf.newaxis, :]
    inside = (rows < image_shape[:, 0, tf.newaxis, tf.newaxis]) & (
        cols < image_shape[:, 1, tf.newaxis, tf.newaxis]
    )
    return rescaled, inside


def preprocess_inputs(
    y_true: dict[str, tf.Tensor], y_pred: Any, rescale_predictions: bool
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Aligns logits with the groundtruth masks.

    Args:
      y_true: dict with `masks` [B, H, W, L], `valid_masks` [B, H, W, L] and `image_info`
        [B, 4, 2] (needed only with `rescale_predictions`). Lists/tuples of per-replica tensors
        are concatenated.
      y_pred: logits [B, h, w, C] (or the model's output dict, or a list of logits).
      rescale_predictions: map predictions back to original image sizes with `image_info`.

    Returns:
      (logits [B, H, W, C], masks [B, H, W, L], valid_masks [B, H, W, 1] bool); a pixel is valid
      when any mask layer is valid there (and, with rescaling, it lies inside the image).
    """
    if not isinstance(y_true, dict) or "masks" not in y_true or "valid_masks" not in y_true:
        raise ValueError(
            "y_true: expected a labels dict with 'masks' and 'valid_masks' (and 'image_info' "
            f"when rescaling), got {type(y_true).__name__}"
        )
    logits = _logits_of(y_pred)
    masks = y_true["masks"]
    valid_masks = y_true["valid_masks"]
    images_info = y_true.get("image_info")
    if isinstance(logits, list | tuple):
        logits = tf.concat([_logits_of(x) for x in logits], axis=0)
        masks = tf.concat(masks, axis=0)
        valid_masks = tf.concat(valid_masks, axis=0)
        if images_info is not None:
            images_info = tf.concat(images_info, axis=0)

    valid = tf.reduce_any(tf.cast(valid_masks, tf.bool), axis=-1)
    masks_size = tf.shape(masks)[1:3]
    if rescale_predictions:
        if images_info is None:
            raise ValueError("y_true: 'image_info' is required when rescale_predictions=True")
        logits, inside = _rescale_and_pad_predictions(logits, images_info, masks_size)
        valid &= inside
    else:
        logits = tf.image.resize(logits, masks_size, method="bilinear")
    return logits, masks, valid[..., tf.newaxis]


@tf_keras.utils.register_keras_serializable(package="Vision")
class MeanIoU(tf_keras.metrics.MeanIoU):
    """Mean IoU over the classes that occur (in groundtruth or prediction), via a confusion matrix.

    With `rescale_predictions=False` predictions are resized to the (already resized)
    groundtruth; with True each prediction is mapped back to its original image size using
    `y_true['image_info']` and compared with full-resolution groundtruth.
    """

    def __init__(
        self,
        num_classes: int,
        rescale_predictions: bool = False,
        name: str | None = None,
        dtype: Any = None,
    ):
        self._rescale_predictions = rescale_predictions
        super().__init__(num_classes=num_classes, name=name, dtype=dtype)

    def update_state(self, y_true: dict[str, tf.Tensor], y_pred: Any, sample_weight=None):
        """Accumulates the confusion matrix; invalid pixels get weight 0.

        Args:
          y_true: the labels dict, see `preprocess_inputs`.
          y_pred: logits [B, h, w, C] or the model's output dict.
          sample_weight: unused; Keras passes None.
        """
        del sample_weight
        logits, masks, valid = preprocess_inputs(y_true, y_pred, self._rescale_predictions)
        masks = tf.where(valid, masks, tf.zeros_like(masks))
        predictions = tf.argmax(logits, axis=3)
        return super().update_state(
            y_true=tf.reshape(masks, [-1]),
            y_pred=tf.reshape(predictions, [-1]),
            sample_weight=tf.cast(tf.reshape(valid, [-1]), tf.float32),
        )

    def get_config(self) -> dict[str, Any]:
        return {
            "num_classes": self.num_classes,
            "rescale_predictions": self._rescale_predictions,
            "name": self.name,
            "dtype": self.dtype,
        }


@tf_keras.utils.register_keras_serializable(package="Vision")
class PerClassIoU(MeanIoU):
    """IoU of every class, [num_classes]; 0 for a class seen in neither truth nor prediction."""

    def result(self) -> tf.Tensor:
        cm = self.total_cm
        predicted = tf.cast(tf.reduce_sum(cm, axis=0), self._dtype)
        actual = tf.cast(tf.reduce_sum(cm, axis=1), self._dtype)
        true_positives = tf.cast(tf.linalg.tensor_diag_part(cm), self._dtype)
        return tf.math.divide_no_nan(true_positives, predicted + actual - true_positives)


def _disk_kernel(radius: int) -> tf.Tensor:
    offsets = tf.range(-radius, radius + 1)
    dist2 = offsets[:, tf.newaxis] ** 2 + offsets[tf.newaxis, :] ** 2
    disk = tf.cast(dist2 <= radius * radius, tf.float32)
    return disk[:, :, tf.newaxis, tf.newaxis]


def class_boundaries(labels: tf.Tensor, valid: tf.Tensor) -> tf.Tensor:
    """Marks pixels whose class differs from a valid 4-neighbour.

    Args:
      labels: int [B, H, W] class map.
      valid: bool [B, H, W]; invalid pixels are never boundaries and never make one.

    Returns:
      bool [B, H, W]; both pixels of a differing neighbour pair are marked.
    """
    horizontal = (labels[:, :, 1:] != labels[:, :, :-1]) & valid[:, :, 1:] & valid[:, :, :-1]
    vertical = (labels[:, 1:, :] != labels[:, :-1, :]) & valid[:, 1:, :] & valid[:, :-1, :]
    no = tf.constant(False)
    left = tf.pad(horizontal, [[0, 0], [0, 0], [0, 1]], constant_values=no)
    right = tf.pad(horizontal, [[0, 0], [0, 0], [1, 0]], constant_values=no)
    up = tf.pad(vertical, [[0, 0], [0, 1], [0, 0]], constant_values=no)
    down = tf.pad(vertical, [[0, 0], [1, 0], [0, 0]], constant_values=no)
    return left | right | up | down


def boundary_f_scores(
    gt: tf.Tensor, pred: tf.Tensor, valid: tf.Tensor, tolerance: int
) -> tf.Tensor:
    """Per-image boundary F-measure (DAVIS), float32 [B].

    A predicted boundary pixel is matched when a groundtruth boundary pixel lies within
    `tolerance` pixels (Euclidean disk), and vice versa; precision and recall are the matched
    fractions. Following DAVIS, an image with no boundary in either map scores 1, and one with
    boundaries in only one of them scores 0.
    """
    gt_b = class_boundaries(gt, valid)
    pred_b = class_boundaries(pred, valid)
    kernel = _disk_kernel(int(tolerance))

    def dilate(b):
        x = tf.cast(b, tf.float32)[..., tf.newaxis]
        return tf.nn.conv2d(x, kernel, strides=1, padding="SAME")[..., 0] > 0.5

    n_gt = tf.reduce_sum(tf.cast(gt_b, tf.float32), axis=[1, 2])
    n_pred = tf.reduce_sum(tf.cast(pred_b, tf.float32), axis=[1, 2])
    matched_pred = tf.reduce_sum(tf.cast(pred_b & dilate(gt_b), tf.float32), axis=[1, 2])
    matched_gt = tf.reduce_sum(tf.cast(gt_b & dilate(pred_b), tf.float32), axis=[1, 2])
    precision = tf.where(n_pred > 0, tf.math.divide_no_nan(matched_pred, n_pred), 1.0)
    recall = tf.where(n_gt > 0, tf.math.divide_no_nan(matched_gt, n_gt), 1.0)
    # Boundaries on one side only: DAVIS sets the empty side's score to 1 and the other to 0.
    precision = tf.where((n_pred > 0) & (n_gt == 0), 0.0, precision)
    recall = tf.where((n_gt > 0) & (n_pred == 0), 0.0, recall)
    return tf.math.divide_no_nan(2.0 * precision * recall, precision + recall)


@tf_keras.utils.register_keras_serializable(package="Vision")
class SegmentationMetrics(tf_keras.metrics.Metric):
    """Mean IoU (its `result()`), per-class IoU and boundary F-score for semantic segmentation.

    `y_true` is the parser's labels dict (`masks`, optionally `valid_masks`) or a [B, H, W(, 1)]
    mask tensor; `y_pred` is the model's output dict (`logits`) or [B, h, w, C] logits, resized
    (bilinear) to the mask size. Pixels labeled `ignore_label`, outside [0, num_classes), or not
    in `valid_masks` are excluded everywhere.

    Mean IoU averages over the classes present in groundtruth or prediction (Keras' rule).
    The boundary F-score is the mean over images (with at least one valid pixel) of the DAVIS
    boundary F-measure computed on class boundaries, see `boundary_f_scores`.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_label: int = 255,
        name: str = "segmentation_metrics",
        boundary_tolerance: int = 2,
        dtype: Any = None,
    ):
        """Initializes the metric.

        Args:
          num_classes: number of classes of the logits.
          ignore_label: label of pixels excluded from every figure.
          name: metric name (the key Keras logs mean IoU under).
          boundary_tolerance: radius in pixels within which boundaries match.
          dtype: dtype of the results.
        """
        if num_classes < 1:
            raise ValueError(f"num_classes: expected a positive number, got {num_classes}")
        if boundary_tolerance < 0:
            raise ValueError(f"boundary_tolerance: expected >= 0 pixels, got {boundary_tolerance}")
        super().__init__(name=name, dtype=dtype)
        self._config_dict = {
            "num_classes": int(num_classes),
            "ignore_label": int(ignore_label),
            "boundary_tolerance": int(boundary_tolerance),
        }
        self.num_classes = int(num_classes)
        self.total_cm = self.add_weight(
            "total_confusion_matrix",
            shape=(num_classes, num_classes),
            initializer="zeros",
            dtype=tf.float64,
        )
        self.boundary_f_sum = self.add_weight(
            "boundary_f_sum", shape=(), initializer="zeros", dtype=tf.float64
        )
        self.boundary_count = self.add_weight(
            "boundary_count", shape=(), initializer="zeros", dtype=tf.float64
        )

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None):
        """Accumulates a batch.

        Args:
          y_true: labels dict or mask tensor (see the class docstring).
          y_pred: output dict or logits.
          sample_weight: optional weights broadcastable to [B, H, W] (e.g. per image [B, 1, 1]);
            they weight the confusion matrix, not the boundary score.
        """
        valid_masks = None
        if isinstance(y_true, dict):
            if "masks" not in y_true:
                raise ValueError(
                    f"y_true: expected a labels dict with 'masks', got keys {sorted(y_true)}"
                )
            masks = y_true["masks"]
            valid_masks = y_true.get("valid_masks")
        else:
            masks = y_true
        masks = tf.convert_to_tensor(masks)
        if masks.shape.rank == 4:
            masks = masks[..., 0]
        logits = tf.convert_to_tensor(_logits_of(y_pred))
        logits = tf.image.resize(tf.cast(logits, tf.float32), tf.shape(masks)[1:3], "bilinear")
        predictions = tf.argmax(logits, axis=-1, output_type=tf.int32)

        labels = tf.cast(masks, tf.int32)
        valid = (
            tf.not_equal(labels, self._config_dict["ignore_label"])
            & tf.greater_equal(labels, 0)
            & tf.less(labels, self.num_classes)
        )
        if valid_masks is not None:
            valid_masks = tf.cast(valid_masks, tf.bool)
            if valid_masks.shape.rank == 4:
                valid_masks = tf.reduce_any(valid_masks, axis=-1)
            valid &= valid_masks
        safe_labels = tf.where(valid, labels, tf.zeros_like(labels))

        weights = tf.cast(valid, tf.float64)
        if sample_weight is not None:
            sample_weight = tf.cast(sample_weight, tf.float64)
            if sample_weight.shape.rank == 4:
                sample_weight = sample_weight[..., 0]
            while sample_weight.shape.rank is not None and sample_weight.shape.rank < 3:
                sample_weight = sample_weight[..., tf.newaxis]
            weights *= sample_weight
        cm = tf.math.confusion_matrix(
            tf.reshape(safe_labels, [-1]),
            tf.reshape(predictions, [-1]),
            num_classes=self.num_classes,
            weights=tf.reshape(weights, [-1]),
            dtype=tf.float64,
        )
        f_scores = boundary_f_scores(
            safe_labels, predictions, valid, self._config_dict["boundary_tolerance"]
        )
        has_pixels = tf.reduce_any(valid, axis=[1, 2])
        f_sum = tf.reduce_sum(tf.where(has_pixels, f_scores, 0.0))
        return tf.group(
            self.total_cm.assign_add(cm),
            self.boundary_f_sum.assign_add(tf.cast(f_sum, tf.float64)),
            self.boundary_count.assign_add(tf.reduce_sum(tf.cast(has_pixels, tf.float64))),
        )

    def per_class_iou(self) -> tf.Tensor:
        """IoU of every class, [num_classes]; 0 where a class occurred nowhere."""
        cm = self.total_cm
        tp = tf.linalg.tensor_diag_part(cm)
        union = tf.reduce_sum(cm, axis=0) + tf.reduce_sum(cm, axis=1) - tp
        return tf.cast(tf.math.divide_no_nan(tp, union), self.dtype)

    def result(self) -> tf.Tensor:
        """Mean IoU over the classes that occurred in groundtruth or prediction."""
        cm = self.total_cm
        tp = tf.linalg.tensor_diag_part(cm)
        union = tf.reduce_sum(cm, axis=0) + tf.reduce_sum(cm, axis=1) - tp
        present = tf.reduce_sum(tf.cast(union > 0, tf.float64))
        iou = tf.math.divide_no_nan(tp, union)
        return tf.cast(tf.math.divide_no_nan(tf.reduce_sum(iou), present), self.dtype)

    def boundary_f_score(self) -> tf.Tensor:
        """Mean per-image boundary F-measure so far (0 before any valid image)."""
        return tf.cast(tf.math.divide_no_nan(self.boundary_f_sum, self.boundary_count), self.dtype)

    def pixel_accuracy(self) -> tf.Tensor:
        """Fraction of valid pixels predicted correctly."""
        cm = self.total_cm
        return tf.cast(tf.math.divide_no_nan(tf.linalg.trace(cm), tf.reduce_sum(cm)), self.dtype)

    def reset_state(self) -> None:
        for v in (self.total_cm, self.boundary_f_sum, self.boundary_count):
            v.assign(tf.zeros_like(v))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(self._config_dict)
        return config


__all__: Sequence[str] = [
    "MeanIoU",
    "PerClassIoU",
    "SegmentationMetrics",
    "boundary_f_scores",
    "class_boundaries",
    "preprocess_inputs",
]

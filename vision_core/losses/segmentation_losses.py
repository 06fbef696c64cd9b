"""Semantic segmentation losses (Model Garden's `official.vision.losses.segmentation_losses`).

* `SegmentationLoss`: Model Garden's per-pixel (softmax or sigmoid) cross-entropy with label
  smoothing, class weights, an ignore label and hard-pixel mining, called as
  `loss(logits, masks)`.
* `SegmentationLosses`: the Keras-style loss the segmentation tutorial compiles with,
  `loss(y_true, y_pred)`, offering softmax cross-entropy, focal and Dice losses and accepting
  either the parser's labels dict or a mask tensor, and the model's output dict or logits.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import tensorflow as tf
import tf_keras

logger = logging.getLogger(__name__)

EPSILON = 1e-5
LOSS_TYPES = ("softmax_cross_entropy", "focal", "dice")


def _binarize_matting_map(matting_map: tf.Tensor, threshold: float = 0.5) -> tf.Tensor:
    return tf.cast(tf.greater(matting_map, threshold), tf.float32)


class SegmentationLoss:
    """Model Garden's semantic segmentation loss.

    The loss is the (class-weighted) cross-entropy summed over valid pixels and divided by the
    number of valid pixels (+1e-5); pixels labeled `ignore_label` contribute to neither. With
    `top_k_percent_pixels < 1` only the largest per-pixel losses are kept (hard-pixel mining).
    """

    def __init__(
        self,
        label_smoothing: float,
        class_weights: Sequence[float] | None,
        ignore_label: int,
        use_groundtruth_dimension: bool,
        use_binary_cross_entropy: bool = False,
        top_k_percent_pixels: float = 1.0,
        gt_is_matting_map: bool = False,
    ):
        """Initializes the loss.

        Args:
          label_smoothing: moves this much probability mass from the one-hot target to a
            uniform distribution over the classes.
          class_weights: per-class weight of a pixel by its groundtruth class (empty or None: 1).
          ignore_label: label of pixels that carry no loss.
          use_groundtruth_dimension: resize the logits (bilinear) to the label size; when False
            resize the labels (nearest) to the logits size.
          use_binary_cross_entropy: per-class sigmoid cross-entropy (multi-label masks with
            several layers allowed) instead of softmax cross-entropy.
          top_k_percent_pixels: fraction in (0, 1] of pixels (the hardest) that form the loss.
          gt_is_matting_map: labels are soft foreground probabilities in [0, 1]; needs exactly
            2 classes and 1 layer.
        """
        self._label_smoothing = label_smoothing
        self._class_weights = list(class_weights) if class_weights else []
        self._ignore_label = ignore_label
        self._use_groundtruth_dimension = use_groundtruth_dimension
        self._use_binary_cross_entropy = use_binary_cross_entropy
        self._top_k_percent_pixels = top_k_percent_pixels
        self._gt_is_matting_map = gt_is_matting_map

    def __call__(self, logits: tf.Tensor, labels: tf.Tensor, **kwargs) -> tf.Tensor:
        """Computes the loss of a batch.

        Args:
          logits: [B, h, w, num_classes] model output.
          labels: [B, H, W, num_layers] groundtruth class ids (num_layers > 1 only with binary
            cross-entropy).
          **kwargs: passed to `get_labels_with_prob` (for subclasses).

        Returns:
          A scalar loss in the logits dtype.
        """
        _, height, width, num_classes = logits.get_shape().as_list()
        output_dtype = logits.dtype
        num_layers = labels.get_shape().as_list()[-1]
        if not self._use_binary_cross_entropy and num_layers != 1:
            raise ValueError(
                "labels: categorical cross-entropy needs 1 mask layer, got "
                f"{num_layers} (shape {labels.shape})"
            )
        if self._gt_is_matting_map:
            if num_classes != 2:
                raise ValueError(
                    f"logits: a matting-map groundtruth needs 2 classes, got {num_classes}"
                )
            if num_layers != 1:
                raise ValueError(f"labels: a matting map must have 1 layer, got {num_layers}")

        class_weights = self._class_weights or [1.0] * num_classes
        if len(class_weights) != num_classes:
            raise ValueError(
                f"class_weights: expected {num_classes} weights (one per class), "
                f"got {len(class_weights)}"
            )
        class_weights = tf.constant(class_weights, dtype=output_dtype)

        if not self._gt_is_matting_map:
            labels = tf.cast(labels, tf.int32)
        if self._use_groundtruth_dimension:
            logits = tf.image.resize(logits, tf.shape(labels)[1:3], method="bilinear")
            logits = tf.cast(logits, output_dtype)
        else:
            labels = tf.image.resize(labels, (height, width), method="nearest")

        valid_mask = tf.not_equal(tf.cast(labels, tf.int32), self._ignore_label)
        labels_with_prob = self.get_labels_with_prob(logits, labels, valid_mask, **kwargs)
        # A pixel counts when any of its layers is labeled.
        valid_mask = tf.cast(tf.reduce_any(valid_mask, axis=-1), output_dtype)

        if self._use_binary_cross_entropy:
            loss = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels_with_prob, logits=logits)
            loss *= class_weights
            num_valid = tf.reduce_sum(valid_mask) * tf.cast(num_classes, output_dtype)
            loss *= valid_mask[..., tf.newaxis]
        else:
            loss = tf.nn.softmax_cross_entropy_with_logits(labels=labels_with_prob, logits=logits)
            weight_labels = _binarize_matting_map(labels) if self._gt_is_matting_map else labels
            weight_mask = tf.einsum(
                "...c,c->...",
                tf.one_hot(
                    tf.cast(tf.squeeze(weight_labels, axis=-1), tf.int32),
                    depth=num_classes,
                    dtype=output_dtype,
                ),
                class_weights,
            )
            loss *= weight_mask
            num_valid = tf.reduce_sum(valid_mask)
            loss *= valid_mask

        if self._top_k_percent_pixels < 1.0:
            return self.aggregate_loss_top_k(loss, num_valid)
        return tf.reduce_sum(loss) / (num_valid + EPSILON)

    def get_labels_with_prob(
        self, logits: tf.Tensor, labels: tf.Tensor, valid_mask: tf.Tensor, **unused_kwargs
    ) -> tf.Tensor:
        """The [B, H, W, num_classes] target distribution (smoothed); ignored pixels are 0 + eps.

        Subclasses override this to customize targets.
        """
        num_classes = logits.get_shape().as_list()[-1]
        if self._gt_is_matting_map:
            targets = tf.concat([1 - labels, labels], axis=-1)
        else:
            labels = tf.cast(labels, tf.int32)
            # -1 one-hot encodes to all zeros, which removes ignored pixels from the targets.
            labels = tf.where(valid_mask, labels, -tf.ones_like(labels))
            if self._use_binary_cross_entropy:
                per_layer = tf.one_hot(
                    labels, depth=num_classes, dtype=tf.bool, on_value=True, off_value=False
                )
                targets = tf.cast(tf.reduce_any(per_layer, axis=-2), logits.dtype)
            else:
                targets = tf.one_hot(
                    tf.squeeze(labels, axis=-1), depth=num_classes, dtype=logits.dtype
                )
        return targets * (1 - self._label_smoothing) + self._label_smoothing / num_classes

    def aggregate_loss_top_k(
        self, pixelwise_loss: tf.Tensor, num_valid_pixels: tf.Tensor | None = None
    ) -> tf.Tensor:
        """Mean of the largest `top_k_percent_pixels` of all per-pixel losses.

        The count k is taken over all pixels (ignored ones included, with loss 0) and the
        normalizer is min(k, number of valid pixels), as in Model Garden.
        """
        flat = tf.reshape(pixelwise_loss, [-1])
        k = tf.cast(self._top_k_percent_pixels * tf.cast(tf.size(flat), tf.float32), tf.int32)
        top_k = tf.math.top_k(flat, k=k).values
        normalizer = tf.cast(k, top_k.dtype)
        if num_valid_pixels is not None:
            normalizer = tf.minimum(normalizer, tf.cast(num_valid_pixels, top_k.dtype))
        return tf.reduce_sum(top_k) / (normalizer + EPSILON)


def get_actual_mask_scores(logits: tf.Tensor, labels: tf.Tensor, ignore_label: int) -> tf.Tensor:
    """Per-class IoU [B, num_classes] of argmax(logits) against labels (resized to the logits)."""
    _, height, width, num_classes = logits.get_shape().as_list()
    batch_size = tf.shape(logits)[0]
    logits = tf.stop_gradient(logits)
    labels = tf.image.resize(labels, (height, width), method="nearest")
    predictions = tf.reshape(tf.argmax(logits, -1, output_type=tf.int32), [batch_size, -1])
    flat_labels = tf.cast(tf.reshape(labels, [batch_size, -1]), tf.int32)
    pred_1h = tf.one_hot(predictions, num_classes, on_value=True, off_value=False)
    gt_1h = tf.one_hot(flat_labels, num_classes, on_value=True, off_value=False)
    keep = tf.not_equal(flat_labels, ignore_label)[..., tf.newaxis]
    overlap = tf.reduce_sum(tf.cast(pred_1h & gt_1h & keep, tf.float32), axis=1)
    union = tf.reduce_sum(tf.cast((pred_1h | gt_1h) & keep, tf.float32), axis=1)
    return overlap / tf.maximum(union, EPSILON)


class MaskScoringLoss:
    """Mean squared error between predicted mask scores and the achieved per-class IoU."""

    def __init__(self, ignore_label: int):
        self._ignore_label = ignore_label

    def __call__(self, predicted_scores: tf.Tensor, logits: tf.Tensor, labels: tf.Tensor):
        actual = get_actual_mask_scores(logits, labels, self._ignore_label)
        per_example = tf.reduce_mean(tf.square(actual - predicted_scores), axis=-1)
        return tf.math.divide_no_nan(
            tf.reduce_sum(per_example), tf.cast(tf.size(per_example), per_example.dtype)
        )


def _unpack(y_true: Any, y_pred: Any) -> tuple[tf.Tensor, tf.Tensor | None, tf.Tensor]:
    """Returns (masks [B, H, W, 1], valid_masks [B, H, W, 1] bool or None, logits)."""
    valid = None
    if isinstance(y_true, dict):
        if "masks" not in y_true:
            raise ValueError(
                f"y_true: expected a labels dict with 'masks', got keys {sorted(y_true)}"
            )
        masks = y_true["masks"]
        if "valid_masks" in y_true:
            valid = tf.cast(y_true["valid_masks"], tf.bool)
    else:
        masks = y_true
    if isinstance(y_pred, dict):
        if "logits" not in y_pred:
            raise ValueError(
                f"y_pred: expected a model output dict with 'logits', got keys {sorted(y_pred)}"
            )
        y_pred = y_pred["logits"]
    masks = tf.convert_to_tensor(masks)
    if masks.shape.rank == 3:
        masks = masks[..., tf.newaxis]
    if valid is not None and valid.shape.rank == 3:
        valid = valid[..., tf.newaxis]
    return masks, valid, tf.convert_to_tensor(y_pred)


@tf_keras.utils.register_keras_serializable(package="Vision")
class SegmentationLosses(tf_keras.losses.Loss):
    """Keras loss for semantic segmentation: softmax cross-entropy, focal or Dice.

    `y_true` is the parser's labels dict (`masks`, optionally `valid_masks`) or a [B, H, W(, 1)]
    mask tensor; `y_pred` is the model's output dict (`logits`) or a [B, h, w, C] logits tensor.
    Logits are resized (bilinear) to the mask size. A pixel is ignored when its label equals
    `ignore_label`, lies outside [0, C), or `valid_masks` is False there, so data padded with
    255 is handled even when `ignore_label=-1`, as in the tutorial.

    Per-pixel losses (pixel weight = class weight of its label):
      * softmax_cross_entropy: -sum_c t_c log p_c with t the smoothed one-hot target.
      * focal: -sum_c t_c * alpha * (1 - p_c)^gamma * log p_c (Lin et al., 2017, softmax form).
    Both are averaged over the valid pixels of the batch (or over the hardest
    `top_k_percent_pixels` of them, Model Garden's rule).
      * dice: 1 - mean_c w_c (2 sum p_c t_c + 1) / (sum p_c + sum t_c + 1) over valid pixels of
        the batch, with class weights normalized to sum to one (uniform by default).
    """

    def __init__(
        self,
        loss_type: str = "softmax_cross_entropy",
        ignore_label: int = 255,
        label_smoothing: float = 0.0,
        class_weights: Sequence[float] | None = None,
        top_k_percent_pixels: float = 1.0,
        gamma: float = 2.0,
        alpha: float = 0.25,
        reduction: str = tf_keras.losses.Reduction.AUTO,
        name: str = "segmentation_losses",
    ):
        """Initializes the loss; see the class docstring for the formulas."""
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type: expected one of {LOSS_TYPES}, got {loss_type!r}")
        if not 0.0 < top_k_percent_pixels <= 1.0:
            raise ValueError(
                f"top_k_percent_pixels: expected a value in (0, 1], got {top_k_percent_pixels}"
            )
        if loss_type == "dice" and top_k_percent_pixels < 1.0:
            raise ValueError(
                "top_k_percent_pixels: hard-pixel mining does not apply to the dice loss; "
                f"expected 1.0, got {top_k_percent_pixels}"
            )
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing: expected a value in [0, 1), got {label_smoothing}")
        super().__init__(reduction=reduction, name=name)
        self._config_dict = {
            "loss_type": loss_type,
            "ignore_label": int(ignore_label),
            "label_smoothing": float(label_smoothing),
            "class_weights": list(class_weights) if class_weights else None,
            "top_k_percent_pixels": float(top_k_percent_pixels),
            "gamma": float(gamma),
            "alpha": float(alpha),
        }

    def call(self, y_true: Any, y_pred: Any) -> tf.Tensor:
        """Returns the scalar loss of the batch."""
        cfg = self._config_dict
        masks, valid, logits = _unpack(y_true, y_pred)
        num_classes = logits.shape[-1]
        if num_classes is None:
            raise ValueError(f"y_pred: the class axis must be static, got shape {logits.shape}")
        logits = tf.cast(logits, tf.float32)
        logits = tf.image.resize(logits, tf.shape(masks)[1:3], method="bilinear")

        labels = tf.cast(tf.squeeze(masks, axis=-1), tf.int32)
        valid_px = (
            tf.not_equal(labels, cfg["ignore_label"])
            & tf.greater_equal(labels, 0)
            & tf.less(labels, num_classes)
        )
        if valid is not None:
            valid_px &= tf.reduce_any(valid, axis=-1)
        weights = tf.cast(valid_px, tf.float32)
        safe_labels = tf.where(valid_px, labels, tf.zeros_like(labels))
        targets = tf.one_hot(safe_labels, num_classes, dtype=tf.float32)
        smoothing = cfg["label_smoothing"]
        targets = targets * (1.0 - smoothing) + smoothing / num_classes
        class_weights = cfg["class_weights"] or [1.0] * num_classes
        if len(class_weights) != num_classes:
            raise ValueError(
                f"class_weights: expected {num_classes} weights (one per class), "
                f"got {len(class_weights)}"
            )
        class_weights = tf.constant(class_weights, tf.float32)

        if cfg["loss_type"] == "dice":
            return self._dice(logits, targets, weights, class_weights)

        log_probs = tf.nn.log_softmax(logits, axis=-1)
        if cfg["loss_type"] == "focal":
            probs = tf.exp(log_probs)
            per_class = -cfg["alpha"] * tf.pow(1.0 - probs, cfg["gamma"]) * log_probs
        else:
            per_class = -log_probs
        pixel_loss = tf.reduce_sum(targets * per_class, axis=-1)
        pixel_loss *= tf.gather(class_weights, safe_labels) * weights
        num_valid = tf.reduce_sum(weights)
        if cfg["top_k_percent_pixels"] < 1.0:
            flat = tf.reshape(pixel_loss, [-1])
            k = tf.cast(cfg["top_k_percent_pixels"] * tf.cast(tf.size(flat), tf.float32), tf.int32)
            top_k = tf.math.top_k(flat, k=k).values
            normalizer = tf.minimum(tf.cast(k, tf.float32), num_valid)
            return tf.reduce_sum(top_k) / (normalizer + EPSILON)
        return tf.reduce_sum(pixel_loss) / (num_valid + EPSILON)

    @staticmethod
    def _dice(logits, targets, weights, class_weights) -> tf.Tensor:
        probs = tf.nn.softmax(logits, axis=-1) * weights[..., tf.newaxis]
        targets = targets * weights[..., tf.newaxis]
        axes = [0, 1, 2]
        intersection = tf.reduce_sum(probs * targets, axis=axes)
        denominator = tf.reduce_sum(probs, axis=axes) + tf.reduce_sum(targets, axis=axes)
        # Smoothing by 1 keeps classes absent from both prediction and truth at dice 1.
        dice = (2.0 * intersection + 1.0) / (denominator + 1.0)
        class_weights = class_weights / tf.reduce_sum(class_weights)
        return 1.0 - tf.reduce_sum(class_weights * dice)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(self._config_dict)
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SegmentationLosses:
        return cls(**config)

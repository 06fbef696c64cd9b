"""RetinaNet losses (Model Garden's `official.vision.losses.retinanet_losses`, plus the loss
its `RetinaNetTask.build_losses` computes, as the function `retinanet_loss`).

Model Garden's RetinaNet defaults: focal alpha 0.25, gamma 1.5; Huber box loss with delta 0.1
weighted by 50; both losses summed over anchors and divided by (number of positive anchors
in the batch + 1).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tensorflow as tf
import tf_keras

from vision_core.losses import focal_loss as focal_loss_lib
from vision_core.losses.loss_utils import multi_level_flatten


def focal_loss(logits: tf.Tensor, targets: tf.Tensor, alpha: float, gamma: float) -> tf.Tensor:
    """Element-wise sigmoid focal loss (see `focal_loss.sigmoid_focal_loss`)."""
    return focal_loss_lib.sigmoid_focal_loss(logits, targets, alpha, gamma)


class FocalLoss(tf_keras.losses.Loss):
    """Focal loss taking RetinaNet's per-level dicts.

    `y_true`: level -> [batch, H, W, A] integer classes (-1 = no class); `y_pred`: level ->
    [batch, H, W, A * num_classes] logits. `call` returns [batch, anchors, num_classes].
    """

    def __init__(
        self,
        alpha: float,
        gamma: float,
        num_classes: int,
        reduction: str = tf_keras.losses.Reduction.AUTO,
        name: str | None = None,
    ):
        self._alpha = alpha
        self._gamma = gamma
        self._num_classes = num_classes
        super().__init__(reduction=reduction, name=name)

    def call(self, y_true: Mapping[str, tf.Tensor], y_pred: Mapping[str, tf.Tensor]):
        logits = multi_level_flatten(y_pred, last_dim=self._num_classes)
        labels = multi_level_flatten({level: y_true[level] for level in y_pred})
        targets = tf.one_hot(tf.cast(labels, tf.int32), self._num_classes)
        return focal_loss(tf.cast(logits, tf.float32), targets, self._alpha, self._gamma)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "alpha": self._alpha,
            "gamma": self._gamma,
            "num_classes": self._num_classes,
        }


class RetinanetBoxLoss(tf_keras.losses.Loss):
    """Huber box-regression loss on per-level dicts; `call` returns [batch, anchors]
    (the Huber loss averaged over the 4 box codes)."""

    def __init__(
        self,
        delta: float,
        reduction: str = tf_keras.losses.Reduction.AUTO,
        name: str | None = None,
    ):
        self._delta = delta
        self._huber = tf_keras.losses.Huber(delta=delta, reduction=tf_keras.losses.Reduction.NONE)
        super().__init__(reduction=reduction, name=name)

    def call(self, y_true: Mapping[str, tf.Tensor], y_pred: Mapping[str, tf.Tensor]):
        predicted = multi_level_flatten(y_pred, last_dim=4)
        targets = multi_level_flatten({level: y_true[level] for level in y_pred}, last_dim=4)
        return self._huber(targets, tf.cast(predicted, tf.float32))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "delta": self._delta}


def retinanet_loss(
    cls_outputs: Mapping[str, tf.Tensor],
    box_outputs: Mapping[str, tf.Tensor],
    labels: Mapping[str, Any],
    num_classes: int,
    focal_alpha: float = 0.25,
    focal_gamma: float = 1.5,
    huber_delta: float = 0.1,
    box_loss_weight: float = 50.0,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """RetinaNet's classification + box loss for a batch, as Model Garden's task computes it.

    cls_loss = sum(focal(anchor, class) * cls_weight(anchor)) / (num_positives + 1) and
    box_loss = sum(mean_4(huber(anchor)) * box_weight(anchor)) / (num_positives + 1), with
    num_positives = sum(box_weights) over the whole batch. Regularization and the task's
    `loss_weight` are left to the caller.

    Args:
      cls_outputs: level -> [batch, H, W, A * num_classes] logits.
      box_outputs: level -> [batch, H, W, A * 4] box codes.
      labels: the batched `AnchorLabeler` outputs: 'cls_targets' (level -> [batch, H, W, A]),
        'box_targets' (level -> [batch, H, W, A * 4]), 'cls_weights' and 'box_weights'
        ([batch, num_anchors], anchors flattened level by level in the same order).
      num_classes: classes per anchor, including the background class 0.
      focal_alpha: focal loss alpha.
      focal_gamma: focal loss gamma.
      huber_delta: Huber loss delta.
      box_loss_weight: multiplier of the box loss in the total.

    Returns:
      (total, cls_loss, box_loss) scalars with total = cls_loss + box_loss_weight * box_loss.
    """
    box_weights = tf.cast(labels["box_weights"], tf.float32)
    num_positives = tf.reduce_sum(box_weights) + 1.0
    cls_weights = tf.cast(labels["cls_weights"], tf.float32) / num_positives
    box_weights = box_weights / num_positives

    cls_targets = multi_level_flatten(labels["cls_targets"])
    cls_targets = tf.one_hot(tf.cast(cls_targets, tf.int32), num_classes)
    cls_logits = tf.cast(multi_level_flatten(cls_outputs, last_dim=num_classes), tf.float32)
    box_targets = tf.cast(multi_level_flatten(labels["box_targets"], last_dim=4), tf.float32)
    box_codes = tf.cast(multi_level_flatten(box_outputs, last_dim=4), tf.float32)

    sum_reduction = tf_keras.losses.Reduction.SUM
    cls_loss = focal_loss_lib.FocalLoss(focal_alpha, focal_gamma, reduction=sum_reduction)(
        cls_targets, cls_logits, sample_weight=cls_weights
    )
    box_loss = tf_keras.losses.Huber(huber_delta, reduction=sum_reduction)(
        box_targets, box_codes, sample_weight=box_weights
    )
    return cls_loss + box_loss_weight * box_loss, cls_loss, box_loss

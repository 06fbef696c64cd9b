"""Image classification task (Model Garden's `tasks/image_classification.py`).

Loss: softmax cross-entropy on the logits, with label smoothing when labels are one-hot
(`losses.one_hot`, the default), on given probability vectors (`losses.soft_labels`), or sparse.
Metrics: top-1 `accuracy` and `top_{k}_accuracy` (k = `evaluation.top_k`).
"""

from __future__ import annotations

import logging
from typing import Any

import tensorflow as tf
import tf_keras

from vision_core.configs import image_classification as exp_cfg
from vision_core.dataloaders import classification_input, input_reader
from vision_core.modeling import factory
from vision_core.tasks.base_task import Task

logger = logging.getLogger(__name__)


def build_parser(params: exp_cfg.DataConfig, num_classes: int, input_size: list[int]):
    """The `classification_input.Parser` a data config describes."""
    return classification_input.Parser(
        output_size=list(input_size[:2]),
        num_classes=num_classes,
        image_field_key=params.image_field_key,
        label_field_key=params.label_field_key,
        decode_jpeg_only=params.decode_jpeg_only,
        aug_rand_hflip=params.aug_rand_hflip,
        aug_crop=params.aug_crop,
        dtype=params.dtype,
        crop_area_range=tuple(params.crop_area_range),
        center_crop_fraction=params.center_crop_fraction,
        tf_resize_method=params.tf_resize_method,
    )


class ImageClassificationTask(Task):
    """Builds the classifier, its inputs, the cross-entropy loss and accuracy metrics."""

    def __init__(
        self,
        params: exp_cfg.ImageClassificationTask,
        logging_dir: str | None = None,
        name: str | None = None,
    ):
        super().__init__(params, logging_dir, name)

    @property
    def _dense_labels(self) -> bool:
        """Whether losses and metrics take [batch, num_classes] label vectors."""
        losses = self.task_config.losses
        return bool(losses.one_hot or losses.soft_labels)

    def build_model(self) -> tf_keras.Model:
        model_cfg = self.task_config.model
        if model_cfg.num_classes <= 0:
            raise ValueError(f"task.model.num_classes: expected > 0, got {model_cfg.num_classes}")
        if not model_cfg.input_size:
            raise ValueError("task.model.input_size: expected [height, width, channels], got []")
        input_specs = tf_keras.layers.InputSpec(shape=[None] + list(model_cfg.input_size))
        decay = self.task_config.losses.l2_weight_decay
        # Model Garden halves the decay because tf.nn.l2_loss halves the sum of squares.
        l2 = tf_keras.regularizers.l2(decay / 2.0) if decay else None
        model = factory.build_classification_model(input_specs, model_cfg, l2_regularizer=l2)
        if self.task_config.freeze_backbone:
            model.backbone.trainable = False
        model(tf.zeros([1] + list(model_cfg.input_size)), training=False)
        return model

    def build_inputs(self, params: exp_cfg.DataConfig, input_context: Any = None):
        model_cfg = self.task_config.model
        decoder = classification_input.Decoder(
            image_field_key=params.image_field_key, label_field_key=params.label_field_key
        )
        parser = build_parser(params, model_cfg.num_classes, list(model_cfg.input_size))
        reader = input_reader.InputReader(
            params, decoder_fn=decoder.decode, parser_fn=parser.parse_fn(params.is_training)
        )
        return reader.read(input_context=input_context)

    def prepare_labels(self, labels: tf.Tensor) -> tf.Tensor:
        """Integer class ids → one-hot vectors when the loss wants them; others pass through."""
        if self._dense_labels and labels.shape.rank == 1:
            return tf.one_hot(labels, self.task_config.model.num_classes)
        return labels

    def build_losses(self, labels, model_outputs, aux_losses=None) -> tf.Tensor:
        """`loss_weight` × (mean cross-entropy over the batch + regularization).

        Args:
          labels: int class ids [batch], or [batch, num_classes] vectors with `one_hot` /
            `soft_labels` (ids are one-hot encoded here).
          model_outputs: logits [batch, num_classes].
          aux_losses: regularization losses (`model.losses`).
        """
        losses = self.task_config.losses
        logits = tf.cast(model_outputs, tf.float32)
        labels = self.prepare_labels(labels)
        if losses.one_hot:
            per_example = tf_keras.losses.categorical_crossentropy(
                labels, logits, from_logits=True, label_smoothing=losses.label_smoothing
            )
        elif losses.soft_labels:
            per_example = tf.nn.softmax_cross_entropy_with_logits(
                tf.cast(labels, tf.float32), logits
            )
        else:
            per_example = tf_keras.losses.sparse_categorical_crossentropy(
                labels, logits, from_logits=True
            )
        # An empty batch (a last partial batch of zero) contributes 0, not NaN.
        total = tf.math.divide_no_nan(
            tf.reduce_sum(per_example), tf.cast(tf.size(per_example), tf.float32)
        )
        if aux_losses:
            total += tf.add_n([tf.cast(x, total.dtype) for x in aux_losses])
        # Model Garden weighs the regularization too.
        return losses.loss_weight * total

    def build_metrics(self, training: bool = True) -> list:
        k = self.task_config.evaluation.top_k
        if self._dense_labels:
            return [
                tf_keras.metrics.CategoricalAccuracy(name="accuracy"),
                tf_keras.metrics.TopKCategoricalAccuracy(k=k, name=f"top_{k}_accuracy"),
            ]
        return [
            tf_keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
            tf_keras.metrics.SparseTopKCategoricalAccuracy(k=k, name=f"top_{k}_accuracy"),
        ]

    def update_metric(self, metric, labels, outputs) -> None:
        metric.update_state(self.prepare_labels(labels), outputs)

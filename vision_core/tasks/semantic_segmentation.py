"""Semantic segmentation task (Model Garden's `tasks/semantic_segmentation.py`)."""

from __future__ import annotations

import logging
from typing import Any

import tensorflow as tf
import tf_keras

from vision_core.configs import semantic_segmentation as exp_cfg
from vision_core.dataloaders import input_reader, segmentation_input
from vision_core.evaluation import segmentation_metrics
from vision_core.losses import segmentation_losses
from vision_core.modeling import factory
from vision_core.tasks.base_task import Task

logger = logging.getLogger(__name__)


class SemanticSegmentationTask(Task):
    """Builds the segmentation model, its inputs, the loss and mIoU metrics from a config."""

    def __init__(
        self,
        params: exp_cfg.SemanticSegmentationTask,
        logging_dir: str | None = None,
        name: str | None = None,
    ):
        super().__init__(params, logging_dir, name)
        self._loss_fn = None

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
        model = factory.build_segmentation_model(input_specs, model_cfg, l2_regularizer=l2)
        model(tf.zeros([1] + list(model_cfg.input_size)), training=False)
        return model

    def build_inputs(self, params: exp_cfg.DataConfigSeg, input_context: Any = None):
        ignore_label = self.task_config.losses.ignore_label
        decoder = segmentation_input.Decoder(image_feature=params.image_feature or None)
        parser = segmentation_input.Parser(
            output_size=list(params.output_size),
            crop_size=list(params.crop_size) or None,
            ignore_label=ignore_label,
            resize_eval_groundtruth=params.resize_eval_groundtruth,
            gt_is_matting_map=params.gt_is_matting_map,
            groundtruth_padded_size=list(params.groundtruth_padded_size) or None,
            aug_scale_min=params.aug_scale_min,
            aug_scale_max=params.aug_scale_max,
            aug_rand_hflip=params.aug_rand_hflip,
            preserve_aspect_ratio=params.preserve_aspect_ratio,
            dtype=params.dtype,
        )
        reader = input_reader.InputReader(
            params, decoder_fn=decoder.decode, parser_fn=parser.parse_fn(params.is_training)
        )
        return reader.read(input_context=input_context)

    def _segmentation_loss(self):
        if self._loss_fn is None:
            p = self.task_config.losses
            self._loss_fn = segmentation_losses.SegmentationLoss(
                label_smoothing=p.label_smoothing,
                class_weights=list(p.class_weights),
                ignore_label=p.ignore_label,
                gt_is_matting_map=p.gt_is_matting_map,
                use_groundtruth_dimension=p.use_groundtruth_dimension,
                top_k_percent_pixels=p.top_k_percent_pixels,
            )
        return self._loss_fn

    def build_losses(self, labels, model_outputs, aux_losses=None) -> tf.Tensor:
        p = self.task_config.losses
        logits = model_outputs["logits"] if isinstance(model_outputs, dict) else model_outputs
        total = self._segmentation_loss()(logits, labels["masks"])
        if isinstance(model_outputs, dict) and "mask_scores" in model_outputs:
            total += p.mask_scoring_weight * self._mask_scoring_loss(
                labels, logits, model_outputs["mask_scores"]
            )
        total *= p.loss_weight
        if aux_losses:
            total += tf.add_n([tf.cast(x, total.dtype) for x in aux_losses])
        return total

    def _mask_scoring_loss(self, labels, logits, mask_scores):
        """L2 between the predicted per-class mask IoU and the IoU actually achieved."""
        masks = tf.cast(labels["masks"], tf.int32)
        logits = tf.image.resize(logits, tf.shape(masks)[1:3], method="bilinear")
        num_classes = self.task_config.model.num_classes
        valid = tf.cast(tf.not_equal(masks, self.task_config.losses.ignore_label), tf.float32)
        gt = tf.one_hot(tf.squeeze(masks, -1), num_classes) * valid
        pred = tf.one_hot(tf.argmax(logits, -1), num_classes) * valid
        inter = tf.reduce_sum(gt * pred, axis=[1, 2])
        union = tf.reduce_sum(tf.maximum(gt, pred), axis=[1, 2])
        target = tf.math.divide_no_nan(inter, union)
        return tf.reduce_mean(tf.square(tf.sigmoid(mask_scores) - tf.stop_gradient(target)))

    def build_metrics(self, training: bool = True) -> list:
        model_cfg = self.task_config.model
        if training:
            if not self.task_config.evaluation.report_train_mean_iou:
                return []
            return [
                segmentation_metrics.MeanIoU(
                    name="mean_iou", num_classes=model_cfg.num_classes, rescale_predictions=False
                )
            ]
        rescale = not self.task_config.validation_data.resize_eval_groundtruth
        return [
            segmentation_metrics.PerClassIoU(
                name="per_class_iou",
                num_classes=model_cfg.num_classes,
                rescale_predictions=rescale,
            )
        ]

    def update_metric(self, metric, labels, outputs) -> None:
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs
        metric.update_state(labels, logits)

    def summarize_metrics(self, metrics) -> dict[str, float]:
        result: dict[str, float] = {}
        for metric in metrics:
            value = metric.result()
            if metric.name == "per_class_iou":
                per_class = [float(v) for v in tf.reshape(value, [-1]).numpy()]
                result["mean_iou"] = sum(per_class) / max(len(per_class), 1)
                if self.task_config.evaluation.report_per_class_iou:
                    for i, v in enumerate(per_class):
                        result[f"iou/{i}"] = v
            else:
                result[metric.name] = float(value)
        return result

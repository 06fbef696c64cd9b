"""RetinaNet task (Model Garden's `tasks/retinanet.py`).

Loss: sigmoid focal loss on the per-anchor classes plus `box_loss_weight` × Huber loss on the
box codes of positive anchors, both normalized by the number of positives + 1, plus
regularization. Validation also runs the detection generator and hands the detections to a
COCO evaluator on the host (`aggregate_logs` / `reduce_aggregated_logs`), so the logged AP is
pycocotools' AP of the boxes in original-image pixels.
"""

from __future__ import annotations

import logging
from typing import Any

import tensorflow as tf
import tf_keras

from vision_core.configs import retinanet as exp_cfg
from vision_core.dataloaders import input_reader, retinanet_input, tf_example_decoder
from vision_core.losses import retinanet_losses
from vision_core.modeling import factory
from vision_core.tasks.base_task import Task

logger = logging.getLogger(__name__)

# The COCO summary entries logged after each evaluation.
COCO_METRIC_NAMES = (
    "AP", "AP50", "AP75", "APs", "APm", "APl",
    "ARmax1", "ARmax10", "ARmax100", "ARs", "ARm", "ARl",
)  # fmt: skip


def build_parser(params: exp_cfg.DataConfig, model: exp_cfg.RetinaNet) -> retinanet_input.Parser:
    """The `retinanet_input.Parser` a data config and model config describe."""
    parser = params.parser
    return retinanet_input.Parser(
        output_size=list(model.input_size[:2]),
        min_level=model.min_level,
        max_level=model.max_level,
        num_scales=model.anchor.num_scales,
        aspect_ratios=list(model.anchor.aspect_ratios),
        anchor_size=model.anchor.anchor_size,
        match_threshold=parser.match_threshold,
        unmatched_threshold=parser.unmatched_threshold,
        box_coder_weights=model.detection_generator.box_coder_weights,
        aug_rand_hflip=parser.aug_rand_hflip,
        aug_scale_min=parser.aug_scale_min,
        aug_scale_max=parser.aug_scale_max,
        skip_crowd_during_training=parser.skip_crowd_during_training,
        max_num_instances=parser.max_num_instances,
        dtype=params.dtype,
    )


class RetinaNetTask(Task):
    """Builds the detector, its inputs, the focal + box loss and COCO evaluation."""

    def __init__(
        self, params: exp_cfg.RetinaNetTask, logging_dir: str | None = None, name: str | None = None
    ):
        super().__init__(params, logging_dir, name)
        self._class_names: list[str] | None = None

    def build_model(self) -> tf_keras.Model:
        model_cfg = self.task_config.model
        if model_cfg.num_classes <= 1:
            raise ValueError(
                f"task.model.num_classes: expected > 1 (background is class 0), "
                f"got {model_cfg.num_classes}"
            )
        if not model_cfg.input_size:
            raise ValueError("task.model.input_size: expected [height, width, channels], got []")
        input_specs = tf_keras.layers.InputSpec(shape=[None] + list(model_cfg.input_size))
        decay = self.task_config.losses.l2_weight_decay
        # Model Garden halves the decay because tf.nn.l2_loss halves the sum of squares.
        l2 = tf_keras.regularizers.l2(decay / 2.0) if decay else None
        model = factory.build_retinanet(input_specs, model_cfg, l2_regularizer=l2)
        if self.task_config.freeze_backbone:
            model.backbone.trainable = False
        model(tf.zeros([1] + list(model_cfg.input_size)), training=True)
        return model

    def build_inputs(self, params: exp_cfg.DataConfig, input_context: Any = None):
        decoder = tf_example_decoder.TfExampleDecoder(
            include_mask=False, regenerate_source_id=params.decoder.regenerate_source_id
        )
        parser = build_parser(params, self.task_config.model)
        reader = input_reader.InputReader(
            params, decoder_fn=decoder.decode, parser_fn=parser.parse_fn(params.is_training)
        )
        return reader.read(input_context=input_context)

    def build_losses(self, labels, model_outputs, aux_losses=None) -> tf.Tensor:
        return self._losses(labels, model_outputs, aux_losses)[0]

    def _losses(self, labels, outputs, aux_losses=None) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        cfg = self.task_config.losses
        total, cls_loss, box_loss = retinanet_losses.retinanet_loss(
            outputs["cls_outputs"],
            outputs["box_outputs"],
            labels,
            num_classes=self.task_config.model.num_classes,
            focal_alpha=cfg.focal_loss_alpha,
            focal_gamma=cfg.focal_loss_gamma,
            huber_delta=cfg.huber_loss_delta,
            box_loss_weight=cfg.box_loss_weight,
        )
        if aux_losses:
            total += tf.add_n([tf.cast(x, total.dtype) for x in aux_losses])
        return cfg.loss_weight * total, cls_loss, box_loss

    def build_metrics(self, training: bool = True) -> list:
        return [
            tf_keras.metrics.Mean(name="cls_loss"),
            tf_keras.metrics.Mean(name="box_loss"),
        ]

    def train_step(self, inputs, model, optimizer, metrics=None) -> dict[str, tf.Tensor]:
        features, labels = inputs
        with tf.GradientTape() as tape:
            outputs = model(features, training=True)
            outputs = tf.nest.map_structure(lambda x: tf.cast(x, tf.float32), outputs)
            loss, cls_loss, box_loss = self._losses(labels, outputs, model.losses)
            scaled = loss
            if isinstance(optimizer, tf_keras.mixed_precision.LossScaleOptimizer):
                scaled = optimizer.get_scaled_loss(loss)
        grads = tape.gradient(scaled, model.trainable_variables)
        if isinstance(optimizer, tf_keras.mixed_precision.LossScaleOptimizer):
            grads = optimizer.get_unscaled_gradients(grads)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        self._update_loss_metrics(metrics, cls_loss, box_loss)
        return {"loss": loss}

    @staticmethod
    def _update_loss_metrics(metrics, cls_loss, box_loss) -> None:
        for metric in metrics or []:
            if metric.name == "cls_loss":
                metric.update_state(cls_loss)
            elif metric.name == "box_loss":
                metric.update_state(box_loss)

    def validation_step(self, inputs, model, metrics=None) -> dict[str, Any]:
        features, labels = inputs
        outputs = model(
            features,
            image_shape=labels["image_info"][:, 1, :],
            anchor_boxes=labels["anchor_boxes"],
            training=False,
        )
        outputs = tf.nest.map_structure(lambda x: tf.cast(x, tf.float32), outputs)
        loss, cls_loss, box_loss = self._losses(labels, outputs, model.losses)
        self._update_loss_metrics(metrics, cls_loss, box_loss)
        groundtruths = labels["groundtruths"]
        return {
            "loss": loss,
            "predictions": {
                "source_id": groundtruths["source_id"],
                "image_info": labels["image_info"],
                "detection_boxes": outputs["detection_boxes"],
                "detection_scores": outputs["detection_scores"],
                "detection_classes": tf.cast(outputs["detection_classes"], tf.int32),
                "num_detections": tf.cast(outputs["num_detections"], tf.int32),
            },
            "groundtruths": groundtruths,
        }

    def _new_evaluator(self):
        from vision_core.evaluation import coco_evaluator

        return coco_evaluator.COCOEvaluator(
            annotation_file=self.task_config.annotation_file or None,
            include_mask=False,
            need_rescale_bboxes=True,
            per_category_metrics=self.task_config.per_category_metrics,
        )

    def aggregate_logs(self, state: Any, step_outputs: dict[str, Any]) -> Any:
        """Feeds one validation batch (numpy) to the COCO evaluator `state`."""
        if state is None:
            state = self._new_evaluator()
        state.update_state(step_outputs["groundtruths"], step_outputs["predictions"])
        return state

    def reduce_aggregated_logs(self, state: Any) -> dict[str, float]:
        """The COCO summary of the pass, e.g. {'AP': ..., 'AP50': ...}."""
        if state is None:
            return {}
        result = state.result()
        return {k: float(v) for k, v in result.items() if isinstance(v, int | float)}

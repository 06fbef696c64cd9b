"""`SegmentationModel`: backbone → decoder → segmentation head (→ mask scoring).

Model Garden's `official/vision/modeling/segmentation_model.py`, plus what its users expect from a
Keras model: `output_specs`, and `compile()` / `fit()` / `evaluate()` with a loss and metrics that
take the labels dict and the outputs dict whole (the segmentation tutorial's usage).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from typing import Any

import tensorflow as tf
import tf_keras

logger = logging.getLogger(__name__)

_COMPONENTS = ("backbone", "decoder", "head", "mask_scoring_head")


def _is_tf_keras_optimizer(optimizer: Any) -> bool:
    return isinstance(
        optimizer, tf_keras.optimizers.Optimizer | tf_keras.optimizers.legacy.Optimizer
    )


def _convert_learning_rate(value: Any) -> Any:
    """A Keras-3 serialized schedule (dict) → the tf_keras schedule; numbers pass through."""
    if not isinstance(value, Mapping):
        return value
    name = value.get("class_name")
    if not hasattr(tf_keras.optimizers.schedules, str(name)):
        raise ValueError(
            f"compile(optimizer=...): learning-rate schedule {name!r} has no tf_keras "
            "equivalent; pass a tf_keras optimizer (import tf_keras) instead"
        )
    return tf_keras.optimizers.schedules.deserialize(
        {"class_name": name, "config": dict(value.get("config", {}))}
    )


def to_tf_keras_optimizer(optimizer: Any) -> Any:
    """Returns `optimizer` as a tf_keras optimizer.

    Strings and tf_keras optimizers pass through. A Keras 3 optimizer (what `tf.keras` gives
    when TF_USE_LEGACY_KERAS is unset) cannot update tf_keras variables, so an equivalent
    tf_keras optimizer is rebuilt from its class name and `get_config()`; settings tf_keras
    lacks are dropped with a warning.

    Raises:
      ValueError: the optimizer class or its schedule has no tf_keras equivalent.
    """
    if optimizer is None or isinstance(optimizer, str) or _is_tf_keras_optimizer(optimizer):
        return optimizer
    if not hasattr(optimizer, "get_config"):
        return optimizer
    name = type(optimizer).__name__
    target = getattr(tf_keras.optimizers, name, None)
    if not (inspect.isclass(target) and issubclass(target, tf_keras.optimizers.Optimizer)):
        raise ValueError(
            f"compile(optimizer=...): {type(optimizer).__module__}.{name} has no tf_keras "
            "equivalent; pass a tf_keras optimizer (import tf_keras) instead"
        )
    accepted = set(inspect.signature(target.__init__).parameters) - {"self", "kwargs"}
    config = {}
    dropped = {}
    for key, value in optimizer.get_config().items():
        if key in accepted:
            config[key] = _convert_learning_rate(value) if key == "learning_rate" else value
        elif value is not None:
            dropped[key] = value
    if dropped:
        logger.warning("optimizer %s: tf_keras has no %s; ignored", name, dropped)
    converted = target(**config)
    logger.info(
        "compile(): rebuilt the Keras 3 optimizer %s.%s as tf_keras.optimizers.%s (config %s); "
        "this model is a tf_keras model",
        type(optimizer).__module__,
        name,
        name,
        config,
    )
    return converted


@tf_keras.utils.register_keras_serializable(package="Vision")
class SegmentationModel(tf_keras.Model):
    """A segmentation model: images → {'logits': ..., ('mask_scores': ...)}.

    The backbone's features go through the decoder (skipped when it is None), and the head gets
    `(backbone_features, decoder_features)`, so fusions such as DeepLab v3+ can read backbone
    levels the decoder does not return.
    """

    def __init__(
        self,
        backbone: tf_keras.Model,
        decoder: tf_keras.Model | tf_keras.layers.Layer | None,
        head: tf_keras.layers.Layer,
        mask_scoring_head: tf_keras.layers.Layer | None = None,
        **kwargs: Any,
    ):
        """Initializes the model.

        Args:
          backbone: a model returning {level: features}.
          decoder: a model/layer mapping {level: features} to {level: features}, or None.
          head: e.g. `SegmentationHead`; called with `(backbone_features, decoder_features)`.
          mask_scoring_head: e.g. `MaskScoring`; called with the logits.
          **kwargs: `tf_keras.Model` arguments.
        """
        super().__init__(**kwargs)
        self._config_dict = {
            "backbone": backbone,
            "decoder": decoder,
            "head": head,
            "mask_scoring_head": mask_scoring_head,
        }
        self.backbone = backbone
        self.decoder = decoder
        self.head = head
        self.mask_scoring_head = mask_scoring_head
        self._reset_whole_targets(loss=None, metrics=[], loss_tracker=None)

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> dict[str, tf.Tensor]:
        backbone_features = self.backbone(inputs, training=training)
        if self.decoder is not None:
            decoder_features = self.decoder(backbone_features, training=training)
        else:
            decoder_features = backbone_features
        logits = self.head((backbone_features, decoder_features), training=training)
        outputs = {"logits": logits}
        if self.mask_scoring_head is not None:
            outputs["mask_scores"] = self.mask_scoring_head(logits, training=training)
        return outputs

    # ---------------------------------------------------------------------------- structure
    @property
    def checkpoint_items(self) -> dict[str, tf_keras.Model | tf_keras.layers.Layer]:
        """Components to checkpoint by name, e.g. to restore only the backbone."""
        items = {"backbone": self.backbone, "head": self.head}
        if self.decoder is not None:
            items["decoder"] = self.decoder
        if self.mask_scoring_head is not None:
            items["mask_scoring_head"] = self.mask_scoring_head
        return items

    @property
    def output_specs(self) -> dict[str, tf.TensorShape]:
        """{output name: TensorShape} for the backbone's input size (batch None).

        Computed from the components' specs (`output_specs` / `compute_output_shape`) without
        running the model; a component without either makes it trace the model symbolically.
        """
        try:
            return self._specs_from_components()
        except (AttributeError, NotImplementedError, TypeError, KeyError):
            logger.debug("SegmentationModel.output_specs: tracing the model", exc_info=True)
            return self._specs_by_tracing()

    def _specs_from_components(self) -> dict[str, tf.TensorShape]:
        backbone_specs = self.backbone.output_specs
        if self.decoder is None:
            decoder_specs = backbone_specs
        elif getattr(self.decoder, "built", False) and hasattr(self.decoder, "output_specs"):
            decoder_specs = self.decoder.output_specs
        else:
            decoder_specs = self.decoder.compute_output_shape(backbone_specs)
        logits = tf.TensorShape(self.head.compute_output_shape((backbone_specs, decoder_specs)))
        specs = {"logits": tf.TensorShape([None, *logits.as_list()[1:]])}
        if self.mask_scoring_head is not None:
            scores = tf.TensorShape(self.mask_scoring_head.compute_output_shape(logits))
            specs["mask_scores"] = tf.TensorShape([None, *scores.as_list()[1:]])
        return specs

    def _specs_by_tracing(self) -> dict[str, tf.TensorShape]:
        input_shape = tf.TensorShape(self.backbone.input_shape)
        fn = tf.function(lambda x: self(x, training=False))
        concrete = fn.get_concrete_function(tf.TensorSpec(input_shape, tf.float32))
        return {
            name: tf.TensorShape([None, *spec.shape.as_list()[1:]])
            for name, spec in concrete.structured_outputs.items()
        }

    # ------------------------------------------------------------------------ serialization
    def get_config(self) -> dict[str, Any]:
        return {
            name: None if component is None else tf_keras.utils.serialize_keras_object(component)
            for name, component in self._config_dict.items()
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> SegmentationModel:
        config = dict(config)
        for name in _COMPONENTS:
            value = config.get(name)
            if isinstance(value, Mapping):
                config[name] = tf_keras.layers.deserialize(value, custom_objects=custom_objects)
        return cls(**config)

    # --------------------------------------------------------------------------- training
    @tf.__internal__.tracking.no_automatic_dependency_tracking
    def _reset_whole_targets(self, loss: Any, metrics: list[Any], loss_tracker: Any) -> None:
        # Not tracked: metric variables must not become model weights or checkpoint entries.
        self._whole_loss = loss
        self._whole_metrics = list(metrics)
        self._loss_tracker = loss_tracker

    def compile(
        self,
        optimizer: Any = "rmsprop",
        loss: Any = None,
        metrics: Any = None,
        **kwargs: Any,
    ) -> None:
        """Configures training, as `tf_keras.Model.compile`, with whole-dict losses and metrics.

        Args:
          optimizer: a tf_keras optimizer or name; a Keras 3 optimizer is rebuilt as its tf_keras
            equivalent.
          loss: a callable `loss(labels, outputs)` returning a scalar, where `labels` is what the
            dataset yields as targets (e.g. {'masks', 'valid_masks', 'image_info'}) and
            `outputs` the model's dict; a string names a tf_keras loss.
          metrics: objects with `update_state(labels, outputs)`, `result()`, `reset_state()`.
          **kwargs: other `tf_keras.Model.compile` arguments (`loss_weights`,
            `weighted_metrics` are not supported).
        """
        for unsupported in ("loss_weights", "weighted_metrics"):
            if kwargs.get(unsupported) is not None:
                raise ValueError(
                    f"SegmentationModel.compile: {unsupported} is not supported; weigh the terms "
                    "inside the loss / metric object"
                )
        if isinstance(loss, str):
            loss = tf_keras.losses.get(loss)
        if metrics is None:
            metrics = []
        elif not isinstance(metrics, list | tuple):
            metrics = [metrics]
        for i, metric in enumerate(metrics):
            if isinstance(metric, str) or not hasattr(metric, "update_state"):
                raise ValueError(
                    f"SegmentationModel.compile: metrics[{i}] = {metric!r} must be a metric "
                    "object with update_state(labels, outputs)"
                )
        super().compile(
            optimizer=to_tf_keras_optimizer(optimizer), loss=None, metrics=None, **kwargs
        )
        with self.distribute_strategy.scope():
            tracker = tf_keras.metrics.Mean(name="loss")
        self._reset_whole_targets(loss=loss, metrics=list(metrics), loss_tracker=tracker)

    @property
    def metrics(self) -> list[Any]:
        """The loss tracker and the compiled metrics (Keras resets these every epoch)."""
        extra = [] if self._loss_tracker is None else [self._loss_tracker]
        return extra + list(self._whole_metrics) + list(super().metrics)

    def compute_loss(
        self, x: Any = None, y: Any = None, y_pred: Any = None, sample_weight: Any = None
    ) -> tf.Tensor:
        """The compiled loss on `(y, y_pred)` whole, plus the regularization losses."""
        del x
        if self._whole_loss is None:
            if not self.losses:
                raise ValueError(
                    "SegmentationModel: no loss to train on; pass loss=... to compile()"
                )
            total = tf.constant(0.0)
        elif sample_weight is None:
            total = self._whole_loss(y, y_pred)
        else:
            total = self._whole_loss(y, y_pred, sample_weight)
        # A loss returning per-example or per-pixel values is averaged, like Keras' default.
        total = tf.reduce_mean(tf.cast(total, tf.float32))
        if self.losses:
            total += tf.add_n([tf.cast(v, tf.float32) for v in self.losses])
        return total

    def _update_and_report(self, y: Any, y_pred: Any, loss: tf.Tensor) -> dict[str, Any]:
        if self._loss_tracker is not None:
            self._loss_tracker.update_state(loss)
        for metric in self._whole_metrics:
            metric.update_state(y, y_pred)
        logs: dict[str, Any] = {}
        for metric in self.metrics:
            result = metric.result()
            if isinstance(result, Mapping):
                logs.update(result)
            else:
                logs[metric.name] = result
        return logs

    def train_step(self, data: Any) -> dict[str, Any]:
        x, y, sample_weight = tf_keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            outputs = self(x, training=True)
            loss = self.compute_loss(x, y, outputs, sample_weight)
        self.optimizer.minimize(loss, self.trainable_variables, tape=tape)
        return self._update_and_report(y, outputs, loss)

    def test_step(self, data: Any) -> dict[str, Any]:
        x, y, sample_weight = tf_keras.utils.unpack_x_y_sample_weight(data)
        outputs = self(x, training=False)
        loss = self.compute_loss(x, y, outputs, sample_weight)
        return self._update_and_report(y, outputs, loss)

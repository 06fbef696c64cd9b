"""The task interface the trainer drives (Model Garden's `base_task.Task`, trimmed)."""

from __future__ import annotations

import logging
from typing import Any

import tensorflow as tf
import tf_keras

logger = logging.getLogger(__name__)


class Task:
    """Builds a model, inputs, losses and metrics from a task config; runs one step of each."""

    def __init__(self, params: Any, logging_dir: str | None = None, name: str | None = None):
        self._task_config = params
        self._logging_dir = logging_dir
        self.name = name or type(self).__name__

    @property
    def task_config(self) -> Any:
        return self._task_config

    def build_model(self) -> tf_keras.Model:
        raise NotImplementedError

    def build_inputs(self, params: Any, input_context: Any = None) -> tf.data.Dataset:
        raise NotImplementedError

    def build_losses(self, labels: Any, model_outputs: Any, aux_losses: Any = None) -> tf.Tensor:
        raise NotImplementedError

    def build_metrics(self, training: bool = True) -> list[tf_keras.metrics.Metric]:
        return []

    def initialize(self, model: tf_keras.Model) -> None:
        """Loads `init_checkpoint` (all, or the listed modules) into a freshly built model."""
        path = getattr(self._task_config, "init_checkpoint", None)
        if not path:
            return
        if tf.io.gfile.isdir(path):
            latest = tf.train.latest_checkpoint(path)
            if latest is None:
                raise FileNotFoundError(f"task.init_checkpoint: no checkpoint found in {path}")
            path = latest
        modules = getattr(self._task_config, "init_checkpoint_modules", "all")
        if isinstance(modules, str):
            modules = [modules]
        if "all" in modules:
            ckpt = tf.train.Checkpoint(model=model)
        else:
            items = model.checkpoint_items
            unknown = sorted(set(modules) - set(items))
            if unknown:
                raise ValueError(
                    f"task.init_checkpoint_modules: unknown {unknown}; "
                    f"the model has {sorted(items)} or 'all'"
                )
            ckpt = tf.train.Checkpoint(**{m: items[m] for m in modules})
        ckpt.read(path).expect_partial()
        logger.info("Initialized %s from %s", ", ".join(modules), path)

    def train_step(self, inputs, model, optimizer, metrics=None) -> dict[str, tf.Tensor]:
        features, labels = inputs
        with tf.GradientTape() as tape:
            outputs = model(features, training=True)
            outputs = tf.nest.map_structure(lambda x: tf.cast(x, tf.float32), outputs)
            loss = self.build_losses(labels, outputs, aux_losses=model.losses)
            scaled = loss
            if isinstance(optimizer, tf_keras.mixed_precision.LossScaleOptimizer):
                scaled = optimizer.get_scaled_loss(loss)
        grads = tape.gradient(scaled, model.trainable_variables)
        if isinstance(optimizer, tf_keras.mixed_precision.LossScaleOptimizer):
            grads = optimizer.get_unscaled_gradients(grads)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        logs = {"loss": loss}
        for metric in metrics or []:
            self.update_metric(metric, labels, outputs)
        return logs

    def validation_step(self, inputs, model, metrics=None) -> dict[str, tf.Tensor]:
        features, labels = inputs
        outputs = model(features, training=False)
        outputs = tf.nest.map_structure(lambda x: tf.cast(x, tf.float32), outputs)
        loss = self.build_losses(labels, outputs, aux_losses=model.losses)
        for metric in metrics or []:
            self.update_metric(metric, labels, outputs)
        return {"loss": loss}

    def update_metric(self, metric, labels, outputs) -> None:
        metric.update_state(labels, outputs)

    def summarize_metrics(self, metrics) -> dict[str, float]:
        """Turns metric objects into a flat {name: float} dict."""
        result = {}
        for metric in metrics:
            value = metric.result()
            if isinstance(value, dict):
                result.update({k: float(v) for k, v in value.items()})
            else:
                result[metric.name] = float(value)
        return result

"""Optimizers and learning-rate schedules from an `OptimizationConfig` (Model Garden's shape)."""

from __future__ import annotations

import tensorflow as tf
import tf_keras

from vision_core.configs.common import OptimizationConfig
from vision_core.hyperparams import get_subconfig


@tf_keras.utils.register_keras_serializable(package="Vision")
class LinearWarmup(tf_keras.optimizers.schedules.LearningRateSchedule):
    """Linear ramp from `warmup_learning_rate` to the schedule's value at `warmup_steps`."""

    def __init__(
        self,
        after_warmup,
        warmup_steps: int,
        warmup_learning_rate: float = 0.0,
        power: float = 1.0,
        name: str = "linear_warmup",
    ):
        super().__init__()
        if isinstance(after_warmup, dict):
            after_warmup = tf_keras.optimizers.schedules.deserialize(after_warmup)
        self._after = after_warmup
        self._steps = int(warmup_steps)
        self._start = float(warmup_learning_rate)
        self._power = float(power)
        self._name = name

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        target = self._after(self._steps) if callable(self._after) else self._after
        target = tf.cast(target, tf.float32)
        frac = tf.minimum(step / max(self._steps, 1), 1.0) ** self._power
        warm = self._start + (target - self._start) * frac
        later = self._after(step) if callable(self._after) else tf.cast(self._after, tf.float32)
        return tf.where(step < self._steps, warm, later)

    def get_config(self):
        after = self._after
        if isinstance(after, tf_keras.optimizers.schedules.LearningRateSchedule):
            after = tf_keras.optimizers.schedules.serialize(after)
        return {
            "after_warmup": after,
            "warmup_steps": self._steps,
            "warmup_learning_rate": self._start,
            "power": self._power,
            "name": self._name,
        }


def build_learning_rate(config: OptimizationConfig):
    """The learning rate (a float or a schedule), warmup included."""
    lr_cfg = config.learning_rate
    kind = lr_cfg.type
    params = get_subconfig(lr_cfg)
    schedules = tf_keras.optimizers.schedules
    if kind == "constant":
        lr = params.learning_rate
    elif kind == "stepwise":
        lr = schedules.PiecewiseConstantDecay(list(params.boundaries), list(params.values))
    elif kind == "polynomial":
        lr = schedules.PolynomialDecay(
            params.initial_learning_rate,
            params.decay_steps,
            params.end_learning_rate,
            power=params.power,
            cycle=params.cycle,
        )
    elif kind == "cosine":
        lr = schedules.CosineDecay(params.initial_learning_rate, params.decay_steps, params.alpha)
    elif kind == "exponential":
        lr = schedules.ExponentialDecay(
            params.initial_learning_rate,
            params.decay_steps,
            params.decay_rate,
            staircase=params.staircase,
        )
    else:
        raise ValueError(f"optimizer_config.learning_rate.type: unsupported {kind!r}")

    warmup = config.warmup
    if warmup.type is not None:
        w = get_subconfig(warmup)
        if w.warmup_steps > 0:
            if not callable(lr):
                lr = schedules.PolynomialDecay(lr, 1, lr)  # A constant as a schedule.
            start = getattr(w, "warmup_learning_rate", 0.0)
            lr = LinearWarmup(lr, w.warmup_steps, start, power=getattr(w, "power", 1.0))
    return lr


def build_optimizer(config: OptimizationConfig) -> tf_keras.optimizers.Optimizer:
    """A tf-keras optimizer with the configured schedule."""
    lr = build_learning_rate(config)
    kind = config.optimizer.type
    params = get_subconfig(config.optimizer)
    clip = {}
    if getattr(params, "global_clipnorm", None):
        clip["global_clipnorm"] = params.global_clipnorm
    if kind == "sgd":
        if params.clipnorm:
            clip["clipnorm"] = params.clipnorm
        if params.clipvalue:
            clip["clipvalue"] = params.clipvalue
        return tf_keras.optimizers.SGD(
            learning_rate=lr, momentum=params.momentum, nesterov=params.nesterov, **clip
        )
    if kind == "adam":
        return tf_keras.optimizers.Adam(
            learning_rate=lr,
            beta_1=params.beta_1,
            beta_2=params.beta_2,
            epsilon=params.epsilon,
            amsgrad=params.amsgrad,
            **clip,
        )
    if kind == "adamw":
        return tf_keras.optimizers.AdamW(
            learning_rate=lr,
            weight_decay=params.weight_decay_rate,
            beta_1=params.beta_1,
            beta_2=params.beta_2,
            epsilon=params.epsilon,
            **clip,
        )
    raise ValueError(f"optimizer_config.optimizer.type: unsupported {kind!r}")

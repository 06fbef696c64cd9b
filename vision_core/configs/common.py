"""Config pieces shared by every task: norm/activation, data, optimization, trainer, runtime."""

from __future__ import annotations

import dataclasses
from typing import Literal

from vision_core.hyperparams import Config, OneOfConfig


def sub(cls):
    """A dataclass field defaulting to a fresh `cls()`."""
    return dataclasses.field(default_factory=cls)


def value_list(*values):
    return dataclasses.field(default_factory=lambda: list(values))


Activation = Literal["relu", "relu6", "swish", "hard_swish", "gelu", "sigmoid", "linear", "elu"]


@dataclasses.dataclass
class NormActivation(Config):
    activation: Activation = "relu"
    use_sync_bn: bool = False
    norm_momentum: float = 0.99
    norm_epsilon: float = 0.001


@dataclasses.dataclass
class DataConfig(Config):
    """Fields common to every task's input (Model Garden's `cfg.DataConfig`)."""

    input_path: str | list[str] = ""
    global_batch_size: int = 0
    is_training: bool = True
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    shuffle_buffer_size: int = 1000
    cycle_length: int | None = 10
    drop_remainder: bool = True
    file_type: Literal["tfrecord", "tfrecord_compressed"] = "tfrecord"
    compression: Literal["", "GZIP", "gzip"] | None = None
    cache: bool = False
    seed: int | None = None


# ------------------------------------------------------------------------------ optimization
@dataclasses.dataclass
class SGDConfig(Config):
    momentum: float = 0.9
    nesterov: bool = False
    clipnorm: float | None = None
    clipvalue: float | None = None
    global_clipnorm: float | None = None


@dataclasses.dataclass
class AdamConfig(Config):
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7
    amsgrad: bool = False
    global_clipnorm: float | None = None


@dataclasses.dataclass
class AdamWConfig(Config):
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7
    weight_decay_rate: float = 0.0
    global_clipnorm: float | None = None


@dataclasses.dataclass
class OptimizerConfig(OneOfConfig):
    type: Literal["sgd", "adam", "adamw"] | None = "sgd"
    sgd: SGDConfig = sub(SGDConfig)
    adam: AdamConfig = sub(AdamConfig)
    adamw: AdamWConfig = sub(AdamWConfig)


@dataclasses.dataclass
class ConstantLrConfig(Config):
    learning_rate: float = 0.1


@dataclasses.dataclass
class StepwiseLrConfig(Config):
    boundaries: list[int] = dataclasses.field(default_factory=list)
    values: list[float] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class PolynomialLrConfig(Config):
    initial_learning_rate: float = 0.1
    decay_steps: int = 1000
    end_learning_rate: float = 0.0001
    power: float = 1.0
    cycle: bool = False


@dataclasses.dataclass
class CosineLrConfig(Config):
    initial_learning_rate: float = 0.1
    decay_steps: int = 1000
    alpha: float = 0.0


@dataclasses.dataclass
class ExponentialLrConfig(Config):
    initial_learning_rate: float = 0.1
    decay_steps: int = 1000
    decay_rate: float = 0.96
    staircase: bool = False


@dataclasses.dataclass
class LrConfig(OneOfConfig):
    type: Literal["constant", "stepwise", "polynomial", "cosine", "exponential"] | None = "constant"
    constant: ConstantLrConfig = sub(ConstantLrConfig)
    stepwise: StepwiseLrConfig = sub(StepwiseLrConfig)
    polynomial: PolynomialLrConfig = sub(PolynomialLrConfig)
    cosine: CosineLrConfig = sub(CosineLrConfig)
    exponential: ExponentialLrConfig = sub(ExponentialLrConfig)


@dataclasses.dataclass
class LinearWarmupConfig(Config):
    warmup_learning_rate: float = 0.0
    warmup_steps: int = 0


@dataclasses.dataclass
class PolynomialWarmupConfig(Config):
    power: float = 1.0
    warmup_steps: int = 0


@dataclasses.dataclass
class WarmupConfig(OneOfConfig):
    type: Literal["linear", "polynomial"] | None = None
    linear: LinearWarmupConfig = sub(LinearWarmupConfig)
    polynomial: PolynomialWarmupConfig = sub(PolynomialWarmupConfig)


@dataclasses.dataclass
class OptimizationConfig(Config):
    optimizer: OptimizerConfig = sub(OptimizerConfig)
    learning_rate: LrConfig = sub(LrConfig)
    warmup: WarmupConfig = sub(WarmupConfig)


# ------------------------------------------------------------------------- trainer + runtime
@dataclasses.dataclass
class TrainerConfig(Config):
    optimizer_config: OptimizationConfig = sub(OptimizationConfig)
    train_steps: int = 0
    validation_steps: int = -1
    validation_interval: int = 1000
    steps_per_loop: int = 100
    summary_interval: int = 100
    checkpoint_interval: int = 1000
    max_to_keep: int = 5
    best_checkpoint_eval_metric: str = ""
    best_checkpoint_metric_comp: Literal["higher", "lower"] = "higher"
    best_checkpoint_export_subdir: str = ""
    loss_upper_bound: float = 1e6
    train_tf_function: bool = True
    eval_tf_function: bool = True


@dataclasses.dataclass
class RuntimeConfig(Config):
    distribution_strategy: Literal[
        "default", "one_device", "mirrored", "multi_worker_mirrored", "tpu", "off"
    ] = "default"
    mixed_precision_dtype: Literal["float32", "float16", "bfloat16"] | None = None
    num_gpus: int = 0
    tpu: str | None = None
    run_eagerly: bool = False
    seed: int | None = None
    enable_xla: bool = False

"""SpineNet: scale-permuted backbones (Du et al., 2020, https://arxiv.org/abs/1912.05027).

Counterpart of Model Garden's `official/vision/modeling/backbones/spinenet.py`: same constructor,
block specs, scaling table, layers, variable shapes and variable order, so a Model Garden
checkpoint loads one variable to one variable and computes the same features.

The network is a stem (7x7 conv, max pool, two level-2 bottleneck groups) followed by the blocks
of `SPINENET_BLOCK_SPECS`. Each block takes two earlier features, resamples both to its own level
and width (`_resample_with_alpha`), adds them and runs a residual or bottleneck group. Output
blocks also absorb every earlier feature of the same shape that nothing consumed yet. Finally a
1x1 conv + BN + activation per level gives every endpoint `endpoints_num_filters` channels.

Input sizes: every level must be reachable by whole-number resampling, which a height and width
divisible by 2^7 (the deepest block level) always allow; other sizes are rejected at build time
with the level pair that does not fit. With an unknown height or width the layer plan is made for
a nominal 128-pixel input, which is the same plan any divisible size gives.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import tensorflow as tf
import tf_keras

from vision_core.modeling.backbones.registry import register_backbone_builder
from vision_core.modeling.backbones.resnet import (
    DEFAULT_INPUT_SPECS,
    as_input_spec,
    check_backbone_type,
    input_spec_config,
    norm_activation_kwargs,
)
from vision_core.modeling.backbones.scale_permuted import (
    BlockSpec,
    Feature,
    as_block_specs,
    build_scale_permuted_blocks,
    check_levels,
    downsample_steps,
    nearest_upsampling_ops,
    planned_input_size,
    scaling_params,
)
from vision_core.modeling.layers import nn_blocks, nn_layers

logger = logging.getLogger(__name__)

# Base channel count of a block at each level (a bottleneck block outputs 4x this).
FILTER_SIZE_MAP: dict[int, int] = {1: 32, 2: 64, 3: 128, 4: 256, 5: 256, 6: 256, 7: 256}

# The architecture found by the paper's search: one entry per block after the stem, as
# (level, block type, (offsets of the two parent features), is it an output).
# Offsets index the list of features built so far: 0 and 1 are the two stem groups.
SPINENET_BLOCK_SPECS: list[tuple[int, str, tuple[int, int], bool]] = [
    (2, "bottleneck", (0, 1), False),
    (4, "residual", (0, 1), False),
    (3, "bottleneck", (2, 3), False),
    (4, "bottleneck", (2, 4), False),
    (6, "residual", (3, 5), False),
    (4, "bottleneck", (3, 5), False),
    (5, "residual", (6, 7), False),
    (7, "residual", (6, 8), False),
    (5, "bottleneck", (8, 9), False),
    (5, "bottleneck", (8, 10), False),
    (4, "bottleneck", (5, 10), True),
    (3, "bottleneck", (4, 10), True),
    (5, "bottleneck", (7, 12), True),
    (7, "bottleneck", (5, 14), True),
    (6, "bottleneck", (12, 14), True),
    (2, "bottleneck", (2, 13), True),
]

# Model variants: the paper's SpineNet-49S/49/96/143/190 plus Model Garden's 143L.
SCALING_MAP: dict[str, dict[str, float | int]] = {
    "49S": {
        "endpoints_num_filters": 128,
        "filter_size_scale": 0.65,
        "resample_alpha": 0.5,
        "block_repeats": 1,
    },
    "49": {
        "endpoints_num_filters": 256,
        "filter_size_scale": 1.0,
        "resample_alpha": 0.5,
        "block_repeats": 1,
    },
    "96": {
        "endpoints_num_filters": 256,
        "filter_size_scale": 1.0,
        "resample_alpha": 0.5,
        "block_repeats": 2,
    },
    "143": {
        "endpoints_num_filters": 256,
        "filter_size_scale": 1.0,
        "resample_alpha": 1.0,
        "block_repeats": 3,
    },
    "143L": {
        "endpoints_num_filters": 256,
        "filter_size_scale": 1.3,
        "resample_alpha": 1.0,
        "block_repeats": 3,
    },
    "190": {
        "endpoints_num_filters": 512,
        "filter_size_scale": 1.3,
        "resample_alpha": 1.0,
        "block_repeats": 4,
    },
}

_BLOCK_FNS = {"bottleneck": nn_blocks.BottleneckBlock, "residual": nn_blocks.ResidualBlock}
# The stem's two level-2 groups are bottleneck groups in every variant.
_STEM_BLOCK_FN = "bottleneck"
_NUM_STEM_GROUPS = 2


def build_block_specs(block_specs: Sequence[Sequence[Any]] | None = None) -> list[BlockSpec]:
    """`BlockSpec`s from (level, block_fn, (offset0, offset1), is_output) entries.

    Args:
      block_specs: the entries; None or empty gives `SPINENET_BLOCK_SPECS`.

    Returns:
      One `BlockSpec` per entry.
    """
    if not block_specs:
        block_specs = SPINENET_BLOCK_SPECS
    return [BlockSpec(*spec) for spec in block_specs]


# ------------------------------------------------------------------------------------- model
@tf_keras.utils.register_keras_serializable(package="Vision")
class SpineNet(tf_keras.Model):
    """SpineNet feature extractor: returns {'3'..'7': [B, H/2^l, W/2^l, endpoints_num_filters]}
    for the default levels."""

    def __init__(
        self,
        input_specs: tf_keras.layers.InputSpec = DEFAULT_INPUT_SPECS,
        min_level: int = 3,
        max_level: int = 7,
        block_specs: Sequence[BlockSpec | Sequence[Any]] | None = None,
        endpoints_num_filters: int = 256,
        resample_alpha: float = 0.5,
        block_repeats: int = 1,
        filter_size_scale: float = 1.0,
        init_stochastic_depth_rate: float = 0.0,
        kernel_initializer: Any = "VarianceScaling",
        kernel_regularizer: tf_keras.regularizers.Regularizer | None = None,
        bias_regularizer: tf_keras.regularizers.Regularizer | None = None,
        activation: str = "relu",
        use_sync_bn: bool = False,
        norm_momentum: float = 0.99,
        norm_epsilon: float = 0.001,
        **kwargs: Any,
    ):
        """Initializes a SpineNet.

        Args:
          input_specs: shape of the input images, [None, H, W, C]; H and W may be None.
          min_level: lowest output level.
          max_level: highest output level; every level in between needs an output block.
          block_specs: the blocks after the stem, as `BlockSpec`s or
            (level, block_fn, (offset0, offset1), is_output) entries; None gives
            `SPINENET_BLOCK_SPECS`.
          endpoints_num_filters: channels of every output level.
          resample_alpha: fraction of a parent's base channels kept while resampling it.
          block_repeats: blocks per block group.
          filter_size_scale: multiplier of every block's channels (not of the 64-channel stem
            conv or of the endpoints).
          init_stochastic_depth_rate: stochastic depth rate of the last block; block i of n
            gets `rate * i / n`. The stem groups have none.
          kernel_initializer: initializer of every conv kernel.
          kernel_regularizer: regularizer of every conv kernel (e.g. L2 weight decay).
          bias_regularizer: regularizer of conv biases (the convs here have none).
          activation: activation name used everywhere.
          use_sync_bn: synchronize batch statistics across replicas.
          norm_momentum: batch-norm moving-average momentum.
          norm_epsilon: batch-norm epsilon.
          **kwargs: `tf_keras.Model` arguments (name, ...).

        Raises:
          ValueError: an argument is outside its allowed values, or the input size cannot be
            resampled to every level.
        """
        input_specs = as_input_spec(input_specs)
        specs = as_block_specs(
            block_specs, SPINENET_BLOCK_SPECS, tuple(_BLOCK_FNS), _NUM_STEM_GROUPS
        )
        output_levels = [spec.level for spec in specs if spec.is_output]
        if len(set(output_levels)) != len(output_levels):
            raise ValueError(f"block_specs: more than one output block per level: {output_levels}")
        check_levels(min_level, max_level, output_levels)
        if filter_size_scale <= 0:
            raise ValueError(f"filter_size_scale: must be > 0, got {filter_size_scale}")
        if block_repeats < 1:
            raise ValueError(f"block_repeats: must be >= 1, got {block_repeats}")
        nn_layers.get_activation(activation)  # Fails early on an unknown name.
        kernel_initializer = nn_layers.canonical_initializer(kernel_initializer)
        kernel_regularizer = nn_layers.canonical_regularizer(kernel_regularizer)
        bias_regularizer = nn_layers.canonical_regularizer(bias_regularizer)
        self._config_dict = {
            "input_specs": input_spec_config(input_specs),
            "min_level": min_level,
            "max_level": max_level,
            "block_specs": [spec.as_list() for spec in specs],
            "endpoints_num_filters": endpoints_num_filters,
            "resample_alpha": resample_alpha,
            "block_repeats": block_repeats,
            "filter_size_scale": filter_size_scale,
            "init_stochastic_depth_rate": init_stochastic_depth_rate,
            "kernel_initializer": kernel_initializer,
            "kernel_regularizer": kernel_regularizer,
            "bias_regularizer": bias_regularizer,
            "activation": activation,
            "use_sync_bn": use_sync_bn,
            "norm_momentum": norm_momentum,
            "norm_epsilon": norm_epsilon,
        }
        self._block_specs = specs

        inputs = tf_keras.Input(shape=input_specs.shape[1:])
        width, height = planned_input_size(input_specs, specs)
        features = self._build_stem(inputs, width, height)
        outputs = build_scale_permuted_blocks(
            features,
            specs,
            width,
            height,
            resample=self._resample_with_alpha,
            fuse=self._fuse,
            block_group=self._scale_permuted_group,
        )
        for level, _ in outputs:
            if not min_level <= level <= max_level:
                logger.info(
                    "SpineNet output block at level %d is outside [%d, %d]; not returned",
                    level,
                    min_level,
                    max_level,
                )
        by_level = dict(outputs)
        endpoints = {
            str(level): self._endpoint(by_level[level]) for level in range(min_level, max_level + 1)
        }
        self._output_specs = {level: feat.get_shape() for level, feat in endpoints.items()}
        super().__init__(inputs=inputs, outputs=endpoints, **kwargs)

    # ----------------------------------------------------------------------- layer helpers
    def _conv_norm(
        self,
        x: tf.Tensor,
        filters: int,
        kernel_size: int = 1,
        strides: int = 1,
        activate: bool = True,
    ) -> tf.Tensor:
        cfg = self._config_dict
        x = tf_keras.layers.Conv2D(
            filters=filters,
            kernel_size=kernel_size,
            strides=strides,
            padding="same",
            use_bias=False,
            kernel_initializer=nn_layers.clone_initializer(cfg["kernel_initializer"]),
            kernel_regularizer=cfg["kernel_regularizer"],
            bias_regularizer=cfg["bias_regularizer"],
        )(x)
        x = nn_layers.get_norm_layer(cfg["use_sync_bn"])(
            axis=nn_layers.get_bn_axis(),
            momentum=cfg["norm_momentum"],
            epsilon=cfg["norm_epsilon"],
        )(x)
        return self._activate(x) if activate else x

    def _activate(self, x: tf.Tensor) -> tf.Tensor:
        return nn_layers.get_activation(self._config_dict["activation"], use_keras_layer=True)(x)

    def _filters(self, level: int) -> int:
        return int(FILTER_SIZE_MAP[level] * self._config_dict["filter_size_scale"])

    def _block_group(
        self,
        x: tf.Tensor,
        filters: int,
        block_fn: str,
        stochastic_depth_drop_rate: float | None,
        name: str,
    ) -> tf.Tensor:
        """`block_repeats` blocks at stride 1; only the first may need a projection shortcut."""
        cfg = self._config_dict
        block_cls = _BLOCK_FNS[block_fn]
        out_channels = 4 * filters if block_fn == "bottleneck" else filters
        common = {
            "filters": filters,
            "strides": 1,
            "stochastic_depth_drop_rate": stochastic_depth_drop_rate,
            "kernel_initializer": cfg["kernel_initializer"],
            "kernel_regularizer": cfg["kernel_regularizer"],
            "bias_regularizer": cfg["bias_regularizer"],
            "activation": cfg["activation"],
            "use_sync_bn": cfg["use_sync_bn"],
            "norm_momentum": cfg["norm_momentum"],
            "norm_epsilon": cfg["norm_epsilon"],
        }
        x = block_cls(use_projection=x.shape[-1] != out_channels, **common)(x)
        for _ in range(1, cfg["block_repeats"]):
            x = block_cls(use_projection=False, **common)(x)
        # A named no-op marks the group output (one graph node, as in Model Garden).
        return tf_keras.layers.Activation("linear", name=name)(x)

    # --------------------------------------------------------------------------- the parts
    def _build_stem(self, inputs: tf.Tensor, width: int, height: int) -> list[Feature]:
        x = self._conv_norm(inputs, 64, kernel_size=7, strides=2)
        x = tf_keras.layers.MaxPool2D(pool_size=3, strides=2, padding="same")(x)
        features = []
        for i in range(_NUM_STEM_GROUPS):
            x = self._block_group(
                x, self._filters(2), _STEM_BLOCK_FN, None, name=f"stem_block_{i + 1}"
            )
            features.append(Feature(x, math.ceil(width / 4), math.ceil(height / 4), _STEM_BLOCK_FN))
        return features

    def _resample_with_alpha(
        self, parent: Feature, spec: BlockSpec, level: int, target_width: int
    ) -> tf.Tensor:
        """Brings a parent to the block's level and channels: 1x1 conv to `alpha` times the
        parent's base channels, then a stride-2 3x3 conv plus max pools (down) or nearest
        upsampling (up), then a 1x1 conv + BN (no activation) to the block's input channels."""
        cfg = self._config_dict
        base_channels = parent.tensor.shape[-1]
        if parent.block_fn == "bottleneck":
            base_channels /= 4
        channels = int(base_channels * cfg["resample_alpha"])
        x = self._conv_norm(parent.tensor, channels)

        if parent.width > target_width:
            x = self._conv_norm(x, channels, kernel_size=3, strides=2)
            for _ in range(downsample_steps(parent.width / 2, target_width)):
                x = tf_keras.layers.MaxPool2D(pool_size=3, strides=2, padding="same")(x)
        elif parent.width < target_width:
            scale = target_width // parent.width
            x = nearest_upsampling_ops(x, scale)

        target_channels = self._filters(level)
        if spec.block_fn == "bottleneck":
            target_channels *= 4
        return self._conv_norm(x, target_channels, activate=False)

    def _fuse(self, parents: list[tf.Tensor]) -> tf.Tensor:
        return self._activate(tf_keras.layers.Add()(parents))

    def _scale_permuted_group(
        self, x: tf.Tensor, spec: BlockSpec, index: int
    ) -> tuple[tf.Tensor, str]:
        rate = nn_layers.get_stochastic_depth_rate(
            self._config_dict["init_stochastic_depth_rate"], index + 1, len(self._block_specs)
        )
        x = self._block_group(
            x,
            self._filters(spec.level),
            spec.block_fn,
            rate,
            name=f"scale_permuted_block_{index + 1}",
        )
        return x, spec.block_fn

    def _endpoint(self, x: tf.Tensor) -> tf.Tensor:
        return self._conv_norm(x, self._config_dict["endpoints_num_filters"])

    # ------------------------------------------------------------------------- Keras API
    def get_config(self) -> dict[str, Any]:
        return nn_layers.serializable_config(self._config_dict)

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> SpineNet:
        return cls(**config)

    @property
    def output_specs(self) -> dict[str, tf.TensorShape]:
        """{level: TensorShape([None, h, w, c])} of the outputs."""
        return self._output_specs


@register_backbone_builder("spinenet")
def build_spinenet(
    input_specs: tf_keras.layers.InputSpec,
    backbone_config: Any,
    norm_activation_config: Any,
    l2_regularizer: tf_keras.regularizers.Regularizer | None = None,
) -> tf_keras.Model:
    """Builds a `SpineNet` from a backbone config (nested `type: spinenet` + `spinenet: {...}`,
    or flat) and a norm/activation config; `model_id` selects the `SCALING_MAP` entry. Missing
    fields take the `SpineNet` config defaults (model_id '49', levels 3-7, no stochastic depth).
    """
    cfg = check_backbone_type(backbone_config, "spinenet")
    params = scaling_params(getattr(cfg, "model_id", "49"), SCALING_MAP, "SpineNet")
    return SpineNet(
        input_specs=input_specs,
        min_level=getattr(cfg, "min_level", 3),
        max_level=getattr(cfg, "max_level", 7),
        endpoints_num_filters=params["endpoints_num_filters"],
        resample_alpha=params["resample_alpha"],
        block_repeats=params["block_repeats"],
        filter_size_scale=params["filter_size_scale"],
        init_stochastic_depth_rate=getattr(cfg, "stochastic_depth_drop_rate", 0.0),
        kernel_regularizer=l2_regularizer,
        **norm_activation_kwargs(norm_activation_config),
    )

"""SpineNet-Mobile: scale-permuted backbones of inverted-bottleneck blocks.

Du et al., "Efficient Scale-Permuted Backbone with Learned Resource Distribution" (2020,
https://arxiv.org/abs/2010.11426). Counterpart of Model Garden's
`official/vision/modeling/backbones/spinenet_mobile.py`: same constructor, block specs, scaling
table, layers, variable shapes and variable order.

Compared with `spinenet.SpineNet`: the stem is a stride-2 3x3 conv followed by two
inverted-bottleneck groups (levels 1 and 2); every block is an inverted bottleneck (MBConv) with
squeeze-and-excitation gated by `hard_sigmoid`; parents are downsampled by stride-2 depthwise
convs instead of a strided conv plus max pools; blocks deeper than `max_level` are built at
`max_level` (so with `max_level < 7` the last block built at `max_level` is that level's output).
The block wiring itself is shared with SpineNet (`scale_permuted.build_scale_permuted_blocks`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import tensorflow as tf
import tf_keras

from vision_core.modeling.backbones import scale_permuted, spinenet
from vision_core.modeling.backbones.registry import register_backbone_builder
from vision_core.modeling.backbones.resnet import (
    DEFAULT_INPUT_SPECS,
    as_input_spec,
    check_backbone_type,
    input_spec_config,
    norm_activation_kwargs,
)
from vision_core.modeling.layers import nn_blocks, nn_layers

logger = logging.getLogger(__name__)

BlockSpec = scale_permuted.BlockSpec

# Base channel count of a block at each level (level 0 is the stem conv).
FILTER_SIZE_MAP: dict[int, int] = {0: 8, 1: 16, 2: 24, 3: 40, 4: 80, 5: 112, 6: 112, 7: 112}

# (level, block type, (offsets of the two parent features), is it an output); offsets 0 and 1
# are the stem's level-1 and level-2 groups.
SPINENET_BLOCK_SPECS: list[tuple[int, str, tuple[int, int], bool]] = [
    (2, "mbconv", (0, 1), False),
    (2, "mbconv", (1, 2), False),
    (4, "mbconv", (1, 2), False),
    (3, "mbconv", (3, 4), False),
    (4, "mbconv", (3, 5), False),
    (6, "mbconv", (4, 6), False),
    (4, "mbconv", (4, 6), False),
    (5, "mbconv", (7, 8), False),
    (7, "mbconv", (7, 9), False),
    (5, "mbconv", (9, 10), False),
    (5, "mbconv", (9, 11), False),
    (4, "mbconv", (6, 11), True),
    (3, "mbconv", (5, 11), True),
    (5, "mbconv", (8, 13), True),
    (7, "mbconv", (6, 15), True),
    (6, "mbconv", (13, 15), True),
]

SCALING_MAP: dict[str, dict[str, float | int]] = {
    "49": {"endpoints_num_filters": 48, "filter_size_scale": 1.0, "block_repeats": 1},
    "49S": {"endpoints_num_filters": 40, "filter_size_scale": 0.65, "block_repeats": 1},
    "49XS": {"endpoints_num_filters": 24, "filter_size_scale": 0.6, "block_repeats": 1},
}

_BLOCK_FN = "mbconv"
# (stride, level of the output channels) of the two stem groups.
_STEM_GROUPS = ((1, 1), (2, 2))
# MobileNetV3-style squeeze-and-excitation gate.
_SE_GATING_ACTIVATION = "hard_sigmoid"


def build_block_specs(block_specs: Sequence[Sequence[Any]] | None = None) -> list[BlockSpec]:
    """`BlockSpec`s from entries; None or empty gives this module's `SPINENET_BLOCK_SPECS`."""
    return spinenet.build_block_specs(block_specs or SPINENET_BLOCK_SPECS)


@tf_keras.utils.register_keras_serializable(package="Vision")
class SpineNetMobile(tf_keras.Model):
    """SpineNet-Mobile feature extractor: returns
    {'3'..'7': [B, H/2^l, W/2^l, endpoints_num_filters]} for the default levels."""

    def __init__(
        self,
        input_specs: tf_keras.layers.InputSpec = DEFAULT_INPUT_SPECS,
        min_level: int = 3,
        max_level: int = 7,
        block_specs: Sequence[BlockSpec | Sequence[Any]] | None = None,
        endpoints_num_filters: int = 256,
        se_ratio: float = 0.2,
        block_repeats: int = 1,
        filter_size_scale: float = 1.0,
        expand_ratio: int = 6,
        init_stochastic_depth_rate: float = 0.0,
        kernel_initializer: Any = "VarianceScaling",
        kernel_regularizer: tf_keras.regularizers.Regularizer | None = None,
        bias_regularizer: tf_keras.regularizers.Regularizer | None = None,
        activation: str = "relu",
        use_sync_bn: bool = False,
        norm_momentum: float = 0.99,
        norm_epsilon: float = 0.001,
        use_keras_upsampling_2d: bool = False,
        **kwargs: Any,
    ):
        """Initializes a SpineNet-Mobile.

        Args:
          input_specs: shape of the input images, [None, H, W, C]; H and W may be None.
          min_level: lowest output level.
          max_level: highest output level; deeper blocks are built at this level.
          block_specs: the blocks after the stem, as `BlockSpec`s or
            (level, 'mbconv', (offset0, offset1), is_output) entries; None gives
            `SPINENET_BLOCK_SPECS`.
          endpoints_num_filters: channels of every output level.
          se_ratio: squeeze-and-excitation ratio of every block; 0 or None disables it.
          block_repeats: blocks per block group.
          filter_size_scale: multiplier of every channel count except the endpoints'.
          expand_ratio: hidden-width multiplier of the inverted bottlenecks.
          init_stochastic_depth_rate: stochastic depth rate of the last block; block i of n
            gets `rate * i / n`. The stem groups have none.
          kernel_initializer: initializer of every conv kernel except the resampling
            depthwise convs (Glorot uniform, as in Model Garden).
          kernel_regularizer: regularizer of every conv kernel except the resampling
            depthwise convs (unregularized, as in Model Garden).
          bias_regularizer: regularizer of conv biases.
          activation: activation name used everywhere.
          use_sync_bn: synchronize batch statistics across replicas.
          norm_momentum: batch-norm moving-average momentum.
          norm_epsilon: batch-norm epsilon.
          use_keras_upsampling_2d: upsample with `tf_keras.layers.UpSampling2D` (same values;
            friendlier to some converters, and the variable order of Model Garden's model built
            with the same flag).
          **kwargs: `tf_keras.Model` arguments (name, ...).

        Raises:
          ValueError: an argument is outside its allowed values, or the input size cannot be
            resampled to every level.
        """
        input_specs = as_input_spec(input_specs)
        specs = scale_permuted.as_block_specs(block_specs, SPINENET_BLOCK_SPECS, (_BLOCK_FN,))
        output_levels = [spec.level for spec in specs if spec.is_output]
        if len(set(output_levels)) != len(output_levels):
            raise ValueError(f"block_specs: more than one output block per level: {output_levels}")
        if not 1 <= max_level <= max(FILTER_SIZE_MAP):
            raise ValueError(
                f"max_level: expected a level in [1, {max(FILTER_SIZE_MAP)}], got {max_level}"
            )
        scale_permuted.check_levels(
            min_level,
            max_level,
            [min(level, max_level) for level in output_levels],
            what="SpineNet-Mobile",
        )
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
            "se_ratio": se_ratio,
            "block_repeats": block_repeats,
            "filter_size_scale": filter_size_scale,
            "expand_ratio": expand_ratio,
            "init_stochastic_depth_rate": init_stochastic_depth_rate,
            "kernel_initializer": kernel_initializer,
            "kernel_regularizer": kernel_regularizer,
            "bias_regularizer": bias_regularizer,
            "activation": activation,
            "use_sync_bn": use_sync_bn,
            "norm_momentum": norm_momentum,
            "norm_epsilon": norm_epsilon,
            "use_keras_upsampling_2d": use_keras_upsampling_2d,
        }
        self._block_specs = specs

        inputs = tf_keras.Input(shape=input_specs.shape[1:])
        width, height = scale_permuted.planned_input_size(input_specs, specs)
        features = self._build_stem(inputs, width, height)
        outputs = scale_permuted.build_scale_permuted_blocks(
            features,
            specs,
            width,
            height,
            resample=self._resample_with_sepconv,
            fuse=self._fuse,
            block_group=self._scale_permuted_group,
            level_of=lambda spec: min(spec.level, max_level),
        )
        # With max_level < 7 several output blocks land on max_level: the last one wins.
        by_level = dict(outputs)
        endpoints = {
            str(level): self._endpoint(by_level[level]) for level in range(min_level, max_level + 1)
        }
        self._output_specs = {level: feat.get_shape() for level, feat in endpoints.items()}
        super().__init__(inputs=inputs, outputs=endpoints, **kwargs)

    # ----------------------------------------------------------------------- layer helpers
    def _norm(self, x: tf.Tensor) -> tf.Tensor:
        cfg = self._config_dict
        return nn_layers.get_norm_layer(cfg["use_sync_bn"])(
            axis=nn_layers.get_bn_axis(),
            momentum=cfg["norm_momentum"],
            epsilon=cfg["norm_epsilon"],
        )(x)

    def _conv_norm(
        self, x: tf.Tensor, filters: int, kernel_size: int = 1, strides: int = 1
    ) -> tf.Tensor:
        """Bias-free conv ('same' padding) + batch norm, no activation."""
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
        return self._norm(x)

    def _activate(self, x: tf.Tensor) -> tf.Tensor:
        return nn_layers.get_activation(self._config_dict["activation"], use_keras_layer=True)(x)

    def _filters(self, level: int) -> int:
        return int(FILTER_SIZE_MAP[level] * self._config_dict["filter_size_scale"])

    def _block_group(
        self,
        x: tf.Tensor,
        in_filters: int,
        out_filters: int,
        strides: int,
        stochastic_depth_drop_rate: float | None,
        name: str,
    ) -> tf.Tensor:
        """`block_repeats` inverted bottlenecks; only the first one strides.

        Model Garden feeds repeats after the first the group's input (so they dangle outside
        the model); here they are chained. Every published variant has one block per group, so
        the two agree on all of them.
        """
        cfg = self._config_dict
        common = {
            "out_filters": out_filters,
            "expand_ratio": cfg["expand_ratio"],
            "se_ratio": cfg["se_ratio"],
            "se_gating_activation": _SE_GATING_ACTIVATION,
            "stochastic_depth_drop_rate": stochastic_depth_drop_rate,
            "kernel_initializer": cfg["kernel_initializer"],
            "kernel_regularizer": cfg["kernel_regularizer"],
            "bias_regularizer": cfg["bias_regularizer"],
            "activation": cfg["activation"],
            "use_sync_bn": cfg["use_sync_bn"],
            "norm_momentum": cfg["norm_momentum"],
            "norm_epsilon": cfg["norm_epsilon"],
        }
        x = nn_blocks.InvertedBottleneckBlock(in_filters=in_filters, strides=strides, **common)(x)
        for _ in range(1, cfg["block_repeats"]):
            x = nn_blocks.InvertedBottleneckBlock(in_filters=out_filters, strides=1, **common)(x)
        # A named no-op marks the group output (one graph node, as in Model Garden).
        return tf_keras.layers.Activation("linear", name=name)(x)

    # --------------------------------------------------------------------------- the parts
    def _build_stem(
        self, inputs: tf.Tensor, width: int, height: int
    ) -> list[scale_permuted.Feature]:
        x = self._activate(self._conv_norm(inputs, self._filters(0), kernel_size=3, strides=2))
        features = []
        for i, (strides, level) in enumerate(_STEM_GROUPS):
            x = self._block_group(
                x,
                in_filters=self._filters(level - 1),
                out_filters=self._filters(level),
                strides=strides,
                stochastic_depth_drop_rate=None,
                name=f"stem_block_{i + 1}",
            )
            features.append(
                scale_permuted.Feature(
                    x, math.ceil(width / 2**level), math.ceil(height / 2**level), _BLOCK_FN
                )
            )
        return features

    def _resample_with_sepconv(
        self, parent: scale_permuted.Feature, spec: BlockSpec, level: int, target_width: int
    ) -> tf.Tensor:
        """Brings a parent to the block's level and channels: one stride-2 depthwise conv + BN
        + activation per halving (down) or nearest upsampling (up), then a 1x1 conv + BN."""
        cfg = self._config_dict
        x = parent.tensor
        if parent.width > target_width:
            for _ in range(scale_permuted.downsample_steps(parent.width, target_width)):
                x = tf_keras.layers.DepthwiseConv2D(
                    kernel_size=3,
                    strides=2,
                    padding="same",
                    use_bias=False,
                    # Model Garden passes its initializer and regularizer under the Conv2D
                    # argument names, which DepthwiseConv2D ignores; its resampling depthwise
                    # kernels are therefore Glorot-initialized and unregularized. Kept so
                    # training from scratch behaves the same.
                )(x)
                x = self._activate(self._norm(x))
        elif parent.width < target_width:
            scale = target_width // parent.width
            if cfg["use_keras_upsampling_2d"]:
                x = tf_keras.layers.UpSampling2D(size=scale, interpolation="nearest")(x)
            else:
                x = scale_permuted.nearest_upsampling_ops(x, scale)
        return self._conv_norm(x, self._filters(level))

    def _fuse(self, parents: list[tf.Tensor]) -> tf.Tensor:
        # Pairwise adds, as Model Garden chains them (a single Add would change graph depth
        # and with it the variable order).
        x = parents[0]
        for other in parents[1:]:
            x = tf_keras.layers.Add()([x, other])
        return self._activate(x)

    def _scale_permuted_group(
        self, x: tf.Tensor, spec: BlockSpec, index: int
    ) -> tuple[tf.Tensor, str]:
        level = min(spec.level, self._config_dict["max_level"])
        rate = nn_layers.get_stochastic_depth_rate(
            self._config_dict["init_stochastic_depth_rate"], index + 1, len(self._block_specs)
        )
        filters = self._filters(level)
        x = self._block_group(
            x, filters, filters, 1, rate, name=f"scale_permuted_block_{index + 1}"
        )
        return x, _BLOCK_FN

    def _endpoint(self, x: tf.Tensor) -> tf.Tensor:
        return self._activate(self._conv_norm(x, self._config_dict["endpoints_num_filters"]))

    # ------------------------------------------------------------------------- Keras API
    def get_config(self) -> dict[str, Any]:
        return nn_layers.serializable_config(self._config_dict)

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> SpineNetMobile:
        return cls(**config)

    @property
    def output_specs(self) -> dict[str, tf.TensorShape]:
        """{level: TensorShape([None, h, w, c])} of the outputs."""
        return self._output_specs


@register_backbone_builder("spinenet_mobile")
def build_spinenet_mobile(
    input_specs: tf_keras.layers.InputSpec,
    backbone_config: Any,
    norm_activation_config: Any,
    l2_regularizer: tf_keras.regularizers.Regularizer | None = None,
) -> tf_keras.Model:
    """Builds a `SpineNetMobile` from a backbone config (nested `type: spinenet_mobile` +
    `spinenet_mobile: {...}`, or flat) and a norm/activation config; `model_id` selects the
    `SCALING_MAP` entry. Missing fields take the config defaults (model_id '49', se_ratio 0.2,
    expand_ratio 6, levels 3-7)."""
    cfg = check_backbone_type(backbone_config, "spinenet_mobile")
    params = scale_permuted.scaling_params(
        getattr(cfg, "model_id", "49"), SCALING_MAP, "SpineNet-Mobile"
    )
    return SpineNetMobile(
        input_specs=input_specs,
        min_level=getattr(cfg, "min_level", 3),
        max_level=getattr(cfg, "max_level", 7),
        endpoints_num_filters=params["endpoints_num_filters"],
        block_repeats=params["block_repeats"],
        filter_size_scale=params["filter_size_scale"],
        se_ratio=getattr(cfg, "se_ratio", 0.2),
        expand_ratio=getattr(cfg, "expand_ratio", 6),
        init_stochastic_depth_rate=getattr(cfg, "stochastic_depth_drop_rate", 0.0),
        kernel_regularizer=l2_regularizer,
        use_keras_upsampling_2d=getattr(cfg, "use_keras_upsampling_2d", False),
        **norm_activation_kwargs(norm_activation_config),
    )

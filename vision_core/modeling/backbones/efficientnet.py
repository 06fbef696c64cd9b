"""EfficientNet backbones (Model Garden's `official/vision/modeling/backbones/efficientnet.py`).

`EfficientNet(model_id='b0')` scales the B0 network found by architecture search (Tan & Le,
2019) in width and depth. It returns {'2': stride 4, '3': 8, '4': 16, '5': 32} from the block
groups and, under '6', the features of the final 1x1 conv (1280 channels for B0, stride 32),
with the same layers, variable order and parameter counts as Model Garden. Unlike Model Garden,
`output_specs` lists the '6' level it returns.
"""

from __future__ import annotations

import dataclasses
import math
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
from vision_core.modeling.layers import nn_blocks, nn_layers

# EfficientNet-B0, one row per block group: (block type, repeats, kernel size, stride of the
# first block, expand ratio, input channels, output channels, whether the group is an endpoint).
EN_B0_BLOCK_SPECS: list[tuple[str, int, int, int, float, int, int, bool]] = [
    ("mbconv", 1, 3, 1, 1, 32, 16, False),
    ("mbconv", 2, 3, 2, 6, 16, 24, True),
    ("mbconv", 2, 5, 2, 6, 24, 40, True),
    ("mbconv", 3, 3, 2, 6, 40, 80, False),
    ("mbconv", 3, 5, 1, 6, 80, 112, True),
    ("mbconv", 4, 5, 2, 6, 112, 192, False),
    ("mbconv", 1, 3, 1, 6, 192, 320, True),
]

# Compound scaling coefficients of B0..B7 (channel and repeat multipliers).
SCALING_MAP: dict[str, dict[str, float]] = {
    "b0": {"width_scale": 1.0, "depth_scale": 1.0},
    "b1": {"width_scale": 1.0, "depth_scale": 1.1},
    "b2": {"width_scale": 1.1, "depth_scale": 1.2},
    "b3": {"width_scale": 1.2, "depth_scale": 1.4},
    "b4": {"width_scale": 1.4, "depth_scale": 1.8},
    "b5": {"width_scale": 1.6, "depth_scale": 2.2},
    "b6": {"width_scale": 1.8, "depth_scale": 2.6},
    "b7": {"width_scale": 2.0, "depth_scale": 3.1},
}

_STEM_FILTERS = 32
_HEAD_FILTERS = 1280


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One block group of a scaled EfficientNet."""

    block_fn: str
    block_repeats: int
    kernel_size: int
    strides: int
    expand_ratio: float
    in_filters: int
    out_filters: int
    is_output: bool


def round_repeats(repeats: int, multiplier: float, skip: bool = False) -> int:
    """Number of blocks in a group after depth scaling (rounded up)."""
    if skip or not multiplier:
        return repeats
    return int(math.ceil(multiplier * repeats))


def block_spec_decoder(
    specs: list[tuple[Any, ...]], width_scale: float, depth_scale: float
) -> list[BlockSpec]:
    """Scales the B0 block-group rows by the width and depth multipliers."""
    decoded = []
    for block_fn, repeats, kernel, strides, expand, in_f, out_f, is_output in specs:
        decoded.append(
            BlockSpec(
                block_fn=block_fn,
                block_repeats=round_repeats(repeats, depth_scale),
                kernel_size=kernel,
                strides=strides,
                expand_ratio=expand,
                in_filters=nn_layers.round_filters(in_f, width_scale),
                out_filters=nn_layers.round_filters(out_f, width_scale),
                is_output=is_output,
            )
        )
    return decoded


def _check_model_id(model_id: Any) -> dict[str, float]:
    if model_id not in SCALING_MAP:
        raise ValueError(
            f"model_id: unknown EfficientNet {model_id!r}; expected one of {', '.join(SCALING_MAP)}"
        )
    return SCALING_MAP[model_id]


@tf_keras.utils.register_keras_serializable(package="Vision")
class EfficientNet(tf_keras.Model):
    """EfficientNet B0-B7 feature extractor (Tan & Le, 2019, arXiv:1905.11946).

    Returns {'2'..'5': block-group features at strides 4..32, '6': the 1x1 head conv features
    at stride 32}; for B0 the channels are 24, 40, 112, 320 and 1280.
    """

    def __init__(
        self,
        model_id: str,
        input_specs: tf_keras.layers.InputSpec = DEFAULT_INPUT_SPECS,
        se_ratio: float = 0.0,
        stochastic_depth_drop_rate: float = 0.0,
        kernel_initializer: Any = "VarianceScaling",
        kernel_regularizer: tf_keras.regularizers.Regularizer | None = None,
        bias_regularizer: tf_keras.regularizers.Regularizer | None = None,
        activation: str = "relu",
        se_inner_activation: str = "relu",
        use_sync_bn: bool = False,
        norm_momentum: float = 0.99,
        norm_epsilon: float = 0.001,
        **kwargs: Any,
    ):
        """Initializes an EfficientNet.

        Args:
          model_id: 'b0' .. 'b7' (see `SCALING_MAP`).
          input_specs: shape of the input images, [None, H, W, C]; H and W may be None.
          se_ratio: squeeze-and-excitation ratio of every block (the paper uses 0.25; Model
            Garden's default is 0.0, no SE).
          stochastic_depth_drop_rate: drop rate of every residual branch (the same for all
            blocks, as in Model Garden).
          kernel_initializer: initializer of every conv kernel.
          kernel_regularizer: regularizer of every conv kernel (e.g. L2 weight decay).
          bias_regularizer: regularizer of conv biases.
          activation: activation name used everywhere except inside SE (e.g. 'swish').
          se_inner_activation: activation inside squeeze-and-excitation.
          use_sync_bn: synchronize batch statistics across replicas.
          norm_momentum: batch-norm moving-average momentum.
          norm_epsilon: batch-norm epsilon.
          **kwargs: `tf_keras.Model` arguments (name, ...).

        Raises:
          ValueError: `model_id` is not one of `SCALING_MAP`.
        """
        scaling = _check_model_id(model_id)
        input_specs = as_input_spec(input_specs)
        kernel_initializer = nn_layers.canonical_initializer(kernel_initializer)
        kernel_regularizer = nn_layers.canonical_regularizer(kernel_regularizer)
        bias_regularizer = nn_layers.canonical_regularizer(bias_regularizer)
        self._config_dict = {
            "model_id": model_id,
            "input_specs": input_spec_config(input_specs),
            "se_ratio": se_ratio,
            "stochastic_depth_drop_rate": stochastic_depth_drop_rate,
            "kernel_initializer": kernel_initializer,
            "kernel_regularizer": kernel_regularizer,
            "bias_regularizer": bias_regularizer,
            "activation": activation,
            "se_inner_activation": se_inner_activation,
            "use_sync_bn": use_sync_bn,
            "norm_momentum": norm_momentum,
            "norm_epsilon": norm_epsilon,
        }
        width_scale, depth_scale = scaling["width_scale"], scaling["depth_scale"]

        inputs = tf_keras.Input(shape=input_specs.shape[1:])
        x = self._conv_bn_act(inputs, nn_layers.round_filters(_STEM_FILTERS, width_scale), 3, 2)

        endpoints = {}
        level = 2
        specs = block_spec_decoder(EN_B0_BLOCK_SPECS, width_scale, depth_scale)
        for i, spec in enumerate(specs):
            x = self._block_group(x, spec)
            # A named no-op marks the group output (Model Garden names it the same way).
            x = tf_keras.layers.Activation("linear", name=f"block_group_{i}")(x)
            if spec.is_output:
                endpoints[str(level)] = x
                level += 1
        # The head conv that classifiers pool; detection/segmentation may use it as a level too.
        endpoints[str(level)] = self._conv_bn_act(
            x, nn_layers.round_filters(_HEAD_FILTERS, width_scale), 1, 1
        )
        self._output_specs = {lvl: feat.get_shape() for lvl, feat in endpoints.items()}
        super().__init__(inputs=inputs, outputs=endpoints, **kwargs)

    def _conv_bn_act(self, x: tf.Tensor, filters: int, kernel_size: int, strides: int) -> tf.Tensor:
        cfg = self._config_dict
        x = tf_keras.layers.Conv2D(
            filters=filters,
            kernel_size=kernel_size,
            strides=strides,
            use_bias=False,
            padding="same",
            kernel_initializer=nn_layers.clone_initializer(cfg["kernel_initializer"]),
            kernel_regularizer=cfg["kernel_regularizer"],
            bias_regularizer=cfg["bias_regularizer"],
        )(x)
        x = nn_layers.get_norm_layer(cfg["use_sync_bn"])(
            axis=nn_layers.get_bn_axis(),
            momentum=cfg["norm_momentum"],
            epsilon=cfg["norm_epsilon"],
        )(x)
        return nn_layers.get_activation(cfg["activation"], use_keras_layer=True)(x)

    def _block_group(self, x: tf.Tensor, spec: BlockSpec) -> tf.Tensor:
        if spec.block_fn != "mbconv":
            raise ValueError(f"block_fn: expected 'mbconv', got {spec.block_fn!r}")
        cfg = self._config_dict
        common = {
            "out_filters": spec.out_filters,
            "expand_ratio": spec.expand_ratio,
            "kernel_size": spec.kernel_size,
            "se_ratio": cfg["se_ratio"],
            "stochastic_depth_drop_rate": cfg["stochastic_depth_drop_rate"],
            "kernel_initializer": cfg["kernel_initializer"],
            "kernel_regularizer": cfg["kernel_regularizer"],
            "bias_regularizer": cfg["bias_regularizer"],
            "activation": cfg["activation"],
            "se_inner_activation": cfg["se_inner_activation"],
            "use_sync_bn": cfg["use_sync_bn"],
            "norm_momentum": cfg["norm_momentum"],
            "norm_epsilon": cfg["norm_epsilon"],
        }
        # Only the first block of a group changes resolution and width.
        for j in range(spec.block_repeats):
            x = nn_blocks.InvertedBottleneckBlock(
                in_filters=spec.in_filters if j == 0 else spec.out_filters,
                strides=spec.strides if j == 0 else 1,
                **common,
            )(x)
        return x

    def get_config(self) -> dict[str, Any]:
        return nn_layers.serializable_config(self._config_dict)

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> EfficientNet:
        return cls(**config)

    @property
    def output_specs(self) -> dict[str, tf.TensorShape]:
        """{level: TensorShape([None, h, w, c])} of every output, including the head level."""
        return self._output_specs


@register_backbone_builder("efficientnet")
def build_efficientnet(
    input_specs: tf_keras.layers.InputSpec,
    backbone_config: Any,
    norm_activation_config: Any,
    l2_regularizer: tf_keras.regularizers.Regularizer | None = None,
    se_inner_activation: str | None = None,
) -> tf_keras.Model:
    """Builds an `EfficientNet` from a backbone config (nested `type: efficientnet` +
    `efficientnet: {...}`, or flat) and a norm/activation config.

    `se_inner_activation` (Model Garden's builder argument) overrides the config field of the
    same name when given. Missing fields take the `EfficientNet` config defaults.
    """
    cfg = check_backbone_type(backbone_config, "efficientnet")
    if se_inner_activation is None:
        se_inner_activation = getattr(cfg, "se_inner_activation", "relu")
    return EfficientNet(
        model_id=getattr(cfg, "model_id", "b0"),
        input_specs=input_specs,
        se_ratio=getattr(cfg, "se_ratio", 0.0),
        stochastic_depth_drop_rate=getattr(cfg, "stochastic_depth_drop_rate", 0.0),
        kernel_regularizer=l2_regularizer,
        se_inner_activation=se_inner_activation,
        **norm_activation_kwargs(norm_activation_config),
    )

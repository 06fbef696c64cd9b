"""U-Net encoder (Ronneberger et al., 2015, https://arxiv.org/abs/1505.04597) as a backbone.

Not part of Model Garden: a vision_core addition for segmentation of small images, where the
stride-4 stem of ResNet-style backbones throws away the detail the masks need. It keeps the
pyramid contract: the output is {level: features} from level 0 (full resolution) upwards,
with `output_specs`, so any decoder or head can use it; `decoders.unet.UNetDecoder` adds the
matching top-down path with skip connections.

Level l holds `num_convs` 3x3 conv + batch norm + activation blocks with `filters[l]`
channels; level l+1 starts with a 2x2 max pool (or a stride-2 3x3 conv with
`downsample='conv'`).
"""

from __future__ import annotations

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
from vision_core.modeling.layers import nn_layers

DOWNSAMPLE_TYPES = ("max_pool", "conv")


def conv_norm_act(
    x: tf.Tensor,
    filters: int,
    strides: int,
    settings: dict[str, Any],
    name: str,
) -> tf.Tensor:
    """3x3 conv (no bias) → batch norm → activation: the unit both U-Net halves are made of."""
    x = tf_keras.layers.Conv2D(
        filters,
        3,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer=nn_layers.clone_initializer(settings["kernel_initializer"]),
        kernel_regularizer=settings["kernel_regularizer"],
        name=f"{name}_conv",
    )(x)
    x = nn_layers.get_norm_layer(settings["use_sync_bn"])(
        axis=nn_layers.get_bn_axis(),
        momentum=settings["norm_momentum"],
        epsilon=settings["norm_epsilon"],
        name=f"{name}_bn",
    )(x)
    return tf_keras.layers.Activation(
        nn_layers.get_activation(settings["activation"]), name=f"{name}_act"
    )(x)


def check_filters(filters: Any, owner: str, min_len: int = 2) -> list[int]:
    if (
        not isinstance(filters, Sequence)
        or len(filters) < min_len
        or not all(isinstance(f, int) and f > 0 for f in filters)
    ):
        raise ValueError(
            f"{owner}: filters must list at least {min_len} positive channel counts (one per "
            f"level, starting at level 0), got {filters!r}"
        )
    return [int(f) for f in filters]


@tf_keras.utils.register_keras_serializable(package="Vision")
class UNetEncoder(tf_keras.Model):
    """The contracting half of a U-Net: {'0': [B, H, W, f0], ..., 'L': [B, H/2^L, W/2^L, fL]}."""

    def __init__(
        self,
        input_specs: tf_keras.layers.InputSpec = DEFAULT_INPUT_SPECS,
        filters: Sequence[int] = (16, 32, 64, 128, 256),
        num_convs: int = 2,
        downsample: str = "max_pool",
        activation: str = "relu",
        use_sync_bn: bool = False,
        norm_momentum: float = 0.99,
        norm_epsilon: float = 0.001,
        kernel_initializer: Any = "VarianceScaling",
        kernel_regularizer: tf_keras.regularizers.Regularizer | None = None,
        **kwargs: Any,
    ):
        """Initializes the encoder.

        Args:
          input_specs: input shape [None, H, W, C]; H and W must be multiples of
            2^(len(filters) - 1) when known.
          filters: channels of levels 0, 1, ...; the last entry is the deepest level.
          num_convs: conv blocks per level (the paper uses 2).
          downsample: 'max_pool' (the paper) or 'conv' (a stride-2 conv block).
          activation: activation name.
          use_sync_bn: synchronize batch statistics across replicas.
          norm_momentum: batch-norm momentum.
          norm_epsilon: batch-norm epsilon.
          kernel_initializer: conv kernel initializer.
          kernel_regularizer: conv kernel regularizer (e.g. L2 weight decay).
          **kwargs: `tf_keras.Model` arguments.

        Raises:
          ValueError: bad `filters`, `num_convs`, `downsample` or input size.
        """
        filters = check_filters(list(filters), "UNetEncoder")
        if not isinstance(num_convs, int) or num_convs < 1:
            raise ValueError(f"UNetEncoder: num_convs must be >= 1, got {num_convs!r}")
        if downsample not in DOWNSAMPLE_TYPES:
            raise ValueError(
                f"UNetEncoder: downsample must be one of {DOWNSAMPLE_TYPES}, got {downsample!r}"
            )
        input_specs = as_input_spec(input_specs)
        stride = 2 ** (len(filters) - 1)
        for dim in input_specs.shape[1:3]:
            if dim is not None and dim % stride:
                raise ValueError(
                    f"UNetEncoder: input height/width must be multiples of {stride} for "
                    f"{len(filters)} levels, got {input_specs.shape[1:3]}"
                )
        kernel_initializer = nn_layers.canonical_initializer(kernel_initializer)
        kernel_regularizer = nn_layers.canonical_regularizer(kernel_regularizer)
        self._config_dict = {
            "input_specs": input_spec_config(input_specs),
            "filters": filters,
            "num_convs": num_convs,
            "downsample": downsample,
            "activation": activation,
            "use_sync_bn": use_sync_bn,
            "norm_momentum": norm_momentum,
            "norm_epsilon": norm_epsilon,
            "kernel_initializer": kernel_initializer,
            "kernel_regularizer": kernel_regularizer,
        }
        settings = dict(self._config_dict)
        inputs = tf_keras.Input(shape=input_specs.shape[1:])
        x = inputs
        endpoints = {}
        for level, width in enumerate(filters):
            first_stride = 1
            if level > 0:
                if downsample == "max_pool":
                    x = tf_keras.layers.MaxPool2D(2, name=f"level{level}_pool")(x)
                else:
                    first_stride = 2
            for i in range(num_convs):
                x = conv_norm_act(
                    x, width, first_stride if i == 0 else 1, settings, f"level{level}_{i}"
                )
            endpoints[str(level)] = x
        self._output_specs = {level: t.get_shape() for level, t in endpoints.items()}
        super().__init__(inputs=inputs, outputs=endpoints, **kwargs)

    def get_config(self) -> dict[str, Any]:
        return nn_layers.serializable_config(self._config_dict)

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> UNetEncoder:
        return cls(**config)

    @property
    def output_specs(self) -> dict[str, tf.TensorShape]:
        """{level: TensorShape([None, h, w, c])} of the outputs."""
        return self._output_specs


@register_backbone_builder("unet")
def build_unet_encoder(
    input_specs: tf_keras.layers.InputSpec,
    backbone_config: Any,
    norm_activation_config: Any,
    l2_regularizer: tf_keras.regularizers.Regularizer | None = None,
) -> tf_keras.Model:
    """Builds a `UNetEncoder` from a `type: unet` backbone config."""
    cfg = check_backbone_type(backbone_config, "unet")
    return UNetEncoder(
        input_specs=input_specs,
        filters=list(getattr(cfg, "filters", (16, 32, 64, 128, 256))),
        num_convs=getattr(cfg, "num_convs", 2),
        downsample=getattr(cfg, "downsample", "max_pool"),
        kernel_regularizer=l2_regularizer,
        **norm_activation_kwargs(norm_activation_config),
    )

"""Residual building blocks (ResNet basic and bottleneck blocks), Model Garden compatible.

Constructor parameters, defaults, variable shapes and the attribute names of sub-layers follow
`official/vision/modeling/layers/nn_blocks.py`, so object-based checkpoints written by Model
Garden restore into these blocks. Extensions beyond Model Garden are keyword arguments at the end
of the signature (`dilation_rate` for `ResidualBlock`, `use_explicit_padding` for
`BottleneckBlock`) whose defaults reproduce Model Garden.

The mobile blocks (`InvertedBottleneckBlock`, `DepthwiseSeparableConvBlock`) live in
`nn_blocks_mobile` and are re-exported here, where Model Garden users import them from.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf
import tf_keras

from vision_core.modeling.layers import nn_layers
from vision_core.modeling.layers.nn_blocks_mobile import (
    DepthwiseSeparableConvBlock,
    InvertedBottleneckBlock,
)

__all__ = [
    "BottleneckBlock",
    "DepthwiseSeparableConvBlock",
    "InvertedBottleneckBlock",
    "ResidualBlock",
]


def _same_padding(kernel_size: int, dilation_rate: int) -> int:
    """Per-side zero padding that gives a 'same'-sized output at stride 1."""
    return dilation_rate * (kernel_size - 1) // 2


class _BlockBase(tf_keras.layers.Layer):
    """Holds the config and the conv/norm factories both blocks share."""

    def __init__(self, config: dict[str, Any], **kwargs: Any):
        super().__init__(**kwargs)
        self._config_dict = config
        self._norm = nn_layers.get_norm_layer(config["use_sync_bn"])
        self._bn_axis = nn_layers.get_bn_axis()

    def _conv(self, filters: int, kernel_size: int, strides: int = 1, **kwargs: Any):
        cfg = self._config_dict
        return tf_keras.layers.Conv2D(
            filters=filters,
            kernel_size=kernel_size,
            strides=strides,
            use_bias=False,
            kernel_initializer=nn_layers.clone_initializer(cfg["kernel_initializer"]),
            kernel_regularizer=cfg["kernel_regularizer"],
            bias_regularizer=cfg["bias_regularizer"],
            **kwargs,
        )

    def _batch_norm(self) -> tf_keras.layers.Layer:
        cfg = self._config_dict
        return self._norm(
            axis=self._bn_axis,
            momentum=cfg["norm_momentum"],
            epsilon=cfg["norm_epsilon"],
            trainable=cfg["bn_trainable"],
        )

    def _make_squeeze_excitation(self, channels: int) -> nn_layers.SqueezeExcitation | None:
        cfg = self._config_dict
        se_ratio = cfg["se_ratio"]
        if not (se_ratio and 0 < se_ratio <= 1):
            return None
        return nn_layers.SqueezeExcitation(
            in_filters=channels,
            out_filters=channels,
            se_ratio=se_ratio,
            kernel_initializer=nn_layers.clone_initializer(cfg["kernel_initializer"]),
            kernel_regularizer=cfg["kernel_regularizer"],
            bias_regularizer=cfg["bias_regularizer"],
        )

    def _make_stochastic_depth(self) -> nn_layers.StochasticDepth | None:
        rate = self._config_dict["stochastic_depth_drop_rate"]
        return nn_layers.StochasticDepth(rate) if rate else None

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **nn_layers.serializable_config(self._config_dict)}


@tf_keras.utils.register_keras_serializable(package="Vision")
class ResidualBlock(_BlockBase):
    """ResNet basic block: two 3x3 convs with BN, plus a shortcut (ResNet-10/18/26/34).

    `conv3x3(stride) - BN - act - conv3x3 - BN [- SE] [- stochastic depth] + shortcut - act`,
    where the shortcut is the input or, with `use_projection`, a strided 1x1 conv + BN.
    """

    def __init__(
        self,
        filters: int,
        strides: int,
        use_projection: bool = False,
        se_ratio: float | None = None,
        resnetd_shortcut: bool = False,
        stochastic_depth_drop_rate: float | None = None,
        kernel_initializer: Any = "VarianceScaling",
        kernel_regularizer: tf_keras.regularizers.Regularizer | None = None,
        bias_regularizer: tf_keras.regularizers.Regularizer | None = None,
        activation: nn_layers.Activation = "relu",
        use_explicit_padding: bool = False,
        use_sync_bn: bool = False,
        norm_momentum: float = 0.99,
        norm_epsilon: float = 0.001,
        bn_trainable: bool = True,
        dilation_rate: int = 1,
        **kwargs: Any,
    ):
        """Initializes the block.

        Args:
          filters: output channels of both convs (and of the block).
          strides: stride of the first conv and the projection; 2 halves the resolution.
          use_projection: use a 1x1 conv + BN shortcut instead of the identity; needed when the
            stride or channel count changes.
          se_ratio: squeeze-and-excitation ratio in (0, 1]; None or 0 disables it.
          resnetd_shortcut: accepted for signature parity. As in Model Garden, basic blocks keep
            the strided 1x1 projection; only `BottleneckBlock` implements the ResNet-D shortcut.
          stochastic_depth_drop_rate: drop rate of the residual branch; None or 0 disables it.
          kernel_initializer: initializer of every conv kernel.
          kernel_regularizer: regularizer of every conv kernel.
          bias_regularizer: regularizer of conv biases (the convs here have none).
          activation: activation name or callable.
          use_explicit_padding: zero-pad the input and run the first conv with 'valid' padding
            (symmetric padding, as CenterNet needs) instead of 'same'.
          use_sync_bn: synchronize batch statistics across replicas.
          norm_momentum: batch-norm moving-average momentum.
          norm_epsilon: batch-norm epsilon.
          bn_trainable: whether batch-norm layers train (False freezes them in inference mode).
          dilation_rate: dilation of both 3x3 convs (our extension, for dilated ResNet-18/34).
          **kwargs: `tf_keras.layers.Layer` arguments (name, dtype, ...).
        """
        kernel_initializer = nn_layers.canonical_initializer(kernel_initializer)
        kernel_regularizer = nn_layers.canonical_regularizer(kernel_regularizer)
        bias_regularizer = nn_layers.canonical_regularizer(bias_regularizer)
        config = {
            "filters": filters,
            "strides": strides,
            "use_projection": use_projection,
            "se_ratio": se_ratio,
            "resnetd_shortcut": resnetd_shortcut,
            "stochastic_depth_drop_rate": stochastic_depth_drop_rate,
            "kernel_initializer": kernel_initializer,
            "kernel_regularizer": kernel_regularizer,
            "bias_regularizer": bias_regularizer,
            "activation": activation,
            "use_explicit_padding": use_explicit_padding,
            "use_sync_bn": use_sync_bn,
            "norm_momentum": norm_momentum,
            "norm_epsilon": norm_epsilon,
            "bn_trainable": bn_trainable,
            "dilation_rate": dilation_rate,
        }
        super().__init__(config, **kwargs)
        self._activation_fn = nn_layers.get_activation(activation)

    def build(self, input_shape: tf.TensorShape) -> None:
        cfg = self._config_dict
        filters, strides, dilation = cfg["filters"], cfg["strides"], cfg["dilation_rate"]
        if cfg["use_projection"]:
            self._shortcut = self._conv(filters, 1, strides)
            self._norm0 = self._batch_norm()

        conv1_padding = "same"
        if cfg["use_explicit_padding"]:
            self._pad = tf_keras.layers.ZeroPadding2D(padding=_same_padding(3, dilation))
            conv1_padding = "valid"
        self._conv1 = self._conv(filters, 3, strides, padding=conv1_padding, dilation_rate=dilation)
        self._norm1 = self._batch_norm()
        self._conv2 = self._conv(filters, 3, 1, padding="same", dilation_rate=dilation)
        self._norm2 = self._batch_norm()
        self._squeeze_excitation = self._make_squeeze_excitation(filters)
        self._stochastic_depth = self._make_stochastic_depth()
        super().build(input_shape)

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        shortcut = inputs
        if self._config_dict["use_projection"]:
            shortcut = self._norm0(self._shortcut(shortcut))

        if self._config_dict["use_explicit_padding"]:
            inputs = self._pad(inputs)
        x = self._activation_fn(self._norm1(self._conv1(inputs)))
        x = self._norm2(self._conv2(x))
        if self._squeeze_excitation is not None:
            x = self._squeeze_excitation(x)
        if self._stochastic_depth is not None:
            x = self._stochastic_depth(x, training=training)
        return self._activation_fn(x + shortcut)


@tf_keras.utils.register_keras_serializable(package="Vision")
class BottleneckBlock(_BlockBase):
    """ResNet bottleneck block: 1x1 reduce, 3x3, 1x1 expand to `4 * filters` (ResNet-50+).

    The stride sits on the 3x3 conv (the "ResNet v1.5" placement). With `resnetd_shortcut` the
    projection shortcut is a 2x2 average pool followed by a stride-1 1x1 conv (ResNet-D).
    """

    def __init__(
        self,
        filters: int,
        strides: int,
        dilation_rate: int = 1,
        use_projection: bool = False,
        se_ratio: float | None = None,
        resnetd_shortcut: bool = False,
        stochastic_depth_drop_rate: float | None = None,
        kernel_initializer: Any = "VarianceScaling",
        kernel_regularizer: tf_keras.regularizers.Regularizer | None = None,
        bias_regularizer: tf_keras.regularizers.Regularizer | None = None,
        activation: nn_layers.Activation = "relu",
        use_sync_bn: bool = False,
        norm_momentum: float = 0.99,
        norm_epsilon: float = 0.001,
        bn_trainable: bool = True,
        use_explicit_padding: bool = False,
        **kwargs: Any,
    ):
        """Initializes the block.

        Args:
          filters: channels of the 1x1 and 3x3 convs; the block outputs `4 * filters`.
          strides: stride of the 3x3 conv and of the projection shortcut.
          dilation_rate: dilation of the 3x3 conv (DeepLab-style atrous backbones).
          use_projection: use a projection shortcut instead of the identity; needed when the
            stride or channel count changes.
          se_ratio: squeeze-and-excitation ratio in (0, 1]; None or 0 disables it.
          resnetd_shortcut: ResNet-D shortcut (average pool, then a stride-1 1x1 conv).
          stochastic_depth_drop_rate: drop rate of the residual branch; None or 0 disables it.
          kernel_initializer: initializer of every conv kernel.
          kernel_regularizer: regularizer of every conv kernel.
          bias_regularizer: regularizer of conv biases (the convs here have none).
          activation: activation name or callable.
          use_sync_bn: synchronize batch statistics across replicas.
          norm_momentum: batch-norm moving-average momentum.
          norm_epsilon: batch-norm epsilon.
          bn_trainable: whether batch-norm layers train (False freezes them in inference mode).
          use_explicit_padding: zero-pad before the 3x3 conv and run it with 'valid' padding
            (symmetric padding) instead of 'same' (our extension; Model Garden has 'same').
          **kwargs: `tf_keras.layers.Layer` arguments (name, dtype, ...).
        """
        kernel_initializer = nn_layers.canonical_initializer(kernel_initializer)
        kernel_regularizer = nn_layers.canonical_regularizer(kernel_regularizer)
        bias_regularizer = nn_layers.canonical_regularizer(bias_regularizer)
        config = {
            "filters": filters,
            "strides": strides,
            "dilation_rate": dilation_rate,
            "use_projection": use_projection,
            "se_ratio": se_ratio,
            "resnetd_shortcut": resnetd_shortcut,
            "stochastic_depth_drop_rate": stochastic_depth_drop_rate,
            "kernel_initializer": kernel_initializer,
            "kernel_regularizer": kernel_regularizer,
            "bias_regularizer": bias_regularizer,
            "activation": activation,
            "use_sync_bn": use_sync_bn,
            "norm_momentum": norm_momentum,
            "norm_epsilon": norm_epsilon,
            "bn_trainable": bn_trainable,
            "use_explicit_padding": use_explicit_padding,
        }
        super().__init__(config, **kwargs)

    def build(self, input_shape: tf.TensorShape) -> None:
        cfg = self._config_dict
        filters, strides, dilation = cfg["filters"], cfg["strides"], cfg["dilation_rate"]
        activation = cfg["activation"]
        if cfg["use_projection"]:
            if cfg["resnetd_shortcut"]:
                self._shortcut0 = tf_keras.layers.AveragePooling2D(
                    pool_size=2, strides=strides, padding="same"
                )
                self._shortcut1 = self._conv(filters * 4, 1, 1)
            else:
                self._shortcut = self._conv(filters * 4, 1, strides)
            self._norm0 = self._batch_norm()

        self._conv1 = self._conv(filters, 1, 1)
        self._norm1 = self._batch_norm()
        self._activation1 = nn_layers.get_activation(activation, use_keras_layer=True)

        conv2_padding = "same"
        if cfg["use_explicit_padding"]:
            self._pad = tf_keras.layers.ZeroPadding2D(padding=_same_padding(3, dilation))
            conv2_padding = "valid"
        self._conv2 = self._conv(filters, 3, strides, padding=conv2_padding, dilation_rate=dilation)
        self._norm2 = self._batch_norm()
        self._activation2 = nn_layers.get_activation(activation, use_keras_layer=True)

        self._conv3 = self._conv(filters * 4, 1, 1)
        self._norm3 = self._batch_norm()
        self._activation3 = nn_layers.get_activation(activation, use_keras_layer=True)

        self._squeeze_excitation = self._make_squeeze_excitation(filters * 4)
        self._stochastic_depth = self._make_stochastic_depth()
        self._add = tf_keras.layers.Add()
        super().build(input_shape)

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        cfg = self._config_dict
        shortcut = inputs
        if cfg["use_projection"]:
            if cfg["resnetd_shortcut"]:
                shortcut = self._shortcut1(self._shortcut0(shortcut))
            else:
                shortcut = self._shortcut(shortcut)
            shortcut = self._norm0(shortcut)

        x = self._activation1(self._norm1(self._conv1(inputs)))
        if cfg["use_explicit_padding"]:
            x = self._pad(x)
        x = self._activation2(self._norm2(self._conv2(x)))
        x = self._norm3(self._conv3(x))
        if self._squeeze_excitation is not None:
            x = self._squeeze_excitation(x)
        if self._stochastic_depth is not None:
            x = self._stochastic_depth(x, training=training)
        return self._activation3(self._add([x, shortcut]))

"""Atrous spatial pyramid pooling (DeepLab v3, Chen et al., 2017).

Model Garden has two copies of this layer: `layers/deeplab.py` (ASPP's `spp_layer_version='v1'`)
and `layers/nn_layers.py` (`'v2'`). They hold the same variables and compute the same function;
here there is one layer. Difference kept from Model Garden: v2 gives the depthwise convs the
kernel initializer and regularizer, v1 leaves them at Keras defaults. Difference not kept: Model
Garden's v1 resizes the pooling branch bilinearly whatever `interpolation` says; here both
versions honour `interpolation` (its default, 'bilinear', gives Model Garden's values).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import tensorflow as tf
import tf_keras

from vision_core.modeling.layers import nn_layers

logger = logging.getLogger(__name__)

SPP_LAYER_VERSIONS = ("v1", "v2")


@tf_keras.utils.register_keras_serializable(package="Vision")
class SpatialPyramidPooling(tf_keras.layers.Layer):
    """Parallel 1x1, dilated 3x3 and image-pooling branches, concatenated and projected.

    Branches, each ending in batch norm + activation: a 1x1 conv; one 3x3 conv per dilation rate
    (or depthwise 3x3 + 1x1 when `use_depthwise_convolution`); average pooling (global when
    `pool_kernel_size` is None) + 1x1 conv, resized back to the input size. The concatenation
    goes through a 1x1 conv + batch norm + activation + dropout. Convs have no bias.
    """

    def __init__(
        self,
        output_channels: int,
        dilation_rates: Sequence[int],
        pool_kernel_size: Sequence[int] | None = None,
        use_sync_bn: bool = False,
        batchnorm_momentum: float = 0.99,
        batchnorm_epsilon: float = 0.001,
        activation: str = "relu",
        dropout: float = 0.5,
        kernel_initializer: Any = "GlorotUniform",
        kernel_regularizer: tf_keras.regularizers.Regularizer | None = None,
        interpolation: str = "bilinear",
        use_depthwise_convolution: bool = False,
        spp_layer_version: str = "v2",
        **kwargs: Any,
    ):
        """Initializes the layer.

        Args:
          output_channels: channels of every branch and of the output.
          dilation_rates: one dilated 3x3 branch per rate.
          pool_kernel_size: [height, width] of the average pooling in feature-map pixels, or
            None for global average pooling.
          use_sync_bn: synchronize batch-norm statistics across replicas.
          batchnorm_momentum: batch-norm moving-average momentum.
          batchnorm_epsilon: batch-norm epsilon.
          activation: activation name.
          dropout: dropout rate after the projection.
          kernel_initializer: initializer of the conv kernels.
          kernel_regularizer: regularizer of the conv kernels.
          interpolation: method resizing the pooling branch back to the input size.
          use_depthwise_convolution: depthwise-separable dilated branches (DeepLab v3+).
          spp_layer_version: 'v1' or 'v2' (see the module docstring).
          **kwargs: `tf_keras.layers.Layer` arguments.

        Raises:
          ValueError: unknown `spp_layer_version`.
        """
        super().__init__(**kwargs)
        if spp_layer_version not in SPP_LAYER_VERSIONS:
            raise ValueError(
                f"SpatialPyramidPooling: spp_layer_version {spp_layer_version!r} is not one of "
                f"{', '.join(SPP_LAYER_VERSIONS)}"
            )
        self._config_dict = {
            "output_channels": output_channels,
            "dilation_rates": list(dilation_rates),
            "pool_kernel_size": list(pool_kernel_size) if pool_kernel_size else None,
            "use_sync_bn": use_sync_bn,
            "batchnorm_momentum": batchnorm_momentum,
            "batchnorm_epsilon": batchnorm_epsilon,
            "activation": activation,
            "dropout": dropout,
            "kernel_initializer": kernel_initializer,
            "kernel_regularizer": tf_keras.regularizers.get(kernel_regularizer),
            "interpolation": interpolation,
            "use_depthwise_convolution": use_depthwise_convolution,
            "spp_layer_version": spp_layer_version,
        }
        self._activation_fn = nn_layers.get_activation(activation)
        self.input_spec = tf_keras.layers.InputSpec(ndim=4)

    def _conv(
        self, filters: int, kernel_size: int, dilation_rate: int = 1
    ) -> tf_keras.layers.Layer:
        cfg = self._config_dict
        return tf_keras.layers.Conv2D(
            filters=filters,
            kernel_size=kernel_size,
            padding="same",
            dilation_rate=dilation_rate,
            use_bias=False,
            kernel_initializer=nn_layers.clone_initializer(cfg["kernel_initializer"]),
            kernel_regularizer=cfg["kernel_regularizer"],
        )

    def _norm(self) -> tf_keras.layers.Layer:
        cfg = self._config_dict
        return nn_layers.get_norm_layer(cfg["use_sync_bn"])(
            axis=nn_layers.get_bn_axis(),
            momentum=cfg["batchnorm_momentum"],
            epsilon=cfg["batchnorm_epsilon"],
        )

    def build(self, input_shape: tf.TensorShape) -> None:
        cfg = self._config_dict
        filters = cfg["output_channels"]
        # Each branch is a list of layers applied in order, then the activation.
        self.aspp_layers: list[list[tf_keras.layers.Layer]] = [
            [self._conv(filters, 1), self._norm()]
        ]
        for rate in cfg["dilation_rates"]:
            branch: list[tf_keras.layers.Layer] = []
            kernel_size = 3
            if cfg["use_depthwise_convolution"]:
                depthwise_kwargs: dict[str, Any] = {}
                if cfg["spp_layer_version"] == "v2":
                    depthwise_kwargs = {
                        "depthwise_initializer": nn_layers.clone_initializer(
                            cfg["kernel_initializer"]
                        ),
                        "depthwise_regularizer": cfg["kernel_regularizer"],
                    }
                branch.append(
                    tf_keras.layers.DepthwiseConv2D(
                        kernel_size=3,
                        depth_multiplier=1,
                        padding="same",
                        dilation_rate=rate,
                        use_bias=False,
                        **depthwise_kwargs,
                    )
                )
                kernel_size = 1
            branch += [self._conv(filters, kernel_size, dilation_rate=rate), self._norm()]
            self.aspp_layers.append(branch)
        if cfg["pool_kernel_size"] is None:
            pooling = tf_keras.layers.GlobalAveragePooling2D(keepdims=True)
        else:
            pooling = tf_keras.layers.AveragePooling2D(cfg["pool_kernel_size"])
        self.aspp_layers.append([pooling, self._conv(filters, 1), self._norm()])
        self._projection = [self._conv(filters, 1), self._norm()]
        self._dropout_layer = tf_keras.layers.Dropout(rate=cfg["dropout"])
        super().build(input_shape)

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        branches = []
        last = len(self.aspp_layers) - 1
        for i, layers in enumerate(self.aspp_layers):
            x = inputs
            for layer in layers:
                x = layer(x, training=training)
            x = self._activation_fn(x)
            if i == last:
                # Resize in float32: not every device implements it for half precision.
                x = tf.image.resize(
                    tf.cast(x, tf.float32),
                    tf.shape(inputs)[1:3],
                    method=self._config_dict["interpolation"],
                )
            branches.append(tf.cast(x, inputs.dtype))
        x = tf.concat(branches, axis=-1)
        for layer in self._projection:
            x = layer(x, training=training)
        x = self._activation_fn(x)
        return self._dropout_layer(x, training=training)

    def compute_output_shape(self, input_shape: Any) -> tf.TensorShape:
        shape = tf.TensorShape(input_shape).as_list()
        return tf.TensorShape([*shape[:-1], self._config_dict["output_channels"]])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self._config_dict}

"""Atrous Spatial Pyramid Pooling decoder (DeepLab v3), Model Garden's `decoders/aspp.py`.

Applies `SpatialPyramidPooling` to one pyramid level and returns `{str(level): features}` (or the
bare tensor with `output_tensor=True`), so a segmentation head reads it like any decoder.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf
import tf_keras

from vision_core.hyperparams import get_subconfig
from vision_core.modeling.decoders import registry
from vision_core.modeling.layers import spp

logger = logging.getLogger(__name__)

TensorOrDict = tf.Tensor | Mapping[str, tf.Tensor]


@tf_keras.utils.register_keras_serializable(package="Vision")
class ASPP(tf_keras.layers.Layer):
    """Atrous spatial pyramid pooling on the features of pyramid level `level`."""

    def __init__(
        self,
        level: int,
        dilation_rates: Sequence[int],
        num_filters: int = 256,
        pool_kernel_size: Sequence[int] | None = None,
        use_sync_bn: bool = False,
        norm_momentum: float = 0.99,
        norm_epsilon: float = 0.001,
        activation: str = "relu",
        dropout_rate: float = 0.0,
        kernel_initializer: str = "VarianceScaling",
        kernel_regularizer: tf_keras.regularizers.Regularizer | None = None,
        interpolation: str = "bilinear",
        use_depthwise_convolution: bool = False,
        spp_layer_version: str = "v1",
        output_tensor: bool = False,
        **kwargs: Any,
    ):
        """Initializes the ASPP decoder.

        Args:
          level: pyramid level the pooling is applied to.
          dilation_rates: one dilated 3x3 branch per rate, e.g. [6, 12, 18] at output stride 16.
          num_filters: channels of every branch and of the output.
          pool_kernel_size: [height, width] of the image-pooling window in input-image pixels
            (divided by 2**level here), or None for global average pooling.
          use_sync_bn: synchronize batch-norm statistics across replicas.
          norm_momentum: batch-norm moving-average momentum.
          norm_epsilon: batch-norm epsilon.
          activation: activation name.
          dropout_rate: dropout after the projection.
          kernel_initializer: initializer of the conv kernels.
          kernel_regularizer: regularizer of the conv kernels.
          interpolation: method resizing the pooling branch back to the feature size.
          use_depthwise_convolution: depthwise-separable dilated branches.
          spp_layer_version: 'v1' or 'v2' (see `vision_core.modeling.layers.spp`).
          output_tensor: return the tensor instead of `{str(level): tensor}`.
          **kwargs: `tf_keras.layers.Layer` arguments.
        """
        super().__init__(**kwargs)
        if spp_layer_version not in spp.SPP_LAYER_VERSIONS:
            raise ValueError(
                f"ASPP: spp_layer_version {spp_layer_version!r} is not one of "
                f"{', '.join(spp.SPP_LAYER_VERSIONS)}"
            )
        self._config_dict = {
            "level": level,
            "dilation_rates": list(dilation_rates),
            "num_filters": num_filters,
            "pool_kernel_size": list(pool_kernel_size) if pool_kernel_size else None,
            "use_sync_bn": use_sync_bn,
            "norm_momentum": norm_momentum,
            "norm_epsilon": norm_epsilon,
            "activation": activation,
            "dropout_rate": dropout_rate,
            "kernel_initializer": kernel_initializer,
            "kernel_regularizer": tf_keras.regularizers.get(kernel_regularizer),
            "interpolation": interpolation,
            "use_depthwise_convolution": use_depthwise_convolution,
            "spp_layer_version": spp_layer_version,
            "output_tensor": output_tensor,
        }
        self._output_specs: dict[str, tf.TensorShape] | None = None

    def _level_shape(self, input_shape: Any) -> tf.TensorShape:
        level = str(self._config_dict["level"])
        if isinstance(input_shape, Mapping):
            if level not in input_shape:
                raise ValueError(
                    f"ASPP: level {level} is not among the input levels "
                    f"{sorted(input_shape, key=int)}"
                )
            return tf.TensorShape(input_shape[level])
        return tf.TensorShape(input_shape)

    def build(self, input_shape: Any) -> None:
        cfg = self._config_dict
        level_shape = self._level_shape(input_shape)
        pool_kernel_size = None
        if cfg["pool_kernel_size"]:
            pool_kernel_size = [int(size // 2 ** cfg["level"]) for size in cfg["pool_kernel_size"]]
        self.aspp = spp.SpatialPyramidPooling(
            output_channels=cfg["num_filters"],
            dilation_rates=cfg["dilation_rates"],
            pool_kernel_size=pool_kernel_size,
            use_sync_bn=cfg["use_sync_bn"],
            batchnorm_momentum=cfg["norm_momentum"],
            batchnorm_epsilon=cfg["norm_epsilon"],
            activation=cfg["activation"],
            dropout=cfg["dropout_rate"],
            kernel_initializer=cfg["kernel_initializer"],
            kernel_regularizer=cfg["kernel_regularizer"],
            interpolation=cfg["interpolation"],
            use_depthwise_convolution=cfg["use_depthwise_convolution"],
            spp_layer_version=cfg["spp_layer_version"],
        )
        self._output_specs = {str(cfg["level"]): self.aspp.compute_output_shape(level_shape)}
        super().build(input_shape)

    def call(self, inputs: TensorOrDict, training: bool | None = None) -> TensorOrDict:
        """Pools `inputs[str(level)]` (or the tensor `inputs`).

        Returns:
          `{str(level): [B, H_l, W_l, num_filters]}`, or the tensor when `output_tensor`.
        """
        level = str(self._config_dict["level"])
        features = inputs[level] if isinstance(inputs, Mapping) else inputs
        outputs = self.aspp(features, training=training)
        return outputs if self._config_dict["output_tensor"] else {level: outputs}

    def compute_output_shape(self, input_shape: Any) -> Any:
        shape = self._level_shape(input_shape)
        out = tf.TensorShape([*shape.as_list()[:-1], self._config_dict["num_filters"]])
        if self._config_dict["output_tensor"]:
            return out
        return {str(self._config_dict["level"]): out}

    @property
    def output_specs(self) -> dict[str, tf.TensorShape]:
        """{str(level): TensorShape} of the output; known once the layer is built or called."""
        if self._output_specs is None:
            raise ValueError(
                "ASPP.output_specs is known once the layer is built: call it on the backbone "
                "features first, or use compute_output_shape(backbone.output_specs)"
            )
        return self._output_specs

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self._config_dict}

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> ASPP:
        return cls(**config)


@registry.register_decoder_builder("aspp")
def build_aspp_decoder(
    input_specs: Mapping[str, tf.TensorShape],
    model_config: Any,
    l2_regularizer: tf_keras.regularizers.Regularizer | None = None,
    **kwargs: Any,
) -> ASPP:
    """Builds an ASPP from `model_config.decoder` (type 'aspp') and `norm_activation`.

    Args:
      input_specs: the backbone's output_specs; when given, the layer is built from them so
        `output_specs` is known at once.
      model_config: a model config with `decoder` and `norm_activation`.
      l2_regularizer: kernel regularizer of the convs.
      **kwargs: extra `ASPP` keyword arguments, overriding the config.

    Returns:
      The ASPP layer.
    """
    decoder_type = getattr(model_config.decoder, "type", None)
    if decoder_type != "aspp":
        raise ValueError(f"model.decoder.type: expected 'aspp', got {decoder_type!r}")
    cfg = get_subconfig(model_config.decoder)
    norm_activation = model_config.norm_activation
    params = {
        "level": cfg.level,
        "dilation_rates": list(cfg.dilation_rates),
        "num_filters": cfg.num_filters,
        "use_depthwise_convolution": cfg.use_depthwise_convolution,
        "pool_kernel_size": cfg.pool_kernel_size,
        "dropout_rate": cfg.dropout_rate,
        "use_sync_bn": norm_activation.use_sync_bn,
        "norm_momentum": norm_activation.norm_momentum,
        "norm_epsilon": norm_activation.norm_epsilon,
        "activation": norm_activation.activation,
        "kernel_regularizer": l2_regularizer,
        "spp_layer_version": cfg.spp_layer_version,
        "output_tensor": cfg.output_tensor,
    }
    params.update(kwargs)
    decoder = ASPP(**params)
    if input_specs:
        specs = {str(k): tf.TensorShape(v) for k, v in input_specs.items()}
        decoder.build(specs)
    return decoder

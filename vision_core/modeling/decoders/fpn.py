"""Feature Pyramid Network decoder (Lin et al., 2017, https://arxiv.org/abs/1612.03144).

Same constructor, layer order and layer names as Model Garden's `decoders/fpn.py`: 1x1 lateral
convs, a top-down path with 2x nearest upsampling, 3x3 post-hoc convs, stride-2 3x3 convs for the
levels above the backbone's top (RetinaNet's P6/P7, with the activation before every one but the
first), then a batch norm on every output level.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf
import tf_keras

from vision_core.modeling.decoders import registry
from vision_core.modeling.layers import nn_layers

logger = logging.getLogger(__name__)

FUSION_TYPES = ("sum", "concat")


def normalize_input_specs(
    input_specs: Mapping[Any, tf.TensorShape | Sequence[int | None]], owner: str
) -> dict[str, tf.TensorShape]:
    """{str(level): TensorShape}, accepting int keys and plain lists (e.g. from JSON configs)."""
    if not isinstance(input_specs, Mapping) or not input_specs:
        raise ValueError(
            f"{owner}: input_specs must be a non-empty dict {{level: TensorShape}} (a backbone's "
            f"output_specs), got {input_specs!r}"
        )
    specs = {}
    for level, spec in input_specs.items():
        if not str(level).isdigit():
            # Backbones also list non-pyramid outputs (ViT's 'pre_logits', MobileNet's
            # intermediate endpoints such as '3/expansion_output'); decoders read levels only.
            continue
        shape = tf.TensorShape(spec)
        if shape.rank != 4:
            raise ValueError(
                f"{owner}: input_specs[{level!r}] must be [batch, height, width, channels], "
                f"got {shape}"
            )
        specs[str(int(level))] = shape
    if not specs:
        raise ValueError(
            f"{owner}: input_specs has no pyramid levels ('2', '3', ...): {sorted(input_specs)}"
        )
    return specs


class MultilevelDecoderMixin:
    """The config and spec protocol of the multilevel decoders (FPN, NAS-FPN): constructor
    arguments in `self._config_dict` with `input_specs` as {level: TensorShape}, outputs
    described by `self._output_specs`."""

    def get_config(self) -> dict[str, Any]:
        config = nn_layers.serializable_config(self._config_dict)
        # Plain lists survive JSON; __init__ turns them back into TensorShapes.
        config["input_specs"] = {
            k: v.as_list() for k, v in self._config_dict["input_specs"].items()
        }
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> Any:
        return cls(**config)

    @property
    def output_specs(self) -> dict[str, tf.TensorShape]:
        """{level: TensorShape} of the outputs, min_level..max_level."""
        return self._output_specs


@tf_keras.utils.register_keras_serializable(package="Vision")
class FPN(MultilevelDecoderMixin, tf_keras.Model):
    """Feature Pyramid Network: {level: features} in, {level: num_filters features} out."""

    def __init__(
        self,
        input_specs: Mapping[str, tf.TensorShape],
        min_level: int = 3,
        max_level: int = 7,
        num_filters: int = 256,
        fusion_type: str = "sum",
        use_separable_conv: bool = False,
        use_keras_layer: bool = False,
        activation: str = "relu",
        use_sync_bn: bool = False,
        norm_momentum: float = 0.99,
        norm_epsilon: float = 0.001,
        kernel_initializer: str = "VarianceScaling",
        kernel_regularizer: tf_keras.regularizers.Regularizer | None = None,
        bias_regularizer: tf_keras.regularizers.Regularizer | None = None,
        **kwargs: Any,
    ):
        """Initializes the FPN.

        Args:
          input_specs: {level: TensorShape} of the backbone features (its `output_specs`).
          min_level: finest output level; the backbone must provide it.
          max_level: coarsest output level; levels above the backbone's top are made with
            stride-2 convs.
          num_filters: channels of every output level.
          fusion_type: 'sum' or 'concat' of the upsampled and lateral features.
          use_separable_conv: separable instead of regular convs.
          use_keras_layer: kept for Model Garden config compatibility; this implementation
            always builds the resampling and fusion from Keras layers (same values).
          activation: activation before the second and later extra coarse levels.
          use_sync_bn: synchronize batch-norm statistics across replicas.
          norm_momentum: batch-norm moving-average momentum.
          norm_epsilon: batch-norm epsilon.
          kernel_initializer: initializer of the conv kernels.
          kernel_regularizer: regularizer of the conv kernels.
          bias_regularizer: regularizer of the conv biases.
          **kwargs: `tf_keras.Model` arguments (e.g. `name`).

        Raises:
          ValueError: bad levels, a backbone level missing, or an unknown `fusion_type`.
        """
        specs = normalize_input_specs(input_specs, "FPN")
        if fusion_type not in FUSION_TYPES:
            raise ValueError(
                f"FPN: fusion_type {fusion_type!r} is not one of {', '.join(FUSION_TYPES)}"
            )
        if min_level > max_level:
            raise ValueError(f"FPN: min_level {min_level} is greater than max_level {max_level}")
        backbone_levels = sorted(int(level) for level in specs)
        if backbone_levels[0] > min_level:
            raise ValueError(
                f"FPN: min_level {min_level} is finer than the backbone's finest level "
                f"{backbone_levels[0]} (input_specs levels {backbone_levels})"
            )
        backbone_max_level = min(backbone_levels[-1], max_level)
        missing = [lv for lv in range(min_level, backbone_max_level + 1) if str(lv) not in specs]
        if missing:
            raise ValueError(
                f"FPN: input_specs lacks levels {missing} needed for outputs {min_level}.."
                f"{max_level} (has {backbone_levels})"
            )
        kernel_regularizer = tf_keras.regularizers.get(kernel_regularizer)
        bias_regularizer = tf_keras.regularizers.get(bias_regularizer)
        self._config_dict = {
            "input_specs": specs,
            "min_level": min_level,
            "max_level": max_level,
            "num_filters": num_filters,
            "fusion_type": fusion_type,
            "use_separable_conv": use_separable_conv,
            "use_keras_layer": use_keras_layer,
            "activation": activation,
            "use_sync_bn": use_sync_bn,
            "norm_momentum": norm_momentum,
            "norm_epsilon": norm_epsilon,
            "kernel_initializer": kernel_initializer,
            "kernel_regularizer": kernel_regularizer,
            "bias_regularizer": bias_regularizer,
        }
        conv_cls = tf_keras.layers.SeparableConv2D if use_separable_conv else tf_keras.layers.Conv2D

        def conv(name: str, kernel_size: int, strides: int = 1) -> tf_keras.layers.Layer:
            return conv_cls(
                filters=num_filters,
                kernel_size=kernel_size,
                strides=strides,
                padding="same",
                kernel_initializer=nn_layers.clone_initializer(kernel_initializer),
                kernel_regularizer=kernel_regularizer,
                bias_regularizer=bias_regularizer,
                name=name,
            )

        logger.info("FPN input_specs: %s", specs)
        # Every backbone level is an input (also unused ones) so the backbone dict feeds in as is.
        inputs = {level: tf_keras.Input(shape=spec[1:]) for level, spec in specs.items()}

        lateral = {
            level: conv(f"lateral_{level}", 1)(inputs[str(level)])
            for level in range(min_level, backbone_max_level + 1)
        }
        feats = {backbone_max_level: lateral[backbone_max_level]}
        for level in range(backbone_max_level - 1, min_level - 1, -1):
            upsampled = tf_keras.layers.UpSampling2D(
                size=2, interpolation="nearest", name=f"upsample_{level}"
            )(feats[level + 1])
            if fusion_type == "sum":
                fused = tf_keras.layers.Add(name=f"fuse_{level}")
            else:
                fused = tf_keras.layers.Concatenate(axis=-1, name=f"fuse_{level}")
            feats[level] = fused([upsampled, lateral[level]])

        for level in range(min_level, backbone_max_level + 1):
            feats[level] = conv(f"post_hoc_{level}", 3)(feats[level])

        for level in range(backbone_max_level + 1, max_level + 1):
            x = feats[level - 1]
            if level > backbone_max_level + 1:
                x = nn_layers.get_activation(activation, use_keras_layer=True)(x)
            feats[level] = conv(f"coarser_{level}", 3, strides=2)(x)

        norm_cls = nn_layers.get_norm_layer(use_sync_bn)
        outputs = {}
        for level in range(min_level, max_level + 1):
            outputs[str(level)] = norm_cls(
                axis=nn_layers.get_bn_axis(),
                momentum=norm_momentum,
                epsilon=norm_epsilon,
                name=f"norm_{level}",
            )(feats[level])

        self._output_specs = {level: tensor.shape for level, tensor in outputs.items()}
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)


@registry.register_decoder_builder("fpn")
def build_fpn_decoder(
    input_specs: Mapping[str, tf.TensorShape],
    model_config: Any,
    l2_regularizer: tf_keras.regularizers.Regularizer | None = None,
    **kwargs: Any,
) -> FPN:
    """Builds an FPN from `model_config.decoder` (type 'fpn'), levels and norm_activation.

    Args:
      input_specs: the backbone's output_specs.
      model_config: a model config with `decoder`, `min_level`, `max_level`, `norm_activation`.
      l2_regularizer: kernel regularizer of the convs.
      **kwargs: extra `FPN` keyword arguments, overriding the config.

    Returns:
      The FPN.
    """
    cfg, params = registry.builder_params(model_config, "fpn", l2_regularizer)
    params.update(
        {
            "input_specs": input_specs,
            "min_level": model_config.min_level,
            "max_level": model_config.max_level,
            "num_filters": cfg.num_filters,
            "fusion_type": cfg.fusion_type,
            "use_separable_conv": cfg.use_separable_conv,
            "use_keras_layer": getattr(cfg, "use_keras_layer", False),
        }
    )
    params.update(kwargs)
    return FPN(**params)

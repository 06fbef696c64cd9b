"""U-Net decoder: the expanding half of a U-Net over any backbone's pyramid.

Not part of Model Garden (a vision_core addition, see `backbones/unet.py`). Starting from the
backbone's deepest level, each step up doubles the resolution (nearest upsampling, or a 2x2
transposed conv with `upsample='transpose'`), concatenates the backbone features of that level
(the skip connection) and applies `num_convs` 3x3 conv + batch norm + activation blocks.
The output is {level: features} for `min_level`..deepest, like FPN, with `output_specs`;
a segmentation head then reads `min_level` (0 for full resolution).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf
import tf_keras

from vision_core.modeling.backbones.unet import check_filters, conv_norm_act
from vision_core.modeling.decoders import registry
from vision_core.modeling.decoders.fpn import normalize_input_specs
from vision_core.modeling.layers import nn_layers

UPSAMPLE_TYPES = ("nearest", "transpose")


@tf_keras.utils.register_keras_serializable(package="Vision")
class UNetDecoder(tf_keras.Model):
    """{level: backbone features} → {level: decoded features}, levels min_level..deepest."""

    def __init__(
        self,
        input_specs: Mapping[str, tf.TensorShape],
        min_level: int = 0,
        num_filters: Sequence[int] | None = None,
        num_convs: int = 2,
        upsample: str = "nearest",
        activation: str = "relu",
        use_sync_bn: bool = False,
        norm_momentum: float = 0.99,
        norm_epsilon: float = 0.001,
        kernel_initializer: Any = "VarianceScaling",
        kernel_regularizer: tf_keras.regularizers.Regularizer | None = None,
        **kwargs: Any,
    ):
        """Initializes the decoder.

        Args:
          input_specs: the backbone's output_specs; every level from `min_level` to the deepest
            one must be present.
          min_level: the finest level decoded (0 = input resolution).
          num_filters: channels of each decoded level, finest first (levels min_level..deepest
            - 1); None uses the backbone's channels of the same levels.
          num_convs: conv blocks after each skip concatenation.
          upsample: 'nearest' (upsampling then convs) or 'transpose' (a 2x2 transposed conv).
          activation: activation name.
          use_sync_bn: synchronize batch statistics across replicas.
          norm_momentum: batch-norm momentum.
          norm_epsilon: batch-norm epsilon.
          kernel_initializer: conv kernel initializer.
          kernel_regularizer: conv kernel regularizer.
          **kwargs: `tf_keras.Model` arguments.

        Raises:
          ValueError: missing levels, bad `num_filters`, `num_convs` or `upsample`.
        """
        specs = normalize_input_specs(input_specs, "UNetDecoder")
        top = max(int(level) for level in specs)
        levels = list(range(min_level, top))
        missing = [level for level in levels if str(level) not in specs]
        if missing:
            raise ValueError(
                f"UNetDecoder: the backbone provides levels {sorted(specs, key=int)}; decoding "
                f"down to min_level={min_level} needs levels {missing} too"
            )
        if not levels:
            raise ValueError(
                f"UNetDecoder: min_level={min_level} must be below the deepest backbone level {top}"
            )
        if num_filters is None:
            num_filters = [int(specs[str(level)][-1]) for level in levels]
        num_filters = check_filters(list(num_filters), "UNetDecoder", min_len=1)
        if len(num_filters) != len(levels):
            raise ValueError(
                f"UNetDecoder: num_filters needs one entry per decoded level {levels}, got "
                f"{num_filters}"
            )
        if not isinstance(num_convs, int) or num_convs < 1:
            raise ValueError(f"UNetDecoder: num_convs must be >= 1, got {num_convs!r}")
        if upsample not in UPSAMPLE_TYPES:
            raise ValueError(
                f"UNetDecoder: upsample must be one of {UPSAMPLE_TYPES}, got {upsample!r}"
            )
        kernel_initializer = nn_layers.canonical_initializer(kernel_initializer)
        kernel_regularizer = nn_layers.canonical_regularizer(kernel_regularizer)
        self._config_dict = {
            "input_specs": {k: v.as_list() for k, v in specs.items()},
            "min_level": min_level,
            "num_filters": num_filters,
            "num_convs": num_convs,
            "upsample": upsample,
            "activation": activation,
            "use_sync_bn": use_sync_bn,
            "norm_momentum": norm_momentum,
            "norm_epsilon": norm_epsilon,
            "kernel_initializer": kernel_initializer,
            "kernel_regularizer": kernel_regularizer,
        }
        settings = dict(self._config_dict)
        inputs = {
            level: tf_keras.Input(shape=spec[1:], name=f"level_{level}")
            for level, spec in specs.items()
            if int(level) >= min_level
        }
        x = inputs[str(top)]
        outputs = {str(top): x}
        for level, width in reversed(list(zip(levels, num_filters, strict=True))):
            if upsample == "transpose":
                x = tf_keras.layers.Conv2DTranspose(
                    width,
                    2,
                    strides=2,
                    kernel_initializer=nn_layers.clone_initializer(kernel_initializer),
                    kernel_regularizer=kernel_regularizer,
                    name=f"up{level}_transpose",
                )(x)
            else:
                x = tf_keras.layers.UpSampling2D(2, name=f"up{level}_upsample")(x)
            x = tf_keras.layers.Concatenate(name=f"up{level}_concat")([x, inputs[str(level)]])
            for i in range(num_convs):
                x = conv_norm_act(x, width, 1, settings, f"up{level}_{i}")
            outputs[str(level)] = x
        outputs = {k: outputs[k] for k in sorted(outputs, key=int)}
        self._output_specs = {level: t.get_shape() for level, t in outputs.items()}
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

    def get_config(self) -> dict[str, Any]:
        return nn_layers.serializable_config(self._config_dict)

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> UNetDecoder:
        return cls(**config)

    @property
    def output_specs(self) -> dict[str, tf.TensorShape]:
        """{level: TensorShape([None, h, w, c])} of the outputs."""
        return self._output_specs


@registry.register_decoder_builder("unet")
def build_unet_decoder(
    input_specs: Mapping[str, tf.TensorShape],
    model_config: Any,
    l2_regularizer: tf_keras.regularizers.Regularizer | None = None,
    **kwargs: Any,
) -> UNetDecoder:
    """Builds a `UNetDecoder` from `model_config.decoder` (type 'unet'); it decodes down to
    `model_config.min_level`."""
    cfg, params = registry.builder_params(model_config, "unet", l2_regularizer)
    params.update(
        {
            "input_specs": input_specs,
            "min_level": model_config.min_level,
            "num_filters": list(cfg.num_filters) if cfg.num_filters else None,
            "num_convs": cfg.num_convs,
            "upsample": cfg.upsample,
        }
    )
    params.update(kwargs)
    return UNetDecoder(**params)

"""Multi-level feature fusion used by segmentation heads.

Model Garden keeps these in `official/vision/modeling/layers/nn_layers.py`
(`pyramid_feature_fusion`, `PanopticFPNFusion`) and `ops/spatial_transform_ops.py`
(`nearest_upsampling`); they live here so the head module stays small.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import tensorflow as tf
import tf_keras

from vision_core.modeling.layers import nn_layers

logger = logging.getLogger(__name__)

# GroupNormalization in the panoptic fusion uses this many groups (Kirillov et al., 2019).
PANOPTIC_FUSION_GROUPS = 32


def nearest_upsampling(inputs: tf.Tensor, scale: int) -> tf.Tensor:
    """Repeats every pixel `scale` times along height and width.

    Same values as Model Garden's `spatial_transform_ops.nearest_upsampling`; `tf.repeat` keeps
    the static shape whenever the input's is known.

    Args:
      inputs: [B, H, W, C].
      scale: integer upsampling factor.

    Returns:
      [B, H * scale, W * scale, C].
    """
    if scale == 1:
        return inputs
    return tf.repeat(tf.repeat(inputs, scale, axis=1), scale, axis=2)


def _as_int_levels(features: Mapping[Any, Any]) -> dict[int, Any]:
    return {int(k): v for k, v in features.items()}


def pyramid_feature_fusion(inputs: Mapping[str, tf.Tensor], target_level: int) -> tf.Tensor:
    """Resizes every pyramid level to `target_level` (bilinear) and sums them.

    All levels must have the same channel count (an FPN's output, for example).

    Args:
      inputs: {level: [B, H/2^l, W/2^l, C]}.
      target_level: level whose resolution the sum has.

    Returns:
      [B, H/2^target, W/2^target, C].
    """
    feats = _as_int_levels(inputs)
    target_level = int(target_level)
    if target_level in feats:
        reference = feats[target_level]
        target_size = tf.shape(reference)[1:3]
        static_size = reference.shape[1:3]
    else:
        # Scale from the finest level, as Model Garden does from each level's own size.
        level = min(feats)
        factor = 2.0 ** (level - target_level)
        size = tf.cast(tf.shape(feats[level])[1:3], tf.float32) * factor
        target_size = tf.cast(tf.round(size), tf.int32)
        static_size = tf.TensorShape(
            [None if d is None else int(round(d * factor)) for d in feats[level].shape[1:3]]
        )
    resampled = []
    for level in sorted(feats):
        feat = feats[level]
        if level != target_level:
            # Resize in float32: the op is not implemented for bfloat16 on every device.
            resized = tf.image.resize(tf.cast(feat, tf.float32), target_size, method="bilinear")
            feat = tf.cast(resized, feat.dtype)
            feat.set_shape([None, *static_size.as_list(), feats[level].shape[-1]])
        resampled.append(feat)
    return tf.math.add_n(resampled)


def _check_target_level(min_level: int, max_level: int, target_level: int) -> None:
    # Every level is brought to the target by upsampling only, so no fused level may be finer
    # than the target (Model Garden only checks target_level <= max_level and then fails on a
    # shape mismatch).
    if min_level > max_level or target_level > min_level:
        raise ValueError(
            f"PanopticFPNFusion: need target_level <= min_level <= max_level, got target_level "
            f"{target_level}, min_level {min_level}, max_level {max_level}"
        )


@tf_keras.utils.register_keras_serializable(package="Vision")
class PanopticFPNFusion(tf_keras.Model):
    """Semantic-branch fusion of Panoptic FPN (Kirillov et al., 2019).

    Each level from `min_level` to `max_level` goes through `max(1, level - target_level)` blocks
    of 3x3 conv + GroupNorm(32) + activation, each block above the target level followed by a 2x
    nearest upsampling, so every level arrives at `target_level`; the results are summed.
    """

    def __init__(
        self,
        min_level: int = 2,
        max_level: int = 5,
        target_level: int = 2,
        num_filters: int = 128,
        num_fpn_filters: int = 256,
        activation: str = "relu",
        kernel_regularizer: tf_keras.regularizers.Regularizer | None = None,
        bias_regularizer: tf_keras.regularizers.Regularizer | None = None,
        **kwargs: Any,
    ):
        """Initializes the fusion network.

        Args:
          min_level: finest decoder level fused.
          max_level: coarsest decoder level fused.
          target_level: output level; at most min_level (levels are only upsampled).
          num_filters: channels of the fusion convs (and of the output); a multiple of 32.
          num_fpn_filters: channels of the decoder features fed in.
          activation: activation name.
          kernel_regularizer: regularizer of the conv kernels.
          bias_regularizer: regularizer of the conv biases.
          **kwargs: `tf_keras.Model` arguments.

        Raises:
          ValueError: target level above min_level, or `num_filters` not a multiple of 32.
        """
        _check_target_level(min_level, max_level, target_level)
        if num_filters % PANOPTIC_FUSION_GROUPS:
            raise ValueError(
                f"PanopticFPNFusion: num_filters {num_filters} must be a multiple of "
                f"{PANOPTIC_FUSION_GROUPS} (GroupNormalization groups)"
            )
        kernel_regularizer = tf_keras.regularizers.get(kernel_regularizer)
        bias_regularizer = tf_keras.regularizers.get(bias_regularizer)
        self._config_dict = {
            "min_level": min_level,
            "max_level": max_level,
            "target_level": target_level,
            "num_filters": num_filters,
            "num_fpn_filters": num_fpn_filters,
            "activation": activation,
            "kernel_regularizer": kernel_regularizer,
            "bias_regularizer": bias_regularizer,
        }
        norm_axis = nn_layers.get_bn_axis()
        inputs = {
            str(level): tf_keras.Input(shape=[None, None, num_fpn_filters], name=f"fpn_{level}")
            for level in range(min_level, max_level + 1)
        }
        upscaled = []
        for level in range(min_level, max_level + 1):
            x = inputs[str(level)]
            for i in range(max(1, level - target_level)):
                x = tf_keras.layers.Conv2D(
                    filters=num_filters,
                    kernel_size=3,
                    padding="same",
                    kernel_initializer=tf_keras.initializers.VarianceScaling(),
                    kernel_regularizer=kernel_regularizer,
                    bias_regularizer=bias_regularizer,
                    name=f"conv_{level}_{i}",
                )(x)
                x = tf_keras.layers.GroupNormalization(
                    groups=PANOPTIC_FUSION_GROUPS, axis=norm_axis, name=f"norm_{level}_{i}"
                )(x)
                x = nn_layers.get_activation(activation, use_keras_layer=True)(x)
                if level != target_level:
                    x = tf_keras.layers.UpSampling2D(
                        size=2, interpolation="nearest", name=f"upsample_{level}_{i}"
                    )(x)
            upscaled.append(x)
        fused = upscaled[0] if len(upscaled) == 1 else tf_keras.layers.Add()(upscaled)
        self._output_specs = {str(target_level): fused.shape}
        super().__init__(inputs=inputs, outputs=fused, **kwargs)

    def get_config(self) -> dict[str, Any]:
        return dict(self._config_dict)

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> PanopticFPNFusion:
        return cls(**config)

    @property
    def output_specs(self) -> dict[str, tf.TensorShape]:
        """{target_level: TensorShape} of the fused output."""
        return self._output_specs

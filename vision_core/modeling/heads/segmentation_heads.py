"""Segmentation heads: `SegmentationHead` and `MaskScoring` (Model Garden's
`official/vision/modeling/heads/segmentation_heads.py`, same arguments, layer order and names).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf
import tf_keras

from vision_core.modeling.layers import fusion, nn_layers

logger = logging.getLogger(__name__)

FEATURE_FUSIONS = (
    None,
    "deeplabv3plus",
    "deeplabv3plus_sum_to_merge",
    "pyramid_fusion",
    "panoptic_fpn_fusion",
)
_DEEPLAB_FUSIONS = ("deeplabv3plus", "deeplabv3plus_sum_to_merge")

TensorOrDict = tf.Tensor | Mapping[str, tf.Tensor]


def _select(features: Any, level: int | str) -> Any:
    """features[str(level)] for a pyramid dict; a single tensor/shape is returned as is."""
    if isinstance(features, Mapping):
        key = str(level)
        if key not in features:
            raise ValueError(
                f"SegmentationHead: level {key} is not among the feature levels "
                f"{sorted(features, key=int)}"
            )
        return features[key]
    return features


def _random_normal() -> tf_keras.initializers.Initializer:
    return tf_keras.initializers.RandomNormal(stddev=0.01)


@tf_keras.utils.register_keras_serializable(package="Vision")
class SegmentationHead(tf_keras.layers.Layer):
    """Per-pixel classifier over one pyramid level, optionally fusing other levels first.

    Called with `(backbone_features, decoder_features)`, each a `{level: tensor}` dict (or a
    single tensor). `feature_fusion` chooses what the conv stack sees:

    - None: `decoder_features[level]`.
    - 'deeplabv3plus': `decoder_features[level]` bilinearly resized to the backbone's
      `low_level` features, concatenated with them after a 1x1 conv to `low_level_num_filters`
      + BN + activation (DeepLab v3+ decoder).
    - 'deeplabv3plus_sum_to_merge': as above, but summed; needs equal channel counts.
    - 'pyramid_fusion': every decoder level resized to `level` and summed.
    - 'panoptic_fpn_fusion': Panoptic FPN's semantic branch over decoder levels
      `decoder_min_level`..`decoder_max_level` (default: the decoder levels at or above
      `level`) at `level`.

    Then `num_convs` x (3x3 conv, or depthwise 3x3 + BN + activation + 1x1 conv, + BN +
    activation), nearest upsampling by `upsample_factor`, and a `prediction_kernel_size` conv to
    `num_classes` logits (with `logit_activation` if set).
    """

    def __init__(
        self,
        num_classes: int,
        level: int | str,
        num_convs: int = 2,
        num_filters: int = 256,
        use_depthwise_convolution: bool = False,
        prediction_kernel_size: int = 1,
        upsample_factor: int = 1,
        feature_fusion: str | None = None,
        decoder_min_level: int | None = None,
        decoder_max_level: int | None = None,
        low_level: int = 2,
        low_level_num_filters: int = 48,
        num_decoder_filters: int = 256,
        activation: str = "relu",
        logit_activation: str | None = None,
        use_sync_bn: bool = False,
        norm_momentum: float = 0.99,
        norm_epsilon: float = 0.001,
        kernel_regularizer: tf_keras.regularizers.Regularizer | None = None,
        bias_regularizer: tf_keras.regularizers.Regularizer | None = None,
        **kwargs: Any,
    ):
        """Initializes the head.

        Args:
          num_classes: number of output channels (classes).
          level: pyramid level the prediction is made at (the fusion target level).
          num_convs: 3x3 conv blocks before the classifier.
          num_filters: channels of those convs (and of the panoptic fusion).
          use_depthwise_convolution: depthwise 3x3 + 1x1 instead of each 3x3 conv.
          prediction_kernel_size: kernel size of the classifier conv.
          upsample_factor: nearest upsampling before the classifier; 1 = none.
          feature_fusion: see the class docstring.
          decoder_min_level: finest decoder level of the panoptic fusion.
          decoder_max_level: coarsest decoder level of the panoptic fusion.
          low_level: backbone level fused by the DeepLab v3+ fusions.
          low_level_num_filters: channels the low-level features are reduced to.
          num_decoder_filters: channels of the decoder features (panoptic fusion input).
          activation: activation name.
          logit_activation: 'sigmoid', 'softmax' or None (raw logits).
          use_sync_bn: synchronize batch-norm statistics across replicas.
          norm_momentum: batch-norm moving-average momentum.
          norm_epsilon: batch-norm epsilon.
          kernel_regularizer: regularizer of the conv kernels.
          bias_regularizer: regularizer of the classifier bias.
          **kwargs: `tf_keras.layers.Layer` arguments.

        Raises:
          ValueError: unknown `feature_fusion`.
        """
        super().__init__(**kwargs)
        if feature_fusion not in FEATURE_FUSIONS:
            known = ", ".join(repr(f) for f in FEATURE_FUSIONS)
            raise ValueError(
                f"SegmentationHead: feature_fusion {feature_fusion!r} is not one of {known}"
            )
        self._config_dict = {
            "num_classes": num_classes,
            "level": level,
            "num_convs": num_convs,
            "num_filters": num_filters,
            "use_depthwise_convolution": use_depthwise_convolution,
            "prediction_kernel_size": prediction_kernel_size,
            "upsample_factor": upsample_factor,
            "feature_fusion": feature_fusion,
            "decoder_min_level": decoder_min_level,
            "decoder_max_level": decoder_max_level,
            "low_level": low_level,
            "low_level_num_filters": low_level_num_filters,
            "num_decoder_filters": num_decoder_filters,
            "activation": activation,
            "logit_activation": logit_activation,
            "use_sync_bn": use_sync_bn,
            "norm_momentum": norm_momentum,
            "norm_epsilon": norm_epsilon,
            "kernel_regularizer": tf_keras.regularizers.get(kernel_regularizer),
            "bias_regularizer": tf_keras.regularizers.get(bias_regularizer),
        }
        self._bn_axis = nn_layers.get_bn_axis()
        self._activation = nn_layers.get_activation(activation)

    def _norm(self, name: str) -> tf_keras.layers.Layer:
        cfg = self._config_dict
        return nn_layers.get_norm_layer(cfg["use_sync_bn"])(
            axis=self._bn_axis,
            momentum=cfg["norm_momentum"],
            epsilon=cfg["norm_epsilon"],
            name=name,
        )

    def _panoptic_levels(self, input_shape: Any) -> tuple[int, int]:
        cfg = self._config_dict
        min_level, max_level = cfg["decoder_min_level"], cfg["decoder_max_level"]
        if min_level is None or max_level is None:
            decoder_shape = input_shape[1] if isinstance(input_shape, Sequence) else None
            if not isinstance(decoder_shape, Mapping):
                raise ValueError(
                    "SegmentationHead: panoptic_fpn_fusion needs decoder_min_level and "
                    "decoder_max_level, or a {level: features} decoder output to infer them from"
                )
            # Levels finer than the target cannot be fused (the fusion only upsamples).
            levels = sorted(int(k) for k in decoder_shape if int(k) >= int(cfg["level"]))
            if not levels:
                raise ValueError(
                    f"SegmentationHead: panoptic_fpn_fusion at level {cfg['level']} found no "
                    f"decoder level at or above it in {sorted(decoder_shape, key=int)}"
                )
            min_level = levels[0] if min_level is None else min_level
            max_level = levels[-1] if max_level is None else max_level
            logger.info(
                "SegmentationHead: panoptic fusion over decoder levels %d..%d", min_level, max_level
            )
        return min_level, max_level

    def build(self, input_shape: Any) -> None:
        cfg = self._config_dict
        regularizer = cfg["kernel_regularizer"]
        fusion_type = cfg["feature_fusion"]
        if fusion_type in _DEEPLAB_FUSIONS:
            self._dlv3p_conv = tf_keras.layers.Conv2D(
                filters=cfg["low_level_num_filters"],
                kernel_size=1,
                padding="same",
                use_bias=False,
                kernel_initializer=_random_normal(),
                kernel_regularizer=regularizer,
                name="segmentation_head_deeplabv3p_fusion_conv",
            )
            self._dlv3p_norm = self._norm("segmentation_head_deeplabv3p_fusion_norm")
        elif fusion_type == "panoptic_fpn_fusion":
            min_level, max_level = self._panoptic_levels(input_shape)
            self._panoptic_levels_used = (min_level, max_level)
            self._panoptic_fpn_fusion = fusion.PanopticFPNFusion(
                min_level=min_level,
                max_level=max_level,
                target_level=int(cfg["level"]),
                num_filters=cfg["num_filters"],
                num_fpn_filters=cfg["num_decoder_filters"],
                activation=cfg["activation"],
                kernel_regularizer=regularizer,
                bias_regularizer=cfg["bias_regularizer"],
            )

        # _convs and _norms are zipped in call(): with depthwise convs each block contributes a
        # (depthwise, norm) pair and a (1x1 conv, norm) pair.
        self._convs: list[tf_keras.layers.Layer] = []
        self._norms: list[tf_keras.layers.Layer] = []
        depthwise = cfg["use_depthwise_convolution"]
        for i in range(cfg["num_convs"]):
            if depthwise:
                self._convs.append(
                    tf_keras.layers.DepthwiseConv2D(
                        kernel_size=3,
                        padding="same",
                        use_bias=False,
                        depth_multiplier=1,
                        depthwise_initializer=_random_normal(),
                        depthwise_regularizer=regularizer,
                        name=f"segmentation_head_depthwise_conv_{i}",
                    )
                )
                self._norms.append(self._norm(f"segmentation_head_depthwise_norm_{i}"))
            self._convs.append(
                tf_keras.layers.Conv2D(
                    filters=cfg["num_filters"],
                    kernel_size=1 if depthwise else 3,
                    padding="same",
                    use_bias=False,
                    kernel_initializer=_random_normal(),
                    kernel_regularizer=regularizer,
                    name=f"segmentation_head_conv_{i}",
                )
            )
            self._norms.append(self._norm(f"segmentation_head_norm_{i}"))

        self._classifier = tf_keras.layers.Conv2D(
            filters=cfg["num_classes"],
            kernel_size=cfg["prediction_kernel_size"],
            padding="same",
            activation=cfg["logit_activation"],
            bias_initializer=tf_keras.initializers.Zeros(),
            kernel_initializer=_random_normal(),
            kernel_regularizer=regularizer,
            bias_regularizer=cfg["bias_regularizer"],
            name="segmentation_output",
        )
        super().build(input_shape)

    def call(
        self, inputs: tuple[TensorOrDict, TensorOrDict], training: bool | None = None
    ) -> tf.Tensor:
        """Predicts logits from `(backbone_features, decoder_features)`.

        Returns:
          [B, H_out, W_out, num_classes] logits, where H_out is the height of the fused level
          (the backbone's `low_level` for the DeepLab v3+ fusions, else `level`) times
          `upsample_factor`.
        """
        cfg = self._config_dict
        backbone_output, decoder_output = inputs[0], inputs[1]
        fusion_type = cfg["feature_fusion"]
        if fusion_type in _DEEPLAB_FUSIONS:
            x = _select(decoder_output, cfg["level"])
            y = _select(backbone_output, cfg["low_level"])
            y = self._dlv3p_norm(self._dlv3p_conv(y), training=training)
            y = self._activation(y)
            x = tf.image.resize(x, tf.shape(y)[1:3], method="bilinear")
            x = tf.cast(x, y.dtype)
            if fusion_type == "deeplabv3plus":
                x = tf.concat([x, y], axis=self._bn_axis)
            else:
                x = x + y
        elif fusion_type == "pyramid_fusion":
            if not isinstance(decoder_output, Mapping):
                raise ValueError(
                    "SegmentationHead: pyramid_fusion needs a {level: features} decoder output"
                )
            x = fusion.pyramid_feature_fusion(decoder_output, int(cfg["level"]))
        elif fusion_type == "panoptic_fpn_fusion":
            min_level, max_level = self._panoptic_levels_used
            x = self._panoptic_fpn_fusion(
                {str(lv): _select(decoder_output, lv) for lv in range(min_level, max_level + 1)},
                training=training,
            )
        else:
            x = _select(decoder_output, cfg["level"])

        for conv, norm in zip(self._convs, self._norms):
            x = self._activation(norm(conv(x), training=training))
        x = fusion.nearest_upsampling(x, cfg["upsample_factor"])
        return self._classifier(x)

    def compute_output_shape(self, input_shape: Any) -> tf.TensorShape:
        """Logits shape from `(backbone_shapes, decoder_shapes)` ({level: TensorShape} dicts)."""
        cfg = self._config_dict
        backbone_shape, decoder_shape = input_shape[0], input_shape[1]
        fusion_type = cfg["feature_fusion"]
        level = int(cfg["level"])
        if fusion_type in _DEEPLAB_FUSIONS:
            shape = tf.TensorShape(_select(backbone_shape, cfg["low_level"])).as_list()
            height, width = shape[1], shape[2]
        elif (
            fusion_type in ("pyramid_fusion", "panoptic_fpn_fusion")
            and isinstance(decoder_shape, Mapping)
            and str(level) not in decoder_shape
        ):
            # The fused map sits below the decoder's finest level: scale that level's size.
            finest = min(int(k) for k in decoder_shape)
            shape = tf.TensorShape(decoder_shape[str(finest)]).as_list()
            factor = 2.0 ** (finest - level)
            height, width = (None if d is None else int(round(d * factor)) for d in shape[1:3])
        else:
            shape = tf.TensorShape(_select(decoder_shape, level)).as_list()
            height, width = shape[1], shape[2]
        up = cfg["upsample_factor"]
        height = None if height is None else height * up
        width = None if width is None else width * up
        return tf.TensorShape([shape[0], height, width, cfg["num_classes"]])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self._config_dict}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SegmentationHead:
        return cls(**config)


@tf_keras.utils.register_keras_serializable(package="Vision")
class MaskScoring(tf_keras.Model):
    """Mask Scoring R-CNN's mask-IoU head (Huang et al., 2019): logits → per-class scores.

    `num_convs` x (3x3 conv + BN + activation) over the (gradient-stopped) logits, a bilinear
    resize to `fc_input_size`, `num_fcs` x (dense + BN + activation), and a dense layer to
    `num_classes` scores.
    """

    def __init__(
        self,
        num_classes: int,
        fc_input_size: Sequence[int],
        num_convs: int = 3,
        num_filters: int = 256,
        use_depthwise_convolution: bool = False,
        fc_dims: int = 1024,
        num_fcs: int = 2,
        activation: str = "relu",
        use_sync_bn: bool = False,
        norm_momentum: float = 0.99,
        norm_epsilon: float = 0.001,
        kernel_regularizer: tf_keras.regularizers.Regularizer | None = None,
        bias_regularizer: tf_keras.regularizers.Regularizer | None = None,
        **kwargs: Any,
    ):
        """Initializes the head.

        Args:
          num_classes: number of scores (classes).
          fc_input_size: [height, width] the conv features are resized to before the dense
            layers.
          num_convs: 3x3 conv blocks.
          num_filters: channels of those convs.
          use_depthwise_convolution: depthwise 3x3 + BN + activation + 1x1 conv per block.
          fc_dims: units of each hidden dense layer.
          num_fcs: hidden dense layers (the config spells it `num_fc`, also accepted here).
          activation: activation name.
          use_sync_bn: synchronize batch-norm statistics across replicas.
          norm_momentum: batch-norm moving-average momentum.
          norm_epsilon: batch-norm epsilon.
          kernel_regularizer: regularizer of the kernels.
          bias_regularizer: regularizer of the biases.
          **kwargs: `tf_keras.Model` arguments.
        """
        if "num_fc" in kwargs:
            num_fcs = kwargs.pop("num_fc")
        super().__init__(**kwargs)
        self._config_dict = {
            "num_classes": num_classes,
            "num_convs": num_convs,
            "num_filters": num_filters,
            "fc_input_size": list(fc_input_size),
            "fc_dims": fc_dims,
            "num_fcs": num_fcs,
            "use_sync_bn": use_sync_bn,
            "use_depthwise_convolution": use_depthwise_convolution,
            "norm_momentum": norm_momentum,
            "norm_epsilon": norm_epsilon,
            "activation": activation,
            "kernel_regularizer": tf_keras.regularizers.get(kernel_regularizer),
            "bias_regularizer": tf_keras.regularizers.get(bias_regularizer),
        }
        self._bn_axis = nn_layers.get_bn_axis()
        self._activation = nn_layers.get_activation(activation)

    def _norm(self, name: str) -> tf_keras.layers.Layer:
        cfg = self._config_dict
        return nn_layers.get_norm_layer(cfg["use_sync_bn"])(
            axis=self._bn_axis,
            momentum=cfg["norm_momentum"],
            epsilon=cfg["norm_epsilon"],
            name=name,
        )

    def build(self, input_shape: Any) -> None:
        cfg = self._config_dict
        regularizer = cfg["kernel_regularizer"]
        self._convs: list[tf_keras.layers.Layer] = []
        self._conv_norms: list[tf_keras.layers.Layer] = []
        for i in range(cfg["num_convs"]):
            if cfg["use_depthwise_convolution"]:
                self._convs.append(
                    tf_keras.layers.DepthwiseConv2D(
                        kernel_size=3,
                        padding="same",
                        use_bias=False,
                        depth_multiplier=1,
                        depthwise_initializer=_random_normal(),
                        depthwise_regularizer=regularizer,
                        name=f"mask-scoring-depthwise-conv-{i}",
                    )
                )
                self._conv_norms.append(self._norm(f"mask-scoring-depthwise-bn-{i}"))
            self._convs.append(
                tf_keras.layers.Conv2D(
                    filters=cfg["num_filters"],
                    kernel_size=1 if cfg["use_depthwise_convolution"] else 3,
                    padding="same",
                    kernel_initializer=tf_keras.initializers.VarianceScaling(
                        scale=2.0, mode="fan_out", distribution="untruncated_normal"
                    ),
                    bias_initializer=tf_keras.initializers.Zeros(),
                    kernel_regularizer=regularizer,
                    bias_regularizer=cfg["bias_regularizer"],
                    name=f"mask-scoring-conv-{i}",
                )
            )
            self._conv_norms.append(self._norm(f"mask-scoring-bn-{i}"))
        self._fcs: list[tf_keras.layers.Layer] = []
        self._fc_norms: list[tf_keras.layers.Layer] = []
        for i in range(cfg["num_fcs"]):
            self._fcs.append(
                tf_keras.layers.Dense(
                    units=cfg["fc_dims"],
                    kernel_initializer=tf_keras.initializers.VarianceScaling(
                        scale=1 / 3.0, mode="fan_out", distribution="uniform"
                    ),
                    kernel_regularizer=regularizer,
                    bias_regularizer=cfg["bias_regularizer"],
                    name=f"mask-scoring-fc-{i}",
                )
            )
            self._fc_norms.append(self._norm(f"mask-scoring-fc-bn-{i}"))
        self._classifier = tf_keras.layers.Dense(
            units=cfg["num_classes"],
            kernel_initializer=_random_normal(),
            bias_initializer=tf_keras.initializers.Zeros(),
            kernel_regularizer=regularizer,
            bias_regularizer=cfg["bias_regularizer"],
            name="iou-scores",
        )
        # Layer.build, not Model.build: the sublayers build on the first real call.
        tf_keras.layers.Layer.build(self, input_shape)

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        """Scores [B, num_classes] from segmentation logits [B, H, W, C]."""
        # The score must not push the mask logits around: it only learns to judge them.
        x = tf.stop_gradient(inputs)
        for conv, norm in zip(self._convs, self._conv_norms):
            x = self._activation(norm(conv(x), training=training))
        height, width = self._config_dict["fc_input_size"]
        x = tf.image.resize(tf.cast(x, tf.float32), [height, width], method="bilinear")
        x = tf.cast(x, inputs.dtype)
        x = tf.reshape(x, [-1, height * width * x.shape[-1]])
        for fc, norm in zip(self._fcs, self._fc_norms):
            x = self._activation(norm(fc(x), training=training))
        return self._classifier(x)

    def compute_output_shape(self, input_shape: Any) -> tf.TensorShape:
        batch = tf.TensorShape(input_shape).as_list()[0]
        return tf.TensorShape([batch, self._config_dict["num_classes"]])

    def get_config(self) -> dict[str, Any]:
        return dict(self._config_dict)

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> MaskScoring:
        return cls(**config)

"""Head builders from model configs (the config → constructor adapters for the heads here).

Model Garden builds heads inline in `modeling/factory.py`; the tutorials also expect a
`heads/factory.py`, so the adapters live here and `modeling/factory.py` calls them.
"""

from __future__ import annotations

import logging
from typing import Any

import tf_keras

from vision_core.modeling.heads.dense_prediction_heads import RetinaNetHead
from vision_core.modeling.heads.segmentation_heads import MaskScoring, SegmentationHead

logger = logging.getLogger(__name__)


def build_segmentation_head(
    model_config: Any,
    l2_regularizer: tf_keras.regularizers.Regularizer | None = None,
) -> SegmentationHead:
    """A `SegmentationHead` from `model_config.head`, `num_classes` and `norm_activation`.

    Args:
      model_config: e.g. `configs.semantic_segmentation.SemanticSegmentationModel`.
      l2_regularizer: kernel regularizer of the head's convs.

    Returns:
      The head (built lazily on its first call).
    """
    head = model_config.head
    norm_activation = model_config.norm_activation
    if model_config.num_classes <= 0:
        raise ValueError(f"model.num_classes: expected > 0, got {model_config.num_classes}")
    return SegmentationHead(
        num_classes=model_config.num_classes,
        level=head.level,
        num_convs=head.num_convs,
        num_filters=head.num_filters,
        use_depthwise_convolution=head.use_depthwise_convolution,
        prediction_kernel_size=head.prediction_kernel_size,
        upsample_factor=head.upsample_factor,
        feature_fusion=head.feature_fusion,
        decoder_min_level=head.decoder_min_level,
        decoder_max_level=head.decoder_max_level,
        low_level=head.low_level,
        low_level_num_filters=head.low_level_num_filters,
        num_decoder_filters=head.num_decoder_filters,
        activation=norm_activation.activation,
        logit_activation=head.logit_activation,
        use_sync_bn=norm_activation.use_sync_bn,
        norm_momentum=norm_activation.norm_momentum,
        norm_epsilon=norm_activation.norm_epsilon,
        kernel_regularizer=l2_regularizer,
    )


def build_mask_scoring_head(
    model_config: Any,
    l2_regularizer: tf_keras.regularizers.Regularizer | None = None,
) -> MaskScoring | None:
    """A `MaskScoring` head from `model_config.mask_scoring_head`, or None when that is unset.

    Args:
      model_config: a segmentation model config.
      l2_regularizer: kernel regularizer of the head's layers.

    Returns:
      The head, or None.
    """
    cfg = getattr(model_config, "mask_scoring_head", None)
    if cfg is None:
        return None
    norm_activation = model_config.norm_activation
    return MaskScoring(
        num_classes=model_config.num_classes,
        fc_input_size=list(cfg.fc_input_size),
        num_convs=cfg.num_convs,
        num_filters=cfg.num_filters,
        fc_dims=cfg.fc_dims,
        num_fcs=cfg.num_fc,
        use_depthwise_convolution=cfg.use_depthwise_convolution,
        activation=norm_activation.activation,
        use_sync_bn=norm_activation.use_sync_bn,
        norm_momentum=norm_activation.norm_momentum,
        norm_epsilon=norm_activation.norm_epsilon,
        kernel_regularizer=l2_regularizer,
    )


def build_retinanet_head(
    model_config: Any,
    l2_regularizer: tf_keras.regularizers.Regularizer | None = None,
    num_anchors_per_location: int | dict[str, int] | None = None,
) -> RetinaNetHead:
    """A `RetinaNetHead` from `model_config.head`, levels, `num_classes`, `anchor` and
    `norm_activation` (a `configs.retinanet.RetinaNet`).

    Args:
      model_config: e.g. `configs.retinanet.RetinaNet`.
      l2_regularizer: kernel regularizer of the head's convs.
      num_anchors_per_location: overrides `num_scales * len(aspect_ratios)` from
        `model_config.anchor` (one number, or `{level: number}`).

    Returns:
      The head (built lazily on its first call).
    """
    if model_config.num_classes <= 0:
        raise ValueError(f"model.num_classes: expected > 0, got {model_config.num_classes}")
    head = model_config.head
    norm_activation = model_config.norm_activation
    if num_anchors_per_location is None:
        anchor = model_config.anchor
        num_anchors_per_location = len(anchor.aspect_ratios) * anchor.num_scales
    attribute_heads = [
        cfg.as_dict() if hasattr(cfg, "as_dict") else dict(cfg)
        for cfg in (head.attribute_heads or [])
    ]
    return RetinaNetHead(
        min_level=model_config.min_level,
        max_level=model_config.max_level,
        num_classes=model_config.num_classes,
        num_anchors_per_location=num_anchors_per_location,
        num_convs=head.num_convs,
        num_filters=head.num_filters,
        attribute_heads=attribute_heads,
        share_classification_heads=head.share_classification_heads,
        use_separable_conv=head.use_separable_conv,
        activation=norm_activation.activation,
        use_sync_bn=norm_activation.use_sync_bn,
        norm_momentum=norm_activation.norm_momentum,
        norm_epsilon=norm_activation.norm_epsilon,
        kernel_regularizer=l2_regularizer,
        # Model Garden's config allows null here; null means the default, shared convs.
        share_level_convs=True if head.share_level_convs is None else head.share_level_convs,
    )

"""Model builders from configs: `build_classification_model(input_specs, model_config, ...)`,
`build_segmentation_model(input_specs, model_config, ...)`."""

from __future__ import annotations

from typing import Any

import tf_keras

from vision_core.modeling.backbones import factory as backbone_factory
from vision_core.modeling.classification_model import ClassificationModel
from vision_core.modeling.decoders import factory as decoder_factory
from vision_core.modeling.heads import factory as head_factory
from vision_core.modeling.segmentation_model import SegmentationModel


def build_classification_model(
    input_specs: tf_keras.layers.InputSpec,
    model_config: Any,
    l2_regularizer: tf_keras.regularizers.Regularizer | None = None,
    skip_logits_layer: bool = False,
    backbone: tf_keras.Model | None = None,
) -> ClassificationModel:
    """Backbone → (batch norm) → global pooling → dropout → dense logits, from a model config.

    Args:
      input_specs: the image InputSpec, `[None, height, width, channels]`.
      model_config: an `ImageClassificationModel` config (or any object with its fields).
      l2_regularizer: kernel regularizer of the backbone convs and the logits layer.
      skip_logits_layer: build no logits layer; the model outputs pooled features.
      backbone: a ready backbone to use instead of building `model_config.backbone`.
    """
    norm_activation = model_config.norm_activation
    if backbone is None:
        backbone = backbone_factory.build_backbone(
            input_specs=input_specs,
            backbone_config=model_config.backbone,
            norm_activation_config=norm_activation,
            l2_regularizer=l2_regularizer,
        )
    return ClassificationModel(
        backbone=backbone,
        num_classes=model_config.num_classes,
        input_specs=input_specs,
        dropout_rate=model_config.dropout_rate,
        kernel_initializer=model_config.kernel_initializer,
        kernel_regularizer=l2_regularizer,
        add_head_batch_norm=model_config.add_head_batch_norm,
        use_sync_bn=norm_activation.use_sync_bn,
        norm_momentum=norm_activation.norm_momentum,
        norm_epsilon=norm_activation.norm_epsilon,
        skip_logits_layer=skip_logits_layer,
    )


def build_segmentation_model(
    input_specs: tf_keras.layers.InputSpec,
    model_config: Any,
    l2_regularizer: tf_keras.regularizers.Regularizer | None = None,
    backbone: tf_keras.Model | None = None,
    decoder: tf_keras.Model | None = None,
) -> SegmentationModel:
    """Backbone → decoder → segmentation head (+ mask scoring) from a model config.

    The decoder and head are built from the specs of the stage before them, so no channel count
    or stride is hard-coded anywhere.
    """
    if backbone is None:
        backbone = backbone_factory.build_backbone(
            input_specs=input_specs,
            backbone_config=model_config.backbone,
            norm_activation_config=model_config.norm_activation,
            l2_regularizer=l2_regularizer,
        )
    if decoder is None:
        decoder = decoder_factory.build_decoder(
            input_specs=backbone.output_specs,
            model_config=model_config,
            l2_regularizer=l2_regularizer,
        )
    head = head_factory.build_segmentation_head(model_config, l2_regularizer=l2_regularizer)
    mask_scoring_head = None
    if getattr(model_config, "mask_scoring_head", None) is not None:
        mask_scoring_head = head_factory.build_mask_scoring_head(
            model_config, l2_regularizer=l2_regularizer
        )
    return SegmentationModel(
        backbone=backbone, decoder=decoder, head=head, mask_scoring_head=mask_scoring_head
    )

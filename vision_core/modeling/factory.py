"""Model builders from configs: `build_classification_model(input_specs, model_config, ...)`,
`build_segmentation_model(input_specs, model_config, ...)`,
`build_retinanet(input_specs, model_config, ...)`."""

from __future__ import annotations

from typing import Any

import tf_keras

from vision_core.modeling.backbones import factory as backbone_factory
from vision_core.modeling.classification_model import ClassificationModel
from vision_core.modeling.decoders import factory as decoder_factory
from vision_core.modeling.heads import factory as head_factory
from vision_core.modeling.retinanet_model import RetinaNetModel
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


def _build_multilevel_detection_generator(
    generator_config: Any, input_specs: tf_keras.layers.InputSpec
) -> tf_keras.layers.Layer:
    """A `MultilevelDetectionGenerator` from `model.detection_generator`.

    Every config field the generator takes is passed; a field it does not take must hold its
    default, so a setting is never dropped silently.
    """
    import inspect

    from vision_core.modeling.layers import detection_generator

    cls = detection_generator.MultilevelDetectionGenerator
    accepted = inspect.signature(cls.__init__).parameters
    defaults = type(generator_config)().as_dict()
    kwargs = {}
    for name, value in generator_config.as_dict().items():
        # Model Garden's layer takes the TFLite settings as one dict, plus the input size.
        key = "tflite_post_processing_config" if name == "tflite_post_processing" else name
        if key in accepted:
            if key == "tflite_post_processing_config":
                value = {
                    **value,
                    "input_image_size": (input_specs.shape[1], input_specs.shape[2]),
                }
            kwargs[key] = value
        elif value != defaults.get(name):
            raise ValueError(
                f"model.detection_generator.{name}: {value!r} is not supported by "
                f"{cls.__name__} (it takes {', '.join(p for p in accepted if p != 'self')})"
            )
    return cls(**kwargs)


def build_retinanet(
    input_specs: tf_keras.layers.InputSpec,
    model_config: Any,
    l2_regularizer: tf_keras.regularizers.Regularizer | None = None,
    backbone: tf_keras.Model | None = None,
    decoder: tf_keras.Model | None = None,
    num_anchors_per_location: int | dict[str, int] | None = None,
    anchor_boxes: dict[str, Any] | None = None,
) -> RetinaNetModel:
    """Backbone → decoder → RetinaNet head → detection generator, from a `RetinaNet` config.

    Args:
      input_specs: the image InputSpec, `[None, height, width, channels]`.
      model_config: a `configs.retinanet.RetinaNet`.
      l2_regularizer: kernel regularizer of the backbone, decoder and head convs.
      backbone: a ready backbone to use instead of building `model_config.backbone`.
      decoder: a ready decoder to use instead of building `model_config.decoder`.
      num_anchors_per_location: overrides `num_scales * len(aspect_ratios)` (one number or
        `{level: number}`).
      anchor_boxes: fixed {level: [H_l, W_l, A * 4]} anchors for inference; the anchor
        settings are then not used.

    Returns:
      The model, with every weight created (the components are called once on a symbolic
      input), so `count_params()` and checkpoint restores work right away.
    """
    norm_activation = model_config.norm_activation
    if backbone is None:
        backbone = backbone_factory.build_backbone(
            input_specs=input_specs,
            backbone_config=model_config.backbone,
            norm_activation_config=norm_activation,
            l2_regularizer=l2_regularizer,
        )
    if decoder is None:
        decoder = decoder_factory.build_decoder(
            input_specs=backbone.output_specs,
            model_config=model_config,
            l2_regularizer=l2_regularizer,
        )
    head = head_factory.build_retinanet_head(
        model_config,
        l2_regularizer=l2_regularizer,
        num_anchors_per_location=num_anchors_per_location,
    )
    features = backbone(tf_keras.Input(shape=input_specs.shape[1:]))
    head(decoder(features) if decoder is not None else features)

    generator = _build_multilevel_detection_generator(model_config.detection_generator, input_specs)
    anchor = model_config.anchor
    fixed = anchor_boxes is not None
    return RetinaNetModel(
        backbone,
        decoder,
        head,
        generator,
        anchor_boxes=anchor_boxes,
        min_level=model_config.min_level,
        max_level=model_config.max_level,
        num_scales=None if fixed else anchor.num_scales,
        aspect_ratios=None if fixed else list(anchor.aspect_ratios),
        anchor_size=None if fixed else anchor.anchor_size,
    )

"""Backbone factory: builds the backbone named by `backbone_config.type`.

Every built-in backbone module is imported here, so its builder is registered whenever the
factory is used; nothing depends on the user importing the right module first. Register your
own backbone with the same decorator:

    from vision_core.modeling.backbones import factory

    @factory.register_backbone_builder('my_backbone')
    def build_my_backbone(input_specs, backbone_config, norm_activation_config,
                          l2_regularizer=None):
        return MyBackbone(...)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tf_keras

# Imported for their registrations (the table lives in `registry` to avoid an import cycle).
from vision_core.modeling.backbones import (  # noqa: F401
    efficientnet,
    mobilenet,
    resnet,
    resnet_deeplab,
    spinenet,
    spinenet_mobile,
    unet,
    vit,
)
from vision_core.modeling.backbones.registry import (
    lookup_backbone_builder,
    register_backbone_builder,
    registered_backbone_types,
)

__all__ = ["build_backbone", "register_backbone_builder", "registered_backbone_types"]


def build_backbone(
    input_specs: tf_keras.layers.InputSpec | Sequence[tf_keras.layers.InputSpec],
    backbone_config: Any,
    norm_activation_config: Any,
    l2_regularizer: tf_keras.regularizers.Regularizer | None = None,
    **kwargs: Any,
) -> tf_keras.Model:
    """Builds the backbone selected by `backbone_config.type`.

    Args:
      input_specs: `InputSpec` (or sequence of them) of the model input.
      backbone_config: a one-of backbone config (`type` + one sub-config per type) or a flat
        config carrying `type` and the backbone's fields.
      norm_activation_config: config with `activation`, `use_sync_bn`, `norm_momentum`,
        `norm_epsilon`.
      l2_regularizer: kernel regularizer applied to the backbone's convs.
      **kwargs: passed on to the builder.

    Returns:
      The backbone model; it maps images to {level: features} and has `output_specs`.

    Raises:
      ValueError: `backbone_config.type` names no registered backbone (the message lists the
        registered types and the closest match).
    """
    builder = lookup_backbone_builder(getattr(backbone_config, "type", None))
    return builder(
        input_specs=input_specs,
        backbone_config=backbone_config,
        norm_activation_config=norm_activation_config,
        l2_regularizer=l2_regularizer,
        **kwargs,
    )

"""Decoder factory: `build_decoder(input_specs, model_config)` dispatching on the decoder type.

Importing this module fills the builder table (`registry.py`) with every decoder shipped here,
so `build_decoder` never depends on the user having imported a decoder module. Add your own with

    @factory.register_decoder_builder('my_decoder')
    def build_my_decoder(input_specs, model_config, l2_regularizer=None, **kwargs): ...
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import tensorflow as tf
import tf_keras

# aspp, fpn, nasfpn and unet are imported for their registrations: each registers its builder
# in `registry`.
from vision_core.modeling.decoders import aspp, fpn, nasfpn, registry, unet  # noqa: F401
from vision_core.modeling.decoders.registry import (
    register_decoder_builder,
    registered_decoder_types,
)

logger = logging.getLogger(__name__)

__all__ = [
    "build_decoder",
    "build_identity",
    "register_decoder_builder",
    "registered_decoder_types",
]


@register_decoder_builder("identity")
def build_identity(
    input_specs: Mapping[str, tf.TensorShape] | None = None,
    model_config: Any = None,
    l2_regularizer: tf_keras.regularizers.Regularizer | None = None,
    **kwargs: Any,
) -> None:
    """The identity decoder: None, so the head reads the backbone features directly."""
    del input_specs, model_config, l2_regularizer, kwargs
    return None


def build_decoder(
    input_specs: Mapping[str, tf.TensorShape],
    model_config: Any,
    l2_regularizer: tf_keras.regularizers.Regularizer | None = None,
    **kwargs: Any,
) -> tf_keras.Model | tf_keras.layers.Layer | None:
    """Builds the decoder named by `model_config.decoder.type`.

    Args:
      input_specs: {level: TensorShape} of the backbone features (`backbone.output_specs`).
      model_config: a model config (e.g. `SemanticSegmentationModel`) with a `decoder` one-of
        config; `decoder.type` None or 'identity' means no decoder.
      l2_regularizer: kernel regularizer for the decoder's convs.
      **kwargs: passed to the builder.

    Returns:
      The decoder (a Keras model or layer), or None for the identity decoder.

    Raises:
      ValueError: unknown decoder type; the message lists the known types.
    """
    decoder_config = getattr(model_config, "decoder", None)
    decoder_type = getattr(decoder_config, "type", None) if decoder_config is not None else None
    if decoder_type is None:
        return None
    builder = registry.lookup(decoder_type)
    logger.debug("building decoder %r with %s", decoder_type, builder.__qualname__)
    return builder(
        input_specs=input_specs,
        model_config=model_config,
        l2_regularizer=l2_regularizer,
        **kwargs,
    )

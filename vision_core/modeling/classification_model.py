"""`ClassificationModel`: a backbone, global average pooling and a dense logits layer.

Model Garden's `official/vision/modeling/classification_model.py`: same constructor, defaults and
layer order (optional BatchNorm → pooling → Dropout → Dense), so a Model Garden checkpoint maps
onto it variable for variable. It is a functional model; its output is the logits tensor
`[batch, num_classes]` (or the pooled features with `skip_logits_layer=True`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tensorflow as tf
import tf_keras

from vision_core.modeling.backbones.resnet import (
    DEFAULT_INPUT_SPECS,
    as_input_spec,
    input_spec_config,
)
from vision_core.modeling.layers import nn_layers

# The key ViT-style backbones return their pooled representation under.
PRE_LOGITS_KEY = "pre_logits"


def select_features(endpoints: Any) -> tf.Tensor:
    """The backbone output a classifier pools: `pre_logits` if present, else the top level.

    Args:
      endpoints: a backbone's output: {level or name: tensor}, or a single tensor.

    Raises:
      ValueError: a dict with neither `pre_logits` nor a numeric level key.
    """
    if not isinstance(endpoints, Mapping):
        return endpoints
    if PRE_LOGITS_KEY in endpoints:
        return endpoints[PRE_LOGITS_KEY]
    levels = [key for key in endpoints if str(key).isdigit()]
    if not levels:
        raise ValueError(
            f"backbone: outputs {sorted(map(str, endpoints))} have neither a "
            f"'{PRE_LOGITS_KEY}' key nor numeric pyramid levels to classify from"
        )
    # Compared as numbers: '10' is above '9'.
    return endpoints[max(levels, key=lambda key: int(key))]


@tf_keras.utils.register_keras_serializable(package="Vision")
class ClassificationModel(tf_keras.Model):
    """An image classifier on any backbone that follows the pyramid contract."""

    def __init__(
        self,
        backbone: tf_keras.Model,
        num_classes: int,
        input_specs: tf_keras.layers.InputSpec = DEFAULT_INPUT_SPECS,
        dropout_rate: float = 0.0,
        kernel_initializer: str | Any = "random_uniform",
        kernel_regularizer: tf_keras.regularizers.Regularizer | None = None,
        bias_regularizer: tf_keras.regularizers.Regularizer | None = None,
        add_head_batch_norm: bool = False,
        use_sync_bn: bool = False,
        norm_momentum: float = 0.99,
        norm_epsilon: float = 0.001,
        skip_logits_layer: bool = False,
        **kwargs: Any,
    ):
        """Initializes the classifier.

        Args:
          backbone: a model returning {level: features} (the top level is pooled) or, for
            ViT-style backbones, a dict with `pre_logits`.
          num_classes: number of output logits.
          input_specs: shape of the input images, `[None, height, width, channels]`.
          dropout_rate: dropout on the pooled features before the logits layer, in [0, 1).
          kernel_initializer: initializer of the logits layer.
          kernel_regularizer: regularizer of the logits layer's kernel.
          bias_regularizer: regularizer of the logits layer's bias.
          add_head_batch_norm: batch-normalize the features before pooling.
          use_sync_bn: synchronize that batch norm across replicas.
          norm_momentum: its moving-average momentum.
          norm_epsilon: its variance epsilon.
          skip_logits_layer: output the pooled features and build no logits layer (for
            feature extraction or a custom head).
          **kwargs: `tf_keras.Model` arguments (name, ...).

        Raises:
          ValueError: `num_classes` < 1 with a logits layer, or `dropout_rate` outside [0, 1).
        """
        if not skip_logits_layer and (not isinstance(num_classes, int) or num_classes < 1):
            raise ValueError(f"num_classes: expected an integer >= 1, got {num_classes!r}")
        if not 0.0 <= dropout_rate < 1.0:
            raise ValueError(f"dropout_rate: expected a value in [0, 1), got {dropout_rate}")
        input_specs = as_input_spec(input_specs)
        # Configs read back from JSON or a SavedModel hold these in serialized form.
        kernel_initializer = nn_layers.canonical_initializer(kernel_initializer)
        kernel_regularizer = nn_layers.canonical_regularizer(kernel_regularizer)
        bias_regularizer = nn_layers.canonical_regularizer(bias_regularizer)

        inputs = tf_keras.Input(shape=input_specs.shape[1:], name=input_specs.name)
        x = select_features(backbone(inputs))
        channel_axis = -1 if tf_keras.backend.image_data_format() == "channels_last" else 1
        if add_head_batch_norm:
            x = tf_keras.layers.BatchNormalization(
                axis=channel_axis,
                momentum=norm_momentum,
                epsilon=norm_epsilon,
                synchronized=use_sync_bn,
            )(x)
        # Convolutional backbones give [B, H, W, C]; token backbones give [B, tokens, C].
        if x.shape.rank == 4:
            x = tf_keras.layers.GlobalAveragePooling2D()(x)
        elif x.shape.rank == 3:
            x = tf_keras.layers.GlobalAveragePooling1D()(x)
        if not skip_logits_layer:
            x = tf_keras.layers.Dropout(dropout_rate)(x)
            x = tf_keras.layers.Dense(
                num_classes,
                kernel_initializer=kernel_initializer,
                kernel_regularizer=kernel_regularizer,
                bias_regularizer=bias_regularizer,
            )(x)
        super().__init__(inputs=inputs, outputs=x, **kwargs)
        self._config_dict = {
            "backbone": backbone,
            "num_classes": num_classes,
            "input_specs": input_spec_config(input_specs),
            "dropout_rate": dropout_rate,
            "kernel_initializer": kernel_initializer,
            "kernel_regularizer": kernel_regularizer,
            "bias_regularizer": bias_regularizer,
            "add_head_batch_norm": add_head_batch_norm,
            "use_sync_bn": use_sync_bn,
            "norm_momentum": norm_momentum,
            "norm_epsilon": norm_epsilon,
            "skip_logits_layer": skip_logits_layer,
        }
        self._backbone = backbone

    @property
    def backbone(self) -> tf_keras.Model:
        return self._backbone

    @property
    def checkpoint_items(self) -> dict[str, tf_keras.Model]:
        """Components to checkpoint by name, e.g. to restore only the backbone."""
        return {"backbone": self.backbone}

    @property
    def output_specs(self) -> dict[str, tf.TensorShape]:
        """{'logits': TensorShape([None, num_classes])} (pooled features when skipping logits)."""
        shape = tf.TensorShape(self.output_shape)
        return {"logits": tf.TensorShape([None, *shape.as_list()[1:]])}

    def get_config(self) -> dict[str, Any]:
        config = dict(self._config_dict)
        backbone = config.pop("backbone")
        config = nn_layers.serializable_config(config)
        config["backbone"] = tf_keras.utils.serialize_keras_object(backbone)
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> ClassificationModel:
        config = dict(config)
        if isinstance(config.get("backbone"), Mapping):
            config["backbone"] = tf_keras.layers.deserialize(
                config["backbone"], custom_objects=custom_objects
            )
        return cls(**config)

"""Small layers and helpers shared by backbones, decoders and heads.

Model Garden spreads these over `official/modeling/tf_utils.py`, `official/modeling/activations`
and `official/vision/modeling/layers/nn_layers.py`; here they live in one place with the same
names and numerics (for example `hard_swish` is `x * relu6(x + 3) / 6` and `gelu` is the tanh
approximation, as in Model Garden), so checkpoints and exported graphs behave the same.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any

import tensorflow as tf
import tf_keras

logger = logging.getLogger(__name__)

Activation = str | Callable[..., Any] | None


# ------------------------------------------------------------------------------- activations
# Registered so that an `Activation` layer using them survives get_config/JSON/SavedModel.
@tf_keras.utils.register_keras_serializable(package="Vision")
def hard_swish(features: tf.Tensor) -> tf.Tensor:
    """`x * relu6(x + 3) / 6` (MobileNetV3)."""
    features = tf.convert_to_tensor(features)
    return features * tf.nn.relu6(features + tf.cast(3.0, features.dtype)) * (1.0 / 6.0)


@tf_keras.utils.register_keras_serializable(package="Vision")
def hard_sigmoid(features: tf.Tensor) -> tf.Tensor:
    """`relu6(x + 3) / 6`; Keras' own `hard_sigmoid` uses a different slope."""
    features = tf.convert_to_tensor(features)
    return tf.nn.relu6(features + tf.cast(3.0, features.dtype)) * (1.0 / 6.0)


@tf_keras.utils.register_keras_serializable(package="Vision")
def relu6(features: tf.Tensor) -> tf.Tensor:
    """`min(max(x, 0), 6)`."""
    return tf.nn.relu6(features)


@tf_keras.utils.register_keras_serializable(package="Vision")
def simple_swish(features: tf.Tensor) -> tf.Tensor:
    """`x * sigmoid(x)` with the default gradient (exports where fused swish cannot)."""
    features = tf.convert_to_tensor(features)
    return features * tf.nn.sigmoid(features)


@tf_keras.utils.register_keras_serializable(package="Vision")
def gelu(features: tf.Tensor) -> tf.Tensor:
    """GELU, tanh approximation (Model Garden's choice)."""
    return tf_keras.activations.gelu(features, approximate=True)


@tf_keras.utils.register_keras_serializable(package="Vision")
def identity(features: tf.Tensor) -> tf.Tensor:
    """Returns the input unchanged."""
    return tf.identity(features)


# Names Keras does not know, or knows with other numerics.
_CUSTOM_ACTIVATIONS: dict[str, Callable[[tf.Tensor], tf.Tensor]] = {
    "hard_swish": hard_swish,
    "hard_sigmoid": hard_sigmoid,
    "relu6": relu6,
    "simple_swish": simple_swish,
    "gelu": gelu,
    "identity": identity,
}
_KERAS_ACTIVATIONS = (
    "relu",
    "linear",
    "swish",
    "sigmoid",
    "elu",
    "selu",
    "tanh",
    "softplus",
    "softsign",
    "softmax",
    "mish",
    "exponential",
)
ACTIVATION_NAMES = tuple(sorted({*_CUSTOM_ACTIVATIONS, *_KERAS_ACTIVATIONS, "leaky_relu"}))


def get_activation(
    identifier: Activation, use_keras_layer: bool = False, **kwargs: Any
) -> Callable[..., Any]:
    """Maps an activation name (or callable) to a function or a Keras layer.

    Same contract as Model Garden's `tf_utils.get_activation`.

    Args:
      identifier: a name such as 'relu', 'relu6', 'swish', 'hard_swish', 'gelu', 'sigmoid',
        'linear', 'identity', 'leaky_relu', ..., a callable, or None (= linear).
      use_keras_layer: return a `tf_keras.layers.Activation` (or `LeakyReLU`) layer instead of a
        function, which gives functional models a named, serializable layer.
      **kwargs: only for 'leaky_relu' (`alpha`).

    Returns:
      A callable applying the activation.

    Raises:
      ValueError: the name is unknown; the message lists the known names.
    """
    if identifier is None:
        identifier = "linear"
    if isinstance(identifier, str):
        name = identifier.lower()
        if name == "leaky_relu":
            alpha = kwargs.get("alpha", 0.2)
            if use_keras_layer:
                return tf_keras.layers.LeakyReLU(alpha=alpha)
            return functools.partial(tf.nn.leaky_relu, alpha=alpha)
        if name in _CUSTOM_ACTIVATIONS:
            fn = _CUSTOM_ACTIVATIONS[name]
        elif name in _KERAS_ACTIVATIONS:
            fn = tf_keras.activations.get(name)
        else:
            raise ValueError(
                f"activation: unknown name {identifier!r}; expected one of "
                f"{', '.join(ACTIVATION_NAMES)}"
            )
        if use_keras_layer:
            # Keras serializes its own names as strings and ours by registered name.
            return tf_keras.layers.Activation(name if name in _KERAS_ACTIVATIONS else fn)
        return fn
    if callable(identifier):
        return tf_keras.layers.Activation(identifier) if use_keras_layer else identifier
    raise ValueError(f"activation: expected a name or a callable, got {identifier!r}")


# ----------------------------------------------------------------------------- normalization
def get_norm_layer(use_sync_bn: bool = False) -> Callable[..., tf_keras.layers.Layer]:
    """The batch-norm constructor to use: synchronized across replicas or per replica.

    Args:
      use_sync_bn: synchronize batch statistics across replicas (multi-GPU/TPU training).

    Returns:
      A callable taking `BatchNormalization` keyword arguments.
    """
    return functools.partial(tf_keras.layers.BatchNormalization, synchronized=use_sync_bn)


def get_bn_axis() -> int:
    """The channel axis for the current Keras image data format."""
    return -1 if tf_keras.backend.image_data_format() == "channels_last" else 1


def clone_initializer(initializer: Any) -> Any:
    """A fresh copy of an initializer object, so layers sharing a config get independent draws.

    Strings and dicts are returned unchanged: Keras makes a new object from them per layer.
    """
    if isinstance(initializer, tf_keras.initializers.Initializer):
        return initializer.__class__.from_config(initializer.get_config())
    return initializer


def canonical_regularizer(value: Any) -> tf_keras.regularizers.Regularizer | None:
    """A regularizer object from an object, a serialized dict (as configs hold) or None."""
    return tf_keras.regularizers.get(value)


def canonical_initializer(value: Any) -> Any:
    """Initializer names stay names; serialized dicts become initializer objects."""
    if value is None or isinstance(value, str):
        return value
    return tf_keras.initializers.get(value)


def serializable_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A plain copy of a constructor config that survives JSON and SavedModel reloading.

    Regularizer and initializer objects become their Keras-serialized dicts (constructors accept
    those back), and Keras' attribute-tracking wrappers become plain dicts and lists.
    """
    return {key: _plain(value) for key, value in config.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, tf_keras.regularizers.Regularizer):
        return tf_keras.regularizers.serialize(value)
    if isinstance(value, tf_keras.initializers.Initializer):
        return tf_keras.initializers.serialize(value)
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


# ------------------------------------------------------------------------------ channel math
def make_divisible(
    value: float,
    divisor: int,
    min_value: float | None = None,
    round_down_protect: bool = True,
) -> int:
    """Rounds `value` to the nearest multiple of `divisor` (MobileNet/EfficientNet widths).

    Args:
      value: the unrounded channel count.
      divisor: the result is a multiple of this.
      min_value: lower bound of the result; defaults to `divisor`.
      round_down_protect: if rounding lost more than 10% of `value`, go one `divisor` up.

    Returns:
      The rounded channel count.
    """
    if min_value is None:
        min_value = divisor
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if round_down_protect and new_value < 0.9 * value:
        new_value += divisor
    return int(new_value)


def round_filters(
    filters: int,
    multiplier: float,
    divisor: int = 8,
    min_depth: int | None = None,
    round_down_protect: bool = True,
    skip: bool = False,
) -> int:
    """Scales a channel count by a width multiplier and rounds it with `make_divisible`.

    Args:
      filters: the unscaled channel count.
      multiplier: the width multiplier; 0 or None leaves `filters` unchanged.
      divisor: the result is a multiple of this.
      min_depth: lower bound of the result; defaults to `divisor`.
      round_down_protect: see `make_divisible`.
      skip: return `filters` unchanged.

    Returns:
      The scaled, rounded channel count.
    """
    if skip or not multiplier:
        return filters
    return make_divisible(
        filters * multiplier,
        divisor=divisor,
        min_value=min_depth,
        round_down_protect=round_down_protect,
    )


def get_stochastic_depth_rate(init_rate: float | None, i: int, n: int) -> float | None:
    """Drop rate of block group `i` of `n`, growing linearly with depth.

    Args:
      init_rate: the rate at the last group, in [0, 1], or None (no stochastic depth).
      i: position of the current group (Model Garden passes the feature level, 2..5).
      n: number of positions (Model Garden passes 5 for a 4-stage ResNet).

    Returns:
      `init_rate * i / n`, or None when `init_rate` is None.

    Raises:
      ValueError: `init_rate` is outside [0, 1].
    """
    if init_rate is None:
        return None
    if init_rate < 0 or init_rate > 1:
        raise ValueError(f"init_stochastic_depth_rate: expected a value in [0, 1], got {init_rate}")
    return init_rate * float(i) / n


# ------------------------------------------------------------------------------------ layers
@tf_keras.utils.register_keras_serializable(package="Vision")
class StochasticDepth(tf_keras.layers.Layer):
    """Drops the whole residual branch per example while training (Huang et al., 2016).

    Kept examples are scaled by `1 / (1 - rate)` so the expected output equals the input;
    at inference the layer is the identity.
    """

    def __init__(self, stochastic_depth_drop_rate: float | None, **kwargs: Any):
        """Initializes the layer.

        Args:
          stochastic_depth_drop_rate: probability of dropping the branch of one example.
          **kwargs: `tf_keras.layers.Layer` arguments (name, dtype, ...).
        """
        super().__init__(**kwargs)
        self._config_dict = {"stochastic_depth_drop_rate": stochastic_depth_drop_rate}
        self._drop_rate = stochastic_depth_drop_rate

    def call(self, inputs: tf.Tensor, training: bool | tf.Tensor | None = None) -> tf.Tensor:
        if not self._drop_rate:
            return inputs
        if training is None:
            training = tf_keras.backend.learning_phase()
        if isinstance(training, bool | int):
            return self._drop(inputs) if training else inputs
        # A symbolic training flag (inside a traced function) decides at run time.
        return tf.cond(
            tf.cast(training, tf.bool), lambda: self._drop(inputs), lambda: tf.identity(inputs)
        )

    def _drop(self, inputs: tf.Tensor) -> tf.Tensor:
        keep_prob = 1.0 - self._drop_rate
        # One Bernoulli draw per example, broadcast over the other axes.
        shape = [tf.shape(inputs)[0]] + [1] * (inputs.shape.rank - 1)
        mask = tf.floor(keep_prob + tf.random.uniform(shape, dtype=inputs.dtype))
        return inputs / keep_prob * mask

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **serializable_config(self._config_dict)}


@tf_keras.utils.register_keras_serializable(package="Vision")
class SqueezeExcitation(tf_keras.layers.Layer):
    """Squeeze-and-excitation channel gating (Hu et al., 2018).

    Global average pool, a 1x1 conv down to `make_divisible(in_filters * se_ratio)` channels,
    `activation`, a 1x1 conv up to `out_filters`, `gating_activation`, then scales the input.
    """

    def __init__(
        self,
        in_filters: int,
        out_filters: int,
        se_ratio: float,
        divisible_by: int = 1,
        use_3d_input: bool = False,
        kernel_initializer: Any = "VarianceScaling",
        kernel_regularizer: tf_keras.regularizers.Regularizer | None = None,
        bias_regularizer: tf_keras.regularizers.Regularizer | None = None,
        activation: Activation = "relu",
        gating_activation: Activation = "sigmoid",
        round_down_protect: bool = True,
        **kwargs: Any,
    ):
        """Initializes the layer.

        Args:
          in_filters: channels the reduction is computed from.
          out_filters: channels of the input being gated (and of the gate).
          se_ratio: reduction ratio, e.g. 0.25.
          divisible_by: the reduced width is a multiple of this.
          use_3d_input: the input is [B, T, H, W, C] (video) instead of [B, H, W, C].
          kernel_initializer: initializer of both 1x1 convs.
          kernel_regularizer: regularizer of both kernels.
          bias_regularizer: regularizer of both biases.
          activation: activation after the reduction.
          gating_activation: activation producing the gate.
          round_down_protect: see `make_divisible`.
          **kwargs: `tf_keras.layers.Layer` arguments.
        """
        super().__init__(**kwargs)
        kernel_initializer = canonical_initializer(kernel_initializer)
        kernel_regularizer = canonical_regularizer(kernel_regularizer)
        bias_regularizer = canonical_regularizer(bias_regularizer)
        self._config_dict = {
            "in_filters": in_filters,
            "out_filters": out_filters,
            "se_ratio": se_ratio,
            "divisible_by": divisible_by,
            "use_3d_input": use_3d_input,
            "kernel_initializer": kernel_initializer,
            "kernel_regularizer": kernel_regularizer,
            "bias_regularizer": bias_regularizer,
            "activation": activation,
            "gating_activation": gating_activation,
            "round_down_protect": round_down_protect,
        }
        channels_last = tf_keras.backend.image_data_format() == "channels_last"
        spatial_rank = 3 if use_3d_input else 2
        first = 1 if channels_last else 2
        self._spatial_axis = list(range(first, first + spatial_rank))
        self._activation_fn = get_activation(activation)
        self._gating_activation_fn = get_activation(gating_activation)

    def build(self, input_shape: tf.TensorShape) -> None:
        cfg = self._config_dict
        num_reduced_filters = make_divisible(
            max(1, int(cfg["in_filters"] * cfg["se_ratio"])),
            divisor=cfg["divisible_by"],
            round_down_protect=cfg["round_down_protect"],
        )
        conv = tf_keras.layers.Conv3D if cfg["use_3d_input"] else tf_keras.layers.Conv2D
        common = {
            "kernel_size": 1,
            "strides": 1,
            "padding": "same",
            "use_bias": True,
            "kernel_regularizer": cfg["kernel_regularizer"],
            "bias_regularizer": cfg["bias_regularizer"],
        }
        # Attribute names match Model Garden's so object-based checkpoints map one to one.
        self._se_reduce = conv(
            filters=num_reduced_filters,
            kernel_initializer=clone_initializer(cfg["kernel_initializer"]),
            **common,
        )
        self._se_expand = conv(
            filters=cfg["out_filters"],
            kernel_initializer=clone_initializer(cfg["kernel_initializer"]),
            **common,
        )
        super().build(input_shape)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        x = tf.reduce_mean(inputs, self._spatial_axis, keepdims=True)
        x = self._activation_fn(self._se_reduce(x))
        x = self._gating_activation_fn(self._se_expand(x))
        return x * inputs

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **serializable_config(self._config_dict)}

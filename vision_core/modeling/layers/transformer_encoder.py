"""Transformer encoder block with stochastic depth and LayerScale (Vision Transformer layers).

`TransformerEncoderBlock` is self-attention followed by a two-layer MLP, each wrapped in a
residual connection, with layer normalization before (`norm_first=True`, ViT) or after
(`norm_first=False`, BERT) each of them. Model Garden's class of the same name (in
`official/vision/modeling/layers/nn_blocks.py`, built on `official/nlp/modeling/layers`) is
matched in constructor names, defaults, variable shapes, sub-layer attribute names and the
order of `weights`, so variables map one to one between the two; the numerics agree in
inference. Two deliberate differences:

- `kernel_regularizer` reaches every kernel of the block (attention and MLP). Model Garden
  accepts the argument but never passes it on, so its transformer kernels are never
  regularized.
- with `norm_first=False`, stochastic depth drops the MLP branch; Model Garden drops the
  shortcut there instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf
import tf_keras

from vision_core.modeling.layers import nn_layers


@tf_keras.utils.register_keras_serializable(package="Vision")
class LayerScale(tf_keras.layers.Layer):
    """Multiplies the input by a learned per-channel scale (CaiT, Touvron et al., 2021).

    The scale has shape [1, ..., 1, channels] and starts at `init_values` everywhere, so a
    small value (e.g. 1e-4) lets a deep network begin close to the identity.
    """

    def __init__(self, init_values: float, **kwargs: Any):
        """Initializes the layer.

        Args:
          init_values: initial value of every entry of the scale.
          **kwargs: `tf_keras.layers.Layer` arguments (name, dtype, ...).
        """
        super().__init__(**kwargs)
        self._config_dict = {"init_values": init_values}

    def build(self, input_shape: tf.TensorShape) -> None:
        input_shape = tf.TensorShape(input_shape)
        # Kept in float32 under mixed precision, as Model Garden does; cast on use.
        self.gamma = self.add_weight(
            name="layerscale_gamma",
            shape=[1] * (input_shape.rank - 1) + [input_shape[-1]],
            initializer=tf_keras.initializers.Constant(self._config_dict["init_values"]),
            trainable=True,
            dtype=tf.float32,
        )
        super().build(input_shape)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return tf.cast(self.gamma, inputs.dtype) * inputs

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self._config_dict}


@tf_keras.utils.register_keras_serializable(package="Vision")
class MultiHeadAttention(tf_keras.layers.MultiHeadAttention):
    """`tf_keras.layers.MultiHeadAttention` that can split q/k/v over TPU cores.

    With `partition_dims` set, the projected query, key and value are annotated for spatial
    partitioning with `strategy.experimental_split_to_logical_devices` (a TPUStrategy with
    model parallelism is required then). Without it, this is the Keras layer unchanged.
    """

    def __init__(self, *args: Any, partition_dims: Sequence[int] | None = None, **kwargs: Any):
        """Initializes the layer.

        Args:
          *args: `tf_keras.layers.MultiHeadAttention` arguments.
          partition_dims: number of logical devices along each of the 4 axes of the projected
            [batch, seq, heads, dim] tensors, or None for no partitioning.
          **kwargs: `tf_keras.layers.MultiHeadAttention` arguments.
        """
        super().__init__(*args, **kwargs)
        if partition_dims is not None and len(partition_dims) != 4:
            raise ValueError(
                f"partition_dims: expected 4 values (batch, seq, heads, dim) or None, "
                f"got {partition_dims!r}"
            )
        self._partition_dims = None if partition_dims is None else list(partition_dims)

    def _compute_attention(
        self,
        query: tf.Tensor,
        key: tf.Tensor,
        value: tf.Tensor,
        attention_mask: tf.Tensor | None = None,
        training: bool | None = None,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        if self._partition_dims is not None:
            strategy = tf.distribute.get_strategy()
            query, key, value = (
                strategy.experimental_split_to_logical_devices(t, self._partition_dims)
                for t in (query, key, value)
            )
        return super()._compute_attention(
            query, key, value, attention_mask=attention_mask, training=training
        )

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "partition_dims": self._partition_dims}


@tf_keras.utils.register_keras_serializable(package="Vision")
class TransformerEncoderBlock(tf_keras.layers.Layer):
    """Self-attention + MLP, each residual, on [batch, tokens, channels] inputs.

    With `norm_first=True` (ViT): `x + SD(LS(attn(LN(x))))`, then `y + SD(LS(mlp(LN(y))))`;
    with `norm_first=False` (BERT): `LN(x + SD(attn(x)))`, then `LN(y + SD(mlp(y)))`. SD is
    stochastic depth (training only), LS the optional LayerScale, and the MLP is
    dense(inner_dim) - activation - dropout - dense(channels) - dropout.
    """

    def __init__(
        self,
        num_attention_heads: int,
        inner_dim: int,
        inner_activation: nn_layers.Activation,
        kernel_initializer: Any = "glorot_uniform",
        bias_initializer: Any = "zeros",
        kernel_regularizer: tf_keras.regularizers.Regularizer | None = None,
        bias_regularizer: tf_keras.regularizers.Regularizer | None = None,
        use_bias: bool = True,
        norm_first: bool = False,
        norm_epsilon: float = 1e-12,
        output_dropout: float = 0.0,
        attention_dropout: float = 0.0,
        inner_dropout: float = 0.0,
        attention_initializer: Any = None,
        key_dim: int | None = None,
        return_attention_scores: bool = False,
        stochastic_depth_drop_rate: float | None = 0.0,
        layer_scale_init_value: float = 0.0,
        transformer_partition_dims: Sequence[int] | None = None,
        **kwargs: Any,
    ):
        """Initializes the block.

        Args:
          num_attention_heads: number of attention heads.
          inner_dim: width of the MLP's hidden layer.
          inner_activation: activation of the MLP's hidden layer: a name known to
            `nn_layers.get_activation` ('gelu' is the tanh approximation, as in Model Garden)
            or a callable (a name keeps the config serializable).
          kernel_initializer: initializer of the MLP kernels (and of the attention kernels
            unless `attention_initializer` is given).
          bias_initializer: initializer of every bias.
          kernel_regularizer: regularizer of every kernel (attention and MLP).
          bias_regularizer: regularizer of every bias.
          use_bias: whether the attention projections have biases.
          norm_first: normalize before each sub-layer (ViT) instead of after (BERT).
          norm_epsilon: epsilon of both layer normalizations.
          output_dropout: dropout rate after the MLP.
          attention_dropout: dropout rate of the attention weights and of the attention
            output (Model Garden uses this rate for both).
          inner_dropout: dropout rate after the MLP's hidden activation.
          attention_initializer: initializer of the attention kernels; None copies
            `kernel_initializer`.
          key_dim: width of each head; None gives channels // num_attention_heads.
          return_attention_scores: return `(outputs, scores)` with scores of shape
            [batch, heads, tokens, tokens].
          stochastic_depth_drop_rate: probability of dropping each residual branch per
            example while training; 0 or None disables it.
          layer_scale_init_value: initial LayerScale value; 0 disables LayerScale.
          transformer_partition_dims: TPU spatial partitioning of the attention (see
            `MultiHeadAttention`), or None.
          **kwargs: `tf_keras.layers.Layer` arguments (name, ...).
        """
        super().__init__(**kwargs)
        if num_attention_heads < 1:
            raise ValueError(f"num_attention_heads: expected >= 1, got {num_attention_heads}")
        self._config_dict = {
            "num_attention_heads": num_attention_heads,
            "inner_dim": inner_dim,
            "inner_activation": inner_activation,
            "kernel_initializer": nn_layers.canonical_initializer(kernel_initializer),
            "bias_initializer": nn_layers.canonical_initializer(bias_initializer),
            "kernel_regularizer": nn_layers.canonical_regularizer(kernel_regularizer),
            "bias_regularizer": nn_layers.canonical_regularizer(bias_regularizer),
            "use_bias": use_bias,
            "norm_first": norm_first,
            "norm_epsilon": norm_epsilon,
            "output_dropout": output_dropout,
            "attention_dropout": attention_dropout,
            "inner_dropout": inner_dropout,
            "attention_initializer": nn_layers.canonical_initializer(attention_initializer),
            "key_dim": key_dim,
            "return_attention_scores": return_attention_scores,
            "stochastic_depth_drop_rate": stochastic_depth_drop_rate,
            "layer_scale_init_value": layer_scale_init_value,
            "transformer_partition_dims": (
                None if transformer_partition_dims is None else list(transformer_partition_dims)
            ),
        }
        # Resolved now so that an unknown name fails at construction, not at the first call.
        self._activation_fn = nn_layers.get_activation(inner_activation)

    def build(self, input_shape: tf.TensorShape) -> None:
        input_shape = tf.TensorShape(input_shape)
        if input_shape.rank is None or input_shape.rank < 3 or input_shape[-1] is None:
            raise ValueError(
                f"{self.name}: expected inputs [batch, tokens, channels] with known channels, "
                f"got {input_shape}"
            )
        cfg = self._config_dict
        channels = int(input_shape[-1])
        # The explicit rank-3 equation matters: TF's gradient of an einsum with an ellipsis
        # materializes a [channels, inner, batch, tokens] outer product (15 GB for ViT-B/16 at
        # batch 8), where "abc,cd->abd" is a plain matmul both ways.
        equation = "abc,cd->abd" if input_shape.rank == 3 else "...bc,cd->...bd"
        dense_kwargs = {
            "bias_axes": "d",
            "kernel_regularizer": cfg["kernel_regularizer"],
            "bias_regularizer": cfg["bias_regularizer"],
        }

        # The attribute names below are Model Garden's (object-based checkpoints restore by
        # them), and the attention layer is assigned last: Model Garden replaces its attention
        # layer at the end of build(), which puts the attention variables after the norms and
        # the MLP in `weights`. Keeping that order lets a converter pair variables one to one.
        # Layer norms compute in float32 under mixed precision for stability.
        self._attention_layer_norm = tf_keras.layers.LayerNormalization(
            name="self_attention_layer_norm",
            axis=-1,
            epsilon=cfg["norm_epsilon"],
            dtype=tf.float32,
        )
        self._intermediate_dense = tf_keras.layers.EinsumDense(
            equation,
            output_shape=(None, cfg["inner_dim"]),
            kernel_initializer=nn_layers.clone_initializer(cfg["kernel_initializer"]),
            bias_initializer=nn_layers.clone_initializer(cfg["bias_initializer"]),
            name="intermediate",
            **dense_kwargs,
        )
        # bfloat16 activations hurt convergence here (Model Garden's finding); keep float32.
        policy = tf_keras.mixed_precision.global_policy()
        activation_dtype = tf.float32 if policy.name == "mixed_bfloat16" else None
        self._intermediate_activation_layer = tf_keras.layers.Activation(
            self._activation_fn, dtype=activation_dtype
        )
        self._inner_dropout_layer = tf_keras.layers.Dropout(rate=cfg["inner_dropout"])
        self._output_dense = tf_keras.layers.EinsumDense(
            equation,
            output_shape=(None, channels),
            kernel_initializer=nn_layers.clone_initializer(cfg["kernel_initializer"]),
            bias_initializer=nn_layers.clone_initializer(cfg["bias_initializer"]),
            name="output",
            **dense_kwargs,
        )
        self._output_dropout = tf_keras.layers.Dropout(rate=cfg["output_dropout"])
        self._output_layer_norm = tf_keras.layers.LayerNormalization(
            name="output_layer_norm",
            axis=-1,
            epsilon=cfg["norm_epsilon"],
            dtype=tf.float32,
        )
        self._attention_dropout = tf_keras.layers.Dropout(rate=cfg["attention_dropout"])
        rate = cfg["stochastic_depth_drop_rate"]
        self._stochastic_depth = nn_layers.StochasticDepth(rate) if rate else None
        if cfg["layer_scale_init_value"]:
            self._layer_scale_attn = LayerScale(
                cfg["layer_scale_init_value"], name="layer_scale_attn"
            )
            self._layer_scale_mlp = LayerScale(
                cfg["layer_scale_init_value"], name="layer_scale_mlp"
            )
        else:
            self._layer_scale_attn = None
            self._layer_scale_mlp = None
        attention_initializer = cfg["attention_initializer"] or cfg["kernel_initializer"]
        self._attention_layer = MultiHeadAttention(
            num_heads=cfg["num_attention_heads"],
            key_dim=cfg["key_dim"] or channels // cfg["num_attention_heads"],
            dropout=cfg["attention_dropout"],
            use_bias=cfg["use_bias"],
            kernel_initializer=nn_layers.clone_initializer(attention_initializer),
            bias_initializer=nn_layers.clone_initializer(cfg["bias_initializer"]),
            kernel_regularizer=cfg["kernel_regularizer"],
            bias_regularizer=cfg["bias_regularizer"],
            partition_dims=cfg["transformer_partition_dims"],
            name="self_attention",
        )
        super().build(input_shape)

    def _drop_path(self, x: tf.Tensor, training: bool | None) -> tf.Tensor:
        if self._stochastic_depth is None:
            return x
        return self._stochastic_depth(x, training=training)

    def call(
        self, inputs: tf.Tensor, training: bool | None = None
    ) -> tf.Tensor | tuple[tf.Tensor, tf.Tensor]:
        norm_first = self._config_dict["norm_first"]
        x = self._attention_layer_norm(inputs) if norm_first else inputs
        attention, scores = self._attention_layer(
            query=x, value=x, return_attention_scores=True, training=training
        )
        attention = self._attention_dropout(attention, training=training)
        if self._layer_scale_attn is not None:
            attention = self._layer_scale_attn(attention)
        x = inputs + self._drop_path(attention, training)
        if not norm_first:
            x = self._attention_layer_norm(x)

        y = self._output_layer_norm(x) if norm_first else x
        y = self._intermediate_dense(y)
        y = self._intermediate_activation_layer(y)
        y = self._inner_dropout_layer(y, training=training)
        y = self._output_dense(y)
        y = self._output_dropout(y, training=training)
        if self._layer_scale_mlp is not None:
            y = self._layer_scale_mlp(y)
        # Mixed precision: the float32 norm output meets a low-precision branch here.
        y = tf.cast(x, y.dtype) + self._drop_path(y, training)
        if not norm_first:
            y = self._output_layer_norm(y)

        if self._config_dict["return_attention_scores"]:
            return y, scores
        return y

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **nn_layers.serializable_config(self._config_dict)}

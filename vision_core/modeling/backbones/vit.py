"""Vision Transformer backbone (Model Garden's `official/vision/modeling/backbones/vit.py`).

`VisionTransformer` cuts the image into non-overlapping patch_size x patch_size patches, embeds
each with one strided conv, optionally prepends a learned class token, adds learned position
embeddings and runs a stack of pre-norm `TransformerEncoderBlock`s (Dosovitskiy et al., 2021).
Its outputs, with Model Garden's keys:

- `'pre_logits'`, [batch, 1, 1, width]: the class token (`pooler='token'`) or the token mean
  (`pooler='gap'`), passed through `Dense(representation_size) + tanh` when
  `representation_size` is set; width is `representation_size or hidden_size`.
- `'encoded_tokens'`, [batch, tokens, width] (`pooler='none'` with `output_encoded_tokens`).
- `str(round(log2(patch_size)))`, [batch, H/patch, W/patch, hidden_size] with
  `output_2d_feature_maps`: the patch tokens as a feature map, for dense-prediction decoders.
- `'attention_scores'`, [batch, heads, tokens, tokens] of the last block, with
  `output_attention_scores`.

Parameter counts, variable shapes and the order of `weights` are Model Garden's, so its
variables load one to one. Differences, all where Model Garden fails or surprises:

- `output_specs` lists every output (Model Garden only defines it with
  `output_2d_feature_maps`, and then leaves out `'pre_logits'`).
- `pos_embed_shape` also works with `pooler='token'`: the class token keeps its own position
  embedding and only the grid is interpolated (Model Garden fails on the shape mismatch).
- `kernel_regularizer` also reaches the transformer kernels (see `transformer_encoder`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import tensorflow as tf
import tf_keras

from vision_core.modeling.backbones.registry import register_backbone_builder
from vision_core.modeling.backbones.resnet import (
    as_input_spec,
    check_backbone_type,
    input_spec_config,
)
from vision_core.modeling.backbones.vit_specs import VIT_SPECS, get_vit_spec
from vision_core.modeling.layers import nn_layers
from vision_core.modeling.layers.transformer_encoder import TransformerEncoderBlock

__all__ = ["VIT_SPECS", "AddPositionEmbs", "Encoder", "TokenLayer", "VisionTransformer"]

logger = logging.getLogger(__name__)

POOLERS = ("token", "gap", "none")
# Any batch, RGB; height and width must be given (the position embeddings depend on them).
DEFAULT_INPUT_SPECS = tf_keras.layers.InputSpec(shape=[None, None, None, 3])
# Layer norms use the JAX reference implementation's epsilon, as Model Garden does.
_NORM_EPSILON = 1e-6


def _grid(value: Sequence[int] | None, name: str) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        grid = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        grid = ()
    if len(grid) != 2 or min(grid) < 1:
        raise ValueError(f"{name}: expected [rows, cols] of positive ints or None, got {value!r}")
    return grid


@tf_keras.utils.register_keras_serializable(package="Vision")
class AddPositionEmbs(tf_keras.layers.Layer):
    """Adds learned position embeddings to a [batch, tokens, channels] sequence.

    Without `posemb_origin_shape` there is one embedding per input token. With it, the
    embeddings are learned for a grid of that shape and, when the input grid
    (`posemb_target_shape`) differs, resized to it bilinearly on every call: this is how a
    model trained at one resolution runs at another. Tokens in front of the grid (a class
    token) have their own embeddings, which are never resized.
    """

    def __init__(
        self,
        posemb_init: Any = None,
        posemb_origin_shape: Sequence[int] | None = None,
        posemb_target_shape: Sequence[int] | None = None,
        **kwargs: Any,
    ):
        """Initializes the layer.

        Args:
          posemb_init: initializer of the embeddings (None: Keras' default).
          posemb_origin_shape: [rows, cols] of the grid the embeddings are learned for; None
            learns one per input token.
          posemb_target_shape: [rows, cols] of the input's patch grid; needed when it differs
            from `posemb_origin_shape`.
          **kwargs: `tf_keras.layers.Layer` arguments (name, ...).
        """
        super().__init__(**kwargs)
        self._config_dict = {
            "posemb_init": nn_layers.canonical_initializer(posemb_init),
            "posemb_origin_shape": _grid(posemb_origin_shape, "posemb_origin_shape"),
            "posemb_target_shape": _grid(posemb_target_shape, "posemb_target_shape"),
        }
        self._num_prefix_tokens = 0

    def build(self, input_shape: tf.TensorShape) -> None:
        input_shape = tf.TensorShape(input_shape)
        num_tokens, channels = input_shape[1], input_shape[-1]
        origin = self._config_dict["posemb_origin_shape"]
        target = self._config_dict["posemb_target_shape"] or origin
        if origin is None:
            length = num_tokens
        else:
            # Whatever precedes the target grid in the sequence is a prefix (class) token.
            self._num_prefix_tokens = num_tokens - target[0] * target[1]
            if self._num_prefix_tokens < 0:
                raise ValueError(
                    f"{self.name}: {num_tokens} tokens cannot hold the {target} patch grid "
                    f"(posemb_target_shape)"
                )
            length = self._num_prefix_tokens + origin[0] * origin[1]
        self.pos_embedding = self.add_weight(
            "pos_embedding",
            shape=(1, length, channels),
            initializer=self._config_dict["posemb_init"],
        )
        super().build(input_shape)

    def _resized(self) -> tf.Tensor:
        origin = self._config_dict["posemb_origin_shape"]
        target = self._config_dict["posemb_target_shape"]
        if origin is None or target is None or origin == target:
            return self.pos_embedding
        logger.debug(
            "%s: interpolating position embeddings from %s to %s", self.name, origin, target
        )
        prefix = self.pos_embedding[:, : self._num_prefix_tokens]
        grid = tf.reshape(self.pos_embedding[:, self._num_prefix_tokens :], [1, *origin, -1])
        grid = tf.image.resize(grid, target, method="bilinear")
        grid = tf.reshape(grid, [1, target[0] * target[1], -1])
        return tf.concat([tf.cast(prefix, grid.dtype), grid], axis=1)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return inputs + tf.cast(self._resized(), inputs.dtype)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **nn_layers.serializable_config(self._config_dict)}


@tf_keras.utils.register_keras_serializable(package="Vision")
class TokenLayer(tf_keras.layers.Layer):
    """Prepends one learned class token (initialized to zeros) to every sequence."""

    def build(self, input_shape: tf.TensorShape) -> None:
        self.cls = self.add_weight("cls", shape=(1, 1, input_shape[-1]), initializer="zeros")
        super().build(input_shape)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        cls = tf.cast(self.cls, inputs.dtype)
        cls = tf.broadcast_to(cls, [tf.shape(inputs)[0], 1, tf.shape(inputs)[-1]])
        return tf.concat([cls, inputs], axis=1)


@tf_keras.utils.register_keras_serializable(package="Vision")
class Encoder(tf_keras.layers.Layer):
    """Position embeddings, dropout, `num_layers` pre-norm transformer blocks, layer norm.

    The stochastic depth rate grows linearly with depth, reaching `init_stochastic_depth_rate`
    at the last block.
    """

    def __init__(
        self,
        num_layers: int,
        mlp_dim: int,
        num_heads: int,
        dropout_rate: float = 0.1,
        attention_dropout_rate: float = 0.1,
        kernel_regularizer: tf_keras.regularizers.Regularizer | None = None,
        init_stochastic_depth_rate: float = 0.0,
        kernel_initializer: Any = "glorot_uniform",
        add_pos_embed: bool = True,
        pos_embed_origin_shape: Sequence[int] | None = None,
        pos_embed_target_shape: Sequence[int] | None = None,
        layer_scale_init_value: float = 0.0,
        transformer_partition_dims: Sequence[int] | None = None,
        output_attention_scores: bool = False,
        **kwargs: Any,
    ):
        """Initializes the encoder.

        Args:
          num_layers: number of transformer blocks.
          mlp_dim: hidden width of each block's MLP.
          num_heads: attention heads per block.
          dropout_rate: dropout after the position embeddings and after each MLP.
          attention_dropout_rate: dropout of the attention weights and outputs.
          kernel_regularizer: regularizer of every block kernel.
          init_stochastic_depth_rate: stochastic depth rate of the last block.
          kernel_initializer: initializer of the block kernels.
          add_pos_embed: add learned position embeddings first.
          pos_embed_origin_shape: grid the position embeddings are learned for (see
            `AddPositionEmbs`); None: one per input token.
          pos_embed_target_shape: the input's patch grid.
          layer_scale_init_value: LayerScale initial value; 0 disables it.
          transformer_partition_dims: TPU spatial partitioning of the attention, or None.
          output_attention_scores: also return the last block's attention scores.
          **kwargs: `tf_keras.layers.Layer` arguments (name, ...).
        """
        super().__init__(**kwargs)
        self._config_dict = {
            "num_layers": num_layers,
            "mlp_dim": mlp_dim,
            "num_heads": num_heads,
            "dropout_rate": dropout_rate,
            "attention_dropout_rate": attention_dropout_rate,
            "kernel_regularizer": nn_layers.canonical_regularizer(kernel_regularizer),
            "init_stochastic_depth_rate": init_stochastic_depth_rate,
            "kernel_initializer": nn_layers.canonical_initializer(kernel_initializer),
            "add_pos_embed": add_pos_embed,
            "pos_embed_origin_shape": _grid(pos_embed_origin_shape, "pos_embed_origin_shape"),
            "pos_embed_target_shape": _grid(pos_embed_target_shape, "pos_embed_target_shape"),
            "layer_scale_init_value": layer_scale_init_value,
            "transformer_partition_dims": (
                None if transformer_partition_dims is None else list(transformer_partition_dims)
            ),
            "output_attention_scores": output_attention_scores,
        }

    def build(self, input_shape: tf.TensorShape) -> None:
        cfg = self._config_dict
        # Attribute names and assignment order follow Model Garden (checkpoints, weights order).
        if cfg["add_pos_embed"]:
            self._pos_embed = AddPositionEmbs(
                posemb_init=tf_keras.initializers.RandomNormal(stddev=0.02),
                posemb_origin_shape=cfg["pos_embed_origin_shape"],
                posemb_target_shape=cfg["pos_embed_target_shape"],
                name="posembed_input",
            )
        self._dropout = tf_keras.layers.Dropout(rate=cfg["dropout_rate"])
        num_layers = cfg["num_layers"]
        self._encoder_layers = []
        for i in range(num_layers):
            self._encoder_layers.append(
                TransformerEncoderBlock(
                    num_attention_heads=cfg["num_heads"],
                    inner_dim=cfg["mlp_dim"],
                    inner_activation="gelu",
                    output_dropout=cfg["dropout_rate"],
                    attention_dropout=cfg["attention_dropout_rate"],
                    kernel_regularizer=cfg["kernel_regularizer"],
                    kernel_initializer=nn_layers.clone_initializer(cfg["kernel_initializer"]),
                    norm_first=True,
                    norm_epsilon=_NORM_EPSILON,
                    stochastic_depth_drop_rate=nn_layers.get_stochastic_depth_rate(
                        cfg["init_stochastic_depth_rate"], i + 1, num_layers
                    ),
                    layer_scale_init_value=cfg["layer_scale_init_value"],
                    transformer_partition_dims=cfg["transformer_partition_dims"],
                    return_attention_scores=cfg["output_attention_scores"],
                    name=f"transformer_encoder_block_{i}",
                )
            )
        self._norm = tf_keras.layers.LayerNormalization(epsilon=_NORM_EPSILON, name="encoder_norm")
        super().build(input_shape)

    def call(
        self, inputs: tf.Tensor, training: bool | None = None
    ) -> tf.Tensor | tuple[tf.Tensor, tf.Tensor]:
        x = self._pos_embed(inputs) if self._config_dict["add_pos_embed"] else inputs
        x = self._dropout(x, training=training)
        scores = None
        for block in self._encoder_layers:
            x = block(x, training=training)
            if self._config_dict["output_attention_scores"]:
                x, scores = x
        x = self._norm(x)
        if self._config_dict["output_attention_scores"]:
            return x, scores
        return x

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **nn_layers.serializable_config(self._config_dict)}


@tf_keras.utils.register_keras_serializable(package="Vision")
class VisionTransformer(tf_keras.Model):
    """ViT feature extractor: image -> {'pre_logits' | 'encoded_tokens' | level: features}.

    See the module docstring for the outputs; `output_specs` gives their shapes.
    """

    def __init__(
        self,
        mlp_dim: int = 3072,
        num_heads: int = 12,
        num_layers: int = 12,
        attention_dropout_rate: float = 0.0,
        dropout_rate: float = 0.1,
        init_stochastic_depth_rate: float = 0.0,
        input_specs: tf_keras.layers.InputSpec = DEFAULT_INPUT_SPECS,
        patch_size: int = 16,
        hidden_size: int = 768,
        representation_size: int = 0,
        pooler: str = "token",
        kernel_regularizer: tf_keras.regularizers.Regularizer | None = None,
        original_init: bool = True,
        output_encoded_tokens: bool = True,
        output_2d_feature_maps: bool = False,
        pos_embed_shape: Sequence[int] | None = None,
        layer_scale_init_value: float = 0.0,
        transformer_partition_dims: Sequence[int] | None = None,
        output_attention_scores: bool = False,
        **kwargs: Any,
    ):
        """Initializes a Vision Transformer (defaults: ViT-B/16, see `vit_specs.VIT_SPECS`).

        Args:
          mlp_dim: hidden width of each block's MLP.
          num_heads: attention heads per block.
          num_layers: number of transformer blocks.
          attention_dropout_rate: dropout of the attention weights and outputs.
          dropout_rate: dropout after the position embeddings and after each MLP.
          init_stochastic_depth_rate: stochastic depth rate of the last block (linear in depth).
          input_specs: shape of the input images, [None, H, W, C]; H and W must be known.
          patch_size: side of the square patches, which is also the output stride.
          hidden_size: token width.
          representation_size: width of the `Dense + tanh` pre-logits layer; 0 for none.
          pooler: 'token' (class token), 'gap' (mean of the tokens) or 'none' (no pooling:
            returns the tokens as 'encoded_tokens').
          kernel_regularizer: regularizer of every kernel (patch embedding, transformer,
            pre-logits).
          original_init: the original ViT initializers (LeCun normal embedding, Glorot uniform
            blocks); False uses He uniform and truncated normal (stddev 0.02).
          output_encoded_tokens: with pooler 'none', return 'encoded_tokens'.
          output_2d_feature_maps: also return the patch tokens as a feature map under the
            level str(round(log2(patch_size))).
          pos_embed_shape: [rows, cols] patch grid the position embeddings are learned for,
            e.g. (14, 14) to load a 224x224 model and run it at another size; None uses the
            input's own grid.
          layer_scale_init_value: LayerScale initial value of every block; 0 disables it.
          transformer_partition_dims: TPU spatial partitioning of the attention, or None.
          output_attention_scores: also return the last block's 'attention_scores'.
          **kwargs: `tf_keras.Model` arguments (name, ...).

        Raises:
          ValueError: an argument is outside its allowed values, or the input size is unknown
            or smaller than a patch.
        """
        if pooler not in POOLERS:
            raise ValueError(f"pooler: expected one of {', '.join(POOLERS)}, got {pooler!r}")
        if pooler == "none" and not (
            output_encoded_tokens or output_2d_feature_maps or output_attention_scores
        ):
            raise ValueError(
                "pooler='none' with output_encoded_tokens=False and output_2d_feature_maps=False "
                "leaves the model without outputs; enable one of them"
            )
        if patch_size < 1:
            raise ValueError(f"patch_size: expected a positive int, got {patch_size}")
        input_specs = as_input_spec(input_specs)
        pos_embed_shape = _grid(pos_embed_shape, "pos_embed_shape")
        kernel_regularizer = nn_layers.canonical_regularizer(kernel_regularizer)
        self._config_dict = {
            "mlp_dim": mlp_dim,
            "num_heads": num_heads,
            "num_layers": num_layers,
            "attention_dropout_rate": attention_dropout_rate,
            "dropout_rate": dropout_rate,
            "init_stochastic_depth_rate": init_stochastic_depth_rate,
            "input_specs": input_spec_config(input_specs),
            "patch_size": patch_size,
            "hidden_size": hidden_size,
            "representation_size": representation_size,
            "pooler": pooler,
            "kernel_regularizer": kernel_regularizer,
            "original_init": original_init,
            "output_encoded_tokens": output_encoded_tokens,
            "output_2d_feature_maps": output_2d_feature_maps,
            "pos_embed_shape": None if pos_embed_shape is None else list(pos_embed_shape),
            "layer_scale_init_value": layer_scale_init_value,
            "transformer_partition_dims": (
                None if transformer_partition_dims is None else list(transformer_partition_dims)
            ),
            "output_attention_scores": output_attention_scores,
        }

        channels_last = tf_keras.backend.image_data_format() == "channels_last"
        rows, cols = (1, 2) if channels_last else (2, 3)
        shape = input_specs.shape
        if shape is None or len(shape) != 4 or shape[rows] is None or shape[cols] is None:
            raise ValueError(
                f"input_specs: VisionTransformer needs a known image height and width (its "
                f"position embeddings depend on them), got shape {shape}"
            )
        if min(shape[rows], shape[cols]) < patch_size:
            raise ValueError(
                f"input_specs: the image ({shape[rows]}x{shape[cols]}) is smaller than one "
                f"patch (patch_size={patch_size})"
            )
        # Trailing pixels that do not fill a patch are dropped, as by a 'valid' conv.
        feat_h, feat_w = shape[rows] // patch_size, shape[cols] // patch_size

        inputs = tf_keras.Input(shape=shape[1:])
        x = tf_keras.layers.Conv2D(
            filters=hidden_size,
            kernel_size=patch_size,
            strides=patch_size,
            padding="valid",
            kernel_regularizer=kernel_regularizer,
            kernel_initializer="lecun_normal" if original_init else "he_uniform",
            name="embedding",
        )(inputs)
        if not channels_last:
            # Tokens are flattened from [batch, rows, cols, channels].
            x = tf_keras.layers.Permute((2, 3, 1))(x)
        x = tf_keras.layers.Reshape((feat_h * feat_w, hidden_size))(x)
        if pooler == "token":
            x = TokenLayer(name="cls")(x)

        encoded = Encoder(
            num_layers=num_layers,
            mlp_dim=mlp_dim,
            num_heads=num_heads,
            dropout_rate=dropout_rate,
            attention_dropout_rate=attention_dropout_rate,
            kernel_regularizer=kernel_regularizer,
            kernel_initializer=(
                "glorot_uniform"
                if original_init
                else tf_keras.initializers.TruncatedNormal(stddev=0.02)
            ),
            init_stochastic_depth_rate=init_stochastic_depth_rate,
            pos_embed_origin_shape=pos_embed_shape,
            pos_embed_target_shape=(feat_h, feat_w),
            layer_scale_init_value=layer_scale_init_value,
            transformer_partition_dims=transformer_partition_dims,
            output_attention_scores=output_attention_scores,
            name="encoder",
        )(x)

        endpoints: dict[str, tf.Tensor] = {}
        if output_attention_scores:
            x, endpoints["attention_scores"] = encoded
        else:
            x = encoded

        if pooler == "token":
            patch_tokens, x = x[:, 1:], x[:, 0]
        elif pooler == "gap":
            patch_tokens, x = x, tf.reduce_mean(x, axis=1)
        else:
            patch_tokens = x

        if output_2d_feature_maps:
            # The level whose stride is closest to the patch size.
            level = str(round(math.log2(patch_size)))
            endpoints[level] = tf_keras.layers.Reshape((feat_h, feat_w, hidden_size))(patch_tokens)

        if representation_size:
            x = tf_keras.layers.Dense(
                representation_size,
                kernel_regularizer=kernel_regularizer,
                kernel_initializer="lecun_normal" if original_init else "he_uniform",
                name="pre_logits",
            )(x)
            x = tf_keras.layers.Activation("tanh")(x)

        if pooler == "none":
            if output_encoded_tokens:
                endpoints["encoded_tokens"] = x
        else:
            endpoints["pre_logits"] = tf_keras.layers.Reshape(
                (1, 1, representation_size or hidden_size)
            )(x)

        self._output_specs = {key: value.get_shape() for key, value in endpoints.items()}
        super().__init__(inputs=inputs, outputs=endpoints, **kwargs)

    def get_config(self) -> dict[str, Any]:
        return nn_layers.serializable_config(self._config_dict)

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> VisionTransformer:
        return cls(**config)

    @property
    def output_specs(self) -> dict[str, tf.TensorShape]:
        """{key: TensorShape} of every output ('pre_logits', 'encoded_tokens', the feature
        level, 'attention_scores'), batch dimension None."""
        return self._output_specs


@register_backbone_builder("vit")
def build_vit(
    input_specs: tf_keras.layers.InputSpec,
    backbone_config: Any,
    norm_activation_config: Any,
    l2_regularizer: tf_keras.regularizers.Regularizer | None = None,
) -> tf_keras.Model:
    """Builds a `VisionTransformer` from a backbone config (nested `type: vit` + `vit: {...}`,
    or flat).

    As in Model Garden, `hidden_size`, `patch_size` and `transformer.{mlp_dim, num_heads,
    num_layers}` come from `VIT_SPECS[model_name]`, whatever the config says; the other fields
    (pooler, dropout rates, ...) are read from the config. The norm/activation config is not
    used: the transformer has its own layer norms and GELU.
    """
    del norm_activation_config
    cfg = check_backbone_type(backbone_config, "vit")
    model_name = getattr(cfg, "model_name", "vit-b16")
    spec = get_vit_spec(model_name)
    sizes = spec["transformer"]
    transformer = getattr(cfg, "transformer", None)
    logger.info(
        "ViT %s: hidden_size=%d patch_size=%d mlp_dim=%d num_heads=%d num_layers=%d",
        model_name,
        spec["hidden_size"],
        spec["patch_size"],
        sizes["mlp_dim"],
        sizes["num_heads"],
        sizes["num_layers"],
    )
    return VisionTransformer(
        mlp_dim=sizes["mlp_dim"],
        num_heads=sizes["num_heads"],
        num_layers=sizes["num_layers"],
        attention_dropout_rate=getattr(transformer, "attention_dropout_rate", 0.0),
        dropout_rate=getattr(transformer, "dropout_rate", 0.0),
        init_stochastic_depth_rate=getattr(cfg, "init_stochastic_depth_rate", 0.0),
        input_specs=input_specs,
        patch_size=spec["patch_size"],
        hidden_size=spec["hidden_size"],
        representation_size=getattr(cfg, "representation_size", 0),
        pooler=getattr(cfg, "pooler", "token"),
        kernel_regularizer=l2_regularizer,
        original_init=getattr(cfg, "original_init", True),
        output_encoded_tokens=getattr(cfg, "output_encoded_tokens", True),
        output_2d_feature_maps=getattr(cfg, "output_2d_feature_maps", False),
        pos_embed_shape=getattr(cfg, "pos_embed_shape", None),
        layer_scale_init_value=getattr(cfg, "layer_scale_init_value", 0.0),
        transformer_partition_dims=getattr(cfg, "transformer_partition_dims", None),
        output_attention_scores=getattr(cfg, "output_attention_scores", False),
    )

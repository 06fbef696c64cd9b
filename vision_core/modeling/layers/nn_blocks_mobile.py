"""Mobile building blocks: inverted bottleneck (MBConv), depthwise-separable and conv-BN blocks.

These serve EfficientNet and the MobileNet family. Constructor parameters and defaults follow
Model Garden's `nn_blocks.InvertedBottleneckBlock`, `nn_blocks.DepthwiseSeparableConvBlock` and
`mobilenet.Conv2DBNBlock`; sub-layers are created in the same order and with the same variable
shapes, so a Model Garden model's `weights` list maps one to one onto ours. The names are
re-exported from `nn_blocks` (and `Conv2DBNBlock` from `backbones.mobilenet`), where Model Garden
users look for them.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf
import tf_keras

from vision_core.modeling.layers import nn_layers


class _MobileBlockBase(tf_keras.layers.Layer):
    """Stores the config and builds the bias-free convs and batch norms every block uses."""

    def __init__(self, config: dict[str, Any], **kwargs: Any):
        super().__init__(**kwargs)
        self._config_dict = config
        self._norm = nn_layers.get_norm_layer(config["use_sync_bn"])
        self._bn_axis = nn_layers.get_bn_axis()

    def _conv(
        self,
        filters: int,
        kernel_size: int,
        strides: int = 1,
        use_bias: bool = False,
        padding: str = "same",
    ) -> tf_keras.layers.Conv2D:
        cfg = self._config_dict
        return tf_keras.layers.Conv2D(
            filters=filters,
            kernel_size=kernel_size,
            strides=strides,
            padding=padding,
            use_bias=use_bias,
            kernel_initializer=nn_layers.clone_initializer(cfg["kernel_initializer"]),
            kernel_regularizer=cfg["kernel_regularizer"],
            bias_regularizer=cfg.get("bias_regularizer"),
        )

    def _depthwise_conv(
        self, kernel_size: int, strides: int, dilation_rate: int
    ) -> tf_keras.layers.DepthwiseConv2D:
        cfg = self._config_dict
        # Depthwise kernels are tiny; regularizing them is opt-in, as in Model Garden.
        regularizer = cfg["kernel_regularizer"] if cfg["regularize_depthwise"] else None
        return tf_keras.layers.DepthwiseConv2D(
            kernel_size=kernel_size,
            strides=strides,
            padding="same",
            depth_multiplier=1,
            dilation_rate=dilation_rate,
            use_bias=False,
            depthwise_initializer=nn_layers.clone_initializer(cfg["kernel_initializer"]),
            depthwise_regularizer=regularizer,
        )

    def _batch_norm(self) -> tf_keras.layers.Layer:
        cfg = self._config_dict
        return self._norm(
            axis=self._bn_axis, momentum=cfg["norm_momentum"], epsilon=cfg["norm_epsilon"]
        )

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **nn_layers.serializable_config(self._config_dict)}


def _canonical_regularizers(
    kernel_initializer: Any, kernel_regularizer: Any, bias_regularizer: Any
) -> tuple[Any, Any, Any]:
    # Configs read back from JSON or a SavedModel hold these in serialized form.
    return (
        nn_layers.canonical_initializer(kernel_initializer),
        nn_layers.canonical_regularizer(kernel_regularizer),
        nn_layers.canonical_regularizer(bias_regularizer),
    )


@tf_keras.utils.register_keras_serializable(package="Vision")
class InvertedBottleneckBlock(_MobileBlockBase):
    """Inverted residual block (MobileNetV2/V3, EfficientNet's MBConv; Sandler et al., 2018).

    `1x1 expand - BN - act - kxk depthwise - BN - act [- SE] - 1x1 project - BN`, plus the input
    when the block keeps shape and `use_residual` is set (with optional stochastic depth on the
    branch). With `use_depthwise=False` the expansion and the depthwise conv fuse into one strided
    kxk conv (the "fused" MBConv of EdgeTPU models). With `expand_ratio <= 1` the first conv
    (1x1 or fused) is skipped, so a fused block then has no kxk conv and no stride.
    """

    def __init__(
        self,
        in_filters: int,
        out_filters: int,
        expand_ratio: float,
        strides: int,
        kernel_size: int = 3,
        se_ratio: float | None = None,
        stochastic_depth_drop_rate: float | None = None,
        kernel_initializer: Any = "VarianceScaling",
        kernel_regularizer: tf_keras.regularizers.Regularizer | None = None,
        bias_regularizer: tf_keras.regularizers.Regularizer | None = None,
        activation: nn_layers.Activation = "relu",
        se_inner_activation: nn_layers.Activation = "relu",
        se_gating_activation: nn_layers.Activation = "sigmoid",
        se_round_down_protect: bool = True,
        expand_se_in_filters: bool = False,
        depthwise_activation: nn_layers.Activation = None,
        use_sync_bn: bool = False,
        dilation_rate: int = 1,
        divisible_by: int = 1,
        regularize_depthwise: bool = False,
        use_depthwise: bool = True,
        use_residual: bool = True,
        norm_momentum: float = 0.99,
        norm_epsilon: float = 0.001,
        output_intermediate_endpoints: bool = False,
        **kwargs: Any,
    ):
        """Initializes the block.

        Args:
          in_filters: channels of the input.
          out_filters: channels of the output.
          expand_ratio: the hidden width is `make_divisible(in_filters * expand_ratio,
            divisible_by)`; at 1 or below no expansion conv runs.
          strides: stride of the depthwise conv (of the fused conv without `use_depthwise`).
          kernel_size: kernel size of the depthwise (or fused) conv.
          se_ratio: squeeze-and-excitation ratio in (0, 1]; None or 0 disables it.
          stochastic_depth_drop_rate: drop rate of the residual branch; None or 0 disables it.
          kernel_initializer: initializer of every conv kernel.
          kernel_regularizer: regularizer of every 1x1/fused conv kernel (and of the depthwise
            kernel with `regularize_depthwise`).
          bias_regularizer: regularizer of conv biases (only the SE convs have them).
          activation: activation after the expansion.
          se_inner_activation: activation inside squeeze-and-excitation.
          se_gating_activation: gating activation of squeeze-and-excitation ('hard_sigmoid'
            for MobileNetV3).
          se_round_down_protect: see `nn_layers.make_divisible`, for the SE width.
          expand_se_in_filters: compute the SE reduction from the expanded width instead of
            `in_filters` (MobileNet does, EfficientNet does not).
          depthwise_activation: activation after the depthwise conv; None means `activation`.
          use_sync_bn: synchronize batch statistics across replicas.
          dilation_rate: dilation of the depthwise conv (atrous MobileNet).
          divisible_by: the expanded and SE widths are multiples of this.
          regularize_depthwise: apply `kernel_regularizer` to the depthwise kernel too.
          use_depthwise: False fuses expansion and depthwise conv into one kxk conv.
          use_residual: add the input when shapes allow (stride 1, in == out channels).
          norm_momentum: batch-norm moving-average momentum.
          norm_epsilon: batch-norm epsilon.
          output_intermediate_endpoints: return `(output, {'depthwise': features})` instead of
            the output alone.
          **kwargs: `tf_keras.layers.Layer` arguments (name, dtype, ...).
        """
        kernel_initializer, kernel_regularizer, bias_regularizer = _canonical_regularizers(
            kernel_initializer, kernel_regularizer, bias_regularizer
        )
        config = {
            "in_filters": in_filters,
            "out_filters": out_filters,
            "expand_ratio": expand_ratio,
            "strides": strides,
            "kernel_size": kernel_size,
            "se_ratio": se_ratio,
            "stochastic_depth_drop_rate": stochastic_depth_drop_rate,
            "kernel_initializer": kernel_initializer,
            "kernel_regularizer": kernel_regularizer,
            "bias_regularizer": bias_regularizer,
            "activation": activation,
            "se_inner_activation": se_inner_activation,
            "se_gating_activation": se_gating_activation,
            "se_round_down_protect": se_round_down_protect,
            "expand_se_in_filters": expand_se_in_filters,
            "depthwise_activation": depthwise_activation,
            "use_sync_bn": use_sync_bn,
            "dilation_rate": dilation_rate,
            "divisible_by": divisible_by,
            "regularize_depthwise": regularize_depthwise,
            "use_depthwise": use_depthwise,
            "use_residual": use_residual,
            "norm_momentum": norm_momentum,
            "norm_epsilon": norm_epsilon,
            "output_intermediate_endpoints": output_intermediate_endpoints,
        }
        super().__init__(config, **kwargs)

    def build(self, input_shape: tf.TensorShape) -> None:
        cfg = self._config_dict
        expand_filters = nn_layers.make_divisible(
            cfg["in_filters"] * cfg["expand_ratio"], cfg["divisible_by"]
        )
        use_depthwise = cfg["use_depthwise"]
        # Creation order (conv0, norm0, act, conv1, norm1, act, SE, conv2, norm2) is Model
        # Garden's: it fixes the order of `weights`, which weight converters rely on.
        self._conv0 = self._conv(
            expand_filters,
            kernel_size=1 if use_depthwise else cfg["kernel_size"],
            strides=1 if use_depthwise else cfg["strides"],
        )
        self._norm0 = self._batch_norm()
        self._activation_layer = nn_layers.get_activation(cfg["activation"], use_keras_layer=True)

        if use_depthwise:
            self._conv1 = self._depthwise_conv(
                cfg["kernel_size"], cfg["strides"], cfg["dilation_rate"]
            )
            self._norm1 = self._batch_norm()
            self._depthwise_activation_layer = nn_layers.get_activation(
                cfg["depthwise_activation"] or cfg["activation"], use_keras_layer=True
            )

        se_ratio = cfg["se_ratio"]
        self._squeeze_excitation = None
        if se_ratio and 0 < se_ratio <= 1:
            self._squeeze_excitation = nn_layers.SqueezeExcitation(
                in_filters=expand_filters if cfg["expand_se_in_filters"] else cfg["in_filters"],
                out_filters=expand_filters,
                se_ratio=se_ratio,
                divisible_by=cfg["divisible_by"],
                round_down_protect=cfg["se_round_down_protect"],
                kernel_initializer=nn_layers.clone_initializer(cfg["kernel_initializer"]),
                kernel_regularizer=cfg["kernel_regularizer"],
                bias_regularizer=cfg["bias_regularizer"],
                activation=cfg["se_inner_activation"],
                gating_activation=cfg["se_gating_activation"],
            )

        self._conv2 = self._conv(cfg["out_filters"], kernel_size=1)
        self._norm2 = self._batch_norm()

        rate = cfg["stochastic_depth_drop_rate"]
        self._stochastic_depth = nn_layers.StochasticDepth(rate) if rate else None
        self._add = tf_keras.layers.Add()
        super().build(input_shape)

    def call(
        self, inputs: tf.Tensor, training: bool | None = None
    ) -> tf.Tensor | tuple[tf.Tensor, dict[str, tf.Tensor]]:
        cfg = self._config_dict
        endpoints = {}
        x = inputs
        # Without expansion the first conv is skipped (it then owns no variables). As in Model
        # Garden this holds for the fused form too: MobileNetV3EdgeTPU's first block, fused with
        # expand_ratio 1, is a plain 1x1 projection, and checkpoints depend on that.
        if cfg["expand_ratio"] > 1:
            x = self._activation_layer(self._norm0(self._conv0(x)))
        if cfg["use_depthwise"]:
            x = self._depthwise_activation_layer(self._norm1(self._conv1(x)))
            if cfg["output_intermediate_endpoints"]:
                endpoints["depthwise"] = x
        if self._squeeze_excitation is not None:
            x = self._squeeze_excitation(x)
        x = self._norm2(self._conv2(x))

        if cfg["use_residual"] and cfg["in_filters"] == cfg["out_filters"] and cfg["strides"] == 1:
            if self._stochastic_depth is not None:
                x = self._stochastic_depth(x, training=training)
            x = self._add([x, inputs])

        if cfg["output_intermediate_endpoints"]:
            return x, endpoints
        return x


@tf_keras.utils.register_keras_serializable(package="Vision")
class DepthwiseSeparableConvBlock(_MobileBlockBase):
    """MobileNetV1 block: `kxk depthwise - BN - act - 1x1 conv - BN - act` (Howard et al., 2017)."""

    def __init__(
        self,
        filters: int,
        kernel_size: int = 3,
        strides: int = 1,
        regularize_depthwise: bool = False,
        activation: nn_layers.Activation = "relu6",
        kernel_initializer: Any = "VarianceScaling",
        kernel_regularizer: tf_keras.regularizers.Regularizer | None = None,
        dilation_rate: int = 1,
        use_sync_bn: bool = False,
        norm_momentum: float = 0.99,
        norm_epsilon: float = 0.001,
        **kwargs: Any,
    ):
        """Initializes the block.

        Args:
          filters: output channels of the pointwise conv.
          kernel_size: kernel size of the depthwise conv.
          strides: stride of the depthwise conv.
          regularize_depthwise: apply `kernel_regularizer` to the depthwise kernel too.
          activation: activation after both convs.
          kernel_initializer: initializer of both kernels.
          kernel_regularizer: regularizer of the pointwise kernel.
          dilation_rate: dilation of the depthwise conv (atrous MobileNetV1).
          use_sync_bn: synchronize batch statistics across replicas.
          norm_momentum: batch-norm moving-average momentum.
          norm_epsilon: batch-norm epsilon.
          **kwargs: `tf_keras.layers.Layer` arguments (name, dtype, ...).
        """
        kernel_initializer, kernel_regularizer, _ = _canonical_regularizers(
            kernel_initializer, kernel_regularizer, None
        )
        config = {
            "filters": filters,
            "kernel_size": kernel_size,
            "strides": strides,
            "regularize_depthwise": regularize_depthwise,
            "activation": activation,
            "kernel_initializer": kernel_initializer,
            "kernel_regularizer": kernel_regularizer,
            "dilation_rate": dilation_rate,
            "use_sync_bn": use_sync_bn,
            "norm_momentum": norm_momentum,
            "norm_epsilon": norm_epsilon,
        }
        super().__init__(config, **kwargs)
        self._activation_fn = nn_layers.get_activation(activation)

    def build(self, input_shape: tf.TensorShape) -> None:
        cfg = self._config_dict
        self._dwconv0 = self._depthwise_conv(
            cfg["kernel_size"], cfg["strides"], cfg["dilation_rate"]
        )
        self._norm0 = self._batch_norm()
        self._conv1 = self._conv(cfg["filters"], kernel_size=1)
        self._norm1 = self._batch_norm()
        super().build(input_shape)

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        x = self._activation_fn(self._norm0(self._dwconv0(inputs)))
        return self._activation_fn(self._norm1(self._conv1(x)))


@tf_keras.utils.register_keras_serializable(package="Vision")
class Conv2DBNBlock(_MobileBlockBase):
    """`conv [- BN] - act`: MobileNet stems and heads (Model Garden's `mobilenet.Conv2DBNBlock`)."""

    def __init__(
        self,
        filters: int,
        kernel_size: int = 3,
        strides: int = 1,
        use_bias: bool = False,
        use_explicit_padding: bool = False,
        activation: nn_layers.Activation = "relu6",
        kernel_initializer: Any = "VarianceScaling",
        kernel_regularizer: tf_keras.regularizers.Regularizer | None = None,
        bias_regularizer: tf_keras.regularizers.Regularizer | None = None,
        use_normalization: bool = True,
        use_sync_bn: bool = False,
        norm_momentum: float = 0.99,
        norm_epsilon: float = 0.001,
        **kwargs: Any,
    ):
        """Initializes the block.

        Args:
          filters: output channels.
          kernel_size: conv kernel size.
          strides: conv stride.
          use_bias: give the conv a bias (used where there is no batch norm).
          use_explicit_padding: zero-pad symmetrically by `(kernel_size - 1) // 2` and run the
            conv with 'valid' padding instead of 'same' (only for kernel sizes above 1).
          activation: activation after the conv (and batch norm).
          kernel_initializer: initializer of the conv kernel.
          kernel_regularizer: regularizer of the conv kernel.
          bias_regularizer: regularizer of the conv bias.
          use_normalization: apply batch norm after the conv.
          use_sync_bn: synchronize batch statistics across replicas.
          norm_momentum: batch-norm moving-average momentum.
          norm_epsilon: batch-norm epsilon.
          **kwargs: `tf_keras.layers.Layer` arguments (name, dtype, ...).
        """
        kernel_initializer, kernel_regularizer, bias_regularizer = _canonical_regularizers(
            kernel_initializer, kernel_regularizer, bias_regularizer
        )
        config = {
            "filters": filters,
            "kernel_size": kernel_size,
            "strides": strides,
            "use_bias": use_bias,
            "use_explicit_padding": use_explicit_padding,
            "activation": activation,
            "kernel_initializer": kernel_initializer,
            "kernel_regularizer": kernel_regularizer,
            "bias_regularizer": bias_regularizer,
            "use_normalization": use_normalization,
            "use_sync_bn": use_sync_bn,
            "norm_momentum": norm_momentum,
            "norm_epsilon": norm_epsilon,
        }
        super().__init__(config, **kwargs)
        self._explicit_pad = use_explicit_padding and kernel_size > 1

    def build(self, input_shape: tf.TensorShape) -> None:
        cfg = self._config_dict
        if self._explicit_pad:
            self._pad = tf_keras.layers.ZeroPadding2D((cfg["kernel_size"] - 1) // 2)
        self._conv0 = self._conv(
            cfg["filters"],
            kernel_size=cfg["kernel_size"],
            strides=cfg["strides"],
            use_bias=cfg["use_bias"],
            padding="valid" if self._explicit_pad else "same",
        )
        if cfg["use_normalization"]:
            self._norm0 = self._batch_norm()
        self._activation_layer = nn_layers.get_activation(cfg["activation"], use_keras_layer=True)
        super().build(input_shape)

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        x = self._pad(inputs) if self._explicit_pad else inputs
        x = self._conv0(x)
        if self._config_dict["use_normalization"]:
            x = self._norm0(x)
        return self._activation_layer(x)

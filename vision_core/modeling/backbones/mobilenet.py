"""MobileNet backbones (Model Garden's `official/vision/modeling/backbones/mobilenet.py`).

`MobileNet(model_id=...)` builds MobileNetV1, V2, V3 Large/Small/EdgeTPU and the
multi-hardware MobileNetMultiAVG/MAX with the layers, variable order and parameter counts of
Model Garden. It returns the block outputs marked as endpoints under levels '2'.. (stride 4 and
up) and, under the next level, the final features (for V2 the 1280-channel 1x1 conv at stride 32;
for the V3 and Multi models the pooled 1x1 head). Unlike Model Garden, `output_specs` lists that
last level too.

With `output_stride` the network stops downsampling at that stride and dilates the later
depthwise convs instead; endpoints past it then share the level of the output stride.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import tensorflow as tf
import tf_keras

from vision_core.modeling.backbones.registry import register_backbone_builder
from vision_core.modeling.backbones.resnet import (
    DEFAULT_INPUT_SPECS,
    as_input_spec,
    check_backbone_type,
    input_spec_config,
)
from vision_core.modeling.layers import nn_blocks, nn_layers
from vision_core.modeling.layers.nn_blocks_mobile import Conv2DBNBlock

__all__ = ["MOBILENET_SPECS", "BlockSpec", "Conv2DBNBlock", "MobileNet", "block_spec_decoder"]


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One layer of a MobileNet (Model Garden's `mobilenet.BlockSpec` fields and defaults).

    `block_fn` is 'convbn' (`Conv2DBNBlock`), 'depsepconv' (`DepthwiseSeparableConvBlock`),
    'invertedbottleneck' (`InvertedBottleneckBlock`) or 'gpooling' (global average pooling
    that keeps the spatial axes). `filters` is before width scaling.
    """

    block_fn: str = "convbn"
    kernel_size: int | None = 3
    strides: int | None = 1
    filters: float | None = 32
    use_bias: bool = False
    use_normalization: bool = True
    activation: str = "relu6"
    expand_ratio: float | None = 6.0
    se_ratio: float | None = None
    use_depthwise: bool = True
    use_residual: bool = True
    is_output: bool = True


# Short constructors keep the tables below readable; `out` marks an endpoint.
def _conv(
    k: int, s: int, f: int, act: str = "relu6", bn: bool = True, bias: bool = False
) -> BlockSpec:
    return BlockSpec("convbn", k, s, f, bias, bn, act, None, None, is_output=False)


def _dsc(k: int, s: int, f: int, out: bool = False) -> BlockSpec:
    return BlockSpec("depsepconv", k, s, f, is_output=out)


def _ib(
    k: int,
    s: int,
    f: int,
    e: float,
    act: str = "relu6",
    se: float | None = None,
    dw: bool = True,
    res: bool = True,
    out: bool = False,
) -> BlockSpec:
    return BlockSpec(
        "invertedbottleneck",
        k,
        s,
        f,
        activation=act,
        expand_ratio=e,
        se_ratio=se,
        use_depthwise=dw,
        use_residual=res,
        is_output=out,
    )


_POOL = BlockSpec("gpooling", None, None, None, None, None, None, None, None, is_output=False)
_HS = "hard_swish"

# MobileNetV1 (Howard et al., 2017, arXiv:1704.04861).
_V1 = [
    _conv(3, 2, 32),
    _dsc(3, 1, 64),
    _dsc(3, 2, 128),
    _dsc(3, 1, 128, out=True),
    _dsc(3, 2, 256),
    _dsc(3, 1, 256, out=True),
    _dsc(3, 2, 512),
    *[_dsc(3, 1, 512)] * 4,
    _dsc(3, 1, 512, out=True),
    _dsc(3, 2, 1024),
    _dsc(3, 1, 1024, out=True),
]

# MobileNetV2 (Sandler et al., 2018, arXiv:1801.04381).
_V2 = [
    _conv(3, 2, 32),
    _ib(3, 1, 16, 1.0),
    _ib(3, 2, 24, 6.0),
    _ib(3, 1, 24, 6.0, out=True),
    _ib(3, 2, 32, 6.0),
    _ib(3, 1, 32, 6.0),
    _ib(3, 1, 32, 6.0, out=True),
    _ib(3, 2, 64, 6.0),
    *[_ib(3, 1, 64, 6.0)] * 3,
    *[_ib(3, 1, 96, 6.0)] * 2,
    _ib(3, 1, 96, 6.0, out=True),
    _ib(3, 2, 160, 6.0),
    *[_ib(3, 1, 160, 6.0)] * 2,
    _ib(3, 1, 320, 6.0, out=True),
    _conv(1, 1, 1280),
]

# MobileNetV3 (Howard et al., 2019, arXiv:1905.02244).
_V3_LARGE = [
    _conv(3, 2, 16, _HS),
    _ib(3, 1, 16, 1.0, "relu"),
    _ib(3, 2, 24, 4.0, "relu"),
    _ib(3, 1, 24, 3.0, "relu", out=True),
    _ib(5, 2, 40, 3.0, "relu", 0.25),
    _ib(5, 1, 40, 3.0, "relu", 0.25),
    _ib(5, 1, 40, 3.0, "relu", 0.25, out=True),
    _ib(3, 2, 80, 6.0, _HS),
    _ib(3, 1, 80, 2.5, _HS),
    _ib(3, 1, 80, 2.3, _HS),
    _ib(3, 1, 80, 2.3, _HS),
    _ib(3, 1, 112, 6.0, _HS, 0.25),
    _ib(3, 1, 112, 6.0, _HS, 0.25, out=True),
    _ib(5, 2, 160, 6.0, _HS, 0.25),
    _ib(5, 1, 160, 6.0, _HS, 0.25),
    _ib(5, 1, 160, 6.0, _HS, 0.25, out=True),
    _conv(1, 1, 960, _HS),
    _POOL,
    _conv(1, 1, 1280, _HS, bn=False, bias=True),
]

_V3_SMALL = [
    _conv(3, 2, 16, _HS),
    _ib(3, 2, 16, 1.0, "relu", 0.25, out=True),
    _ib(3, 2, 24, 72.0 / 16, "relu"),
    _ib(3, 1, 24, 88.0 / 24, "relu", out=True),
    _ib(5, 2, 40, 4.0, _HS, 0.25),
    _ib(5, 1, 40, 6.0, _HS, 0.25),
    _ib(5, 1, 40, 6.0, _HS, 0.25),
    _ib(5, 1, 48, 3.0, _HS, 0.25),
    _ib(5, 1, 48, 3.0, _HS, 0.25, out=True),
    _ib(5, 2, 96, 6.0, _HS, 0.25),
    _ib(5, 1, 96, 6.0, _HS, 0.25),
    _ib(5, 1, 96, 6.0, _HS, 0.25, out=True),
    _conv(1, 1, 576, _HS),
    _POOL,
    _conv(1, 1, 1024, _HS, bn=False, bias=True),
]


# MobileNetV3-EdgeTPU (TF-slim's mobilenet_v3.py): fused (non-depthwise) blocks at high
# resolution, depthwise blocks later, all ReLU, no SE.
def _etpu(
    k: int, s: int, f: int, e: float, dw: bool, res: bool = True, out: bool = False
) -> BlockSpec:
    return _ib(k, s, f, e, "relu", dw=dw, res=res, out=out)


_V3_EDGETPU = [
    _conv(3, 2, 32, "relu"),
    _etpu(3, 1, 16, 1.0, dw=False),
    _etpu(3, 2, 32, 8.0, dw=False),
    *[_etpu(3, 1, 32, 4.0, dw=False)] * 2,
    _etpu(3, 1, 32, 4.0, dw=False, out=True),
    _etpu(3, 2, 48, 8.0, dw=False),
    *[_etpu(3, 1, 48, 4.0, dw=False)] * 2,
    _etpu(3, 1, 48, 4.0, dw=False, out=True),
    _etpu(3, 2, 96, 8.0, dw=True),
    *[_etpu(3, 1, 96, 4.0, dw=True)] * 3,
    _etpu(3, 1, 96, 8.0, dw=True, res=False),
    *[_etpu(3, 1, 96, 4.0, dw=True)] * 2,
    _etpu(3, 1, 96, 4.0, dw=True, out=True),
    _etpu(5, 2, 160, 8.0, dw=True),
    *[_etpu(5, 1, 160, 4.0, dw=True)] * 3,
    _etpu(3, 1, 192, 8.0, dw=True, out=True),
    _conv(1, 1, 1280, "relu"),
]


# Multi-hardware MobileNets (Chu et al., 2020, arXiv:2008.08178), all ReLU. The last conv has
# batch norm and no bias (quantization-aware training friendly), as in Model Garden.
def _mh(k: int, s: int, f: int, e: float, out: bool = False) -> BlockSpec:
    return _ib(k, s, f, e, "relu", out=out)


_MULTI_MAX = [
    _conv(3, 2, 32, "relu"),
    _mh(3, 2, 32, 3.0, out=True),
    _mh(5, 2, 64, 6.0),
    _mh(3, 1, 64, 2.0),
    _mh(3, 1, 64, 2.0, out=True),
    _mh(5, 2, 128, 6.0),
    _mh(3, 1, 128, 4.0),
    _mh(3, 1, 128, 3.0),
    _mh(3, 1, 128, 3.0),
    _mh(3, 1, 128, 6.0),
    _mh(3, 1, 128, 3.0, out=True),
    _mh(3, 2, 160, 6.0),
    _mh(5, 1, 160, 4.0),
    _mh(3, 1, 160, 5.0),
    _mh(5, 1, 160, 4.0, out=True),
    _conv(1, 1, 960, "relu"),
    _POOL,
    _conv(1, 1, 1280, "relu"),
]

_MULTI_AVG = [
    _conv(3, 2, 32, "relu"),
    _mh(3, 2, 32, 3.0),
    _mh(3, 1, 32, 2.0, out=True),
    _mh(5, 2, 64, 5.0),
    _mh(3, 1, 64, 3.0),
    _mh(3, 1, 64, 2.0),
    _mh(3, 1, 64, 3.0, out=True),
    _mh(5, 2, 128, 6.0),
    *[_mh(3, 1, 128, 3.0)] * 3,
    _mh(3, 1, 160, 6.0),
    _mh(3, 1, 160, 4.0, out=True),
    _mh(3, 2, 192, 6.0),
    *[_mh(5, 1, 192, 4.0)] * 2,
    _mh(5, 1, 192, 4.0, out=True),
    _conv(1, 1, 960, "relu"),
    _POOL,
    _conv(1, 1, 1280, "relu"),
]

MOBILENET_SPECS: dict[str, list[BlockSpec]] = {
    "MobileNetV1": _V1,
    "MobileNetV2": _V2,
    "MobileNetV3Large": _V3_LARGE,
    "MobileNetV3Small": _V3_SMALL,
    "MobileNetV3EdgeTPU": _V3_EDGETPU,
    "MobileNetMultiAVG": _MULTI_AVG,
    "MobileNetMultiMAX": _MULTI_MAX,
}


def block_spec_decoder(
    model_id: str,
    filter_size_scale: float,
    divisible_by: int = 8,
    finegrain_classification_mode: bool = True,
    min_depth: int = 8,
) -> list[BlockSpec]:
    """The block specs of `model_id` with widths scaled by `filter_size_scale`.

    Args:
      model_id: a key of `MOBILENET_SPECS`.
      filter_size_scale: width multiplier (> 0).
      divisible_by: scaled widths are multiples of this (MobileNetV1 uses 1).
      finegrain_classification_mode: keep the last layer's width when shrinking the network
        (`filter_size_scale < 1`), as the MobileNetV2 paper does; ignored for MobileNetV1.
      min_depth: lower bound of every scaled width.

    Returns:
      One `BlockSpec` per layer, with integer `filters`.
    """
    specs = list(MOBILENET_SPECS[model_id])
    if model_id != "MobileNetV1" and finegrain_classification_mode and filter_size_scale < 1.0:
        last = specs[-1]
        specs[-1] = dataclasses.replace(last, filters=last.filters / filter_size_scale)
    return [
        dataclasses.replace(
            spec,
            filters=nn_layers.round_filters(
                spec.filters, filter_size_scale, divisor=divisible_by, min_depth=min_depth
            ),
        )
        if spec.filters
        else spec
        for spec in specs
    ]


def _check_args(model_id: Any, filter_size_scale: float, output_stride: int | None) -> None:
    if model_id not in MOBILENET_SPECS:
        raise ValueError(
            f"model_id: unknown MobileNet {model_id!r}; expected one of "
            f"{', '.join(MOBILENET_SPECS)}"
        )
    if filter_size_scale <= 0:
        raise ValueError(f"filter_size_scale: expected a value > 0, got {filter_size_scale}")
    if output_stride is None:
        return
    if model_id == "MobileNetV1":
        if output_stride not in (8, 16, 32):
            raise ValueError(
                f"output_stride: expected 8, 16, 32 or None for MobileNetV1, got {output_stride}"
            )
    elif output_stride < 1 or (output_stride > 1 and output_stride % 2):
        raise ValueError(
            f"output_stride: expected None, 1 or a positive multiple of 2, got {output_stride}"
        )


@tf_keras.utils.register_keras_serializable(package="Vision")
class MobileNet(tf_keras.Model):
    """MobileNet V1/V2/V3/EdgeTPU/Multi feature extractor.

    Returns {level: features} for the endpoint blocks (stride 2**level) plus the final features
    under the next level; with `output_intermediate_endpoints`, also '<level>/depthwise' (the
    depthwise-conv activations of inverted-bottleneck endpoint blocks).
    """

    def __init__(
        self,
        model_id: str = "MobileNetV2",
        filter_size_scale: float = 1.0,
        input_specs: tf_keras.layers.InputSpec = DEFAULT_INPUT_SPECS,
        norm_momentum: float = 0.99,
        norm_epsilon: float = 0.001,
        kernel_initializer: Any = "VarianceScaling",
        kernel_regularizer: tf_keras.regularizers.Regularizer | None = None,
        bias_regularizer: tf_keras.regularizers.Regularizer | None = None,
        output_stride: int | None = None,
        min_depth: int = 8,
        divisible_by: int = 8,
        stochastic_depth_drop_rate: float = 0.0,
        flat_stochastic_depth_drop_rate: bool = True,
        regularize_depthwise: bool = False,
        use_sync_bn: bool = False,
        finegrain_classification_mode: bool = True,
        output_intermediate_endpoints: bool = False,
        **kwargs: Any,
    ):
        """Initializes a MobileNet.

        Args:
          model_id: one of `MOBILENET_SPECS`: 'MobileNetV1', 'MobileNetV2',
            'MobileNetV3Large', 'MobileNetV3Small', 'MobileNetV3EdgeTPU', 'MobileNetMultiAVG',
            'MobileNetMultiMAX'.
          filter_size_scale: width multiplier of every layer (> 0).
          input_specs: shape of the input images, [None, H, W, C]; H and W may be None.
          norm_momentum: batch-norm moving-average momentum.
          norm_epsilon: batch-norm epsilon.
          kernel_initializer: initializer of every conv kernel.
          kernel_regularizer: regularizer of every conv kernel (e.g. L2 weight decay).
          bias_regularizer: regularizer of conv biases.
          output_stride: None for the plain network; otherwise stop downsampling at this
            stride and dilate later depthwise convs (8, 16 or 32 for MobileNetV1; 1 or a
            multiple of 2 for the others).
          min_depth: lower bound of every scaled width (matters when `filter_size_scale < 1`).
          divisible_by: scaled widths are multiples of this (MobileNetV1 always uses 1).
          stochastic_depth_drop_rate: drop rate of inverted-bottleneck residual branches.
          flat_stochastic_depth_drop_rate: use that rate in every block (Model Garden's
            default); False grows it linearly with the block index up to the rate.
          regularize_depthwise: apply `kernel_regularizer` to depthwise kernels too.
          use_sync_bn: synchronize batch statistics across replicas.
          finegrain_classification_mode: keep the last layer's width when
            `filter_size_scale < 1` (not MobileNetV1).
          output_intermediate_endpoints: also return '<level>/depthwise' features.
          **kwargs: `tf_keras.Model` arguments (name, ...).

        Raises:
          ValueError: `model_id`, `filter_size_scale` or `output_stride` is invalid.
        """
        _check_args(model_id, filter_size_scale, output_stride)
        input_specs = as_input_spec(input_specs)
        kernel_initializer = nn_layers.canonical_initializer(kernel_initializer)
        kernel_regularizer = nn_layers.canonical_regularizer(kernel_regularizer)
        bias_regularizer = nn_layers.canonical_regularizer(bias_regularizer)
        self._config_dict = {
            "model_id": model_id,
            "filter_size_scale": filter_size_scale,
            "input_specs": input_spec_config(input_specs),
            "norm_momentum": norm_momentum,
            "norm_epsilon": norm_epsilon,
            "kernel_initializer": kernel_initializer,
            "kernel_regularizer": kernel_regularizer,
            "bias_regularizer": bias_regularizer,
            "output_stride": output_stride,
            "min_depth": min_depth,
            "divisible_by": divisible_by,
            "stochastic_depth_drop_rate": stochastic_depth_drop_rate,
            "flat_stochastic_depth_drop_rate": flat_stochastic_depth_drop_rate,
            "regularize_depthwise": regularize_depthwise,
            "use_sync_bn": use_sync_bn,
            "finegrain_classification_mode": finegrain_classification_mode,
            "output_intermediate_endpoints": output_intermediate_endpoints,
        }
        self._decoded_specs = block_spec_decoder(
            model_id,
            filter_size_scale,
            divisible_by=self._divisible_by(),
            finegrain_classification_mode=finegrain_classification_mode,
            min_depth=min_depth,
        )
        inputs = tf_keras.Input(shape=input_specs.shape[1:])
        endpoints = self._build_layers(inputs)
        self._output_specs = {lvl: feat.get_shape() for lvl, feat in endpoints.items()}
        super().__init__(inputs=inputs, outputs=endpoints, **kwargs)

    def _divisible_by(self) -> int:
        cfg = self._config_dict
        return 1 if cfg["model_id"] == "MobileNetV1" else cfg["divisible_by"]

    def _build_layers(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        cfg = self._config_dict
        target_stride = cfg["output_stride"]
        common = {
            "kernel_initializer": cfg["kernel_initializer"],
            "kernel_regularizer": cfg["kernel_regularizer"],
            "use_sync_bn": cfg["use_sync_bn"],
            "norm_momentum": cfg["norm_momentum"],
            "norm_epsilon": cfg["norm_epsilon"],
        }
        num_blocks = len(self._decoded_specs)
        current_stride = 1  # product of the strides applied so far
        rate = 1  # dilation that replaces the strides skipped after `output_stride`
        x = inputs
        endpoints: dict[str, tf.Tensor] = {}
        level = 2
        for idx, spec in enumerate(self._decoded_specs):
            block_stride = spec.strides or 1
            if target_stride is not None and current_stride == target_stride:
                layer_stride, layer_rate = 1, rate
                rate *= block_stride
            else:
                layer_stride, layer_rate = block_stride, 1
                current_stride *= block_stride

            if cfg["flat_stochastic_depth_drop_rate"]:
                drop_rate = cfg["stochastic_depth_drop_rate"]
            else:
                drop_rate = nn_layers.get_stochastic_depth_rate(
                    cfg["stochastic_depth_drop_rate"], idx + 1, num_blocks
                )

            intermediate: dict[str, tf.Tensor] = {}
            if spec.block_fn == "convbn":
                x = Conv2DBNBlock(
                    filters=spec.filters,
                    kernel_size=spec.kernel_size,
                    strides=layer_stride,
                    activation=spec.activation,
                    use_bias=spec.use_bias,
                    use_normalization=spec.use_normalization,
                    bias_regularizer=cfg["bias_regularizer"],
                    **common,
                )(x)
            elif spec.block_fn == "depsepconv":
                x = nn_blocks.DepthwiseSeparableConvBlock(
                    filters=spec.filters,
                    kernel_size=spec.kernel_size,
                    strides=layer_stride,
                    activation=spec.activation,
                    dilation_rate=layer_rate,
                    regularize_depthwise=cfg["regularize_depthwise"],
                    **common,
                )(x)
            elif spec.block_fn == "invertedbottleneck":
                # Model Garden's rule, kept so its checkpoints behave the same: the first block
                # whose stride is skipped already uses the rate that includes that stride;
                # later blocks use the rate in effect before their own skipped stride.
                dilation = layer_rate if layer_rate > 1 and spec.kernel_size != 1 else rate
                block = nn_blocks.InvertedBottleneckBlock(
                    in_filters=x.shape[-1],
                    out_filters=spec.filters,
                    expand_ratio=spec.expand_ratio,
                    strides=layer_stride,
                    kernel_size=spec.kernel_size,
                    se_ratio=spec.se_ratio,
                    stochastic_depth_drop_rate=drop_rate,
                    bias_regularizer=cfg["bias_regularizer"],
                    activation=spec.activation,
                    se_gating_activation="hard_sigmoid",
                    expand_se_in_filters=True,
                    dilation_rate=dilation,
                    divisible_by=self._divisible_by(),
                    regularize_depthwise=cfg["regularize_depthwise"],
                    use_depthwise=spec.use_depthwise,
                    use_residual=spec.use_residual,
                    output_intermediate_endpoints=cfg["output_intermediate_endpoints"],
                    **common,
                )
                if cfg["output_intermediate_endpoints"]:
                    x, intermediate = block(x)
                else:
                    x = block(x)
            elif spec.block_fn == "gpooling":
                x = tf_keras.layers.GlobalAveragePooling2D(keepdims=True)(x)
            else:
                raise ValueError(
                    f"block_fn: unknown block type {spec.block_fn!r} at block {idx}; expected "
                    "convbn, depsepconv, invertedbottleneck or gpooling"
                )
            # A named no-op marks each block output (Model Garden's layer names).
            x = tf_keras.layers.Activation("linear", name=f"block_group_{spec.block_fn}_{idx}")(x)

            if spec.is_output:
                endpoints[str(level)] = x
                for key, tensor in intermediate.items():
                    endpoints[f"{level}/{key}"] = tensor
                # Past the output stride every endpoint lands on the same level.
                if current_stride != target_stride:
                    level += 1
        if str(level) in endpoints:
            level += 1
        endpoints[str(level)] = x
        return endpoints

    def get_config(self) -> dict[str, Any]:
        return nn_layers.serializable_config(self._config_dict)

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> MobileNet:
        return cls(**config)

    @property
    def output_specs(self) -> dict[str, tf.TensorShape]:
        """{level: TensorShape([None, h, w, c])} of every output, including the last level."""
        return self._output_specs


@register_backbone_builder("mobilenet")
def build_mobilenet(
    input_specs: tf_keras.layers.InputSpec,
    backbone_config: Any,
    norm_activation_config: Any,
    l2_regularizer: tf_keras.regularizers.Regularizer | None = None,
) -> tf_keras.Model:
    """Builds a `MobileNet` from a backbone config (nested `type: mobilenet` +
    `mobilenet: {...}`, or flat) and a norm/activation config.

    The activation of the norm/activation config is not used: MobileNet activations are part
    of each architecture. Missing fields take the `MobileNet` config defaults.
    """
    cfg = check_backbone_type(backbone_config, "mobilenet")
    return MobileNet(
        model_id=getattr(cfg, "model_id", "MobileNetV2"),
        filter_size_scale=getattr(cfg, "filter_size_scale", 1.0),
        input_specs=input_specs,
        stochastic_depth_drop_rate=getattr(cfg, "stochastic_depth_drop_rate", 0.0),
        flat_stochastic_depth_drop_rate=getattr(cfg, "flat_stochastic_depth_drop_rate", True),
        output_stride=getattr(cfg, "output_stride", None),
        output_intermediate_endpoints=getattr(cfg, "output_intermediate_endpoints", False),
        use_sync_bn=getattr(norm_activation_config, "use_sync_bn", False),
        norm_momentum=getattr(norm_activation_config, "norm_momentum", 0.99),
        norm_epsilon=getattr(norm_activation_config, "norm_epsilon", 0.001),
        kernel_regularizer=l2_regularizer,
    )

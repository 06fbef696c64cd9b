"""ResNet and ResNet-RS backbones (Model Garden's `official/vision/modeling/backbones/resnet.py`).

`ResNet(model_id=50)` returns the feature pyramid {'2': stride 4, '3': 8, '4': 16, '5': 32}
with the same layers, variable shapes and parameter counts as Model Garden (see the golden
figures in the tests). Two extensions serve the segmentation tutorial and the paper:

- `output_stride=8|16` trades the last strides for dilation, exactly as `DilatedResNet` does:
  the final (2048-channel for ResNet-50) features come back under the key log2(output_stride),
  and the levels below stay as they are.
- `use_first_projection=False` drops the 1x1 projection that Model Garden puts in the first
  block of ResNet-10/18/26/34 (see tensorflow/models#10583), giving the paper's architecture.

The stem and block-group code here is shared with `resnet_deeplab.DilatedResNet`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf
import tf_keras

from vision_core.hyperparams import get_subconfig
from vision_core.modeling.backbones.registry import register_backbone_builder
from vision_core.modeling.layers import nn_blocks, nn_layers

# (block type, filters, repeats) of the four stages, levels 2..5.
RESNET_SPECS: dict[int, list[tuple[str, int, int]]] = {
    10: [("residual", 64, 1), ("residual", 128, 1), ("residual", 256, 1), ("residual", 512, 1)],
    18: [("residual", 64, 2), ("residual", 128, 2), ("residual", 256, 2), ("residual", 512, 2)],
    26: [("residual", 64, 3), ("residual", 128, 3), ("residual", 256, 3), ("residual", 512, 3)],
    34: [("residual", 64, 3), ("residual", 128, 4), ("residual", 256, 6), ("residual", 512, 3)],
    50: [
        ("bottleneck", 64, 3),
        ("bottleneck", 128, 4),
        ("bottleneck", 256, 6),
        ("bottleneck", 512, 3),
    ],
    101: [
        ("bottleneck", 64, 3),
        ("bottleneck", 128, 4),
        ("bottleneck", 256, 23),
        ("bottleneck", 512, 3),
    ],
    152: [
        ("bottleneck", 64, 3),
        ("bottleneck", 128, 8),
        ("bottleneck", 256, 36),
        ("bottleneck", 512, 3),
    ],
    200: [
        ("bottleneck", 64, 3),
        ("bottleneck", 128, 24),
        ("bottleneck", 256, 36),
        ("bottleneck", 512, 3),
    ],
    270: [
        ("bottleneck", 64, 4),
        ("bottleneck", 128, 29),
        ("bottleneck", 256, 53),
        ("bottleneck", 512, 4),
    ],
    350: [
        ("bottleneck", 64, 4),
        ("bottleneck", 128, 36),
        ("bottleneck", 256, 72),
        ("bottleneck", 512, 4),
    ],
    420: [
        ("bottleneck", 64, 4),
        ("bottleneck", 128, 44),
        ("bottleneck", 256, 87),
        ("bottleneck", 512, 4),
    ],
}

_BLOCK_FNS = {"residual": nn_blocks.ResidualBlock, "bottleneck": nn_blocks.BottleneckBlock}
STEM_TYPES = ("v0", "v1")
# Any image size, RGB. InputSpec is never mutated, so one shared default is safe.
DEFAULT_INPUT_SPECS = tf_keras.layers.InputSpec(shape=[None, None, None, 3])
OUTPUT_STRIDES = (4, 8, 16, 32)
_CLASSIFIER_HINT = (
    "vision_core backbones return feature maps only; for a classifier wrap the backbone in "
    "vision_core.modeling.classification_model.ClassificationModel(backbone=..., num_classes=...)"
)


# --------------------------------------------------------------------- shared with DilatedResNet
def as_input_spec(value: Any) -> tf_keras.layers.InputSpec:
    """Accepts an `InputSpec`, or the dict `input_spec_config` makes of one (found in configs
    read back from JSON or a SavedModel)."""
    if isinstance(value, tf_keras.layers.InputSpec):
        return value
    if isinstance(value, Mapping) and "shape" in value:
        return tf_keras.layers.InputSpec(shape=value["shape"], dtype=value.get("dtype"))
    raise ValueError(
        f"input_specs: expected a tf_keras.layers.InputSpec or {{'shape': [...]}}, got {value!r}"
    )


def input_spec_config(spec: tf_keras.layers.InputSpec) -> dict[str, Any]:
    """A plain, JSON-ready form of `spec` for `get_config` (Keras' own form of an InputSpec
    does not survive the SavedModel metadata round trip)."""
    shape = None if spec.shape is None else list(spec.shape)
    return {"shape": shape, "dtype": spec.dtype}


def check_model_id(model_id: Any) -> list[tuple[str, int, int]]:
    """The stage specs of `model_id`, or a ValueError listing the valid ids."""
    try:
        return RESNET_SPECS[int(model_id)]
    except (KeyError, TypeError, ValueError):
        raise ValueError(
            f"model_id: unknown ResNet depth {model_id!r}; expected one of "
            f"{', '.join(str(k) for k in RESNET_SPECS)}"
        ) from None


def check_output_stride(output_stride: Any, allow_none: bool) -> None:
    """Raises a ValueError naming `output_stride` unless it is one of `OUTPUT_STRIDES` (or None
    when `allow_none`)."""
    if output_stride is None and allow_none:
        return
    if output_stride not in OUTPUT_STRIDES:
        allowed = ", ".join(str(s) for s in OUTPUT_STRIDES)
        raise ValueError(
            f"output_stride: expected one of {allowed}{' or None' if allow_none else ''}, "
            f"got {output_stride!r}"
        )


@dataclasses.dataclass(frozen=True)
class LayerSettings:
    """Conv/norm/activation settings every layer of a ResNet shares."""

    activation: Any = "relu"
    use_sync_bn: bool = False
    norm_momentum: float = 0.99
    norm_epsilon: float = 0.001
    kernel_initializer: Any = "VarianceScaling"
    kernel_regularizer: Any = None
    bias_regularizer: Any = None
    bn_trainable: bool = True

    def conv_bn_act(self, x: tf.Tensor, filters: int, kernel_size: int, strides: int) -> tf.Tensor:
        """Bias-free conv ('same' padding), batch norm, activation layer."""
        x = tf_keras.layers.Conv2D(
            filters=filters,
            kernel_size=kernel_size,
            strides=strides,
            use_bias=False,
            padding="same",
            kernel_initializer=nn_layers.clone_initializer(self.kernel_initializer),
            kernel_regularizer=self.kernel_regularizer,
            bias_regularizer=self.bias_regularizer,
        )(x)
        x = nn_layers.get_norm_layer(self.use_sync_bn)(
            axis=nn_layers.get_bn_axis(),
            momentum=self.norm_momentum,
            epsilon=self.norm_epsilon,
            trainable=self.bn_trainable,
        )(x)
        return nn_layers.get_activation(self.activation, use_keras_layer=True)(x)

    def block_kwargs(self) -> dict[str, Any]:
        return {
            "kernel_initializer": self.kernel_initializer,
            "kernel_regularizer": self.kernel_regularizer,
            "bias_regularizer": self.bias_regularizer,
            "activation": self.activation,
            "use_sync_bn": self.use_sync_bn,
            "norm_momentum": self.norm_momentum,
            "norm_epsilon": self.norm_epsilon,
            "bn_trainable": self.bn_trainable,
        }


def build_stem(
    inputs: tf.Tensor,
    settings: LayerSettings,
    stem_type: str,
    v0_filters: int,
    v1_filters: Sequence[int],
    replace_stem_max_pool: bool,
    pool_conv_filters: int,
) -> tf.Tensor:
    """The stride-4 stem: 7x7 conv (v0) or three 3x3 convs (v1, ResNet-D), then a stride-2 max
    pool or, with `replace_stem_max_pool`, a stride-2 3x3 conv."""
    if stem_type == "v0":
        x = settings.conv_bn_act(inputs, v0_filters, 7, 2)
    elif stem_type == "v1":
        x = settings.conv_bn_act(inputs, v1_filters[0], 3, 2)
        x = settings.conv_bn_act(x, v1_filters[1], 3, 1)
        x = settings.conv_bn_act(x, v1_filters[2], 3, 1)
    else:
        raise ValueError(f"stem_type: expected one of {', '.join(STEM_TYPES)}, got {stem_type!r}")
    if replace_stem_max_pool:
        return settings.conv_bn_act(x, pool_conv_filters, 3, 2)
    return tf_keras.layers.MaxPool2D(pool_size=3, strides=2, padding="same")(x)


def stage_plan(num_stages: int, output_stride: int) -> list[tuple[int, int]]:
    """(stride, dilation) of each block group for a target output stride.

    Groups up to level log2(output_stride) downsample as usual (the first one keeps the stem's
    resolution); later groups keep stride 1 and double the dilation each time, starting at 2.
    """
    last_strided = int(math.log2(output_stride)) - 2
    plan = []
    for i in range(num_stages):
        if i <= last_strided:
            plan.append((1 if i == 0 else 2, 1))
        else:
            plan.append((1, 2 ** (i - last_strided)))
    return plan


def build_block_groups(
    x: tf.Tensor,
    specs: Sequence[tuple[str, int, int]],
    settings: LayerSettings,
    *,
    output_stride: int = 32,
    last_stage_repeats: int = 1,
    multigrid: Sequence[int] | None = None,
    depth_multiplier: float = 1.0,
    se_ratio: float | None = None,
    resnetd_shortcut: bool = False,
    init_stochastic_depth_rate: float | None = 0.0,
    use_first_projection: bool = True,
) -> dict[str, tf.Tensor]:
    """Stacks the ResNet block groups and returns the feature pyramid.

    Args:
      x: the stem output.
      specs: the four (block type, filters, repeats) stage specs.
      settings: conv/norm/activation settings.
      output_stride: 32 for the plain network; 4, 8 or 16 replace later strides by dilation.
      last_stage_repeats: how many times the last stage is stacked (DeepLab).
      multigrid: per-block dilation multipliers of the last stage(s); length = its repeats.
      depth_multiplier: channel multiplier of every group.
      se_ratio: squeeze-and-excitation ratio of every block.
      resnetd_shortcut: ResNet-D projection shortcuts.
      init_stochastic_depth_rate: stochastic depth rate reached at the last group.
      use_first_projection: keep the projection shortcut in the first block of the first
        group of basic-block networks (Model Garden); False gives the paper's identity.

    Returns:
      {level: features} for the strided groups, and the final features under
      str(log2(output_stride)), which replaces that level's entry when dilation is used.
    """
    last_repeats = specs[-1][2]
    if multigrid is not None and len(multigrid) != last_repeats:
        raise ValueError(
            f"multigrid: expected {last_repeats} values (one per block of the last stage), "
            f"got {list(multigrid)}"
        )
    if last_stage_repeats < 1:
        raise ValueError(f"last_stage_repeats: expected an int >= 1, got {last_stage_repeats}")

    num_stages = len(specs) - 1 + last_stage_repeats
    endpoints = {}
    for i, (stride, dilation) in enumerate(stage_plan(num_stages, output_stride)):
        block_type, filters, repeats = specs[min(i, len(specs) - 1)]
        block_fn = _BLOCK_FNS[block_type]
        grid = multigrid if (multigrid is not None and i >= len(specs) - 1) else [1] * repeats
        first_projection = use_first_projection or block_type != "residual" or i > 0
        common = {
            "filters": int(filters * depth_multiplier),
            "se_ratio": se_ratio,
            "resnetd_shortcut": resnetd_shortcut,
            "stochastic_depth_drop_rate": nn_layers.get_stochastic_depth_rate(
                init_stochastic_depth_rate, i + 2, num_stages + 1
            ),
            **settings.block_kwargs(),
        }
        for j in range(repeats):
            x = block_fn(
                strides=stride if j == 0 else 1,
                dilation_rate=dilation * grid[j],
                use_projection=first_projection if j == 0 else False,
                **common,
            )(x)
        # A named no-op marks the group output (and matches Model Garden's layer sequence).
        x = tf_keras.layers.Activation("linear", name=f"block_group_l{i + 2}")(x)
        if dilation == 1:
            endpoints[str(i + 2)] = x
    endpoints[str(int(math.log2(output_stride)))] = x
    return endpoints


# ----------------------------------------------------------------------------------- ResNet
@tf_keras.utils.register_keras_serializable(package="Vision")
class ResNet(tf_keras.Model):
    """ResNet (He et al., 2015) and ResNet-RS (Bello et al., 2021) feature extractor.

    Returns {'2'..'5': [B, H/2^l, W/2^l, C_l]} (C = 64..512 times 4 for bottleneck models,
    times `depth_multiplier`), or fewer levels with `output_stride` 8/16.
    """

    def __init__(
        self,
        model_id: int,
        input_specs: tf_keras.layers.InputSpec = DEFAULT_INPUT_SPECS,
        depth_multiplier: float = 1.0,
        stem_type: str = "v0",
        resnetd_shortcut: bool = False,
        replace_stem_max_pool: bool = False,
        se_ratio: float | None = None,
        init_stochastic_depth_rate: float = 0.0,
        scale_stem: bool = True,
        activation: str = "relu",
        use_sync_bn: bool = False,
        norm_momentum: float = 0.99,
        norm_epsilon: float = 0.001,
        kernel_initializer: Any = "VarianceScaling",
        kernel_regularizer: tf_keras.regularizers.Regularizer | None = None,
        bias_regularizer: tf_keras.regularizers.Regularizer | None = None,
        bn_trainable: bool = True,
        use_first_projection: bool = True,
        output_stride: int | None = None,
        include_top: bool = False,
        **kwargs: Any,
    ):
        """Initializes a ResNet.

        Args:
          model_id: depth, one of `RESNET_SPECS` (10, 18, 26, 34, 50, 101, 152, 200, 270, 350,
            420).
          input_specs: shape of the input images, [None, H, W, C]; H and W may be None.
          depth_multiplier: channel multiplier of every layer (ResNet-RS "width multiplier").
          stem_type: 'v0' (7x7 conv) or 'v1' (three 3x3 convs, ResNet-D).
          resnetd_shortcut: ResNet-D shortcuts (average pool + 1x1 conv) in bottleneck blocks.
          replace_stem_max_pool: replace the stem max pool by a stride-2 3x3 conv.
          se_ratio: squeeze-and-excitation ratio of every block; None or 0 disables it.
          init_stochastic_depth_rate: stochastic depth rate reached at the last group.
          scale_stem: apply `depth_multiplier` to the stem convs too.
          activation: activation name used everywhere.
          use_sync_bn: synchronize batch statistics across replicas.
          norm_momentum: batch-norm moving-average momentum.
          norm_epsilon: batch-norm epsilon.
          kernel_initializer: initializer of every conv kernel.
          kernel_regularizer: regularizer of every conv kernel (e.g. L2 weight decay).
          bias_regularizer: regularizer of conv biases.
          bn_trainable: whether batch-norm layers train.
          use_first_projection: Model Garden's name. True (default, checkpoint parity) keeps
            the projection conv in the first block of ResNet-10/18/26/34; False is the paper's
            identity shortcut. Bottleneck models always project there.
          output_stride: None or 32 for the plain network; 4, 8 or 16 use dilation in the later
            groups and return the final features under key str(log2(output_stride)).
          include_top: must be False: this is a feature extractor.
          **kwargs: `tf_keras.Model` arguments (name, ...).

        Raises:
          ValueError: an argument is outside its allowed values, or `include_top=True`.
        """
        if include_top:
            raise ValueError(f"ResNet(include_top=True) is not supported: {_CLASSIFIER_HINT}")
        specs = check_model_id(model_id)
        check_output_stride(output_stride, allow_none=True)
        input_specs = as_input_spec(input_specs)
        # Configs read back from JSON or a SavedModel hold these in serialized form.
        kernel_initializer = nn_layers.canonical_initializer(kernel_initializer)
        kernel_regularizer = nn_layers.canonical_regularizer(kernel_regularizer)
        bias_regularizer = nn_layers.canonical_regularizer(bias_regularizer)
        self._config_dict = {
            "model_id": model_id,
            "input_specs": input_spec_config(input_specs),
            "depth_multiplier": depth_multiplier,
            "stem_type": stem_type,
            "resnetd_shortcut": resnetd_shortcut,
            "replace_stem_max_pool": replace_stem_max_pool,
            "se_ratio": se_ratio,
            "init_stochastic_depth_rate": init_stochastic_depth_rate,
            "scale_stem": scale_stem,
            "activation": activation,
            "use_sync_bn": use_sync_bn,
            "norm_momentum": norm_momentum,
            "norm_epsilon": norm_epsilon,
            "kernel_initializer": kernel_initializer,
            "kernel_regularizer": kernel_regularizer,
            "bias_regularizer": bias_regularizer,
            "bn_trainable": bn_trainable,
            "use_first_projection": use_first_projection,
            "output_stride": output_stride,
        }
        settings = LayerSettings(
            activation=activation,
            use_sync_bn=use_sync_bn,
            norm_momentum=norm_momentum,
            norm_epsilon=norm_epsilon,
            kernel_initializer=kernel_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            bn_trainable=bn_trainable,
        )
        stem_multiplier = depth_multiplier if scale_stem else 1.0
        pool_conv_filters = int(64 * depth_multiplier)
        stem_channels = pool_conv_filters if replace_stem_max_pool else int(64 * stem_multiplier)
        first_filters = int(specs[0][1] * depth_multiplier)
        if (
            not use_first_projection
            and specs[0][0] == "residual"
            and stem_channels != first_filters
        ):
            raise ValueError(
                f"use_first_projection=False needs the stem to output as many channels as the "
                f"first block group ({first_filters}); it outputs {stem_channels} "
                f"(depth_multiplier={depth_multiplier}, scale_stem={scale_stem})"
            )

        inputs = tf_keras.Input(shape=input_specs.shape[1:])
        x = build_stem(
            inputs,
            settings,
            stem_type,
            v0_filters=int(64 * stem_multiplier),
            v1_filters=(
                int(32 * stem_multiplier),
                int(32 * stem_multiplier),
                int(64 * stem_multiplier),
            ),
            replace_stem_max_pool=replace_stem_max_pool,
            pool_conv_filters=pool_conv_filters,
        )
        endpoints = build_block_groups(
            x,
            specs,
            settings,
            output_stride=output_stride or 32,
            depth_multiplier=depth_multiplier,
            se_ratio=se_ratio,
            resnetd_shortcut=resnetd_shortcut,
            init_stochastic_depth_rate=init_stochastic_depth_rate,
            use_first_projection=use_first_projection,
        )
        self._output_specs = {level: feat.get_shape() for level, feat in endpoints.items()}
        super().__init__(inputs=inputs, outputs=endpoints, **kwargs)

    def get_config(self) -> dict[str, Any]:
        return nn_layers.serializable_config(self._config_dict)

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> ResNet:
        return cls(**config)

    @property
    def output_specs(self) -> dict[str, tf.TensorShape]:
        """{level: TensorShape([None, h, w, c])} of the outputs."""
        return self._output_specs


def norm_activation_kwargs(norm_activation_config: Any) -> dict[str, Any]:
    """activation/use_sync_bn/norm_momentum/norm_epsilon read from a norm-activation config
    (None or missing fields give Model Garden's defaults)."""
    defaults = {
        "activation": "relu",
        "use_sync_bn": False,
        "norm_momentum": 0.99,
        "norm_epsilon": 0.001,
    }
    return {k: getattr(norm_activation_config, k, v) for k, v in defaults.items()}


def check_backbone_type(backbone_config: Any, expected: str) -> Any:
    """The sub-config to read, after checking that `backbone_config.type` (if set) matches."""
    kind = getattr(backbone_config, "type", None)
    if kind is not None and kind != expected:
        raise ValueError(
            f"backbone.type: the {expected!r} builder got a config of type {kind!r}; "
            f"build it with vision_core.modeling.backbones.factory.build_backbone"
        )
    return get_subconfig(backbone_config)


@register_backbone_builder("resnet")
def build_resnet(
    input_specs: tf_keras.layers.InputSpec,
    backbone_config: Any,
    norm_activation_config: Any,
    l2_regularizer: tf_keras.regularizers.Regularizer | None = None,
) -> tf_keras.Model:
    """Builds a `ResNet` from a backbone config (nested `type: resnet` + `resnet: {...}`, or
    flat) and a norm/activation config. Missing fields take the `ResNet` config defaults."""
    cfg = check_backbone_type(backbone_config, "resnet")
    return ResNet(
        model_id=getattr(cfg, "model_id", 50),
        input_specs=input_specs,
        depth_multiplier=getattr(cfg, "depth_multiplier", 1.0),
        stem_type=getattr(cfg, "stem_type", "v0"),
        resnetd_shortcut=getattr(cfg, "resnetd_shortcut", False),
        replace_stem_max_pool=getattr(cfg, "replace_stem_max_pool", False),
        se_ratio=getattr(cfg, "se_ratio", 0.0),
        init_stochastic_depth_rate=getattr(cfg, "stochastic_depth_drop_rate", 0.0),
        scale_stem=getattr(cfg, "scale_stem", True),
        kernel_regularizer=l2_regularizer,
        bn_trainable=getattr(cfg, "bn_trainable", True),
        use_first_projection=getattr(cfg, "use_first_projection", True),
        output_stride=getattr(cfg, "output_stride", None),
        **norm_activation_kwargs(norm_activation_config),
    )

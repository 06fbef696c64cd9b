"""DilatedResNet: ResNet with DeepLab v3 atrous stages (Model Garden's `resnet_deeplab.py`).

The block groups past level log2(output_stride) keep stride 1 and use dilation 2, 4, ...;
`multigrid` multiplies the dilation of each block of the last stage, and `last_stage_repeats`
stacks extra copies of the last stage (Chen et al., 2017, "Rethinking Atrous Convolution").
The final features are returned under key str(log2(output_stride)) ('3' for stride 8, '4' for
stride 16), next to the strided levels below it.

Differences from `resnet.ResNet` kept from Model Garden: no depth multiplier, and the v1 stem
is 64-64-128 channels wide (ResNet's is 32-32-64).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf
import tf_keras

from vision_core.modeling.backbones import resnet
from vision_core.modeling.backbones.registry import register_backbone_builder
from vision_core.modeling.layers import nn_layers


@tf_keras.utils.register_keras_serializable(package="Vision")
class DilatedResNet(tf_keras.Model):
    """ResNet with dilated last stages for dense prediction (DeepLab v3/v3+ backbones)."""

    def __init__(
        self,
        model_id: int,
        output_stride: int,
        input_specs: tf_keras.layers.InputSpec = resnet.DEFAULT_INPUT_SPECS,
        stem_type: str = "v0",
        resnetd_shortcut: bool = False,
        replace_stem_max_pool: bool = False,
        se_ratio: float | None = None,
        init_stochastic_depth_rate: float = 0.0,
        multigrid: Sequence[int] | None = None,
        last_stage_repeats: int = 1,
        activation: str = "relu",
        use_sync_bn: bool = False,
        norm_momentum: float = 0.99,
        norm_epsilon: float = 0.001,
        kernel_initializer: Any = "VarianceScaling",
        kernel_regularizer: tf_keras.regularizers.Regularizer | None = None,
        bias_regularizer: tf_keras.regularizers.Regularizer | None = None,
        bn_trainable: bool = True,
        **kwargs: Any,
    ):
        """Initializes a DilatedResNet.

        Args:
          model_id: depth, one of `resnet.RESNET_SPECS` (Model Garden lists 50, 101, 152, 200;
            the others work too).
          output_stride: input-to-output resolution ratio: 8 or 16 (4 and 32 also work).
          input_specs: shape of the input images, [None, H, W, C].
          stem_type: 'v0' (7x7 conv) or 'v1' (three 3x3 convs: 64, 64, 128 channels).
          resnetd_shortcut: ResNet-D shortcuts in bottleneck blocks.
          replace_stem_max_pool: replace the stem max pool by a stride-2 3x3 conv.
          se_ratio: squeeze-and-excitation ratio; None or 0 disables it.
          init_stochastic_depth_rate: stochastic depth rate reached at the last group.
          multigrid: dilation multipliers for the blocks of the last stage (and of its
            repeats), e.g. (1, 2, 4); its length must equal that stage's block count.
          last_stage_repeats: number of copies of the last stage.
          activation: activation name used everywhere.
          use_sync_bn: synchronize batch statistics across replicas.
          norm_momentum: batch-norm moving-average momentum.
          norm_epsilon: batch-norm epsilon.
          kernel_initializer: initializer of every conv kernel.
          kernel_regularizer: regularizer of every conv kernel.
          bias_regularizer: regularizer of conv biases.
          bn_trainable: whether batch-norm layers train (our extension; Model Garden: True).
          **kwargs: `tf_keras.Model` arguments (name, ...).

        Raises:
          ValueError: an argument is outside its allowed values.
        """
        specs = resnet.check_model_id(model_id)
        resnet.check_output_stride(output_stride, allow_none=False)
        input_specs = resnet.as_input_spec(input_specs)
        # Configs read back from JSON or a SavedModel hold these in serialized form.
        kernel_initializer = nn_layers.canonical_initializer(kernel_initializer)
        kernel_regularizer = nn_layers.canonical_regularizer(kernel_regularizer)
        bias_regularizer = nn_layers.canonical_regularizer(bias_regularizer)
        self._config_dict = {
            "model_id": model_id,
            "output_stride": output_stride,
            "input_specs": resnet.input_spec_config(input_specs),
            "stem_type": stem_type,
            "resnetd_shortcut": resnetd_shortcut,
            "replace_stem_max_pool": replace_stem_max_pool,
            "se_ratio": se_ratio,
            "init_stochastic_depth_rate": init_stochastic_depth_rate,
            "multigrid": None if multigrid is None else [int(m) for m in multigrid],
            "last_stage_repeats": last_stage_repeats,
            "activation": activation,
            "use_sync_bn": use_sync_bn,
            "norm_momentum": norm_momentum,
            "norm_epsilon": norm_epsilon,
            "kernel_initializer": kernel_initializer,
            "kernel_regularizer": kernel_regularizer,
            "bias_regularizer": bias_regularizer,
            "bn_trainable": bn_trainable,
        }
        settings = resnet.LayerSettings(
            activation=activation,
            use_sync_bn=use_sync_bn,
            norm_momentum=norm_momentum,
            norm_epsilon=norm_epsilon,
            kernel_initializer=kernel_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            bn_trainable=bn_trainable,
        )
        inputs = tf_keras.Input(shape=input_specs.shape[1:])
        x = resnet.build_stem(
            inputs,
            settings,
            stem_type,
            v0_filters=64,
            v1_filters=(64, 64, 128),
            replace_stem_max_pool=replace_stem_max_pool,
            pool_conv_filters=64,
        )
        endpoints = resnet.build_block_groups(
            x,
            specs,
            settings,
            output_stride=output_stride,
            last_stage_repeats=last_stage_repeats,
            multigrid=multigrid,
            se_ratio=se_ratio,
            resnetd_shortcut=resnetd_shortcut,
            init_stochastic_depth_rate=init_stochastic_depth_rate,
        )
        self._output_specs = {level: feat.get_shape() for level, feat in endpoints.items()}
        super().__init__(inputs=inputs, outputs=endpoints, **kwargs)

    def get_config(self) -> dict[str, Any]:
        return nn_layers.serializable_config(self._config_dict)

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> DilatedResNet:
        return cls(**config)

    @property
    def output_specs(self) -> dict[str, tf.TensorShape]:
        """{level: TensorShape([None, h, w, c])} of the outputs."""
        return self._output_specs


@register_backbone_builder("dilated_resnet")
def build_dilated_resnet(
    input_specs: tf_keras.layers.InputSpec,
    backbone_config: Any,
    norm_activation_config: Any,
    l2_regularizer: tf_keras.regularizers.Regularizer | None = None,
) -> tf_keras.Model:
    """Builds a `DilatedResNet` from a backbone config (nested or flat) and a norm/activation
    config. Missing fields take the `DilatedResNet` config defaults."""
    cfg = resnet.check_backbone_type(backbone_config, "dilated_resnet")
    return DilatedResNet(
        model_id=getattr(cfg, "model_id", 50),
        output_stride=getattr(cfg, "output_stride", 16),
        input_specs=input_specs,
        stem_type=getattr(cfg, "stem_type", "v0"),
        resnetd_shortcut=getattr(cfg, "resnetd_shortcut", False),
        replace_stem_max_pool=getattr(cfg, "replace_stem_max_pool", False),
        se_ratio=getattr(cfg, "se_ratio", 0.0),
        init_stochastic_depth_rate=getattr(cfg, "stochastic_depth_drop_rate", 0.0),
        multigrid=getattr(cfg, "multigrid", None),
        last_stage_repeats=getattr(cfg, "last_stage_repeats", 1),
        kernel_regularizer=l2_regularizer,
        **resnet.norm_activation_kwargs(norm_activation_config),
    )

"""Backbone configs (Model Garden's `official/vision/configs/backbones.py` names and defaults)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from vision_core.configs.common import sub
from vision_core.hyperparams import Config, OneOfConfig

ResNetModelId = Literal[10, 18, 26, 34, 50, 101, 152, 200, 270, 350, 420]


@dataclasses.dataclass
class ResNet(Config):
    model_id: ResNetModelId = 50
    depth_multiplier: float = 1.0
    stem_type: Literal["v0", "v1"] = "v0"
    se_ratio: float = 0.0
    stochastic_depth_drop_rate: float = 0.0
    scale_stem: bool = True
    resnetd_shortcut: bool = False
    replace_stem_max_pool: bool = False
    bn_trainable: bool = True


@dataclasses.dataclass
class DilatedResNet(Config):
    model_id: ResNetModelId = 50
    output_stride: Literal[8, 16] = 16
    multigrid: list[int] | None = None
    stem_type: Literal["v0", "v1"] = "v0"
    last_stage_repeats: int = 1
    se_ratio: float = 0.0
    stochastic_depth_drop_rate: float = 0.0
    resnetd_shortcut: bool = False
    replace_stem_max_pool: bool = False


@dataclasses.dataclass
class EfficientNet(Config):
    model_id: Literal["b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7"] = "b0"
    se_ratio: float = 0.0
    stochastic_depth_drop_rate: float = 0.0
    se_inner_activation: str = "relu"


MobileNetModelId = Literal[
    "MobileNetV1",
    "MobileNetV2",
    "MobileNetV3Large",
    "MobileNetV3Small",
    "MobileNetV3EdgeTPU",
    "MobileNetMultiAVG",
    "MobileNetMultiMAX",
]


@dataclasses.dataclass
class MobileNet(Config):
    model_id: MobileNetModelId = "MobileNetV2"
    filter_size_scale: float = 1.0
    stochastic_depth_drop_rate: float = 0.0
    output_stride: int | None = None
    output_intermediate_endpoints: bool = False
    flat_stochastic_depth_drop_rate: bool = True


@dataclasses.dataclass
class Transformer(Config):
    mlp_dim: int = 1
    num_heads: int = 1
    num_layers: int = 1
    attention_dropout_rate: float = 0.0
    dropout_rate: float = 0.0


@dataclasses.dataclass
class VisionTransformer(Config):
    model_name: Literal[
        "vit-ti16",
        "vit-s16",
        "vit-b16",
        "vit-b32",
        "vit-l16",
        "vit-l32",
        "vit-h14",
        "vit-g14",
        "vit-G14",
        "vit-e14",
    ] = "vit-b16"
    pooler: Literal["token", "gap", "none"] = "token"
    representation_size: int = 0
    hidden_size: int = 1
    patch_size: int = 16
    transformer: Transformer = sub(Transformer)
    init_stochastic_depth_rate: float = 0.0
    original_init: bool = True
    pos_embed_shape: list[int] | None = None
    output_encoded_tokens: bool = True
    output_2d_feature_maps: bool = False
    layer_scale_init_value: float = 0.0
    transformer_partition_dims: list[int] | None = None
    output_attention_scores: bool = False


@dataclasses.dataclass
class SpineNet(Config):
    model_id: Literal["49S", "49", "96", "143", "143L", "190"] = "49"
    stochastic_depth_drop_rate: float = 0.0
    min_level: int = 3
    max_level: int = 7


@dataclasses.dataclass
class SpineNetMobile(Config):
    model_id: Literal["49", "49S", "49XS"] = "49"
    stochastic_depth_drop_rate: float = 0.0
    se_ratio: float = 0.2
    expand_ratio: int = 6
    min_level: int = 3
    max_level: int = 7
    use_keras_upsampling_2d: bool = False


@dataclasses.dataclass
class UNet(Config):
    """vision_core's U-Net encoder (not in Model Garden): levels 0..len(filters)-1."""

    filters: list[int] = dataclasses.field(default_factory=lambda: [16, 32, 64, 128, 256])
    num_convs: int = 2
    downsample: Literal["max_pool", "conv"] = "max_pool"


@dataclasses.dataclass
class Backbone(OneOfConfig):
    """`type` selects the backbone; only that sub-config is read."""

    type: str | None = "resnet"
    resnet: ResNet = sub(ResNet)
    dilated_resnet: DilatedResNet = sub(DilatedResNet)
    efficientnet: EfficientNet = sub(EfficientNet)
    mobilenet: MobileNet = sub(MobileNet)
    vit: VisionTransformer = sub(VisionTransformer)
    spinenet: SpineNet = sub(SpineNet)
    spinenet_mobile: SpineNetMobile = sub(SpineNetMobile)
    unet: UNet = sub(UNet)

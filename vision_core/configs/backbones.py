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
class Backbone(OneOfConfig):
    """`type` selects the backbone; only that sub-config is read."""

    type: str | None = "resnet"
    resnet: ResNet = sub(ResNet)
    dilated_resnet: DilatedResNet = sub(DilatedResNet)

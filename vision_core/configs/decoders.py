"""Decoder configs (Model Garden's `official/vision/configs/decoders.py` names and defaults)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from vision_core.configs.common import sub
from vision_core.hyperparams import Config, OneOfConfig


@dataclasses.dataclass
class Identity(Config):
    pass


@dataclasses.dataclass
class FPN(Config):
    num_filters: int = 256
    fusion_type: Literal["sum", "concat"] = "sum"
    use_separable_conv: bool = False
    use_keras_layer: bool = False


@dataclasses.dataclass
class NASFPN(Config):
    num_filters: int = 256
    num_repeats: int = 5
    use_separable_conv: bool = False


@dataclasses.dataclass
class ASPP(Config):
    level: int = 4
    dilation_rates: list[int] = dataclasses.field(default_factory=list)
    dropout_rate: float = 0.0
    num_filters: int = 256
    use_depthwise_convolution: bool = False
    pool_kernel_size: list[int] | None = None
    spp_layer_version: Literal["v1", "v2"] = "v1"
    output_tensor: bool = False


@dataclasses.dataclass
class UNet(Config):
    """vision_core's U-Net decoder (not in Model Garden): decodes down to `model.min_level`."""

    num_filters: list[int] | None = None
    num_convs: int = 2
    upsample: Literal["nearest", "transpose"] = "nearest"


@dataclasses.dataclass
class Decoder(OneOfConfig):
    type: str | None = "identity"
    identity: Identity = sub(Identity)
    fpn: FPN = sub(FPN)
    nasfpn: NASFPN = sub(NASFPN)
    aspp: ASPP = sub(ASPP)
    unet: UNet = sub(UNet)

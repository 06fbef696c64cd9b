"""Decoders (necks): FPN, NAS-FPN, ASPP, U-Net, and the decoder factory
(`official.vision.modeling.decoders`)."""

from vision_core.modeling.decoders import aspp, factory, fpn, nasfpn, unet
from vision_core.modeling.decoders.aspp import ASPP
from vision_core.modeling.decoders.fpn import FPN
from vision_core.modeling.decoders.nasfpn import NASFPN
from vision_core.modeling.decoders.unet import UNetDecoder

__all__ = ["ASPP", "FPN", "NASFPN", "UNetDecoder", "aspp", "factory", "fpn", "nasfpn", "unet"]

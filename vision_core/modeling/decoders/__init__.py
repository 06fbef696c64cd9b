"""Decoders (necks): FPN and ASPP, and the decoder factory (`official.vision.modeling.decoders`)."""

from vision_core.modeling.decoders import aspp, factory, fpn
from vision_core.modeling.decoders.aspp import ASPP
from vision_core.modeling.decoders.fpn import FPN

__all__ = ["ASPP", "FPN", "aspp", "factory", "fpn"]

"""Backbones: image -> {level: features} feature pyramids with `output_specs`.

`factory.build_backbone` builds one from a config; importing the factory registers every
built-in backbone.
"""

from vision_core.modeling.backbones import factory
from vision_core.modeling.backbones.efficientnet import EfficientNet
from vision_core.modeling.backbones.mobilenet import MobileNet
from vision_core.modeling.backbones.resnet import ResNet
from vision_core.modeling.backbones.resnet_deeplab import DilatedResNet
from vision_core.modeling.backbones.spinenet import SpineNet
from vision_core.modeling.backbones.spinenet_mobile import SpineNetMobile
from vision_core.modeling.backbones.unet import UNetEncoder
from vision_core.modeling.backbones.vit import VisionTransformer

__all__ = [
    "DilatedResNet",
    "EfficientNet",
    "MobileNet",
    "ResNet",
    "SpineNet",
    "SpineNetMobile",
    "UNetEncoder",
    "VisionTransformer",
    "factory",
]

"""Backbones: image -> {level: features} feature pyramids with `output_specs`.

`factory.build_backbone` builds one from a config; importing the factory registers every
built-in backbone.
"""

from vision_core.modeling.backbones import factory
from vision_core.modeling.backbones.resnet import ResNet
from vision_core.modeling.backbones.resnet_deeplab import DilatedResNet

__all__ = ["DilatedResNet", "ResNet", "factory"]

"""Semantic segmentation experiment configs (Model Garden's `configs/semantic_segmentation.py`)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from vision_core.configs import backbones, decoders
from vision_core.configs.common import (
    DataConfig,
    NormActivation,
    sub,
)
from vision_core.configs.experiment import ExperimentConfig, register_config_factory
from vision_core.hyperparams import Config, ConfigError

FeatureFusion = Literal[
    "deeplabv3plus", "deeplabv3plus_sum_to_merge", "pyramid_fusion", "panoptic_fpn_fusion"
]


@dataclasses.dataclass
class DataConfigSeg(DataConfig):
    output_size: list[int] = dataclasses.field(default_factory=list)
    train_on_crops: bool = False
    crop_size: list[int] = dataclasses.field(default_factory=list)
    resize_eval_groundtruth: bool = True
    gt_is_matting_map: bool = False
    groundtruth_padded_size: list[int] = dataclasses.field(default_factory=list)
    ignore_label: int = 255
    aug_scale_min: float = 1.0
    aug_scale_max: float = 1.0
    aug_rand_hflip: bool = True
    preserve_aspect_ratio: bool = True
    image_feature: str = ""


@dataclasses.dataclass
class SegmentationHead(Config):
    level: int = 3
    num_convs: int = 2
    num_filters: int = 256
    use_depthwise_convolution: bool = False
    prediction_kernel_size: int = 1
    upsample_factor: int = 1
    logit_activation: Literal["sigmoid", "softmax"] | None = None
    feature_fusion: FeatureFusion | None = None
    low_level: int = 2
    low_level_num_filters: int = 48
    num_decoder_filters: int = 256
    decoder_min_level: int | None = None
    decoder_max_level: int | None = None


@dataclasses.dataclass
class MaskScoringHead(Config):
    num_convs: int = 4
    num_filters: int = 128
    fc_input_size: list[int] = dataclasses.field(default_factory=lambda: [8, 8])
    num_fc: int = 2
    fc_dims: int = 1024
    use_depthwise_convolution: bool = False


@dataclasses.dataclass
class SemanticSegmentationModel(Config):
    num_classes: int = 0
    input_size: list[int] = dataclasses.field(default_factory=list)
    min_level: int = 3
    max_level: int = 6
    head: SegmentationHead = sub(SegmentationHead)
    backbone: backbones.Backbone = sub(backbones.Backbone)
    decoder: decoders.Decoder = sub(decoders.Decoder)
    mask_scoring_head: MaskScoringHead | None = None
    norm_activation: NormActivation = sub(NormActivation)

    def _validate(self, path: str) -> None:
        prefix = f"{path}." if path else ""
        if self.input_size and len(self.input_size) != 3:
            raise ConfigError(
                f"{prefix}input_size: expected [height, width, channels], got {self.input_size}"
            )
        if self.min_level > self.max_level:
            raise ConfigError(
                f"{prefix}min_level: {self.min_level} is greater than max_level {self.max_level}"
            )


@dataclasses.dataclass
class Losses(Config):
    loss_weight: float = 1.0
    label_smoothing: float = 0.0
    ignore_label: int = 255
    gt_is_matting_map: bool = False
    class_weights: list[float] = dataclasses.field(default_factory=list)
    l2_weight_decay: float = 0.0
    use_groundtruth_dimension: bool = True
    top_k_percent_pixels: float = 1.0
    mask_scoring_weight: float = 1.0

    def _validate(self, path: str) -> None:
        if not 0.0 < self.top_k_percent_pixels <= 1.0:
            prefix = f"{path}." if path else ""
            raise ConfigError(
                f"{prefix}top_k_percent_pixels: expected a value in (0, 1], "
                f"got {self.top_k_percent_pixels}"
            )


@dataclasses.dataclass
class Evaluation(Config):
    report_per_class_iou: bool = True
    report_train_mean_iou: bool = True


@dataclasses.dataclass
class ExportConfig(Config):
    rescale_output: bool = True


@dataclasses.dataclass
class SemanticSegmentationTask(Config):
    model: SemanticSegmentationModel = sub(SemanticSegmentationModel)
    train_data: DataConfigSeg = dataclasses.field(
        default_factory=lambda: DataConfigSeg(is_training=True)
    )
    validation_data: DataConfigSeg = dataclasses.field(
        default_factory=lambda: DataConfigSeg(is_training=False, drop_remainder=False)
    )
    losses: Losses = sub(Losses)
    evaluation: Evaluation = sub(Evaluation)
    init_checkpoint: str | None = None
    init_checkpoint_modules: str | list[str] = "all"
    export_config: ExportConfig = sub(ExportConfig)
    name: str = "semantic_segmentation"


@dataclasses.dataclass
class SegmentationExperimentConfig(ExperimentConfig):
    task: SemanticSegmentationTask = sub(SemanticSegmentationTask)


@register_config_factory("semantic_segmentation")
def semantic_segmentation() -> SegmentationExperimentConfig:
    """A generic segmentation experiment; fill in data and model from YAML."""
    return SegmentationExperimentConfig()


@register_config_factory("seg_deeplabv3plus_pascal")
def seg_deeplabv3plus_pascal() -> SegmentationExperimentConfig:
    """DeepLabV3+ on a dilated ResNet-101 for Pascal VOC (Model Garden's experiment name)."""
    image_size = [512, 512]
    steps_per_epoch = 10582 // 16
    exp = SegmentationExperimentConfig()
    exp.override(
        {
            "task": {
                "model": {
                    "num_classes": 21,
                    "input_size": image_size + [3],
                    "min_level": 2,
                    "max_level": 4,
                    "backbone": {
                        "type": "dilated_resnet",
                        "dilated_resnet": {
                            "model_id": 101,
                            "output_stride": 16,
                            "multigrid": [1, 2, 4],
                            "stem_type": "v1",
                        },
                    },
                    "decoder": {
                        "type": "aspp",
                        "aspp": {"level": 4, "dilation_rates": [6, 12, 18]},
                    },
                    "head": {
                        "level": 4,
                        "num_convs": 2,
                        "feature_fusion": "deeplabv3plus",
                        "low_level": 2,
                        "low_level_num_filters": 48,
                    },
                    "norm_activation": {"activation": "swish", "norm_momentum": 0.9997},
                },
                "losses": {"l2_weight_decay": 1e-4},
                "train_data": {
                    "output_size": image_size,
                    "global_batch_size": 16,
                    "aug_scale_min": 0.5,
                    "aug_scale_max": 2.0,
                },
                "validation_data": {
                    "output_size": image_size,
                    "global_batch_size": 8,
                    "is_training": False,
                    "resize_eval_groundtruth": False,
                    "groundtruth_padded_size": [512, 512],
                    "drop_remainder": False,
                },
            },
            "trainer": {
                "train_steps": 45 * steps_per_epoch,
                "validation_steps": 1449 // 8,
                "validation_interval": steps_per_epoch,
                "steps_per_loop": steps_per_epoch,
                "summary_interval": steps_per_epoch,
                "checkpoint_interval": steps_per_epoch,
                "best_checkpoint_eval_metric": "mean_iou",
                "optimizer_config": {
                    "optimizer": {"type": "sgd", "sgd": {"momentum": 0.9}},
                    "learning_rate": {
                        "type": "polynomial",
                        "polynomial": {
                            "initial_learning_rate": 0.007,
                            "decay_steps": 45 * steps_per_epoch,
                            "end_learning_rate": 0.0,
                            "power": 0.9,
                        },
                    },
                    "warmup": {"type": "linear", "linear": {"warmup_steps": 5 * steps_per_epoch}},
                },
            },
        }
    )
    return exp


def _shapes_experiment(model: dict, steps: int = 2000) -> SegmentationExperimentConfig:
    """The recipe shared by the shapes experiments: 96x96 inputs, batch 8, SGD with momentum
    and a cosine schedule, trained from scratch (nothing is downloaded); `model` fills in the
    network."""
    image_size = [96, 96]
    exp = SegmentationExperimentConfig()
    exp.override(
        {
            "task": {
                "model": {
                    "num_classes": 4,
                    "input_size": image_size + [3],
                    "norm_activation": {"norm_momentum": 0.9},
                    **model,
                },
                "losses": {"l2_weight_decay": 1e-5, "ignore_label": 255},
                "train_data": {
                    "output_size": image_size,
                    "global_batch_size": 8,
                    "aug_rand_hflip": True,
                    "aug_scale_min": 0.75,
                    "aug_scale_max": 1.25,
                    "seed": 0,
                },
                "validation_data": {
                    "output_size": image_size,
                    "global_batch_size": 16,
                    "is_training": False,
                    "drop_remainder": False,
                },
            },
            "trainer": {
                "train_steps": steps,
                "validation_steps": -1,
                "validation_interval": 1000,
                "steps_per_loop": 100,
                "summary_interval": 100,
                "checkpoint_interval": 500,
                "best_checkpoint_eval_metric": "mean_iou",
                "optimizer_config": {
                    "optimizer": {"type": "sgd", "sgd": {"momentum": 0.9}},
                    "learning_rate": {
                        "type": "cosine",
                        "cosine": {"initial_learning_rate": 0.1, "decay_steps": steps},
                    },
                    "warmup": {"type": "linear", "linear": {"warmup_steps": 50}},
                },
            },
            "runtime": {"seed": 0},
        }
    )
    return exp


@register_config_factory("shapes_segmentation")
def shapes_segmentation() -> SegmentationExperimentConfig:
    """The built-in shapes dataset: a small U-Net (vision_core's `unet` backbone + decoder)
    predicting at full resolution, the default of `make run`.

    Measured on the default pipeline's data (1,000 train / 100 validation images): validation
    mIoU 0.89 after 1,500 steps of a 2,000-step schedule, where the half-width ResNet-18 + FPN
    of `shapes_segmentation_resnet_fpn` reaches 0.65 after 2,000 (0.73 with a wider head): at
    96x96 its stride-4 stem discards the detail that tells the shapes apart. A half-width U-Net
    (8..128 channels) is 3x faster per step but stops at 0.81.
    """
    return _shapes_experiment(
        steps=1500,
        model={
            "min_level": 0,
            "max_level": 4,
            "backbone": {"type": "unet", "unet": {"filters": [16, 32, 64, 128, 256]}},
            "decoder": {"type": "unet", "unet": {"num_convs": 1}},
            "head": {
                "level": 0,
                "num_convs": 0,
                "feature_fusion": None,
                "upsample_factor": 1,
            },
        },
    )


@register_config_factory("shapes_segmentation_resnet_fpn")
def shapes_segmentation_resnet_fpn() -> SegmentationExperimentConfig:
    """The shapes dataset with a half-width ResNet-18 + FPN and a panoptic-FPN-fusion head:
    the Model Garden-style network, faster per step but less accurate at 96x96."""
    return _shapes_experiment(
        {
            "min_level": 2,
            "max_level": 5,
            "backbone": {"type": "resnet", "resnet": {"model_id": 18, "depth_multiplier": 0.5}},
            "decoder": {"type": "fpn", "fpn": {"num_filters": 64}},
            "head": {
                "level": 2,
                "num_convs": 1,
                "num_filters": 64,
                "feature_fusion": "panoptic_fpn_fusion",
                "decoder_min_level": 2,
                "decoder_max_level": 5,
                "upsample_factor": 4,
                "num_decoder_filters": 64,
            },
        }
    )

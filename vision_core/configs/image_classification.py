"""Image classification experiment configs (Model Garden's `configs/image_classification.py`).

Field names and defaults follow Model Garden, so its YAML files and `--params_override` strings
work here. Augmentations Model Garden offers beyond crop and flip (AutoAugment, RandAugment,
random erasing, mixup/cutmix) and multi-label training are not implemented, so their keys are
rejected rather than silently ignored.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Literal

from vision_core.configs import backbones
from vision_core.configs.common import DataConfig as BaseDataConfig
from vision_core.configs.common import NormActivation, sub
from vision_core.configs.experiment import ExperimentConfig, register_config_factory
from vision_core.dataloaders import tf_example_keys as keys
from vision_core.hyperparams import Config, ConfigError

ResizeMethod = Literal[
    "bilinear", "nearest", "bicubic", "area", "lanczos3", "lanczos5", "gaussian", "mitchellcubic"
]


def _prefix(path: str) -> str:
    return f"{path}." if path else ""


@dataclasses.dataclass
class DataConfig(BaseDataConfig):
    """Classification input: TFRecords of `image/encoded` + `image/class/label`."""

    shuffle_buffer_size: int = 10000
    aug_rand_hflip: bool = True
    # Training: a random crop covering `crop_area_range` of the image; evaluation: a centred
    # square of `center_crop_fraction` of the short side. False feeds whole images both ways.
    aug_crop: bool = True
    crop_area_range: list[float] = dataclasses.field(default_factory=lambda: [0.08, 1.0])
    center_crop_fraction: float = 0.875
    tf_resize_method: ResizeMethod = "bilinear"
    image_field_key: str = keys.IMAGE_ENCODED
    label_field_key: str = keys.IMAGE_CLASS_LABEL
    # JPEGs are decoded only inside the crop window; other formats are decoded whole either way.
    decode_jpeg_only: bool = True

    def _validate(self, path: str) -> None:
        prefix = _prefix(path)
        area = list(self.crop_area_range)
        if len(area) != 2 or not 0.0 < area[0] <= area[1] <= 1.0:
            raise ConfigError(
                f"{prefix}crop_area_range: expected [min, max] with 0 < min <= max <= 1, got {area}"
            )
        if not 0.0 < self.center_crop_fraction <= 1.0:
            raise ConfigError(
                f"{prefix}center_crop_fraction: expected a value in (0, 1], "
                f"got {self.center_crop_fraction}"
            )


@dataclasses.dataclass
class ImageClassificationModel(Config):
    num_classes: int = 0
    input_size: list[int] = dataclasses.field(default_factory=list)
    backbone: backbones.Backbone = sub(backbones.Backbone)
    dropout_rate: float = 0.0
    norm_activation: NormActivation = sub(NormActivation)
    # A BatchNormalization layer on the backbone features before global pooling.
    add_head_batch_norm: bool = False
    kernel_initializer: str = "random_uniform"

    def _validate(self, path: str) -> None:
        prefix = _prefix(path)
        if self.input_size and len(self.input_size) != 3:
            raise ConfigError(
                f"{prefix}input_size: expected [height, width, channels], got {self.input_size}"
            )
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ConfigError(
                f"{prefix}dropout_rate: expected a value in [0, 1), got {self.dropout_rate}"
            )
        if self.num_classes < 0:
            raise ConfigError(f"{prefix}num_classes: expected >= 1, got {self.num_classes}")


@dataclasses.dataclass
class Losses(Config):
    loss_weight: float = 1.0
    # True: labels become one-hot vectors and label smoothing applies. False: sparse labels.
    one_hot: bool = True
    label_smoothing: float = 0.0
    l2_weight_decay: float = 0.0
    # Labels are already probability vectors [batch, num_classes] (integer labels are one-hot
    # encoded first), trained with a plain softmax cross-entropy.
    soft_labels: bool = False

    def _validate(self, path: str) -> None:
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(
                f"{_prefix(path)}label_smoothing: expected a value in [0, 1), "
                f"got {self.label_smoothing}"
            )


@dataclasses.dataclass
class Evaluation(Config):
    # Reported as `top_{top_k}_accuracy` beside the top-1 `accuracy`.
    top_k: int = 5

    def _validate(self, path: str) -> None:
        if self.top_k < 1:
            raise ConfigError(f"{_prefix(path)}top_k: expected >= 1, got {self.top_k}")


@dataclasses.dataclass
class ImageClassificationTask(Config):
    model: ImageClassificationModel = sub(ImageClassificationModel)
    train_data: DataConfig = dataclasses.field(default_factory=lambda: DataConfig(is_training=True))
    validation_data: DataConfig = dataclasses.field(
        default_factory=lambda: DataConfig(is_training=False, drop_remainder=False)
    )
    losses: Losses = sub(Losses)
    evaluation: Evaluation = sub(Evaluation)
    init_checkpoint: str | None = None
    init_checkpoint_modules: Literal["all", "backbone"] = "all"
    freeze_backbone: bool = False
    name: str = "image_classification"

    def _validate(self, path: str) -> None:
        num_classes = self.model.num_classes
        # A top-k over fewer than k classes is always right; almost surely a forgotten override.
        if num_classes > 0 and self.evaluation.top_k > num_classes:
            raise ConfigError(
                f"{_prefix(path)}evaluation.top_k: {self.evaluation.top_k} is more than "
                f"model.num_classes ({num_classes}), so top-k accuracy would always be 1; set "
                f"evaluation.top_k to at most {num_classes}"
            )


@dataclasses.dataclass
class ImageClassificationExperimentConfig(ExperimentConfig):
    task: ImageClassificationTask = sub(ImageClassificationTask)


@register_config_factory("image_classification")
def image_classification() -> ImageClassificationExperimentConfig:
    """A generic classification experiment; fill in data and model from YAML."""
    return ImageClassificationExperimentConfig()


IMAGENET_TRAIN_EXAMPLES = 1281167
IMAGENET_VAL_EXAMPLES = 50000
IMAGENET_INPUT_PATH_BASE = "imagenet-2012-tfrecord"


@register_config_factory("resnet_imagenet")
def resnet_imagenet() -> ImageClassificationExperimentConfig:
    """ResNet-50 on ImageNet, 90 epochs at batch 4096 (Model Garden's experiment and values)."""
    train_batch_size = 4096
    eval_batch_size = 4096
    steps_per_epoch = IMAGENET_TRAIN_EXAMPLES // train_batch_size
    # The learning rate scales linearly with the batch: 0.1 per 256 images.
    base_lr = 0.1 * train_batch_size / 256
    exp = ImageClassificationExperimentConfig()
    exp.override(
        {
            "task": {
                "model": {
                    "num_classes": 1001,
                    "input_size": [224, 224, 3],
                    "backbone": {"type": "resnet", "resnet": {"model_id": 50}},
                    "norm_activation": {
                        "norm_momentum": 0.9,
                        "norm_epsilon": 1e-5,
                        "use_sync_bn": False,
                    },
                },
                "losses": {"l2_weight_decay": 1e-4},
                "train_data": {
                    "input_path": os.path.join(IMAGENET_INPUT_PATH_BASE, "train*"),
                    "is_training": True,
                    "global_batch_size": train_batch_size,
                },
                "validation_data": {
                    "input_path": os.path.join(IMAGENET_INPUT_PATH_BASE, "valid*"),
                    "is_training": False,
                    "global_batch_size": eval_batch_size,
                    # Model Garden keeps its DataConfig default (True) here.
                    "drop_remainder": True,
                },
            },
            "trainer": {
                "steps_per_loop": steps_per_epoch,
                "summary_interval": steps_per_epoch,
                "checkpoint_interval": steps_per_epoch,
                "train_steps": 90 * steps_per_epoch,
                "validation_steps": IMAGENET_VAL_EXAMPLES // eval_batch_size,
                "validation_interval": steps_per_epoch,
                "optimizer_config": {
                    "optimizer": {"type": "sgd", "sgd": {"momentum": 0.9}},
                    "learning_rate": {
                        "type": "stepwise",
                        "stepwise": {
                            "boundaries": [
                                30 * steps_per_epoch,
                                60 * steps_per_epoch,
                                80 * steps_per_epoch,
                            ],
                            "values": [base_lr, base_lr / 10, base_lr / 100, base_lr / 1000],
                        },
                    },
                    "warmup": {
                        "type": "linear",
                        "linear": {
                            "warmup_steps": 5 * steps_per_epoch,
                            "warmup_learning_rate": 0.0,
                        },
                    },
                },
            },
            "runtime": {"enable_xla": True},
        }
    )
    return exp


@register_config_factory("shapes_classification")
def shapes_classification() -> ImageClassificationExperimentConfig:
    """The built-in shapes dataset labelled by its dominant shape, for 2 CPU cores.

    Three classes (circle, square, triangle). A quarter-width ResNet-18 trained from scratch at
    64x64 with Adam and a cosine schedule: 1,500 steps of batch 32 take about 3 minutes on 2
    cores. Random crops are off (a crop can cut away the shape that decides the label), so only
    flips, which never change it, augment the data.

    Image-level labels are much harder to learn from than masks: on the default shapes images
    (1-4 small objects on textured backgrounds) this network memorizes the training set instead.
    The pipeline config `configs/pipelines/shapes_classification.yaml` therefore draws one larger
    shape per image (`max_objects: 1`, `radius_range: [0.2, 0.4]`) and 5,000 training images.
    """
    image_size = [64, 64]
    steps = 1500
    exp = ImageClassificationExperimentConfig()
    exp.override(
        {
            "task": {
                "model": {
                    "num_classes": 3,
                    "input_size": image_size + [3],
                    "backbone": {
                        "type": "resnet",
                        "resnet": {"model_id": 18, "depth_multiplier": 0.25},
                    },
                    "norm_activation": {"norm_momentum": 0.9},
                },
                "losses": {"l2_weight_decay": 5e-5, "label_smoothing": 0.1},
                "evaluation": {"top_k": 2},
                "train_data": {
                    "global_batch_size": 32,
                    "aug_crop": False,
                    "aug_rand_hflip": True,
                    "shuffle_buffer_size": 2000,
                    "seed": 0,
                },
                "validation_data": {
                    "global_batch_size": 64,
                    "aug_crop": False,
                    "is_training": False,
                    "drop_remainder": False,
                },
            },
            "trainer": {
                "train_steps": steps,
                "validation_steps": -1,
                "validation_interval": 500,
                "steps_per_loop": 100,
                "summary_interval": 100,
                "checkpoint_interval": 500,
                "best_checkpoint_eval_metric": "accuracy",
                "optimizer_config": {
                    "optimizer": {"type": "adam"},
                    "learning_rate": {
                        "type": "cosine",
                        "cosine": {"initial_learning_rate": 0.001, "decay_steps": steps},
                    },
                    "warmup": {"type": "linear", "linear": {"warmup_steps": 50}},
                },
            },
            "runtime": {"seed": 0},
        }
    )
    return exp

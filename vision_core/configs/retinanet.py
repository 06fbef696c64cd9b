"""RetinaNet configs (Model Garden's `official/vision/configs/retinanet.py` names and defaults).

The model part: anchors, head (with attribute heads), detection generator, and the `RetinaNet`
model config that `modeling.factory.build_retinanet` reads.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from vision_core.configs import backbones, decoders
from vision_core.configs.common import DataConfig as BaseDataConfig
from vision_core.configs.common import NormActivation, sub
from vision_core.configs.experiment import ExperimentConfig, register_config_factory
from vision_core.hyperparams import Config, ConfigError


def _prefix(path: str) -> str:
    return f"{path}." if path else ""


@dataclasses.dataclass
class Anchor(Config):
    """Anchors per location = num_scales * len(aspect_ratios); the base anchor of level l is
    `anchor_size * 2**l` pixels wide, scaled by `2**(i / num_scales)` for scale i."""

    num_scales: int = 3
    aspect_ratios: list[float] = dataclasses.field(default_factory=lambda: [0.5, 1.0, 2.0])
    anchor_size: float = 4.0

    def _validate(self, path: str) -> None:
        if self.num_scales < 1:
            raise ConfigError(f"{_prefix(path)}num_scales: expected >= 1, got {self.num_scales}")
        if not self.aspect_ratios or any(r <= 0 for r in self.aspect_ratios):
            raise ConfigError(
                f"{_prefix(path)}aspect_ratios: expected a non-empty list of positive numbers, "
                f"got {self.aspect_ratios}"
            )
        if self.anchor_size <= 0:
            raise ConfigError(f"{_prefix(path)}anchor_size: expected > 0, got {self.anchor_size}")


@dataclasses.dataclass
class AttributeHead(Config):
    """An extra per-anchor prediction. Heads with the same non-empty `prediction_tower_name`
    share one conv tower (built from the first of them); `num_convs` / `num_filters` default to
    the RetinaNet head's."""

    name: str = ""
    type: Literal["regression", "classification"] = "regression"
    size: int = 1
    prediction_tower_name: str = ""
    num_convs: int | None = None
    num_filters: int | None = None


@dataclasses.dataclass
class RetinaNetHead(Config):
    num_convs: int = 4
    num_filters: int = 256
    use_separable_conv: bool = False
    attribute_heads: list[AttributeHead] = dataclasses.field(default_factory=list)
    share_classification_heads: bool = False
    share_level_convs: bool | None = True

    def _validate(self, path: str) -> None:
        seen = set()
        for i, head in enumerate(self.attribute_heads):
            if not head.name or head.name in seen:
                raise ConfigError(
                    f"{_prefix(path)}attribute_heads[{i}].name: expected a unique non-empty "
                    f"name, got {head.name!r}"
                )
            seen.add(head.name)
            if head.prediction_tower_name and self.share_classification_heads:
                raise ConfigError(
                    f"{_prefix(path)}attribute_heads[{i}].prediction_tower_name: cannot be set "
                    "together with share_classification_heads=true"
                )


@dataclasses.dataclass
class TFLitePostProcessing(Config):
    """Settings of the TFLite detection post-processing op (Model Garden's
    `common.TFLitePostProcessingConfig`), read when `nms_version` is 'tflite'."""

    max_detections: int = 200
    max_classes_per_detection: int = 5
    use_regular_nms: bool = False
    nms_score_threshold: float = 0.1
    nms_iou_threshold: float = 0.5
    normalize_anchor_coordinates: bool | None = False
    omit_nms: bool | None = False
    detections_per_class: int | None = 5
    y_scale: float = 1.0
    x_scale: float = 1.0
    w_scale: float = 1.0
    h_scale: float = 1.0


@dataclasses.dataclass
class DetectionGenerator(Config):
    apply_nms: bool = True
    decode_boxes: bool = True
    pre_nms_top_k: int = 5000
    pre_nms_score_threshold: float = 0.05
    nms_iou_threshold: float = 0.5
    max_num_detections: int = 100
    nms_version: Literal["v2", "v1", "batched", "tflite"] = "v2"
    use_cpu_nms: bool = False
    # Soft-NMS (Bodla et al., 2017); Model Garden honours it with nms_version 'v1' only.
    soft_nms_sigma: float | None = None
    tflite_post_processing: TFLitePostProcessing = sub(TFLitePostProcessing)
    # Also return the decoded boxes and scores before NMS.
    return_decoded: bool | None = None
    use_class_agnostic_nms: bool | None = False
    # Box coder scales [y, x, h, w]; None means [1, 1, 1, 1] (Faster R-CNN uses [10, 10, 5, 5]).
    box_coder_weights: list[float] | None = None

    def _validate(self, path: str) -> None:
        prefix = _prefix(path)
        if not 0.0 <= self.nms_iou_threshold <= 1.0:
            raise ConfigError(
                f"{prefix}nms_iou_threshold: expected a value in [0, 1], "
                f"got {self.nms_iou_threshold}"
            )
        for name in ("pre_nms_top_k", "max_num_detections"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{prefix}{name}: expected >= 1, got {getattr(self, name)}")
        if self.box_coder_weights is not None and len(self.box_coder_weights) != 4:
            raise ConfigError(
                f"{prefix}box_coder_weights: expected 4 numbers [y, x, h, w], "
                f"got {self.box_coder_weights}"
            )


@dataclasses.dataclass
class RetinaNet(Config):
    num_classes: int = 0
    input_size: list[int] = dataclasses.field(default_factory=list)
    min_level: int = 3
    max_level: int = 7
    anchor: Anchor = sub(Anchor)
    backbone: backbones.Backbone = dataclasses.field(
        default_factory=lambda: backbones.Backbone(type="resnet")
    )
    decoder: decoders.Decoder = dataclasses.field(
        default_factory=lambda: decoders.Decoder(type="fpn")
    )
    head: RetinaNetHead = sub(RetinaNetHead)
    detection_generator: DetectionGenerator = sub(DetectionGenerator)
    norm_activation: NormActivation = sub(NormActivation)

    def _validate(self, path: str) -> None:
        prefix = _prefix(path)
        if self.input_size and len(self.input_size) != 3:
            raise ConfigError(
                f"{prefix}input_size: expected [height, width, channels], got {self.input_size}"
            )
        if self.min_level > self.max_level:
            raise ConfigError(
                f"{prefix}min_level: {self.min_level} is greater than max_level {self.max_level}"
            )
        if self.num_classes < 0:
            raise ConfigError(f"{prefix}num_classes: expected >= 0, got {self.num_classes}")


# --- task and experiments (Model Garden's RetinaNetTask and registered experiments) -----------


@dataclasses.dataclass
class Parser(Config):
    num_channels: int = 3
    match_threshold: float = 0.5
    unmatched_threshold: float = 0.5
    aug_rand_hflip: bool = False
    aug_scale_min: float = 1.0
    aug_scale_max: float = 1.0
    skip_crowd_during_training: bool = True
    max_num_instances: int = 100

    def _validate(self, path: str) -> None:
        prefix = _prefix(path)
        if not 0.0 < self.aug_scale_min <= 1.0 <= self.aug_scale_max:
            raise ConfigError(
                f"{prefix}aug_scale_min/aug_scale_max: expected 0 < min <= 1 <= max, got "
                f"{self.aug_scale_min}, {self.aug_scale_max}"
            )
        if self.unmatched_threshold > self.match_threshold:
            raise ConfigError(
                f"{prefix}unmatched_threshold: {self.unmatched_threshold} is above "
                f"match_threshold {self.match_threshold}"
            )


@dataclasses.dataclass
class DataDecoder(Config):
    # True: ignore the stored image/source_id and hash the image bytes instead.
    regenerate_source_id: bool = False


@dataclasses.dataclass
class DataConfig(BaseDataConfig):
    """Detection input: TFRecords with Model Garden's image/object/* keys."""

    shuffle_buffer_size: int = 10000
    decoder: DataDecoder = sub(DataDecoder)
    parser: Parser = sub(Parser)


@dataclasses.dataclass
class Losses(Config):
    loss_weight: float = 1.0
    focal_loss_alpha: float = 0.25
    focal_loss_gamma: float = 1.5
    huber_loss_delta: float = 0.1
    box_loss_weight: int | float = 50
    l2_weight_decay: float = 0.0


@dataclasses.dataclass
class ExportConfig(Config):
    output_normalized_coordinates: bool = False
    cast_num_detections_to_float: bool = False
    cast_detection_classes_to_float: bool = False


@dataclasses.dataclass
class RetinaNetTask(Config):
    model: RetinaNet = sub(RetinaNet)
    train_data: DataConfig = dataclasses.field(default_factory=lambda: DataConfig(is_training=True))
    validation_data: DataConfig = dataclasses.field(
        default_factory=lambda: DataConfig(is_training=False, drop_remainder=False)
    )
    losses: Losses = sub(Losses)
    init_checkpoint: str | None = None
    init_checkpoint_modules: Literal["all", "backbone"] = "all"
    # COCO groundtruth JSON of the validation split; None: built from the validation records.
    annotation_file: str | None = None
    per_category_metrics: bool = False
    export_config: ExportConfig = sub(ExportConfig)
    freeze_backbone: bool = False
    name: str = "retinanet"

    def _validate(self, path: str) -> None:
        model = self.model
        for field, data in (
            ("train_data", self.train_data),
            ("validation_data", self.validation_data),
        ):
            if data.parser.num_channels != 3:
                raise ConfigError(
                    f"{_prefix(path)}{field}.parser.num_channels: only 3 (RGB) is supported, "
                    f"got {data.parser.num_channels}"
                )
        if model.input_size and len(model.input_size) != 3:
            raise ConfigError(
                f"{_prefix(path)}model.input_size: expected [height, width, channels], "
                f"got {model.input_size}"
            )


@dataclasses.dataclass
class RetinaNetExperimentConfig(ExperimentConfig):
    task: RetinaNetTask = sub(RetinaNetTask)


COCO_INPUT_PATH_BASE = "coco"
COCO_TRAIN_EXAMPLES = 118287
COCO_VAL_EXAMPLES = 5000


@register_config_factory("retinanet")
def retinanet() -> RetinaNetExperimentConfig:
    """A generic RetinaNet experiment; fill in data and model from YAML."""
    return RetinaNetExperimentConfig()


def _coco_schedule(
    train_batch_size: int, epochs: int, boundaries: tuple[int, int], warmup_steps: int
) -> dict:
    """Model Garden's COCO RetinaNet trainer: SGD, stepwise 0.32/0.032/0.0032 per 256 images."""
    steps_per_epoch = COCO_TRAIN_EXAMPLES // train_batch_size
    scale = train_batch_size / 256.0
    return {
        "train_steps": epochs * steps_per_epoch,
        "validation_steps": COCO_VAL_EXAMPLES // 8,
        "validation_interval": steps_per_epoch,
        "steps_per_loop": steps_per_epoch,
        "summary_interval": steps_per_epoch,
        "checkpoint_interval": steps_per_epoch,
        "optimizer_config": {
            "optimizer": {"type": "sgd", "sgd": {"momentum": 0.9}},
            "learning_rate": {
                "type": "stepwise",
                "stepwise": {
                    "boundaries": [b * steps_per_epoch for b in boundaries],
                    "values": [0.32 * scale, 0.032 * scale, 0.0032 * scale],
                },
            },
            "warmup": {
                "type": "linear",
                "linear": {"warmup_steps": warmup_steps, "warmup_learning_rate": 0.0067},
            },
        },
    }


def _coco_data(train_batch_size: int, scale_min: float, scale_max: float) -> dict:
    return {
        "annotation_file": f"{COCO_INPUT_PATH_BASE}/instances_val2017.json",
        "train_data": {
            "input_path": f"{COCO_INPUT_PATH_BASE}/train*",
            "is_training": True,
            "global_batch_size": train_batch_size,
            "parser": {
                "aug_rand_hflip": True,
                "aug_scale_min": scale_min,
                "aug_scale_max": scale_max,
            },
        },
        "validation_data": {
            "input_path": f"{COCO_INPUT_PATH_BASE}/val*",
            "is_training": False,
            "global_batch_size": 8,
        },
    }


@register_config_factory("retinanet_resnetfpn_coco")
def retinanet_resnetfpn_coco() -> RetinaNetExperimentConfig:
    """RetinaNet ResNet-50-FPN on COCO at 640, 72 epochs at batch 256 (Model Garden's values;
    its ImageNet backbone checkpoint is a GCS path, left to the user's `init_checkpoint`)."""
    exp = RetinaNetExperimentConfig()
    exp.override(
        {
            "runtime": {"mixed_precision_dtype": "bfloat16"},
            "task": {
                "init_checkpoint_modules": "backbone",
                "model": {
                    "num_classes": 91,
                    "input_size": [640, 640, 3],
                    "norm_activation": {"use_sync_bn": False},
                    "min_level": 3,
                    "max_level": 7,
                },
                "losses": {"l2_weight_decay": 1e-4},
                **_coco_data(256, 0.8, 1.2),
            },
            "trainer": _coco_schedule(256, 72, (57, 67), 500),
        }
    )
    return exp


@register_config_factory("retinanet_spinenet_coco")
def retinanet_spinenet_coco() -> RetinaNetExperimentConfig:
    """RetinaNet SpineNet-49 on COCO at 640 (no decoder: SpineNet outputs levels 3-7),
    500 epochs at batch 256 (Model Garden's values)."""
    exp = RetinaNetExperimentConfig()
    exp.override(
        {
            "runtime": {"mixed_precision_dtype": "float32"},
            "task": {
                "model": {
                    "backbone": {
                        "type": "spinenet",
                        "spinenet": {
                            "model_id": "49",
                            "stochastic_depth_drop_rate": 0.2,
                            "min_level": 3,
                            "max_level": 7,
                        },
                    },
                    "decoder": {"type": "identity"},
                    "anchor": {"anchor_size": 3},
                    "norm_activation": {"use_sync_bn": True, "activation": "swish"},
                    "num_classes": 91,
                    "input_size": [640, 640, 3],
                    "min_level": 3,
                    "max_level": 7,
                },
                "losses": {"l2_weight_decay": 4e-5},
                **_coco_data(256, 0.1, 2.0),
            },
            "trainer": _coco_schedule(256, 500, (475, 490), 2000),
        }
    )
    return exp


@register_config_factory("shapes_retinanet")
def shapes_retinanet() -> RetinaNetExperimentConfig:
    """The built-in shapes dataset (circle, square, triangle; class 0 is background) at
    128x128 for 2 CPU cores: a half-width ResNet-18, a 64-channel FPN on levels 3-5 and a
    2-conv RetinaNet head, anchors of 3 x 2^level pixels (24-120 px, the shapes' box sizes).

    Measured on 2,000 training / 200 validation images (boxes 3-65 px, median 35): after 1,100
    steps of a 2,000-step schedule, validation AP 0.715 and AP50 0.916 (pycocotools), so the
    schedule is 1,200 steps.
    """
    steps = 1200
    exp = RetinaNetExperimentConfig()
    exp.override(
        {
            "task": {
                "model": {
                    "num_classes": 4,
                    "input_size": [128, 128, 3],
                    "min_level": 3,
                    "max_level": 5,
                    "anchor": {"anchor_size": 3.0},
                    "backbone": {
                        "type": "resnet",
                        "resnet": {"model_id": 18, "depth_multiplier": 0.5},
                    },
                    "decoder": {"type": "fpn", "fpn": {"num_filters": 64}},
                    "head": {"num_convs": 2, "num_filters": 64},
                    "norm_activation": {"norm_momentum": 0.9},
                    "detection_generator": {"pre_nms_top_k": 1000, "max_num_detections": 50},
                },
                "losses": {"l2_weight_decay": 5e-5},
                "train_data": {
                    "global_batch_size": 16,
                    "shuffle_buffer_size": 1000,
                    "seed": 0,
                    "parser": {"aug_rand_hflip": True, "aug_scale_min": 0.8, "aug_scale_max": 1.2},
                },
                "validation_data": {
                    "global_batch_size": 16,
                    "is_training": False,
                    "drop_remainder": False,
                },
            },
            "trainer": {
                "train_steps": steps,
                "validation_steps": -1,
                "validation_interval": 600,
                "steps_per_loop": 100,
                "summary_interval": 100,
                "checkpoint_interval": 600,
                "best_checkpoint_eval_metric": "AP50",
                "optimizer_config": {
                    "optimizer": {"type": "sgd", "sgd": {"momentum": 0.9, "global_clipnorm": 10.0}},
                    "learning_rate": {
                        "type": "cosine",
                        "cosine": {"initial_learning_rate": 0.04, "decay_steps": steps},
                    },
                    "warmup": {
                        "type": "linear",
                        "linear": {"warmup_steps": 100, "warmup_learning_rate": 0.004},
                    },
                },
            },
            "runtime": {"seed": 0},
        }
    )
    return exp

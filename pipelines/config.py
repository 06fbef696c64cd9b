"""Pipeline run configs: which data, which experiment, which gate, which registry.

A pipeline config is YAML validated like an experiment config: unknown keys and wrong values are
errors naming the dotted path. Relative paths inside it resolve against the YAML file's folder's
project root (the folder holding `configs/`), so `vision-pipelines run` works from anywhere.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Literal

from pipelines.resources import ResourcesConfig
from vision_core.configs.common import sub
from vision_core.hyperparams import Config, ConfigError, read_yaml

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_PIPELINE_CONFIG = os.path.join(
    PROJECT_ROOT, "configs", "pipelines", "shapes_segmentation.yaml"
)


@dataclasses.dataclass
class ShapesSource(Config):
    num_train: int = 1000
    num_validation: int = 100
    image_size: list[int] = dataclasses.field(default_factory=lambda: [96, 96])
    seed: int = 0
    min_objects: int = 1
    max_objects: int = 4
    # Object radius (centre to corner) as a fraction of the short side.
    radius_range: list[float] = dataclasses.field(default_factory=lambda: [0.08, 0.25])

    def _validate(self, path: str) -> None:
        prefix = f"{path}." if path else ""
        if not 1 <= self.min_objects <= self.max_objects:
            raise ConfigError(
                f"{prefix}min_objects: expected 1 <= min_objects <= max_objects, got "
                f"{self.min_objects} and max_objects {self.max_objects}"
            )
        radius = list(self.radius_range)
        if len(radius) != 2 or not 0.0 < radius[0] <= radius[1] <= 0.5:
            raise ConfigError(
                f"{prefix}radius_range: expected [min, max] with 0 < min <= max <= 0.5, "
                f"got {radius}"
            )


# The split names the train and evaluate steps read.
PIPELINE_SPLITS = ("train", "validation")
# Each source's own name of those splits, where it differs.
SOURCE_SPLITS = {
    "voc": {"train": "train", "validation": "val"},
    "cityscapes": {"train": "train", "validation": "val"},
}
SOURCES = ("shapes", "folders", "coco", "voc", "cityscapes")


@dataclasses.dataclass
class DatasetConfig(Config):
    """Where the images come from and how the convert step writes them.

    `source` is one of the converter's sources: 'shapes' (generated), 'folders' (image + mask
    folders, or class folders for classification), 'coco' (instances JSON, or panoptic for
    segmentation), 'voc' (a VOCdevkit year folder) or 'cityscapes'. `splits` maps the pipeline's
    `train` / `validation` to the source's split names (default: the same names; VOC and
    Cityscapes: train / val). `annotations`, `images` and `masks` give per-split paths for
    'coco' (split: path, keyed by the source's split names).
    """

    source: Literal["shapes", "folders", "coco", "voc", "cityscapes"] = "shapes"
    source_dir: str = ""
    shapes: ShapesSource = sub(ShapesSource)
    splits: dict = dataclasses.field(default_factory=dict)
    annotations: dict = dataclasses.field(default_factory=dict)
    images: dict = dataclasses.field(default_factory=dict)
    masks: dict = dataclasses.field(default_factory=dict)
    # Detection: also write instance masks (image/object/mask).
    include_masks: bool = False
    num_shards: int = 4
    # Instead of num_shards: shards of about this size, e.g. "200MB" (counted per split).
    target_shard_size: str | None = None
    compression: Literal["gzip"] | None = None
    # Display names for evaluation; for classification from folders also the class id order
    # (default: the sorted class folder names, which the dataset summary then records).
    class_names: list[str] = dataclasses.field(default_factory=list)
    beam_args: list[str] = dataclasses.field(default_factory=list)

    def split_map(self) -> dict[str, str]:
        """{pipeline split: source split} for train and validation."""
        return {**SOURCE_SPLITS.get(self.source, {}), **dict(self.splits)} or {
            s: s for s in PIPELINE_SPLITS
        }

    def _validate(self, path: str) -> None:
        prefix = f"{path}." if path else ""
        needs_dir = ("folders", "voc", "cityscapes")
        if self.source in needs_dir and not self.source_dir:
            raise ConfigError(f"{prefix}source_dir: required when source is {self.source!r}")
        if self.source == "coco" and not self.source_dir and not self.annotations:
            raise ConfigError(
                f"{prefix}annotations: source 'coco' needs source_dir (with annotations/ and "
                "images/) or annotations and images per split"
            )
        unknown = sorted(set(self.splits) - set(PIPELINE_SPLITS))
        if unknown:
            raise ConfigError(
                f"{prefix}splits: keys are the pipeline's splits {list(PIPELINE_SPLITS)}, "
                f"got {unknown}"
            )
        for name in ("annotations", "images", "masks"):
            if getattr(self, name) and self.source != "coco":
                raise ConfigError(f"{prefix}{name}: only for source 'coco', not {self.source!r}")
        if self.num_shards < 1:
            raise ConfigError(f"{prefix}num_shards: expected >= 1, got {self.num_shards}")
        if self.target_shard_size is not None:
            from components.convert_dataset.sharding import parse_byte_size

            try:
                parse_byte_size(self.target_shard_size)
            except ValueError as e:
                raise ConfigError(f"{prefix}target_shard_size: {e}") from None


@dataclasses.dataclass
class ExperimentRef(Config):
    name: str | None = None
    config_file: str | None = None
    overrides: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class GateConfig(Config):
    metric: str = "mean_iou"
    min_value: float = 0.0
    max_regression: float = 0.0
    higher_is_better: bool = True


@dataclasses.dataclass
class RegistryConfig(Config):
    uri: str = "artifacts/registry"
    model_name: str = "model"
    alias: str = "champion"


# The metrics each task's evaluate step reports, for checking `gate.metric` up front.
TASK_METRICS = {
    "segmentation": ("mean_iou", "pixel_accuracy", "iou/<class name>"),
    "classification": ("top_1_accuracy", "top_<k>_accuracy", "accuracy/<class name>"),
    "detection": (
        "AP", "AP50", "AP75", "APs", "APm", "APl", "ARmax1", "ARmax10", "ARmax100",
        "AP/<class name>", "AP50/<class name>",
    ),
}  # fmt: skip


def _metric_known(task: str, metric: str) -> bool:
    for pattern in TASK_METRICS[task]:
        head, _, tail = pattern.partition("<")
        tail = tail.partition(">")[2]
        if metric == pattern or (
            "<" in pattern and metric.startswith(head) and metric.endswith(tail)
            and len(metric) > len(head) + len(tail)
        ):  # fmt: skip
            return True
    return False


@dataclasses.dataclass
class PipelineConfig(Config):
    name: str = "vision-pipeline"
    task: Literal["segmentation", "classification", "detection"] = "segmentation"
    dataset: DatasetConfig = sub(DatasetConfig)
    experiment: ExperimentRef = sub(ExperimentRef)
    gate: GateConfig = sub(GateConfig)
    registry: RegistryConfig = sub(RegistryConfig)
    pipeline_root: str = "artifacts/pipeline_root"
    image: str | None = None
    # KFP step caching: a step whose inputs, code version and component are unchanged reuses its
    # earlier outputs (validate and push never do). `--no-cache` turns it off for one run.
    enable_caching: bool = True
    resources: ResourcesConfig = sub(ResourcesConfig)

    def _validate(self, path: str) -> None:
        if not _metric_known(self.task, self.gate.metric):
            prefix = f"{path}." if path else ""
            raise ConfigError(
                f"{prefix}gate.metric: {self.gate.metric!r} is not reported by {self.task} "
                f"evaluation; it reports {', '.join(TASK_METRICS[self.task])}"
            )


def load_pipeline_config(path: str | None = None, overrides: dict | None = None) -> PipelineConfig:
    """Reads, validates and resolves the relative paths of a pipeline config."""
    path = path or DEFAULT_PIPELINE_CONFIG
    data = read_yaml(path)
    try:
        config = PipelineConfig.from_dict(data)
        if overrides:
            config.override(overrides)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    base = _root_for(path)
    for holder, attr in (
        (config, "pipeline_root"),
        (config.registry, "uri"),
        (config.dataset, "source_dir"),
        (config.experiment, "config_file"),
    ):
        setattr(holder, attr, _resolve(base, getattr(holder, attr)))
    for attr in ("annotations", "images", "masks"):
        paths = getattr(config.dataset, attr)
        setattr(config.dataset, attr, {k: _resolve(base, v) for k, v in paths.items()})
    if config.experiment.config_file and not os.path.exists(config.experiment.config_file):
        raise ConfigError(
            f"{path}: experiment.config_file: {config.experiment.config_file} does not exist"
        )
    return config


def _resolve(base: str, value: str | None) -> str | None:
    """A relative local path made absolute against `base`; URLs and absolute paths as given."""
    if value and "://" not in value and not os.path.isabs(value):
        return os.path.normpath(os.path.join(base, value))
    return value


def _root_for(path: str) -> str:
    """The folder above `configs/` if the file lives in one, else the file's own folder."""
    folder = os.path.dirname(os.path.abspath(path))
    probe = folder
    while probe and probe != os.path.dirname(probe):
        if os.path.basename(probe) == "configs":
            return os.path.dirname(probe)
        probe = os.path.dirname(probe)
    return folder

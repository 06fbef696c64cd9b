"""The convert → train → evaluate → validate → push graph, built from a pipeline config.

`build_pipeline(config)` returns a KFP v2 pipeline function with every value of the config
baked in as a pipeline-parameter default, so the compiled YAML is a complete, reviewable record
of the run and the same object runs under `kfp.local` or on a cluster. The graph is the same for
every task; `config.task` picks the evaluate step (mIoU for segmentation, accuracy for
classification) and its parameters.
"""

import json
import os
from typing import Any

from kfp import dsl

from components.common import CODE_VERSION_ENV
from components.kfp_ops import build_ops
from pipelines import resources
from pipelines.config import PipelineConfig
from vision_core.configs import load_experiment
from vision_core.configs.experiment import ExperimentConfig
from vision_core.hyperparams import ConfigError


def resolve_experiment(config: PipelineConfig) -> ExperimentConfig:
    """The fully validated experiment config the train step will get."""
    ref = config.experiment
    files = [ref.config_file] if ref.config_file else []
    return load_experiment(ref.name, files, ref.overrides or None)


# The experiment task config `name` each pipeline task trains.
EXPERIMENT_TASKS = {
    "segmentation": "semantic_segmentation",
    "classification": "image_classification",
    "detection": "retinanet",
}


def resolve_checked_experiment(config: PipelineConfig) -> ExperimentConfig:
    """`resolve_experiment`, checked against the pipeline's task before anything runs."""
    experiment = resolve_experiment(config)
    expected = EXPERIMENT_TASKS[config.task]
    actual = getattr(experiment.task, "name", None)
    if actual != expected:
        source = config.experiment.config_file or config.experiment.name
        raise ConfigError(
            f"task: the pipeline task is {config.task!r}, but the experiment ({source}) is "
            f"a {actual!r} experiment; use a {expected} experiment or set task accordingly"
        )
    return experiment


def class_names(config: PipelineConfig, experiment: ExperimentConfig) -> list[str]:
    """Class names for evaluation reports, in id order.

    Empty for real datasets without configured names: the convert step records the source's
    names (class folders, categories) and the evaluate step reads them from the dataset.
    """
    num_classes = experiment.task.model.num_classes
    if config.dataset.class_names:
        return list(config.dataset.class_names)
    if config.dataset.source == "shapes":
        from components.convert_dataset.shapes import CLASSIFICATION_CLASSES, SHAPES_CLASSES

        names = CLASSIFICATION_CLASSES if config.task == "classification" else SHAPES_CLASSES
        if len(names) == num_classes:
            return list(names)
        return [str(i) for i in range(num_classes)]
    # Other sources: the names the convert step records with the dataset (class folders, COCO
    # categories, VOC and Cityscapes classes), or the ids when it has none.
    return []


def code_version() -> str:
    """The package version, plus the git commit when run from a checkout.

    Uncommitted changes add a digest of the diff (`+g<sha>.dirty<digest>`): the version is part
    of the cache key of the convert and train steps, so an edited working tree never reuses
    outputs that older code produced. `VISION_PIPELINES_CODE_VERSION` overrides it (e.g. set by
    an image build that has no git checkout).
    """
    import vision_core
    from pipelines.image import git_code_version

    if os.environ.get(CODE_VERSION_ENV):
        return os.environ[CODE_VERSION_ENV]
    # The same string `make image` bakes into the image (pipelines/image.py).
    return git_code_version(__file__.rsplit("/", 2)[0], vision_core.__version__)


# `build_pipeline`'s `code_version` parameter hides the function inside it.
_checkout_code_version = code_version


def _source_options(ds: Any) -> dict[str, Any]:
    """The convert step's source-specific `run` arguments from the dataset config."""
    from components.convert_dataset.sharding import parse_byte_size

    options: dict[str, Any] = {}
    for field, argument in (
        ("annotations", "annotation_files"),
        ("images", "image_dirs"),
        ("masks", "mask_dirs"),
    ):
        if getattr(ds, field):
            options[argument] = dict(getattr(ds, field))
    if ds.include_masks:
        options["include_masks"] = True
    if ds.target_shard_size:
        options["target_shard_bytes"] = parse_byte_size(ds.target_shard_size)
    return options


def build_pipeline(
    config: PipelineConfig,
    run_name: str = "",
    code_version: str | None = None,
    runs_in_image: bool = True,
) -> Any:
    """A KFP pipeline for `config.task` (segmentation, classification or detection).

    Args:
      config: the pipeline config; its `image` (else the default image) runs every step.
      run_name: recorded as the pushed version's parent run.
      code_version: the code the steps run, part of the convert and train steps' cache key and
        the lineage's fallback: give the image's identity when the steps run in an image
        (`image:sha256:...` of a pinned digest, a local image ID). Default: this checkout's
        (`code_version()`), right only when the steps run this checkout's code.
      runs_in_image: False when the steps run outside any image (the local subprocess runner):
        the lineage then records no image rather than one that never ran.
    """
    experiment = resolve_checked_experiment(config)
    # One line of JSON (which is YAML): KFP copies parameter defaults into a comment header of
    # the compiled file, and a multi-line default there breaks the YAML.
    experiment_yaml = json.dumps(experiment.as_dict(), sort_keys=True)
    names = class_names(config, experiment)
    ops = build_ops(config.image)
    ds = config.dataset
    shapes = ds.shapes
    gate = config.gate
    reg = config.registry
    version = code_version or _checkout_code_version()
    common = {
        "source": ds.source,
        "source_dir": ds.source_dir,
        "num_train": shapes.num_train,
        "num_validation": shapes.num_validation,
        "image_height": shapes.image_size[0],
        "image_width": shapes.image_size[1],
        "seed": shapes.seed,
        "min_objects": shapes.min_objects,
        "max_objects": shapes.max_objects,
        "radius_range": list(shapes.radius_range),
        "num_shards": ds.num_shards,
        "compression": ds.compression or "",
        "beam_args": list(ds.beam_args),
        "splits": ds.split_map(),
        "source_options": _source_options(ds),
        "experiment_yaml": experiment_yaml,
        "num_classes": experiment.task.model.num_classes,
        "class_names": names,
        "gate_metric": gate.metric,
        "gate_min_value": gate.min_value,
        "gate_max_regression": gate.max_regression,
        "gate_higher_is_better": gate.higher_is_better,
        "registry_uri": reg.uri,
        "model_name": reg.model_name,
        "alias": reg.alias,
        "code_version": version,
        "run_name": run_name,
    }

    evaluate_options = {
        "classification": lambda: {"top_k": experiment.task.evaluation.top_k},
        "segmentation": lambda: {"ignore_label": experiment.task.losses.ignore_label},
        "detection": lambda: {},
    }[config.task]()
    c = common

    @dsl.pipeline(
        name=config.name,
        description=f"{config.task}: convert → train → evaluate → validate → push",
        pipeline_root=config.pipeline_root,
    )
    def training_pipeline(
        source: str = c["source"],
        source_dir: str = c["source_dir"],
        num_train: int = c["num_train"],
        num_validation: int = c["num_validation"],
        image_height: int = c["image_height"],
        image_width: int = c["image_width"],
        seed: int = c["seed"],
        min_objects: int = c["min_objects"],
        max_objects: int = c["max_objects"],
        radius_range: list = c["radius_range"],
        num_shards: int = c["num_shards"],
        compression: str = c["compression"],
        beam_args: list = c["beam_args"],
        splits: dict = c["splits"],
        source_options: dict = c["source_options"],
        experiment_yaml: str = c["experiment_yaml"],
        num_classes: int = c["num_classes"],
        class_names: list = c["class_names"],
        # The evaluate step's task-specific settings (segmentation: ignore_label;
        # classification: top_k).
        evaluate_options: dict = evaluate_options,
        gate_metric: str = c["gate_metric"],
        gate_min_value: float = c["gate_min_value"],
        gate_max_regression: float = c["gate_max_regression"],
        gate_higher_is_better: bool = c["gate_higher_is_better"],
        registry_uri: str = c["registry_uri"],
        model_name: str = c["model_name"],
        alias: str = c["alias"],
        code_version: str = c["code_version"],
        run_name: str = c["run_name"],
    ):
        convert = ops.convert_dataset(
            task=config.task,
            source=source,
            source_dir=source_dir,
            num_train=num_train,
            num_validation=num_validation,
            image_height=image_height,
            image_width=image_width,
            seed=seed,
            min_objects=min_objects,
            max_objects=max_objects,
            radius_range=radius_range,
            num_shards=num_shards,
            compression=compression,
            class_names=class_names,
            beam_args=beam_args,
            code_version=code_version,
            splits=splits,
            source_options=source_options,
        ).set_display_name("convert-dataset")
        train = ops.train(
            dataset=convert.outputs["dataset"],
            experiment_yaml=experiment_yaml,
            code_version=code_version,
        ).set_display_name("train")
        evaluate = ops.evaluate(
            model=train.outputs["model"],
            dataset=convert.outputs["dataset"],
            task=config.task,
            num_classes=num_classes,
            class_names=class_names,
            options=evaluate_options,
        ).set_display_name("evaluate")
        # Scoring is cheap next to training and is what a run reports: always evaluate afresh,
        # even when convert and train come from the cache.
        evaluate.set_caching_options(False)
        validate = ops.validate(
            metrics=evaluate.outputs["Output"],
            metric_name=gate_metric,
            min_value=gate_min_value,
            max_regression=gate_max_regression,
            higher_is_better=gate_higher_is_better,
            registry_uri=registry_uri,
            model_name=model_name,
        ).set_display_name("validate")
        # Registry state changes between runs: never reuse a cached gate decision or push.
        validate.set_caching_options(False)
        with dsl.If(validate.outputs["Output"] == True, name="gate-passed"):  # noqa: E712
            push = ops.push(
                model=train.outputs["model"],
                dataset=convert.outputs["dataset"],
                metrics=evaluate.outputs["Output"],
                experiment_yaml=experiment_yaml,
                registry_uri=registry_uri,
                model_name=model_name,
                alias=alias,
                code_version=code_version,
                run_name=run_name,
                # A constant, not a pipeline parameter: overriding it at submission would not
                # change the image the steps run in, only what the lineage claims.
                image=ops.image if runs_in_image else "",
            ).set_display_name("push")
            push.set_caching_options(False)
            resources.apply(push, config.resources.for_step("push"))
        for step, task in (
            ("convert", convert), ("train", train), ("evaluate", evaluate), ("validate", validate),
        ):  # fmt: skip
            resources.apply(task, config.resources.for_step(step))
            if not config.enable_caching:
                task.set_caching_options(False)

    return training_pipeline

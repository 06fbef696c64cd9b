"""The train → evaluate → validate → push graph, built from a pipeline config.

`build_pipeline(config)` returns a KFP v2 pipeline function with every value of the config
baked in as a pipeline-parameter default, so the compiled YAML is a complete, reviewable record
of the run and the same object runs under `kfp.local` or on a cluster.
"""

import json
import subprocess
from typing import Any

from kfp import dsl

from components.kfp_ops import build_ops
from pipelines.config import PipelineConfig
from vision_core.configs import load_experiment
from vision_core.configs.experiment import ExperimentConfig


def resolve_experiment(config: PipelineConfig) -> ExperimentConfig:
    """The fully validated experiment config the train step will get."""
    ref = config.experiment
    files = [ref.config_file] if ref.config_file else []
    return load_experiment(ref.name, files, ref.overrides or None)


def class_names(config: PipelineConfig, experiment: ExperimentConfig) -> list[str]:
    num_classes = experiment.task.model.num_classes
    if config.dataset.class_names:
        return list(config.dataset.class_names)
    if config.dataset.source == "shapes":
        from components.convert_dataset.shapes import SHAPES_CLASSES

        if len(SHAPES_CLASSES) == num_classes:
            return list(SHAPES_CLASSES)
    return [str(i) for i in range(num_classes)]


def code_version() -> str:
    """The package version plus the git commit when run from a checkout."""
    import vision_core

    version = vision_core.__version__
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=__file__.rsplit("/", 2)[0],
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            cwd=__file__.rsplit("/", 2)[0],
        ).stdout.strip()
        version += f"+g{sha}" + (".dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        pass
    return version


def build_pipeline(config: PipelineConfig, run_name: str = "") -> Any:
    """A KFP pipeline for `config.task` (segmentation now)."""
    experiment = resolve_experiment(config)
    # One line of JSON (which is YAML): KFP copies parameter defaults into a comment header of
    # the compiled file, and a multi-line default there breaks the YAML.
    experiment_yaml = json.dumps(experiment.as_dict(), sort_keys=True)
    names = class_names(config, experiment)
    ops = build_ops(config.image)
    ds = config.dataset
    shapes = ds.shapes
    gate = config.gate
    reg = config.registry
    version = code_version()

    @dsl.pipeline(
        name=config.name,
        description=f"{config.task}: convert → train → evaluate → validate → push",
        pipeline_root=config.pipeline_root,
    )
    def training_pipeline(
        source: str = ds.source,
        source_dir: str = ds.source_dir,
        num_train: int = shapes.num_train,
        num_validation: int = shapes.num_validation,
        image_height: int = shapes.image_size[0],
        image_width: int = shapes.image_size[1],
        seed: int = shapes.seed,
        num_shards: int = ds.num_shards,
        compression: str = ds.compression or "",
        beam_args: list = list(ds.beam_args),  # noqa: B006 - KFP reads defaults from here
        experiment_yaml: str = experiment_yaml,
        num_classes: int = experiment.task.model.num_classes,
        class_names: list = names,  # noqa: B006
        ignore_label: int = experiment.task.losses.ignore_label,
        gate_metric: str = gate.metric,
        gate_min_value: float = gate.min_value,
        gate_max_regression: float = gate.max_regression,
        gate_higher_is_better: bool = gate.higher_is_better,
        registry_uri: str = reg.uri,
        model_name: str = reg.model_name,
        alias: str = reg.alias,
        code_version: str = version,
        run_name: str = run_name,
    ):
        convert = ops.convert_dataset(
            source=source,
            source_dir=source_dir,
            num_train=num_train,
            num_validation=num_validation,
            image_height=image_height,
            image_width=image_width,
            seed=seed,
            num_shards=num_shards,
            compression=compression,
            beam_args=beam_args,
        ).set_display_name("convert-dataset")
        train = ops.train(
            dataset=convert.outputs["dataset"], experiment_yaml=experiment_yaml
        ).set_display_name("train")
        evaluate = ops.evaluate(
            model=train.outputs["model"],
            dataset=convert.outputs["dataset"],
            num_classes=num_classes,
            class_names=class_names,
            ignore_label=ignore_label,
        ).set_display_name("evaluate")
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
            ).set_display_name("push")
            push.set_caching_options(False)

    return training_pipeline

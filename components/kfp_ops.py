"""The thin KFP adapters of the steps: artifacts and parameters in, the step's `run(...)` called.

Each op is a lightweight component whose body imports the step from this package, so the same
graph runs under `kfp.local.SubprocessRunner` (the package is installed locally) and on a cluster
(the package is installed in the image). `build_ops(image)` binds them to one container image.
"""

import os
import types

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Model, Output


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vision-pipelines")
    except PackageNotFoundError:
        return "dev"


# The image every step runs in: `VISION_PIPELINES_IMAGE` when set, else the project's name and
# version (`make image` tags that). A pipeline config's `image` overrides both. Compiling for a
# cluster never falls back to this: `compile`, `submit` and `schedule` need a pullable reference
# (pipelines/image_ref.py).
DEFAULT_IMAGE = os.environ.get("VISION_PIPELINES_IMAGE") or f"vision-pipelines:{_version()}"


def convert_dataset_op(
    task: str,
    source: str,
    source_dir: str,
    num_train: int,
    num_validation: int,
    image_height: int,
    image_width: int,
    seed: int,
    min_objects: int,
    max_objects: int,
    radius_range: list,
    num_shards: int,
    compression: str,
    class_names: list,
    beam_args: list,
    code_version: str,
    splits: dict,
    source_options: dict,
    dataset: Output[Dataset],
    dataset_report: Output[Markdown],
) -> dict:
    """Converts the source images to sharded TFRecords with Apache Beam.

    (`code_version` only joins the cache key: a new converter converts again.)
    """
    import logging
    import os
    import shutil

    from components.convert_dataset import pipeline as convert

    del code_version
    # Progress lines go to the step's log (INFO from the progress module only).
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("components.convert_dataset.progress").setLevel(logging.INFO)
    # {pipeline split: source split}; the step writes the pipeline's names (train, validation).
    # source_options: annotation_files / image_dirs / mask_dirs ({source split: path}),
    # include_masks, target_shard_bytes.
    summary = convert.run(
        source_dir=source_dir or None,
        output_dir=dataset.path,
        splits=dict(splits),
        **dict(source_options),
        num_shards=num_shards,
        compression=compression or None,
        beam_args=list(beam_args),
        source=source,
        # Log lines (not a bar: the step's output is no terminal) reach the step's KFP log.
        progress=True,
        shapes_options={
            "num_train": num_train,
            "num_validation": num_validation,
            "image_size": (image_height, image_width),
            "seed": seed,
            "min_objects": min_objects,
            "max_objects": max_objects,
            "radius_range": tuple(radius_range),
        },
        task=task,
        class_names=list(class_names) or None,
    )
    # The dataset report (counts, histograms, bad records) as its own artifact, which the KFP UI
    # renders beside the run.

    report_md = os.path.join(dataset.path, (summary.get("report") or {}).get("markdown", ""))
    if os.path.isfile(report_md):
        shutil.copyfile(report_md, dataset_report.path)
    else:
        with open(dataset_report.path, "w") as f:
            f.write("# Dataset\n\nThe convert step wrote no report.\n")
    dataset.metadata["fingerprint"] = summary.get("fingerprint", "")
    dataset.metadata["task"] = task
    if summary.get("class_names"):
        dataset.metadata["class_names"] = list(summary["class_names"])
    for split, info in summary.get("splits", {}).items():
        dataset.metadata[f"{split}_records"] = info.get("records", 0)
    return summary


def train_op(
    dataset: Input[Dataset],
    experiment_yaml: str,
    code_version: str,
    model: Output[Model],
) -> dict:
    """Trains the experiment on the dataset; the Model artifact holds checkpoints + SavedModel.

    On a cluster the artifact's URI is gs://... under the pipeline root; checkpoints are written
    there directly rather than to the local copy the launcher uploads at the end, so when KFP
    retries the step (same task, same URI) training resumes from the last checkpoint instead of
    starting over. (`code_version` only joins the cache key: new code retrains.)
    """
    import os
    import tempfile

    from components.train import run
    from components.train.step import checkpoint_dir_for

    del code_version
    os.makedirs(model.path, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(experiment_yaml)
        config_path = f.name
    model_dir = checkpoint_dir_for(model.uri, model.path)
    summary = run(
        dataset_dir=dataset.path,
        model_dir=model_dir,
        export_dir=os.path.join(model.path, "saved_model"),
        config_file=config_path,
    )
    os.unlink(config_path)
    model.metadata["checkpoint_dir"] = model_dir
    model.metadata["config_hash"] = summary["config_hash"]
    model.metadata["framework"] = "tensorflow"
    return summary


def evaluate_op(
    model: Input[Model],
    dataset: Input[Dataset],
    task: str,
    num_classes: int,
    class_names: list,
    options: dict,
    metrics: Output[Metrics],
    report: Output[Markdown],
    figures: Output[HTML],
) -> dict:
    """The task's metrics of the exported SavedModel on the validation split (segmentation:
    mIoU + per-class IoU; classification: top-1 / top-k + per-class accuracy; detection: COCO
    AP + per-class AP, and a figure of validation images with predicted and true boxes)."""
    import base64
    import os
    import shutil
    import tempfile

    from components.evaluate import run_for_task

    out = tempfile.mkdtemp(prefix="evaluate-")
    result = run_for_task(
        task,
        saved_model_dir=os.path.join(model.path, "saved_model"),
        dataset_dir=dataset.path,
        output_dir=out,
        num_classes=num_classes,
        # Empty: the names the convert step stored with the dataset.
        class_names=list(class_names) or None,
        options=options,
    )
    for key, value in result.items():
        if isinstance(value, int | float):
            metrics.log_metric(key, float(value))
    shutil.copyfile(os.path.join(out, "report.md"), report.path)
    # Which model and data were scored: lets a run summary find a cached train step's outputs.
    report.metadata["model_uri"] = model.uri
    report.metadata["dataset_uri"] = dataset.uri
    # The KFP UI renders HTML artifacts inline, so the figures are embedded as data URIs.
    body = ""
    for name in sorted(n for n in os.listdir(out) if n.endswith(".png")):
        with open(os.path.join(out, name), "rb") as png:
            encoded = base64.b64encode(png.read()).decode()
        body += f'<h3>{name}</h3><img alt="{name}" src="data:image/png;base64,{encoded}"/>'

    with open(figures.path, "w") as f:
        f.write(f"<html><body>{body or '<p>No figures for this task.</p>'}</body></html>")
    shutil.rmtree(out, ignore_errors=True)
    return result


def validate_op(
    metrics: dict,
    metric_name: str,
    min_value: float,
    max_regression: float,
    higher_is_better: bool,
    registry_uri: str,
    model_name: str,
    decision: Output[Markdown],
) -> bool:
    """The gate: threshold + no regression against the registry's champion.

    Returns whether the model may be pushed (one `Output`, which `dsl.If` can test on every
    runner); the reason goes to the `decision` artifact and its metadata.
    """
    from components.validate import run

    result = run(
        metrics=metrics,
        metric_name=metric_name,
        min_value=min_value,
        registry_uri=registry_uri,
        model_name=model_name,
        max_regression=max_regression,
        higher_is_better=higher_is_better,
    )
    verdict = "PASSED" if result.passed else "FAILED"
    print(f"{verdict}: {result.reason}")
    with open(decision.path, "w") as f:
        f.write(f"# Validation gate: {verdict}\n\n{result.reason}\n")
    decision.metadata["passed"] = bool(result.passed)
    decision.metadata["reason"] = result.reason
    return bool(result.passed)


def push_op(
    model: Input[Model],
    dataset: Input[Dataset],
    metrics: dict,
    experiment_yaml: str,
    registry_uri: str,
    model_name: str,
    alias: str,
    code_version: str,
    run_name: str,
    image: str,
) -> dict:
    """Registers the SavedModel with config, metrics and lineage; moves the alias to it.

    The lineage records `image` (the reference the pipeline was compiled with) and the code
    version the step itself runs (see `pipeline_lineage`).
    """
    import os
    import tempfile

    from components.push_model import run
    from components.push_model.step import pipeline_lineage

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(experiment_yaml)
        config_path = f.name
    lineage = pipeline_lineage(
        {
            "dataset_fingerprint": dataset.metadata.get("fingerprint", ""),
            "dataset_uri": dataset.uri,
            "config_hash": model.metadata.get("config_hash", ""),
            "parent_run": run_name,
            "model_uri": model.uri,
        },
        image=image,
        code_version=code_version,
    )
    result = run(
        saved_model_dir=os.path.join(model.path, "saved_model"),
        registry_uri=registry_uri,
        model_name=model_name,
        config_path=config_path,
        metrics=metrics,
        lineage=lineage,
        promote=True,
        alias=alias,
    )
    os.unlink(config_path)
    return result


def build_ops(image: str | None = None) -> types.SimpleNamespace:
    """The ops bound to one container image (the project's image by default); `.image` is it."""
    image = image or DEFAULT_IMAGE

    def make(fn):
        return dsl.component(base_image=image, install_kfp_package=False)(fn)

    return types.SimpleNamespace(
        convert_dataset=make(convert_dataset_op),
        train=make(train_op),
        evaluate=make(evaluate_op),
        validate=make(validate_op),
        push=make(push_op),
        image=image,
    )

"""Writes a Model Garden model's weights as a "weights bundle" that vision_core can import.

Run this file with the Python of an environment that has Model Garden (`tf-models-official`)
installed; it imports nothing from vision_core, so it can be copied there on its own:

    python export_modelgarden_weights.py \\
        --backbone '{"type": "resnet", "resnet": {"model_id": 50}}' --input-size 224 224 \\
        --output resnet50.npz [--checkpoint /path/to/ckpt] [--sample]

    python export_modelgarden_weights.py --experiment retinanet_resnetfpn_coco \\
        [--config-file exp.yaml] [--params-override k=v] --module backbone --checkpoint CKPT \\
        --output bundle.npz

Then, in the vision_core environment:

    vision-pipelines import-weights bundle.npz --output imported/ [--verify]

The bundle is one `.npz` file:
  - `weight_00000`, `weight_00001`, ...: the variable values, in the module's `weights` order;
  - `meta`: a JSON string with the format tag, each variable's name, shape and trainability,
    which module was exported (`backbone` or `model`), the Model Garden configs needed to build
    the same network (`backbone`, `norm_activation`, `input_size`, and the experiment's
    `task.model` when a whole model was exported), and the versions of TF / Model Garden;
  - with `--sample`: `sample_input` (a seeded random batch) and `sample_output_<key>` (the
    module's outputs on it, inference mode), so the importer can check numerical agreement.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Mapping
from typing import Any

import numpy as np

BUNDLE_FORMAT = "vision_core.weights_bundle/1"
SAMPLE_SEED = 1234


def variable_records(variables: list[Any]) -> list[dict[str, Any]]:
    """Name, shape and trainability of each variable, in order."""
    return [
        {
            "name": v.name,
            "shape": [int(d) for d in v.shape],
            "trainable": bool(v.trainable),
        }
        for v in variables
    ]


def sample_input(input_size: list[int], batch: int = 2) -> np.ndarray:
    """The seeded random batch both sides run: values in [-1, 1), like normalized images."""
    rng = np.random.default_rng(SAMPLE_SEED)
    return rng.uniform(-1.0, 1.0, size=[batch, *input_size]).astype(np.float32)


def flatten_outputs(outputs: Any) -> dict[str, np.ndarray]:
    """{key: array} of a module's outputs: a dict keeps its keys, a tensor becomes 'output'."""
    if isinstance(outputs, Mapping):
        flat = {}
        for key, value in outputs.items():
            if isinstance(value, Mapping):
                for inner, array in flatten_outputs(value).items():
                    flat[f"{key}/{inner}"] = array
            else:
                flat[str(key)] = np.asarray(value)
        return flat
    if isinstance(outputs, list | tuple):
        return {str(i): np.asarray(v) for i, v in enumerate(outputs)}
    return {"output": np.asarray(outputs)}


def write_bundle(
    path: str,
    module: Any,
    meta: Mapping[str, Any],
    sample: tuple[np.ndarray, Mapping[str, np.ndarray]] | None = None,
) -> None:
    """Writes `module.weights` and `meta` to `path` (an .npz), atomically.

    Args:
      path: destination file; written to a temporary name in the same folder, then renamed.
      module: a Keras layer or model whose `weights` are exported in order.
      meta: extra metadata (configs, versions); the variable list and format tag are added.
      sample: optional (input batch, {output key: array}) recorded for verification.
    """
    variables = list(module.weights)
    arrays: dict[str, np.ndarray] = {
        f"weight_{i:05d}": np.asarray(v.numpy()) for i, v in enumerate(variables)
    }
    full_meta = {
        "format": BUNDLE_FORMAT,
        **dict(meta),
        "variables": variable_records(variables),
    }
    if sample is not None:
        inputs, outputs = sample
        arrays["sample_input"] = np.asarray(inputs, dtype=np.float32)
        for key, value in outputs.items():
            arrays[f"sample_output_{key}"] = np.asarray(value)
        full_meta["sample_outputs"] = sorted(outputs)
    arrays["meta"] = np.asarray(json.dumps(full_meta, sort_keys=True))
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def randomize_statistics(module: Any, seed: int = SAMPLE_SEED) -> None:
    """Sets every batch-norm moving mean/variance to seeded random values (means in
    [-0.1, 0.1], variances in [0.5, 1.5]); untrained models otherwise hold only 0s and 1s."""
    rng = np.random.default_rng(seed)
    for v in module.non_trainable_weights:
        name = v.name.lower()
        if "moving_mean" in name:
            v.assign(rng.uniform(-0.1, 0.1, size=v.shape).astype(np.float32))
        elif "moving_variance" in name:
            v.assign(rng.uniform(0.5, 1.5, size=v.shape).astype(np.float32))


# ------------------------------------------------------------------- Model Garden side (CLI)
def _parse_json_or_yaml(text: str) -> Any:
    if os.path.exists(text):
        with open(text, encoding="utf-8") as f:
            text = f.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        import yaml

        return yaml.safe_load(text)


def _build_from_backbone(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    import tf_keras
    from official.vision.configs import backbones as backbones_cfg
    from official.vision.configs import common as common_cfg
    from official.vision.modeling.backbones import factory

    backbone_dict = _parse_json_or_yaml(args.backbone)
    norm_dict = _parse_json_or_yaml(args.norm_activation) if args.norm_activation else {}
    backbone_config = backbones_cfg.Backbone(**{"type": backbone_dict.get("type")})
    backbone_config.override(backbone_dict, is_strict=True)
    norm_config = common_cfg.NormActivation()
    norm_config.override(norm_dict, is_strict=True)
    input_size = list(args.input_size) + [3]
    spec = tf_keras.layers.InputSpec(shape=[None, *input_size])
    backbone = factory.build_backbone(
        input_specs=spec, backbone_config=backbone_config, norm_activation_config=norm_config
    )
    meta = {
        "module": "backbone",
        "backbone": backbone_config.as_dict(),
        "norm_activation": norm_config.as_dict(),
        "input_size": input_size,
    }
    return backbone, meta


def _build_from_experiment(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    from official.core import exp_factory, task_factory
    from official.modeling import hyperparams
    from official.vision import registry_imports  # noqa: F401  (registers experiments)

    params = exp_factory.get_exp_config(args.experiment)
    for config_file in args.config_file or []:
        params = hyperparams.override_params_dict(params, config_file, is_strict=True)
    for override in args.params_override or []:
        params = hyperparams.override_params_dict(params, override, is_strict=True)
    task = task_factory.get_task(params.task)
    model = task.build_model()
    model_cfg = params.task.model
    input_size = list(getattr(model_cfg, "input_size", []) or [])
    module = model if args.module == "model" else model.backbone
    meta = {
        "module": args.module,
        "experiment": args.experiment,
        "backbone": model_cfg.backbone.as_dict(),
        "norm_activation": model_cfg.norm_activation.as_dict(),
        "input_size": input_size,
        "task_model": model_cfg.as_dict(),
    }
    return module, meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--backbone", help="Model Garden backbone config (JSON/YAML text or file)")
    source.add_argument("--experiment", help="Model Garden experiment name")
    parser.add_argument("--norm-activation", help="norm_activation config (JSON/YAML)")
    parser.add_argument("--input-size", type=int, nargs=2, default=[224, 224], metavar=("H", "W"))
    parser.add_argument("--config-file", action="append", help="experiment YAML (repeatable)")
    parser.add_argument("--params-override", action="append", help="k=v overrides (repeatable)")
    parser.add_argument("--module", choices=["backbone", "model"], default="backbone")
    parser.add_argument("--checkpoint", help="Model Garden checkpoint to restore first")
    parser.add_argument("--sample", action="store_true", help="record a sample input/output")
    parser.add_argument(
        "--randomize-statistics",
        action="store_true",
        help="for parity checks of untrained models: seeded random batch-norm moving "
        "statistics, so a misplaced one shows in the outputs",
    )
    parser.add_argument("--output", required=True, help="bundle path (.npz)")
    args = parser.parse_args(argv)

    import tensorflow as tf

    if args.backbone:
        module, meta = _build_from_backbone(args)
    else:
        module, meta = _build_from_experiment(args)
    if args.checkpoint:
        path = args.checkpoint
        if tf.io.gfile.isdir(path):
            path = tf.train.latest_checkpoint(path) or path
        # Model Garden's trainer saves the task model as `model`; a backbone-only checkpoint
        # (what init_checkpoint_modules=backbone reads) uses `backbone`.
        key = "backbone" if meta["module"] == "backbone" and not args.experiment else "model"
        tf.train.Checkpoint(**{key: module}).read(path).expect_partial()
    if args.randomize_statistics:
        randomize_statistics(module)
    sample = None
    if args.sample:
        if not meta.get("input_size") or None in meta["input_size"]:
            parser.error("--sample needs a fixed input size")
        inputs = sample_input(meta["input_size"])
        sample = (inputs, flatten_outputs(module(inputs, training=False)))
    from importlib import metadata

    try:
        mg_version = metadata.version("tf-models-official")
    except metadata.PackageNotFoundError:
        mg_version = None
    meta.update({"tensorflow": tf.__version__, "model_garden": mg_version})
    write_bundle(args.output, module, meta, sample)
    print(f"wrote {len(module.weights)} variables to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

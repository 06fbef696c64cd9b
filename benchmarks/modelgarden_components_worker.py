"""Builds one decoder or head by name, in either library, for the component parity check.

`modelgarden_parity.py --components ...` runs this file with Model Garden's Python
(`export`): it builds Model Garden's component, gives every variable seeded random values (the
heads' own initializers are too close to zero to tell two implementations apart), runs it on a
seeded input and writes a weights bundle plus the inputs and outputs. Then, in the vision_core
environment, `build()` makes the same component from `vision_core`, the converter imports the
bundle, and the outputs are compared.

The component definitions below are written once against the public API both libraries share
(`official.vision` / `vision_core`), which is itself part of what is being checked.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

SEED = 1234
SIZE = 128  # input image size the feature pyramids correspond to

# ResNet-50 channels at levels 2..5.
RESNET50_CHANNELS = {2: 256, 3: 512, 4: 1024, 5: 2048}

COMPONENTS: dict[str, dict[str, Any]] = {
    "retinanet_head": {
        "module": "modeling.heads.dense_prediction_heads",
        "class": "RetinaNetHead",
        "kwargs": {
            "min_level": 3,
            "max_level": 7,
            "num_classes": 80,
            "num_anchors_per_location": 9,
        },
        "features": {level: 256 for level in range(3, 8)},
    },
    "retinanet_head_separable_attributes": {
        "module": "modeling.heads.dense_prediction_heads",
        "class": "RetinaNetHead",
        "kwargs": {
            "min_level": 3,
            "max_level": 7,
            "num_classes": 10,
            "num_anchors_per_location": 9,
            "num_convs": 2,
            "num_filters": 64,
            "use_separable_conv": True,
            "attribute_heads": [
                {"name": "depth", "type": "regression", "size": 1, "prediction_tower_name": ""},
                {"name": "a", "type": "classification", "size": 3, "prediction_tower_name": "t"},
                {"name": "b", "type": "regression", "size": 2, "prediction_tower_name": "t"},
            ],
        },
        "features": {level: 64 for level in range(3, 8)},
    },
    "retinanet_head_unshared_levels": {
        "module": "modeling.heads.dense_prediction_heads",
        "class": "RetinaNetHead",
        "kwargs": {
            "min_level": 3,
            "max_level": 5,
            "num_classes": 5,
            "num_anchors_per_location": 3,
            "num_convs": 2,
            "num_filters": 32,
            "share_level_convs": False,
        },
        "features": {level: 32 for level in range(3, 6)},
    },
    "rpn_head": {
        "module": "modeling.heads.dense_prediction_heads",
        "class": "RPNHead",
        "kwargs": {"min_level": 2, "max_level": 6, "num_anchors_per_location": 3},
        "features": {level: 256 for level in range(2, 7)},
    },
    "nasfpn": {
        "module": "modeling.decoders.nasfpn",
        "class": "NASFPN",
        "kwargs": {"min_level": 3, "max_level": 7},
        "features": RESNET50_CHANNELS,
        "input_specs": True,
    },
    "nasfpn_separable": {
        "module": "modeling.decoders.nasfpn",
        "class": "NASFPN",
        "kwargs": {
            "min_level": 3,
            "max_level": 7,
            "num_filters": 64,
            "num_repeats": 3,
            "use_separable_conv": True,
        },
        "features": RESNET50_CHANNELS,
        "input_specs": True,
    },
    "nasfpn_swish": {
        "module": "modeling.decoders.nasfpn",
        "class": "NASFPN",
        "kwargs": {
            "min_level": 3,
            "max_level": 7,
            "num_filters": 32,
            "num_repeats": 2,
            "activation": "swish",
        },
        "features": RESNET50_CHANNELS,
        "input_specs": True,
    },
    "fpn_concat": {
        "module": "modeling.decoders.fpn",
        "class": "FPN",
        "kwargs": {"min_level": 3, "max_level": 7, "fusion_type": "concat"},
        "features": RESNET50_CHANNELS,
        "input_specs": True,
    },
}


def sample_features(name: str) -> dict[str, np.ndarray]:
    """The seeded feature pyramid both sides run on: {level: [2, H_l, W_l, C_l]}."""
    rng = np.random.default_rng(SEED)
    return {
        str(level): rng.normal(size=[2, SIZE // 2**level, SIZE // 2**level, c]).astype(np.float32)
        for level, c in sorted(COMPONENTS[name]["features"].items())
    }


def build(name: str, package: str) -> Any:
    """Builds component `name` from `package` ('official.vision' or 'vision_core')."""
    import tensorflow as tf

    spec = COMPONENTS[name]
    module = importlib.import_module(f"{package}.{spec['module']}")
    kwargs = dict(spec["kwargs"])
    features = sample_features(name)
    if spec.get("input_specs"):
        kwargs["input_specs"] = {
            level: tf.TensorShape([None, *value.shape[1:]]) for level, value in features.items()
        }
    component = getattr(module, spec["class"])(**kwargs)
    component({k: tf.constant(v) for k, v in features.items()})  # creates the variables
    return component


def flatten(outputs: Any, prefix: str = "") -> dict[str, np.ndarray]:
    """{'0/3': array, ...} from nested dicts / tuples of tensors."""
    if isinstance(outputs, Mapping):
        items = outputs.items()
    elif isinstance(outputs, list | tuple):
        items = enumerate(outputs)
    else:
        return {prefix or "output": np.asarray(outputs)}
    flat = {}
    for key, value in items:
        flat.update(flatten(value, f"{prefix}/{key}" if prefix else str(key)))
    return flat


def randomize(component: Any, seed: int = SEED) -> None:
    """Seeded values for every variable, scaled so activations keep a moderate size."""
    rng = np.random.default_rng(seed)
    for v in component.weights:
        shape = [int(d) for d in v.shape]
        kind = v.name.rsplit("/", 1)[-1].split(":")[0]
        if kind == "moving_variance" or kind == "gamma":
            value = rng.uniform(0.5, 1.5, shape)
        elif len(shape) >= 2:
            fan_in = (
                int(np.prod(shape[:-1])) if kind != "depthwise_kernel" else int(np.prod(shape[:2]))
            )
            value = rng.normal(size=shape) * np.sqrt(1.0 / fan_in)
        else:  # biases, beta, moving_mean
            value = rng.uniform(-0.1, 0.1, shape)
        v.assign(value.astype(np.float32))


def export(name: str, output: str, exporter_dir: str) -> None:
    """Model Garden side: randomized component → weights bundle + input/output arrays."""
    import tensorflow as tf

    sys.path.insert(0, exporter_dir)
    from export_modelgarden_weights import write_bundle  # noqa: PLC0415 - found at run time

    component = build(name, "official.vision")
    randomize(component)
    features = sample_features(name)
    outputs = flatten(component({k: tf.constant(v) for k, v in features.items()}, training=False))
    write_bundle(output, component, {"module": name, "component": COMPONENTS[name]["class"]})
    arrays = {f"input/{k}": v for k, v in features.items()}
    arrays.update({f"output/{k}": np.asarray(v) for k, v in outputs.items()})
    np.savez(output + ".io.npz", **arrays)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("component", choices=sorted(COMPONENTS))
    parser.add_argument("--output", required=True)
    parser.add_argument("--exporter-dir", required=True)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    export(args.component, args.output, args.exporter_dir)
    print(json.dumps({"exported": args.component, "output": args.output}))


if __name__ == "__main__":
    main()

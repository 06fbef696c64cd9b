"""Numerical parity with Model Garden: same config, same weights, same input → max abs diff.

For each model, the reference venv (../shared/tools/modelgarden-venv.sh) builds Model Garden's
backbone with random weights and writes a weights bundle with a recorded sample
(`vision_core/interop/export_modelgarden_weights.py --sample`); then vision_core imports it the
way a user would (`vision-pipelines import-weights --check`) and compares outputs level by level.
Prints one JSON object with the converter's report counts and the max abs difference per output.

Decoders and heads (`--components`) go the same way, component by component: Model Garden's
is built with seeded random values for every variable (`modelgarden_components_worker.py`) and
run on a seeded feature pyramid; vision_core builds its own, imports the bundle with the same
converter, runs the same features and compares every output.

    python benchmarks/modelgarden_parity.py [--models resnet50 spinenet49] \
        [--components nasfpn retinanet_head]
    python benchmarks/modelgarden_parity.py --models   # components only (an empty list = none)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
EXPORTER = os.path.join(ROOT, "vision_core", "interop", "export_modelgarden_weights.py")
DEFAULT_MG_PYTHON = os.path.expanduser("~/.cache/modelgarden-venv/bin/python")
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)
from backbone_speed_worker import MODELS  # noqa: E402
from modelgarden_components_worker import COMPONENTS  # noqa: E402

# The parity set uses ViT-Ti/16 (the speed set uses ViT-B/16).
PARITY_MODELS = {
    **{k: v for k, v in MODELS.items() if k != "vit_b16"},
    "vit_ti16": (
        {
            "type": "vit",
            "vit": {
                "model_name": "vit-ti16",
                "hidden_size": 192,
                "patch_size": 16,
                "transformer": {"mlp_dim": 768, "num_heads": 3, "num_layers": 12},
            },
        },
        224,
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models", nargs="*", default=list(PARITY_MODELS), choices=sorted(PARITY_MODELS)
    )
    parser.add_argument(
        "--components",
        nargs="*",
        default=list(COMPONENTS),
        choices=sorted(COMPONENTS),
        help="decoders/heads to compare (default: all; the flag with no names: none)",
    )
    parser.add_argument("--modelgarden-python", default=DEFAULT_MG_PYTHON)
    args = parser.parse_args()
    if not os.path.exists(args.modelgarden_python):
        sys.exit(
            f"error: no Model Garden python at {args.modelgarden_python}; "
            "create it with ../shared/tools/modelgarden-venv.sh"
        )
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from vision_core.interop.weight_import import run_import

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            config, size = PARITY_MODELS[name]
            bundle = os.path.join(tmp, f"{name}.npz")
            cmd = [
                args.modelgarden_python,
                EXPORTER,
                "--backbone",
                json.dumps(config),
                "--input-size",
                str(size),
                str(size),
                "--sample",
                "--randomize-statistics",
                "--output",
                bundle,
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                results[name] = {"error": proc.stderr.strip().splitlines()[-3:]}
                continue
            try:
                report = run_import(
                    bundle,
                    os.path.join(tmp, f"{name}-imported"),
                    check=True,
                    allow_unmatched=True,
                )
            except Exception as err:  # noqa: BLE001 - reported per model, the others go on
                results[name] = {"error": f"{type(err).__name__}: {err}"}
                continue
            summary = report.to_dict()
            results[name] = {
                "input_size": size,
                "complete": summary["complete"],
                "matched": summary["num_matched"],
                "renamed": summary["num_renamed"],
                "unmatched_modelgarden": summary["num_unmatched_source"],
                "unmatched_vision_core": summary["num_unmatched_target"],
                "max_abs_diff": report.max_abs_diff,
                "worst": max(report.max_abs_diff.values()) if report.max_abs_diff else None,
            }
        components = {}
        for name in args.components:
            components[name] = _component_parity(name, args.modelgarden_python, tmp)
    output = {"benchmark": "modelgarden_parity", "results": results, "components": components}
    print(json.dumps(output, indent=2))


def _component_parity(name: str, modelgarden_python: str, tmp: str) -> dict:
    """Model Garden's randomized component vs vision_core's after importing its weights."""
    import numpy as np
    import tensorflow as tf
    from modelgarden_components_worker import build, flatten

    from vision_core.interop.weight_import import import_weights, read_bundle

    bundle_path = os.path.join(tmp, f"{name}.npz")
    cmd = [
        modelgarden_python,
        os.path.join(HERE, "modelgarden_components_worker.py"),
        name,
        "--output",
        bundle_path,
        "--exporter-dir",
        os.path.dirname(EXPORTER),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-3:]}
    try:
        component = build(name, "vision_core")
        report = import_weights(read_bundle(bundle_path), component, strict=False)
        with np.load(bundle_path + ".io.npz") as io:
            features = {
                key.split("/", 1)[1]: tf.constant(io[key])
                for key in io.files
                if key[:6] == "input/"
            }
            expected = {key.split("/", 1)[1]: io[key] for key in io.files if key[:7] == "output/"}
        ours = flatten(component(features, training=False))
    except Exception as err:  # noqa: BLE001 - reported per component, the others go on
        return {"error": f"{type(err).__name__}: {err}"}
    if sorted(ours) != sorted(expected):
        return {
            "error": f"outputs differ: vision_core {sorted(ours)}, Model Garden {sorted(expected)}"
        }
    diffs = {
        key: float(np.max(np.abs(ours[key].astype(np.float64) - expected[key]))) for key in expected
    }
    summary = report.to_dict()
    return {
        "complete": summary["complete"],
        "matched": summary["num_matched"],
        "renamed": summary["num_renamed"],
        "unmatched_modelgarden": summary["num_unmatched_source"],
        "unmatched_vision_core": summary["num_unmatched_target"],
        "params": int(component.count_params()),
        "max_abs_output": max(float(np.max(np.abs(v))) for v in expected.values()),
        "worst": max(diffs.values()),
        "max_abs_diff": diffs,
    }


if __name__ == "__main__":
    main()

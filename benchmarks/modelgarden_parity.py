"""Numerical parity with Model Garden: same config, same weights, same input → max abs diff.

For each model, the reference venv (../shared/tools/modelgarden-venv.sh) builds Model Garden's
backbone with random weights and writes a weights bundle with a recorded sample
(`vision_core/interop/export_modelgarden_weights.py --sample`); then vision_core imports it the
way a user would (`vision-pipelines import-weights --check`) and compares outputs level by level.
Prints one JSON object with the converter's report counts and the max abs difference per output.

    python benchmarks/modelgarden_parity.py [--models resnet50 spinenet49] [--input-size 224]
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
        "--models", nargs="+", default=list(PARITY_MODELS), choices=sorted(PARITY_MODELS)
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
    print(json.dumps({"benchmark": "modelgarden_parity", "results": results}, indent=2))


if __name__ == "__main__":
    main()

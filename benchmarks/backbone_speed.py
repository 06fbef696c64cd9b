"""Backbone speed beside Model Garden's, measured in the same run: forward latency at batch 1
and one training step at batch 8, on CPU, for ResNet-50, EfficientNet-B0, MobileNetV2,
ViT-B/16 and SpineNet-49 (224x224; SpineNet 256x256, its smallest valid size near 224).

Each (library, model) pair runs in its own process, one after another, so the two never compete
for the cores. Model Garden runs from the reference venv (../shared/tools/modelgarden-venv.sh);
without it, only vision_core's figures are printed. Prints one JSON object; ratios are
vision_core / Model Garden (below 1.0 = we are faster).

    python benchmarks/backbone_speed.py [--models resnet50 vit_b16] [--modelgarden-python PY]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "backbone_speed_worker.py")
DEFAULT_MG_PYTHON = os.path.expanduser("~/.cache/modelgarden-venv/bin/python")
sys.path.insert(0, HERE)
from backbone_speed_worker import MODELS  # noqa: E402


def _run(python: str, impl: str, model: str, extra: list[str]) -> dict:
    cmd = [python, WORKER, "--impl", impl, "--model", model, *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1:] or ["failed"], "command": cmd}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=sorted(MODELS))
    parser.add_argument("--modelgarden-python", default=DEFAULT_MG_PYTHON)
    parser.add_argument("--forward-repeats", type=int, default=20)
    parser.add_argument("--train-repeats", type=int, default=5)
    args = parser.parse_args()

    extra = [
        "--forward-repeats",
        str(args.forward_repeats),
        "--train-repeats",
        str(args.train_repeats),
    ]
    have_mg = os.path.exists(args.modelgarden_python)
    results = {}
    for model in args.models:
        ours = _run(sys.executable, "vision_core", model, extra)
        entry = {"vision_core": ours}
        if have_mg:
            theirs = _run(args.modelgarden_python, "modelgarden", model, extra)
            entry["modelgarden"] = theirs
            if "error" not in ours and "error" not in theirs:
                entry["forward_ratio"] = ours["forward_batch1_s"] / theirs["forward_batch1_s"]
                entry["train_step_ratio"] = ours["train_step_s"] / theirs["train_step_s"]
                entry["same_params"] = ours["params"] == theirs["params"]
        results[model] = entry
    print(
        json.dumps(
            {
                "benchmark": "backbone_speed",
                "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                "modelgarden_python": args.modelgarden_python if have_mg else None,
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

"""RetinaNet ResNet-50-FPN speed beside Model Garden's, measured in the same run, on CPU.

Per library (each in its own process, one after the other): the network alone and full
inference with post-processing at batch 1 for 256x256 and 512x512, and one training step at
batch 2, 256x256. Prints one JSON object with the ratios the detection issue targets:
`full_over_network` (ours; target <= 1.3), `full_inference_speedup` (Model Garden's full
inference time / ours) and `train_step_ratio` (ours / Model Garden's; target <= 1.0).

    python benchmarks/retinanet_speed.py [--modelgarden-python PY] [--repeats 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "retinanet_speed_worker.py")
DEFAULT_MG_PYTHON = os.path.expanduser("~/.cache/modelgarden-venv/bin/python")


def _run(python: str, impl: str, extra: list[str]) -> dict:
    cmd = [python, WORKER, "--impl", impl, *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-3:] or ["failed"], "command": cmd}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modelgarden-python", default=DEFAULT_MG_PYTHON)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--train-repeats", type=int, default=5)
    args = parser.parse_args()
    extra = ["--repeats", str(args.repeats), "--train-repeats", str(args.train_repeats)]
    ours = _run(sys.executable, "vision_core", extra)
    report = {
        "benchmark": "retinanet_speed",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "vision_core": ours,
    }
    if os.path.exists(args.modelgarden_python):
        theirs = _run(args.modelgarden_python, "modelgarden", extra)
        report["modelgarden"] = theirs
        if "error" not in ours and "error" not in theirs:
            report["full_inference_speedup"] = {
                size: theirs["inference"][size]["full_s"] / ours["inference"][size]["full_s"]
                for size in ours["inference"]
            }
            report["network_ratio"] = {
                size: ours["inference"][size]["network_s"] / theirs["inference"][size]["network_s"]
                for size in ours["inference"]
            }
            report["train_step_ratio"] = ours["train_step_s"] / theirs["train_step_s"]
            report["same_params"] = ours["params"] == theirs["params"]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

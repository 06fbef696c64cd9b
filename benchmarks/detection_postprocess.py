"""RetinaNet post-processing speed beside Model Garden's, on identical raw outputs.

For batch 1 at 256x256 and 512x512, RetinaNet-shaped raw head outputs (levels 3-7, 9 anchors
per location, 80 classes; logits ~ normal(-4, 1.5), so about a quarter of the (anchor, class)
pairs clear the 0.05 score threshold; box codes ~ normal(0, 0.3)) go through
`MultilevelDetectionGenerator` with Model Garden's default settings (pre_nms_top_k 5000,
threshold 0.05, IoU 0.5, 100 detections) for each NMS version. Reports the first call
(tracing included) and the median of repeated calls, each library in its own process, one
after the other. Model Garden runs from the reference venv (../shared/tools/modelgarden-venv.sh);
without it only our figures are printed. Ratios are Model Garden / vision_core (above 1.0 = we
are faster). Note Model Garden's 'batched' ignores pre_nms_top_k.

    python benchmarks/detection_postprocess.py [--versions v1 v2 batched] [--repeats 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "detection_worker.py")
DEFAULT_MG_PYTHON = os.path.expanduser("~/.cache/modelgarden-venv/bin/python")
SIZES = (256, 512)
NUM_CLASSES = 80
ANCHORS_PER_LOCATION = 9


def make_inputs(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    data = {"sizes": np.array(SIZES)}
    for size in SIZES:
        for level in range(3, 8):
            side = size // 2**level
            shape = [1, side, side]
            data[f"scores_{size}_{level}"] = rng.normal(
                -4.0, 1.5, [*shape, ANCHORS_PER_LOCATION * NUM_CLASSES]
            ).astype(np.float32)
            data[f"boxes_{size}_{level}"] = rng.normal(
                0.0, 0.3, [*shape, ANCHORS_PER_LOCATION * 4]
            ).astype(np.float32)
    return data


def _run(python: str, impl: str, inputs: str, versions: list[str], repeats: int) -> dict:
    cmd = [python, WORKER, "--impl", impl, "--mode", "time", "--inputs", inputs]
    cmd += ["--versions", *versions, "--repeats", str(repeats)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-3:], "command": cmd}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--versions", nargs="+", default=["v1", "v2", "batched"])
    parser.add_argument("--modelgarden-python", default=DEFAULT_MG_PYTHON)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    have_mg = os.path.exists(args.modelgarden_python)
    with tempfile.TemporaryDirectory() as tmp:
        inputs = os.path.join(tmp, "inputs.npz")
        np.savez(inputs, **make_inputs())
        ours = _run(sys.executable, "vision_core", inputs, args.versions, args.repeats)
        theirs = (
            _run(args.modelgarden_python, "modelgarden", inputs, args.versions, args.repeats)
            if have_mg
            else None
        )
    speedups = {}
    if theirs and "error" not in theirs and "error" not in ours:
        for key, mine in ours["results"].items():
            reference = theirs["results"][key]
            speedups[key] = {
                "median": reference["median_s"] / mine["median_s"],
                "first_call": reference["first_call_s"] / mine["first_call_s"],
            }
    print(
        json.dumps(
            {
                "benchmark": "detection_postprocess",
                "machine": {
                    "cpus": os.cpu_count(),
                    "platform": platform.platform(),
                    "load_average_1m": os.getloadavg()[0],
                },
                "inputs": {
                    "batch": 1,
                    "sizes": list(SIZES),
                    "levels": "3-7",
                    "anchors_per_location": ANCHORS_PER_LOCATION,
                    "num_classes": NUM_CLASSES,
                },
                "vision_core": ours,
                "modelgarden": theirs,
                "modelgarden_over_vision_core": speedups,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

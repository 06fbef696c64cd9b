"""Wall time of one pipeline run with every step in the project image (KFP's DockerRunner, through
Docker or podman) against the same run with the subprocess runner, on the same machine.

Prints one JSON object. Usage (build the image first: make image):
    python benchmarks/container_run.py [--image vision-pipelines:0.1.0] [--full]
        [--config configs/pipelines/shapes_segmentation.yaml]

By default the run is the shapes segmentation pipeline shrunk to 96 training images and 40 steps
(what `make test-image` runs), so the figure is mostly the per-step start-up cost; --full runs
the config as it is (`make run`'s 1,500 steps). Step caching is off, so every step runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = {
    "dataset.shapes.num_train": 96,
    "dataset.shapes.num_validation": 24,
    "dataset.num_shards": 2,
    "experiment.overrides": json.dumps(
        {
            "trainer": {
                "train_steps": 40,
                "validation_interval": 40,
                "steps_per_loop": 20,
                "checkpoint_interval": 20,
            }
        }
    ),
    "gate.min_value": 0.0,
}


def run(config: str, overrides: dict, runner_args: list[str], workdir: str) -> dict:
    args = [sys.executable, "-m", "pipelines.cli", "run", config, "--json", "--no-cache"]
    overrides = {
        **overrides,
        "pipeline_root": os.path.join(workdir, "root"),
        "registry.uri": os.path.join(workdir, "registry"),
    }
    for key, value in overrides.items():
        args += ["--set", f"{key}={value}"]
    tic = time.perf_counter()
    result = subprocess.run(
        [*args, *runner_args], capture_output=True, text=True, cwd=ROOT, check=False
    )
    wall = time.perf_counter() - tic
    if result.returncode != 0:
        sys.exit(f"run failed ({' '.join(runner_args) or 'subprocess'}):\n{result.stderr[-3000:]}")
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    return {
        "wall_seconds": round(wall, 1),
        "mean_iou": summary["metrics"].get("mean_iou"),
        "gate_passed": summary["gate"]["passed"],
        "registry_version": summary["registry"]["version"],
        **({"image": summary["image"]} if summary.get("image") else {}),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--image", default=None, help="default: make image's tag")
    parser.add_argument("--config", default=f"{ROOT}/configs/pipelines/shapes_segmentation.yaml")
    parser.add_argument("--full", action="store_true", help="the config's own sizes and steps")
    args = parser.parse_args()
    overrides = {} if args.full else SMALL
    docker_args = ["--runner", "docker"] + (["--image", args.image] if args.image else [])
    with tempfile.TemporaryDirectory() as tmp:
        subprocess_run = run(args.config, overrides, [], os.path.join(tmp, "subprocess"))
        docker_run = run(args.config, overrides, docker_args, os.path.join(tmp, "docker"))
    print(
        json.dumps(
            {
                "benchmark": "container_run",
                "config": os.path.relpath(args.config, ROOT),
                "size": "full" if args.full else "small (96 images, 40 steps)",
                "subprocess": subprocess_run,
                "docker": docker_run,
                "container_overhead_seconds": round(
                    docker_run["wall_seconds"] - subprocess_run["wall_seconds"], 1
                ),
                "ratio": round(docker_run["wall_seconds"] / subprocess_run["wall_seconds"], 2),
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

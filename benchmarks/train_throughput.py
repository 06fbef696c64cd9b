"""Training throughput of the default shapes segmentation config: images/s on this machine.

Converts a small shapes dataset, then times training steps after a warm-up (graph tracing and
the first loop are excluded). Prints one JSON object. Usage:
    python benchmarks/train_throughput.py [--steps 40] [--warmup-steps 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/experiments/shapes_segmentation.yaml")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup-steps", type=int, default=10)
    parser.add_argument("--num-images", type=int, default=64)
    args = parser.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from components.common.io import split_pattern
    from components.convert_dataset import pipeline as convert
    from components.convert_dataset.shapes import generate_shapes_dataset
    from vision_core.configs import load_experiment
    from vision_core.training.trainer import Trainer

    params = load_experiment(None, [args.config])
    size = list(params.task.model.input_size[:2])
    with tempfile.TemporaryDirectory() as tmp:
        src, data = os.path.join(tmp, "src"), os.path.join(tmp, "data")
        generate_shapes_dataset(
            src, num_train=args.num_images, num_validation=8, image_size=tuple(size), seed=0
        )
        convert.run(src, data, num_shards=2)
        params.override({"task": {"train_data": {"input_path": split_pattern(data, "train")}}})
        trainer = Trainer(params, os.path.join(tmp, "model"))
        trainer.train(args.warmup_steps)
        tic = time.perf_counter()
        trainer.train(args.steps)
        seconds = time.perf_counter() - tic
    batch = params.task.train_data.global_batch_size
    print(
        json.dumps(
            {
                "benchmark": "train_throughput",
                "command": f"python benchmarks/train_throughput.py --config {args.config} "
                f"--steps {args.steps} --warmup-steps {args.warmup_steps}",
                "model": f"{params.task.model.backbone.type}+{params.task.model.decoder.type}",
                "parameters": int(trainer.model.count_params()),
                "input_size": size,
                "global_batch_size": batch,
                "steps": args.steps,
                "seconds": round(seconds, 2),
                "steps_per_second": round(args.steps / seconds, 3),
                "images_per_second": round(args.steps * batch / seconds, 1),
                "cpus": os.cpu_count(),
                "machine": platform.machine(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

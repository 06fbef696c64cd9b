"""Conversion throughput: images/s of the Beam converter on the generated shapes dataset.

Prints one JSON object. Usage:
    python benchmarks/convert_throughput.py [--num-images 400] [--image-size 128]
        [--running-mode in_memory|multi_processing] [--workers 2]
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
    parser.add_argument("--num-images", type=int, default=400)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--num-shards", type=int, default=4)
    parser.add_argument("--running-mode", default="in_memory")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()

    from components.convert_dataset import pipeline as convert
    from components.convert_dataset.shapes import generate_shapes_dataset

    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "src")
        tic = time.perf_counter()
        generate_shapes_dataset(
            src,
            num_train=args.num_images,
            num_validation=0,
            image_size=(args.image_size, args.image_size),
            seed=0,
        )
        generate_s = time.perf_counter() - tic
        beam_args = [
            f"--direct_running_mode={args.running_mode}",
            f"--direct_num_workers={args.workers}",
        ]
        tic = time.perf_counter()
        summary = convert.run(
            src,
            os.path.join(tmp, "out"),
            splits=("train",),
            num_shards=args.num_shards,
            beam_args=beam_args,
        )
        convert_s = time.perf_counter() - tic
    written = summary["splits"]["train"]["records"]
    print(
        json.dumps(
            {
                "benchmark": "convert_throughput",
                "command": "python benchmarks/convert_throughput.py "
                + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
                "images": written,
                "image_size": args.image_size,
                "running_mode": args.running_mode,
                "workers": args.workers,
                "convert_seconds": round(convert_s, 2),
                "images_per_second": round(written / convert_s, 1),
                "generate_seconds": round(generate_s, 2),
                "cpus": os.cpu_count(),
                "machine": platform.machine(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

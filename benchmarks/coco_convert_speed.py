"""COCO → TFRecord conversion speed and memory: our Beam converter against Model Garden's
`create_coco_tf_record`, on the same COCO-format input with instance masks.

Input: the generated shapes dataset at --image-size, its COCO JSON rewritten the way real COCO
files look (polygon segmentations, one crowd RLE per 50 images); subsets of the first N images.
Every conversion runs as its own process (the command a user types), so the figures include
start-up; peak memory is the largest sum of resident memory over the whole process tree (the
launcher plus Beam's worker processes, or Model Garden's pool), sampled every 0.1 s from /proc.

Runs:
  ours, DirectRunner multi_processing, 1 and 2 workers, on --num-images images;
  Model Garden (reference venv) with its default pool (one process per core) and with 1 process;
  ours with 2 workers on each --memory-images count, for peak memory against the image count
  (and Model Garden on the same counts, for the speed ratio at each size).

Prints one JSON object:
    python benchmarks/coco_convert_speed.py [--num-images 2000] [--memory-images 2000,8000]
        [--image-size 256] [--modelgarden-python PY] [--skip-modelgarden] [--input-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from modelgarden_tfrecord_interop import _convex_hull  # noqa: E402

from components.convert_dataset import rle, shapes  # noqa: E402

DEFAULT_MG_PYTHON = os.path.expanduser("~/.cache/modelgarden-venv/bin/python")
NUM_SHARDS = 8


def _tree_rss_bytes(pid: int) -> int:
    """Resident memory of `pid` and all its descendants (Linux /proc)."""
    total, stack, seen = 0, [pid], set()
    while stack:
        p = stack.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    stack.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


def run_measured(cmd: list[str], env: dict | None = None) -> dict:
    """Runs `cmd`; returns wall seconds and the peak resident memory of its process tree."""
    tic = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT
    )
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], _tree_rss_bytes(proc.pid))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - tic
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-3000:]}")
    return {"seconds": round(wall, 2), "peak_rss_mib": round(peak[0] / 2**20, 1)}


def build_inputs(root: str, num_images: int, size: int, subsets: list[int]) -> dict[int, str]:
    """Shapes images + one COCO instances JSON (polygons) per subset size; {N: json path}."""
    src = os.path.join(root, "shapes")
    shapes.generate_shapes_dataset(
        src, num_train=num_images, num_validation=0, image_size=(size, size), seed=0
    )
    with open(os.path.join(src, "annotations", "instances_train.json")) as f:
        data = json.load(f)
    by_image: dict[int, list] = {}
    for ann in data["annotations"]:
        visible = rle.decode(ann["segmentation"])
        if ann["image_id"] % 50 == 0:
            # COCO stores crowd regions as uncompressed RLE.
            ann.update(
                iscrowd=1,
                segmentation={"size": list(visible.shape), "counts": rle.mask_to_counts(visible)},
            )
        else:
            ann["segmentation"] = [_convex_hull(visible)]
        by_image.setdefault(ann["image_id"], []).append(ann)
    files = {}
    images = sorted(data["images"], key=lambda im: im["id"])
    for n in subsets:
        chosen = images[:n]
        subset = {
            **data,
            "images": chosen,
            "annotations": [a for im in chosen for a in by_image.get(im["id"], [])],
        }
        files[n] = os.path.join(root, f"instances_{n}.json")
        with open(files[n], "w") as f:
            json.dump(subset, f)
    files["image_dir"] = os.path.join(src, "images", "train")
    return files


def cached_inputs(root: str, num_images: int, size: int, subsets: list[int]) -> dict:
    """`build_inputs` under `root`, or what an earlier run with the same settings left there."""
    key = os.path.join(root, f"inputs-{num_images}-{size}-{'-'.join(map(str, subsets))}.json")
    if os.path.exists(key):
        with open(key) as f:
            return {int(k) if k.isdigit() else k: v for k, v in json.load(f).items()}
    folder = os.path.join(root, f"data-{num_images}-{size}")
    if os.path.exists(folder):
        import shutil

        shutil.rmtree(folder)
    inputs = build_inputs(folder, num_images, size, subsets)
    with open(key, "w") as f:
        json.dump({str(k): v for k, v in inputs.items()}, f)
    return inputs


def ours(inputs: dict, n: int, workers: int, out: str) -> dict:
    cmd = [
        sys.executable, "-m", "components.convert_dataset", "coco",
        "--images", inputs["image_dir"], "--annotations", inputs[n], "--splits", "train",
        "--include-masks", "--output", out, "--num-shards", str(NUM_SHARDS),
        "--direct-running-mode", "multi_processing", "--direct-num-workers", str(workers),
        "--no-progress",
    ]  # fmt: skip
    result = run_measured(cmd)
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    result["records"] = summary["records"]
    result["images_per_s"] = round(n / result["seconds"], 1)
    return result


def modelgarden(python: str, inputs: dict, n: int, processes: int | None, out: str) -> dict:
    os.makedirs(out, exist_ok=True)
    cmd = [
        python, "-m", "official.vision.data.create_coco_tf_record",
        f"--image_dir={inputs['image_dir']}", f"--object_annotations_file={inputs[n]}",
        f"--output_file_prefix={os.path.join(out, 'train')}", f"--num_shards={NUM_SHARDS}",
        "--include_masks=true",
    ]  # fmt: skip
    if processes is not None:
        cmd.append(f"--num_processes={processes}")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ""}
    result = run_measured(cmd, env=env)
    result["images_per_s"] = round(n / result["seconds"], 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-images", type=int, default=2000)
    parser.add_argument("--memory-images", default="2000,8000")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--modelgarden-python", default=DEFAULT_MG_PYTHON)
    parser.add_argument("--skip-modelgarden", action="store_true")
    parser.add_argument(
        "--input-dir",
        default=None,
        help="keep the generated input here and reuse it on later runs (building 8,000 "
        "images takes minutes); default: a temporary folder",
    )
    args = parser.parse_args()
    memory_counts = [int(n) for n in args.memory_images.split(",") if n]
    subsets = sorted({args.num_images, *memory_counts})

    result: dict = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "image_size": args.image_size,
        "num_shards": NUM_SHARDS,
    }
    with tempfile.TemporaryDirectory(prefix="coco-convert-speed-") as tmp:
        tic = time.perf_counter()
        inputs = cached_inputs(args.input_dir or tmp, max(subsets), args.image_size, subsets)
        result["input_build_seconds"] = round(time.perf_counter() - tic, 1)
        n = args.num_images
        with open(inputs[n]) as f:
            data = json.load(f)
        result["input"] = {
            "images": len(data["images"]),
            "objects": len(data["annotations"]),
            "crowd_rle_objects": sum(a["iscrowd"] for a in data["annotations"]),
            "mean_image_kib": round(
                float(
                    np.mean(
                        [
                            os.path.getsize(os.path.join(inputs["image_dir"], im["file_name"]))
                            for im in data["images"]
                        ]
                    )
                )
                / 1024,
                1,
            ),
        }
        runs = result["runs"] = {}
        for workers in (1, 2):
            runs[f"ours_{workers}_worker"] = ours(
                inputs, n, workers, os.path.join(tmp, f"ours{workers}")
            )
        if not args.skip_modelgarden:
            runs["modelgarden_default_pool"] = modelgarden(
                args.modelgarden_python, inputs, n, None, os.path.join(tmp, "mg")
            )
            runs["modelgarden_1_process"] = modelgarden(
                args.modelgarden_python, inputs, n, 0, os.path.join(tmp, "mg0")
            )
            mg = runs["modelgarden_default_pool"]["images_per_s"]
            result["ratio_ours_2_workers_vs_modelgarden"] = round(
                runs["ours_2_worker"]["images_per_s"] / mg, 2
            )
            result["ratio_ours_1_worker_vs_modelgarden_1_process"] = round(
                runs["ours_1_worker"]["images_per_s"]
                / runs["modelgarden_1_process"]["images_per_s"],
                2,
            )
        result["speedup_2_vs_1_worker"] = round(
            runs["ours_2_worker"]["images_per_s"] / runs["ours_1_worker"]["images_per_s"], 2
        )
        memory = result["peak_memory_by_images"] = {}
        for count in memory_counts:
            key = f"ours_2_worker_{count}"
            run = (
                runs["ours_2_worker"]
                if count == n
                else ours(inputs, count, 2, os.path.join(tmp, key))
            )
            entry = memory[str(count)] = {
                "peak_rss_mib": run["peak_rss_mib"],
                "seconds": run["seconds"],
                "images_per_s": run["images_per_s"],
            }
            if not args.skip_modelgarden:
                mg_run = (
                    runs["modelgarden_default_pool"]
                    if count == n
                    else modelgarden(
                        args.modelgarden_python, inputs, count, None, os.path.join(tmp, f"m{count}")
                    )
                )
                entry["modelgarden"] = mg_run
                entry["ratio_vs_modelgarden"] = round(
                    run["images_per_s"] / mg_run["images_per_s"], 2
                )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

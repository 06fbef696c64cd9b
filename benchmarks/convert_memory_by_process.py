"""Peak resident memory of each process of a COCO conversion (launcher, Beam workers), for
2,000 and 8,000 images of `coco_convert_speed.py`'s input, so growth can be traced to a process.

Prints one JSON object:
    python benchmarks/convert_memory_by_process.py [--input-dir DIR] [--counts 2000,8000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from coco_convert_speed import NUM_SHARDS, ROOT, cached_inputs  # noqa: E402


def _rss_mib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def _tree(pid: int) -> list[int]:
    found, stack = [], [pid]
    while stack:
        p = stack.pop()
        found.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    stack.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return found


def _role(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline") as f:
            cmd = f.read().replace("\0", " ")
    except OSError:
        return "?"
    if "sdk_worker" in cmd:
        return "beam_worker"
    return "launcher" if "components.convert_dataset" in cmd else "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--input-dir", default=os.path.expanduser("~/.cache/vision-pipelines/coco-bench")
    )
    parser.add_argument("--counts", default="2000,8000")
    parser.add_argument("--image-size", type=int, default=256)
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    inputs = cached_inputs(args.input_dir, max(counts), args.image_size, counts)
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in counts:
            cmd = [
                sys.executable, "-m", "components.convert_dataset", "coco",
                "--images", inputs["image_dir"], "--annotations", inputs[n], "--splits", "train",
                "--include-masks", "--output", os.path.join(tmp, str(n)),
                "--num-shards", str(NUM_SHARDS), "--direct-running-mode", "multi_processing",
                "--direct-num-workers", "2", "--no-progress",
            ]  # fmt: skip
            proc = subprocess.Popen(
                cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT
            )
            peaks: dict[int, int] = {}
            roles: dict[int, str] = {}
            while proc.poll() is None:
                for pid in _tree(proc.pid):
                    peaks[pid] = max(peaks.get(pid, 0), _rss_mib(pid))
                    roles.setdefault(pid, _role(pid))
                time.sleep(0.1)
            result[str(n)] = sorted(
                ({"role": roles[p], "peak_rss_mib": m} for p, m in peaks.items() if m > 1),
                key=lambda r: (r["role"], -r["peak_rss_mib"]),
            )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

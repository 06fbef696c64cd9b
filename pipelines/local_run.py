"""Runs a pipeline config end to end under the real KFP local runner and reads back the results."""

from __future__ import annotations

import datetime
import json
import logging
import os
from typing import Any

from pipelines.config import PipelineConfig
from pipelines.training import build_pipeline

logger = logging.getLogger(__name__)


class PipelineRunError(RuntimeError):
    """A step of the local run failed; the message names the step and where its logs are."""


def run_local(config: PipelineConfig) -> dict[str, Any]:
    """Executes the pipeline with `kfp.local.SubprocessRunner` and returns a summary.

    The summary holds each step's outputs (read from its executor_output.json), the gate's
    decision, the registry version (or None when the gate held it back) and artifact paths.
    """
    from kfp import local

    root = os.path.abspath(config.pipeline_root)
    run_name = f"{config.name}-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S-%f')}"
    # Build (and so validate the experiment config) before anything is written.
    pipeline = build_pipeline(config, run_name=run_name)
    os.makedirs(root, exist_ok=True)
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=root,
        raise_on_error=True,
        enable_caching=config.enable_caching,
    )
    before = set(os.listdir(root))
    try:
        pipeline()
    except Exception as err:  # kfp raises RuntimeError with the failing task's name.
        run_dir = _new_run_dir(root, before)
        raise PipelineRunError(
            f"pipeline {config.name!r} failed: {err} (run folder: {run_dir})"
        ) from None
    run_dir = _new_run_dir(root, before)
    return summarize_run(run_dir, config)


def _new_run_dir(root: str, before: set[str]) -> str | None:
    new = sorted(set(os.listdir(root)) - before)
    new = [d for d in new if os.path.isdir(os.path.join(root, d)) and not d.startswith(".")]
    return os.path.join(root, new[-1]) if new else None


def read_task_outputs(task_dir: str) -> dict[str, Any]:
    path = os.path.join(task_dir, "executor_output.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        data = json.load(f)
    outputs: dict[str, Any] = dict(data.get("parameterValues", {}))
    for name, artifact_list in data.get("artifacts", {}).items():
        artifacts = artifact_list.get("artifacts", [])
        if artifacts:
            outputs[name] = {
                "uri": artifacts[0].get("uri"),
                "metadata": artifacts[0].get("metadata", {}),
            }
    return outputs


def summarize_run(run_dir: str | None, config: PipelineConfig) -> dict[str, Any]:
    if run_dir is None:
        raise PipelineRunError("the local run left no run folder under pipeline_root")
    steps = {}
    for name in sorted(os.listdir(run_dir)):
        task_dir = os.path.join(run_dir, name)
        if os.path.isdir(task_dir):
            steps[name] = read_task_outputs(task_dir)
            steps[name]["dir"] = task_dir

    def find(prefix: str) -> dict[str, Any]:
        for name, outputs in steps.items():
            if name.startswith(prefix):
                return outputs
        return {}

    evaluate = find("evaluate")
    validate = find("validate")
    push = find("push")
    train = find("train")
    # Steps served from the cache left no folder in this run: their outputs are in the run that
    # produced them, found through the artifact URIs the evaluate step records.
    cached = []
    scored = (evaluate.get("report") or {}).get("metadata", {})
    for step, uri_key in (("convert", "dataset_uri"), ("train", "model_uri")):
        if find(step) or not scored.get(uri_key):
            continue
        task_dir = os.path.dirname(str(scored[uri_key]))
        steps[os.path.basename(task_dir)] = {**read_task_outputs(task_dir), "dir": task_dir}
        cached.append(step)
    train = find("train")
    return {
        "run_dir": run_dir,
        "cached_steps": cached,
        "steps": steps,
        "metrics": evaluate.get("Output", {}),
        "gate": {
            "passed": validate.get("Output"),
            "reason": (validate.get("decision") or {}).get("metadata", {}).get("reason"),
        },
        "registry": {
            "uri": config.registry.uri,
            "model_name": config.registry.model_name,
            "version": _as_int((push.get("Output") or {}).get("version")),
        },
        "train": train.get("Output", {}),
        "report": os.path.join(find("evaluate").get("dir", ""), "report"),
        "figures": os.path.join(find("evaluate").get("dir", ""), "figures"),
    }


def _as_int(value: Any) -> int | None:
    """KFP carries numbers inside dict outputs as JSON floats; versions are whole numbers."""
    return None if value is None else int(value)

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


RUNNERS = ("subprocess", "docker")


def run_local(
    config: PipelineConfig, runner: str = "subprocess", image: str | None = None
) -> dict[str, Any]:
    """Executes the pipeline with KFP's local runner and returns a summary.

    runner: 'subprocess' (`kfp.local.SubprocessRunner`: every step in this Python environment)
      or 'docker' (`kfp.local.DockerRunner`: every step in the project image, `image` or the
      config's or the package's tag, through Docker or podman; pipelines/docker_runner.py).
    The summary holds each step's outputs (read from its executor_output.json), the gate's
    decision, the registry version (or None when the gate held it back) and artifact paths.
    """
    if runner not in RUNNERS:
        raise ValueError(f"runner: {runner!r} is not one of {', '.join(RUNNERS)}")
    root = os.path.abspath(config.pipeline_root)
    run_name = f"{config.name}-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S-%f')}"
    if runner == "subprocess":
        # Build (and so validate the experiment config) before anything is written.
        pipeline = build_pipeline(config, run_name=run_name, runs_in_image=False)
        return _execute(config, pipeline, _subprocess_runner(), root)
    return _run_in_containers(config, image, run_name, root)


def _subprocess_runner() -> Any:
    from kfp import local

    return local.SubprocessRunner(use_venv=False)


def _run_in_containers(
    config: PipelineConfig, image: str | None, run_name: str, root: str
) -> dict[str, Any]:
    import dataclasses

    import docker

    from components.kfp_ops import DEFAULT_IMAGE
    from pipelines import docker_runner

    with docker_runner.docker_api() as api:
        client = docker.DockerClient(base_url=api)
        try:
            tag, image_id = docker_runner.resolve_local_image(
                client, image or config.image or DEFAULT_IMAGE
            )
        finally:
            client.close()
        logger.info("running every step in %s (%s) through %s", tag, image_id[:19], api)
        config = dataclasses.replace(config, image=tag)
        # The image ID is the code's identity: a rebuilt image invalidates the step cache.
        pipeline = build_pipeline(config, run_name=run_name, code_version=f"image:{image_id}")
        os.makedirs(root, exist_ok=True)
        runner = docker_runner.make_runner(run_name, docker_runner.host_paths(config))
        previous = os.environ.get("DOCKER_HOST")
        os.environ["DOCKER_HOST"] = api  # docker.from_env() in KFP's task handler
        try:
            with docker_runner.kfp_step_containers():
                summary = _execute(config, pipeline, runner, root)
        finally:
            if previous is None:
                os.environ.pop("DOCKER_HOST", None)
            else:
                os.environ["DOCKER_HOST"] = previous
    summary["image"] = {"tag": tag, "id": image_id}
    return summary


def _execute(config: PipelineConfig, pipeline: Any, runner: Any, root: str) -> dict[str, Any]:
    from kfp import local

    os.makedirs(root, exist_ok=True)
    local.init(
        runner=runner,
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
    summary = summarize_run(run_dir, config)
    _check_step_outputs(summary)
    return summary


def _check_step_outputs(summary: dict[str, Any]) -> None:
    """Every step that ran must have written its executor output: a runner that reports a
    step as succeeded although it left nothing (a container that vanished) fails the run."""
    missing = [
        name
        for name, outputs in summary["steps"].items()
        if not os.path.exists(os.path.join(outputs["dir"], "executor_output.json"))
    ]
    if missing:
        raise PipelineRunError(
            f"step(s) {', '.join(missing)} reported success but wrote no outputs "
            f"(run folder: {summary['run_dir']})"
        )


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

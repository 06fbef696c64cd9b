"""Submitting and scheduling pipelines on a Kubeflow Pipelines cluster (KFP v2beta1 API).

`submit_kfp` compiles the pipeline config and starts one run; `schedule_kfp` creates a recurring
run from a cron expression; `list_schedules`, `set_schedule_enabled` and `delete_schedule`
manage them. Everything goes through `kfp.Client`, the KFP SDK's client of the REST API.

Paths in a pipeline config are local by default (`artifacts/...`). A cluster cannot read them,
so a local `pipeline_root` is dropped on submission (the cluster's default root is used unless
`--pipeline-root` names a bucket), and the caller is told; a local registry or source folder is
reported by `cluster_warnings` (shared with the Vertex AI path in `pipelines.vertex`).

The image the steps run in must be one a cluster can pull: `use_cluster_image` resolves and
checks it (`pipelines.image_ref`) before any server is contacted, and a pipeline compiled for an
image pinned by digest keys its step cache on that digest.
"""

from __future__ import annotations

import os
import socket
import tempfile
import urllib.parse
from typing import Any

from pipelines.config import PipelineConfig
from pipelines.image_ref import image_code_version, resolve_cluster_image

REMOTE_SCHEMES = ("gs://", "s3://", "minio://", "https://", "http://")


class SubmitError(RuntimeError):
    """A cluster that cannot be reached or refused the request, with what to check."""


def check_reachable(host: str, timeout: float = 5.0) -> None:
    """Fails fast, naming the host, when nothing listens there (kfp.Client would retry ~25 s).

    Raises:
      SubmitError: a malformed URL or a host that refuses or does not answer the connection.
    """
    parsed = urllib.parse.urlparse(host)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise SubmitError(f"--kfp-host: expected an http(s):// URL, got {host!r}")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            pass
    except OSError as err:
        raise SubmitError(
            f"--kfp-host {host}: cannot connect ({err}); check the URL, a port-forward "
            "(kubectl port-forward svc/ml-pipeline-ui 8080:80 -n kubeflow) or your network"
        ) from err


def client(host: str, namespace: str | None = None, token: str | None = None) -> Any:
    """A `kfp.Client` for `host`, after checking that it answers."""
    import kfp

    check_reachable(host)
    kwargs: dict[str, Any] = {"host": host, "existing_token": token}
    if namespace:
        kwargs["namespace"] = namespace
    try:
        return kfp.Client(**kwargs)
    except Exception as err:  # The SDK raises plain Exceptions / ApiExceptions here.
        raise SubmitError(
            f"--kfp-host {host}: the KFP API did not answer as expected: {err}"
        ) from err


def remote_pipeline_root(config: PipelineConfig, override: str | None) -> tuple[str | None, str]:
    """The pipeline root to submit with, and a note for the user."""
    root = override or config.pipeline_root
    if root and root.startswith(REMOTE_SCHEMES):
        return root, f"pipeline root {root}"
    return None, (
        f"pipeline root: the config's {config.pipeline_root!r} is local, so the cluster's default "
        "root is used (set --pipeline-root gs://... to choose)"
    )


def cluster_warnings(config: PipelineConfig) -> list[str]:
    """What in `config` names the submitting machine's disk, which a cluster's steps cannot see.

    Each step runs in its own container, so a local path there is that container's filesystem:
    a local registry would receive the pushed model and lose it with the pod.
    """
    warnings = []
    uri = config.registry.uri
    if not uri.startswith(REMOTE_SCHEMES) and not uri.startswith("vertex://"):
        warnings.append(
            f"registry.uri {uri!r} is a local path: on the cluster it is the push step's own "
            "container filesystem, so pushed versions vanish with the pod; set "
            "registry.uri to a registry the cluster reaches (--set registry.uri=...)"
        )
    source_dir = config.dataset.source_dir
    if config.dataset.source == "folders" and not source_dir.startswith(REMOTE_SCHEMES):
        warnings.append(
            f"dataset.source_dir {source_dir!r} is a local path: the convert step on the "
            "cluster reads its own container filesystem; use a gs:// (or s3://) folder"
        )
    return warnings


def use_cluster_image(
    config: PipelineConfig, image: str | None = None, config_path: str | None = None
) -> str:
    """Resolves the image for a cluster (`resolve_cluster_image`) and sets `config.image`.

    Args:
      config: the pipeline config; its `image` is the fallback for `image`.
      image: `--image`, when given.
      config_path: the config file, named in errors about its `image`.

    Returns:
      The reference the steps will run in (the pushed digest when the record has one for it).

    Raises:
      ImageReferenceError: no image anywhere, or one that a cluster cannot pull.
    """
    resolved = resolve_cluster_image(image, config.image, config_path)
    config.override({"image": resolved})
    return resolved


def compile_package(config: PipelineConfig, path: str, run_name: str = "") -> str:
    """Compiles the config's pipeline for a cluster to a YAML package at `path`.

    With `config.image` pinned by digest, the digest is the code version (the convert and train
    steps' cache key): the submitting machine's checkout says nothing about the code in the
    image. With a tag only, the checkout's code version stays.
    """
    from kfp import compiler

    from pipelines.training import build_pipeline

    version = image_code_version(config.image) if config.image else None
    pipeline = build_pipeline(config, run_name=run_name, code_version=version)
    compiler.Compiler().compile(pipeline, path)
    return path


def _with_root(config: PipelineConfig, root: str | None, caching: bool) -> PipelineConfig:
    # A local root must not be baked into the package the cluster runs; caching off compiles
    # every step uncached.
    config.override({"pipeline_root": root or "", "enable_caching": bool(caching)})
    return config


def submit_kfp(
    config: PipelineConfig,
    host: str,
    experiment: str | None = None,
    run_name: str | None = None,
    pipeline_root: str | None = None,
    arguments: dict[str, Any] | None = None,
    enable_caching: bool | None = None,
    namespace: str | None = None,
    token: str | None = None,
    service_account: str | None = None,
    image: str | None = None,
    config_path: str | None = None,
) -> dict[str, Any]:
    """Compiles `config` and starts one run on the KFP cluster at `host`.

    `image` (else the config's `image`, else the pushed image's record) names the image the
    steps run in; see `use_cluster_image`. `config_path` is named in errors about it.

    Returns:
      {'run_id', 'experiment', 'run_name', 'host', 'pipeline_root', 'image', 'note',
       'warnings'}.
    """
    image = use_cluster_image(config, image, config_path)
    kfp_client = client(host, namespace, token)
    root, note = remote_pipeline_root(config, pipeline_root)
    experiment = experiment or config.name
    run_name = run_name or config.name
    caching = config.enable_caching if enable_caching is None else enable_caching
    with tempfile.TemporaryDirectory() as tmp:
        package = compile_package(
            _with_root(config, root, caching), os.path.join(tmp, "pipeline.yaml"), run_name
        )
        try:
            result = kfp_client.create_run_from_pipeline_package(
                package,
                arguments=arguments or {},
                run_name=run_name,
                experiment_name=experiment,
                namespace=namespace,
                pipeline_root=root,
                # None keeps the compiled per-step settings (evaluate, validate and push are
                # never cached); a boolean here would override every step.
                enable_caching=None if caching else False,
                service_account=service_account,
            )
        except Exception as err:
            raise SubmitError(f"KFP at {host} refused the run: {err}") from err
    return {
        "run_id": result.run_id,
        "experiment": experiment,
        "run_name": run_name,
        "host": host,
        "pipeline_root": root,
        "image": image,
        "note": note,
        "warnings": cluster_warnings(config),
    }


def kfp_cron(expression: str) -> str:
    """A 5-field cron expression ('0 3 * * 1') in KFP's 6-field form (seconds first).

    Raises:
      SubmitError: not 5 (or 6) space-separated fields.
    """
    fields = expression.split()
    if len(fields) == 5:
        return " ".join(["0", *fields])
    if len(fields) == 6:
        return " ".join(fields)
    raise SubmitError(
        f"--cron: expected 5 fields 'minute hour day-of-month month day-of-week' "
        f"(e.g. '0 3 * * 1'), got {expression!r}"
    )


def schedule_kfp(
    config: PipelineConfig,
    host: str,
    cron: str,
    name: str | None = None,
    experiment: str | None = None,
    pipeline_root: str | None = None,
    max_concurrency: int = 1,
    catchup: bool = False,
    namespace: str | None = None,
    token: str | None = None,
    image: str | None = None,
    config_path: str | None = None,
) -> dict[str, Any]:
    """Creates a recurring run of `config` on the cluster at `host`.

    `image` and `config_path` as for `submit_kfp`.

    Returns:
      {'recurring_run_id', 'name', 'cron', 'experiment', 'host', 'image', 'note', 'warnings'}.
    """
    cron6 = kfp_cron(cron)
    image = use_cluster_image(config, image, config_path)
    kfp_client = client(host, namespace, token)
    root, note = remote_pipeline_root(config, pipeline_root)
    experiment = experiment or config.name
    name = name or f"{config.name}-schedule"
    try:
        exp = kfp_client.create_experiment(experiment, namespace=namespace)
        with tempfile.TemporaryDirectory() as tmp:
            package = compile_package(
                _with_root(config, root, config.enable_caching), os.path.join(tmp, "p.yaml")
            )
            recurring = kfp_client.create_recurring_run(
                experiment_id=exp.experiment_id,
                job_name=name,
                cron_expression=cron6,
                max_concurrency=max_concurrency,
                no_catchup=not catchup,
                pipeline_package_path=package,
                pipeline_root=root,
                enable_caching=None if config.enable_caching else False,
            )
    except SubmitError:
        raise
    except Exception as err:
        raise SubmitError(f"KFP at {host} refused the schedule: {err}") from err
    return {
        "recurring_run_id": recurring.recurring_run_id,
        "name": name,
        "cron": cron6,
        "experiment": experiment,
        "host": host,
        "image": image,
        "note": note,
        "warnings": cluster_warnings(config),
    }


def list_schedules(host: str, namespace: str | None = None, token: str | None = None) -> list:
    """[{'id', 'name', 'status', 'cron'}] of the cluster's recurring runs."""
    kfp_client = client(host, namespace, token)
    try:
        response = kfp_client.list_recurring_runs(page_size=100, namespace=namespace)
    except Exception as err:
        raise SubmitError(f"KFP at {host}: cannot list recurring runs: {err}") from err
    out = []
    for run in response.recurring_runs or []:
        trigger = getattr(run, "trigger", None)
        cron = getattr(getattr(trigger, "cron_schedule", None), "cron", None)
        out.append(
            {
                "id": run.recurring_run_id,
                "name": run.display_name,
                "status": run.status,
                "cron": cron,
            }
        )
    return out


def set_schedule_enabled(
    host: str, recurring_run_id: str, enabled: bool, token: str | None = None
) -> None:
    """Resumes (`enabled`) or pauses a recurring run."""
    kfp_client = client(host, token=token)
    try:
        if enabled:
            kfp_client.enable_recurring_run(recurring_run_id)
        else:
            kfp_client.disable_recurring_run(recurring_run_id)
    except Exception as err:
        raise SubmitError(f"KFP at {host}: recurring run {recurring_run_id!r}: {err}") from err


def delete_schedule(host: str, recurring_run_id: str, token: str | None = None) -> None:
    """Deletes a recurring run."""
    kfp_client = client(host, token=token)
    try:
        kfp_client.delete_recurring_run(recurring_run_id)
    except Exception as err:
        raise SubmitError(f"KFP at {host}: recurring run {recurring_run_id!r}: {err}") from err

"""Submitting and scheduling pipelines on Vertex AI Pipelines (the optional `vertex` extra).

`submit_vertex` compiles the pipeline config and starts one `PipelineJob`; `schedule_vertex`
creates a `PipelineJobSchedule` from a cron expression; `list_schedules_vertex`,
`set_schedule_enabled_vertex` and `delete_schedule_vertex` manage schedules. Everything goes
through `google-cloud-aiplatform` over its REST transport (the same wire calls the tests
replay against a loopback fake).

Vertex differs from a Kubeflow cluster in three ways that show up here:
* the pipeline root must be a `gs://` prefix (there is no cluster default);
* the compiled spec travels inside the create request, and every pipeline parameter is also
  sent as a runtime value, so the run's page lists the exact values it ran with;
* credentials come from Application Default Credentials (`gcloud auth application-default
  login`, `GOOGLE_APPLICATION_CREDENTIALS`, or the attached service account).

Before creating a run the SDK checks the root's bucket: it creates a missing one, and for an
existing one asks the Resource Manager API for the project number to confirm the bucket belongs
to the project (without `resourcemanager.projects.get` it logs an error and carries on).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

import yaml

from pipelines.config import PipelineConfig
from pipelines.submit import SubmitError, cluster_warnings, compile_package, use_cluster_image

logger = logging.getLogger(__name__)

VERTEX_INSTALL_HINT = (
    "pip install 'vision-pipelines[vertex]' (or: pip install 'google-cloud-aiplatform>=1.60')"
)
_SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
_CREDENTIALS_HINT = (
    "run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS to a "
    "service account key file (on Google Cloud the attached service account is used)"
)
# Google Cloud label rules: lowercase letters, digits, '_' and '-', at most 63 characters;
# keys start with a letter.
_LABEL_KEY_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE_RE = re.compile(r"^[a-z0-9_-]{0,63}$")
_TZ_PREFIX_RE = re.compile(r"^(CRON_TZ|TZ)=\S+$")


@dataclasses.dataclass(frozen=True)
class VertexTarget:
    """Where Vertex requests go.

    Attributes:
      project: the Google Cloud project id.
      region: the Vertex AI region, e.g. 'us-central1'.
      api_endpoint: overrides the regional endpoint ('{region}-aiplatform.googleapis.com'),
        e.g. a Private Service Connect endpoint; an `http://` prefix speaks plain HTTP.
    """

    project: str
    region: str
    api_endpoint: str | None = None

    def console(self, kind: str, resource_id: str) -> str:
        """The Cloud console page of a pipeline run ('runs') or schedule ('schedules')."""
        return (
            f"https://console.cloud.google.com/vertex-ai/locations/{self.region}/pipelines/"
            f"{kind}/{resource_id}?project={self.project}"
        )


def _aiplatform() -> Any:
    try:
        from google.cloud import aiplatform
    except ImportError as err:
        raise SubmitError(
            f"Vertex AI support needs the optional 'vertex' extra ({err}); {VERTEX_INSTALL_HINT}"
        ) from err
    return aiplatform


def _default_credentials() -> Any:
    import google.auth
    from google.auth import exceptions

    try:
        credentials, _ = google.auth.default(scopes=list(_SCOPES))
    except exceptions.DefaultCredentialsError as err:
        raise SubmitError(
            f"no Google Cloud credentials found; {_CREDENTIALS_HINT} ({err})"
        ) from err
    return credentials


def connect(target: VertexTarget) -> Any:
    """Checks the extra and the credentials and points the SDK at `target`.

    The SDK keeps these settings process-wide (`aiplatform.init`); every function here calls
    `connect` first, so the last target wins.

    Returns:
      The `google.cloud.aiplatform` module.

    Raises:
      SubmitError: the extra is missing, there are no credentials, or project/region are bad.
    """
    if not target.project:
        raise SubmitError("--project: required with --vertex (the Google Cloud project id)")
    if not target.region:
        raise SubmitError("--region: required with --vertex (e.g. us-central1)")
    aiplatform = _aiplatform()
    credentials = _default_credentials()
    try:
        aiplatform.init(
            project=target.project,
            location=target.region,
            credentials=credentials,
            api_endpoint=target.api_endpoint,
            api_transport="rest",
        )
    except ValueError as err:
        raise SubmitError(f"--region {target.region!r}: {err}") from err
    return aiplatform


@contextlib.contextmanager
def api_errors(target: VertexTarget, what: str) -> Iterator[None]:
    """Turns SDK, API and credential errors raised inside into SubmitErrors naming `what`."""
    from google.api_core import exceptions as api_exceptions
    from google.auth import exceptions as auth_exceptions

    where = f"Vertex AI in {target.project}/{target.region}"
    try:
        yield
    except SubmitError:
        raise
    except auth_exceptions.GoogleAuthError as err:
        raise SubmitError(
            f"{where}: the credentials were refused ({err}); {_CREDENTIALS_HINT}"
        ) from err
    except (api_exceptions.PermissionDenied, api_exceptions.Forbidden) as err:
        raise SubmitError(
            f"{where}: permission denied for {what} ({err.message}); check the project id, "
            "that the Vertex AI API is enabled (gcloud services enable aiplatform.googleapis.com) "
            "and that your account has roles/aiplatform.user"
        ) from err
    except api_exceptions.NotFound as err:
        raise SubmitError(f"{where}: {what}: not found ({err.message})") from err
    except api_exceptions.GoogleAPICallError as err:
        raise SubmitError(f"{where} refused {what}: {err}") from err
    except RuntimeError as err:  # The SDK wraps metadata (experiment) failures so.
        cause = f" ({err.__cause__})" if err.__cause__ else ""
        raise SubmitError(f"{where}: {what}: {err}{cause}") from err


def vertex_pipeline_root(config: PipelineConfig, override: str | None) -> str:
    """The gs:// pipeline root: `override`, else the config's.

    Raises:
      SubmitError: neither is a gs:// prefix.
    """
    root = override or config.pipeline_root
    if root and root.startswith("gs://") and len(root.rstrip("/")) > len("gs://"):
        return root
    source = "--pipeline-root" if override else "the config's pipeline_root"
    raise SubmitError(
        f"--pipeline-root: Vertex AI Pipelines writes every artifact to Cloud Storage, so the "
        f"pipeline root must be gs://BUCKET[/PATH]; {source} is {root!r}"
    )


def parse_labels(pairs: Sequence[str]) -> dict[str, str]:
    """`['team=vision', 'env=dev']` -> {'team': 'vision', 'env': 'dev'}, checked for Vertex.

    Raises:
      SubmitError: not KEY=VALUE, or outside Google Cloud's label rules.
    """
    labels: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SubmitError(f"--label {pair!r}: expected KEY=VALUE, e.g. team=vision")
        if not _LABEL_KEY_RE.match(key) or not _LABEL_VALUE_RE.match(value):
            raise SubmitError(
                f"--label {pair!r}: keys and values take lowercase letters, digits, '_' and '-' "
                "(at most 63 characters) and keys start with a letter"
            )
        labels[key] = value
    return labels


def vertex_cron(expression: str) -> str:
    """A Vertex schedule cron: 5 fields, optionally prefixed by 'TZ=Area/City '.

    Raises:
      SubmitError: anything else (a 6-field KFP expression included).
    """
    fields = expression.split()
    tz = fields[:1] if fields and _TZ_PREFIX_RE.match(fields[0]) else []
    if len(fields) - len(tz) != 5:
        raise SubmitError(
            f"--cron: Vertex AI schedules take 5 fields 'minute hour day-of-month month "
            f"day-of-week' (e.g. '0 3 * * 1', optionally prefixed 'TZ=Europe/Paris '), "
            f"got {expression!r}"
        )
    return " ".join(fields)


def _parameter_values(package: str) -> dict[str, Any]:
    # The config's values are the compiled parameters' defaults; sending them as runtime values
    # too records them on the run, where the console and Vertex Experiments show them.
    with open(package) as f:
        spec = yaml.safe_load(f)
    parameters = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    return {k: p["defaultValue"] for k, p in parameters.items() if "defaultValue" in p}


def _pipeline_job(
    aiplatform: Any,
    target: VertexTarget,
    package: str,
    root: str,
    display_name: str,
    labels: dict[str, str] | None,
    caching: bool,
) -> Any:
    return aiplatform.PipelineJob(
        display_name=display_name,
        template_path=package,
        pipeline_root=root,
        parameter_values=_parameter_values(package),
        # None keeps the compiled per-step settings (evaluate, validate and push never reuse
        # cached outputs); True would switch caching on for those steps too.
        enable_caching=None if caching else False,
        labels=labels or None,
        project=target.project,
        location=target.region,
    )


def _compile(
    config: PipelineConfig,
    root: str,
    caching: bool | None,
    folder: str,
    run_name: str = "",
) -> tuple[str, bool]:
    """Compiles with the gs:// root and the caching choice baked in; returns (path, caching)."""
    caching = config.enable_caching if caching is None else caching
    config.override({"pipeline_root": root, "enable_caching": caching})
    return compile_package(config, os.path.join(folder, "pipeline.yaml"), run_name), caching


def submit_vertex(
    config: PipelineConfig,
    target: VertexTarget,
    pipeline_root: str | None = None,
    run_name: str | None = None,
    experiment: str | None = None,
    labels: dict[str, str] | None = None,
    service_account: str | None = None,
    network: str | None = None,
    enable_caching: bool | None = None,
    image: str | None = None,
    config_path: str | None = None,
) -> dict[str, Any]:
    """Compiles `config` and starts one Vertex AI pipeline run.

    Args:
      config: the pipeline config (after --set overrides).
      target: project, region and optional endpoint.
      pipeline_root: gs:// root for the run's artifacts (default: the config's, if gs://).
      run_name: the run's display name (default: the pipeline name).
      experiment: a Vertex AI Experiment to record the run in (created if missing).
      labels: Google Cloud labels for the run.
      service_account: the account the steps run as (default: the Compute Engine default).
      network: a VPC to peer with, projects/NUMBER/global/networks/NAME.
      enable_caching: False disables step caching (default: the config's enable_caching).
      image: the image the steps run in (default: the config's `image`, else the pushed
        image's record); see `pipelines.submit.use_cluster_image`.
      config_path: the config file, named in errors about its `image`.

    Returns:
      {'job_id', 'resource_name', 'run_name', 'project', 'region', 'pipeline_root',
       'experiment', 'image', 'console_url', 'warnings'}.
    """
    root = vertex_pipeline_root(config, pipeline_root)
    image = use_cluster_image(config, image, config_path)
    aiplatform = connect(target)
    run_name = run_name or config.name
    warnings = cluster_warnings(config)
    with tempfile.TemporaryDirectory() as tmp:
        package, caching = _compile(config, root, enable_caching, tmp, run_name)
        with api_errors(target, "the pipeline run"):
            job = _pipeline_job(aiplatform, target, package, root, run_name, labels, caching)
            try:
                job.submit(service_account=service_account, network=network, experiment=experiment)
            except RuntimeError as err:
                # The experiment is linked after the run is created: keep the run, report it.
                if not (experiment and job.gca_resource.name):
                    raise
                warnings.append(f"the run was not linked to experiment {experiment!r}: {err}")
    job_id = job.gca_resource.name.rsplit("/", 1)[-1]
    for warning in warnings:
        logger.warning(warning)
    return {
        "job_id": job_id,
        "resource_name": job.gca_resource.name,
        "run_name": run_name,
        "project": target.project,
        "region": target.region,
        "pipeline_root": root,
        "experiment": experiment,
        "image": image,
        "console_url": target.console("runs", job_id),
        "warnings": warnings,
    }


def schedule_vertex(
    config: PipelineConfig,
    target: VertexTarget,
    cron: str,
    name: str | None = None,
    pipeline_root: str | None = None,
    max_concurrency: int = 1,
    labels: dict[str, str] | None = None,
    service_account: str | None = None,
    network: str | None = None,
    enable_caching: bool | None = None,
    image: str | None = None,
    config_path: str | None = None,
) -> dict[str, Any]:
    """Creates a Vertex AI pipeline schedule running `config` on `cron`.

    `image` and `config_path` as for `submit_vertex`.

    Returns:
      {'schedule_id', 'resource_name', 'name', 'cron', 'project', 'region', 'pipeline_root',
       'image', 'console_url', 'warnings'}.
    """
    cron = vertex_cron(cron)
    if max_concurrency < 1:
        raise SubmitError(f"--max-concurrency: expected >= 1, got {max_concurrency}")
    root = vertex_pipeline_root(config, pipeline_root)
    image = use_cluster_image(config, image, config_path)
    aiplatform = connect(target)
    name = name or f"{config.name}-schedule"
    warnings = cluster_warnings(config)
    with tempfile.TemporaryDirectory() as tmp:
        package, caching = _compile(config, root, enable_caching, tmp)
        with api_errors(target, "the schedule"):
            job = _pipeline_job(aiplatform, target, package, root, config.name, labels, caching)
            schedule = job.create_schedule(
                cron=cron,
                display_name=name,
                max_concurrent_run_count=max_concurrency,
                service_account=service_account,
                network=network,
            )
    resource_name = schedule.resource_name
    schedule_id = resource_name.rsplit("/", 1)[-1]
    for warning in warnings:
        logger.warning(warning)
    return {
        "schedule_id": schedule_id,
        "resource_name": resource_name,
        "name": name,
        "cron": cron,
        "project": target.project,
        "region": target.region,
        "pipeline_root": root,
        "image": image,
        "console_url": target.console("schedules", schedule_id),
        "warnings": warnings,
    }


def list_schedules_vertex(target: VertexTarget) -> list[dict[str, Any]]:
    """[{'id', 'name', 'status', 'cron'}] of the region's pipeline schedules."""
    aiplatform = connect(target)
    with api_errors(target, "listing schedules"):
        schedules = aiplatform.PipelineJobSchedule.list(
            project=target.project, location=target.region
        )
        return [
            {
                "id": s.resource_name.rsplit("/", 1)[-1],
                "name": s.display_name,
                "status": s.state.name if s.state is not None else None,
                "cron": s.cron,
            }
            for s in schedules
        ]


def _get_schedule(aiplatform: Any, target: VertexTarget, schedule_id: str) -> Any:
    return aiplatform.PipelineJobSchedule.get(
        schedule_id, project=target.project, location=target.region
    )


def set_schedule_enabled_vertex(
    target: VertexTarget, schedule_id: str, enabled: bool, catchup: bool = False
) -> None:
    """Resumes (`enabled`) or pauses a schedule; `catchup` runs the intervals missed meanwhile."""
    aiplatform = connect(target)
    with api_errors(target, f"schedule {schedule_id!r}"):
        schedule = _get_schedule(aiplatform, target, schedule_id)
        if enabled:
            # PipelineJobSchedule.resume() drops its catch_up argument; the client sends it.
            schedule.api_client.resume_schedule(name=schedule.resource_name, catch_up=catchup)
        else:
            schedule.pause()


def delete_schedule_vertex(target: VertexTarget, schedule_id: str) -> None:
    """Deletes a schedule (runs it already started are kept)."""
    aiplatform = connect(target)
    with api_errors(target, f"schedule {schedule_id!r}"):
        _get_schedule(aiplatform, target, schedule_id).delete()

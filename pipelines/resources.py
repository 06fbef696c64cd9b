"""Per-step Kubernetes resources of a pipeline: requests, limits, accelerators, placement.

The pipeline config's `resources` section has a `default` block and one block per step
(`convert`, `train`, `evaluate`, `validate`, `push`); a step's block overrides the default field
by field. KFP applies requests, limits and accelerators itself (`PipelineTask.set_cpu_limit`,
`set_accelerator_type`, ...); node selectors and tolerations go through kfp-kubernetes. The local
runner ignores all of them, so the same config runs on a laptop and on a cluster.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from vision_core.configs.common import sub
from vision_core.hyperparams import Config, ConfigError

STEPS = ("convert", "train", "evaluate", "validate", "push")

# Kubernetes quantities: CPU as cores ("2", "0.5") or millicores ("500m"); memory as bytes with
# an optional decimal (K, M, G, T) or binary (Ki, Mi, Gi, Ti) suffix - the forms KFP accepts.
_CPU_RE = re.compile(r"^([0-9]+(\.[0-9]+)?|[0-9]+m)$")
_MEMORY_RE = re.compile(r"^[0-9]+(\.[0-9]+)?([KMGTPE]i?)?$")
_TOLERATION_KEYS = {"key", "operator", "value", "effect", "toleration_seconds"}
_OPERATORS = ("Equal", "Exists")
_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


@dataclasses.dataclass
class StepResources(Config):
    """What one step asks of the cluster; None / empty leaves it to the cluster's defaults."""

    cpu_request: str | None = None
    cpu_limit: str | None = None
    memory_request: str | None = None
    memory_limit: str | None = None
    # e.g. NVIDIA_TESLA_T4 / nvidia.com/gpu on Kubeflow, NVIDIA_L4 or TPU_V5_LITEPOD on Vertex.
    accelerator_type: str | None = None
    accelerator_count: int | None = None
    node_selector: dict = dataclasses.field(default_factory=dict)
    # Kubernetes tolerations: {key, operator (Equal|Exists), value, effect, toleration_seconds}.
    tolerations: list[dict] = dataclasses.field(default_factory=list)
    # How often KFP retries the step after a failure (a retried train step resumes from its
    # checkpoints under the pipeline root).
    retries: int | None = None

    def _validate(self, path: str) -> None:
        prefix = f"{path}." if path else ""
        for name in ("cpu_request", "cpu_limit"):
            value = getattr(self, name)
            if value is not None and not _CPU_RE.match(str(value)):
                raise ConfigError(
                    f"{prefix}{name}: expected cores such as '2' or '0.5', or millicores such "
                    f"as '500m', got {value!r}"
                )
        for name in ("memory_request", "memory_limit"):
            value = getattr(self, name)
            if value is not None and not _MEMORY_RE.match(str(value)):
                raise ConfigError(
                    f"{prefix}{name}: expected a quantity such as '8Gi', '512Mi' or '2G', "
                    f"got {value!r}"
                )
        if self.accelerator_count is not None and self.accelerator_count < 0:
            raise ConfigError(
                f"{prefix}accelerator_count: expected >= 0, got {self.accelerator_count}"
            )
        if self.retries is not None and self.retries < 0:
            raise ConfigError(f"{prefix}retries: expected >= 0, got {self.retries}")
        for key, value in self.node_selector.items():
            if not isinstance(value, str | int | float | bool):
                raise ConfigError(
                    f"{prefix}node_selector.{key}: expected a label value, got {value!r}"
                )
        for i, toleration in enumerate(self.tolerations):
            _check_toleration(toleration, f"{prefix}tolerations[{i}]")


def _check_toleration(toleration: Any, path: str) -> None:
    if not isinstance(toleration, dict):
        raise ConfigError(f"{path}: expected a mapping with key/operator/value/effect")
    unknown = sorted(set(toleration) - _TOLERATION_KEYS)
    if unknown:
        raise ConfigError(
            f"{path}: unknown keys {unknown}; allowed: {', '.join(sorted(_TOLERATION_KEYS))}"
        )
    operator = toleration.get("operator", "Equal")
    if operator not in _OPERATORS:
        raise ConfigError(f"{path}.operator: expected one of {_OPERATORS}, got {operator!r}")
    if operator == "Exists" and toleration.get("value") not in (None, ""):
        raise ConfigError(f"{path}.value: must be empty when operator is 'Exists'")
    effect = toleration.get("effect")
    if effect is not None and effect not in _EFFECTS:
        raise ConfigError(f"{path}.effect: expected one of {_EFFECTS}, got {effect!r}")
    seconds = toleration.get("toleration_seconds")
    if seconds is not None and (not isinstance(seconds, int) or effect != "NoExecute"):
        raise ConfigError(
            f"{path}.toleration_seconds: an integer, and only with effect 'NoExecute'"
        )


@dataclasses.dataclass
class ResourcesConfig(Config):
    default: StepResources = sub(StepResources)
    convert: StepResources = sub(StepResources)
    train: StepResources = sub(StepResources)
    evaluate: StepResources = sub(StepResources)
    validate: StepResources = sub(StepResources)
    push: StepResources = sub(StepResources)

    def for_step(self, step: str) -> StepResources:
        """The step's block with unset fields taken from `default`."""
        if step not in STEPS:
            raise ValueError(f"step must be one of {STEPS}, got {step!r}")
        own, default = getattr(self, step), self.default
        merged = {}
        for field in dataclasses.fields(StepResources):
            value = getattr(own, field.name)
            merged[field.name] = (
                value if value not in (None, {}, []) else getattr(default, field.name)
            )
        return StepResources.from_dict(merged)

    def _validate(self, path: str) -> None:
        prefix = f"{path}." if path else ""
        for step in STEPS:
            resources = self.for_step(step)
            if resources.accelerator_count and not resources.accelerator_type:
                raise ConfigError(
                    f"{prefix}{step}.accelerator_type: required when accelerator_count is "
                    f"{resources.accelerator_count}"
                )


def apply(task: Any, resources: StepResources) -> Any:
    """Sets `resources` on a KFP `PipelineTask`; returns the task."""
    if resources.cpu_request:
        task.set_cpu_request(str(resources.cpu_request))
    if resources.cpu_limit:
        task.set_cpu_limit(str(resources.cpu_limit))
    if resources.memory_request:
        task.set_memory_request(str(resources.memory_request))
    if resources.memory_limit:
        task.set_memory_limit(str(resources.memory_limit))
    if resources.accelerator_type:
        task.set_accelerator_type(resources.accelerator_type)
        task.set_accelerator_limit(int(resources.accelerator_count or 1))
    if resources.retries:
        task.set_retry(num_retries=int(resources.retries), backoff_duration="30s")
    if resources.node_selector or resources.tolerations:
        from kfp import kubernetes

        for key, value in sorted(resources.node_selector.items()):
            kubernetes.add_node_selector(task, label_key=str(key), label_value=str(value))
        for toleration in resources.tolerations:
            kubernetes.add_toleration(
                task,
                key=toleration.get("key"),
                operator=toleration.get("operator", "Equal"),
                value=toleration.get("value"),
                effect=toleration.get("effect"),
                toleration_seconds=toleration.get("toleration_seconds"),
            )
    return task

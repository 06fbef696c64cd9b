"""The experiment config and the registry of named experiments (Model Garden's `exp_factory`)."""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any

from vision_core.configs.common import RuntimeConfig, TrainerConfig, sub
from vision_core.hyperparams import Config, ConfigError, read_yaml


@dataclasses.dataclass
class ExperimentConfig(Config):
    """task + trainer + runtime. Task subclasses replace `task` with a typed task config."""

    task: Config = dataclasses.field(default_factory=Config)
    trainer: TrainerConfig = sub(TrainerConfig)
    runtime: RuntimeConfig = sub(RuntimeConfig)

    def fingerprint(self) -> str:
        """A stable hash of the full config: equal configs, equal hashes."""
        text = json.dumps(self.as_dict(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()


_EXPERIMENTS: dict[str, Callable[[], ExperimentConfig]] = {}


def register_config_factory(name: str):
    """Registers a function returning a fresh ExperimentConfig under `name`."""

    def decorator(fn: Callable[[], ExperimentConfig]):
        if name in _EXPERIMENTS:
            raise KeyError(f"experiment {name!r} is already registered")
        _EXPERIMENTS[name] = fn
        return fn

    return decorator


def list_experiments() -> list[str]:
    _load_builtin()
    return sorted(_EXPERIMENTS)


def get_exp_config(name: str) -> ExperimentConfig:
    """A fresh copy of the named experiment; unknown names list the known ones."""
    _load_builtin()
    if name not in _EXPERIMENTS:
        match = difflib.get_close_matches(name, list(_EXPERIMENTS), n=1)
        hint = f" Did you mean {match[0]!r}?" if match else ""
        raise ConfigError(
            f"experiment {name!r} is not registered. Known experiments: "
            f"{', '.join(sorted(_EXPERIMENTS))}.{hint}"
        )
    return _EXPERIMENTS[name]()


def load_experiment(
    experiment: str | None = None,
    config_files: list[str] | tuple[str, ...] = (),
    overrides: Mapping[str, Any] | None = None,
) -> ExperimentConfig:
    """Builds a validated experiment: a registered base, then YAML files, then overrides.

    The base is `experiment`, else the first YAML file's top-level `experiment:` key, else the
    generic experiment of the task the files describe (`task.name`, e.g. 'image_classification',
    which a saved `params.yaml` always carries), else 'semantic_segmentation'. Errors name the
    file and the dotted path.
    """
    layers: list[tuple[str, dict[str, Any]]] = []
    for path in config_files:
        data = read_yaml(path)
        layers.append((path, data))
    base = experiment
    for _, data in layers:
        named = data.pop("experiment", None)
        if named and not base:
            base = str(named)
    if not base:
        base = _base_from_task_name([data for _, data in layers])
    config = get_exp_config(base or "semantic_segmentation")
    for path, data in layers:
        try:
            config.override(data)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
    if overrides:
        try:
            config.override(dict(overrides))
        except ConfigError as err:
            raise ConfigError(f"override {err}") from None
    return config


def _base_from_task_name(layers: list[dict[str, Any]]) -> str | None:
    """The generic experiment named by the last `task.name` in the layers, if one is registered.

    Every task config has a `name` defaulting to its generic experiment's name, so a config
    written out by `save_yaml` (params.yaml, the pipeline's experiment JSON) finds its task
    without an `experiment:` key.
    """
    _load_builtin()
    name = None
    for data in layers:
        task = data.get("task")
        if isinstance(task, Mapping) and isinstance(task.get("name"), str):
            name = task["name"]
    return name if name in _EXPERIMENTS else None


def _load_builtin() -> None:
    # Task modules register their experiments when imported; import them here so users never
    # have to remember an import.
    from vision_core.configs import (  # noqa: F401
        image_classification,
        retinanet,
        semantic_segmentation,
    )

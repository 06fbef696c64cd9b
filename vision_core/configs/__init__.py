"""Experiment configs in the Model Garden shape; `get_exp_config(name)` gives a registered one."""

from vision_core.configs.experiment import (
    ExperimentConfig,
    get_exp_config,
    list_experiments,
    load_experiment,
    register_config_factory,
)

__all__ = [
    "ExperimentConfig",
    "get_exp_config",
    "list_experiments",
    "load_experiment",
    "register_config_factory",
]

"""Configs in the Model Garden shape.

`official.modeling.hyperparams` → `vision_core.hyperparams`.
"""

from vision_core.hyperparams.base_config import (
    Config,
    ConfigError,
    OneOfConfig,
    get_subconfig,
)
from vision_core.hyperparams.params_io import (
    parse_dotted,
    parse_override_string,
    read_yaml,
    save_yaml,
)

# Model Garden spells the base class both ways.
ParamsDict = Config

__all__ = [
    "Config",
    "ConfigError",
    "OneOfConfig",
    "ParamsDict",
    "get_subconfig",
    "parse_dotted",
    "parse_override_string",
    "read_yaml",
    "save_yaml",
]

"""The model registry: immutable model versions (SavedModel + config + metrics + lineage,
sealed by a manifest) and atomically moved aliases, behind one interface chosen by URI.

    registry = open_registry("/data/registry")          # or file:///..., gs://bucket/prefix
    v = registry.push("seg", "export/saved_model", "config.yaml", metrics, lineage)
    registry.set_alias("seg", "champion", v.version)
    champion = registry.get_version("seg", registry.get_alias("seg", "champion"))
"""

from components.registry.base import (
    ANY,
    DEFAULT_ALIAS,
    AliasConflictError,
    AliasNotFoundError,
    ManifestError,
    ModelNotFoundError,
    ModelRegistry,
    ModelVersion,
    RegistryError,
    UnsupportedRegistryError,
    VersionNotFoundError,
)
from components.registry.factory import known_schemes, open_registry, register_registry_backend
from components.registry.local import LocalRegistry

__all__ = [
    "ANY",
    "DEFAULT_ALIAS",
    "AliasConflictError",
    "AliasNotFoundError",
    "LocalRegistry",
    "ManifestError",
    "ModelNotFoundError",
    "ModelRegistry",
    "ModelVersion",
    "RegistryError",
    "UnsupportedRegistryError",
    "VersionNotFoundError",
    "known_schemes",
    "open_registry",
    "register_registry_backend",
]

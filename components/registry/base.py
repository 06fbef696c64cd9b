"""The model registry interface every backend implements, and the records it returns.

A registry holds named models; each model has immutable, consecutively numbered versions
(SavedModel + config + metrics + lineage, sealed by a manifest) and mutable aliases such as
`champion` that point at one version. Backends differ only in how they make two operations
exclusive:

* allocating a version number — the local backend renames a sealed staging folder into
  `versions/{n}` under an `fcntl` lock; a GCS backend would create `versions/{n}/MANIFEST.json`
  with the precondition `if_generation_match=0`; Vertex allocates version ids itself;
* moving an alias — the local backend rewrites `aliases.json` under the same lock and swaps it in
  with `os.replace`; a GCS backend would write it with `if_generation_match=<generation read>`
  and retry on a precondition failure.

Everything else (naming rules, lineage defaults, metric serialisation, reference resolution)
lives here so that every backend behaves the same to its callers.
"""

from __future__ import annotations

import abc
import dataclasses
import datetime
import hashlib
import importlib.metadata
import json
import math
import os
import re
from collections.abc import Mapping
from typing import Any

import yaml

DEFAULT_ALIAS = "champion"


class _Any:
    def __repr__(self) -> str:
        return "ANY"


# Sentinel for `set_alias(expected=...)`: move the alias whatever it points at now.
ANY: Any = _Any()

# Names become directory names (and GCS object prefixes), so they are restricted to a portable
# set; a leading dot is excluded because dot-entries are the registry's own bookkeeping.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

_VERSION_REF_RE = re.compile(r"^[vV]?[0-9]+$")

# The lineage keys every version carries, so downstream readers never have to test for presence.
STANDARD_LINEAGE_KEYS = ("dataset_fingerprint", "config_hash", "code_version", "parent_run")


class RegistryError(Exception):
    """Base class of every error raised by a model registry."""


class ModelNotFoundError(RegistryError, LookupError):
    """The registry has no model of that name."""


class VersionNotFoundError(RegistryError, LookupError):
    """The model has no complete version with that number."""


class AliasNotFoundError(RegistryError, LookupError):
    """The model has no alias of that name."""


class ManifestError(RegistryError):
    """A version's files do not match its manifest (missing, changed or unexpected files).

    Attributes:
      problems: one human-readable line per mismatching file.
    """

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = list(problems or [])


class AliasConflictError(RegistryError):
    """A guarded alias move found the alias pointing somewhere other than expected."""


class UnsupportedRegistryError(NotImplementedError):
    """The registry URI names a backend that is planned but not implemented yet."""


@dataclasses.dataclass(frozen=True)
class ModelVersion:
    """One complete, immutable version of a model.

    Attributes:
      model_name: the model the version belongs to.
      version: its number, starting at 1, allocated consecutively by the registry.
      uri: where the version lives (a local folder, or a `gs://` prefix for remote backends).
      created_at: ISO-8601 UTC time at which the version was pushed.
      metrics: the evaluation metrics pushed with it (the content of `metrics.json`).
      lineage: where it came from (the content of `lineage.json`).
      aliases: the aliases that pointed at it when the record was read, sorted.
    """

    model_name: str
    version: int
    uri: str
    created_at: str
    metrics: dict[str, Any]
    lineage: dict[str, Any]
    aliases: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (for the CLI and KFP outputs)."""
        record = dataclasses.asdict(self)
        record["aliases"] = list(self.aliases)
        return record


def validate_model_name(model_name: str) -> str:
    """Returns `model_name` if it is usable as a model name, else raises ValueError."""
    if not isinstance(model_name, str) or not _NAME_RE.match(model_name):
        raise ValueError(
            f"model_name {model_name!r}: expected 1-128 characters of letters, digits, '.', '_' "
            "or '-', starting with a letter or digit"
        )
    return model_name


def validate_alias_name(alias: str) -> str:
    """Returns `alias` if it is usable as an alias, else raises ValueError.

    `latest`, all-digit names and `v<digits>` are refused because `resolve()` reads those as
    version references.
    """
    if not isinstance(alias, str) or not _NAME_RE.match(alias) or _VERSION_REF_RE.match(alias):
        raise ValueError(
            f"alias {alias!r}: expected 1-128 characters of letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, and not a version reference such as '3' or 'v3'"
        )
    if alias == "latest":
        raise ValueError("alias 'latest': reserved, it always means the highest version number")
    return alias


def validate_version_number(version: Any) -> int:
    """Returns `version` as an int if it is a positive version number, else raises ValueError."""
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"version {version!r}: expected a positive integer")
    return version


def utc_now_iso() -> str:
    """The current UTC time as ISO 8601 with a `Z` suffix, to the microsecond."""
    now = datetime.datetime.now(datetime.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _json_default(value: Any) -> Any:
    # NumPy scalars and arrays (as produced by evaluation code) are converted without importing
    # NumPy here; anything else is a caller error reported by json itself.
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"object of type {type(value).__name__} is not JSON serialisable")


def _replace_non_finite(value: Any) -> Any:
    # Strict JSON has no NaN/Infinity; a per-class IoU of a class absent from the data is NaN,
    # so non-finite floats are stored as null rather than producing an unreadable file.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _replace_non_finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_replace_non_finite(v) for v in value]
    return value


def to_json_document(data: Mapping[str, Any], what: str) -> str:
    """Serialises `data` (metrics or lineage) as strict, sorted, indented JSON.

    Args:
      data: a mapping with string keys; NumPy values are converted, NaN/Inf become null.
      what: what the mapping is ("metrics", "lineage"), named in errors.

    Raises:
      TypeError: a key is not a string or a value cannot be represented in JSON.
    """
    if not isinstance(data, Mapping):
        raise TypeError(f"{what}: expected a mapping, got {type(data).__name__}")
    for key in data:
        if not isinstance(key, str):
            raise TypeError(f"{what}: keys must be strings, got {key!r}")
    try:
        plain = json.loads(json.dumps(dict(data), default=_json_default))
    except (TypeError, ValueError) as e:
        raise TypeError(f"{what}: cannot be stored as JSON: {e}") from e
    return json.dumps(_replace_non_finite(plain), indent=2, sort_keys=True, allow_nan=False) + "\n"


def config_to_bytes(config: str | os.PathLike | Mapping[str, Any]) -> bytes:
    """The bytes to store as `config.yaml`: a YAML file's content as is, or a mapping dumped.

    Raises:
      FileNotFoundError: `config` is a path that does not exist.
      ValueError: the file is not valid YAML or does not hold a mapping.
    """
    if isinstance(config, Mapping):
        return yaml.safe_dump(dict(config), sort_keys=False).encode("utf-8")
    if not isinstance(config, str | os.PathLike):
        raise TypeError(f"config: expected a YAML file path or a mapping, got {type(config)}")
    path = os.fspath(config)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config: no such file {path!r} (expected the YAML config)")
    with open(path, "rb") as f:
        data = f.read()
    try:
        parsed = yaml.safe_load(data)
    except yaml.YAMLError as e:
        raise ValueError(f"config {path!r}: not valid YAML: {e}") from e
    if not isinstance(parsed, dict):
        raise ValueError(f"config {path!r}: expected a YAML mapping, got {type(parsed).__name__}")
    # The file's own bytes are kept (comments and key order included) so the stored config is
    # exactly the one the run used.
    return data


def code_version() -> str:
    """The installed version of this project, or 'unknown' when running from a bare checkout."""
    try:
        return importlib.metadata.version("vision-pipelines")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def build_lineage(
    lineage: Mapping[str, Any] | None, config_bytes: bytes, created_at: str
) -> dict[str, Any]:
    """Completes caller-supplied lineage with `created_at` and the standard keys.

    `config_hash` defaults to "sha256:<hex of config.yaml>", `code_version` to the installed
    package version, and the other standard keys to None, so every version has all of them.

    Raises:
      ValueError: the caller passed `created_at`, which only the registry may set.
    """
    doc = dict(lineage or {})
    if "created_at" in doc:
        raise ValueError(
            "lineage: key 'created_at' is set by the registry at push time; pass the caller's "
            "own time under another name (e.g. 'trained_at')"
        )
    if doc.get("config_hash") is None:
        doc["config_hash"] = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
    if doc.get("code_version") is None:
        doc["code_version"] = code_version()
    for key in STANDARD_LINEAGE_KEYS:
        doc.setdefault(key, None)
    doc["created_at"] = created_at
    return doc


class ModelRegistry(abc.ABC):
    """A store of immutable model versions and movable aliases, addressed by a URI.

    Obtain one with `components.registry.open_registry(uri)`. All methods are safe to call from
    several processes at once: version numbers are never handed out twice and alias updates are
    never lost or torn.
    """

    @property
    @abc.abstractmethod
    def uri(self) -> str:
        """The URI the registry was opened with, normalised."""

    @abc.abstractmethod
    def push(
        self,
        model_name: str,
        saved_model_dir: str,
        config: str | Mapping[str, Any],
        metrics: Mapping[str, Any] | None = None,
        lineage: Mapping[str, Any] | None = None,
    ) -> ModelVersion:
        """Stores a new version and returns it; never modifies an existing version.

        Args:
          model_name: the model to add a version to; created on first push.
          saved_model_dir: a local SavedModel folder (holding `saved_model.pb`); copied as is.
          config: the path of the YAML config the model was trained from, or the config as a
            mapping; stored as `config.yaml`.
          metrics: evaluation metrics, stored as `metrics.json`.
          lineage: provenance (`dataset_fingerprint`, `parent_run`, ...; any JSON values),
            stored as `lineage.json` together with `created_at` and defaults for the standard
            keys (`config_hash` = sha256 of `config.yaml`, `code_version` = package version).
        """

    @abc.abstractmethod
    def models(self) -> list[str]:
        """The names of the models that have at least one complete version, sorted."""

    @abc.abstractmethod
    def list_versions(self, model_name: str) -> list[ModelVersion]:
        """The model's complete versions in ascending order (empty for an unknown model)."""

    @abc.abstractmethod
    def get_version(self, model_name: str, version: int) -> ModelVersion:
        """One complete version; raises VersionNotFoundError naming the versions that exist."""

    @abc.abstractmethod
    def aliases(self, model_name: str) -> dict[str, int]:
        """The model's aliases as {alias: version} (empty if it has none)."""

    @abc.abstractmethod
    def set_alias(
        self, model_name: str, alias: str, version: int, expected: int | None | object = ANY
    ) -> int | None:
        """Points `alias` at an existing complete `version` atomically.

        Args:
          model_name: the model.
          alias: the alias to create or move.
          version: the complete version it should point at.
          expected: compare-and-swap guard: the version the alias must point at now (None: the
            alias must not exist yet); the default `ANY` moves it unconditionally. Lets a
            pipeline promote only if the champion it compared against is still the champion.

        Returns:
          The version the alias pointed at before, or None if it is new.

        Raises:
          VersionNotFoundError: `version` is not a complete version of the model.
          AliasConflictError: the alias does not point at `expected`.
        """

    @abc.abstractmethod
    def delete_alias(self, model_name: str, alias: str) -> int:
        """Removes `alias`; returns the version it pointed at."""

    @abc.abstractmethod
    def path(self, model_name: str, version: int) -> str:
        """The location of the version's SavedModel folder, readable by `tf.saved_model.load`."""

    @abc.abstractmethod
    def download(self, model_name: str, version: int, destination: str) -> str:
        """Copies the version's SavedModel to the local folder `destination` and verifies it.

        Returns:
          `destination`. Raises FileExistsError if it exists and is not an empty folder.
        """

    @abc.abstractmethod
    def verify(self, model_name: str, version: int) -> None:
        """Checks every file of the version against its manifest; raises ManifestError."""

    @abc.abstractmethod
    def gc(self, model_name: str | None = None) -> list[str]:
        """Deletes the debris of interrupted pushes; returns what was removed."""

    def get_alias(self, model_name: str, alias: str = DEFAULT_ALIAS) -> int:
        """The version number `alias` points at (`get_version` gives its record).

        Raises:
          AliasNotFoundError: no such alias; the message lists the aliases that exist.
        """
        validate_model_name(model_name)
        table = self.aliases(model_name)
        if alias not in table:
            known = ", ".join(f"{a} -> v{v}" for a, v in sorted(table.items())) or "none"
            raise AliasNotFoundError(
                f"model {model_name!r} in registry {self.uri} has no alias {alias!r}; "
                f"aliases: {known}"
            )
        return table[alias]

    def latest(self, model_name: str) -> ModelVersion:
        """The complete version with the highest number."""
        versions = self.list_versions(model_name)
        if not versions:
            raise ModelNotFoundError(
                f"model {model_name!r} has no versions in registry {self.uri}; "
                f"models: {', '.join(self.models()) or 'none'}"
            )
        return versions[-1]

    def resolve(self, model_name: str, ref: int | str) -> ModelVersion:
        """Resolves a version number (`3`, `'3'`, `'v3'`), `'latest'` or an alias to a version."""
        if isinstance(ref, int) and not isinstance(ref, bool):
            return self.get_version(model_name, ref)
        if not isinstance(ref, str) or not ref:
            raise ValueError(f"version reference {ref!r}: expected a number, 'latest' or an alias")
        if ref.isdigit():
            return self.get_version(model_name, int(ref))
        if ref[0] in "vV" and ref[1:].isdigit():
            return self.get_version(model_name, int(ref[1:]))
        if ref == "latest":
            return self.latest(model_name)
        return self.get_version(model_name, self.get_alias(model_name, ref))

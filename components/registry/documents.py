"""The documents a version holds besides its SavedModel — config, metrics and lineage — and
the checks every backend runs on a push's inputs before writing anything."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import importlib.metadata
import json
import math
import os
from collections.abc import Mapping
from typing import Any

import yaml

# The lineage keys every version carries, so downstream readers never have to test for presence.
STANDARD_LINEAGE_KEYS = ("dataset_fingerprint", "config_hash", "code_version", "parent_run")

SAVED_MODEL_MARKERS = ("saved_model.pb", "saved_model.pbtxt")


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


@dataclasses.dataclass(frozen=True)
class PushDocuments:
    """The small files of a version, serialised and checked before anything is written."""

    config: bytes
    metrics: bytes
    lineage: bytes
    created_at: str


def prepare_push(
    saved_model_dir: str | os.PathLike,
    config: str | os.PathLike | Mapping[str, Any],
    metrics: Mapping[str, Any] | None,
    lineage: Mapping[str, Any] | None,
) -> PushDocuments:
    """Checks a push's inputs and serialises config, metrics and lineage (shared by backends).

    Raises:
      FileNotFoundError: `saved_model_dir` or a config path does not exist.
      ValueError: `saved_model_dir` holds no `saved_model.pb`, the config is not a YAML mapping,
        or the lineage sets `created_at`.
      TypeError: metrics or lineage cannot be stored as JSON.
    """
    saved_model_dir = os.fspath(saved_model_dir)
    if not os.path.isdir(saved_model_dir):
        raise FileNotFoundError(f"saved_model_dir: no such folder {saved_model_dir!r}")
    if not any(os.path.isfile(os.path.join(saved_model_dir, n)) for n in SAVED_MODEL_MARKERS):
        raise ValueError(
            f"saved_model_dir {saved_model_dir!r}: not a SavedModel (no saved_model.pb); "
            f"contains {sorted(os.listdir(saved_model_dir))}"
        )
    config_bytes = config_to_bytes(config)
    metrics_text = to_json_document(metrics or {}, "metrics")
    created_at = utc_now_iso()
    lineage_text = to_json_document(build_lineage(lineage, config_bytes, created_at), "lineage")
    return PushDocuments(config_bytes, metrics_text.encode(), lineage_text.encode(), created_at)

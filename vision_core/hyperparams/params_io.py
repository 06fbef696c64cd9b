"""YAML files and dotted overrides for configs.

Overrides come in Model Garden's forms: `a.b.c=value` pairs (one per `--set`, or several joined
by commas in `--params_override`), a YAML/JSON mapping string, or a YAML file path. Values are
parsed as YAML scalars, so `18`, `0.1`, `true`, `[1, 2]` and `null` mean what they look like.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from vision_core.hyperparams.base_config import Config, ConfigError


def read_yaml(path: str) -> dict[str, Any]:
    """Reads a YAML mapping from a local or gs:// path; errors name the file and the line."""
    try:
        text = _read_text(path)
    except FileNotFoundError as err:
        raise ConfigError(f"{path}: config file not found") from err
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a YAML mapping at the top, got {type(data).__name__}")
    return dict(data)


def save_yaml(config: Config | Mapping[str, Any], path: str) -> None:
    """Writes a config as YAML to a temporary name, then renames it into place."""
    data = config.as_dict() if isinstance(config, Config) else dict(config)
    text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
    if "://" in path:
        import tensorflow as tf  # Only remote paths need TF's filesystems.

        tmp = f"{path}.tmp"
        with tf.io.gfile.GFile(tmp, "w") as f:
            f.write(text)
        tf.io.gfile.rename(tmp, path, overwrite=True)
        return
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def parse_dotted(pairs: Iterable[str]) -> dict[str, Any]:
    """`['a.b=1', 'a.c=x']` → `{'a': {'b': 1, 'c': 'x'}}`."""
    result: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"override {pair!r}: expected dotted.path=value")
        key, raw = pair.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {pair!r}: expected dotted.path=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = result
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {pair!r}: {part} is set to a value and a mapping")
            node = child
        node[parts[-1]] = value
    return result


def parse_override_string(text: str) -> dict[str, Any]:
    """Model Garden's `--params_override`: a YAML file, a YAML mapping, or `a.b=1,c=2`."""
    text = text.strip()
    if not text:
        return {}
    if text.endswith((".yaml", ".yml")) and "=" not in text:
        return read_yaml(text)
    if "=" in text and not text.lstrip().startswith("{"):
        return parse_dotted(_split_commas(text))
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"params_override: not valid YAML: {err}") from err
    if not isinstance(data, Mapping):
        raise ConfigError(f"params_override: expected a mapping or a=b pairs, got {text!r}")
    return dict(data)


def _split_commas(text: str) -> list[str]:
    """Splits on commas that start a new `key=` pair, so `a=[1,2],b=3` stays intact."""
    pieces: list[str] = []
    depth = 0
    current = ""
    for ch in text:
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        if ch == "," and depth == 0:
            pieces.append(current)
            current = ""
        else:
            current += ch
    if current:
        pieces.append(current)
    return [p.strip() for p in pieces if p.strip()]


def _read_text(path: str) -> str:
    if "://" in path:
        import tensorflow as tf

        if not tf.io.gfile.exists(path):
            raise FileNotFoundError(path)
        with tf.io.gfile.GFile(path) as f:
            return f.read()
    with open(path, encoding="utf-8") as f:
        return f.read()

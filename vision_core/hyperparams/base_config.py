"""Typed, validated configuration objects in the Model Garden shape.

`Config` subclasses are dataclasses whose fields carry types; building one from a dict (YAML,
dotted overrides) checks every key and value and names the dotted path of anything wrong,
with the allowed keys or values. `OneOfConfig` holds one active sub-config selected by `type`
(Model Garden's `backbone: {type: resnet, resnet: {...}}`).

A bare `Config(**kwargs)` is a free-form config with whatever attributes it is given, which is how
Model Garden tutorials write `hyperparams.Config(type='spinenet', model_id='143', ...)`.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints


class ConfigError(ValueError):
    """A config value or key is wrong. The message names the dotted path and what was expected."""


def _closest(name: str, options: list[str]) -> str:
    match = difflib.get_close_matches(name, options, n=1)
    return f" Did you mean '{match[0]}'?" if match else ""


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class Config:
    """Base of every config. Subclasses are `@dataclasses.dataclass`es with typed fields."""

    def __init__(self, default_params: Mapping[str, Any] | None = None, **kwargs: Any):
        # Only reached for free-form configs: dataclass subclasses generate their own __init__.
        values = dict(default_params or {})
        values.update(kwargs)
        for key, value in values.items():
            object.__setattr__(self, key, _freeform(value))

    # ----------------------------------------------------------------------------- construction
    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, path: str = "") -> Config:
        """Builds a config from a plain dict, validating every key and value."""
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(
                f"{path or '<root>'}: expected a mapping for {cls.__name__}, "
                f"got {type(data).__name__} {data!r}"
            )
        if not dataclasses.is_dataclass(cls):
            return cls(**dict(data))
        instance = cls()
        instance._apply(data, path)
        return instance

    def _apply(self, data: Mapping[str, Any], path: str) -> None:
        fields = _fields(type(self))
        for key, value in data.items():
            key = str(key)
            if key not in fields:
                raise ConfigError(
                    f"{_join(path, key)}: unknown key for {type(self).__name__}. "
                    f"Allowed keys: {', '.join(sorted(fields))}.{_closest(key, list(fields))}"
                )
            current = getattr(self, key)
            hint = fields[key]
            sub_path = _join(path, key)
            if (
                isinstance(current, Config)
                and dataclasses.is_dataclass(current)
                and isinstance(value, Mapping)
            ):
                current._apply(value, sub_path)
            else:
                object.__setattr__(self, key, _coerce(value, hint, sub_path))
        self._validate(path)

    def _validate(self, path: str) -> None:
        """Hook for cross-field checks; raise ConfigError naming the dotted path."""

    # ---------------------------------------------------------------------------------- access
    def as_dict(self) -> dict[str, Any]:
        """A plain nested dict (YAML-ready)."""
        if dataclasses.is_dataclass(self):
            names = [f.name for f in dataclasses.fields(self)]
        else:
            names = list(vars(self))
        return {name: _to_plain(getattr(self, name)) for name in names}

    def override(self, overrides: Mapping[str, Any] | Config, is_strict: bool = True) -> Config:
        """Merges a (nested) dict into this config in place and returns self.

        Args:
          overrides: nested mapping (or another config) of new values.
          is_strict: when False, unknown keys are ignored instead of raising (Model Garden's flag).
        """
        if isinstance(overrides, Config):
            overrides = overrides.as_dict()
        if not dataclasses.is_dataclass(self):
            for key, value in overrides.items():
                object.__setattr__(self, key, _freeform(value))
            return self
        if not is_strict:
            overrides = _prune_unknown(type(self), overrides)
        self._apply(overrides, "")
        return self

    def replace(self, **kwargs: Any) -> Config:
        """A validated copy with some top-level fields replaced."""
        clone = copy.deepcopy(self)
        clone.override(kwargs)
        return clone

    def get(self, key: str | None = None, default: Any = None) -> Any:
        """`get()` returns the active sub-config of a one-of config; `get(key)` reads a field."""
        if key is not None:
            return getattr(self, key, default)
        return get_subconfig(self)

    def __setattr__(self, key: str, value: Any) -> None:
        if dataclasses.is_dataclass(self) and key in _fields(type(self)):
            value = _coerce(value, _fields(type(self))[key], key)
        elif dataclasses.is_dataclass(self) and not key.startswith("_"):
            fields = list(_fields(type(self)))
            raise ConfigError(
                f"{key}: unknown key for {type(self).__name__}. Allowed keys: "
                f"{', '.join(sorted(fields))}.{_closest(key, fields)}"
            )
        object.__setattr__(self, key, value)

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def __contains__(self, key: str) -> bool:
        return hasattr(self, key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Config) and self.as_dict() == other.as_dict()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.as_dict()!r})"


@dataclasses.dataclass(eq=False, repr=False)
class OneOfConfig(Config):
    """A config with one active sub-config: `type` names the field holding it.

    Subclasses declare `type` with a default and one field per choice. Besides the nested form
    (`{type: resnet, resnet: {model_id: 18}}`) the flat form (`{type: resnet, model_id: 18}`) is
    accepted: keys that are not fields of the one-of go to the chosen sub-config.
    """

    type: str | None = None

    def choices(self) -> list[str]:
        return [name for name in _fields(type(self)) if name != "type"]

    def _apply(self, data: Mapping[str, Any], path: str) -> None:
        data = dict(data)
        fields = _fields(type(self))
        if "type" in data and data["type"] is not None:
            chosen = data["type"]
            if chosen not in self.choices():
                raise ConfigError(
                    f"{_join(path, 'type')}: unknown type {chosen!r}. Allowed types: "
                    f"{', '.join(self.choices())}.{_closest(str(chosen), self.choices())}"
                )
        chosen = data.get("type", self.type)
        flat = {k: v for k, v in data.items() if k not in fields}
        if flat:
            if chosen is None:
                raise ConfigError(
                    f"{_join(path, next(iter(flat)))}: unknown key; set "
                    f"{_join(path, 'type')} to one of {', '.join(self.choices())} first."
                )
            data = {k: v for k, v in data.items() if k in fields}
            nested = dict(data.get(chosen) or {})
            nested.update(flat)
            data[chosen] = nested
        super()._apply(data, path)

    def _validate(self, path: str) -> None:
        if self.type is not None and getattr(self, self.type, None) is None:
            hint = _fields(type(self))[self.type]
            default = _default_for(hint)
            if default is not None:
                object.__setattr__(self, self.type, default)


def get_subconfig(cfg: Any) -> Any:
    """The active sub-config of `cfg` (nested form), or `cfg` itself (flat form).

    `backbone.type == 'resnet'` with a `backbone.resnet` sub-config gives `backbone.resnet`;
    a flat `Config(type='spinenet', model_id='143')` gives the config itself.
    """
    kind = getattr(cfg, "type", None)
    if isinstance(kind, str):
        sub = getattr(cfg, kind, None)
        if sub is not None and not isinstance(sub, str | int | float | bool):
            return sub
    return cfg


# --------------------------------------------------------------------------------- internals
_FIELD_CACHE: dict[type, dict[str, Any]] = {}


def _fields(cls: type) -> dict[str, Any]:
    if cls not in _FIELD_CACHE:
        hints = get_type_hints(cls)
        _FIELD_CACHE[cls] = {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls)}
    return _FIELD_CACHE[cls]


def _prune_unknown(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    fields = _fields(cls)
    pruned = {}
    for key, value in data.items():
        if key not in fields:
            continue
        hint = fields[key]
        sub_cls = _config_class(hint)
        if sub_cls is not None and isinstance(value, Mapping) and dataclasses.is_dataclass(sub_cls):
            value = _prune_unknown(sub_cls, value)
        pruned[key] = value
    return pruned


def _config_class(hint: Any) -> type | None:
    if isinstance(hint, type) and issubclass(hint, Config):
        return hint
    for arg in get_args(hint):
        if isinstance(arg, type) and issubclass(arg, Config):
            return arg
    return None


def _default_for(hint: Any) -> Any:
    cls = _config_class(hint)
    return cls() if cls is not None and dataclasses.is_dataclass(cls) else None


def _type_name(hint: Any) -> str:
    if get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(hint))
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "")


def _coerce(value: Any, hint: Any, path: str) -> Any:
    """Checks `value` against the type hint, converting where the meaning is unambiguous."""
    if hint is Any:
        return _freeform(value)
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        args = get_args(hint)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{path}: must not be null; expected {_type_name(hint)}")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{path}: expected {_type_name(hint)}, got {value!r}")
    if origin is Literal:
        allowed = get_args(hint)
        for option in allowed:
            if value == option and type(value) is type(option):
                return value
        # YAML and CLI overrides spell '96' and 96 interchangeably.
        for option in allowed:
            if str(value) == str(option) and not isinstance(value, bool):
                return option
        raise ConfigError(
            f"{path}: invalid value {value!r}. Allowed values: "
            f"{', '.join(repr(a) for a in allowed)}."
            f"{_closest(str(value), [str(a) for a in allowed])}"
        )
    if origin in (list, tuple, typing.Sequence) or hint in (list, tuple):
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise ConfigError(f"{path}: expected a list, got {type(value).__name__} {value!r}")
        args = get_args(hint)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{path}: expected {len(args)} items, got {len(value)}")
            items = [_coerce(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            item_hint = args[0] if args else Any
            items = [_coerce(v, item_hint, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else list(items)
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return {str(k): _freeform(v) for k, v in value.items()}
    if isinstance(hint, type) and issubclass(hint, Config):
        if isinstance(value, hint):
            return value
        if isinstance(value, Config):
            value = value.as_dict()
        return hint.from_dict(value, path)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{path}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads '1e-4' as a string.
            except ValueError:
                pass
        raise ConfigError(f"{path}: expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{path}: expected a string, got {value!r}")
    return value


def _freeform(value: Any) -> Any:
    if isinstance(value, Mapping):
        return Config(**{str(k): v for k, v in value.items()})
    return value


def _to_plain(value: Any) -> Any:
    if isinstance(value, Config):
        return value.as_dict()
    if isinstance(value, list | tuple):
        return [_to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    return value

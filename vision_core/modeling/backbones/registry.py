"""The table of backbone builders, keyed by the config's `type` string.

It lives apart from `factory.py` so that backbone modules can register themselves here while
`factory.py` imports every backbone module (registration never depends on a user's import).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any, TypeVar

BuilderFn = TypeVar("BuilderFn", bound=Callable[..., Any])

_BACKBONE_BUILDERS: dict[str, Callable[..., Any]] = {}


def _qualified_name(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def register_backbone_builder(key: str) -> Callable[[BuilderFn], BuilderFn]:
    """Decorator registering `builder(input_specs, backbone_config, norm_activation_config,
    l2_regularizer=None, **kwargs) -> tf_keras.Model` under `key`.

    Args:
      key: the `backbone.type` string that selects this builder.

    Returns:
      The decorator; it returns the builder unchanged.

    Raises:
      ValueError: another builder is already registered under `key`. Re-registering the same
        function (same module and name, e.g. after `importlib.reload`) replaces it silently.
    """
    if not isinstance(key, str) or not key:
        raise ValueError(f"register_backbone_builder: key must be a non-empty string, got {key!r}")

    def decorator(builder: BuilderFn) -> BuilderFn:
        existing = _BACKBONE_BUILDERS.get(key)
        if existing is not None and _qualified_name(existing) != _qualified_name(builder):
            raise ValueError(
                f"backbone type {key!r} is already registered to {_qualified_name(existing)}; "
                f"cannot register {_qualified_name(builder)} under the same key"
            )
        _BACKBONE_BUILDERS[key] = builder
        return builder

    return decorator


def registered_backbone_types() -> list[str]:
    """The registered `backbone.type` strings, sorted."""
    return sorted(_BACKBONE_BUILDERS)


def lookup_backbone_builder(key: str | None) -> Callable[..., Any]:
    """The builder registered under `key`.

    Raises:
      ValueError: nothing is registered under `key`; the message lists the known types and the
        closest one.
    """
    if key in _BACKBONE_BUILDERS:
        return _BACKBONE_BUILDERS[key]
    known = registered_backbone_types()
    hint = ""
    if isinstance(key, str):
        close = difflib.get_close_matches(key, known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(
        f"backbone.type: unknown backbone type {key!r}. Known types: {', '.join(known)}.{hint}"
    )

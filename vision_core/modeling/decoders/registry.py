"""The table of decoder builders, keyed by `model.decoder.type`.

A module of its own so that decoder modules can register their builder beside their class
while `factory.py` imports those modules (which fills the table) without an import cycle.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

DecoderBuilder = Callable[..., Any]

_DECODER_BUILDERS: dict[str, DecoderBuilder] = {}


def register_decoder_builder(key: str) -> Callable[[DecoderBuilder], DecoderBuilder]:
    """Decorator registering `builder(input_specs, model_config, l2_regularizer, **kwargs)`.

    Args:
      key: the `model.decoder.type` string that selects the builder.

    Returns:
      A decorator returning the builder unchanged.

    Raises:
      ValueError: `key` is already taken by a different builder.
    """

    def decorator(builder: DecoderBuilder) -> DecoderBuilder:
        existing = _DECODER_BUILDERS.get(key)
        # A module imported twice (reload, notebooks) re-registers the same function.
        if existing is not None and _qualified_name(existing) != _qualified_name(builder):
            raise ValueError(
                f"decoder type {key!r} is already registered to {_qualified_name(existing)}; "
                f"cannot register {_qualified_name(builder)}"
            )
        _DECODER_BUILDERS[key] = builder
        return builder

    return decorator


def registered_decoder_types() -> list[str]:
    """The registered decoder type names, sorted."""
    return sorted(_DECODER_BUILDERS)


def lookup(key: str) -> DecoderBuilder:
    """The builder registered under `key`.

    Raises:
      ValueError: unknown key; the message lists the known keys and the closest match.
    """
    if key in _DECODER_BUILDERS:
        return _DECODER_BUILDERS[key]
    known = registered_decoder_types()
    message = f"model.decoder.type: unknown decoder {key!r}; known types: {', '.join(known)}"
    close = difflib.get_close_matches(str(key), known, n=1)
    if close:
        message += f"; did you mean {close[0]!r}?"
    raise ValueError(message)


def _qualified_name(fn: Any) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def builder_params(model_config: Any, decoder_type: str, l2_regularizer: Any) -> tuple[Any, dict]:
    """What every decoder builder starts from: the checked `model.decoder.<type>` subconfig and
    the keyword arguments taken from `model.norm_activation` and the regularizer.

    Raises:
      ValueError: `model.decoder.type` is not `decoder_type`.
    """
    from vision_core.hyperparams import get_subconfig

    actual = getattr(model_config.decoder, "type", None)
    if actual != decoder_type:
        raise ValueError(f"model.decoder.type: expected {decoder_type!r}, got {actual!r}")
    norm = model_config.norm_activation
    return get_subconfig(model_config.decoder), {
        "activation": norm.activation,
        "use_sync_bn": norm.use_sync_bn,
        "norm_momentum": norm.norm_momentum,
        "norm_epsilon": norm.norm_epsilon,
        "kernel_regularizer": l2_regularizer,
    }

"""Sizes of the named Vision Transformer variants (Model Garden's `vit_specs.VIT_SPECS`).

Each entry is a partial `VisionTransformer` backbone config: the token width (`hidden_size`),
the patch side (`patch_size`) and the encoder sizes under `transformer`. The `vit` backbone
builder overrides those fields of the config with the entry named by `model_name`; every
other field (pooler, dropout rates, ...) stays as configured.

Ti/S/B/L follow Dosovitskiy et al. (2021) and Steiner et al. (2021); H/g/G/e with patch 14
follow Zhai et al. (2022), "Scaling Vision Transformers".
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any


def _spec(hidden_size: int, patch_size: int, mlp_dim: int, num_heads: int, num_layers: int):
    return MappingProxyType(
        {
            "hidden_size": hidden_size,
            "patch_size": patch_size,
            "transformer": MappingProxyType(
                {"mlp_dim": mlp_dim, "num_heads": num_heads, "num_layers": num_layers}
            ),
        }
    )


# Read-only so that no caller can change a named model for everyone else.
VIT_SPECS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        "vit-ti16": _spec(192, 16, 768, 3, 12),
        "vit-s16": _spec(384, 16, 1536, 6, 12),
        "vit-b16": _spec(768, 16, 3072, 12, 12),
        "vit-b32": _spec(768, 32, 3072, 12, 12),
        "vit-l16": _spec(1024, 16, 4096, 16, 24),
        "vit-l32": _spec(1024, 32, 4096, 16, 24),
        "vit-h14": _spec(1280, 14, 5120, 16, 32),
        "vit-g14": _spec(1408, 14, 5632, 16, 40),
        "vit-G14": _spec(1664, 14, 8192, 16, 48),
        "vit-e14": _spec(1792, 14, 15360, 16, 56),
    }
)


def get_vit_spec(model_name: str) -> dict[str, Any]:
    """A plain, mutable copy of the spec of `model_name`.

    Raises:
      ValueError: `model_name` is not in `VIT_SPECS`; the message lists the known names.
    """
    try:
        spec = VIT_SPECS[model_name]
    except (KeyError, TypeError):
        raise ValueError(
            f"model_name: unknown ViT variant {model_name!r}; expected one of "
            f"{', '.join(VIT_SPECS)}"
        ) from None
    return {
        "hidden_size": spec["hidden_size"],
        "patch_size": spec["patch_size"],
        "transformer": dict(spec["transformer"]),
    }

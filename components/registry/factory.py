"""Opening a registry from its URI: one explicit table of backends keyed by URI scheme."""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Callable

from components.registry.base import ModelRegistry, UnsupportedRegistryError
from components.registry.local import LocalRegistry

# scheme -> factory(uri) for implemented backends. A plain path has the scheme "".
_BACKENDS: dict[str, Callable[[str], ModelRegistry]] = {}
# Schemes that are part of the design but have no backend yet, with what they will address
# (none at the moment; an entry makes open_registry raise UnsupportedRegistryError).
_PLANNED: dict[str, str] = {}


def register_registry_backend(scheme: str, factory: Callable[[str], ModelRegistry]) -> None:
    """Makes `open_registry` use `factory(uri)` for URIs of `scheme` (e.g. "gs").

    Raises:
      ValueError: the scheme already has a backend.
    """
    scheme = scheme.lower()
    if scheme in _BACKENDS:
        raise ValueError(f"registry scheme {scheme!r} already has a backend: {_BACKENDS[scheme]}")
    _BACKENDS[scheme] = factory


def _open_local(uri: str) -> ModelRegistry:
    if uri.lower().startswith("file:"):
        parsed = urllib.parse.urlparse(uri)
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(
                f"registry URI {uri!r}: file URIs name a local path, as file:///abs/path "
                f"(got host {parsed.netloc!r})"
            )
        return LocalRegistry(urllib.parse.unquote(parsed.path))
    return LocalRegistry(uri)


def _open_gcs(uri: str) -> ModelRegistry:
    # Imported on use so that local registries never load the Cloud Storage client.
    from components.registry.gcs import GcsRegistry

    return GcsRegistry(uri)


def _open_vertex(uri: str) -> ModelRegistry:
    # Imports only the storage client; the Vertex SDK is loaded on first use.
    from components.registry.vertex import VertexRegistry

    return VertexRegistry(uri)


register_registry_backend("", _open_local)
register_registry_backend("file", _open_local)
register_registry_backend("gs", _open_gcs)
register_registry_backend("vertex", _open_vertex)


def known_schemes() -> list[str]:
    """The implemented URI schemes ("" being a plain path)."""
    return sorted(_BACKENDS)


def open_registry(uri: str | os.PathLike) -> ModelRegistry:
    """Opens the registry that `uri` addresses.

    Args:
      uri: a local folder (`/data/registry`, `./registry`, `file:///data/registry`), a
        Cloud Storage prefix (`gs://bucket/prefix`), or a Cloud Storage prefix mirrored to the
        Vertex AI Model Registry
        (`vertex://project/region/model_prefix?staging=gs://bucket/prefix`).

    Raises:
      UnsupportedRegistryError: a planned but not yet implemented scheme.
      ValueError: an empty URI, an unknown scheme, or a malformed URI of a known one.
    """
    uri = os.fspath(uri)
    if not uri:
        raise ValueError(
            "registry URI: empty; expected a folder path, file:///path, gs://bucket/prefix or "
            "vertex://project/region/model_prefix?staging=gs://bucket/prefix"
        )
    scheme = ""
    if "://" in uri or uri.lower().startswith("file:"):
        scheme = urllib.parse.urlparse(uri).scheme.lower()
    if scheme in _BACKENDS:
        return _BACKENDS[scheme](uri)
    implemented = "a plain path, " + ", ".join(f"{s}://" for s in known_schemes() if s)
    if scheme in _PLANNED:
        raise UnsupportedRegistryError(
            f"registry URI {uri!r}: the {scheme}:// backend ({_PLANNED[scheme]}) is not "
            f"implemented yet; implemented: {implemented}"
        )
    planned = ", ".join(f"{s}://" for s in sorted(_PLANNED))
    raise ValueError(
        f"registry URI {uri!r}: unknown scheme {scheme!r}; implemented: {implemented}"
        + (f"; planned: {planned}" if planned else "")
    )

"""Version manifests: the list of a version's files with their sizes and SHA-256 digests.

The manifest is the seal of a version. It is written last, after every other file is in place
and flushed, so its presence means the version is complete; checking the files against it
detects truncation, corruption and tampering (a changed byte keeps the size but not the digest).

Format (`MANIFEST.json`)::

    {"format_version": 1, "created_at": "...Z",
     "files": [{"path": "saved_model/saved_model.pb", "size": 1234, "sha256": "<hex>"}, ...]}

Paths are relative to the version folder, use '/', and are sorted; the manifest does not list
itself.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from components.registry.base import ManifestError

MANIFEST_NAME = "MANIFEST.json"
FORMAT_VERSION = 1
_CHUNK = 1 << 20


def sha256_file(path: str, fsync: bool = False) -> tuple[str, int]:
    """Returns (hex SHA-256, size in bytes) of a file, optionally flushing it to disk first."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        if fsync:
            # The manifest vouches for these bytes, so they must be durable before it is written.
            os.fsync(f.fileno())
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _relative_files(root: str) -> list[str]:
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            rel = os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/")
            if rel != MANIFEST_NAME:
                files.append(rel)
    return sorted(files)


def build_manifest(root: str, created_at: str, fsync: bool = False) -> dict[str, Any]:
    """Hashes every file under `root` (except an existing manifest) into a manifest dict."""
    entries = []
    for rel in _relative_files(root):
        digest, size = sha256_file(os.path.join(root, *rel.split("/")), fsync=fsync)
        entries.append({"path": rel, "size": size, "sha256": digest})
    return {"format_version": FORMAT_VERSION, "created_at": created_at, "files": entries}


def write_manifest(root: str, manifest: dict[str, Any]) -> str:
    """Writes `manifest` as `root/MANIFEST.json` via a temporary file, flushed; returns its path."""
    path = os.path.join(root, MANIFEST_NAME)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def read_manifest(root: str) -> dict[str, Any] | None:
    """The manifest of the version folder `root`, or None if it has none (an incomplete version).

    Raises:
      ManifestError: the manifest exists but is not a valid manifest document.
    """
    path = os.path.join(root, MANIFEST_NAME)
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise ManifestError(f"{path}: unreadable manifest: {e}") from e
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, list) or not all(
        isinstance(e, dict) and {"path", "size", "sha256"} <= e.keys() for e in files
    ):
        raise ManifestError(
            f"{path}: expected an object with a 'files' list of {{path, size, sha256}} entries"
        )
    return manifest


def check_files(root: str, manifest: dict[str, Any], prefix: str = "") -> list[str]:
    """Compares the files under `root` with the manifest entries whose path starts with `prefix`.

    Args:
      root: the folder holding the files; entry paths are taken relative to it after removing
        `prefix` (so a downloaded `saved_model/` copy can be checked on its own).
      manifest: a manifest dict as returned by `read_manifest`.
      prefix: only entries under this relative folder (e.g. "saved_model/") are checked.

    Returns:
      One line per problem (missing file, size or digest mismatch, unexpected file); empty if
      the files match exactly.
    """
    expected = {
        e["path"][len(prefix) :]: e for e in manifest["files"] if e["path"].startswith(prefix)
    }
    problems = []
    for rel, entry in sorted(expected.items()):
        full = os.path.join(root, *rel.split("/"))
        shown = prefix + rel
        if not os.path.isfile(full):
            problems.append(f"{shown}: missing")
            continue
        size = os.path.getsize(full)
        if size != entry["size"]:
            problems.append(f"{shown}: size {size} bytes, manifest says {entry['size']}")
            continue
        digest, _ = sha256_file(full)
        if digest != entry["sha256"]:
            problems.append(
                f"{shown}: sha256 {digest[:12]}..., manifest says {entry['sha256'][:12]}..."
            )
    for rel in _relative_files(root):
        if rel not in expected:
            problems.append(f"{prefix + rel}: not listed in the manifest")
    return problems

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
import shutil
import uuid
from collections.abc import Callable
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


def parse_manifest(data: bytes | str, where: str) -> dict[str, Any]:
    """Parses and checks a manifest document; `where` (a path or URI) is named in errors.

    Raises:
      ManifestError: not JSON, or not an object with a 'files' list of {path, size, sha256}.
    """
    try:
        manifest = json.loads(data)
    except ValueError as e:
        raise ManifestError(f"{where}: unreadable manifest: {e}") from e
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, list) or not all(
        isinstance(e, dict) and {"path", "size", "sha256"} <= e.keys() for e in files
    ):
        raise ManifestError(
            f"{where}: expected an object with a 'files' list of {{path, size, sha256}} entries"
        )
    return manifest


def read_manifest(root: str) -> dict[str, Any] | None:
    """The manifest of the version folder `root`, or None if it has none (an incomplete version).

    Raises:
      ManifestError: the manifest exists but is not a valid manifest document.
    """
    path = os.path.join(root, MANIFEST_NAME)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ManifestError(f"{path}: unreadable manifest: {e}") from e
    return parse_manifest(data, path)


def missing_problem(path: str) -> str:
    """The problem line for a manifest entry with no file."""
    return f"{path}: missing"


def unlisted_problem(path: str) -> str:
    """The problem line for a file the manifest does not list."""
    return f"{path}: not listed in the manifest"


def entry_problem(path: str, entry: dict[str, Any], size: int, sha256: str | None) -> str | None:
    """The problem line for a file whose size or digest differs from its entry, else None.

    `sha256` None checks the size only (used before paying for a digest).
    """
    if size != entry["size"]:
        return f"{path}: size {size} bytes, manifest says {entry['size']}"
    if sha256 is not None and sha256 != entry["sha256"]:
        return f"{path}: sha256 {sha256[:12]}..., manifest says {entry['sha256'][:12]}..."
    return None


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
            problems.append(missing_problem(shown))
            continue
        problem = entry_problem(shown, entry, os.path.getsize(full), None)
        if problem is None:
            problem = entry_problem(shown, entry, entry["size"], sha256_file(full)[0])
        if problem is not None:
            problems.append(problem)
    for rel in _relative_files(root):
        if rel not in expected:
            problems.append(unlisted_problem(prefix + rel))
    return problems


def install_checked_copy(
    destination: str,
    manifest: dict[str, Any],
    prefix: str,
    fill: Callable[[str], None],
    what: str,
) -> str:
    """Creates `destination` holding exactly the manifest's files under `prefix`, or nothing.

    `fill(folder)` creates the hidden sibling `folder` and writes the files into it; the copy is
    checked against the manifest and renamed into place, so a failed or corrupt download never
    leaves a folder that looks complete.

    Returns:
      `destination` as an absolute path.

    Raises:
      FileExistsError: `destination` exists and is not an empty folder.
      ManifestError: the copy does not match the manifest (`what` names the version).
    """
    destination = os.path.abspath(os.fspath(destination))
    if os.path.exists(destination) and (not os.path.isdir(destination) or os.listdir(destination)):
        raise FileExistsError(
            f"download destination {destination!r} exists and is not an empty folder"
        )
    parent = os.path.dirname(destination)
    os.makedirs(parent, exist_ok=True)
    partial = os.path.join(parent, f".{os.path.basename(destination)}.{uuid.uuid4().hex}")
    try:
        fill(partial)
        problems = check_files(partial, manifest, prefix=prefix)
        if problems:
            raise ManifestError(
                f"{what}: the copy in {destination!r} does not match the manifest: "
                + "; ".join(problems),
                problems,
            )
        os.rename(partial, destination)  # replaces an empty folder atomically
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return destination

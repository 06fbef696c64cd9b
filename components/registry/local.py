"""The local-directory registry backend.

Layout under the root folder::

    {root}/{model}/versions/{n}/saved_model/...      the SavedModel, copied
                                config.yaml           the training config
                                metrics.json          evaluation metrics
                                lineage.json          provenance + created_at
                                MANIFEST.json         file list with sizes and sha256, written last
    {root}/{model}/aliases.json                       {"champion": 3, ...}
    {root}/{model}/alias_history.jsonl                one line per alias move, appended
    {root}/{model}/.staging/<id>/                     pushes in progress (or interrupted)
    {root}/{model}/.staging/<id>.lock                 held by the live push that owns <id>/
    {root}/{model}/.lock                              serialises number allocation and aliases

How crash safety works: a push assembles the whole version, manifest last, in its own staging
folder, then — holding `.lock` — renames it to `versions/{max + 1}`. A rename is atomic, and
`rename(2)` refuses to replace a non-empty folder, so a version folder appears complete or not at
all and a number is never handed out twice. A process killed mid-push leaves only its staging
folder, which `list_versions` never looks at and `gc()` deletes once no live process holds its
`.lock` file (`fcntl` locks die with their process, so no timeout guesswork is needed).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import stat
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from components.registry import manifest as manifest_lib
from components.registry.base import (
    AliasMove,
    ManifestError,
    ModelRegistry,
    ModelVersion,
    RegistryError,
    validate_model_name,
    validate_version_number,
)
from components.registry.documents import prepare_push

logger = logging.getLogger(__name__)

VERSIONS_DIR = "versions"
STAGING_DIR = ".staging"
ALIASES_FILE = "aliases.json"
HISTORY_FILE = "alias_history.jsonl"
CONFIG_FILE = "config.yaml"
LOCK_FILE = ".lock"
SAVED_MODEL_DIR = "saved_model"
_READ_ONLY = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH


def _copy_file(src: str, dst: str) -> str:
    """Copies one file's bytes; a module-level function so tests can interrupt a copy."""
    return shutil.copyfile(src, dst)


def _fsync_dir(path: str) -> None:
    # A rename is durable only once the directory holding the new entry is flushed.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: str, data: bytes) -> None:
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _lock_path_exclusively(path: str, blocking: bool) -> int | None:
    """Opens (creating) and flocks `path`; returns the fd, or None if another process holds it.

    Retries when the file was unlinked between open and flock (by `gc()` or a finishing push),
    so the returned lock is always on the inode currently at `path`.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)
        if not blocking:
            return None


class LocalRegistry(ModelRegistry):
    """A registry in a local (or locally mounted) folder; see the module docstring for the layout.

    Args:
      root: the registry folder; created on the first push.
    """

    def __init__(self, root: str | os.PathLike):
        self._root = os.path.abspath(os.path.expanduser(os.fspath(root)))

    def __repr__(self) -> str:
        return f"LocalRegistry({self._root!r})"

    @property
    def uri(self) -> str:
        return self._root

    @property
    def root(self) -> str:
        """The registry folder."""
        return self._root

    # ----------------------------------------------------------------------------- layout
    def _model_dir(self, model_name: str) -> str:
        return os.path.join(self._root, validate_model_name(model_name))

    def version_dir(self, model_name: str, version: int) -> str:
        """The folder of a version (whether or not it exists or is complete)."""
        validate_version_number(version)
        return os.path.join(self._model_dir(model_name), VERSIONS_DIR, str(version))

    @contextlib.contextmanager
    def _model_lock(self, model_name: str) -> Iterator[None]:
        model_dir = self._model_dir(model_name)
        os.makedirs(model_dir, exist_ok=True)
        # The lock file is never deleted, so every process locks the same inode.
        fd = os.open(os.path.join(model_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def _numbered_dirs(self, model_name: str) -> list[int]:
        """Every `versions/{n}` folder, complete or not, ascending."""
        versions_dir = os.path.join(self._model_dir(model_name), VERSIONS_DIR)
        try:
            names = os.listdir(versions_dir)
        except FileNotFoundError:
            return []
        # str(int(x)) == x rejects '01' and '+1', which would alias real version numbers.
        return sorted(int(n) for n in names if n.isdigit() and str(int(n)) == n)

    # ----------------------------------------------------------------------------- reading
    def _read_json(self, path: str) -> dict[str, Any]:
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise RegistryError(f"{path}: unreadable JSON: {e}") from e
        if not isinstance(data, dict):
            raise RegistryError(f"{path}: expected a JSON object, got {type(data).__name__}")
        return data

    def _record(
        self, model_name: str, version: int, alias_table: Mapping[str, int]
    ) -> ModelVersion | None:
        """The version's record, or None if its folder has no manifest (not complete)."""
        vdir = self.version_dir(model_name, version)
        manifest = manifest_lib.read_manifest(vdir)
        if manifest is None:
            return None
        lineage = self._read_json(os.path.join(vdir, "lineage.json"))
        return ModelVersion(
            model_name=model_name,
            version=version,
            uri=vdir,
            created_at=str(manifest.get("created_at") or lineage.get("created_at") or ""),
            metrics=self._read_json(os.path.join(vdir, "metrics.json")),
            lineage=lineage,
            aliases=tuple(sorted(a for a, v in alias_table.items() if v == version)),
        )

    def models(self) -> list[str]:
        try:
            names = os.listdir(self._root)
        except FileNotFoundError:
            return []
        found = []
        for name in sorted(names):
            if name.startswith(".") or not os.path.isdir(os.path.join(self._root, name)):
                continue
            try:
                validate_model_name(name)
            except ValueError:
                continue
            versions_dir = os.path.join(self._root, name, VERSIONS_DIR)
            if any(
                os.path.isfile(os.path.join(versions_dir, str(n), manifest_lib.MANIFEST_NAME))
                for n in self._numbered_dirs(name)
            ):
                found.append(name)
        return found

    def list_versions(self, model_name: str) -> list[ModelVersion]:
        alias_table = self.aliases(model_name)
        records = []
        for n in self._numbered_dirs(model_name):
            try:
                record = self._record(model_name, n, alias_table)
            except RegistryError as e:
                # One damaged version must not hide the others; get_version/verify report it.
                logger.warning("Skipping model %r version %d: %s", model_name, n, e)
                continue
            if record is not None:
                records.append(record)
        return records

    def get_version(self, model_name: str, version: int) -> ModelVersion:
        validate_version_number(version)
        record = self._record(model_name, version, self.aliases(model_name))
        if record is None:
            raise self._not_found(model_name, version)
        return record

    def aliases(self, model_name: str) -> dict[str, int]:
        path = os.path.join(self._model_dir(model_name), ALIASES_FILE)
        table = self._read_json(path)
        for alias, version in table.items():
            if isinstance(version, bool) or not isinstance(version, int):
                raise RegistryError(
                    f"{path}: alias {alias!r} maps to {version!r}; expected a version number"
                )
        return table

    # ----------------------------------------------------------------------------- aliases
    def _write_aliases(self, model_name: str, table: Mapping[str, int]) -> None:
        """Replaces aliases.json atomically; the caller holds the model lock."""
        model_dir = self._model_dir(model_name)
        tmp = os.path.join(model_dir, f".{ALIASES_FILE}.{uuid.uuid4().hex}.tmp")
        try:
            _write_file(tmp, (json.dumps(dict(table), indent=2, sort_keys=True) + "\n").encode())
            os.replace(tmp, os.path.join(model_dir, ALIASES_FILE))
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        _fsync_dir(model_dir)

    def _store_alias_move(self, move: AliasMove) -> int | None:
        with self._model_lock(move.model_name):
            # Read-modify-write under the lock so concurrent moves of different aliases never
            # drop one another.
            table = self.aliases(move.model_name)
            entry = self._apply_alias_move(table, move)
            self._write_aliases(move.model_name, table)
            # Appended after the table is replaced, so the history never records a move that did
            # not happen; a crash in between leaves a move without history, which rollback
            # detects (the history no longer ends at the current target) and refuses.
            self._append_history(move.model_name, entry)
        return entry["from"]

    def _append_history(self, model_name: str, entry: Mapping[str, Any]) -> None:
        """Appends one JSON line to the history file; the caller holds the model lock."""
        path = os.path.join(self._model_dir(model_name), HISTORY_FILE)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(dict(entry), sort_keys=True) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def alias_history(self, model_name: str, alias: str | None = None) -> list[dict[str, Any]]:
        path = os.path.join(self._model_dir(model_name), HISTORY_FILE)
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return []
        history = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                # Only a crash mid-append can tear a line; the entries around it still count.
                logger.warning("%s line %d: not JSON, skipped", path, number)
                continue
            if isinstance(entry, dict) and (alias is None or entry.get("alias") == alias):
                history.append(entry)
        return history

    # ----------------------------------------------------------------------------- push
    def push(
        self,
        model_name: str,
        saved_model_dir: str,
        config: str | os.PathLike | Mapping[str, Any],
        metrics: Mapping[str, Any] | None = None,
        lineage: Mapping[str, Any] | None = None,
    ) -> ModelVersion:
        model_dir = self._model_dir(model_name)
        saved_model_dir = os.fspath(saved_model_dir)
        # Everything that can fail on bad input is checked before anything is written.
        docs = prepare_push(saved_model_dir, config, metrics, lineage)
        created_at = docs.created_at

        staging_root = os.path.join(model_dir, STAGING_DIR)
        os.makedirs(staging_root, exist_ok=True)
        stage_id = uuid.uuid4().hex
        lock_path = os.path.join(staging_root, stage_id + ".lock")
        stage_dir = os.path.join(staging_root, stage_id)
        lock_fd = _lock_path_exclusively(lock_path, blocking=True)
        try:
            try:
                os.mkdir(stage_dir)
                shutil.copytree(
                    saved_model_dir,
                    os.path.join(stage_dir, SAVED_MODEL_DIR),
                    copy_function=_copy_file,
                )
                _write_file(os.path.join(stage_dir, CONFIG_FILE), docs.config)
                _write_file(os.path.join(stage_dir, "metrics.json"), docs.metrics)
                _write_file(os.path.join(stage_dir, "lineage.json"), docs.lineage)
                # Hashing the staged copy (not the source) vouches for what was actually stored.
                manifest = manifest_lib.build_manifest(stage_dir, created_at, fsync=True)
                manifest_lib.write_manifest(stage_dir, manifest)
                for dirpath, _, filenames in os.walk(stage_dir):
                    for name in filenames:
                        os.chmod(os.path.join(dirpath, name), _READ_ONLY)
                version = self._commit(model_name, stage_dir)
            except BaseException:
                shutil.rmtree(stage_dir, ignore_errors=True)
                raise
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock_path)
            os.close(lock_fd)
        logger.info("Pushed model %r version %d to %s", model_name, version, self._root)
        return self.get_version(model_name, version)

    def _commit(self, model_name: str, stage_dir: str) -> int:
        """Renames a sealed staging folder to the next free version number; returns it."""
        versions_dir = os.path.join(self._model_dir(model_name), VERSIONS_DIR)
        with self._model_lock(model_name):
            os.makedirs(versions_dir, exist_ok=True)
            numbers = self._numbered_dirs(model_name)
            version = (numbers[-1] if numbers else 0) + 1
            while True:
                try:
                    os.rename(stage_dir, os.path.join(versions_dir, str(version)))
                    break
                except OSError as e:
                    # Only a writer that bypassed the lock can cause this; never overwrite it.
                    if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                        raise
                    version += 1
            _fsync_dir(versions_dir)
        return version

    # ----------------------------------------------------------------------------- files
    def path(self, model_name: str, version: int) -> str:
        return os.path.join(self.get_version(model_name, version).uri, SAVED_MODEL_DIR)

    def get_config(self, model_name: str, version: int) -> str:
        with open(os.path.join(self.get_version(model_name, version).uri, CONFIG_FILE), "rb") as f:
            return f.read().decode("utf-8")

    def verify(self, model_name: str, version: int) -> None:
        vdir = self.version_dir(model_name, version)
        manifest = manifest_lib.read_manifest(vdir)
        if manifest is None:
            raise self._not_found(model_name, version)
        problems = manifest_lib.check_files(vdir, manifest)
        if problems:
            raise ManifestError(
                f"model {model_name!r} version {version} at {vdir} does not match its manifest "
                f"({len(problems)} problem(s)): " + "; ".join(problems),
                problems,
            )

    def download(self, model_name: str, version: int, destination: str) -> str:
        source = self.path(model_name, version)
        manifest = manifest_lib.read_manifest(self.version_dir(model_name, version))

        def fill(folder: str) -> None:
            shutil.copytree(source, folder, copy_function=_copy_file)
            for dirpath, _, filenames in os.walk(folder):
                for name in filenames:
                    # The copy is the caller's to modify; the registry's files are read-only.
                    os.chmod(os.path.join(dirpath, name), 0o644)

        what = f"model {model_name!r} version {version}"
        return manifest_lib.install_checked_copy(
            destination, manifest, SAVED_MODEL_DIR + "/", fill, what
        )

    # ----------------------------------------------------------------------------- gc
    def gc(self, model_name: str | None = None) -> list[str]:
        names = [model_name] if model_name is not None else self._all_model_dirs()
        removed: list[str] = []
        for name in names:
            removed.extend(self._gc_model(name))
        return removed

    def _all_model_dirs(self) -> list[str]:
        try:
            entries = os.listdir(self._root)
        except FileNotFoundError:
            return []
        found = []
        for entry in sorted(entries):
            try:
                validate_model_name(entry)
            except ValueError:
                continue
            if any(
                os.path.isdir(os.path.join(self._root, entry, d))
                for d in (VERSIONS_DIR, STAGING_DIR)
            ):
                found.append(entry)
        return found

    def _gc_model(self, model_name: str) -> list[str]:
        model_dir = self._model_dir(model_name)
        if not os.path.isdir(model_dir):
            return []
        staging_root = os.path.join(model_dir, STAGING_DIR)
        removed = []
        try:
            entries = os.listdir(staging_root)
        except FileNotFoundError:
            entries = []
        stage_ids = {e[: -len(".lock")] if e.endswith(".lock") else e for e in entries}
        for stage_id in sorted(stage_ids):
            lock_path = os.path.join(staging_root, stage_id + ".lock")
            fd = _lock_path_exclusively(lock_path, blocking=False)
            if fd is None:
                continue  # a live push owns it
            try:
                stage_path = os.path.join(staging_root, stage_id)
                if os.path.isdir(stage_path):
                    shutil.rmtree(stage_path, ignore_errors=True)
                    removed.append(stage_path)
                elif os.path.exists(stage_path):
                    os.unlink(stage_path)
                    removed.append(stage_path)
                os.unlink(lock_path)
            finally:
                os.close(fd)
        with self._model_lock(model_name):
            # Temporary alias files are only written under this lock, so any left are debris.
            for entry in os.listdir(model_dir):
                if entry.startswith(f".{ALIASES_FILE}.") and entry.endswith(".tmp"):
                    os.unlink(os.path.join(model_dir, entry))
                    removed.append(os.path.join(model_dir, entry))
        for n in self._numbered_dirs(model_name):
            vdir = self.version_dir(model_name, n)
            if not os.path.isfile(os.path.join(vdir, manifest_lib.MANIFEST_NAME)):
                # Not created by push (which renames sealed folders only); left for a human.
                logger.warning("%s has no manifest: not a complete version, not removed", vdir)
        if removed:
            logger.info(
                "gc removed %d item(s) of interrupted work under %s", len(removed), model_dir
            )
        return removed

"""File helpers for local paths (through `os`) and remote URLs such as gs:// (through Beam).

Remote paths (anything with a `scheme://`) go through `apache_beam.io.filesystems.FileSystems`,
which honours `STORAGE_EMULATOR_HOST` for gs:// (TensorFlow's gs:// filesystem does not) and
uses the same credentials as the pipeline. Object stores have no folders: a "folder" there is
a name prefix, which exists while some object lies under `<path>/`, so `makedirs` is a no-op and
an emptied folder disappears.

Atomicity:
  * local: `write_bytes_atomic` writes a temporary file beside the target and `os.replace`s it
    over the target; `rename` is `os.replace`. Readers see the old file or the complete new one.
  * gs://: an object becomes visible only when its upload is finalised, so a reader also sees the
    old object or the complete new one, never a partial one, and a failed upload is cancelled
    instead of being finalised. But GCS has no rename: `rename` copies then deletes, so for a
    moment both names exist, and a sequence of renames is not atomic as a whole. Writers that
    need "all or nothing" across several files therefore write a marker last (the converter's
    `summary.json`) and readers trust only what the marker lists.
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import os
import posixpath
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Sequence

TMP_PREFIX = ".tmp-"
# Chunk size for streaming a local file to an object store.
_COPY_CHUNK = 8 * 1024 * 1024
_GLOB_CHARS = re.compile(r"[*?\[]")


def is_remote(path: str) -> bool:
    """Whether `path` is a URL (gs://, s3://, ...) rather than a local path."""
    return "://" in path


def join(*parts: str) -> str:
    """Joins path parts with '/', which both local POSIX paths and gs:// URLs use."""
    return posixpath.join(*parts)


def _filesystems():
    # Imported lazily: Beam is heavy, and local paths never need it.
    from apache_beam.io.filesystems import FileSystems

    return FileSystems


def _uncompressed():
    # Beam would otherwise gzip/gunzip by file extension (`.gz` shards must stay as written).
    from apache_beam.io.filesystem import CompressionTypes

    return CompressionTypes.UNCOMPRESSED


def _is_not_found(error: BaseException) -> bool:
    """Whether `error` (possibly a BeamIOError wrapping others) means "no such object/bucket"."""
    if isinstance(error, FileNotFoundError):
        return True
    try:
        from google.api_core import exceptions as google_exceptions
    except ImportError:  # pragma: no cover - google-cloud-storage comes with Beam[gcp]
        google_exceptions = None
    if google_exceptions is not None and isinstance(error, google_exceptions.NotFound):
        return True
    details = getattr(error, "exception_details", None)
    if isinstance(details, dict) and details:
        return all(_is_not_found(e) for e in details.values() if isinstance(e, BaseException))
    return False


def _check_literal(path: str) -> None:
    # Beam treats * ? [ as glob characters in deletes and matches; refuse rather than guess.
    if _GLOB_CHARS.search(path):
        raise ValueError(f"remote path must not contain glob characters (* ? [): {path!r}")


def _remote_objects(prefix: str, limit: int | None = None) -> list[str]:
    """Paths of the objects whose name starts with `prefix` (sorted)."""
    # List the part before any glob character, then keep exact prefix matches: Beam's match has
    # no way to quote glob characters.
    literal = _GLOB_CHARS.split(prefix, maxsplit=1)[0]
    exact = literal == prefix
    try:
        (result,) = _filesystems().match([literal + "**"], limits=[limit if exact else None])
    except Exception as e:
        if _is_not_found(e):
            return []
        raise
    return sorted(m.path for m in result.metadata_list if m.path.startswith(prefix))


def _upload_stream(source, path: str) -> None:
    """Streams a binary file object to the remote `path`; a failure leaves no object behind."""
    writer = _filesystems().create(path, compression_type=_uncompressed())
    try:
        shutil.copyfileobj(source, writer, _COPY_CHUNK)
    except BaseException:
        # GCS writers can cancel the resumable upload; closing would publish a partial object.
        terminate = getattr(writer, "terminate", None)
        if terminate is not None:
            terminate()
        else:
            writer.close()
            remove(path)
        raise
    writer.close()


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Writes `data` to `path` so that readers see the old content or all of the new one.

    Locally through a temporary file beside `path` renamed over it; remotely by one upload,
    which the object store publishes only when complete.
    """
    if is_remote(path):
        _upload_stream(io.BytesIO(data), path)
        return
    directory, name = os.path.split(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f"{TMP_PREFIX}{name}-{uuid.uuid4().hex}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def write_text_atomic(path: str, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


@contextlib.contextmanager
def local_file_for(path: str) -> Iterator[str]:
    """Yields a local file name to write; on success its content becomes `path`, atomically.

    For writers that need a real file (e.g. `tf.io.TFRecordWriter`, which cannot reach object
    stores through Beam): locally the file is a temporary beside `path` renamed over it; for a
    remote `path` it is a local temporary file uploaded when the block ends. On an exception
    nothing is written to `path`.
    """
    if not is_remote(path):
        directory, name = os.path.split(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        tmp = os.path.join(directory, f"{TMP_PREFIX}{name}-{uuid.uuid4().hex}")
        try:
            yield tmp
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
        return
    with tempfile.TemporaryDirectory(prefix="fs-upload-") as scratch:
        tmp = os.path.join(scratch, posixpath.basename(path) or "file")
        yield tmp
        with open(tmp, "rb") as f:
            _upload_stream(f, path)


def read_bytes(path: str) -> bytes:
    """The content of a file.

    Raises:
      FileNotFoundError: no such file / object.
      OSError or the object store's error: it cannot be read.
    """
    if not is_remote(path):
        with open(path, "rb") as f:
            return f.read()
    _check_literal(path)
    try:
        with _filesystems().open(path, compression_type=_uncompressed()) as f:
            return f.read()
    except Exception as e:
        if _is_not_found(e):
            raise FileNotFoundError(f"no such object: {path}") from e
        raise


def read_head(path: str, size: int) -> bytes:
    """The first `size` bytes of a file (fewer if it is shorter); raises like `read_bytes`."""
    if not is_remote(path):
        with open(path, "rb") as f:
            return f.read(size)
    _check_literal(path)
    try:
        with _filesystems().open(path, compression_type=_uncompressed()) as f:
            return f.read(size)
    except Exception as e:
        if _is_not_found(e):
            raise FileNotFoundError(f"no such object: {path}") from e
        raise


@contextlib.contextmanager
def local_copy(path: str) -> Iterator[str]:
    """Yields a local file name holding the content of `path`: `path` itself when it is local,
    a temporary download (deleted afterwards) when it is remote.

    For readers that need a real file (e.g. `tf.data.TFRecordDataset`, whose gs:// support
    bypasses Beam's filesystems).
    """
    if not is_remote(path):
        yield path
        return
    _check_literal(path)
    with tempfile.TemporaryDirectory(prefix="fs-download-") as scratch:
        local = os.path.join(scratch, posixpath.basename(path) or "file")
        try:
            with (
                _filesystems().open(path, compression_type=_uncompressed()) as src,
                open(local, "wb") as dst,
            ):
                shutil.copyfileobj(src, dst, _COPY_CHUNK)
        except Exception as e:
            if _is_not_found(e):
                raise FileNotFoundError(f"no such object: {path}") from e
            raise
        yield local


def exists(path: str) -> bool:
    """Whether `path` is a file or a folder (remotely: an object, or a non-empty prefix)."""
    if not is_remote(path):
        return os.path.exists(path)
    if not _GLOB_CHARS.search(path):
        try:
            if _filesystems().exists(path):
                return True
        except Exception as e:
            if not _is_not_found(e):
                raise
    return isdir(path)


def isdir(path: str) -> bool:
    """Whether `path` is a folder (remotely: some object's name starts with `path/`)."""
    if not is_remote(path):
        return os.path.isdir(path)
    return bool(_remote_objects(path.rstrip("/") + "/", limit=1))


def listdir(path: str) -> list[str]:
    """Sorted names of the files and folders directly in `path`.

    Remotely this lists every object under the prefix (object stores list flat) and keeps the
    first name component of each; it returns [] for a missing prefix.
    """
    if not is_remote(path):
        return sorted(os.listdir(path))
    prefix = path.rstrip("/") + "/"
    names = {p[len(prefix) :].split("/", 1)[0] for p in _remote_objects(prefix)}
    names.discard("")  # a "folder placeholder" object named exactly `prefix`
    return sorted(names)


def glob(directory: str, name_pattern: str) -> list[str]:
    """Sorted paths of the entries of `directory` whose name matches the fnmatch pattern."""
    return [
        join(directory, name)
        for name in listdir(directory)
        if fnmatch.fnmatchcase(name, name_pattern)
    ]


def size(path: str) -> int:
    """Size of a file in bytes.

    Raises:
      FileNotFoundError: no such file / object.
    """
    if not is_remote(path):
        return os.path.getsize(path)
    _check_literal(path)
    try:
        return int(_filesystems().get_filesystem(path).size(path))
    except Exception as e:
        if _is_not_found(e):
            raise FileNotFoundError(f"no such object: {path}") from e
        raise


def makedirs(path: str) -> None:
    """Creates a local folder and its parents; nothing to do on object stores."""
    if not is_remote(path):
        os.makedirs(path, exist_ok=True)


def rmtree(path: str) -> None:
    """Deletes a folder and everything under it, if it exists.

    Raises:
      OSError: remotely, when objects are still there after the delete.
    """
    if not is_remote(path):
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)
        return
    _check_literal(path)
    prefix = path.rstrip("/") + "/"
    if not _remote_objects(prefix, limit=1):
        return
    # A trailing '/' makes Beam delete the whole prefix in batches (one listing).
    _filesystems().delete([prefix])
    # ...but it only logs objects it failed to delete, so check.
    left = _remote_objects(prefix)
    if left:
        raise OSError(f"could not delete {len(left)} object(s) under {prefix}, e.g. {left[0]}")


def remove(path: str) -> None:
    """Deletes a file if it exists."""
    if not is_remote(path):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        return
    _check_literal(path)
    try:
        if _filesystems().exists(path):
            _filesystems().delete([path])
    except Exception as e:
        if not _is_not_found(e):
            raise


def rename(src: str, dst: str) -> None:
    """Moves a file over `dst` (remotely: copy, then delete; see the module docstring)."""
    rename_many([src], [dst])


def rename_many(sources: Sequence[str], destinations: Sequence[str]) -> None:
    """Moves files pairwise, each over its destination (remotely in batched copies + deletes)."""
    if len(sources) != len(destinations):
        raise ValueError(
            f"sources and destinations differ in length: {len(sources)} != {len(destinations)}"
        )
    remote = [p for p in (*sources, *destinations) if is_remote(p)]
    if not remote:
        for src, dst in zip(sources, destinations):
            os.replace(src, dst)
        return
    if len(remote) != 2 * len(sources):
        raise ValueError("cannot move files between a local path and a remote one")
    for p in remote:
        _check_literal(p)
    if sources:
        _filesystems().rename(list(sources), list(destinations))

"""File helpers that work on local paths and on gs:// alike (through tf.io.gfile)."""

from __future__ import annotations

import posixpath
import uuid

import tensorflow as tf

TMP_PREFIX = ".tmp-"


def join(*parts: str) -> str:
    """Joins path parts with '/', which both local POSIX paths and gs:// URLs use."""
    return posixpath.join(*parts)


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Writes `data` to a temporary name beside `path`, then renames it over `path`.

    A reader therefore sees either the old file or the complete new one, never a partial write.
    """
    directory, name = posixpath.split(path)
    if directory:
        tf.io.gfile.makedirs(directory)
    tmp = join(directory, f"{TMP_PREFIX}{name}-{uuid.uuid4().hex}")
    try:
        with tf.io.gfile.GFile(tmp, "wb") as f:
            f.write(data)
        tf.io.gfile.rename(tmp, path, overwrite=True)
    except BaseException:
        if tf.io.gfile.exists(tmp):
            tf.io.gfile.remove(tmp)
        raise


def write_text_atomic(path: str, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def read_bytes(path: str) -> bytes:
    with tf.io.gfile.GFile(path, "rb") as f:
        return f.read()


def exists(path: str) -> bool:
    return tf.io.gfile.exists(path)


def isdir(path: str) -> bool:
    return tf.io.gfile.isdir(path)


def listdir(path: str) -> list[str]:
    """Sorted entry names of a folder (gfile may add a trailing '/' to folders on GCS)."""
    return sorted(name.rstrip("/") for name in tf.io.gfile.listdir(path))


def makedirs(path: str) -> None:
    tf.io.gfile.makedirs(path)


def rmtree(path: str) -> None:
    if tf.io.gfile.exists(path):
        tf.io.gfile.rmtree(path)


def remove(path: str) -> None:
    if tf.io.gfile.exists(path):
        tf.io.gfile.remove(path)


def rename(src: str, dst: str) -> None:
    tf.io.gfile.rename(src, dst, overwrite=True)

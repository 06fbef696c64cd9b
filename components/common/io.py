"""Atomic file writes and dataset paths shared by the steps."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Writes to a temporary name in the same folder, then renames over `path`."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text_atomic(path: str, text: str) -> None:
    """Writes UTF-8 text atomically (see `write_bytes_atomic`)."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def split_pattern(dataset_dir: str, split: str) -> str:
    """The TFRecord file pattern of one split inside a converted dataset folder."""
    return os.path.join(dataset_dir, f"{split}-*-of-*.tfrecord*")

"""The records a dataset source produces: cheap references listed in the launcher, and loaded
feature dicts. Kept apart from `sources` so that every source module (`coco`, ...) can use them
while `sources` imports the source modules to register them."""

from __future__ import annotations

import dataclasses
import json
import posixpath
from collections.abc import Mapping
from typing import Any, Protocol

from components.convert_dataset import _fs, errors, examples, images
from vision_core.dataloaders import tf_example_keys as keys

# `RecordRef.paths` entries that carry a value, not a file: the COCO-style image id and the
# class folder's name. Everything else in `paths` names a file the record reads.
NON_FILE_KEYS = frozenset({"image_id", "class"})


@dataclasses.dataclass(frozen=True)
class RecordRef:
    """What a worker needs to load one record.

    Attributes:
      split: The split name.
      key: Unique, stable id of the record within its split (the sort and shard key).
      paths: Named input files, e.g. {'image': ..., 'mask': ...}, plus the values named in
        `NON_FILE_KEYS` (the image id, the class name).
      problem: A defect found while listing, as (reason, path, detail); `load` reports it.
      payload: JSON data the launcher already holds and `load` needs (e.g. the image's COCO
        annotations), so that workers need not read a whole annotation file each: it travels
        in the manifest, one shard's worth at a time.
    """

    split: str
    key: str
    paths: Mapping[str, str]
    problem: tuple[str, str, str] | None = None
    payload: Mapping[str, Any] | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "split": self.split,
                "key": self.key,
                "paths": dict(self.paths),
                "problem": self.problem,
                "payload": self.payload,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> RecordRef:
        data = json.loads(text)
        problem = tuple(data["problem"]) if data["problem"] is not None else None
        return cls(data["split"], data["key"], data["paths"], problem, data.get("payload"))


@dataclasses.dataclass(frozen=True)
class Record:
    """A loaded record: tf.Example features plus statistics for the summary."""

    key: str
    features: Mapping[str, Any]
    class_histogram: Mapping[int, int] = dataclasses.field(default_factory=dict)


class Source(Protocol):
    """The interface every dataset layout implements."""

    def list_records(self, split: str) -> list[RecordRef]: ...

    def load(self, ref: RecordRef) -> Record: ...

    def listing_notes(self, split: str) -> dict[str, int]:
        """Counts of things noticed while listing that are not records (e.g. orphan masks)."""
        ...


class ListingNotes:
    """Gives a source `listing_notes` from the `_notes` its `list_records` fills per split."""

    _notes: dict[str, dict[str, int]]

    def listing_notes(self, split: str) -> dict[str, int]:
        return dict(self._notes.get(split, {}))


def check_listed(ref: RecordRef) -> None:
    """Raises the defect `list_records` found in `ref`, if any, as the record's bad reason."""
    if ref.problem is not None:
        raise errors.BadRecordError(*ref.problem)


def image_features(key: str, image_path: str, image: images.DecodedImage) -> dict[str, Any]:
    """The image fields every record carries."""
    return {
        keys.IMAGE_ENCODED: image.encoded,
        keys.IMAGE_FORMAT: image.format,
        keys.IMAGE_SOURCE_ID: key,
        keys.IMAGE_HEIGHT: image.height,
        keys.IMAGE_WIDTH: image.width,
        keys.IMAGE_FILENAME: posixpath.basename(image_path),
        keys.IMAGE_KEY_SHA256: examples.sha256_hex(image.encoded),
    }


def read_file(path: str, missing: str, unreadable: str | None = None) -> bytes:
    """Reads a record's input file; one that is missing or cannot be read is a bad record.

    Args:
      path: The file.
      missing: The bad-record reason when the file cannot be read.
      unreadable: The reason instead when the file exists but cannot be read (e.g. no
        permission); None gives `missing` either way, without looking for the file.

    Raises:
      BadRecordError: `missing` or `unreadable`, the read error in its detail.
    """
    try:
        return _fs.read_bytes(path)
    except Exception as e:  # tf.errors.NotFoundError, PermissionDeniedError, ...
        reason = missing
        if unreadable is not None and _fs.exists(path):
            reason = unreadable
        raise errors.BadRecordError(reason, path, f"cannot read ({type(e).__name__}: {e})") from e


def read_image(path: str, missing: str = errors.IMAGE_MISSING) -> images.DecodedImage:
    """Reads and checks a record's image (`images.decode_image`).

    Args:
      path: The image file.
      missing: The bad-record reason of a file that is not there (a file that is there but
        cannot be read or decoded is `image_corrupt`).

    Raises:
      BadRecordError: `missing`, or a reason of `images.decode_image`.
    """
    return images.decode_image(read_file(path, missing, errors.IMAGE_CORRUPT), path)

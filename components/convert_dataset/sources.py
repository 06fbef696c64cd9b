"""Dataset sources: a dataset folder → records of (key, feature dict).

A source works in two phases so a Beam runner can spread the expensive part:

* `list_records(split)` runs once in the launching process. It only lists files and returns cheap,
  picklable `RecordRef`s sorted by key.
* `load(ref)` runs on the workers. It reads and checks the files and returns a `Record` whose
  features are keyed by `vision_core.dataloaders.tf_example_keys`, or raises `BadRecordError`.

Encoding to tf.Example, sharding and writing live in `pipeline.py` and know nothing about layouts,
so a new layout (COCO, VOC, Cityscapes, class folders) is one new class in `SOURCES`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import posixpath
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from components.convert_dataset import _fs, errors, examples, images
from vision_core.dataloaders import tf_example_keys as keys

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
MASK_EXTENSION = ".png"


@dataclasses.dataclass(frozen=True)
class RecordRef:
    """What a worker needs to load one record.

    Attributes:
      split: The split name.
      key: Unique, stable id of the record within its split (the sort and shard key).
      paths: Named input files, e.g. {'image': ..., 'mask': ...}.
      problem: A defect found while listing, as (reason, path, detail); `load` reports it.
    """

    split: str
    key: str
    paths: Mapping[str, str]
    problem: tuple[str, str, str] | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "split": self.split,
                "key": self.key,
                "paths": dict(self.paths),
                "problem": self.problem,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> RecordRef:
        data = json.loads(text)
        problem = tuple(data["problem"]) if data["problem"] is not None else None
        return cls(data["split"], data["key"], data["paths"], problem)


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


def class_histogram(mask: np.ndarray) -> dict[int, int]:
    counts = np.bincount(np.asarray(mask, dtype=np.uint8).ravel(), minlength=256)
    return {int(c): int(n) for c, n in enumerate(counts) if n}


@dataclasses.dataclass
class FolderSource:
    """Images with semantic masks, paired by file stem.

    Layout: `images/<split>/<stem>.png|jpg|jpeg` and `masks/<split>/<stem>.png` (one channel of
    class ids). The record key is the stem; `image/source_id` is the stem too.
    """

    source_dir: str
    _notes: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict, repr=False)

    def _dir(self, kind: str, split: str) -> str:
        return _fs.join(self.source_dir, kind, split)

    def list_records(self, split: str) -> list[RecordRef]:
        image_dir = self._dir("images", split)
        if not _fs.isdir(image_dir):
            raise errors.ConversionError(
                f"split {split!r}: image folder {image_dir} does not exist; the 'folders' source "
                "expects images/<split>/<stem>.png|jpg and masks/<split>/<stem>.png"
            )
        by_stem: dict[str, list[str]] = {}
        for name in _fs.listdir(image_dir):
            stem, ext = posixpath.splitext(name)
            if ext.lower() in IMAGE_EXTENSIONS and not name.startswith("."):
                by_stem.setdefault(stem, []).append(name)
        if not by_stem:
            raise errors.ConversionError(
                f"split {split!r}: no .png/.jpg/.jpeg images in {image_dir}"
            )
        mask_dir = self._dir("masks", split)
        mask_stems = set()
        if _fs.isdir(mask_dir):
            mask_stems = {
                posixpath.splitext(n)[0]
                for n in _fs.listdir(mask_dir)
                if posixpath.splitext(n)[1].lower() == MASK_EXTENSION
            }
        orphans = sorted(mask_stems - set(by_stem))
        if orphans:
            logger.warning(
                "split %r: %d masks in %s have no image (first: %s)",
                split,
                len(orphans),
                mask_dir,
                orphans[0],
            )
        self._notes[split] = {"masks_without_image": len(orphans)}

        refs = []
        for stem in sorted(by_stem):
            names = by_stem[stem]
            image_path = _fs.join(image_dir, names[0])
            mask_path = _fs.join(mask_dir, stem + MASK_EXTENSION)
            problem = None
            if len(names) > 1:
                problem = (
                    errors.DUPLICATE_STEM,
                    image_path,
                    f"several images share the stem {stem!r}: {', '.join(names)}",
                )
            elif stem not in mask_stems:
                problem = (errors.MASK_MISSING, mask_path, "no mask file for this image")
            refs.append(RecordRef(split, stem, {"image": image_path, "mask": mask_path}, problem))
        return refs

    def listing_notes(self, split: str) -> dict[str, int]:
        return dict(self._notes.get(split, {}))

    def load(self, ref: RecordRef) -> Record:
        if ref.problem is not None:
            raise errors.BadRecordError(*ref.problem)
        image_path, mask_path = ref.paths["image"], ref.paths["mask"]
        image = images.decode_image(_read(image_path, errors.IMAGE_CORRUPT), image_path)
        mask = images.decode_mask(
            _read(mask_path, errors.MASK_MISSING), mask_path, (image.height, image.width)
        )
        features = {
            keys.IMAGE_ENCODED: image.encoded,
            keys.IMAGE_FORMAT: image.format,
            keys.IMAGE_SOURCE_ID: ref.key,
            keys.IMAGE_HEIGHT: image.height,
            keys.IMAGE_WIDTH: image.width,
            keys.IMAGE_FILENAME: posixpath.basename(image_path),
            keys.IMAGE_KEY_SHA256: examples.sha256_hex(image.encoded),
            keys.SEGMENTATION_CLASS_ENCODED: images.encode_mask_png(mask),
            keys.SEGMENTATION_CLASS_FORMAT: "png",
        }
        return Record(ref.key, features, class_histogram(mask))


def _read(path: str, reason: str) -> bytes:
    """Reads a file; a file that vanished or cannot be read is a bad record, not a crash."""
    try:
        return _fs.read_bytes(path)
    except Exception as e:  # tf.errors.NotFoundError, PermissionDeniedError, ...
        raise errors.BadRecordError(reason, path, f"cannot read ({type(e).__name__}: {e})") from e


SOURCES: dict[str, type] = {"folders": FolderSource}


def build_source(name: str, source_dir: str) -> Source:
    """The source registered as `name`, reading from `source_dir`."""
    if name not in SOURCES:
        raise errors.ConversionError(
            f"unknown source {name!r}; known sources: {', '.join(sorted(SOURCES))}"
        )
    if not _fs.isdir(source_dir):
        raise errors.ConversionError(f"source folder {source_dir} does not exist")
    return SOURCES[name](source_dir)

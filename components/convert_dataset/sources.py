"""Dataset sources: a dataset folder → records of (key, feature dict).

A source works in two phases so a Beam runner can spread the expensive part:

* `list_records(split)` runs once in the launching process. It only lists files and returns cheap,
  picklable `RecordRef`s sorted by key.
* `load(ref)` runs on the workers. It reads and checks the files and returns a `Record` whose
  features are keyed by `vision_core.dataloaders.tf_example_keys`, or raises `BadRecordError`.

Encoding to tf.Example, sharding and writing live in `pipeline.py` and know nothing about layouts,
so a new layout (COCO, VOC, Cityscapes, ...) is one new class in `SOURCES`.

Sources by task:
  segmentation    'folders': images/<split>/<stem>.png|jpg + masks/<split>/<stem>.png
                  'cityscapes': leftImg8bit/<split>/<city>/ + gtFine labelIds → 19 trainIds
                  'voc': VOC year folder, ImageSets/Segmentation/<split>.txt + JPEGImages/ +
                  SegmentationClass/ palette PNGs (`voc.py`)
  classification  'class_folders': <split>/<class_name>/*.png|jpg (ImageNet style)
                  'shapes_classification': the shapes layout, labelled by dominant shape
  detection       'coco': annotations/instances_<split>.json + images/<split>/ (or explicit
                  paths per split); the shapes generator writes this too (see `coco.py`)
                  'cityscapes': gtFine instanceIds → the 8 instance classes (`cityscapes.py`)
                  'voc': VOC year folder, ImageSets/Main/<split>.txt + JPEGImages/ +
                  Annotations/ XML, the 20 VOC classes (`voc.py`)

`RecordRef`, `Record` and `Source` live in `records.py` and are re-exported here.
"""

from __future__ import annotations

import dataclasses
import logging
import posixpath
from typing import Any

import numpy as np

from components.convert_dataset import (
    _fs,
    cityscapes,
    coco,
    coco_panoptic,
    errors,
    images,
    records,
    shapes,
    voc,
)
from components.convert_dataset.records import Record, RecordRef, Source, image_features
from vision_core.dataloaders import tf_example_keys as keys

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
MASK_EXTENSION = ".png"


def class_histogram(mask: np.ndarray) -> dict[int, int]:
    counts = np.bincount(np.asarray(mask, dtype=np.uint8).ravel(), minlength=256)
    return {int(c): int(n) for c, n in enumerate(counts) if n}


@dataclasses.dataclass
class FolderSource(records.ListingNotes):
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

    def _read_pair(self, ref: RecordRef) -> tuple[images.DecodedImage, np.ndarray]:
        """The record's checked image and its mask of class ids."""
        records.check_listed(ref)
        image_path, mask_path = ref.paths["image"], ref.paths["mask"]
        image = records.read_image(image_path, errors.IMAGE_CORRUPT)
        mask = images.decode_mask(
            records.read_file(mask_path, errors.MASK_MISSING),
            mask_path,
            (image.height, image.width),
        )
        return image, mask

    def load(self, ref: RecordRef) -> Record:
        image, mask = self._read_pair(ref)
        image_path = ref.paths["image"]
        features = image_features(ref.key, image_path, image)
        features[keys.SEGMENTATION_CLASS_ENCODED] = images.encode_mask_png(mask)
        features[keys.SEGMENTATION_CLASS_FORMAT] = "png"
        return Record(ref.key, features, class_histogram(mask))


@dataclasses.dataclass
class ShapesClassificationSource(FolderSource):
    """The shapes dataset for image classification: each image labelled by its dominant shape.

    Reads the same images/<split> + masks/<split> layout as `FolderSource`; the label is the
    shape class with the most visible pixels in the mask (`shapes.dominant_class`), an index into
    `shapes.CLASSIFICATION_CLASSES`. The mask itself is not stored.
    """

    class_names: tuple[str, ...] = shapes.CLASSIFICATION_CLASSES

    def load(self, ref: RecordRef) -> Record:
        image, mask = self._read_pair(ref)
        image_path, mask_path = ref.paths["image"], ref.paths["mask"]
        label = shapes.dominant_class(mask)
        if label is None:
            raise errors.BadRecordError(
                errors.LABEL_MISSING, mask_path, "the mask shows no shape to label the image by"
            )
        return classification_record(ref, image_path, image, label, self.class_names[label])


@dataclasses.dataclass
class ClassFolderSource(records.ListingNotes):
    """ImageNet-style class folders: `<split>/<class_name>/<file>.png|jpg|jpeg`.

    Class ids are the positions in `class_names`, which defaults to the sorted union of the class
    folder names over all converted splits, so every split numbers the classes alike. The record
    key is `<class_name>/<file name>`. Files directly in a split folder (outside any class
    folder) are counted in the summary and skipped; unreadable images are bad records.
    """

    source_dir: str
    splits: tuple[str, ...] = ()
    class_names: tuple[str, ...] = ()
    _notes: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.splits = tuple(self.splits)
        self.class_names = tuple(self.class_names)
        found: set[str] = set()
        for split in self.splits:
            found.update(self._class_folders(split))
        if not self.class_names:
            self.class_names = tuple(sorted(found))
        else:
            unknown = sorted(found - set(self.class_names))
            if unknown:
                raise errors.ConversionError(
                    f"class folders {unknown} under {self.source_dir} are not in class_names "
                    f"{list(self.class_names)}; add them or remove the folders"
                )
            if len(set(self.class_names)) != len(self.class_names):
                raise errors.ConversionError(
                    f"class_names must be distinct, got {list(self.class_names)}"
                )
        if not self.class_names:
            raise errors.ConversionError(
                f"no class folders in {self.source_dir}; the 'folders' source for "
                "classification expects <split>/<class_name>/<image>.png|jpg"
            )

    def _split_dir(self, split: str) -> str:
        split_dir = _fs.join(self.source_dir, split)
        if not _fs.isdir(split_dir):
            raise errors.ConversionError(
                f"split {split!r}: folder {split_dir} does not exist; the 'folders' source for "
                "classification expects <split>/<class_name>/<image>.png|jpg"
            )
        return split_dir

    def _class_folders(self, split: str) -> list[str]:
        split_dir = self._split_dir(split)
        return [
            name
            for name in _fs.listdir(split_dir)
            if not name.startswith(".") and _fs.isdir(_fs.join(split_dir, name))
        ]

    def list_records(self, split: str) -> list[RecordRef]:
        split_dir = self._split_dir(split)
        folders = set(self._class_folders(split))
        loose = [
            name
            for name in _fs.listdir(split_dir)
            if name not in folders and posixpath.splitext(name)[1].lower() in IMAGE_EXTENSIONS
        ]
        if loose:
            logger.warning(
                "split %r: %d images in %s are outside any class folder and are skipped "
                "(first: %s)",
                split,
                len(loose),
                split_dir,
                loose[0],
            )
        refs = []
        per_class = {}
        for name in self.class_names:
            if name not in folders:
                per_class[name] = 0
                continue
            class_dir = _fs.join(split_dir, name)
            files = [
                f
                for f in _fs.listdir(class_dir)
                if posixpath.splitext(f)[1].lower() in IMAGE_EXTENSIONS and not f.startswith(".")
            ]
            per_class[name] = len(files)
            refs.extend(
                RecordRef(split, f"{name}/{f}", {"image": _fs.join(class_dir, f), "class": name})
                for f in files
            )
        if not refs:
            raise errors.ConversionError(
                f"split {split!r}: no .png/.jpg/.jpeg images in the class folders of {split_dir}"
            )
        empty = [name for name, count in per_class.items() if count == 0]
        if empty:
            logger.warning("split %r: no images for classes %s", split, empty)
        self._notes[split] = {"images_outside_class_folders": len(loose)}
        return sorted(refs, key=lambda r: r.key)

    def load(self, ref: RecordRef) -> Record:
        records.check_listed(ref)
        image_path, name = ref.paths["image"], ref.paths["class"]
        image = records.read_image(image_path, errors.IMAGE_CORRUPT)
        return classification_record(ref, image_path, image, self.class_names.index(name), name)


def classification_record(
    ref: RecordRef, image_path: str, image: images.DecodedImage, label: int, name: str
) -> Record:
    """An image with its class id (`image/class/label`) and name (`image/class/text`)."""
    features = image_features(ref.key, image_path, image)
    features[keys.IMAGE_CLASS_LABEL] = int(label)
    features[keys.IMAGE_CLASS_TEXT] = name
    return Record(ref.key, features, {int(label): 1})


SOURCES: dict[str, type] = {
    "folders": FolderSource,
    "class_folders": ClassFolderSource,
    "shapes_classification": ShapesClassificationSource,
    "coco": coco.CocoSource,
    "coco_panoptic": coco_panoptic.CocoPanopticSource,
    "cityscapes": cityscapes.CityscapesSource,
    "voc": voc.VocSource,
}

__all__ = [
    "SOURCES",
    "ClassFolderSource",
    "FolderSource",
    "Record",
    "RecordRef",
    "ShapesClassificationSource",
    "Source",
    "build_source",
    "class_histogram",
    "classification_record",
    "image_features",
]


def build_source(name: str, source_dir: str | None, **options: Any) -> Source:
    """The source registered as `name`, reading from `source_dir`.

    Args:
      name: a key of `SOURCES`.
      source_dir: the dataset folder ('coco' takes None when all its paths are given).
      **options: source-specific constructor arguments (`splits`, `class_names` for
        'class_folders'; `splits`, `annotation_files`, `image_dirs`, `include_masks` for
        'coco').
    """
    if name not in SOURCES:
        raise errors.ConversionError(
            f"unknown source {name!r}; known sources: {', '.join(sorted(SOURCES))}"
        )
    if source_dir is None and name not in ("coco", "coco_panoptic"):
        raise errors.ConversionError(f"source {name!r} needs a source folder")
    if source_dir is not None and not _fs.isdir(source_dir):
        raise errors.ConversionError(f"source folder {source_dir} does not exist")
    return SOURCES[name](source_dir, **options)

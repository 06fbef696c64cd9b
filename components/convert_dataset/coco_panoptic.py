"""The COCO panoptic source: panoptic JSON + PNGs + images per split → segmentation records.

Default layout under `source_dir` (COCO's own names are given per split instead, e.g.
`annotations/panoptic_val2017.json`, `annotations/panoptic_val2017/`, `val2017/`):

  annotations/panoptic_{split}.json   images; annotations, one per image: the PNG's file_name and
                                      segments_info [{id, category_id, iscrowd, ...}];
                                      categories [{id, name, isthing}]
  annotations/panoptic_{split}/       one RGB PNG per image, segment id = R + 256 G + 256² B
  images/{split}/<file_name>

Each record carries three single-channel 8-bit PNGs the size of its image:

  image/segmentation/class/encoded   semantic classes: the categories of all converted splits,
                                     sorted by COCO id, numbered 1..N (`class_names[i]`,
                                     `category_ids[i - 1]`); void pixels (segment id 0) are
                                     `void_label`, 0 by default
  image/panoptic/category_mask       the COCO category id of each pixel, 0 for void
  image/panoptic/instance_mask       for a thing segment its position in segments_info + 1,
                                     0 for stuff and void

The void convention is Model Garden's: its `create_coco_tf_record` writes 0 for void in all
three masks, its panoptic parser and PQ evaluator ignore 0 in the category mask, and its
panoptic FPN config trains the semantic head with 0 as a class ('background') while 255 marks
only padding. `void_label=255` instead makes void pixels ignored by semantic training (the
ignore label of `segmentation_input.Parser`). The two panoptic masks match Model Garden's
converter value for value (same ids, same instance numbering, crowd segments kept as its
default `panoptic_skip_crowd=False` does), so its panoptic decoders and evaluator read them.
Model Garden's own semantic mask differs on purpose: it merges all thing categories into class
1 and shifts COCO's stuff ids down by 90, a COCO-specific layout for panoptic FPN; here every
category keeps its own class, which is what semantic segmentation of any panoptic dataset needs.

Bad records: an image or PNG that is missing or unreadable, a size that disagrees with the JSON
or with the image, a segment id painted in the PNG that segments_info does not list, a segment
of an unknown category, and malformed segments_info.
"""

from __future__ import annotations

import dataclasses
import logging
import posixpath
from collections.abc import Mapping
from typing import Any

import numpy as np

from components.convert_dataset import _fs, coco, errors, images, records
from components.convert_dataset.records import Record, RecordRef, image_features
from vision_core.dataloaders import tf_example_keys as keys

logger = logging.getLogger(__name__)

VOID = "void"
# The semantic mask is 8-bit and 255 is every reader's ignore label, so at most 254 classes.
_MAX_CLASSES = 254
_VOID_LABELS = (0, 255)
# Unknown segment ids named in a bad record's detail before "...".
_LIST_LIMIT = 5


def default_annotation_file(source_dir: str, split: str) -> str:
    return _fs.join(source_dir, "annotations", f"panoptic_{split}.json")


def default_mask_dir(source_dir: str, split: str) -> str:
    return _fs.join(source_dir, "annotations", f"panoptic_{split}")


def segment_ids(rgb: np.ndarray) -> np.ndarray:
    """COCO panoptic segment ids, int64 [H, W], from an RGB array [H, W, 3]."""
    rgb = np.asarray(rgb, dtype=np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def _check_segments(
    annotation: Mapping[str, Any], categories: Mapping[int, tuple[str, bool]]
) -> tuple[dict[int, tuple[int, int, bool]], tuple[str, str] | None]:
    """{segment id: (category id, position in segments_info, is_crowd)} or (reason, detail)."""
    segments: dict[int, tuple[int, int, bool]] = {}
    info = annotation.get("segments_info")
    if not isinstance(info, list):
        return {}, (errors.ANNOTATION_INVALID, f"segments_info must be a list, got {info!r}")
    for position, segment in enumerate(info):
        try:
            segment_id = int(segment["id"])
            category_id = int(segment["category_id"])
        except (KeyError, TypeError, ValueError):
            return {}, (
                errors.ANNOTATION_INVALID,
                f"segments_info[{position}] needs integer id and category_id, got {segment!r}",
            )
        if segment_id <= 0 or segment_id >= 256**3:
            return {}, (
                errors.ANNOTATION_INVALID,
                f"segments_info[{position}]: segment id {segment_id} is outside 1..{256**3 - 1} "
                "(0 is void)",
            )
        if segment_id in segments:
            return {}, (
                errors.ANNOTATION_INVALID,
                f"segments_info lists segment id {segment_id} twice",
            )
        if category_id not in categories:
            return {}, (
                errors.UNKNOWN_CATEGORY,
                f"segment {segment_id}: category_id {category_id} is not among the categories "
                f"{sorted(categories)}",
            )
        segments[segment_id] = (category_id, position, bool(segment.get("iscrowd", 0)))
    return segments, None


def _parse_category(cat: Mapping[str, Any]) -> tuple[str, bool]:
    """(name, isthing) of a panoptic category entry.

    A category without `isthing` counts as a thing: each of its segments then keeps its own
    instance id, so nothing is merged away.
    """
    return str(cat.get("name", cat["id"])), bool(cat.get("isthing", 1))


def _decode_panoptic_png(data: bytes, path: str, size: tuple[int, int]) -> np.ndarray:
    """The segment ids of a panoptic PNG, checked against its image's (height, width)."""
    image = images.open_label_png(data, path)
    if image.mode == "P":
        image = image.convert("RGB")  # A palette's colours are the encoded ids.
    if image.mode not in ("RGB", "RGBA"):
        raise errors.BadRecordError(
            errors.MASK_NOT_RGB,
            path,
            f"panoptic PNG has mode {image.mode}; expected RGB (segment id = R + 256 G + 256² B)",
        )
    images.check_label_size(image, path, size, "panoptic PNG is")
    return segment_ids(np.asarray(image)[..., :3])


@dataclasses.dataclass
class CocoPanopticSource(coco.CocoJsonSource):
    """COCO panoptic JSON + panoptic PNG folder + image folder per split (see the module docstring).

    Attributes:
      source_dir: the dataset folder with the default layout; may be None when every split has
        an explicit annotation file, PNG folder and image folder.
      splits: the splits that will be converted; their categories together define the classes.
      annotation_files: {split: panoptic JSON path} overriding the default layout.
      image_dirs: {split: image folder} overriding the default layout.
      mask_dirs: {split: folder of the panoptic PNGs} overriding the default layout.
      void_label: the semantic class of void pixels: 0 (Model Garden's convention, trained as the
        class 'void') or 255 (ignored by training and evaluation).
      include_panoptic_masks: also write `image/panoptic/category_mask` and
        `image/panoptic/instance_mask` (needs COCO category ids in 1..255).
      category_ids: after construction, the COCO category id of class 1, 2, ...
      class_names: after construction, names by semantic class id: ('void', class 1, ...).
    """

    source_dir: str | None
    splits: tuple[str, ...] = ()
    annotation_files: Mapping[str, str] = dataclasses.field(default_factory=dict)
    image_dirs: Mapping[str, str] = dataclasses.field(default_factory=dict)
    mask_dirs: Mapping[str, str] = dataclasses.field(default_factory=dict)
    void_label: int = 0
    include_panoptic_masks: bool = True
    category_ids: tuple[int, ...] = dataclasses.field(default=(), init=False)
    class_names: tuple[str, ...] = dataclasses.field(default=(), init=False)
    _categories: dict[int, tuple[str, bool]] = dataclasses.field(default_factory=dict, repr=False)
    _datasets: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict, repr=False)
    _notes: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.splits = tuple(self.splits)
        self.annotation_files = dict(self.annotation_files or {})
        self.image_dirs = dict(self.image_dirs or {})
        self.mask_dirs = dict(self.mask_dirs or {})
        if self.void_label not in _VOID_LABELS:
            raise errors.ConversionError(
                f"void_label must be one of {_VOID_LABELS}, got {self.void_label!r}"
            )
        categories: dict[int, tuple[str, bool]] = coco.merge_categories(
            ((self.annotation_file(s), self._dataset(s)["categories"]) for s in self.splits),
            lambda cat_id, first, other, path: (
                f"category {cat_id} is {first} (name, isthing) in one split and {other} in "
                f"{path}; the splits must agree"
            ),
        )
        if len(categories) > _MAX_CLASSES:
            raise errors.ConversionError(
                f"{len(categories)} categories do not fit the 8-bit semantic mask (at most "
                f"{_MAX_CLASSES}, 255 being the ignore label)"
            )
        out_of_range = sorted(c for c in categories if not 1 <= c <= 255)
        if self.include_panoptic_masks and out_of_range:
            raise errors.ConversionError(
                f"category ids {out_of_range} cannot be stored in the 8-bit panoptic category "
                "mask (ids 1..255; 0 is void); pass include_panoptic_masks=False to write only "
                "the semantic mask"
            )
        self.category_ids = tuple(sorted(categories))
        self.class_names = (VOID, *(categories[c][0] for c in self.category_ids))
        self._categories = categories

    def _path(self, given: Mapping[str, str], split: str, what: str, default: Any) -> str:
        if split in given:
            return given[split]
        if self.source_dir is None:
            raise errors.ConversionError(
                f"split {split!r}: no {what} given and no source folder to find it in"
            )
        return default(self.source_dir, split)

    def annotation_file(self, split: str) -> str:
        return self._path(
            self.annotation_files, split, "panoptic annotation file", default_annotation_file
        )

    def image_dir(self, split: str) -> str:
        return self._path(self.image_dirs, split, "image folder", coco.default_image_dir)

    def mask_dir(self, split: str) -> str:
        return self._path(self.mask_dirs, split, "panoptic PNG folder", default_mask_dir)

    def _dataset(self, split: str) -> dict[str, Any]:
        """The split's JSON, indexed: {'images': {id: image}, 'annotations': {image id:
        [annotation, ...]}, 'categories': {id: (name, isthing)}, 'orphans': count}. Cached."""
        if split in self._datasets:
            return self._datasets[split]
        path = self.annotation_file(split)
        if not _fs.exists(path):
            raise errors.ConversionError(
                f"split {split!r}: panoptic annotation file {path} does not exist; coco with "
                "task segmentation expects annotations/panoptic_<split>.json + "
                "annotations/panoptic_<split>/ + images/<split>/ or explicit paths"
            )
        indexed = coco.read_coco_json(path, _parse_category)
        dataset = {
            "images": indexed.images,
            "annotations": indexed.annotations,
            "categories": indexed.categories,
            "orphans": indexed.orphans,
        }
        self._datasets[split] = dataset
        return dataset

    def _problem(self, image: Mapping[str, Any], anns: list[Mapping[str, Any]]) -> Any:
        """(reason, detail) of an image whose annotation is unusable, else None."""
        if not anns:
            return (
                errors.MASK_MISSING,
                f"the panoptic JSON has no annotation for image id {image['id']}",
            )
        if len(anns) > 1:
            return (
                errors.ANNOTATION_INVALID,
                f"the panoptic JSON has {len(anns)} annotations for image id {image['id']}",
            )
        return _check_segments(anns[0], self._categories)[1]

    def list_records(self, split: str) -> list[RecordRef]:
        dataset = self._dataset(split)
        image_dir, mask_dir = self.image_dir(split), self.mask_dir(split)
        by_name: dict[str, list[dict[str, Any]]] = {}
        for image in dataset["images"].values():
            by_name.setdefault(image["file_name"], []).append(image)
        refs = []
        for name in sorted(by_name):
            entries = by_name[name]
            image = entries[0]
            path = _fs.join(image_dir, name)
            anns = dataset["annotations"][image["id"]]
            # COCO names the PNG in the annotation; the image's stem is the fallback.
            png_name = str(anns[0].get("file_name") or "") if len(anns) == 1 else ""
            png_name = png_name or posixpath.splitext(name)[0] + ".png"
            problem = None
            if len(entries) > 1:
                ids = ", ".join(str(e["id"]) for e in entries)
                problem = (errors.DUPLICATE_IMAGE, path, f"file_name is shared by images {ids}")
            else:
                found = self._problem(image, anns)
                if found is not None:
                    problem = (found[0], path, found[1])
            paths = {
                "image": path,
                "mask": _fs.join(mask_dir, png_name),
                "image_id": str(image["id"]),
            }
            refs.append(RecordRef(split, name, paths, problem))
        if not refs:
            raise errors.ConversionError(
                f"split {split!r}: {self.annotation_file(split)} lists no images"
            )
        if dataset["orphans"]:
            logger.warning(
                "split %r: %d panoptic annotations refer to images not in %s and are skipped",
                split,
                dataset["orphans"],
                self.annotation_file(split),
            )
        self._notes[split] = {"annotations_without_image": dataset["orphans"]}
        return refs

    def load(self, ref: RecordRef) -> Record:
        records.check_listed(ref)
        dataset = self._dataset(ref.split)
        image_id = int(ref.paths["image_id"])
        entry = dataset["images"][image_id]
        path, png_path = ref.paths["image"], ref.paths["mask"]
        image = records.read_image(path)
        if (image.height, image.width) != (entry["height"], entry["width"]):
            raise errors.BadRecordError(
                errors.IMAGE_SIZE_MISMATCH,
                path,
                f"image is {image.height}x{image.width} (HxW) but the annotation file says "
                f"{entry['height']}x{entry['width']} for image id {image_id}",
            )
        annotation = dataset["annotations"][image_id][0]
        segments, problem = _check_segments(annotation, self._categories)
        if problem is not None:  # The listing found none; the JSON changed since.
            raise errors.BadRecordError(problem[0], path, problem[1])
        ids = _decode_panoptic_png(
            records.read_file(png_path, errors.MASK_MISSING, errors.MASK_CORRUPT),
            png_path,
            (image.height, image.width),
        )
        semantic, category, instance = self._masks(ids, segments, png_path)
        features = image_features(ref.key, path, image)
        features[keys.IMAGE_SOURCE_ID] = str(image_id)
        features[keys.SEGMENTATION_CLASS_ENCODED] = images.encode_mask_png(semantic)
        features[keys.SEGMENTATION_CLASS_FORMAT] = "png"
        if self.include_panoptic_masks:
            features[keys.PANOPTIC_CATEGORY_MASK] = images.encode_mask_png(category)
            features[keys.PANOPTIC_INSTANCE_MASK] = images.encode_mask_png(instance)
        counts = np.bincount(semantic.ravel(), minlength=256)
        return Record(ref.key, features, {int(c): int(n) for c, n in enumerate(counts) if n})

    def _masks(
        self, ids: np.ndarray, segments: Mapping[int, tuple[int, int, bool]], png_path: str
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(semantic, category, instance) uint8 masks from the segment ids of one image."""
        unique, inverse = np.unique(ids, return_inverse=True)
        unknown = [int(u) for u in unique if u != 0 and int(u) not in segments]
        if unknown:
            pixels = {u: int(np.sum(ids == u)) for u in unknown[:_LIST_LIMIT]}
            more = f" and {len(unknown) - _LIST_LIMIT} more" if len(unknown) > _LIST_LIMIT else ""
            raise errors.BadRecordError(
                errors.SEGMENT_UNKNOWN,
                png_path,
                f"segment ids {{id: pixels}} {pixels}{more} are painted in the PNG but not "
                "listed in segments_info",
            )
        class_ids = self.class_ids
        semantic_of = np.full(len(unique), self.void_label, np.uint8)
        category_of = np.zeros(len(unique), np.uint8)
        instance_of = np.zeros(len(unique), np.uint8)
        for i, u in enumerate(unique):
            if u == 0:
                continue
            category_id, position, _ = segments[int(u)]
            semantic_of[i] = class_ids[category_id]
            if not self.include_panoptic_masks:
                continue
            category_of[i] = category_id
            if self._categories[category_id][1]:  # isthing
                # Model Garden numbers thing segments by their position in segments_info.
                if position + 1 > 255:
                    raise errors.BadRecordError(
                        errors.ANNOTATION_INVALID,
                        png_path,
                        f"thing segment {int(u)} is entry {position} of segments_info; its "
                        "instance id does not fit the 8-bit instance mask (at most 255 entries)",
                    )
                instance_of[i] = position + 1
        inverse = inverse.reshape(ids.shape)
        return semantic_of[inverse], category_of[inverse], instance_of[inverse]

"""The COCO source: a COCO instances JSON + an image folder per split → detection records.

Default layout under `source_dir` (what the shapes generator writes):

  annotations/instances_{split}.json      COCO: images, annotations (bbox, category_id, iscrowd,
  images/{split}/<file_name>              area, segmentation), categories

Either location can be given per split instead (`annotation_files`, `image_dirs`), e.g. COCO's
own `annotations/instances_val2017.json` + `val2017/`.

Records carry Model Garden's detection keys (`tf_example_keys.OBJECT_*`): boxes normalized to
[0, 1], class ids 1..N, names in `image/object/class/text`, `is_crowd`, `area`, and with
`include_masks` one PNG (0/1) per object. Class ids are contiguous: the categories of all
converted splits, sorted by COCO id, are numbered from 1 (`category_ids[i - 1]` is the COCO id of
class i); `keep_category_ids` keeps the COCO ids instead, as Model Garden's converter does.
`image/source_id` is the COCO image id, which the COCO evaluator matches on.

Data checks: boxes reaching outside the image are clipped to it, boxes of zero area (after
clipping) are dropped; both are counted in the summary. An annotation with an unknown category or
a malformed box, an image whose file is missing or unreadable, and an image whose size disagrees
with the JSON make the record bad (reported, not written).

`groundtruth_dataset(split, ...)` gives the split's groundtruth in COCO form with the contiguous
class ids and the same clipping and dropping, for COCO evaluation of the converted records.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from components.convert_dataset import _fs, errors, examples, images, records, rle
from components.convert_dataset.records import Record, RecordRef, image_features
from vision_core.dataloaders import tf_example_keys as keys

logger = logging.getLogger(__name__)

BACKGROUND = "background"


def default_annotation_file(source_dir: str, split: str) -> str:
    return _fs.join(source_dir, "annotations", f"instances_{split}.json")


def default_image_dir(source_dir: str, split: str) -> str:
    return _fs.join(source_dir, "images", split)


@dataclasses.dataclass(frozen=True)
class _Object:
    """One annotation after the checks: a box in pixels inside the image."""

    annotation: Mapping[str, Any]
    category_id: int
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 (pixels)
    area: float
    is_crowd: int


@dataclasses.dataclass(frozen=True)
class _Checked:
    """An image's objects, how many boxes were clipped or dropped, or why the image is bad."""

    objects: tuple[_Object, ...] = ()
    clipped: int = 0
    dropped: int = 0
    problem: tuple[str, str] | None = None  # (reason, detail)


def check_objects(
    image: Mapping[str, Any], annotations: Iterable[Mapping[str, Any]], known: Mapping[int, Any]
) -> _Checked:
    """Validates, clips and filters one image's annotations against its size.

    Args:
      image: {'height', 'width'} in pixels (the JSON's, or a VOC XML's size).
      annotations: COCO annotations: `category_id`, `bbox` [x, y, width, height] in pixels,
        optional `area` (else the clipped box's) and `iscrowd`; kept as `_Object.annotation`.
      known: the valid category ids.
    """
    height, width = float(image["height"]), float(image["width"])
    objects, clipped, dropped = [], 0, 0
    for ann in annotations:
        ann_id = ann.get("id", "?")
        try:
            category_id = int(ann["category_id"])
        except (KeyError, TypeError, ValueError):
            return _Checked(
                problem=(errors.ANNOTATION_INVALID, f"annotation {ann_id}: no category_id")
            )
        if category_id not in known:
            return _Checked(
                problem=(
                    errors.UNKNOWN_CATEGORY,
                    f"annotation {ann_id}: category_id {category_id} is not among the "
                    f"categories {sorted(known)}",
                )
            )
        bbox = ann.get("bbox")
        try:
            x, y, w, h = (float(v) for v in bbox)
        except (TypeError, ValueError):
            return _Checked(
                problem=(
                    errors.ANNOTATION_INVALID,
                    f"annotation {ann_id}: bbox must be [x, y, width, height], got {bbox!r}",
                )
            )
        if not all(math.isfinite(v) for v in (x, y, w, h)) or w < 0 or h < 0:
            return _Checked(
                problem=(
                    errors.ANNOTATION_INVALID,
                    f"annotation {ann_id}: bbox {bbox} has a negative or non-finite value",
                )
            )
        x0, y0 = max(x, 0.0), max(y, 0.0)
        x1, y1 = min(x + w, width), min(y + h, height)
        if x1 <= x0 or y1 <= y0:
            dropped += 1
            continue
        if (x0, y0, x1, y1) != (x, y, x + w, y + h):
            clipped += 1
        area = ann.get("area")
        try:
            area = float(area)
        except (TypeError, ValueError):
            area = 0.0
        if not area > 0:
            area = (x1 - x0) * (y1 - y0)
        crowd = int(bool(ann.get("iscrowd", 0)))
        objects.append(_Object(ann, category_id, (x0, y0, x1, y1), area, crowd))
    return _Checked(tuple(objects), clipped, dropped)


def object_features(
    objects: Sequence[Any],
    labels: Sequence[int],
    class_names: Sequence[str],
    image: images.DecodedImage,
) -> dict[str, Any]:
    """Model Garden's per-object detection features of checked objects.

    Boxes are normalized by the image size; `labels[i]` is the class id (1..N) of `objects[i]`
    and `class_names[label]` its name. An object is anything with `box` (x0, y0, x1, y1 in
    pixels), `is_crowd` and `area` (the COCO and Cityscapes sources' objects alike).
    """
    height, width = float(image.height), float(image.width)
    features: dict[str, Any] = {}
    for key, coord, size in (
        (keys.OBJECT_BBOX_XMIN, 0, width),
        (keys.OBJECT_BBOX_YMIN, 1, height),
        (keys.OBJECT_BBOX_XMAX, 2, width),
        (keys.OBJECT_BBOX_YMAX, 3, height),
    ):
        features[key] = examples.float_feature([o.box[coord] / size for o in objects])
    features[keys.OBJECT_CLASS_LABEL] = examples.int64_feature(labels)
    features[keys.OBJECT_CLASS_TEXT] = examples.bytes_feature(
        [class_names[label] for label in labels]
    )
    features[keys.OBJECT_IS_CROWD] = examples.int64_feature([o.is_crowd for o in objects])
    features[keys.OBJECT_AREA] = examples.float_feature([o.area for o in objects])
    return features


def _instance_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """A uint8 {0, 1} [H, W] mask from a COCO segmentation (polygons or RLE).

    Raises:
      ValueError: a missing, empty or malformed segmentation, or one of another image size.
    """
    if isinstance(segmentation, list):
        polygons = [p for p in segmentation if isinstance(p, list) and len(p) >= 6]
        if not polygons or len(polygons) != len(segmentation):
            raise ValueError("polygons must be lists of at least 3 (x, y) points")
        from pycocotools import mask as mask_api

        merged = mask_api.merge(mask_api.frPyObjects(polygons, height, width))
        return mask_api.decode(merged).astype(np.uint8)
    if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        if [int(v) for v in segmentation["size"]] != [height, width]:
            raise ValueError(
                f"RLE size {segmentation['size']} differs from the image's {[height, width]}"
            )
        return rle.decode(segmentation)
    raise ValueError(f"expected polygons or an RLE dict, got {type(segmentation).__name__}")


@dataclasses.dataclass(frozen=True)
class CocoJson:
    """A COCO-style annotation file, indexed.

    Attributes:
      data: The parsed JSON object.
      images: {image id: {'id', 'file_name', 'height', 'width'}}.
      annotations: {image id: [annotation, ...]} for every image, in file order.
      categories: {category id: what `parse_category` made of the entry}.
      orphans: How many annotations name no listed image (they are left out).
    """

    data: dict[str, Any]
    images: dict[int, dict[str, Any]]
    annotations: dict[int, list[dict[str, Any]]]
    categories: dict[int, Any]
    orphans: int


def read_coco_json(path: str, parse_category: Callable[[Mapping[str, Any]], Any]) -> CocoJson:
    """Reads and indexes a COCO-style JSON (instances or panoptic) that exists at `path`.

    Args:
      path: The annotation file.
      parse_category: Makes the value kept for one `categories` entry; KeyError, TypeError or
        ValueError from it mean a malformed entry.

    Raises:
      ConversionError: invalid JSON, no 'images' list, a malformed category or image entry, or
        an image id listed twice.
    """
    try:
        data = json.loads(_fs.read_bytes(path))
    except ValueError as e:
        raise errors.ConversionError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise errors.ConversionError(f"{path}: expected a COCO object with an 'images' list")
    categories = {}
    for cat in data.get("categories") or []:
        try:
            categories[int(cat["id"])] = parse_category(cat)
        except (KeyError, TypeError, ValueError) as e:
            raise errors.ConversionError(f"{path}: malformed category {cat!r}") from e
    by_id: dict[int, dict[str, Any]] = {}
    for image in data["images"]:
        try:
            image_id = int(image["id"])
            entry = {
                "id": image_id,
                "file_name": str(image["file_name"]),
                "height": int(image["height"]),
                "width": int(image["width"]),
            }
        except (KeyError, TypeError, ValueError) as e:
            raise errors.ConversionError(
                f"{path}: image entries need id, file_name, height and width; got {image!r}"
            ) from e
        if image_id in by_id:
            raise errors.ConversionError(f"{path}: image id {image_id} appears twice")
        by_id[image_id] = entry
    by_image: dict[int, list[dict[str, Any]]] = {i: [] for i in by_id}
    orphans = 0
    for ann in data.get("annotations") or []:
        try:
            image_id = int(ann["image_id"])
        except (KeyError, TypeError, ValueError):
            image_id = None
        if image_id in by_image:
            by_image[image_id].append(ann)
        else:
            orphans += 1
    return CocoJson(data, by_id, by_image, categories, orphans)


def merge_categories(
    per_split: Iterable[tuple[str, Mapping[int, Any]]],
    conflict: Callable[[int, Any, Any, str], str],
) -> dict[int, Any]:
    """The categories of all converted splits, which must agree.

    Args:
      per_split: (annotation file, {category id: entry}) of each split, in split order; read
        lazily, so a conflict is reported before later splits are loaded.
      conflict: The error message for a category id whose entry differs between splits, from
        (category id, the entry seen first, the other entry, the other's annotation file).

    Raises:
      ConversionError: a conflict, or splits with no category at all.
    """
    merged: dict[int, Any] = {}
    paths = []
    for path, categories in per_split:
        paths.append(path)
        for cat_id, entry in categories.items():
            if merged.setdefault(cat_id, entry) != entry:
                raise errors.ConversionError(conflict(cat_id, merged[cat_id], entry, path))
    if paths and not merged:
        raise errors.ConversionError(f"no categories in {', '.join(paths)}")
    return merged


class CocoJsonSource(records.ListingNotes):
    """What the sources reading a COCO-style JSON share: class i is `category_ids[i - 1]`, and
    the parsed annotation files they cache in `_datasets` are not pickled."""

    category_ids: tuple[int, ...]

    def __getstate__(self) -> dict[str, Any]:
        # Workers need no parsed annotation file: the COCO source sends each image's
        # annotations in its reference (`RecordRef.payload`) and the panoptic one re-reads its
        # JSON, while groundtruth is written by the launcher. Shipping them inside the pipeline
        # would make it as large as the dataset's annotations.
        state = dict(self.__dict__)
        state["_datasets"] = {}
        return state

    @property
    def class_ids(self) -> dict[int, int]:
        """{COCO category id: contiguous class id, from 1}."""
        return {c: i for i, c in enumerate(self.category_ids, start=1)}


@dataclasses.dataclass
class CocoSource(CocoJsonSource):
    """COCO instances JSON + image folder per split (see the module docstring).

    Attributes:
      source_dir: the dataset folder with the default layout; may be None when every split has
        an explicit annotation file and image folder.
      splits: the splits that will be converted; their categories together define the classes.
      annotation_files: {split: COCO JSON path} overriding the default layout.
      image_dirs: {split: image folder} overriding the default layout.
      include_masks: also write `image/object/mask`, one 0/1 PNG per object.
      keep_category_ids: class ids are the COCO category ids themselves, as Model Garden's
        `create_coco_tf_record` writes them (COCO 2017: classes 1..90, num_classes 91), instead
        of 1..N; ids no category uses become classes named 'unused_<id>'.
      category_ids: after construction, the COCO category id of class 1, 2, ...
      class_names: after construction, names by class id: ('background', name of class 1, ...).
    """

    source_dir: str | None
    splits: tuple[str, ...] = ()
    annotation_files: Mapping[str, str] = dataclasses.field(default_factory=dict)
    image_dirs: Mapping[str, str] = dataclasses.field(default_factory=dict)
    include_masks: bool = False
    keep_category_ids: bool = False
    category_ids: tuple[int, ...] = dataclasses.field(default=(), init=False)
    class_names: tuple[str, ...] = dataclasses.field(default=(), init=False)
    _datasets: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict, repr=False)
    # {category id: name} of every converted split; small, so workers keep it.
    _categories: dict[int, str] = dataclasses.field(default_factory=dict, repr=False)
    _notes: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.splits = tuple(self.splits)
        self.annotation_files = dict(self.annotation_files or {})
        self.image_dirs = dict(self.image_dirs or {})
        names: dict[int, str] = merge_categories(
            ((self.annotation_file(s), self._dataset(s)["categories"]) for s in self.splits),
            lambda cat_id, first, other, path: (
                f"category {cat_id} is named {first!r} in one split and {other!r} in {path}; "
                "the splits must agree"
            ),
        )
        self._categories = names
        if self.keep_category_ids:
            if self.splits and min(names) < 1:
                raise errors.ConversionError(
                    f"keep_category_ids needs category ids >= 1 (0 is the background), got "
                    f"{min(names)}"
                )
            # Class i is COCO id i: ids no category uses become named placeholder classes.
            self.category_ids = tuple(range(1, max(names, default=0) + 1))
            self.class_names = (
                BACKGROUND,
                *(names.get(c, f"unused_{c}") for c in self.category_ids),
            )
        else:
            self.category_ids = tuple(sorted(names))
            self.class_names = (BACKGROUND, *(names[c] for c in self.category_ids))

    def annotation_file(self, split: str) -> str:
        if split in self.annotation_files:
            return self.annotation_files[split]
        if self.source_dir is None:
            raise errors.ConversionError(
                f"split {split!r}: no annotation file given and no source folder to find "
                f"annotations/instances_{split}.json in"
            )
        return default_annotation_file(self.source_dir, split)

    def image_dir(self, split: str) -> str:
        if split in self.image_dirs:
            return self.image_dirs[split]
        if self.source_dir is None:
            raise errors.ConversionError(
                f"split {split!r}: no image folder given and no source folder to find "
                f"images/{split}/ in"
            )
        return default_image_dir(self.source_dir, split)

    def _dataset(self, split: str) -> dict[str, Any]:
        """The split's JSON, indexed: {'images': {id: image}, 'by_image': {id: [ann]},
        'categories': {id: name}, 'orphans': count}. Cached per process."""
        if split in self._datasets:
            return self._datasets[split]
        path = self.annotation_file(split)
        if not _fs.exists(path):
            raise errors.ConversionError(
                f"split {split!r}: annotation file {path} does not exist; the 'coco' source "
                "expects annotations/instances_<split>.json + images/<split>/ or explicit paths"
            )
        indexed = read_coco_json(path, lambda cat: str(cat.get("name", cat["id"])))
        dataset = {
            "images": indexed.images,
            "by_image": indexed.annotations,
            "categories": indexed.categories,
            "orphans": indexed.orphans,
            "info": indexed.data.get("info", {}),
        }
        self._datasets[split] = dataset
        return dataset

    def list_records(self, split: str) -> list[RecordRef]:
        dataset = self._dataset(split)
        image_dir = self.image_dir(split)
        by_name: dict[str, list[dict[str, Any]]] = {}
        for image in dataset["images"].values():
            by_name.setdefault(image["file_name"], []).append(image)
        notes = {
            "annotations_without_image": dataset["orphans"],
            "boxes_clipped": 0,
            "boxes_dropped_zero_area": 0,
            "images_without_objects": 0,
        }
        refs = []
        for name in sorted(by_name):
            entries = by_name[name]
            image = entries[0]
            path = _fs.join(image_dir, name)
            problem = None
            if len(entries) > 1:
                ids = ", ".join(str(e["id"]) for e in entries)
                problem = (errors.DUPLICATE_IMAGE, path, f"file_name is shared by images {ids}")
            else:
                checked = check_objects(
                    image, dataset["by_image"][image["id"]], dataset["categories"]
                )
                if checked.problem is not None:
                    problem = (checked.problem[0], path, checked.problem[1])
                else:
                    notes["boxes_clipped"] += checked.clipped
                    notes["boxes_dropped_zero_area"] += checked.dropped
                    notes["images_without_objects"] += not checked.objects
            # The image's entry and annotations ride along, so a worker never parses the
            # annotation file (hundreds of MB for COCO train, once per worker process).
            payload = None
            if problem is None:
                payload = {"image": image, "annotations": dataset["by_image"][image["id"]]}
            refs.append(
                RecordRef(
                    split, name, {"image": path, "image_id": str(image["id"])}, problem, payload
                )
            )
        if not refs:
            raise errors.ConversionError(
                f"split {split!r}: {self.annotation_file(split)} lists no images"
            )
        if notes["annotations_without_image"]:
            logger.warning(
                "split %r: %d annotations refer to images not in %s and are skipped",
                split,
                notes["annotations_without_image"],
                self.annotation_file(split),
            )
        self._notes[split] = notes
        return refs

    def load(self, ref: RecordRef) -> Record:
        records.check_listed(ref)
        image_id = int(ref.paths["image_id"])
        if ref.payload is not None:
            entry, annotations = ref.payload["image"], ref.payload["annotations"]
            categories = self._categories
        else:
            dataset = self._dataset(ref.split)
            entry, annotations = dataset["images"][image_id], dataset["by_image"][image_id]
            categories = dataset["categories"]
        path = ref.paths["image"]
        image = records.read_image(path)
        if (image.height, image.width) != (entry["height"], entry["width"]):
            raise errors.BadRecordError(
                errors.IMAGE_SIZE_MISMATCH,
                path,
                f"image is {image.height}x{image.width} (HxW) but the annotation file says "
                f"{entry['height']}x{entry['width']} for image id {image_id}",
            )
        checked = check_objects(entry, annotations, categories)
        if checked.problem is not None:  # The listing found none; the JSON changed since.
            raise errors.BadRecordError(checked.problem[0], path, checked.problem[1])
        class_ids = self.class_ids
        features = image_features(ref.key, path, image)
        features[keys.IMAGE_SOURCE_ID] = str(image_id)
        objects = checked.objects
        labels = [class_ids[o.category_id] for o in objects]
        features.update(object_features(objects, labels, self.class_names, image))
        if self.include_masks:
            pngs = []
            for o in objects:
                segmentation = o.annotation.get("segmentation")
                try:
                    mask = _instance_mask(segmentation, image.height, image.width)
                except ValueError as e:
                    raise errors.BadRecordError(
                        errors.ANNOTATION_INVALID,
                        path,
                        f"annotation {o.annotation.get('id', '?')}: no usable segmentation for "
                        f"its mask ({e})",
                    ) from e
                pngs.append(images.encode_mask_png(mask))
            features[keys.OBJECT_MASK] = examples.bytes_feature(pngs)
        histogram: dict[int, int] = {}
        for label in labels:
            histogram[label] = histogram.get(label, 0) + 1
        return Record(ref.key, features, histogram)

    def groundtruth_dataset(self, split: str, exclude: Iterable[str] = ()) -> dict[str, Any]:
        """The split's groundtruth as a COCO dataset with contiguous category ids.

        Boxes are clipped and zero-area boxes dropped exactly as in the records; images listed
        in `exclude` (record keys, i.e. file names, of bad records) are left out. Segmentations
        are kept as they are in the source.
        """
        dataset = self._dataset(split)
        excluded = set(exclude)
        class_ids = self.class_ids
        names: dict[str, list[int]] = {}
        for image in dataset["images"].values():
            names.setdefault(image["file_name"], []).append(image["id"])
        images_out, annotations_out = [], []
        for name in sorted(names):
            if name in excluded or len(names[name]) > 1:
                continue
            image = dataset["images"][names[name][0]]
            checked = check_objects(image, dataset["by_image"][image["id"]], dataset["categories"])
            if checked.problem is not None:
                continue
            images_out.append(dict(image))
            for o in checked.objects:
                x0, y0, x1, y1 = o.box
                ann = {
                    "id": o.annotation.get("id"),
                    "image_id": image["id"],
                    "category_id": class_ids[o.category_id],
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": o.area,
                    "iscrowd": o.is_crowd,
                }
                if "segmentation" in o.annotation:
                    ann["segmentation"] = o.annotation["segmentation"]
                annotations_out.append(ann)
        # Annotation ids must be unique; renumber when the source's are missing or repeated.
        ids = [a["id"] for a in annotations_out]
        if any(not isinstance(i, int) for i in ids) or len(set(ids)) != len(ids):
            for i, ann in enumerate(annotations_out):
                ann["id"] = i + 1
        return {
            "info": {
                **(dataset["info"] if isinstance(dataset["info"], dict) else {}),
                "converted_from": self.annotation_file(split),
            },
            "images": images_out,
            "annotations": annotations_out,
            "categories": [
                {"id": i, "name": self.class_names[i], "coco_id": c}
                for i, c in enumerate(self.category_ids, start=1)
            ],
        }

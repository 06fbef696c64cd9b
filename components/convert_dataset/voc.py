"""The Pascal VOC source: a VOCdevkit year folder → segmentation or detection records.

Layout under `source_dir` (the year folder, e.g. VOCdevkit/VOC2012):

  ImageSets/Segmentation/<split>.txt   image ids of a segmentation split, one per line
  ImageSets/Main/<split>.txt           image ids of a detection split, one per line
  JPEGImages/<id>.jpg
  SegmentationClass/<id>.png           palette PNG: the palette indices are the class ids
  Annotations/<id>.xml                 image size and objects (name, bndbox, difficult, truncated)

Classes are VOC's fixed 20, numbered 1..20 in `CLASS_NAMES` order, 0 being the background.

Segmentation records hold the mask's palette indices as class ids: 0 background, 1..20, and 255
(VOC's object boundaries and "void" areas), kept as the ignore label. A mask that was re-saved as
RGB colours is mapped back through the VOC colour map when every colour is a VOC label colour
(counted as `rgb_masks_repaired`); otherwise it is a bad record. A mask value that is not a VOC
class id is a bad record (`unknown_category`).

Detection records carry Model Garden's `image/object/*` features as the 'coco' source writes them
(same clipping and zero-area rules, `coco.check_objects`), plus VOC's 0/1 flags
`image/object/difficult` and `image/object/truncated`; `is_crowd` is 0. VOC's boxes are 1-based
and inclusive (a box covers pixels xmin..xmax), so in the continuous 0-based coordinates that
Model Garden's normalized boxes use a box spans [xmin - 1, xmax] (as detectron2 reads VOC): a box
covering the whole image becomes [0, 1]. A box with xmax = xmin - 1 has zero width and is
dropped; a box reversed further is a malformed annotation.

Image ids: COCO evaluation matches integer image ids, and VOC's (e.g. 2008_000123) are strings,
so detection records store as `image/source_id` the image's 1-based position in the sorted,
de-duplicated split file; the groundtruth JSON uses the same integers and keeps the VOC id in
`file_name` (`<id>.jpg`). Segmentation records, which no evaluator matches by id, store the VOC
id itself. The record key (in `bad_records.jsonl`) is always the VOC id.

`groundtruth_dataset(split)` writes difficult objects with `iscrowd: 1`, so that COCO evaluation
neither rewards nor penalizes detections of them, as VOC's own protocol ignores difficult objects.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import io
import logging
import math
import posixpath
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar
from xml.etree import ElementTree

import numpy as np
from PIL import Image

from components.convert_dataset import _fs, coco, errors, examples, images, records
from components.convert_dataset.records import Record, RecordRef, image_features
from vision_core.dataloaders import tf_example_keys as keys

logger = logging.getLogger(__name__)

CLASS_NAMES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip
CLASS_IDS = {name: i for i, name in enumerate(CLASS_NAMES) if i}
_CATEGORIES = {i: name for name, i in CLASS_IDS.items()}
IGNORE_ID = 255
MASK_IDS = frozenset(range(len(CLASS_NAMES))) | {IGNORE_ID}
TASKS = ("segmentation", "detection")
_TASK_FOLDERS = {"segmentation": "SegmentationClass", "detection": "Annotations"}
_SPLIT_FOLDERS = {"segmentation": "Segmentation", "detection": "Main"}
_LABEL_EXTENSIONS = {"segmentation": ".png", "detection": ".xml"}
_LABEL_MISSING = {"segmentation": errors.MASK_MISSING, "detection": errors.ANNOTATION_MISSING}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour types whose single band is read as class ids: grey and palette.
_ID_COLOUR_TYPES = (0, 3)
# Reads in flight while listing: on gs:// each file is a request.
_LISTING_THREADS = 16

_T = TypeVar("_T")


def voc_colormap(size: int = 256) -> np.ndarray:
    """VOC's label colours: uint8 [size, 3], row i the colour of class id i.

    Each colour spreads the bits of its id over the three channels from the most significant
    bit down: id bit 3k goes to red, 3k + 1 to green and 3k + 2 to blue, at bit 7 - k.
    """
    ids = np.arange(size)
    colours = np.zeros((size, 3), np.int64)
    for k in range(8):
        for channel in range(3):
            bit = (ids >> (3 * k + channel)) & 1
            colours[:, channel] |= bit << (7 - k)
    return colours.astype(np.uint8)


def _pack(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb, np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


_COLOUR_IDS = {int(c): i for i, c in enumerate(_pack(voc_colormap())) if i in MASK_IDS}


def mask_from_colours(rgb: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """Maps an RGB label image [H, W, 3] back to class ids through the VOC colour map.

    Returns:
      (uint8 [H, W] class ids, the colours that are no VOC label colour); the ids are only
      meaningful when that list is empty.
    """
    packed, inverse = np.unique(_pack(rgb), return_inverse=True)
    unknown = [int(p) for p in packed if int(p) not in _COLOUR_IDS]
    lookup = np.array([_COLOUR_IDS.get(int(p), 0) for p in packed], np.uint8)
    colours = [((p >> 16) & 255, (p >> 8) & 255, p & 255) for p in unknown]
    return lookup[inverse.reshape(rgb.shape[:2])], colours


@dataclasses.dataclass(frozen=True)
class Annotation:
    """A parsed VOC XML: the image size it states and its objects in COCO form.

    Each object is {'id': its 1-based position in the XML, 'name', 'category_id' (1..20),
    'bbox': [x, y, width, height] in 0-based continuous pixels, 'iscrowd': 0, 'difficult',
    'truncated'}, the form `coco.check_objects` takes.
    """

    height: int
    width: int
    objects: tuple[dict[str, Any], ...]


def _invalid(path: str, detail: str) -> errors.BadRecordError:
    return errors.BadRecordError(errors.ANNOTATION_INVALID, path, detail)


def _number(parent: ElementTree.Element, tag: str, path: str, what: str) -> float:
    text = parent.findtext(tag)
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        raise _invalid(path, f"{what}: <{tag}> must be a number, got {text!r}")
    return value


def _flag(obj: ElementTree.Element, tag: str, path: str, what: str) -> int:
    text = (obj.findtext(tag) or "0").strip()
    if text not in ("0", "1"):
        raise _invalid(path, f"{what}: <{tag}> must be 0 or 1, got {text!r}")
    return int(text)


def parse_annotation(data: bytes, path: str) -> Annotation:
    """Parses and checks a VOC annotation XML.

    Raises:
      BadRecordError: `annotation_invalid` (not XML, no usable size, an object without a name
        or a numeric box, a reversed box, a flag other than 0/1) or `unknown_category` (an
        object name that is not one of VOC's 20 classes).
    """
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as e:
        raise _invalid(path, f"not well-formed XML ({e})") from e
    size = root.find("size")
    if root.tag != "annotation" or size is None:
        missing = "" if size is not None else " without <size>"
        raise _invalid(path, f"expected an <annotation> with a <size>, got <{root.tag}>{missing}")
    width, height = (_number(size, tag, path, "<size>") for tag in ("width", "height"))
    if width < 1 or height < 1 or width != int(width) or height != int(height):
        raise _invalid(path, f"<size> must be positive whole numbers, got {width:g}x{height:g}")
    objects = []
    for index, obj in enumerate(root.findall("object"), start=1):
        name = (obj.findtext("name") or "").strip()
        what = f"object {index} ({name!r})"
        if not name:
            raise _invalid(path, f"object {index} has no <name>")
        if name not in CLASS_IDS:
            raise errors.BadRecordError(
                errors.UNKNOWN_CATEGORY,
                path,
                f"{what} is not one of VOC's classes {', '.join(CLASS_NAMES[1:])}",
            )
        box = obj.find("bndbox")
        if box is None:
            raise _invalid(path, f"{what} has no <bndbox>")
        xmin, ymin, xmax, ymax = (
            _number(box, tag, path, what) for tag in ("xmin", "ymin", "xmax", "ymax")
        )
        # 1-based inclusive pixels → continuous 0-based coordinates (see the module docstring).
        x0, y0 = xmin - 1, ymin - 1
        if xmax < x0 or ymax < y0:
            raise _invalid(
                path, f"{what}: box x {xmin:g}..{xmax:g}, y {ymin:g}..{ymax:g} is reversed"
            )
        objects.append(
            {
                "id": index,
                "name": name,
                "category_id": CLASS_IDS[name],
                "bbox": [x0, y0, xmax - x0, ymax - y0],
                "iscrowd": 0,
                "difficult": _flag(obj, "difficult", path, what),
                "truncated": _flag(obj, "truncated", path, what),
            }
        )
    return Annotation(int(height), int(width), tuple(objects))


def _holds_class_ids(path: str) -> bool:
    """Whether a mask file's header says single-band PNG (grey or palette), read cheaply."""
    try:
        head = _fs.read_head(path, 26)
    except Exception:
        return True  # Unreadable: the worker reports it.
    return (
        len(head) == 26
        and head.startswith(_PNG_SIGNATURE)
        and head[12:16] == b"IHDR"
        and head[25] in _ID_COLOUR_TYPES
    )


def _parallel_map(fn: Callable[[str], _T], items: Sequence[str]) -> list[_T]:
    with concurrent.futures.ThreadPoolExecutor(max_workers=_LISTING_THREADS) as pool:
        return list(pool.map(fn, items))


@dataclasses.dataclass
class _SplitIndex:
    refs: list[RecordRef]
    annotations: dict[str, Annotation]
    notes: dict[str, int]


@dataclasses.dataclass
class VocSource:
    """A Pascal VOC year folder (see the module docstring).

    Attributes:
      source_dir: the year folder, e.g. VOCdevkit/VOC2012.
      splits: the splits that will be converted; their split files must exist.
      task: 'segmentation' (SegmentationClass masks, ImageSets/Segmentation) or 'detection'
        (Annotations XML, ImageSets/Main).
      keep_difficult: detection: keep objects marked difficult (default); False drops them
        from the records and the groundtruth, counted as `difficult_objects_dropped`.
      class_names: names by class id, 'background' first.
      category_ids: detection: the class ids 1..20 (VOC has no other numbering).
    """

    source_dir: str
    splits: tuple[str, ...] = ()
    task: str = "segmentation"
    keep_difficult: bool = True
    class_names: tuple[str, ...] = dataclasses.field(default=CLASS_NAMES, init=False)
    category_ids: tuple[int, ...] = dataclasses.field(
        default=tuple(range(1, len(CLASS_NAMES))), init=False
    )
    _indexes: dict[str, _SplitIndex] = dataclasses.field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.splits = tuple(self.splits)
        if self.task not in TASKS:
            raise errors.ConversionError(
                f"task must be one of {', '.join(TASKS)} for the 'voc' source, got {self.task!r}"
            )
        if not self.keep_difficult and self.task != "detection":
            raise errors.ConversionError(
                "keep_difficult=False (--drop-difficult) applies to task 'detection' only"
            )
        for folder in ("JPEGImages", _TASK_FOLDERS[self.task]):
            if not _fs.isdir(self._path(folder)):
                raise errors.ConversionError(
                    f"{self._path(folder)} does not exist; the 'voc' source reads a VOC year "
                    f"folder holding JPEGImages/, {_TASK_FOLDERS[self.task]}/ and ImageSets/"
                    f"{self._year_folder_hint()}"
                )
        for split in self.splits:
            self._split_file(split)

    def __getstate__(self) -> dict[str, Any]:
        # Workers read their own record's files; the parsed split stays in the launcher.
        state = dict(self.__dict__)
        state["_indexes"] = {}
        return state

    def _path(self, *parts: str) -> str:
        return _fs.join(self.source_dir, *parts)

    def _year_folder_hint(self) -> str:
        if not _fs.isdir(self.source_dir):
            return ""
        years = [n for n in _fs.listdir(self.source_dir) if n.startswith(("VOC", "VOCdevkit"))]
        return f" (did you mean {self._path(years[0])}?)" if years else ""

    def _split_file(self, split: str) -> str:
        """The split file's path, which must exist."""
        folder = self._path("ImageSets", _SPLIT_FOLDERS[self.task])
        path = _fs.join(folder, f"{split}.txt")
        if _fs.exists(path):
            return path
        if not _fs.isdir(folder):
            raise errors.ConversionError(
                f"split {split!r}: {path} does not exist, nor does its folder {folder}"
            )
        # ImageSets/Main also holds <class>_<split>.txt per class; those are not splits.
        found = [
            stem
            for stem, ext in map(posixpath.splitext, _fs.listdir(folder))
            if ext == ".txt" and not ("_" in stem and stem.split("_", 1)[0] in CLASS_IDS)
        ]
        raise errors.ConversionError(
            f"split {split!r}: split file {path} does not exist; split files in {folder}: "
            f"{', '.join(found) or 'none'}"
        )

    def _split_ids(self, split: str) -> tuple[list[str], int]:
        """The split's sorted distinct image ids and how many lines repeated an id."""
        path = self._split_file(split)
        lines = [line.strip() for line in _fs.read_bytes(path).decode("utf-8").splitlines()]
        ids = [line for line in lines if line]
        for number, line in enumerate(lines, start=1):
            if len(line.split()) > 1:
                raise errors.ConversionError(
                    f"{path} line {number}: expected one image id per line, got {line!r}"
                )
        if not ids:
            raise errors.ConversionError(f"split {split!r}: {path} lists no image ids")
        distinct = sorted(set(ids))
        return distinct, len(ids) - len(distinct)

    def list_records(self, split: str) -> list[RecordRef]:
        return list(self._index(split).refs)

    def listing_notes(self, split: str) -> dict[str, int]:
        return dict(self._index(split).notes)

    def _index(self, split: str) -> _SplitIndex:
        if split not in self._indexes:
            if self.task == "segmentation":
                self._indexes[split] = self._index_segmentation(split)
            else:
                self._indexes[split] = self._index_detection(split)
            duplicates = self._indexes[split].notes["duplicate_ids_in_split_file"]
            if duplicates:
                logger.warning(
                    "split %r: %d ids are listed more than once in %s; each is converted once",
                    split,
                    duplicates,
                    self._split_file(split),
                )
        return self._indexes[split]

    def _refs(self, split: str) -> tuple[list[RecordRef], int]:
        """References to every listed id, with a missing image or label file as the problem."""
        ids, duplicates = self._split_ids(split)
        label_folder = _TASK_FOLDERS[self.task]
        label_ext = _LABEL_EXTENSIONS[self.task]
        present_images = set(_fs.listdir(self._path("JPEGImages")))
        present_labels = set(_fs.listdir(self._path(label_folder)))
        refs = []
        for position, image_id in enumerate(ids, start=1):
            image = self._path("JPEGImages", f"{image_id}.jpg")
            label = self._path(label_folder, image_id + label_ext)
            problem = None
            if posixpath.basename(image) not in present_images:
                problem = (errors.IMAGE_MISSING, image, f"{split}.txt lists {image_id!r}")
            elif posixpath.basename(label) not in present_labels:
                reason = _LABEL_MISSING[self.task]
                problem = (reason, label, f"no {label_folder} file for this image")
            if self.task == "segmentation":
                paths = {"image": image, "mask": label}
            else:
                paths = {"image": image, "annotation": label, "image_id": str(position)}
            refs.append(RecordRef(split, image_id, paths, problem))
        return refs, duplicates

    # Segmentation.

    def _index_segmentation(self, split: str) -> _SplitIndex:
        refs, duplicates = self._refs(split)
        # A mask that is not a grey or palette PNG is decoded here already, so that the summary
        # can count the ones mapped back from colours (there are none in VOC as distributed).
        candidates = [i for i, ref in enumerate(refs) if ref.problem is None]
        plain = _parallel_map(_holds_class_ids, [refs[i].paths["mask"] for i in candidates])
        repaired = 0
        for i, is_plain in zip(candidates, plain):
            if is_plain:
                continue
            try:
                repaired += self._segmentation_record(refs[i])[1]
            except errors.BadRecordError as e:
                refs[i] = dataclasses.replace(refs[i], problem=(e.reason, e.path, e.detail))
        if repaired:
            logger.warning("split %r: %d RGB masks were mapped back to class ids", split, repaired)
        notes = {"duplicate_ids_in_split_file": duplicates, "rgb_masks_repaired": repaired}
        return _SplitIndex(refs, {}, notes)

    def _mask(self, data: bytes, path: str, size: tuple[int, int]) -> tuple[np.ndarray, bool]:
        """The class ids of a mask file and whether they were recovered from RGB colours."""
        repaired = False
        try:
            mask = images.decode_mask(data, path, size)
        except errors.BadRecordError as e:
            if e.reason != errors.MASK_NOT_SINGLE_CHANNEL:
                raise
            mask = _mask_from_colour_file(data, path, size, e)
            repaired = True
        unknown = sorted(set(np.unique(mask).tolist()) - MASK_IDS)
        if unknown:
            raise errors.BadRecordError(
                errors.UNKNOWN_CATEGORY,
                path,
                f"mask holds class ids {unknown}; VOC's are 0..{len(CLASS_NAMES) - 1} and "
                f"{IGNORE_ID} (ignore)",
            )
        return mask, repaired

    def _segmentation_record(self, ref: RecordRef) -> tuple[Record, bool]:
        records.check_listed(ref)
        image_path, mask_path = ref.paths["image"], ref.paths["mask"]
        image = records.read_image(image_path)
        mask, repaired = self._mask(
            records.read_file(mask_path, errors.MASK_MISSING),
            mask_path,
            (image.height, image.width),
        )
        features = image_features(ref.key, image_path, image)
        features[keys.SEGMENTATION_CLASS_ENCODED] = images.encode_mask_png(mask)
        features[keys.SEGMENTATION_CLASS_FORMAT] = "png"
        counts = np.bincount(mask.ravel(), minlength=256)
        histogram = {int(c): int(n) for c, n in enumerate(counts) if n}
        return Record(ref.key, features, histogram), repaired

    # Detection.

    def _check(self, annotation: Annotation) -> tuple[coco._Checked, int]:
        """The objects kept, clipped and dropped by `coco.check_objects`, and how many
        difficult objects were left out first."""
        objects = annotation.objects
        if not self.keep_difficult:
            objects = tuple(o for o in objects if not o["difficult"])
        size = {"height": annotation.height, "width": annotation.width}
        checked = coco.check_objects(size, objects, _CATEGORIES)
        return checked, len(annotation.objects) - len(objects)

    def _index_detection(self, split: str) -> _SplitIndex:
        refs, duplicates = self._refs(split)
        notes = {
            "duplicate_ids_in_split_file": duplicates,
            "boxes_clipped": 0,
            "boxes_dropped_zero_area": 0,
            "difficult_objects_dropped": 0,
            "images_without_objects": 0,
        }
        candidates = [i for i, ref in enumerate(refs) if ref.problem is None]

        def parse(path: str) -> Annotation | errors.BadRecordError:
            try:
                return parse_annotation(records.read_file(path, errors.ANNOTATION_MISSING), path)
            except errors.BadRecordError as e:
                return e

        parsed = _parallel_map(parse, [refs[i].paths["annotation"] for i in candidates])
        annotations = {}
        for i, result in zip(candidates, parsed):
            problem = None
            if isinstance(result, errors.BadRecordError):
                problem = (result.reason, result.path, result.detail)
            else:
                checked, left_out = self._check(result)
                if checked.problem is not None:
                    problem = (checked.problem[0], refs[i].paths["annotation"], checked.problem[1])
                else:
                    annotations[refs[i].key] = result
                    notes["boxes_clipped"] += checked.clipped
                    notes["boxes_dropped_zero_area"] += checked.dropped
                    notes["difficult_objects_dropped"] += left_out
                    notes["images_without_objects"] += not checked.objects
            if problem is not None:
                refs[i] = dataclasses.replace(refs[i], problem=problem)
        return _SplitIndex(refs, annotations, notes)

    def load(self, ref: RecordRef) -> Record:
        if self.task == "segmentation":
            return self._segmentation_record(ref)[0]
        records.check_listed(ref)
        image_path, xml_path = ref.paths["image"], ref.paths["annotation"]
        annotation = parse_annotation(
            records.read_file(xml_path, errors.ANNOTATION_MISSING), xml_path
        )
        image = records.read_image(image_path)
        if (image.height, image.width) != (annotation.height, annotation.width):
            raise errors.BadRecordError(
                errors.IMAGE_SIZE_MISMATCH,
                image_path,
                f"image is {image.height}x{image.width} (HxW) but {xml_path} says "
                f"{annotation.height}x{annotation.width}",
            )
        checked, _ = self._check(annotation)
        if checked.problem is not None:  # The listing found none; the XML changed since.
            raise errors.BadRecordError(checked.problem[0], xml_path, checked.problem[1])
        objects = checked.objects
        labels = [o.category_id for o in objects]
        features = image_features(ref.key, image_path, image)
        features[keys.IMAGE_SOURCE_ID] = ref.paths["image_id"]
        features.update(coco.object_features(objects, labels, self.class_names, image))
        difficult = [o.annotation["difficult"] for o in objects]
        features[keys.OBJECT_DIFFICULT] = examples.int64_feature(difficult)
        truncated = [o.annotation["truncated"] for o in objects]
        features[keys.OBJECT_TRUNCATED] = examples.int64_feature(truncated)
        return Record(ref.key, features, dict(collections.Counter(labels)))

    def groundtruth_dataset(self, split: str, exclude: Iterable[str] = ()) -> dict[str, Any]:
        """The split's detection groundtruth as a COCO instances dataset.

        Image ids are the integers the records hold as `image/source_id`; boxes are clipped and
        dropped as in the records; difficult objects (when kept) have `iscrowd: 1`, so COCO
        evaluation ignores detections of them. Images listed in `exclude` (VOC ids of bad
        records) and records found bad while listing are left out.
        """
        if self.task != "detection":
            raise errors.ConversionError("groundtruth_dataset is for the 'detection' task")
        index = self._index(split)
        excluded = set(exclude)
        images_out, annotations_out = [], []
        for ref in index.refs:
            if ref.problem is not None or ref.key in excluded:
                continue
            annotation = index.annotations[ref.key]
            image_id = int(ref.paths["image_id"])
            images_out.append(
                {
                    "id": image_id,
                    "file_name": posixpath.basename(ref.paths["image"]),
                    "height": annotation.height,
                    "width": annotation.width,
                }
            )
            for o in self._check(annotation)[0].objects:
                x0, y0, x1, y1 = o.box
                annotations_out.append(
                    {
                        "id": len(annotations_out) + 1,
                        "image_id": image_id,
                        "category_id": o.category_id,
                        "bbox": [x0, y0, x1 - x0, y1 - y0],
                        "area": o.area,
                        "iscrowd": o.annotation["difficult"],
                    }
                )
        return {
            "info": {
                "description": "Pascal VOC detection groundtruth; difficult objects are iscrowd",
                "converted_from": self._split_file(split),
            },
            "images": images_out,
            "annotations": annotations_out,
            "categories": [{"id": i, "name": self.class_names[i]} for i in self.category_ids],
        }


def _mask_from_colour_file(
    data: bytes, path: str, size: tuple[int, int], error: errors.BadRecordError
) -> np.ndarray:
    """Class ids of a VOC mask re-saved in colour, or `error` made more precise."""
    image = Image.open(io.BytesIO(data))
    if image.mode not in ("RGB", "RGBA"):
        raise error
    pixels = np.asarray(image)
    if image.mode == "RGBA" and (pixels[..., 3] != 255).any():
        raise errors.BadRecordError(
            error.reason, path, "RGBA mask with transparent pixels; expected a palette PNG"
        )
    if pixels.shape[:2] != tuple(size):
        raise errors.BadRecordError(
            errors.MASK_SIZE_MISMATCH,
            path,
            f"mask is {pixels.shape[0]}x{pixels.shape[1]} (HxW) but its image is "
            f"{size[0]}x{size[1]}",
        )
    mask, unknown = mask_from_colours(pixels[..., :3])
    if unknown:
        shown = ", ".join(map(str, unknown[:3])) + (" ..." if len(unknown) > 3 else "")
        raise errors.BadRecordError(
            error.reason,
            path,
            f"mask has mode {image.mode} and {len(unknown)} colours that are no VOC label "
            f"colour ({shown}); expected a palette PNG of class ids",
        )
    return mask

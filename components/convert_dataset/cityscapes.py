"""The Cityscapes source: fine annotations (gtFine) → segmentation or detection records.

Layout under `source_dir` (Cityscapes' own, e.g. leftImg8bit_trainvaltest + gtFine_trainvaltest
unpacked side by side):

  leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png      the RGB image
  gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png       8-bit label ids
  gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_instanceIds.png    16-bit instance ids

The record key is `<city>_<seq>_<frame>` (unique within a split; records are sorted by it).

Segmentation reads the labelIds file and writes trainIds (`LABELS`): the 19 evaluated classes are
0..18 in Cityscapes' order (road first; there is no background class) and every other label,
void included, is 255 (ignore). `class_names` are the 19 names by trainId. `image/source_id` is
the key.

Detection reads the instanceIds file, where a pixel holds `label_id * 1000 + index` for one
object of an instance class and just `label_id` elsewhere (stuff, and groups of an instance class
too close to separate). Objects are the pixels of one value of the 8 evaluated instance classes
(person, rider, car, truck, bus, train, motorcycle, bicycle → class ids 1..8; caravan and trailer,
which Cityscapes does not evaluate, are left out); a group region (value < 1000) becomes one
crowd object. Boxes are the pixel extents, areas the pixel counts, objects are ordered by their
instance value, and with `include_masks` each object's 0/1 mask is written as a PNG. COCO
evaluation needs integer image ids, so `image/source_id` is the record's 1-based position in the
split's sorted key list (bad records keep their number); `groundtruth_dataset` gives the same ids
to the same images, which is how the COCO evaluator pairs predictions with the written JSON.

Data checks (each makes the record bad): an unreadable image; a missing, unreadable, wrongly sized
or multi-channel label file; a labelIds file that is not 8-bit; a label id outside the table
(`unknown_category`); an instance value >= 1000 on a label without instances
(`annotation_invalid`). Label files without an image are counted in the summary
(`labels_without_image`). `groundtruth_dataset` reads every instanceIds file of the split again in
the launching process (about 0.2 s per 2048x1024 file, on several threads).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import posixpath
from collections.abc import Iterable
from typing import Any

import numpy as np

from components.convert_dataset import _fs, coco, errors, examples, images, records, rle
from components.convert_dataset.records import Record, RecordRef, image_features
from vision_core.dataloaders import tf_example_keys as keys

logger = logging.getLogger(__name__)

TASKS = ("segmentation", "detection")
IGNORE_LABEL = 255
BACKGROUND = "background"
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIXES = {
    "segmentation": "_gtFine_labelIds.png",
    "detection": "_gtFine_instanceIds.png",
}
# instanceIds: label_id * INSTANCE_FACTOR + index for one object of an instance class.
INSTANCE_FACTOR = 1000
# Groundtruth JSON: label files are decoded concurrently (the work is I/O and zlib/numpy, which
# release the GIL).
_GROUNDTRUTH_THREADS = 8


@dataclasses.dataclass(frozen=True)
class Label:
    """One row of Cityscapes' label table.

    Attributes:
      id: the value in labelIds files (-1: never drawn).
      name: the label's name.
      train_id: the class id for training, 255 for labels that are ignored.
      category: the label's group (void, flat, construction, object, nature, sky, human,
        vehicle).
      has_instances: whether instanceIds files separate its objects.
    """

    id: int
    name: str
    train_id: int
    category: str
    has_instances: bool


# Cityscapes' label table (cityscapesScripts, helpers/labels.py): id, name, trainId, category,
# hasInstances.
LABELS: tuple[Label, ...] = tuple(
    Label(*row)
    for row in (
        (0, "unlabeled", 255, "void", False),
        (1, "ego vehicle", 255, "void", False),
        (2, "rectification border", 255, "void", False),
        (3, "out of roi", 255, "void", False),
        (4, "static", 255, "void", False),
        (5, "dynamic", 255, "void", False),
        (6, "ground", 255, "void", False),
        (7, "road", 0, "flat", False),
        (8, "sidewalk", 1, "flat", False),
        (9, "parking", 255, "flat", False),
        (10, "rail track", 255, "flat", False),
        (11, "building", 2, "construction", False),
        (12, "wall", 3, "construction", False),
        (13, "fence", 4, "construction", False),
        (14, "guard rail", 255, "construction", False),
        (15, "bridge", 255, "construction", False),
        (16, "tunnel", 255, "construction", False),
        (17, "pole", 5, "object", False),
        (18, "polegroup", 255, "object", False),
        (19, "traffic light", 6, "object", False),
        (20, "traffic sign", 7, "object", False),
        (21, "vegetation", 8, "nature", False),
        (22, "terrain", 9, "nature", False),
        (23, "sky", 10, "sky", False),
        (24, "person", 11, "human", True),
        (25, "rider", 12, "human", True),
        (26, "car", 13, "vehicle", True),
        (27, "truck", 14, "vehicle", True),
        (28, "bus", 15, "vehicle", True),
        (29, "caravan", 255, "vehicle", True),
        (30, "trailer", 255, "vehicle", True),
        (31, "train", 16, "vehicle", True),
        (32, "motorcycle", 17, "vehicle", True),
        (33, "bicycle", 18, "vehicle", True),
        (-1, "license plate", -1, "vehicle", False),
    )
)
LABEL_BY_ID = {label.id: label for label in LABELS if label.id >= 0}
# The 19 segmentation classes by trainId.
TRAIN_CLASS_NAMES = tuple(
    label.name
    for label in sorted(
        (lb for lb in LABELS if 0 <= lb.train_id < IGNORE_LABEL), key=lambda lb: lb.train_id
    )
)
# The 8 detection classes: instance labels that are evaluated (not caravan, trailer), class 1..8.
INSTANCE_LABELS = tuple(lb for lb in LABELS if lb.has_instances and 0 <= lb.train_id < IGNORE_LABEL)
_MAX_LABEL_ID = max(LABEL_BY_ID)
# Largest valid instanceIds value: the last label's last possible object.
_MAX_INSTANCE_VALUE = _MAX_LABEL_ID * INSTANCE_FACTOR + INSTANCE_FACTOR - 1
# labelId → trainId lookup over every 8-bit value, and which 8-bit values are label ids.
_TRAIN_ID_LUT = np.full(256, IGNORE_LABEL, np.uint8)
_KNOWN_ID = np.zeros(256, bool)
for _label in LABEL_BY_ID.values():
    _TRAIN_ID_LUT[_label.id] = _label.train_id
    _KNOWN_ID[_label.id] = True
# 8-bit and 16-bit single-band integer modes PIL opens instanceIds files in.
_INSTANCE_MODES = {"L", "I", "I;16", "I;16B", "I;16L", "I;16N"}
# instanceIds value → detection class id (0: not an object), over every valid value.
_CLASS_OF_VALUE = np.zeros(_MAX_INSTANCE_VALUE + 1, np.int64)
for _class_id, _label in enumerate(INSTANCE_LABELS, start=1):
    _CLASS_OF_VALUE[_label.id] = _class_id  # the label's crowd regions
    _CLASS_OF_VALUE[_label.id * INSTANCE_FACTOR : (_label.id + 1) * INSTANCE_FACTOR] = _class_id


@dataclasses.dataclass(frozen=True, eq=False)
class _Object:
    """One object in an instanceIds map."""

    value: int  # its instanceIds value
    class_id: int  # 1..8
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels (x1, y1 exclusive)
    is_crowd: int
    pixels: np.ndarray  # its row-major flat pixel indices, ascending

    @property
    def area(self) -> int:
        return int(self.pixels.size)

    def mask(self, height: int, width: int) -> np.ndarray:
        """uint8 {0, 1} [H, W]."""
        flat = np.zeros(height * width, np.uint8)
        flat[self.pixels] = 1
        return flat.reshape(height, width)

    def rle(self, height: int, width: int) -> dict[str, Any]:
        """Compressed COCO RLE of the mask, from the pixel indices (cheaper than the full mask:
        the launcher computes this for every object of a split)."""
        rows, cols = np.divmod(self.pixels, width)
        # COCO runs go down the columns: column-major positions, ascending.
        positions = np.sort(cols * height + rows)
        breaks = np.flatnonzero(np.diff(positions) != 1) + 1
        starts = positions[np.r_[0, breaks]]
        ends = positions[np.r_[breaks - 1, positions.size - 1]] + 1
        # Alternating zeros before each run of ones and the run itself, then trailing zeros.
        zeros = starts - np.r_[0, ends[:-1]]
        counts = np.column_stack([zeros, ends - starts]).ravel().tolist()
        if ends[-1] < height * width:
            counts.append(height * width - int(ends[-1]))
        return {"size": [height, width], "counts": rle.compress_counts(counts)}


def _unknown_ids_error(path: str, ids: Iterable[int]) -> errors.BadRecordError:
    shown = sorted(int(i) for i in ids)
    return errors.BadRecordError(
        errors.UNKNOWN_CATEGORY,
        path,
        f"label ids {shown[:10]} are not in the Cityscapes label table (ids 0..{_MAX_LABEL_ID})",
    )


def train_id_mask(data: bytes, path: str, size: tuple[int, int]) -> np.ndarray:
    """Decodes a labelIds PNG and maps it to trainIds (255 = ignore).

    Raises:
      BadRecordError: the mask reasons of `images.decode_mask`, or `unknown_category` for a
        value that is no Cityscapes label id.
    """
    label_ids = images.decode_mask(data, path, size)
    present = np.bincount(label_ids.ravel(), minlength=256) > 0
    unknown = np.flatnonzero(present & ~_KNOWN_ID)
    if unknown.size:
        raise _unknown_ids_error(path, unknown)
    return _TRAIN_ID_LUT[label_ids]


def instance_map(data: bytes, path: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """Decodes an instanceIds PNG into int64 [H, W] values, checked against the label table.

    Args:
      data: the file's bytes.
      path: its path, for error messages.
      size: (height, width) of the image, when the size is to be checked.

    Raises:
      BadRecordError: `mask_corrupt`/`mask_truncated`, `mask_not_single_channel`,
        `mask_size_mismatch`, `unknown_category` (a value whose label id is not in the table) or
        `annotation_invalid` (an object index on a label without instances).
    """
    image = images.open_label_png(data, path)
    if image.mode not in _INSTANCE_MODES:
        bands = len(image.getbands())
        if bands != 1:
            raise errors.BadRecordError(
                errors.MASK_NOT_SINGLE_CHANNEL,
                path,
                f"instance ids have mode {image.mode} with {bands} channels; expected one "
                "channel of integer ids (8 or 16 bit)",
            )
        raise errors.BadRecordError(
            errors.MASK_CORRUPT,
            path,
            f"instance ids have mode {image.mode}; expected integer ids (8 or 16 bit)",
        )
    if size is not None:
        images.check_label_size(image, path, size, "instance ids are", "the image")
    values = np.asarray(image).astype(np.int64)
    if values.min() < 0 or values.max() > _MAX_INSTANCE_VALUE:
        bad = np.unique(values[(values < 0) | (values > _MAX_INSTANCE_VALUE)])
        raise _unknown_ids_error(path, _label_ids(bad))
    present = np.flatnonzero(np.bincount(values.ravel()))
    label_ids = _label_ids(present)
    unknown = {int(i) for i in label_ids} - set(LABEL_BY_ID)
    if unknown:
        raise _unknown_ids_error(path, unknown)
    for value, label_id in zip(present.tolist(), label_ids.tolist()):
        if value >= INSTANCE_FACTOR and not LABEL_BY_ID[label_id].has_instances:
            raise errors.BadRecordError(
                errors.ANNOTATION_INVALID,
                path,
                f"value {value} marks an object of {LABEL_BY_ID[label_id].name!r} (label "
                f"{label_id}), which has no instances",
            )
    return values


def _label_ids(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, np.int64)
    return np.where(values >= INSTANCE_FACTOR, values // INSTANCE_FACTOR, values)


def find_objects(values: np.ndarray) -> list[_Object]:
    """The objects of the 8 detection classes in a checked instance map, by instance value."""
    width = values.shape[1]
    flat = values.ravel()
    # Only object pixels are sorted and grouped, which keeps this cheap on 2-megapixel maps.
    pixels = np.flatnonzero(_CLASS_OF_VALUE[flat])
    object_values = flat[pixels]
    order = np.argsort(object_values, kind="stable")
    pixels, object_values = pixels[order], object_values[order]
    groups = np.split(pixels, np.flatnonzero(np.diff(object_values)) + 1)
    objects = []
    for group in groups:
        if not group.size:
            continue
        value = int(flat[group[0]])
        rows, cols = np.divmod(group, width)
        box = (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1)
        crowd = int(value < INSTANCE_FACTOR)
        objects.append(_Object(value, int(_CLASS_OF_VALUE[value]), box, crowd, group))
    return objects


@dataclasses.dataclass
class CityscapesSource(records.ListingNotes):
    """Cityscapes images with their gtFine annotations (see the module docstring).

    Attributes:
      source_dir: the folder holding leftImg8bit/ and gtFine/.
      splits: the splits that will be converted (Cityscapes names them train, val, test).
      task: 'segmentation' (trainId masks) or 'detection' (objects of the 8 instance classes).
      include_masks: detection: also write `image/object/mask`, one 0/1 PNG per object, and RLE
        segmentations in the groundtruth JSON.
      class_names: after construction: segmentation, the 19 names by trainId; detection,
        ('background', the 8 instance class names).
      category_ids: after construction, for detection: the Cityscapes label id of class 1, 2,
        ...; empty for segmentation.
    """

    source_dir: str
    splits: tuple[str, ...] = ()
    task: str = "segmentation"
    include_masks: bool = False
    class_names: tuple[str, ...] = dataclasses.field(default=(), init=False)
    category_ids: tuple[int, ...] = dataclasses.field(default=(), init=False)
    _refs: dict[str, list[RecordRef]] = dataclasses.field(default_factory=dict, repr=False)
    _notes: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.splits = tuple(self.splits)
        if self.task not in TASKS:
            raise errors.ConversionError(
                f"task must be one of {', '.join(TASKS)} for the 'cityscapes' source, got "
                f"{self.task!r}"
            )
        if self.include_masks and self.task != "detection":
            raise errors.ConversionError(
                f"include_masks writes instance masks for task 'detection', not {self.task!r}"
            )
        if self.task == "segmentation":
            self.class_names = TRAIN_CLASS_NAMES
        else:
            self.class_names = (BACKGROUND, *(label.name for label in INSTANCE_LABELS))
            self.category_ids = tuple(label.id for label in INSTANCE_LABELS)

    def __getstate__(self) -> dict[str, Any]:
        # Workers only need the references they are sent, not every split's listing.
        state = dict(self.__dict__)
        state["_refs"] = {}
        return state

    @property
    def label_suffix(self) -> str:
        return LABEL_SUFFIXES[self.task]

    def _split_dir(self, kind: str, split: str) -> str:
        return _fs.join(self.source_dir, kind, split)

    def _cities(self, folder: str) -> list[str]:
        if not _fs.isdir(folder):
            return []
        return [
            name
            for name in _fs.listdir(folder)
            if not name.startswith(".") and _fs.isdir(_fs.join(folder, name))
        ]

    def _label_keys(self, split: str) -> dict[str, set[str]]:
        """{city: keys having a label file of this task} under gtFine/<split>/."""
        label_dir = self._split_dir("gtFine", split)
        suffix = self.label_suffix
        return {
            city: {
                name[: -len(suffix)]
                for name in _fs.listdir(_fs.join(label_dir, city))
                if name.endswith(suffix)
            }
            for city in self._cities(label_dir)
        }

    def list_records(self, split: str) -> list[RecordRef]:
        image_dir = self._split_dir("leftImg8bit", split)
        if not _fs.isdir(image_dir):
            raise errors.ConversionError(
                f"split {split!r}: image folder {image_dir} does not exist; the 'cityscapes' "
                "source expects leftImg8bit/<split>/<city>/ and gtFine/<split>/<city>/"
            )
        by_key: dict[str, list[tuple[str, str]]] = {}
        for city in self._cities(image_dir):
            for name in _fs.listdir(_fs.join(image_dir, city)):
                if name.endswith(IMAGE_SUFFIX) and not name.startswith("."):
                    by_key.setdefault(name[: -len(IMAGE_SUFFIX)], []).append((city, name))
        if not by_key:
            raise errors.ConversionError(
                f"split {split!r}: no *{IMAGE_SUFFIX} images in the city folders of {image_dir}"
            )
        label_dir = self._split_dir("gtFine", split)
        labelled = self._label_keys(split)
        orphans = sorted(
            f"{city}/{key}"
            for city, city_keys in labelled.items()
            for key in city_keys
            if city not in {c for c, _ in by_key.get(key, ())}
        )
        if orphans:
            logger.warning(
                "split %r: %d *%s files in %s have no image (first: %s)",
                split, len(orphans), self.label_suffix, label_dir, orphans[0],
            )  # fmt: skip
        self._notes[split] = {"labels_without_image": len(orphans)}

        refs = []
        for number, key in enumerate(sorted(by_key), start=1):
            city, name = by_key[key][0]
            image_path = _fs.join(image_dir, city, name)
            label_path = _fs.join(label_dir, city, key + self.label_suffix)
            problem = None
            if len(by_key[key]) > 1:
                cities = ", ".join(c for c, _ in by_key[key])
                problem = (
                    errors.DUPLICATE_STEM,
                    image_path,
                    f"the image {name} is in several city folders: {cities}",
                )
            elif key not in labelled.get(city, ()):
                problem = (errors.MASK_MISSING, label_path, f"no {self.label_suffix} file")
            paths = {"image": image_path, "mask": label_path}
            if self.task == "detection":
                paths["image_id"] = str(number)
            refs.append(RecordRef(split, key, paths, problem))
        self._refs[split] = refs
        return refs

    def load(self, ref: RecordRef) -> Record:
        records.check_listed(ref)
        image_path, label_path = ref.paths["image"], ref.paths["mask"]
        image = records.read_image(image_path)
        size = (image.height, image.width)
        features = image_features(ref.key, image_path, image)
        label_data = records.read_file(label_path, errors.MASK_MISSING, errors.MASK_CORRUPT)
        if self.task == "segmentation":
            mask = train_id_mask(label_data, label_path, size)
            features[keys.SEGMENTATION_CLASS_ENCODED] = images.encode_mask_png(mask)
            features[keys.SEGMENTATION_CLASS_FORMAT] = "png"
            counts = np.bincount(mask.ravel(), minlength=256)
            return Record(ref.key, features, {int(c): int(n) for c, n in enumerate(counts) if n})

        values = instance_map(label_data, label_path, size)
        objects = find_objects(values)
        features[keys.IMAGE_SOURCE_ID] = ref.paths["image_id"]
        labels = [o.class_id for o in objects]
        features.update(coco.object_features(objects, labels, self.class_names, image))
        if self.include_masks:
            features[keys.OBJECT_MASK] = examples.bytes_feature(
                [images.encode_mask_png(o.mask(image.height, image.width)) for o in objects]
            )
        histogram: dict[int, int] = {}
        for label in labels:
            histogram[label] = histogram.get(label, 0) + 1
        return Record(ref.key, features, histogram)

    def _groundtruth_entry(self, ref: RecordRef) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """One image's COCO image entry and annotations (annotation ids not yet set)."""
        image_id = int(ref.paths["image_id"])
        path = ref.paths["mask"]
        # The image itself is not read: its record was written, so it has the label's size.
        values = instance_map(
            records.read_file(path, errors.MASK_MISSING, errors.MASK_CORRUPT), path
        )
        height, width = values.shape
        entry = {
            "id": image_id,
            "file_name": posixpath.basename(ref.paths["image"]),
            "height": height,
            "width": width,
        }
        annotations = []
        for o in find_objects(values):
            x0, y0, x1, y1 = o.box
            ann = {
                "image_id": image_id,
                "category_id": o.class_id,
                "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                "area": float(o.area),
                "iscrowd": o.is_crowd,
            }
            if self.include_masks:
                ann["segmentation"] = o.rle(height, width)
            annotations.append(ann)
        return entry, annotations

    def groundtruth_dataset(self, split: str, exclude: Iterable[str] = ()) -> dict[str, Any]:
        """The split's detection groundtruth as a COCO instances dataset.

        Images have the ids written as `image/source_id`, categories are the class ids 1..8 and
        annotations hold exactly the records' objects (RLE segmentations with `include_masks`).
        The instanceIds files are read again here, in the launching process. Records listed in
        `exclude` (keys of bad records) are left out.
        """
        if self.task != "detection":
            raise errors.ConversionError("groundtruth_dataset is for task 'detection'")
        excluded = set(exclude)
        refs = self._refs.get(split) or self.list_records(split)
        wanted = [r for r in refs if r.key not in excluded and r.problem is None]

        def entry(ref: RecordRef) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
            try:
                return self._groundtruth_entry(ref)
            except errors.BadRecordError as e:
                # Its record was written, so the file changed since: leave the image out.
                logger.warning("split %r: %s left out of the groundtruth: %s", split, ref.key, e)
                return None

        with concurrent.futures.ThreadPoolExecutor(max_workers=_GROUNDTRUTH_THREADS) as pool:
            results = [r for r in pool.map(entry, wanted) if r is not None]
        annotations = []
        for _, anns in results:
            for ann in anns:
                annotations.append({"id": len(annotations) + 1, **ann})
        return {
            "info": {
                "description": f"Cityscapes gtFine instances, split {split}",
                "converted_from": self._split_dir("gtFine", split),
            },
            "images": [image for image, _ in results],
            "annotations": annotations,
            "categories": [
                {
                    "id": i,
                    "name": label.name,
                    "supercategory": label.category,
                    "cityscapes_id": label.id,
                }
                for i, label in enumerate(INSTANCE_LABELS, start=1)
            ],
        }

"""The built-in "shapes" dataset: circles, squares and triangles on textured backgrounds.

It gives every task in the project (segmentation, detection, instance segmentation,
classification) real data to train and test on without a download. Each image holds 1-4 objects
of random size, colour, rotation and position; later objects are painted over earlier ones and
some are placed to overlap. Backgrounds are smooth noise, gradients or stripes drawn from the
same colour distribution as the objects, so the classes cannot be told apart by colour alone.

Layout written by `generate_shapes_dataset(output_dir, ...)`:

  images/{split}/shapes_000000.png         RGB
  masks/{split}/shapes_000000.png          single-channel class ids (see SHAPES_CLASSES)
  annotations/instances_{split}.json       COCO: boxes and RLE masks of the visible parts
  dataset.json                             classes, seed, counts and sizes

For image classification an image's label is its dominant shape, the class with the most
visible pixels in its mask (`dominant_class`), so the same files serve every task.

Every image is drawn from its own random stream seeded by (seed, split, index), so the same seed
gives byte-identical files and an image does not change when the split sizes change.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from components.convert_dataset import _fs, rle

logger = logging.getLogger(__name__)

SHAPES_CLASSES = ("background", "circle", "square", "triangle")
CIRCLE, SQUARE, TRIANGLE = 1, 2, 3
# Image classification labels each image by its dominant shape; there is no background class,
# so classification id = segmentation id - 1.
CLASSIFICATION_CLASSES = SHAPES_CLASSES[1:]
SPLITS = ("train", "validation")
DATASET_NAME = "shapes"
FORMAT_VERSION = 1

# An object must keep this share of its own pixels visible after later objects are painted over
# it, so every annotation shows enough of the shape to be learnable.
_MIN_VISIBLE_FRACTION = 0.35
_MIN_VISIBLE_PIXELS = 12
_PLACEMENT_TRIES = 40
# Share of objects deliberately centred near an earlier object to create overlaps.
_OVERLAP_PROBABILITY = 0.4
# Minimum RGB distance between an object's colour and the background under it.
_MIN_CONTRAST = 70.0
# Object radii (centre to corner) as fractions of the image's short side.
DEFAULT_RADIUS_RANGE = (0.08, 0.25)


@dataclasses.dataclass(frozen=True)
class _Object:
    class_id: int
    mask: np.ndarray  # bool [H, W], the full (unoccluded) shape


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.0, 255.0, size=3)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A float [H, W, 3] texture: smooth noise, a linear gradient or sinusoidal stripes."""
    kind = rng.integers(3)
    ys, xs = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width), indexing="ij")
    if kind == 0:
        # Smooth noise: a coarse grid of random colours, bilinearly upsampled.
        gh, gw = int(rng.integers(2, 6)), int(rng.integers(2, 6))
        grid = rng.uniform(0.0, 255.0, size=(gh, gw, 3))
        gy = ys * (gh - 1) / max(height - 1, 1)
        gx = xs * (gw - 1) / max(width - 1, 1)
        y0 = np.minimum(np.floor(gy).astype(int), gh - 2)
        x0 = np.minimum(np.floor(gx).astype(int), gw - 2)
        fy = (gy - y0)[..., None]
        fx = (gx - x0)[..., None]
        top = grid[y0, x0] * (1 - fx) + grid[y0, x0 + 1] * fx
        bottom = grid[y0 + 1, x0] * (1 - fx) + grid[y0 + 1, x0 + 1] * fx
        return top * (1 - fy) + bottom * fy
    angle = rng.uniform(0.0, math.pi)
    proj = (xs * math.cos(angle) + ys * math.sin(angle)) / max(height, width)
    c0, c1 = _random_colour(rng), _random_colour(rng)
    if kind == 1:
        t = (proj - proj.min()) / max(proj.max() - proj.min(), 1e-6)
    else:
        periods = rng.uniform(2.0, 6.0)
        t = 0.5 + 0.5 * np.sin(2 * math.pi * periods * proj + rng.uniform(0, 2 * math.pi))
    t = t[..., None]
    return c0 * (1 - t) + c1 * t


def _shape_mask(
    class_id: int, cx: float, cy: float, radius: float, angle: float, height: int, width: int
) -> np.ndarray:
    """Rasterizes one shape without anti-aliasing, so the mask is exact."""
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    if class_id == CIRCLE:
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=1)
    else:
        sides = 4 if class_id == SQUARE else 3
        points = [
            (
                cx + radius * math.cos(angle + 2 * math.pi * k / sides),
                cy + radius * math.sin(angle + 2 * math.pi * k / sides),
            )
            for k in range(sides)
        ]
        draw.polygon(points, fill=1)
    return np.asarray(canvas, dtype=bool)


def _visible_ok(objects: Sequence[_Object], height: int, width: int) -> bool:
    owner = np.zeros((height, width), dtype=np.int32)
    for i, obj in enumerate(objects, start=1):
        owner[obj.mask] = i
    for i, obj in enumerate(objects, start=1):
        full = int(obj.mask.sum())
        visible = int((owner == i).sum())
        if visible < max(_MIN_VISIBLE_PIXELS, _MIN_VISIBLE_FRACTION * full):
            return False
    return True


def _place_objects(
    rng: np.random.Generator,
    count: int,
    min_count: int,
    height: int,
    width: int,
    radius_range: tuple[float, float] = DEFAULT_RADIUS_RANGE,
) -> list[_Object]:
    objects: list[_Object] = []
    short = min(height, width)
    min_radius = max(3.0, radius_range[0] * short)
    max_radius = max(min_radius + 1.0, radius_range[1] * short)
    centres: list[tuple[float, float, float]] = []
    for index in range(count):
        # The first `min_count` objects are required, so they get more attempts.
        tries = _PLACEMENT_TRIES * (5 if index < min_count else 1)
        for _ in range(tries):
            class_id = int(rng.integers(1, len(SHAPES_CLASSES)))
            radius = rng.uniform(min_radius, max_radius)
            if centres and rng.uniform() < _OVERLAP_PROBABILITY:
                px, py, pr = centres[int(rng.integers(len(centres)))]
                offset = rng.uniform(0.6, 1.2) * (pr + radius)
                theta = rng.uniform(0, 2 * math.pi)
                cx, cy = px + offset * math.cos(theta), py + offset * math.sin(theta)
            else:
                cx = rng.uniform(radius * 0.7, width - radius * 0.7)
                cy = rng.uniform(radius * 0.7, height - radius * 0.7)
            angle = rng.uniform(0, 2 * math.pi)
            mask = _shape_mask(class_id, cx, cy, radius, angle, height, width)
            if mask.sum() < _MIN_VISIBLE_PIXELS:
                continue
            candidate = [*objects, _Object(class_id, mask)]
            if _visible_ok(candidate, height, width):
                objects = candidate
                centres.append((cx, cy, radius))
                break
        else:
            if index < min_count:
                raise RuntimeError(
                    f"could not place {min_count} shapes in a {height}x{width} image"
                )
    return objects


def _paint(rng: np.random.Generator, canvas: np.ndarray, obj: _Object) -> None:
    """Fills an object with a shaded colour that stands out from the background under it."""
    under = canvas[obj.mask].mean(axis=0)
    for _ in range(20):
        colour = _random_colour(rng)
        if np.linalg.norm(colour - under) >= _MIN_CONTRAST:
            break
    else:
        colour = 255.0 - under
    height, width = obj.mask.shape
    ys, xs = np.nonzero(obj.mask)
    angle = rng.uniform(0, 2 * math.pi)
    proj = (xs * math.cos(angle) + ys * math.sin(angle)) / max(height, width)
    shading = rng.uniform(-40.0, 40.0) * (proj - proj.mean())[:, None]
    canvas[ys, xs] = colour + shading


def render_image(
    rng: np.random.Generator,
    image_size: tuple[int, int],
    min_objects: int = 1,
    max_objects: int = 4,
    radius_range: tuple[float, float] = DEFAULT_RADIUS_RANGE,
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, np.ndarray]]]:
    """Draws one image.

    `radius_range` bounds the object radii as fractions of the short side.

    Returns:
      (image uint8 [H, W, 3], class mask uint8 [H, W], [(class_id, visible mask bool [H, W])]) with
      instances in painting order.
    """
    height, width = image_size
    count = int(rng.integers(min_objects, max_objects + 1))
    objects = _place_objects(rng, count, min_objects, height, width, radius_range)
    canvas = _background(rng, height, width)
    for obj in objects:
        _paint(rng, canvas, obj)
    canvas += rng.normal(0.0, 6.0, size=canvas.shape)
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)

    owner = np.zeros((height, width), dtype=np.int32)
    classes = np.zeros((height, width), dtype=np.uint8)
    for i, obj in enumerate(objects, start=1):
        owner[obj.mask] = i
        classes[obj.mask] = obj.class_id
    instances = [(obj.class_id, owner == i) for i, obj in enumerate(objects, start=1)]
    return image, classes, instances


def dominant_class(mask: np.ndarray) -> int | None:
    """The classification label of a shapes image: the shape class covering most pixels.

    Args:
      mask: uint8 [H, W] segmentation class ids (0 background, see SHAPES_CLASSES).

    Returns:
      An index into CLASSIFICATION_CLASSES (ties go to the lower id), or None for an image
      without any shape.
    """
    counts = np.bincount(np.asarray(mask, dtype=np.uint8).ravel(), minlength=len(SHAPES_CLASSES))
    shapes = counts[1 : len(SHAPES_CLASSES)]
    if not shapes.any():
        return None
    return int(np.argmax(shapes))


def _png_bytes(array: np.ndarray) -> bytes:
    """PNG of a uint8 array: [H, W] gives a grey (L) image, [H, W, 3] an RGB one."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=1, sort_keys=True) + "\n").encode("utf-8")


def _check_output_dir(output_dir: str) -> None:
    """Refuses to write into a folder that holds anything but an earlier shapes dataset."""
    if not _fs.isdir(output_dir) or not _fs.listdir(output_dir):
        return
    marker = _fs.join(output_dir, "dataset.json")
    if _fs.exists(marker):
        try:
            info = json.loads(_fs.read_bytes(marker))
        except ValueError:
            info = {}
        if info.get("name") == DATASET_NAME:
            for sub in ("images", "masks", "annotations"):
                _fs.rmtree(_fs.join(output_dir, sub))
            _fs.remove(marker)
            return
    raise FileExistsError(
        f"shapes output folder {output_dir} is not empty and holds no earlier shapes dataset "
        "(dataset.json with name 'shapes'); choose an empty folder"
    )


def generate_shapes_dataset(
    output_dir: str,
    num_train: int = 64,
    num_validation: int = 16,
    image_size: tuple[int, int] = (128, 128),
    seed: int = 0,
    min_objects: int = 1,
    max_objects: int = 4,
    radius_range: tuple[float, float] | list[float] = DEFAULT_RADIUS_RANGE,
) -> dict[str, Any]:
    """Writes the shapes dataset (see the module docstring) and returns its `dataset.json` content.

    Args:
      output_dir: Folder to write to (local or gs://); must be empty, missing, or hold an earlier
        shapes dataset, which is replaced.
      num_train: Number of training images.
      num_validation: Number of validation images.
      image_size: (height, width) in pixels.
      seed: Seed of every random choice; the same seed gives byte-identical files.
      min_objects: Fewest objects per image (at least 1).
      max_objects: Most objects per image.
      radius_range: (min, max) object radius (centre to corner) as a fraction of the short side;
        larger shapes make image-level labels easier to learn.

    Raises:
      ValueError: on bad sizes or counts.
      FileExistsError: if `output_dir` holds other files.
    """
    height, width = (int(v) for v in image_size)
    if height < 16 or width < 16:
        raise ValueError(f"image_size must be at least 16x16, got {image_size}")
    if not 1 <= min_objects <= max_objects:
        raise ValueError(f"need 1 <= min_objects <= max_objects, got {min_objects}, {max_objects}")
    if num_train < 0 or num_validation < 0:
        raise ValueError(f"image counts must be >= 0, got {num_train}, {num_validation}")
    radius_range = tuple(float(r) for r in radius_range)
    if len(radius_range) != 2 or not 0.0 < radius_range[0] <= radius_range[1] <= 0.5:
        raise ValueError(
            f"radius_range must be (min, max) with 0 < min <= max <= 0.5, got {radius_range}"
        )
    _check_output_dir(output_dir)

    categories = [{"id": i, "name": name} for i, name in enumerate(SHAPES_CLASSES) if i > 0]
    split_info = {}
    for split_index, (split, count) in enumerate(zip(SPLITS, (num_train, num_validation))):
        images_json, annotations_json = [], []
        for index in range(count):
            rng = np.random.default_rng([seed, split_index, index])
            image, classes, instances = render_image(
                rng, (height, width), min_objects, max_objects, radius_range
            )
            file_name = f"shapes_{index:06d}.png"
            _fs.write_bytes_atomic(
                _fs.join(output_dir, "images", split, file_name), _png_bytes(image)
            )
            _fs.write_bytes_atomic(
                _fs.join(output_dir, "masks", split, file_name), _png_bytes(classes)
            )
            image_id = index + 1
            images_json.append(
                {"id": image_id, "file_name": file_name, "height": height, "width": width}
            )
            for class_id, visible in instances:
                annotations_json.append(
                    {
                        "id": len(annotations_json) + 1,
                        "image_id": image_id,
                        "category_id": class_id,
                        "bbox": rle.bbox(visible),
                        "area": float(visible.sum()),
                        "iscrowd": 0,
                        "segmentation": rle.encode(visible),
                    }
                )
        coco = {
            "info": {"description": f"shapes {split}, seed {seed}", "version": str(FORMAT_VERSION)},
            "licenses": [],
            "images": images_json,
            "annotations": annotations_json,
            "categories": categories,
        }
        _fs.write_bytes_atomic(
            _fs.join(output_dir, "annotations", f"instances_{split}.json"), _json_bytes(coco)
        )
        split_info[split] = {"num_images": count, "num_objects": len(annotations_json)}
        logger.info("shapes: wrote %d %s images to %s", count, split, output_dir)

    info = {
        "name": DATASET_NAME,
        "format_version": FORMAT_VERSION,
        "classes": list(SHAPES_CLASSES),
        "seed": seed,
        "image_size": [height, width],
        "min_objects": min_objects,
        "max_objects": max_objects,
        "radius_range": list(radius_range),
        "splits": split_info,
    }
    # Written last: its presence marks a complete dataset.
    _fs.write_bytes_atomic(_fs.join(output_dir, "dataset.json"), _json_bytes(info))
    return info

"""Draws boxes onto images (the figures in evaluation reports and `vision-pipelines predict`)."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

# Distinct, colour-blind friendly outline colours (Okabe-Ito), cycled by class id.
PALETTE = (
    (230, 159, 0),
    (86, 180, 233),
    (0, 158, 115),
    (240, 228, 66),
    (0, 114, 178),
    (213, 94, 0),
    (204, 121, 167),
)
GROUNDTRUTH_COLOR = (255, 255, 255)


def class_label(class_id: int, class_names: Sequence[str] | None) -> str:
    """The display name of a class id: its name when known, else the id."""
    if class_names and 0 <= class_id < len(class_names):
        return str(class_names[class_id])
    return str(class_id)


def draw_boxes(
    image: np.ndarray,
    boxes: np.ndarray,
    classes: np.ndarray,
    scores: np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    groundtruth_boxes: np.ndarray | None = None,
    min_score: float = 0.0,
) -> np.ndarray:
    """Returns a copy of `image` with boxes drawn on it.

    Args:
      image: uint8 [H, W, 3].
      boxes: [N, 4] (ymin, xmin, ymax, xmax) in pixels of `image`.
      classes: [N] class ids (indices into `class_names`).
      scores: optional [N] scores, printed beside the class name; boxes below `min_score` are
        skipped.
      class_names: names by class id.
      groundtruth_boxes: optional [M, 4] true boxes, drawn dashed-white under the predictions.
      min_score: smallest score drawn.
    """
    canvas = Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    if groundtruth_boxes is not None:
        for box in np.asarray(groundtruth_boxes, dtype=np.float64).reshape(-1, 4):
            _dashed_rectangle(draw, box, GROUNDTRUTH_COLOR)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    for i, box in enumerate(boxes):
        score = None if scores is None else float(scores[i])
        if score is not None and score < min_score:
            continue
        class_id = int(classes[i])
        color = PALETTE[class_id % len(PALETTE)]
        ymin, xmin, ymax, xmax = box
        draw.rectangle([xmin, ymin, xmax, ymax], outline=color, width=2)
        text = class_label(class_id, class_names)
        if score is not None:
            text = f"{text} {score:.2f}"
        left, top = max(xmin, 0), max(ymin - 11, 0)
        text_box = draw.textbbox((left, top), text)
        draw.rectangle(text_box, fill=color)
        draw.text((left, top), text, fill=(0, 0, 0))
    return np.asarray(canvas)


def _dashed_rectangle(draw: ImageDraw.ImageDraw, box: np.ndarray, color, dash: int = 4) -> None:
    ymin, xmin, ymax, xmax = (float(v) for v in box)
    if ymax <= ymin or xmax <= xmin:
        return  # Padding rows (-1) and empty boxes.
    for start in np.arange(xmin, xmax, 2 * dash):
        end = min(start + dash, xmax)
        draw.line([(start, ymin), (end, ymin)], fill=color)
        draw.line([(start, ymax), (end, ymax)], fill=color)
    for start in np.arange(ymin, ymax, 2 * dash):
        end = min(start + dash, ymax)
        draw.line([(xmin, start), (xmin, end)], fill=color)
        draw.line([(xmax, start), (xmax, end)], fill=color)


def grid(images: Sequence[np.ndarray], columns: int = 4, pad: int = 4) -> np.ndarray:
    """Tiles uint8 [H, W, 3] images (any sizes) into one image, row by row, on black."""
    if not images:
        raise ValueError("grid: no images to tile")
    columns = max(1, min(columns, len(images)))
    rows = -(-len(images) // columns)
    cell_h = max(im.shape[0] for im in images)
    cell_w = max(im.shape[1] for im in images)
    out = np.zeros((rows * (cell_h + pad) + pad, columns * (cell_w + pad) + pad, 3), np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, columns)
        y, x = pad + r * (cell_h + pad), pad + c * (cell_w + pad)
        out[y : y + im.shape[0], x : x + im.shape[1]] = im[..., :3]
    return out


def png_bytes(image: np.ndarray) -> bytes:
    """PNG encoding of a uint8 [H, W, 3] image."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def overlay_mask(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blends a class-id mask [H, W] (class 0 and negatives left clear) over a uint8 image."""
    image = np.asarray(image, dtype=np.uint8)[..., :3]
    mask = np.asarray(mask)
    colors = np.array(PALETTE, dtype=np.float32)
    painted = mask > 0
    tint = colors[np.where(painted, mask, 0) % len(PALETTE)]
    blended = image.astype(np.float32)
    blended[painted] = (1 - alpha) * blended[painted] + alpha * tint[painted]
    return blended.round().astype(np.uint8)

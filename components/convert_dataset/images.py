"""Decoding and checking image and mask files before they become tf.Example features.

Shared by every source that reads image files, so the same file is accepted or rejected with the
same reason whichever dataset layout it came from.
"""

from __future__ import annotations

import dataclasses
import io
import re

import numpy as np
from PIL import Image

from components.convert_dataset import errors

# Formats and colour modes that TensorFlow's `decode_image(channels=3)` reads as they are; any other
# image is re-encoded as an RGB PNG so training never meets a file it cannot decode.
_PASS_THROUGH = {"PNG": ("png", {"RGB", "RGBA", "L", "LA", "P"}), "JPEG": ("jpeg", {"RGB", "L"})}
# Mask colour modes whose single band holds the class id: 8-bit grey, palette indices (VOC's
# masks) and 1-bit.
_MASK_MODES = {"L", "P", "1"}
_PNG_END = b"IEND\xaeB`\x82"
_JPEG_END = b"\xff\xd9"


@dataclasses.dataclass(frozen=True)
class DecodedImage:
    """An accepted image: the bytes to store, their format, and the size in pixels."""

    encoded: bytes
    format: str  # 'png' | 'jpeg'
    height: int
    width: int


_ADDRESS_RE = re.compile(r" at 0x[0-9a-fA-F]+")


def _looks_truncated(data: bytes, image_format: str | None, message: str) -> bool:
    if "truncated" in message.lower():
        return True
    tail = data.rstrip(b"\0")
    if image_format == "PNG":
        return not tail.endswith(_PNG_END)
    if image_format == "JPEG":
        return not tail.endswith(_JPEG_END)
    return False


def _open(
    data: bytes, path: str, corrupt: str, truncated: str, check_only: bool = False
) -> Image.Image:
    """Opens and fully decodes `data`, raising BadRecordError with the right reason on failure.

    `check_only`: the pixels are not needed, only proof that the file decodes. A JPEG in a mode
    kept as is is then decoded at 1/8 scale (JPEG's DC-only draft), which still reads every
    entropy-coded block, so corrupt and truncated files fail the same way, several times faster;
    its `size` is then the reduced one.
    """
    image_format = None
    try:
        image = Image.open(io.BytesIO(data))
        image_format = image.format
        if check_only and image_format == "JPEG" and image.mode in _PASS_THROUGH["JPEG"][1]:
            image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))
        image.load()
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ... for bad files.
        # PIL names the in-memory file with its address ("<_io.BytesIO object at 0x7f...>"):
        # drop it so the same bad input gives the same bad_records.jsonl on every run.
        message = _ADDRESS_RE.sub("", f"{type(e).__name__}: {e}")
        if image_format is not None and _looks_truncated(data, image_format, message):
            raise errors.BadRecordError(truncated, path, f"truncated file ({message})") from e
        raise errors.BadRecordError(corrupt, path, f"cannot decode ({message})") from e
    return image


def decode_image(data: bytes, path: str) -> DecodedImage:
    """Checks that `data` is a complete, decodable image.

    PNG and JPEG files in modes TensorFlow reads are kept byte for byte; anything else (BMP, GIF,
    CMYK JPEG, 16-bit, ...) is converted to an RGB PNG.

    Raises:
      BadRecordError: `image_corrupt` or `image_truncated`.
    """
    try:
        header = Image.open(io.BytesIO(data))
        width, height = header.size
        kept = _PASS_THROUGH.get(header.format or "")
        passed_through = kept is not None and header.mode in kept[1]
    except Exception:  # Not even a readable header: _open reports why.
        passed_through = False
    image = _open(
        data, path, errors.IMAGE_CORRUPT, errors.IMAGE_TRUNCATED, check_only=passed_through
    )
    if passed_through:
        return DecodedImage(data, kept[0], height, width)
    width, height = image.size
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return DecodedImage(buffer.getvalue(), "png", height, width)


def decode_mask(data: bytes, path: str, expected_size: tuple[int, int]) -> np.ndarray:
    """Decodes a class-id mask and checks it against its image.

    Args:
      data: The mask file's bytes.
      path: The mask path, for error messages.
      expected_size: (height, width) of the image.

    Returns:
      The class ids, uint8 [H, W] (palette masks give their palette indices, not colours).

    Raises:
      BadRecordError: `mask_corrupt`, `mask_truncated`, `mask_not_single_channel`,
        `mask_not_8bit` or `mask_size_mismatch`.
    """
    image = open_label_png(data, path)
    if image.mode not in _MASK_MODES:
        bands = len(image.getbands())
        if bands != 1:
            raise errors.BadRecordError(
                errors.MASK_NOT_SINGLE_CHANNEL,
                path,
                f"mask has mode {image.mode} with {bands} channels; expected one channel of "
                "class ids (mode L or P)",
            )
        raise errors.BadRecordError(
            errors.MASK_NOT_8BIT,
            path,
            f"mask has mode {image.mode}; expected 8-bit class ids (mode L or P)",
        )
    check_label_size(image, path, expected_size, "mask is")
    return np.asarray(image, dtype=np.uint8)


def open_label_png(data: bytes, path: str) -> Image.Image:
    """Fully decodes a label file (class ids, 16-bit instance ids, an RGB panoptic PNG) in
    whatever mode it has; the caller checks the mode it needs.

    Raises:
      BadRecordError: `mask_corrupt` or `mask_truncated`.
    """
    return _open(data, path, errors.MASK_CORRUPT, errors.MASK_TRUNCATED)


def check_label_size(
    image: Image.Image,
    path: str,
    expected_size: tuple[int, int],
    subject: str,
    image_name: str = "its image",
) -> None:
    """Checks a decoded label file against its image's (height, width).

    Args:
      image: The decoded label file.
      path: Its path, for the error.
      expected_size: (height, width) of the image.
      subject: How the message opens, naming the label file with its verb (e.g. 'mask is').
      image_name: How the message names the image.

    Raises:
      BadRecordError: `mask_size_mismatch`.
    """
    width, height = image.size
    if (height, width) != tuple(expected_size):
        raise errors.BadRecordError(
            errors.MASK_SIZE_MISMATCH,
            path,
            f"{subject} {height}x{width} (HxW) but {image_name} is "
            f"{expected_size[0]}x{expected_size[1]}",
        )


def encode_mask_png(mask: np.ndarray) -> bytes:
    """A single-channel 8-bit PNG of class ids, the form Model Garden's decoders read.

    zlib level 1: masks are mostly runs, so the file is barely larger than at the default level
    while encoding takes half the time (a cost paid per object when instance masks are written).
    """
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(mask, dtype=np.uint8)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()

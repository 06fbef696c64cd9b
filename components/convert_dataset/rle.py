"""COCO run-length encoding (RLE) of binary masks.

COCO stores a mask of height H and width W as run lengths over its pixels in column-major
(Fortran) order, starting with a run of zeros (which may be empty). The compact string form used in
COCO json files and returned by pycocotools' `mask.encode` writes each run length as a
variable-length sequence of 6-bit characters offset by ASCII 48: 5 payload bits per character, bit 5
meaning "another character follows", and for every run after the second, the difference to the
run two places earlier is stored instead of the run itself (runs of the same value are similar).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def mask_to_counts(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO RLE counts of a 2-D mask (non-zero = foreground)."""
    flat = np.asarray(mask).astype(bool).ravel(order="F")
    if flat.size == 0:
        return []
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts.insert(0, 0)
    return [int(c) for c in counts]


def compress_counts(counts: Sequence[int]) -> str:
    """COCO's compact string form of RLE counts (pycocotools `rleToString`)."""
    chars = []
    for i, count in enumerate(counts):
        x = int(count)
        if i > 2:
            x -= int(counts[i - 2])
        more = True
        while more:
            c = x & 0x1F
            # Python's >> on negative ints is an arithmetic shift, as in the C reference.
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            chars.append(chr(c + 48))
    return "".join(chars)


def decompress_counts(text: str) -> list[int]:
    """Inverse of `compress_counts`."""
    counts: list[int] = []
    pos = 0
    while pos < len(text):
        x = 0
        shift = 0
        more = True
        while more:
            if pos >= len(text):
                raise ValueError(f"RLE string {text!r} ends inside a run length")
            c = ord(text[pos]) - 48
            x |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            pos += 1
            shift += 5
            if not more and (c & 0x10):
                x |= -1 << shift  # sign-extend
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def encode(mask: np.ndarray) -> dict[str, Any]:
    """Compressed COCO RLE of a 2-D mask: {'size': [H, W], 'counts': str}."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"RLE encoding needs a 2-D mask, got shape {mask.shape}")
    height, width = mask.shape
    return {"size": [int(height), int(width)], "counts": compress_counts(mask_to_counts(mask))}


def decode(rle: dict[str, Any]) -> np.ndarray:
    """A uint8 {0, 1} mask of shape `rle['size']` from compressed or uncompressed COCO RLE."""
    height, width = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    if isinstance(counts, str):
        counts = decompress_counts(counts)
    if sum(counts) != height * width:
        raise ValueError(f"RLE counts sum to {sum(counts)}, expected {height}*{width}")
    values = np.arange(len(counts)) % 2
    flat = np.repeat(values.astype(np.uint8), counts)
    return flat.reshape((height, width), order="F")


def bbox(mask: np.ndarray) -> list[float]:
    """COCO box [x, y, width, height] around the non-zero pixels; all zeros for an empty mask."""
    ys, xs = np.nonzero(np.asarray(mask))
    if ys.size == 0:
        return [0.0, 0.0, 0.0, 0.0]
    x0, y0 = int(xs.min()), int(ys.min())
    return [float(x0), float(y0), float(xs.max() - x0 + 1), float(ys.max() - y0 + 1)]

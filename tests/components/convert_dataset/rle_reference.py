"""An independent COCO RLE decoder for the tests (pycocotools is not installed).

Written from the format description (pycocotools `rleFrString`), loop by loop, sharing no code with
`components.convert_dataset.rle`.
"""

import numpy as np


def counts_from_string(text):
    counts = []
    i = 0
    while i < len(text):
        value = 0
        nbits = 0
        while True:
            c = ord(text[i]) - 48
            i += 1
            value += (c & 31) << nbits
            nbits += 5
            if not c & 32:
                if c & 16:  # negative: two's complement over the bits read so far
                    value -= 1 << nbits
                break
        if len(counts) >= 3:
            value += counts[-2]
        counts.append(value)
    return counts


def mask_from_rle(rle):
    height, width = rle["size"]
    counts = rle["counts"]
    if isinstance(counts, str):
        counts = counts_from_string(counts)
    flat = []
    for index, run in enumerate(counts):
        flat.extend([index % 2] * run)
    assert len(flat) == height * width, (len(flat), height, width)
    mask = np.zeros((height, width), dtype=np.uint8)
    for position, value in enumerate(flat):
        # Column-major: position walks down a column first.
        mask[position % height, position // height] = value
    return mask

"""COCO RLE encoding against hand-worked references and an independent decoder."""

import numpy as np
import pytest
import rle_reference

from components.convert_dataset import rle


def test_counts_are_column_major_and_start_with_zeros():
    mask = np.array([[1, 0, 0], [1, 1, 0]], dtype=np.uint8)
    # Column-major pixels: 1 1 | 0 1 | 0 0 → a leading empty zero run, two ones, one zero, ...
    assert rle.mask_to_counts(mask) == [0, 2, 1, 1, 2]
    assert rle.mask_to_counts(np.zeros((2, 2))) == [4]


@pytest.mark.parametrize(
    "counts, text",
    [
        # Worked by hand from the format: 3 → '3', 2 → '2', 60 = 0b1_11100 → chunk 28 with the
        # continue bit (28 + 32 + 48 = 'l'), then chunk 1 → '1'; from the 4th run on, the
        # difference to the run two back is stored: 5 - 2 = 3 → '3'.
        ([3, 2, 60, 5], "32l13"),
        # The 4th run 2 is stored as 2 - 3 = -1 → chunk 31, sign bit set, no continuation → 'O'.
        ([5, 3, 1, 2], "531O"),
    ],
)
def test_compressed_string_matches_hand_worked_values(counts, text):
    assert rle.compress_counts(counts) == text
    assert rle.decompress_counts(text) == counts
    assert rle_reference.counts_from_string(text) == counts


def test_encode_round_trips_through_the_independent_decoder():
    rng = np.random.default_rng(0)
    for shape in [(7, 5), (16, 16), (3, 40)]:
        # Blobby masks give long and short runs, so multi-character and negative deltas appear.
        mask = (rng.uniform(size=shape) < 0.3).astype(np.uint8)
        mask[1 : shape[0] // 2, 1 : shape[1] // 2] = 1
        encoded = rle.encode(mask)
        assert encoded["size"] == list(shape)
        np.testing.assert_array_equal(rle_reference.mask_from_rle(encoded), mask)
        np.testing.assert_array_equal(rle.decode(encoded), mask)


def test_bbox_is_inclusive_pixel_extent():
    mask = np.zeros((10, 12), dtype=bool)
    mask[2:5, 3:9] = True
    assert rle.bbox(mask) == [3.0, 2.0, 6.0, 3.0]
    assert rle.bbox(np.zeros((4, 4))) == [0.0, 0.0, 0.0, 0.0]

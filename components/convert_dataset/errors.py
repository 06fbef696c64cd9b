"""Errors and the reasons a record can be rejected."""

from __future__ import annotations


class ConversionError(Exception):
    """Bad user input to the conversion step (paths, options, strict-mode failures).

    The message names the offending file, option or record and what was expected, so the CLI can
    print it without a traceback.
    """


class BadRecordError(Exception):
    """One input record cannot be converted; the run goes on and reports it.

    Attributes:
      reason: A short machine-readable reason from `REASONS`.
      path: The file at fault (the image, the mask, or the mask path that was expected).
      detail: A human-readable explanation.
    """

    def __init__(self, reason: str, path: str, detail: str):
        super().__init__(f"{reason}: {path}: {detail}")
        self.reason = reason
        self.path = path
        self.detail = detail


IMAGE_CORRUPT = "image_corrupt"
IMAGE_TRUNCATED = "image_truncated"
MASK_MISSING = "mask_missing"
MASK_CORRUPT = "mask_corrupt"
MASK_TRUNCATED = "mask_truncated"
MASK_NOT_SINGLE_CHANNEL = "mask_not_single_channel"
MASK_NOT_8BIT = "mask_not_8bit"
MASK_SIZE_MISMATCH = "mask_size_mismatch"
DUPLICATE_STEM = "duplicate_stem"
# Classification: an image whose class cannot be determined (e.g. a shapes mask with no shape).
LABEL_MISSING = "label_missing"
# Detection (COCO JSON): the image file named by the JSON is absent; the image's pixel size
# differs from the JSON's height/width; an annotation's category is not among the categories;
# an annotation is malformed (box, or segmentation when masks are written); two images share a
# file name. Cityscapes uses unknown_category for a label id outside its label table and
# annotation_invalid for an object index on a label without instances.
IMAGE_MISSING = "image_missing"
IMAGE_SIZE_MISMATCH = "image_size_mismatch"
UNKNOWN_CATEGORY = "unknown_category"
ANNOTATION_INVALID = "annotation_invalid"
DUPLICATE_IMAGE = "duplicate_image"
# Pascal VOC detection: an image listed in the split file has no annotation XML.
ANNOTATION_MISSING = "annotation_missing"
# COCO panoptic: the panoptic PNG is not RGB (its colours encode the segment ids); a segment id
# painted in the PNG is not listed in the image's segments_info.
MASK_NOT_RGB = "mask_not_rgb"
SEGMENT_UNKNOWN = "segment_unknown"

REASONS = (
    IMAGE_CORRUPT,
    IMAGE_TRUNCATED,
    MASK_MISSING,
    MASK_CORRUPT,
    MASK_TRUNCATED,
    MASK_NOT_SINGLE_CHANNEL,
    MASK_NOT_8BIT,
    MASK_SIZE_MISMATCH,
    DUPLICATE_STEM,
    LABEL_MISSING,
    IMAGE_MISSING,
    IMAGE_SIZE_MISMATCH,
    UNKNOWN_CATEGORY,
    ANNOTATION_INVALID,
    DUPLICATE_IMAGE,
    ANNOTATION_MISSING,
    MASK_NOT_RGB,
    SEGMENT_UNKNOWN,
)

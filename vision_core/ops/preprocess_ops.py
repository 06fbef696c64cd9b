"""Image preprocessing and augmentation ops (Model Garden's `official.vision.ops.preprocess_ops`).

All ops work on single (unbatched) examples inside a `tf.data` map function. Geometry follows
Model Garden so that `image_info` produced here can be consumed by Model Garden code and the
reverse:

    image_info = [[original_height, original_width],
                  [desired_height,  desired_width],
                  [y_scale,         x_scale],
                  [y_offset,        x_offset]]

where `desired_*` is the requested output size (before padding), the scales are
`scaled_size / original_size` and the offsets are where the random crop of the scaled image
starts (zero without scale jittering).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import tensorflow as tf

# ImageNet statistics as Model Garden defines them: *_NORM for images scaled to [0, 1],
# *_RGB for images in [0, 255].
MEAN_NORM = (0.485, 0.456, 0.406)
STDDEV_NORM = (0.229, 0.224, 0.225)
MEAN_RGB = tuple(255 * v for v in MEAN_NORM)
STDDEV_RGB = tuple(255 * v for v in STDDEV_NORM)

CENTER_CROP_FRACTION = 0.875

SizeLike = Sequence[int] | tf.Tensor


def normalize_image(
    image: tf.Tensor,
    offset: Sequence[float] = MEAN_NORM,
    scale: Sequence[float] = STDDEV_NORM,
) -> tf.Tensor:
    """Converts an image to float32 in [0, 1] and standardizes it per channel.

    Integer images are rescaled by `tf.image.convert_image_dtype` (uint8 → /255), so `offset`
    and `scale` are in [0, 1] units, like Model Garden's MEAN_NORM / STDDEV_NORM.

    Args:
      image: [H, W, C] image of any dtype `convert_image_dtype` accepts.
      offset: per-channel mean subtracted after the conversion.
      scale: per-channel standard deviation divided by after subtracting the mean.

    Returns:
      A float32 [H, W, C] image.
    """
    with tf.name_scope("normalize_image"):
        image = tf.image.convert_image_dtype(image, dtype=tf.float32)
        return normalize_scaled_float_image(image, offset, scale)


def normalize_scaled_float_image(
    image: tf.Tensor,
    offset: Sequence[float] = MEAN_NORM,
    scale: Sequence[float] = STDDEV_NORM,
) -> tf.Tensor:
    """Standardizes a float image already in [0, 1]: `(image - offset) / scale` per channel."""
    offset = tf.reshape(tf.constant(offset, dtype=image.dtype), [1, 1, -1])
    scale = tf.reshape(tf.constant(scale, dtype=image.dtype), [1, 1, -1])
    return (image - offset) / scale


def compute_padded_size(desired_size: SizeLike, stride: int) -> list[int] | tf.Tensor:
    """Rounds each side of `desired_size` up to a multiple of `stride`.

    For example (100, 200) with stride 32 gives (128, 224). Python sequences give a Python list,
    tensors give an int32 tensor.
    """
    if isinstance(desired_size, list | tuple):
        return [int(math.ceil(d / stride) * stride) for d in desired_size]
    size = tf.cast(desired_size, tf.float32)
    return tf.cast(tf.math.ceil(size / stride) * stride, tf.int32)


def _is_jittering(aug_scale_min, aug_scale_max) -> bool:
    # Tensors may hold anything, so they always take the random path, as in Model Garden.
    return (
        isinstance(aug_scale_min, tf.Tensor)
        or isinstance(aug_scale_max, tf.Tensor)
        or not math.isclose(aug_scale_min, 1.0)
        or not math.isclose(aug_scale_max, 1.0)
    )


def resize_and_crop_image(
    image: tf.Tensor,
    desired_size: SizeLike,
    padded_size: SizeLike,
    aug_scale_min: float = 1.0,
    aug_scale_max: float = 1.0,
    seed: int | None = 1,
    method: str = tf.image.ResizeMethod.BILINEAR,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Resizes an image to fit `desired_size` keeping its aspect ratio, then pads (RetinaNet style).

    Steps:
      1. Optionally jitter: multiply `desired_size` by a random scale in
         [aug_scale_min, aug_scale_max) and round.
      2. Scale the image by the largest factor that keeps it inside that (jittered) size.
      3. When jittering, take a random `desired_size` window of the scaled image (the offset is
         zero along a side where the scaled image is smaller than `desired_size`).
      4. Pad with zeros at the bottom/right to `padded_size`.

    Args:
      image: [H, W, C] image.
      desired_size: [height, width] of the content area of the output.
      padded_size: [height, width] of the output; at least `desired_size`.
      aug_scale_min: minimum random scale (<= 1.0) for training scale jittering.
      aug_scale_max: maximum random scale (>= 1.0) for training scale jittering.
      seed: op-level seed of the random scale and offset.
      method: `tf.image.resize` method.

    Returns:
      (output_image [padded_h, padded_w, C] float, image_info [4, 2] float32); see the module
      docstring for the image_info layout.
    """
    with tf.name_scope("resize_and_crop_image"):
        image_size = tf.cast(tf.shape(image)[0:2], tf.float32)
        desired = tf.cast(desired_size, tf.float32)
        jitter = _is_jittering(aug_scale_min, aug_scale_max)

        if jitter:
            random_scale = tf.random.uniform([], aug_scale_min, aug_scale_max, seed=seed)
            target = tf.round(random_scale * desired)
        else:
            target = desired

        scale = tf.minimum(target[0] / image_size[0], target[1] / image_size[1])
        scaled_size = tf.round(image_size * scale)
        # Per-axis scale after rounding, so boxes and masks map exactly onto the scaled image.
        image_scale = scaled_size / image_size

        if jitter:
            max_offset = tf.maximum(scaled_size - desired, 0.0)
            offset = tf.cast(max_offset * tf.random.uniform([2], 0, 1, seed=seed), tf.int32)
        else:
            offset = tf.zeros([2], tf.int32)

        scaled_image = tf.image.resize(image, tf.cast(scaled_size, tf.int32), method=method)
        if jitter:
            desired_int = tf.cast(desired, tf.int32)
            scaled_image = scaled_image[
                offset[0] : offset[0] + desired_int[0], offset[1] : offset[1] + desired_int[1], :
            ]
        output_image = tf.image.pad_to_bounding_box(
            scaled_image, 0, 0, padded_size[0], padded_size[1]
        )
        image_info = tf.stack([image_size, desired, image_scale, tf.cast(offset, tf.float32)])
        return output_image, image_info


def resize_and_crop_masks(
    masks: tf.Tensor, image_scale: tf.Tensor, output_size: SizeLike, offset: tf.Tensor
) -> tf.Tensor:
    """Applies the geometry of `resize_and_crop_image` to masks with nearest-neighbour resizing.

    Args:
      masks: [N, H, W, C] masks.
      image_scale: [2] (y_scale, x_scale), i.e. `image_info[2]`.
      output_size: [height, width] of the output.
      offset: [2] (y_offset, x_offset), i.e. `image_info[3]`.

    Returns:
      [N, output_h, output_w, C] masks; the area outside the scaled masks is 0.
    """
    with tf.name_scope("resize_and_crop_masks"):
        mask_size = tf.cast(tf.shape(masks)[1:3], tf.float32)
        # A leading all-zero mask keeps the resize valid when N == 0; it is dropped at the end.
        blank = tf.zeros(tf.concat([[1], tf.shape(masks)[1:]], axis=0), masks.dtype)
        masks = tf.concat([blank, masks], axis=0)
        # Model Garden truncates here; `scale * size` can land a hair below the integer the image
        # was resized to (float32), which would lose a row. Rounding recovers that integer.
        scaled_size = tf.cast(tf.round(tf.cast(image_scale, tf.float32) * mask_size), tf.int32)
        scaled = tf.image.resize(masks, scaled_size, method=tf.image.ResizeMethod.NEAREST_NEIGHBOR)
        offset = tf.cast(offset, tf.int32)
        scaled = scaled[
            :, offset[0] : offset[0] + output_size[0], offset[1] : offset[1] + output_size[1], :
        ]
        output = tf.image.pad_to_bounding_box(scaled, 0, 0, output_size[0], output_size[1])
        return output[1:]


def resize_and_crop_boxes(
    boxes: tf.Tensor, image_scale: tf.Tensor, output_size: SizeLike, offset: tf.Tensor
) -> tf.Tensor:
    """Maps pixel boxes through `resize_and_crop_image`: scale, shift by the crop, clip.

    Args:
      boxes: [N, 4] (ymin, xmin, ymax, xmax) in original-image pixels.
      image_scale: [2] per-axis scale (`image_info[2]`).
      output_size: [height, width] of the content area (`image_info[1]`); boxes are clipped to it.
      offset: [2] crop offset in scaled pixels (`image_info[3]`).

    Returns:
      [N, 4] boxes in output-image pixels. Boxes falling outside collapse to zero area; drop
      them with `box_ops.get_non_empty_box_indices`.
    """
    with tf.name_scope("resize_and_crop_boxes"):
        scale = tf.tile(tf.cast(image_scale, boxes.dtype), [2])
        shift = tf.tile(tf.cast(offset, boxes.dtype), [2])
        boxes = boxes * scale - shift
        size = tf.cast(output_size, boxes.dtype)
        upper = tf.concat([size, size], axis=0)
        return tf.clip_by_value(boxes, 0.0, upper)


def clip_or_pad_to_fixed_size(
    tensor: tf.Tensor, size: int, constant_values: int | float = 0
) -> tf.Tensor:
    """Truncates or pads the first dimension of `tensor` to `size` (padding with a constant).

    Keeps batches of per-image groundtruth rectangular; -1 padding marks rows as absent.
    """
    with tf.name_scope("clip_or_pad_to_fixed_size"):
        tensor = tensor[:size]
        pad_rows = size - tf.shape(tensor)[0]
        paddings = tf.concat(
            [[[0, pad_rows]], tf.zeros([tf.rank(tensor) - 1, 2], tf.int32)], axis=0
        )
        padded = tf.pad(tensor, paddings, constant_values=constant_values)
        padded.set_shape([size] + tensor.shape.as_list()[1:])
        return padded


def horizontal_flip_image(image: tf.Tensor) -> tf.Tensor:
    """Flips an [H, W, C] (or [B, H, W, C]) image left-right."""
    return tf.image.flip_left_right(image)


def horizontal_flip_masks(masks: tf.Tensor) -> tf.Tensor:
    """Flips [N, H, W] masks left-right (the width is axis 2)."""
    return masks[:, :, ::-1]


def _horizontal_flip_normalized_boxes(boxes: tf.Tensor) -> tf.Tensor:
    ymin, xmin, ymax, xmax = tf.split(boxes, 4, axis=-1)
    return tf.concat([ymin, 1.0 - xmax, ymax, 1.0 - xmin], axis=-1)


def random_horizontal_flip(
    image: tf.Tensor,
    normalized_boxes: tf.Tensor | None = None,
    masks: tf.Tensor | None = None,
    seed: int | None = 1,
    prob: float = 0.5,
) -> tuple[tf.Tensor, tf.Tensor | None, tf.Tensor | None]:
    """Flips the image, and the boxes and masks with it, with probability `prob`.

    Args:
      image: [H, W, C] image.
      normalized_boxes: optional [N, 4] boxes (ymin, xmin, ymax, xmax) in [0, 1].
      masks: optional [N, H, W] masks (width on axis 2).
      seed: op-level seed of the coin flip.
      prob: probability of flipping.

    Returns:
      (image, normalized_boxes, masks), the last two None when not given.
    """
    with tf.name_scope("random_horizontal_flip"):
        do_flip = tf.less(tf.random.uniform([], seed=seed), prob)
        image = tf.cond(do_flip, lambda: horizontal_flip_image(image), lambda: image)
        if normalized_boxes is not None:
            normalized_boxes = tf.cond(
                do_flip,
                lambda: _horizontal_flip_normalized_boxes(normalized_boxes),
                lambda: normalized_boxes,
            )
        if masks is not None:
            masks = tf.cond(do_flip, lambda: horizontal_flip_masks(masks), lambda: masks)
        return image, normalized_boxes, masks


def random_crop_image_and_mask(
    image: tf.Tensor,
    mask: tf.Tensor,
    crop_size: Sequence[int],
    mask_pad_value: float = 0,
    seed: int | None = None,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Takes the same random `crop_size` window from an image and its dense mask.

    Unlike a bare `tf.image.random_crop`, a side shorter than the crop is first padded at the
    bottom/right (the image with 0, the mask with `mask_pad_value`, typically the ignore label),
    so small images do not fail.

    Args:
      image: [H, W, C] image.
      mask: [H, W, K] mask aligned with the image.
      crop_size: [height, width] of the crop.
      mask_pad_value: value written into padded mask pixels.
      seed: op-level seed of the crop position.

    Returns:
      (image [crop_h, crop_w, C], mask [crop_h, crop_w, K]) in the input dtypes.
    """
    with tf.name_scope("random_crop_image_and_mask"):
        crop_h, crop_w = int(crop_size[0]), int(crop_size[1])
        shape = tf.shape(image)
        pad_h = tf.maximum(crop_h - shape[0], 0)
        pad_w = tf.maximum(crop_w - shape[1], 0)
        paddings = [[0, pad_h], [0, pad_w], [0, 0]]
        image_p = tf.pad(image, paddings)
        mask_p = tf.pad(mask, paddings, constant_values=tf.cast(mask_pad_value, mask.dtype))
        num_image_channels = tf.shape(image_p)[-1]
        # Concatenation makes one random window apply to both tensors.
        stacked = tf.concat([tf.cast(image_p, tf.float32), tf.cast(mask_p, tf.float32)], axis=-1)
        cropped = tf.image.random_crop(
            stacked, tf.stack([crop_h, crop_w, tf.shape(stacked)[-1]]), seed=seed
        )
        out_image = tf.cast(cropped[:, :, :num_image_channels], image.dtype)
        out_mask = tf.cast(cropped[:, :, num_image_channels:], mask.dtype)
        out_image.set_shape([crop_h, crop_w, image.shape[-1]])
        out_mask.set_shape([crop_h, crop_w, mask.shape[-1]])
        return out_image, out_mask


# ------------------------------------------------------------------- classification cropping
# A window is (offset [2], size [2]) in pixels, int32; the same window can slice a decoded image
# or be handed to `tf.image.decode_and_crop_jpeg`, which then decodes only that part of a JPEG.
def center_crop_window(
    image_shape: tf.Tensor, center_crop_fraction: float = CENTER_CROP_FRACTION
) -> tuple[tf.Tensor, tf.Tensor]:
    """The centred square window whose side is `center_crop_fraction` of the short side.

    Args:
      image_shape: [height, width, ...] of the image.
      center_crop_fraction: side of the square over the image's short side, in (0, 1]; ImageNet
        evaluation uses 224 / 256 = 0.875.

    Returns:
      (offset [y, x], size [side, side]), both int32.
    """
    shape = tf.cast(image_shape[:2], tf.float32)
    side = center_crop_fraction * tf.minimum(shape[0], shape[1])
    # Truncation (not rounding) of both the offset and the side, as Model Garden does.
    offset = tf.cast((shape - side) / 2.0, tf.int32)
    side = tf.cast(side, tf.int32)
    return offset, tf.stack([side, side])


def random_crop_window(
    image_shape: tf.Tensor,
    aspect_ratio_range: Sequence[float] = (3.0 / 4.0, 4.0 / 3.0),
    area_range: Sequence[float] = (0.08, 1.0),
    max_attempts: int = 10,
    seed: int | None = 1,
) -> tuple[tf.Tensor, tf.Tensor]:
    """A random window (Inception-style) covering an area fraction within `area_range`.

    After `max_attempts` failed draws the window is the whole image.

    Args:
      image_shape: [height, width, channels] of the image.
      aspect_ratio_range: allowed width / height of the window.
      area_range: allowed window area as a fraction of the image area.
      max_attempts: draws before falling back to the whole image.
      seed: op-level seed.

    Returns:
      (offset [y, x], size [h, w]), both int32.
    """
    begin, size, _ = tf.image.sample_distorted_bounding_box(
        tf.cast(image_shape, tf.int32),
        tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32, shape=[1, 1, 4]),
        seed=seed,
        min_object_covered=area_range[0],
        aspect_ratio_range=aspect_ratio_range,
        area_range=area_range,
        max_attempts=max_attempts,
        use_image_if_no_bounding_boxes=True,
    )
    return begin[:2], size[:2]


def crop_to_window(image: tf.Tensor, offset: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    """Slices the [H, W, C] image to the window (offset, size)."""
    return image[offset[0] : offset[0] + size[0], offset[1] : offset[1] + size[1], :]


def decode_and_crop_jpeg(
    image_bytes: tf.Tensor, offset: tf.Tensor, size: tf.Tensor, channels: int = 3
) -> tf.Tensor:
    """Decodes only the window (offset, size) of a JPEG: faster than decoding, then cropping."""
    window = tf.concat([offset, size], axis=0)
    return tf.image.decode_and_crop_jpeg(image_bytes, window, channels=channels)


def center_crop_image(
    image: tf.Tensor, center_crop_fraction: float = CENTER_CROP_FRACTION
) -> tf.Tensor:
    """The centred square crop of a decoded [H, W, C] image (see `center_crop_window`)."""
    with tf.name_scope("center_crop_image"):
        offset, size = center_crop_window(tf.shape(image), center_crop_fraction)
        return crop_to_window(image, offset, size)


def center_crop_image_v2(
    image_bytes: tf.Tensor,
    image_shape: tf.Tensor,
    center_crop_fraction: float = CENTER_CROP_FRACTION,
) -> tf.Tensor:
    """`center_crop_image` on JPEG bytes of shape `image_shape`, decoding only the crop."""
    with tf.name_scope("center_crop_image_v2"):
        offset, size = center_crop_window(image_shape, center_crop_fraction)
        return decode_and_crop_jpeg(image_bytes, offset, size)


def random_crop_image(
    image: tf.Tensor,
    aspect_ratio_range: Sequence[float] = (3.0 / 4.0, 4.0 / 3.0),
    area_range: Sequence[float] = (0.08, 1.0),
    max_attempts: int = 10,
    seed: int | None = 1,
) -> tf.Tensor:
    """A random crop of a decoded [H, W, C] image (see `random_crop_window`)."""
    with tf.name_scope("random_crop_image"):
        offset, size = random_crop_window(
            tf.shape(image), aspect_ratio_range, area_range, max_attempts, seed
        )
        return crop_to_window(image, offset, size)


def random_crop_image_v2(
    image_bytes: tf.Tensor,
    image_shape: tf.Tensor,
    aspect_ratio_range: Sequence[float] = (3.0 / 4.0, 4.0 / 3.0),
    area_range: Sequence[float] = (0.08, 1.0),
    max_attempts: int = 10,
    seed: int | None = 1,
) -> tf.Tensor:
    """`random_crop_image` on JPEG bytes of shape `image_shape`, decoding only the crop."""
    with tf.name_scope("random_crop_image_v2"):
        offset, size = random_crop_window(
            image_shape, aspect_ratio_range, area_range, max_attempts, seed
        )
        return decode_and_crop_jpeg(image_bytes, offset, size)

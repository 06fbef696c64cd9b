"""Semantic segmentation input (Model Garden's `official.vision.dataloaders.segmentation_input`).

`Decoder` parses a tf.Example holding an encoded image and an encoded single-channel class mask
(`image/segmentation/class/encoded`); `Parser` decodes, augments and resizes them into

    image:  [H, W, C] normalized (dtype as configured)
    labels: {'masks': [H, W, 1] float32 class ids (ignore_label where unknown or padded),
             'valid_masks': [H, W, 1] bool (masks != ignore_label),
             'image_info': [4, 2] float32, see `vision_core.ops.preprocess_ops`}

`SegmentationInput` (the API the segmentation tutorial uses) wires both into a batched
`tf.data.Dataset` read from TFRecord files.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from vision_core.dataloaders import input_reader
from vision_core.dataloaders import tf_example_keys as keys
from vision_core.ops import preprocess_ops


@dataclasses.dataclass
class DenseFeatureConfig:
    """An image-like input feature: its tf.Example key, channels, and [0, 255] mean / stddev."""

    feature_name: str = keys.IMAGE_ENCODED
    num_channels: int = 3
    mean: Sequence[float] = preprocess_ops.MEAN_RGB
    stddev: Sequence[float] = preprocess_ops.STDDEV_RGB


def _feature_config(feature: Any) -> DenseFeatureConfig:
    """Accepts None (the RGB default), a feature name, or any object with the same fields."""
    if feature is None or feature == "":
        return DenseFeatureConfig()
    if isinstance(feature, str):
        return DenseFeatureConfig(feature_name=feature)
    default = DenseFeatureConfig()
    return DenseFeatureConfig(
        feature_name=getattr(feature, "feature_name", None) or default.feature_name,
        num_channels=int(getattr(feature, "num_channels", None) or default.num_channels),
        mean=tuple(getattr(feature, "mean", None) or default.mean),
        stddev=tuple(getattr(feature, "stddev", None) or default.stddev),
    )


class Decoder:
    """Parses a segmentation tf.Example into its raw features (encoded strings, height, width).

    The output is keyed by the tf.Example feature keys, as in Model Garden, so parsers written
    against Model Garden's decoder work unchanged; images are decoded by the `Parser`.
    """

    def __init__(self, image_feature: Any = None, additional_dense_features: Sequence = ()):
        """Initializes the decoder.

        Args:
          image_feature: the image input: None for `image/encoded` with 3 channels, a feature
            name, or a `DenseFeatureConfig`-like object.
          additional_dense_features: extra image-like features (configs as above) to parse.
        """
        image_cfg = _feature_config(image_feature)
        self._keys_to_features = {
            keys.IMAGE_ENCODED: tf.io.FixedLenFeature((), tf.string, default_value=""),
            keys.IMAGE_HEIGHT: tf.io.FixedLenFeature((), tf.int64, default_value=0),
            keys.IMAGE_WIDTH: tf.io.FixedLenFeature((), tf.int64, default_value=0),
            keys.SEGMENTATION_CLASS_ENCODED: tf.io.FixedLenFeature((), tf.string, default_value=""),
            image_cfg.feature_name: tf.io.FixedLenFeature((), tf.string, default_value=""),
        }
        for feature in additional_dense_features or ():
            name = _feature_config(feature).feature_name
            self._keys_to_features[name] = tf.io.FixedLenFeature((), tf.string, default_value="")

    def decode(self, serialized_example: tf.Tensor) -> dict[str, tf.Tensor]:
        """Returns the parsed features of one serialized tf.Example."""
        return tf.io.parse_single_example(serialized_example, self._keys_to_features)


class Parser:
    """Turns decoded segmentation features into `(image, labels)` for training or evaluation."""

    def __init__(
        self,
        output_size: Sequence[int],
        crop_size: Sequence[int] | None = None,
        resize_eval_groundtruth: bool = True,
        gt_is_matting_map: bool = False,
        groundtruth_padded_size: Sequence[int] | None = None,
        ignore_label: int = 255,
        aug_rand_hflip: bool = False,
        preserve_aspect_ratio: bool = True,
        aug_scale_min: float = 1.0,
        aug_scale_max: float = 1.0,
        dtype: str = "float32",
        image_feature: Any = None,
        additional_dense_features: Sequence = (),
    ):
        """Initializes the parser.

        Args:
          output_size: [height, width] of the model input; should be divisible by the largest
            feature stride.
          crop_size: [height, width] of a random training crop taken after resizing to
            `output_size` (or from the original image when `output_size` is empty). Evaluation
            ignores it.
          resize_eval_groundtruth: resize eval masks with the image to `output_size`; when
            False they keep the original resolution, padded to `groundtruth_padded_size`.
          gt_is_matting_map: masks hold a 0..255 matting map; training scales it to [0, 1],
            evaluation binarizes it at 0.5.
          groundtruth_padded_size: [height, width] that eval masks are padded to when
            `resize_eval_groundtruth` is False (required then).
          ignore_label: class id of unlabeled pixels; padding gets it too.
          aug_rand_hflip: randomly flip training examples left-right.
          preserve_aspect_ratio: scale to fit `output_size` keeping the aspect ratio (padding
            the rest); when False, stretch to `output_size`.
          aug_scale_min: minimum random scale of `output_size` for training jittering.
          aug_scale_max: maximum random scale of `output_size` for training jittering.
          dtype: image dtype: 'float32', 'bfloat16' or 'float16'.
          image_feature: see `Decoder`.
          additional_dense_features: image-like features concatenated to the image channels.
        """
        if not resize_eval_groundtruth and not groundtruth_padded_size:
            raise ValueError(
                "groundtruth_padded_size: expected [height, width] when "
                "resize_eval_groundtruth is False, got "
                f"{groundtruth_padded_size!r}"
            )
        if not output_size and not crop_size:
            raise ValueError("output_size: expected [height, width], got an empty size")
        self._output_size = [int(s) for s in output_size] if output_size else []
        self._crop_size = [int(s) for s in crop_size] if crop_size else []
        self._resize_eval_groundtruth = resize_eval_groundtruth
        self._gt_is_matting_map = gt_is_matting_map
        self._groundtruth_padded_size = (
            [int(s) for s in groundtruth_padded_size] if groundtruth_padded_size else []
        )
        self._ignore_label = ignore_label
        self._aug_rand_hflip = aug_rand_hflip
        self._preserve_aspect_ratio = preserve_aspect_ratio
        self._aug_scale_min = aug_scale_min
        self._aug_scale_max = aug_scale_max
        self._dtype = dtype
        self._image_feature = _feature_config(image_feature)
        self._additional_dense_features = [
            _feature_config(f) for f in additional_dense_features or ()
        ]

    def parse_fn(self, is_training: bool):
        """Returns the function for `dataset.map`: training or evaluation parsing."""

        def parse(decoded_tensors):
            if is_training:
                return self._parse_train_data(decoded_tensors)
            return self._parse_eval_data(decoded_tensors)

        return parse

    def __call__(self, decoded_tensors, is_training: bool = True):
        return self.parse_fn(is_training)(decoded_tensors)

    def _decode_dense(self, data, cfg: DenseFeatureConfig, height, width) -> tf.Tensor:
        feature = tf.io.decode_image(
            data[cfg.feature_name],
            channels=cfg.num_channels,
            dtype=tf.uint8,
            expand_animations=False,
        )
        feature = tf.reshape(feature, tf.stack([height, width, cfg.num_channels]))
        # normalize_image divides uint8 by 255 first, so the [0, 255] statistics are too.
        return preprocess_ops.normalize_image(
            feature, [m / 255.0 for m in cfg.mean], [s / 255.0 for s in cfg.stddev]
        )

    def _prepare_image_and_label(self, data) -> tuple[tf.Tensor, tf.Tensor]:
        """Decodes to a normalized [H, W, C] image and a float32 [1, H, W] label."""
        label = tf.io.decode_image(
            data[keys.SEGMENTATION_CLASS_ENCODED], channels=1, expand_animations=False
        )
        label_shape = tf.shape(label, out_type=tf.int64)
        # Records written without height/width (0 by default) take the mask's size.
        height = tf.where(data[keys.IMAGE_HEIGHT] > 0, data[keys.IMAGE_HEIGHT], label_shape[0])
        width = tf.where(data[keys.IMAGE_WIDTH] > 0, data[keys.IMAGE_WIDTH], label_shape[1])
        checks = [
            tf.debugging.assert_equal(
                label_shape[:2],
                tf.stack([height, width]),
                message=(
                    f"{keys.SEGMENTATION_CLASS_ENCODED}: the mask size differs from "
                    f"{keys.IMAGE_HEIGHT}/{keys.IMAGE_WIDTH}"
                ),
            )
        ]
        with tf.control_dependencies(checks):
            label = tf.cast(tf.reshape(label, tf.stack([1, height, width])), tf.float32)

        inputs = [self._decode_dense(data, self._image_feature, height, width)]
        for cfg in self._additional_dense_features:
            inputs.append(self._decode_dense(data, cfg, height, width))
        image = inputs[0] if len(inputs) == 1 else tf.concat(inputs, axis=2)

        if not self._preserve_aspect_ratio:
            target = self._output_size
            image = tf.image.resize(image, target, method="bilinear")
            label = tf.image.resize(label[0][..., tf.newaxis], target, method="nearest")
            label = tf.reshape(label, [1] + target)
        return image, label

    def _finish_label(self, label: tf.Tensor, size: Sequence[int]) -> dict[str, tf.Tensor]:
        """Undoes the +1 offset, marks padding as ignore_label and builds the labels dict."""
        label -= 1
        label = tf.where(tf.equal(label, -1), tf.cast(self._ignore_label, label.dtype), label)
        label = tf.squeeze(label, axis=0)
        label.set_shape(list(size) + [1])
        return {"masks": label, "valid_masks": tf.not_equal(label, self._ignore_label)}

    def _parse_train_data(self, data) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        image, label = self._prepare_image_and_label(data)
        if self._gt_is_matting_map:
            # Matting maps must not contain ignore_label; it only marks padding here.
            label = label / 255.0

        if self._crop_size:
            label = tf.transpose(label, [1, 2, 0])
            if self._output_size:
                image = tf.image.resize(image, self._output_size, method="bilinear")
                label = tf.image.resize(label, self._output_size, method="nearest")
            image, label = preprocess_ops.random_crop_image_and_mask(
                image, label, self._crop_size, mask_pad_value=self._ignore_label
            )
            label = tf.transpose(label, [2, 0, 1])

        if self._aug_rand_hflip:
            image, _, label = preprocess_ops.random_horizontal_flip(image, masks=label)

        train_size = self._crop_size or self._output_size
        image, image_info = preprocess_ops.resize_and_crop_image(
            image,
            train_size,
            train_size,
            aug_scale_min=self._aug_scale_min,
            aug_scale_max=self._aug_scale_max,
        )
        # Shift labels by one so zero padding stays distinguishable from class 0.
        label = tf.expand_dims(label + 1, axis=3)
        label = preprocess_ops.resize_and_crop_masks(
            label, image_info[2, :], train_size, image_info[3, :]
        )
        labels = self._finish_label(label, train_size)
        labels["image_info"] = image_info
        image.set_shape(list(train_size) + [image.shape[-1]])
        return tf.cast(image, self._dtype), labels

    def _parse_eval_data(self, data) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        image, label = self._prepare_image_and_label(data)
        if self._gt_is_matting_map:
            label = tf.cast(tf.greater(label / 255.0, 0.5), tf.float32)
        label = tf.expand_dims(label + 1, axis=3)

        image, image_info = preprocess_ops.resize_and_crop_image(
            image, self._output_size, self._output_size
        )
        if self._resize_eval_groundtruth:
            # mIoU is then measured at output_size rather than the original resolution.
            label = preprocess_ops.resize_and_crop_masks(
                label, image_info[2, :], self._output_size, image_info[3, :]
            )
            label_size = self._output_size
        else:
            label_size = self._groundtruth_padded_size
            label = tf.image.pad_to_bounding_box(label, 0, 0, label_size[0], label_size[1])
        labels = self._finish_label(label, label_size)
        labels["image_info"] = image_info
        image.set_shape(list(self._output_size) + [image.shape[-1]])
        return tf.cast(image, self._dtype), labels


class SegmentationInput:
    """Batched `(image, labels)` datasets from segmentation TFRecords (the tutorial's API).

    Example:
        train_ds = SegmentationInput(
            file_pattern="data/train-*.tfrecord", is_training=True, batch_size=8,
            input_size=(512, 512)).make_dataset()
    """

    def __init__(
        self,
        file_pattern: str | Sequence[str],
        is_training: bool,
        batch_size: int,
        input_size: Sequence[int],
        ignore_label: int = 255,
        aug_rand_hflip: bool = True,
        aug_scale_min: float = 1.0,
        aug_scale_max: float = 1.0,
        crop_size: Sequence[int] | None = None,
        resize_eval_groundtruth: bool = True,
        groundtruth_padded_size: Sequence[int] | None = None,
        preserve_aspect_ratio: bool = True,
        gt_is_matting_map: bool = False,
        dtype: str = "float32",
        image_feature: Any = None,
        shuffle_buffer_size: int = 1000,
        cycle_length: int | None = None,
        drop_remainder: bool | None = None,
        compression: str | None = None,
        cache: bool = False,
        seed: int | None = None,
        repeat: bool = False,
    ):
        """Initializes the input; file patterns are matched here, so typos fail early.

        Args:
          file_pattern: TFRecord path(s) or glob(s), comma-separated or a list; local or gs://.
          is_training: shuffle and augment (flip, scale jitter, crop) when True.
          batch_size: examples per batch.
          input_size: [height, width] (a trailing channel count is ignored) of the images.
          ignore_label: class id of unlabeled and padded pixels.
          aug_rand_hflip: random left-right flips in training.
          aug_scale_min: minimum random scale of `input_size` for training.
          aug_scale_max: maximum random scale of `input_size` for training.
          crop_size: optional training crop, see `Parser`.
          resize_eval_groundtruth: see `Parser`.
          groundtruth_padded_size: see `Parser`.
          preserve_aspect_ratio: see `Parser`.
          gt_is_matting_map: see `Parser`.
          dtype: image dtype.
          image_feature: see `Decoder`.
          shuffle_buffer_size: example shuffle buffer in training.
          cycle_length: files read in parallel (None = autotune).
          drop_remainder: drop the last partial batch; defaults to `is_training`.
          compression: 'GZIP', 'ZLIB', 'NONE', or None to detect GZIP from the file contents.
          cache: cache parsed examples in memory (augmentation is then fixed per example).
          seed: shuffling seed.
          repeat: repeat forever. False by default so `model.fit(dataset, epochs=N)` sees
            finite epochs (Model Garden's trainer instead repeats when training).
        """
        size = [int(s) for s in list(input_size)[:2]]
        if len(size) != 2:
            raise ValueError(f"input_size: expected [height, width], got {input_size!r}")
        self._is_training = is_training
        self._params = types.SimpleNamespace(
            input_path=file_pattern,
            is_training=is_training,
            global_batch_size=batch_size,
            shuffle_buffer_size=shuffle_buffer_size,
            cycle_length=cycle_length,
            drop_remainder=is_training if drop_remainder is None else drop_remainder,
            compression=compression,
            cache=cache,
            seed=seed,
        )
        self._decoder = Decoder(image_feature=image_feature)
        self._parser = Parser(
            output_size=size,
            crop_size=crop_size,
            resize_eval_groundtruth=resize_eval_groundtruth,
            gt_is_matting_map=gt_is_matting_map,
            groundtruth_padded_size=groundtruth_padded_size,
            ignore_label=ignore_label,
            aug_rand_hflip=aug_rand_hflip,
            preserve_aspect_ratio=preserve_aspect_ratio,
            aug_scale_min=aug_scale_min,
            aug_scale_max=aug_scale_max,
            dtype=dtype,
            image_feature=image_feature,
        )
        self._reader = input_reader.InputReader(
            self._params,
            decoder_fn=self._decoder.decode,
            parser_fn=self._parser.parse_fn(is_training),
            repeat=repeat,
        )

    @property
    def files(self) -> list[str]:
        """The TFRecord files matched by `file_pattern`."""
        return self._reader.files

    def make_dataset(
        self, input_context: tf.distribute.InputContext | None = None
    ) -> tf.data.Dataset:
        """Returns the batched, prefetched dataset of `(image, labels)` pairs."""
        return self._reader.read(input_context=input_context)

    def __call__(self, input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
        return self.make_dataset(input_context)

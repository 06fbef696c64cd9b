"""Test-wide settings: quiet TensorFlow, tf-keras as tf.keras, fixed seeds."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


import numpy as np  # noqa: E402
import pytest  # noqa: E402


def _write_square_records(path, n=8, size=32, seed=0):
    """Segmentation TFRecords: noisy images with one bright square, labelled class 1."""
    import tensorflow as tf

    from vision_core.dataloaders import tf_example_keys as keys

    def feature(value):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    rng = np.random.default_rng(seed)
    with tf.io.TFRecordWriter(path) as writer:
        for _ in range(n):
            image = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
            mask = np.zeros((size, size, 1), np.uint8)
            y, x = rng.integers(0, size // 2, 2)
            image[y : y + size // 2, x : x + size // 2] = 220
            mask[y : y + size // 2, x : x + size // 2] = 1
            example = tf.train.Example(
                features=tf.train.Features(
                    feature={
                        keys.IMAGE_ENCODED: feature(tf.io.encode_png(image).numpy()),
                        keys.IMAGE_FORMAT: feature(b"png"),
                        keys.SEGMENTATION_CLASS_ENCODED: feature(tf.io.encode_png(mask).numpy()),
                    }
                )
            )
            writer.write(example.SerializeToString())


@pytest.fixture(scope="session")
def square_records():
    """A function writing small square-segmentation TFRecords to a path."""
    return _write_square_records

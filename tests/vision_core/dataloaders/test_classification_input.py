"""Classification Decoder/Parser: crops, flips, resizing, normalization, labels, errors."""

import numpy as np
import pytest
import tensorflow as tf

from vision_core.dataloaders import classification_input as ci
from vision_core.dataloaders import tf_example_keys as keys
from vision_core.ops import preprocess_ops

MEAN = np.array(preprocess_ops.MEAN_RGB, np.float32)
STD = np.array(preprocess_ops.STDDEV_RGB, np.float32)


def _example(image_bytes, label=None):
    feature = {
        keys.IMAGE_ENCODED: tf.train.Feature(bytes_list=tf.train.BytesList(value=[image_bytes]))
    }
    if label is not None:
        feature[keys.IMAGE_CLASS_LABEL] = tf.train.Feature(
            int64_list=tf.train.Int64List(value=[label])
        )
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _image(height=40, width=48, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _decoded(image_bytes, label=1):
    return ci.Decoder().decode(tf.constant(_example(image_bytes, label)))


def test_decoder_reads_image_and_label_and_marks_missing_labels():
    png = tf.io.encode_png(_image()).numpy()
    decoded = _decoded(png, 2)
    assert decoded[keys.IMAGE_ENCODED].numpy() == png
    assert int(decoded[keys.IMAGE_CLASS_LABEL]) == 2
    unlabeled = ci.Decoder().decode(tf.constant(_example(png)))
    assert int(unlabeled[keys.IMAGE_CLASS_LABEL]) == -1


def test_eval_without_crop_is_resize_then_normalize():
    image = _image(32, 32)
    parser = ci.Parser([16, 16], num_classes=3, aug_crop=False)
    out, label = parser.parse_fn(is_training=False)(_decoded(tf.io.encode_png(image).numpy()))
    expected = tf.image.resize(image.astype(np.float32), [16, 16]).numpy()
    expected = (expected - MEAN) / STD
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-4)
    assert out.dtype == tf.float32 and int(label) == 1 and label.dtype == tf.int32


def test_center_crop_window_by_hand():
    # 40x48 image, fraction 0.875: side = 0.875 * 40 = 35; offsets (40-35)/2 = 2.5 -> 2 and
    # (48-35)/2 = 6.5 -> 6 (truncated, as Model Garden does).
    offset, size = preprocess_ops.center_crop_window(tf.constant([40, 48, 3]), 0.875)
    assert offset.numpy().tolist() == [2, 6] and size.numpy().tolist() == [35, 35]
    image = _image()
    crop = preprocess_ops.center_crop_image(tf.constant(image))
    np.testing.assert_array_equal(crop.numpy(), image[2:37, 6:41])


def test_eval_center_crop_same_for_jpeg_fast_path_and_full_decode():
    image = _image()
    jpeg = tf.io.encode_jpeg(image, quality=95).numpy()
    fast = ci.Parser([24, 24], num_classes=3, decode_jpeg_only=True)
    full = ci.Parser([24, 24], num_classes=3, decode_jpeg_only=False)
    a, _ = fast.parse_fn(False)(_decoded(jpeg))
    b, _ = full.parse_fn(False)(_decoded(jpeg))
    # Decoding only the window of a JPEG gives the same pixels as decoding all and cropping.
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-4)
    decoded = tf.io.decode_jpeg(jpeg).numpy()[2:37, 6:41].astype(np.float32)
    expected = (tf.image.resize(decoded, [24, 24]).numpy() - MEAN) / STD
    np.testing.assert_allclose(b.numpy(), expected, rtol=1e-5, atol=1e-4)


def test_training_output_shape_dtype_and_randomness():
    tf.random.set_seed(0)
    png = tf.io.encode_png(_image(64, 80)).numpy()
    parser = ci.Parser([32, 32], num_classes=3, dtype="bfloat16", crop_area_range=(0.2, 0.6))
    parse = parser.parse_fn(is_training=True)
    outs = [parse(_decoded(png))[0] for _ in range(4)]
    assert all(o.shape == (32, 32, 3) and o.dtype == tf.bfloat16 for o in outs)
    # Random crops differ from draw to draw.
    assert any(not np.array_equal(outs[0].numpy(), o.numpy()) for o in outs[1:])


def test_training_flip_only_mirrors_the_image():
    tf.random.set_seed(1)
    image = _image(16, 16)
    png = tf.io.encode_png(image).numpy()
    parser = ci.Parser([16, 16], num_classes=3, aug_crop=False, aug_rand_hflip=True)
    plain = (image.astype(np.float32) - MEAN) / STD
    seen = set()
    for _ in range(12):
        out = parser.parse_fn(True)(_decoded(png))[0].numpy()
        if np.allclose(out, plain, atol=1e-4):
            seen.add("same")
        elif np.allclose(out, plain[:, ::-1], atol=1e-4):
            seen.add("flipped")
        else:
            raise AssertionError("a training image without crop is the image or its mirror")
    assert seen == {"same", "flipped"}


def test_labels_outside_the_classes_are_rejected():
    png = tf.io.encode_png(_image(8, 8)).numpy()
    parser = ci.Parser([8, 8], num_classes=3, aug_crop=False)
    for label in (3, -1):
        with pytest.raises(tf.errors.InvalidArgumentError, match="image/class/label"):
            parser.parse_fn(False)(_decoded(png, label))


def test_inference_fn_is_model_gardens_serving_preprocessing():
    image = _image()
    out = ci.Parser.inference_fn(tf.constant(image), [24, 24])
    crop = image[2:37, 6:41].astype(np.float32)
    expected = (tf.image.resize(crop, [24, 24]).numpy() - MEAN) / STD
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"output_size": [16]}, "output_size"),
        ({"num_classes": 0}, "num_classes"),
        ({"dtype": "int8"}, "dtype"),
        ({"tf_resize_method": "cubic"}, "tf_resize_method"),
        ({"crop_area_range": (0.5, 0.2)}, "crop_area_range"),
        ({"center_crop_fraction": 1.5}, "center_crop_fraction"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, name):
    args = {"output_size": [16, 16], "num_classes": 3, **kwargs}
    with pytest.raises(ValueError, match=name):
        ci.Parser(**args)

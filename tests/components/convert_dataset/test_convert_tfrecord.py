"""Our TensorFlow-free Example messages and TFRecord files against TensorFlow's own."""

import gzip

import numpy as np
import pytest
import tensorflow as tf

from components.convert_dataset import examples, tfrecord

FEATURES = {
    "image/encoded": b"\x89PNG\r\n\x1a\n bytes",
    "image/source_id": "2007_000123",
    "image/height": 48,
    "image/object/bbox/xmin": [0.0, 0.25, 1.0],
    "image/object/class/label": np.array([3, 1, 20]),
    "image/object/class/text": ["cat", "dog", "tvmonitor"],
    "image/object/is_crowd": [False, True, False],
    "image/object/mask": examples.bytes_feature([]),
    "image/object/area": [-1.5e-3, 2.0**40, 3.25],
}


def _tensorflow_example(features):
    def feature(value):
        if isinstance(value, tfrecord.Feature):
            return tf.train.Feature.FromString(value.SerializeToString())
        values = value.tolist() if isinstance(value, np.ndarray) else value
        values = values if isinstance(values, list) else [values]
        if isinstance(values[0], bytes | str):
            encoded = [v.encode() if isinstance(v, str) else v for v in values]
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=encoded))
        if isinstance(values[0], bool | int):
            return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))

    return tf.train.Example(
        features=tf.train.Features(feature={k: feature(v) for k, v in features.items()})
    )


def test_serialized_examples_equal_tensorflows_bytes():
    ours = examples.serialize(examples.build_example(FEATURES))
    theirs = _tensorflow_example(FEATURES).SerializeToString(deterministic=True)
    assert ours == theirs
    # And TensorFlow's own Feature objects are accepted as values.
    mixed = dict(FEATURES, **{"image/height": tf.train.Feature(
        int64_list=tf.train.Int64List(value=[48])
    )})  # fmt: skip
    assert examples.serialize(examples.build_example(mixed)) == ours
    # The messages live in a private pool: TensorFlow's, loaded in this process, is untouched.
    assert tfrecord.Example is not tf.train.Example
    assert tf.train.Example.FromString(ours).features.feature["image/height"].int64_list.value == [
        48
    ]


@pytest.mark.parametrize("compression", [None, "GZIP"])
def test_tfrecord_files_read_back_with_tensorflow(tmp_path, compression):
    records = [
        b"",
        b"a",
        bytes(range(256)) * 300,
        examples.serialize(examples.build_example(FEATURES)),
    ]
    path = tmp_path / "x.tfrecord"
    with tfrecord.TFRecordWriter(path, compression) as writer:
        for record in records:
            writer.write(record)
    dataset = tf.data.TFRecordDataset(str(path), compression or "")
    assert [r.numpy() for r in dataset] == records
    assert list(tfrecord.read_records(path, compression)) == records
    parsed = tf.io.parse_single_example(
        records[-1], {"image/object/class/label": tf.io.VarLenFeature(tf.int64)}
    )
    assert tf.sparse.to_dense(parsed["image/object/class/label"]).numpy().tolist() == [3, 1, 20]

    # TensorFlow's writer frames records the same way (byte for byte without compression).
    theirs = tmp_path / "theirs.tfrecord"
    with tf.io.TFRecordWriter(str(theirs), options=compression or "") as writer:
        for record in records:
            writer.write(record)
    if compression is None:
        assert path.read_bytes() == theirs.read_bytes()
    else:
        assert gzip.decompress(path.read_bytes()) == gzip.decompress(theirs.read_bytes())
    # The same input gives the same file (no timestamp in the gzip header).
    again = tmp_path / "again.tfrecord"
    with tfrecord.TFRecordWriter(again, compression) as writer:
        for record in records:
            writer.write(record)
    assert again.read_bytes() == path.read_bytes()


def test_damaged_files_are_detected(tmp_path):
    path = tmp_path / "x.tfrecord"
    with tfrecord.TFRecordWriter(path) as writer:
        writer.write(b"hello world")
    data = bytearray(path.read_bytes())
    data[14] ^= 1
    (tmp_path / "bad").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="data checksum"):
        list(tfrecord.read_records(tmp_path / "bad"))
    (tmp_path / "short").write_bytes(bytes(data[:-2]))
    with pytest.raises(ValueError, match="truncated"):
        list(tfrecord.read_records(tmp_path / "short"))
    with pytest.raises(ValueError, match="compression"):
        tfrecord.TFRecordWriter(tmp_path / "z", "ZLIB")

"""Tests for vision_core.dataloaders.input_reader."""

import os
import types

import pytest
import tensorflow as tf

from vision_core.dataloaders import input_reader


def _write(path, values, gzip=False):
    options = tf.io.TFRecordOptions(compression_type="GZIP" if gzip else "")
    with tf.io.TFRecordWriter(path, options=options) as writer:
        for v in values:
            writer.write(str(v).encode())


def _params(input_path, **overrides):
    base = dict(
        input_path=input_path,
        global_batch_size=1,
        is_training=False,
        shuffle_buffer_size=100,
        cycle_length=None,
        drop_remainder=False,
        compression=None,
        cache=False,
        seed=None,
    )
    base.update(overrides)
    return types.SimpleNamespace(**base)


def _values(dataset):
    return sorted(int(x) for batch in dataset for x in batch.numpy())


def test_pattern_without_files_raises_error_naming_the_pattern(tmp_path):
    pattern = str(tmp_path / "train-*.tfrecord")
    with pytest.raises(FileNotFoundError, match="train-\\*.tfrecord"):
        input_reader.InputReader(_params(pattern))
    # Model Garden raises ValueError; both except clauses catch it.
    with pytest.raises(ValueError, match="does not match any files"):
        input_reader.match_files(pattern)


def test_missing_plain_path_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.tfrecord"):
        input_reader.match_files(str(tmp_path / "missing.tfrecord"))


def test_match_files_accepts_commas_and_lists(tmp_path):
    for name in ("a-0", "a-1", "b-0"):
        _write(str(tmp_path / name), [1])
    a = str(tmp_path / "a-*")
    b = str(tmp_path / "b-0")
    expected = [str(tmp_path / n) for n in ("a-0", "a-1", "b-0")]
    assert input_reader.match_files(f"{a}, {b}") == expected
    assert input_reader.match_files([a, b]) == expected
    with pytest.raises(ValueError, match="input_path"):
        input_reader.match_files(3)


def test_gzip_is_detected_per_file_and_read(tmp_path):
    _write(str(tmp_path / "plain.tfrecord"), range(0, 3))
    _write(str(tmp_path / "packed.tfrecord"), range(3, 7), gzip=True)
    assert input_reader.detect_compression(str(tmp_path / "packed.tfrecord")) == "GZIP"
    assert input_reader.detect_compression(str(tmp_path / "plain.tfrecord")) == ""
    reader = input_reader.InputReader(_params(str(tmp_path / "*.tfrecord")), decoder_fn=None)
    assert _values(reader.read()) == list(range(7))


def test_explicit_compression_and_file_type(tmp_path):
    path = str(tmp_path / "packed.tfrecord")
    _write(path, range(4), gzip=True)
    assert _values(input_reader.InputReader(_params(path, compression="GZIP")).read()) == [
        0,
        1,
        2,
        3,
    ]
    reader = input_reader.InputReader(_params(path, file_type="tfrecord_compressed"))
    assert _values(reader.read()) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="compression"):
        input_reader.InputReader(_params(path, compression="LZ4"))


def test_training_shuffles_with_seed_repeats_and_drops_remainder(tmp_path):
    for i in range(3):
        _write(str(tmp_path / f"shard-{i}"), range(10 * i, 10 * i + 10))
    params = _params(
        str(tmp_path / "shard-*"),
        is_training=True,
        global_batch_size=4,
        drop_remainder=True,
        seed=5,
    )

    def first_batches(n):
        ds = input_reader.InputReader(params).read()
        return [b.numpy().tolist() for b in ds.take(n)]

    run1, run2 = first_batches(12), first_batches(12)
    assert run1 == run2  # same seed, same order
    flat = [int(v) for b in run1 for v in b]
    assert len(flat) == 48  # more than the 30 records: the data repeats
    assert all(len(b) == 4 for b in run1)
    assert sorted(flat[:30]) != flat[:30]  # shuffled
    assert set(flat) <= set(range(30))


def test_eval_reads_once_in_order_with_partial_batch(tmp_path):
    _write(str(tmp_path / "eval"), range(5))
    reader = input_reader.InputReader(_params(str(tmp_path / "eval"), global_batch_size=2))
    batches = [b.numpy().tolist() for b in reader.read()]
    assert batches == [[b"0", b"1"], [b"2", b"3"], [b"4"]]


def test_repeat_override_gives_finite_training_data(tmp_path):
    _write(str(tmp_path / "t"), range(5))
    params = _params(str(tmp_path / "t"), is_training=True, global_batch_size=2, seed=1)
    reader = input_reader.InputReader(params, repeat=False)
    assert _values(reader.read()) == [0, 1, 2, 3, 4]


def test_cache_with_decoder_and_parser(tmp_path):
    _write(str(tmp_path / "t"), range(4))
    params = _params(str(tmp_path / "t"), cache=True, global_batch_size=4)
    reader = input_reader.InputReader(
        params,
        decoder_fn=lambda s: tf.strings.to_number(s, tf.int32),
        parser_fn=lambda x: x * 10,
    )
    ds = reader.read()
    assert [b.numpy().tolist() for b in ds] == [[0, 10, 20, 30]]
    assert [b.numpy().tolist() for b in ds] == [[0, 10, 20, 30]]


def test_batch_size_must_be_positive(tmp_path):
    _write(str(tmp_path / "t"), range(1))
    with pytest.raises(ValueError, match="global_batch_size"):
        input_reader.InputReader(_params(str(tmp_path / "t"), global_batch_size=0))


def test_input_context_shards_files(tmp_path):
    for i in range(4):
        _write(str(tmp_path / f"s-{i}"), [i])
    seen = []
    for pipeline in range(2):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline)
        reader = input_reader.InputReader(_params(str(tmp_path / "s-*")))
        seen.append(_values(reader.read(input_context=ctx)))
    assert seen == [[0, 2], [1, 3]]
    assert os.path.basename(reader.files[0]) == "s-0"

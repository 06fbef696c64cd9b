"""The Beam conversion: shard layout, exact round trip, determinism, bad input, strict, gzip."""

import hashlib
import io
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from components.convert_dataset import errors, pipeline, shapes
from vision_core.dataloaders import tf_example_keys as keys

NUM_TRAIN, NUM_VALIDATION = 8, 4

FEATURES = {
    keys.IMAGE_ENCODED: tf.io.FixedLenFeature([], tf.string),
    keys.IMAGE_FORMAT: tf.io.FixedLenFeature([], tf.string),
    keys.IMAGE_SOURCE_ID: tf.io.FixedLenFeature([], tf.string),
    keys.IMAGE_HEIGHT: tf.io.FixedLenFeature([], tf.int64),
    keys.IMAGE_WIDTH: tf.io.FixedLenFeature([], tf.int64),
    keys.IMAGE_FILENAME: tf.io.FixedLenFeature([], tf.string),
    keys.IMAGE_KEY_SHA256: tf.io.FixedLenFeature([], tf.string),
    keys.SEGMENTATION_CLASS_ENCODED: tf.io.FixedLenFeature([], tf.string),
    keys.SEGMENTATION_CLASS_FORMAT: tf.io.FixedLenFeature([], tf.string),
}


def _read_records(path, compression=None):
    dataset = tf.data.TFRecordDataset(path, compression_type=compression or "")
    return [r.numpy() for r in dataset]


def _parse(serialized):
    parsed = tf.io.parse_single_example(serialized, FEATURES)
    return {k: v.numpy() for k, v in parsed.items()}


def _tfrecords(path):
    return sorted(n for n in os.listdir(path) if ".tfrecord" in n)


def _bytes(path):
    with open(path, "rb") as f:
        return f.read()


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    shapes.generate_shapes_dataset(
        str(root), num_train=NUM_TRAIN, num_validation=NUM_VALIDATION, image_size=(64, 64), seed=3
    )
    return root


@pytest.fixture(scope="module")
def converted(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("tfrecords")
    summary = pipeline.run(str(source), str(out), overwrite=True)
    return out, summary


def test_shard_names_and_counts(converted):
    out, summary = converted
    expected = [f"{s}-{i:05d}-of-00004.tfrecord" for s in ("train", "validation") for i in range(4)]
    assert _tfrecords(out) == sorted(expected)
    others = ["bad_records.jsonl", "summary.json", "report.json", "report.md", "examples.png"]
    assert sorted(os.listdir(out)) == sorted([*expected, *others])
    assert json.loads((out / "summary.json").read_text()) == summary
    assert summary["records"] == NUM_TRAIN + NUM_VALIDATION
    assert summary["bad_records"] == 0
    assert summary["splits"]["train"]["records_per_shard"] == [2, 2, 2, 2]
    assert summary["splits"]["validation"]["records_per_shard"] == [1, 1, 1, 1]
    assert (out / "bad_records.jsonl").read_text() == ""


def test_records_round_trip_pixels_exactly(converted, source):
    out, _ = converted
    seen = []
    for split in ("train", "validation"):
        for name in sorted(n for n in _tfrecords(out) if n.startswith(split)):
            shard = int(name.split("-")[1])
            ids = []
            for serialized in _read_records(str(out / name)):
                ex = _parse(serialized)
                stem = ex[keys.IMAGE_SOURCE_ID].decode()
                ids.append(stem)
                file_name = stem + ".png"
                assert ex[keys.IMAGE_FILENAME].decode() == file_name
                assert ex[keys.IMAGE_FORMAT] == b"png"
                assert ex[keys.SEGMENTATION_CLASS_FORMAT] == b"png"
                assert (ex[keys.IMAGE_HEIGHT], ex[keys.IMAGE_WIDTH]) == (64, 64)
                encoded = ex[keys.IMAGE_ENCODED]
                assert ex[keys.IMAGE_KEY_SHA256].decode() == hashlib.sha256(encoded).hexdigest()
                image = tf.io.decode_image(encoded, channels=3).numpy()
                mask = tf.io.decode_image(ex[keys.SEGMENTATION_CLASS_ENCODED], channels=1).numpy()
                source_image = np.asarray(Image.open(source / "images" / split / file_name))
                source_mask = np.asarray(Image.open(source / "masks" / split / file_name))
                np.testing.assert_array_equal(image, source_image)
                np.testing.assert_array_equal(mask[..., 0], source_mask)
                # Shards hold records in key order, assigned by sorted index modulo 4.
                assert int(stem.split("_")[1]) % 4 == shard
            assert ids == sorted(ids)
            seen.extend(f"{split}/{i}" for i in ids)
    assert len(seen) == len(set(seen)) == NUM_TRAIN + NUM_VALIDATION


def test_summary_histogram_and_fingerprint_match_the_data(converted, source):
    out, summary = converted
    all_lines = []
    for split, count in (("train", NUM_TRAIN), ("validation", NUM_VALIDATION)):
        counts = np.zeros(256, dtype=np.int64)
        for i in range(count):
            mask = np.asarray(Image.open(source / "masks" / split / f"shapes_{i:06d}.png"))
            counts += np.bincount(mask.ravel(), minlength=256)
        expected = {str(c): int(n) for c, n in enumerate(counts) if n}
        assert summary["splits"][split]["class_pixel_histogram"] == expected

        lines = []
        for name in _tfrecords(out):
            if name.startswith(split + "-"):
                for serialized in _read_records(str(out / name)):
                    key = _parse(serialized)[keys.IMAGE_SOURCE_ID].decode()
                    lines.append(f"{key}\t{hashlib.sha256(serialized).hexdigest()}")
        digest = hashlib.sha256("".join(f"{line}\n" for line in sorted(lines)).encode())
        assert summary["splits"][split]["fingerprint"] == digest.hexdigest()
        all_lines.extend(f"{split}/{line}" for line in lines)
    digest = hashlib.sha256("".join(f"{line}\n" for line in sorted(all_lines)).encode())
    assert summary["fingerprint"] == digest.hexdigest()


def _assert_same_outputs(a, b):
    assert _tfrecords(a) == _tfrecords(b)
    for name in [*_tfrecords(a), "bad_records.jsonl", "report.json", "examples.png"]:
        assert _bytes(a / name) == _bytes(b / name), name


def test_second_run_is_byte_identical(converted, source, tmp_path):
    out, summary = converted
    again = pipeline.run(
        str(source),
        str(tmp_path),
        overwrite=True,
        beam_args=["--direct_running_mode=multi_threading", "--direct_num_workers=2"],
    )
    _assert_same_outputs(out, tmp_path)
    assert again["fingerprint"] == summary["fingerprint"]


@pytest.mark.slow
def test_multi_processing_gives_the_same_bytes(converted, source, tmp_path):
    out, _ = converted
    states = []
    pipeline.run(
        str(source),
        str(tmp_path / "mp"),
        direct_running_mode="multi_processing",
        direct_num_workers=2,
        progress=states.append,
    )
    _assert_same_outputs(out, tmp_path / "mp")
    # Workers in other processes count the progress too.
    final = states[-1]
    assert final.final and (final.done, final.bad) == (NUM_TRAIN + NUM_VALIDATION, 0)


def _png(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def messy_source(source, tmp_path_factory):
    """The shapes dataset plus one file for each kind of problem, and two unusual good ones."""
    root = tmp_path_factory.mktemp("messy")
    shutil.copytree(source / "images", root / "images")
    shutil.copytree(source / "masks", root / "masks")
    images, masks = root / "images/train", root / "masks/train"
    good_image = _bytes(images / "shapes_000000.png")
    good_mask = _bytes(masks / "shapes_000000.png")
    rng = np.random.default_rng(0)

    (images / "junk.png").write_bytes(rng.bytes(500))
    (masks / "junk.png").write_bytes(good_mask)
    (images / "cut.png").write_bytes(good_image[: len(good_image) // 2])
    (masks / "cut.png").write_bytes(good_mask)
    (images / "nomask.png").write_bytes(good_image)
    (images / "small.png").write_bytes(good_image)
    (masks / "small.png").write_bytes(_png(np.zeros((32, 32), np.uint8)))
    (images / "rgbmask.png").write_bytes(good_image)
    (masks / "rgbmask.png").write_bytes(_png(np.zeros((64, 64, 3), np.uint8)))
    (masks / "orphan.png").write_bytes(good_mask)
    (images / "twice.png").write_bytes(good_image)
    (images / "twice.jpg").write_bytes(good_image)
    (masks / "twice.png").write_bytes(good_mask)

    # Good: a JPEG image (kept byte for byte) and a palette mask (indices are the class ids).
    photo = np.asarray(Image.open(images / "shapes_000001.png"))
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, format="JPEG", quality=90)
    (images / "photo.jpg").write_bytes(buffer.getvalue())
    palette_mask = Image.fromarray(np.full((64, 64), 2, np.uint8)).convert("P")
    palette_mask.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    palette_mask.save(masks / "photo.png")
    return root


EXPECTED_BAD = {
    "junk": ("image_corrupt", "images/train/junk.png"),
    "cut": ("image_truncated", "images/train/cut.png"),
    "nomask": ("mask_missing", "masks/train/nomask.png"),
    "small": ("mask_size_mismatch", "masks/train/small.png"),
    "rgbmask": ("mask_not_single_channel", "masks/train/rgbmask.png"),
    "twice": ("duplicate_stem", "images/train/twice.jpg"),
}


def test_bad_records_are_reported_and_the_rest_converted(messy_source, tmp_path):
    summary = pipeline.run(str(messy_source), str(tmp_path / "out"))
    out = tmp_path / "out"
    bad = [json.loads(line) for line in (out / "bad_records.jsonl").read_text().splitlines()]
    assert {b["record_id"]: (b["reason"], b["path"]) for b in bad} == {
        k: (reason, str(messy_source / path)) for k, (reason, path) in EXPECTED_BAD.items()
    }
    assert all(b["split"] == "train" and b["detail"] for b in bad)

    train = summary["splits"]["train"]
    assert train["records"] == NUM_TRAIN + 1  # + photo.jpg
    assert train["bad_records"] == 6
    assert train["bad_records_by_reason"] == {r: 1 for r, _ in EXPECTED_BAD.values()}
    assert train["masks_without_image"] == 1
    assert summary["splits"]["validation"]["bad_records"] == 0
    assert summary["bad_records"] == 6

    records = {}
    for name in _tfrecords(out):
        if name.startswith("train"):
            for serialized in _read_records(str(out / name)):
                ex = _parse(serialized)
                records[ex[keys.IMAGE_SOURCE_ID].decode()] = ex
    assert set(records) == {f"shapes_{i:06d}" for i in range(NUM_TRAIN)} | {"photo"}
    photo = records["photo"]
    assert photo[keys.IMAGE_FORMAT] == b"jpeg"
    assert photo[keys.IMAGE_ENCODED] == _bytes(messy_source / "images/train/photo.jpg")
    mask = tf.io.decode_png(photo[keys.SEGMENTATION_CLASS_ENCODED], channels=1).numpy()
    assert (mask == 2).all()


def test_strict_mode_fails_and_writes_nothing(messy_source, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(errors.ConversionError, match="strict mode: 6 bad record") as info:
        pipeline.run(str(messy_source), str(out), strict=True)
    message = str(info.value)
    for record_id, (reason, _) in EXPECTED_BAD.items():
        assert f"train/{record_id}: {reason}" in message
    assert not out.exists() or os.listdir(out) == []


def test_gzip_output_is_readable(converted, source, tmp_path):
    _, plain = converted
    summary = pipeline.run(str(source), str(tmp_path), compression="gzip", num_shards=2)
    names = _tfrecords(tmp_path)
    assert names == [
        "train-00000-of-00002.tfrecord.gz",
        "train-00001-of-00002.tfrecord.gz",
        "validation-00000-of-00002.tfrecord.gz",
        "validation-00001-of-00002.tfrecord.gz",
    ]
    assert _bytes(tmp_path / names[0])[:2] == b"\x1f\x8b"  # gzip magic
    records = _read_records([str(tmp_path / n) for n in names[:2]], "GZIP")
    assert len(records) == NUM_TRAIN
    assert all(_parse(r)[keys.IMAGE_HEIGHT] == 64 for r in records)
    assert summary["compression"] == "gzip"
    # Same examples, other sharding: the per-split fingerprints do not depend on the layout.
    assert summary["splits"]["train"]["fingerprint"] == plain["splits"]["train"]["fingerprint"]


def test_refuses_non_empty_output_unless_overwrite(source, tmp_path):
    out = tmp_path / "out"
    pipeline.run(str(source), str(out), num_shards=4)
    with pytest.raises(errors.ConversionError, match="not empty"):
        pipeline.run(str(source), str(out), num_shards=2)
    pipeline.run(str(source), str(out), num_shards=2, overwrite=True)
    assert _tfrecords(out) == [
        "train-00000-of-00002.tfrecord",
        "train-00001-of-00002.tfrecord",
        "validation-00000-of-00002.tfrecord",
        "validation-00001-of-00002.tfrecord",
    ]
    assert json.loads((out / "summary.json").read_text())["num_shards"] == 2


def test_shapes_source_generates_then_converts(tmp_path):
    summary = pipeline.run(
        None,
        str(tmp_path),
        source="shapes",
        num_shards=1,
        shapes_options={"num_train": 3, "num_validation": 2, "image_size": (32, 48), "seed": 5},
    )
    assert summary["splits"]["train"]["records"] == 3
    assert summary["splits"]["validation"]["records"] == 2
    assert summary["source"] == "shapes"
    assert summary["source_info"]["seed"] == 5
    record = _parse(_read_records(str(tmp_path / "train-00000-of-00001.tfrecord"))[0])
    assert (record[keys.IMAGE_HEIGHT], record[keys.IMAGE_WIDTH]) == (32, 48)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"source_dir": "/nonexistent/data"}, "source folder /nonexistent/data does not exist"),
        ({"splits": ("train", "test")}, "split 'test': image folder .*images/test does not"),
        ({"num_shards": 0}, "num_shards must be >= 1"),
        ({"compression": "zip"}, "compression must be None or 'gzip'"),
        ({"direct_running_mode": "fast"}, "direct_running_mode must be one of"),
    ],
)
def test_bad_options_name_the_problem(source, tmp_path, kwargs, match):
    args = {"source_dir": str(source), "output_dir": str(tmp_path / "out"), **kwargs}
    with pytest.raises(errors.ConversionError, match=match):
        pipeline.run(**args)
    assert not (tmp_path / "out").exists() or _tfrecords(tmp_path / "out") == []


def test_runner_is_always_explicit():
    runner, options = pipeline._pipeline_runner_and_options([], "in_memory", 1)
    # Not a runner name Beam would resolve itself (its DirectRunner probes for Prism first).
    assert type(runner).__name__ == "FnApiRunner"
    assert options.get_all_options()["direct_running_mode"] == "in_memory"

    runner, options = pipeline._pipeline_runner_and_options(
        ["--runner=DataflowRunner", "--project=p", "--region=r", "--num_workers=3"],
        "in_memory",
        1,
    )
    assert runner == "DataflowRunner"
    all_options = options.get_all_options()
    assert (all_options["project"], all_options["region"], all_options["num_workers"]) == (
        "p",
        "r",
        3,
    )

    _, options = pipeline._pipeline_runner_and_options(
        ["--direct_running_mode=multi_processing", "--direct_num_workers=2"], "in_memory", 1
    )
    all_options = options.get_all_options()
    assert all_options["direct_running_mode"] == "multi_processing"
    assert all_options["direct_num_workers"] == 2

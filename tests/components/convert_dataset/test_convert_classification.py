"""Conversion for classification: shapes labelled by dominant shape, ImageNet-style folders."""

import io
import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from components.convert_dataset import __main__ as cli
from components.convert_dataset import errors, pipeline, shapes
from vision_core.dataloaders import tf_example_keys as keys

FEATURES = {
    keys.IMAGE_ENCODED: tf.io.FixedLenFeature([], tf.string),
    keys.IMAGE_SOURCE_ID: tf.io.FixedLenFeature([], tf.string),
    keys.IMAGE_CLASS_LABEL: tf.io.FixedLenFeature([], tf.int64),
    keys.IMAGE_CLASS_TEXT: tf.io.FixedLenFeature([], tf.string),
}


def _records(output_dir, split):
    files = sorted(str(p) for p in output_dir.glob(f"{split}-*.tfrecord"))
    parsed = []
    for record in tf.data.TFRecordDataset(files):
        example = tf.io.parse_single_example(record, FEATURES)
        parsed.append({k: v.numpy() for k, v in example.items()})
    return parsed


def _png(colour, size=(12, 10)):
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_dominant_class_by_hand():
    mask = np.zeros((4, 4), np.uint8)
    assert shapes.dominant_class(mask) is None
    mask[0, :3] = shapes.CIRCLE  # 3 circle pixels
    mask[1, :2] = shapes.TRIANGLE  # 2 triangle pixels
    assert shapes.dominant_class(mask) == 0  # circle -> CLASSIFICATION_CLASSES[0]
    mask[2, :] = shapes.TRIANGLE  # now 6 triangle pixels
    assert shapes.CLASSIFICATION_CLASSES[shapes.dominant_class(mask)] == "triangle"
    mask[3, :3] = shapes.SQUARE  # a 3-3 tie with the circle goes to the lower id
    mask[2, :] = 0
    assert shapes.dominant_class(mask) == 0


def test_shapes_classification_labels_each_image_by_its_mask(tmp_path):
    source = tmp_path / "shapes"
    summary = pipeline.run(
        str(source),
        str(tmp_path / "out"),
        num_shards=2,
        source="shapes",
        task="classification",
        shapes_options={"num_train": 6, "num_validation": 3, "image_size": (32, 32), "seed": 4},
    )
    assert summary["task"] == "classification"
    assert summary["class_names"] == ["circle", "square", "triangle"]
    for split, count in (("train", 6), ("validation", 3)):
        records = _records(tmp_path / "out", split)
        assert len(records) == count
        histogram = {}
        for record in records:
            stem = record[keys.IMAGE_SOURCE_ID].decode()
            mask = np.asarray(Image.open(source / "masks" / split / f"{stem}.png"))
            label = int(record[keys.IMAGE_CLASS_LABEL])
            assert label == shapes.dominant_class(mask)
            assert record[keys.IMAGE_CLASS_TEXT].decode() == summary["class_names"][label]
            histogram[str(label)] = histogram.get(str(label), 0) + 1
        assert summary["splits"][split]["class_histogram"] == dict(sorted(histogram.items()))


@pytest.fixture()
def class_folders(tmp_path):
    root = tmp_path / "folders"
    layout = {
        "train": {"cat": ["a.png", "b.jpg"], "dog": ["a.png"], "zebra": []},
        "validation": {"dog": ["c.png"], "cat": ["d.png"]},
    }
    for split, classes in layout.items():
        for name, files in classes.items():
            (root / split / name).mkdir(parents=True)
            for file in files:
                colour = {"cat": (200, 0, 0), "dog": (0, 200, 0)}[name]
                if file.endswith(".jpg"):
                    buffer = io.BytesIO()
                    Image.new("RGB", (9, 7), colour).save(buffer, format="JPEG")
                    data = buffer.getvalue()
                else:
                    data = _png(colour)
                (root / split / name / file).write_bytes(data)
    (root / "train" / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (root / "train" / "dog" / "notes.txt").write_text("not an image")
    (root / "train" / "loose.png").write_bytes(_png((1, 2, 3)))
    return root


def test_class_folders_ids_are_sorted_folder_names(class_folders, tmp_path):
    out = tmp_path / "out"
    summary = pipeline.run(str(class_folders), str(out), num_shards=1, task="classification")
    # zebra has no images but still gets an id, so ids do not depend on which files exist.
    assert summary["class_names"] == ["cat", "dog", "zebra"]
    train = summary["splits"]["train"]
    assert train["records"] == 3
    assert train["class_histogram"] == {"0": 2, "1": 1}
    assert train["images_outside_class_folders"] == 1
    assert train["bad_records_by_reason"] == {errors.IMAGE_CORRUPT: 1}
    bad = [json.loads(line) for line in (out / "bad_records.jsonl").read_text().splitlines()]
    assert [b["record_id"] for b in bad] == ["dog/broken.png"]
    records = {r[keys.IMAGE_SOURCE_ID].decode(): r for r in _records(out, "train")}
    assert sorted(records) == ["cat/a.png", "cat/b.jpg", "dog/a.png"]
    assert int(records["dog/a.png"][keys.IMAGE_CLASS_LABEL]) == 1
    assert records["cat/b.jpg"][keys.IMAGE_CLASS_TEXT] == b"cat"
    validation = {
        r[keys.IMAGE_SOURCE_ID].decode(): int(r[keys.IMAGE_CLASS_LABEL])
        for r in _records(out, "validation")
    }
    assert validation == {"cat/d.png": 0, "dog/c.png": 1}


def test_class_names_fix_the_ids_and_must_cover_the_folders(class_folders, tmp_path):
    summary = pipeline.run(
        str(class_folders),
        str(tmp_path / "out"),
        num_shards=1,
        task="classification",
        class_names=["zebra", "dog", "cat"],
    )
    assert summary["splits"]["train"]["class_histogram"] == {"1": 1, "2": 2}
    with pytest.raises(errors.ConversionError, match=r"\['zebra'\].*not in class_names"):
        pipeline.run(
            str(class_folders),
            str(tmp_path / "out2"),
            task="classification",
            class_names=["cat", "dog"],
        )


def test_strict_mode_and_bad_options(class_folders, tmp_path):
    with pytest.raises(errors.ConversionError, match="dog/broken.png: image_corrupt"):
        pipeline.run(str(class_folders), str(tmp_path / "o"), task="classification", strict=True)
    with pytest.raises(errors.ConversionError, match="task must be one of"):
        pipeline.run(str(class_folders), str(tmp_path / "o"), task="keypoints")
    with pytest.raises(errors.ConversionError, match="split 'test'"):
        pipeline.run(
            str(class_folders), str(tmp_path / "o"), splits=["test"], task="classification"
        )


def test_cli_converts_class_folders(class_folders, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli.main(
        [
            "--task", "classification", "--source-dir", str(class_folders),
            "--output", str(out), "--num-shards", "1",
        ]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "classes: cat, dog, zebra" in printed and "1 bad (image_corrupt 1)" in printed

"""gs:// in and out: conversions through a GCS emulator equal local ones byte for byte."""

import io
import json
import os
import pathlib
import sys

import numpy as np
import pytest
import tensorflow as tf

from components.convert_dataset import _fs, errors, pipeline, shapes
from vision_core.dataloaders import tf_example_keys as keys
from vision_core.dataloaders.tf_example_decoder import TfExampleDecoder

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
from gcs_emulator import emulator_fixture  # noqa: E402

BUCKET = "convert-bucket"
SPLITS = ("train", "validation")
REPORT_FILES = {"report.json", "report.md", "examples.png"}

gcs = emulator_fixture(scope="module", bucket=BUCKET)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A local shapes dataset (folders layout + COCO JSON) with one corrupt training image."""
    root = tmp_path_factory.mktemp("shapes")
    shapes.generate_shapes_dataset(
        str(root), num_train=5, num_validation=3, image_size=(32, 32), seed=7
    )
    (root / "images" / "train" / "zz_corrupt.png").write_bytes(b"not a png")
    (root / "masks" / "train" / "zz_corrupt.png").write_bytes(
        (root / "masks" / "train" / os.listdir(root / "masks" / "train")[0]).read_bytes()
    )
    return root


@pytest.fixture(scope="module")
def bucket(gcs, dataset):
    bucket = gcs.client().bucket(gcs.bucket)
    for path in sorted(dataset.rglob("*")):
        if path.is_file():
            bucket.blob(f"in/{path.relative_to(dataset).as_posix()}").upload_from_filename(path)
    return bucket


def _objects(bucket, prefix):
    return {b.name[len(prefix) :]: b for b in bucket.client.list_blobs(bucket, prefix=prefix)}


def _download_all(bucket, prefix, target):
    for name, blob in _objects(bucket, prefix).items():
        local = target / name
        local.parent.mkdir(parents=True, exist_ok=True)
        blob.download_to_filename(local)
    return target


def _without_source_dir(summary):
    return {k: v for k, v in summary.items() if k != "source_dir"}


def _without_detail(jsonl):
    return [
        {k: v for k, v in json.loads(line).items() if k != "detail"} for line in jsonl.splitlines()
    ]


def _check_same_as_local(bucket, prefix, gs_summary, local_out, local_summary, tmp_path):
    """Same summary (but for source_dir), same files, byte-identical contents (text files once
    the source folder they name is replaced)."""
    gs_source, local_source = gs_summary["source_dir"], local_summary["source_dir"]
    assert gs_source.startswith("gs://")
    assert _without_source_dir(gs_summary) == _without_source_dir(local_summary)
    downloaded = _download_all(bucket, prefix, tmp_path / "downloaded")
    remote_files = sorted(p.relative_to(downloaded).as_posix() for p in downloaded.rglob("*.*"))
    local_files = sorted(p.relative_to(local_out).as_posix() for p in local_out.rglob("*.*"))
    assert remote_files == local_files
    for name in local_files:
        remote, local = (downloaded / name).read_bytes(), (local_out / name).read_bytes()
        if name.endswith((".json", ".jsonl", ".md")):
            remote = remote.replace(gs_source.encode(), local_source.encode())
        if name == "bad_records.jsonl":
            # PIL's message in `detail` names a memory address (<_io.BytesIO object at 0x...>).
            remote, local = _without_detail(remote), _without_detail(local)
        assert remote == local, name
    assert json.loads((downloaded / "summary.json").read_text()) == gs_summary
    return downloaded


@pytest.fixture(scope="module")
def segmentation(gcs, bucket, dataset, tmp_path_factory):
    gs_summary = pipeline.run(f"gs://{BUCKET}/in", f"gs://{BUCKET}/seg", num_shards=2)
    local_out = tmp_path_factory.mktemp("seg-local")
    local_summary = pipeline.run(str(dataset), str(local_out), num_shards=2, overwrite=True)
    return gs_summary, local_out, local_summary


def test_segmentation_outputs_on_gcs(bucket, segmentation, tmp_path):
    gs_summary, local_out, local_summary = segmentation
    shards = [f"{s}-{i:05d}-of-00002.tfrecord" for s in SPLITS for i in range(2)]
    names = set(_objects(bucket, "seg/"))
    # No temporary objects: exactly the outputs.
    assert names == {*shards, "summary.json", "bad_records.jsonl", *REPORT_FILES}
    assert gs_summary["records"] == 8
    assert gs_summary["bad_records"] == 1

    downloaded = _check_same_as_local(
        bucket, "seg/", gs_summary, local_out, local_summary, tmp_path
    )
    bad = [json.loads(line) for line in (downloaded / "bad_records.jsonl").read_text().splitlines()]
    assert [(b["record_id"], b["reason"]) for b in bad] == [("zz_corrupt", errors.IMAGE_CORRUPT)]
    assert bad[0]["path"] == f"gs://{BUCKET}/in/images/train/zz_corrupt.png"

    # The shards TensorFlow reads back hold the images and masks of the gs:// source.
    for split in SPLITS:
        files = [str(downloaded / n) for n in gs_summary["splits"][split]["shards"]]
        records = list(tf.data.TFRecordDataset(files))
        assert len(records) == gs_summary["splits"][split]["records"]
        for serialized in records:
            example = tf.train.Example.FromString(serialized.numpy())
            feature = example.features.feature
            image = tf.io.decode_png(feature[keys.IMAGE_ENCODED].bytes_list.value[0]).numpy()
            mask = tf.io.decode_png(
                feature[keys.SEGMENTATION_CLASS_ENCODED].bytes_list.value[0]
            ).numpy()
            assert image.shape == (32, 32, 3) and mask.shape == (32, 32, 1)
            filename = feature[keys.IMAGE_FILENAME].bytes_list.value[0].decode()
            assert filename.endswith(".png")


def test_overwrite_on_gcs_replaces_the_previous_conversion(gcs, bucket, segmentation):
    with pytest.raises(errors.ConversionError, match="not empty"):
        pipeline.run(f"gs://{BUCKET}/in", f"gs://{BUCKET}/seg", num_shards=1)
    summary = pipeline.run(f"gs://{BUCKET}/in", f"gs://{BUCKET}/seg", num_shards=1, overwrite=True)
    names = set(_objects(bucket, "seg/"))
    shards = {f"{s}-00000-of-00001.tfrecord" for s in SPLITS}
    assert names == {*shards, "summary.json", "bad_records.jsonl", *REPORT_FILES}
    # Same records, so the same fingerprint whatever the shard count.
    assert summary["fingerprint"] == segmentation[0]["fingerprint"]
    stored = json.loads(bucket.blob("seg/summary.json").download_as_bytes())
    assert stored["num_shards"] == 1


def test_detection_from_coco_on_gcs(gcs, bucket, dataset, tmp_path):
    kwargs = {"source": "coco", "task": "detection", "num_shards": 1}
    gs_summary = pipeline.run(f"gs://{BUCKET}/in", f"gs://{BUCKET}/det", **kwargs)
    local_out = tmp_path / "det-local"
    local_summary = pipeline.run(str(dataset), str(local_out), **kwargs)
    names = set(_objects(bucket, "det/"))
    expected = {f"{s}-00000-of-00001.tfrecord" for s in SPLITS}
    expected |= {f"annotations/instances_{s}.json" for s in SPLITS}
    assert names == {*expected, "summary.json", "bad_records.jsonl", *REPORT_FILES}
    downloaded = _check_same_as_local(
        bucket, "det/", gs_summary, local_out, local_summary, tmp_path
    )
    decoder = TfExampleDecoder()
    path = str(downloaded / "validation-00000-of-00001.tfrecord")
    groundtruth = json.loads((downloaded / "annotations/instances_validation.json").read_text())
    boxes = 0
    for serialized in tf.data.TFRecordDataset(path):
        decoded = decoder.decode(serialized)
        assert decoded["image"].shape[:2] == (32, 32)
        labels = decoded["groundtruth_classes"].numpy()
        assert np.all((labels >= 1) & (labels < len(gs_summary["class_names"])))
        boxes += len(labels)
    assert boxes == len(groundtruth["annotations"]) > 0


def test_missing_gcs_source_folder_is_named(gcs, bucket):
    missing = f"gs://{BUCKET}/no-such-folder"
    with pytest.raises(errors.ConversionError, match=missing):
        pipeline.run(missing, f"gs://{BUCKET}/never")
    assert not _objects(bucket, "never/")


def test_only_the_expected_objects_exist(gcs, bucket, segmentation):
    # Runs above left no temporary objects anywhere in the bucket.
    tops = {name.split("/", 1)[0] for name in _objects(bucket, "")}
    assert tops <= {"in", "seg", "det", "fs"}
    assert not [n for n in _objects(bucket, "") if "/.tmp-" in n or n.startswith(".tmp-")]


def test_fs_helpers_on_gcs(gcs, bucket):
    root = f"gs://{BUCKET}/fs"
    _fs.write_text_atomic(f"{root}/a.txt", "hello")
    _fs.write_bytes_atomic(f"{root}/sub/deep/b.bin", b"\x00\x01")
    assert _fs.read_bytes(f"{root}/a.txt") == b"hello"
    assert _fs.read_head(f"{root}/a.txt", 2) == b"he"
    assert _fs.size(f"{root}/sub/deep/b.bin") == 2
    # Folders are prefixes.
    assert _fs.listdir(root) == ["a.txt", "sub"]
    assert _fs.isdir(f"{root}/sub") and not _fs.isdir(f"{root}/a.txt")
    assert _fs.exists(f"{root}/sub") and _fs.exists(f"{root}/a.txt")
    assert not _fs.exists(f"{root}/su") and not _fs.isdir(f"{root}/su")
    assert _fs.listdir(f"{root}/nothing") == []
    assert _fs.glob(root, "*.txt") == [f"{root}/a.txt"]
    with pytest.raises(FileNotFoundError, match="fs/missing"):
        _fs.read_bytes(f"{root}/missing")
    assert not _fs.isdir("gs://no-such-bucket/x")
    with pytest.raises(ValueError, match="glob"):
        _fs.read_bytes(f"{root}/a*.txt")

    # A failed write publishes nothing; a successful one replaces the object whole.
    with pytest.raises(KeyError), _fs.local_file_for(f"{root}/a.txt") as local:
        pathlib.Path(local).write_bytes(b"partial")
        raise KeyError("writer failed")
    assert _fs.read_bytes(f"{root}/a.txt") == b"hello"
    with _fs.local_file_for(f"{root}/a.txt") as local:
        pathlib.Path(local).write_bytes(b"new")
    assert _fs.read_bytes(f"{root}/a.txt") == b"new"
    with _fs.local_copy(f"{root}/a.txt") as local:
        assert pathlib.Path(local).read_bytes() == b"new"

    _fs.rename_many([f"{root}/a.txt"], [f"{root}/moved/a.txt"])
    assert _fs.listdir(root) == ["moved", "sub"]
    _fs.rmtree(f"{root}/sub")
    _fs.remove(f"{root}/moved/a.txt")
    _fs.remove(f"{root}/moved/a.txt")  # already gone: no error
    assert _fs.listdir(root) == []


def test_an_upload_failing_midway_publishes_nothing(gcs, bucket):
    class FailingReader(io.RawIOBase):
        """17 MiB, then an error: the first 16 MiB chunk has gone up by then."""

        def __init__(self):
            self.sent = 0

        def readable(self):
            return True

        def readinto(self, buffer):
            if self.sent >= 17 * 1024 * 1024:
                raise OSError("source went away")
            n = min(len(buffer), 17 * 1024 * 1024 - self.sent + 1)
            buffer[:n] = b"x" * n
            self.sent += n
            return n

    path = f"gs://{BUCKET}/partial/object.bin"
    with pytest.raises(OSError, match="went away"):
        _fs._upload_stream(FailingReader(), path)
    assert not _objects(bucket, "partial/")

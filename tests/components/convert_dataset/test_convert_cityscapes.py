"""The 'cityscapes' source: labelIds → trainId masks, instanceIds → detection records, the CLI.

The fixture is a tiny Cityscapes tree whose every pixel is known: the expected trainIds come
from a mapping written out here (not from the source's table) and the expected objects from the
drawn regions, so the decoded TFRecords are compared with them exactly.
"""

import io
import json

import convert_support
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from components.convert_dataset import __main__ as cli
from components.convert_dataset import cityscapes, errors, pipeline, rle
from vision_core.dataloaders import segmentation_input
from vision_core.dataloaders.tf_example_decoder import TfExampleDecoder

H, W = 32, 64
TRAIN_KEYS = [
    "aachen_000000_000019",
    "aachen_000001_000019",
    "bochum_000000_000313",
    "bochum_000001_000313",
]
# val: one good record (the third key) among one of each kind of bad record.
VAL_GOOD = "frankfurt_000000_000003"
VAL_BAD = {
    "frankfurt_000000_000001": errors.IMAGE_CORRUPT,
    "frankfurt_000000_000002": errors.MASK_MISSING,
    "frankfurt_000000_000004": errors.MASK_SIZE_MISMATCH,
    "frankfurt_000000_000005": errors.MASK_NOT_SINGLE_CHANNEL,
    "frankfurt_000000_000006": errors.UNKNOWN_CATEGORY,
}
# The labelIds used below and their trainIds (Cityscapes' table; 255 = ignore).
TRAIN_ID = {0: 255, 5: 255, 7: 0, 8: 1, 11: 2, 23: 10, 24: 11, 26: 13, 29: 255}
NINETEEN = ["road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
            "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
            "bus", "train", "motorcycle", "bicycle"]  # fmt: skip
DETECTION_CLASSES = ["background", "person", "rider", "car", "truck", "bus", "train",
                     "motorcycle", "bicycle"]  # fmt: skip


def scene(index):
    """(labelIds uint8 [H, W], instanceIds uint16 [H, W], objects) of image `index`.

    Objects: (instance value, class id 1..8, is_crowd, bool mask), in instance value order.
    """
    label = np.full((H, W), 7, np.uint8)  # road
    label[:8] = 23  # sky
    label[8:14] = 11  # building
    label[14:16, :10] = 0  # unlabeled → ignore
    label[14:16, 10:20] = 5  # dynamic → ignore
    label[16:18] = 8  # sidewalk
    instances = label.astype(np.uint16)
    regions = {
        24: (slice(26, 30), slice(20, 28)),  # a group of people: a crowd region
        24000: (slice(10, 26), slice(50, 53)),  # a person (with the head below: an L shape)
        26000: (slice(18, 24), slice(2 + index, 12 + index)),  # car 0 moves with the index
        26001: (slice(20, 28), slice(30, 44)),  # car 1
        29000: (slice(28, 31), slice(54, 60)),  # a caravan: ignored by both tasks
    }
    for value, (rows, cols) in regions.items():
        instances[rows, cols] = value
        label[rows, cols] = value // 1000 if value >= 1000 else value
    instances[10:13, 53:56] = 24000
    label[10:13, 53:56] = 24
    objects = [
        (value, {24: 1, 26: 3}[value // 1000 or value], int(value < 1000), instances == value)
        for value in (24, 24000, 26000, 26001)
    ]
    return label, instances, objects


def _png(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def _rgb(seed, height=H, width=W):
    return np.random.default_rng(seed).integers(0, 255, (height, width, 3), np.uint8)


def _write(root, split, key, image=None, label=None, instances=None):
    city = key.split("_")[0]
    image_dir = root / "leftImg8bit" / split / city
    label_dir = root / "gtFine" / split / city
    image_dir.mkdir(parents=True, exist_ok=True)
    label_dir.mkdir(parents=True, exist_ok=True)
    if image is not None:
        (image_dir / f"{key}_leftImg8bit.png").write_bytes(image)
    if label is not None:
        (label_dir / f"{key}_gtFine_labelIds.png").write_bytes(_png(label))
    if instances is not None:
        (label_dir / f"{key}_gtFine_instanceIds.png").write_bytes(_png(instances))


def write_tree(root):
    """train: 4 good images in 2 cities; val: 1 good image, 5 bad ones and 1 orphan label."""
    for i, key in enumerate(TRAIN_KEYS):
        label, instances, _ = scene(i)
        _write(root, "train", key, _png(_rgb(i)), label, instances)
    label, instances, _ = scene(2)
    _write(root, "val", VAL_GOOD, _png(_rgb(10)), label, instances)
    keys = sorted(VAL_BAD)
    _write(root, "val", keys[0], b"not a png at all", label, instances)
    _write(root, "val", keys[1], _png(_rgb(11)))
    big_label, big_instances, _ = scene(0)
    _write(root, "val", keys[2], _png(_rgb(12)), np.pad(big_label, ((0, 2), (0, 0))),
           np.pad(big_instances, ((0, 2), (0, 0))))  # fmt: skip
    _write(root, "val", keys[3], _png(_rgb(13)), _rgb(14), _rgb(15))
    unknown_label, unknown_instances = label.copy(), instances.copy()
    unknown_label[0, :4] = 40
    unknown_instances[0, :4] = 40
    _write(root, "val", keys[4], _png(_rgb(16)), unknown_label, unknown_instances)
    _write(root, "val", "frankfurt_000000_000099", label=label, instances=instances)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("cityscapes")
    write_tree(root)
    return root


def _records(output_dir, split):
    files = sorted(str(p) for p in output_dir.glob(f"{split}-*.tfrecord"))
    return [r.numpy() for r in tf.data.TFRecordDataset(files)]


def _bad(output_dir):
    lines = (output_dir / "bad_records.jsonl").read_text().splitlines()
    return {(b["split"], b["record_id"]): b for b in map(json.loads, lines)}


def _check_bad_records(output_dir, summary, label_suffix):
    split = summary["splits"]["val"]
    assert split["records"] == 1 and split["labels_without_image"] == 1
    assert split["bad_records_by_reason"] == {reason: 1 for reason in VAL_BAD.values()}
    bad = _bad(output_dir)
    assert {key: b["reason"] for (_, key), b in bad.items()} == VAL_BAD
    missing = bad[("val", "frankfurt_000000_000002")]["path"]
    assert missing.endswith(f"gtFine/val/frankfurt/frankfurt_000000_000002{label_suffix}")
    corrupt = bad[("val", "frankfurt_000000_000001")]["path"]
    assert corrupt.endswith("leftImg8bit/val/frankfurt/frankfurt_000000_000001_leftImg8bit.png")
    assert "[40]" in bad[("val", "frankfurt_000000_000006")]["detail"]


def test_label_table_facts():
    assert list(cityscapes.TRAIN_CLASS_NAMES) == NINETEEN
    assert [label.id for label in cityscapes.INSTANCE_LABELS] == [24, 25, 26, 27, 28, 31, 32, 33]
    assert sorted(label.id for label in cityscapes.LABELS) == list(range(-1, 34))
    assert {i: cityscapes.LABEL_BY_ID[i].train_id for i in TRAIN_ID} == TRAIN_ID
    assert [lb.name for lb in cityscapes.LABELS if lb.has_instances] == [
        "person", "rider", "car", "truck", "bus", "caravan", "trailer", "train", "motorcycle",
        "bicycle",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def segmentation(tree):
    out = tree / "out-segmentation"
    summary = pipeline.run(
        str(tree), str(out), splits=["train", "val"], num_shards=2, source="cityscapes",
        task="segmentation",
    )  # fmt: skip
    return out, summary


def test_segmentation_records_hold_train_ids(tree, segmentation):
    out, summary = segmentation
    assert summary["class_names"] == NINETEEN
    assert summary["splits"]["train"]["records"] == 4
    _check_bad_records(out, summary, "_gtFine_labelIds.png")
    decoder = segmentation_input.Decoder()
    seen = {}
    histogram = {}
    for serialized in _records(out, "train"):
        decoded = decoder.decode(tf.constant(serialized))
        key = (
            tf.io.parse_single_example(
                serialized, {"image/source_id": tf.io.FixedLenFeature([], tf.string)}
            )["image/source_id"]
            .numpy()
            .decode()
        )
        index = TRAIN_KEYS.index(key)
        label, _, _ = scene(index)
        expected = np.vectorize(TRAIN_ID.get)(label).astype(np.uint8)
        mask = tf.io.decode_png(decoded["image/segmentation/class/encoded"]).numpy()
        np.testing.assert_array_equal(mask[..., 0], expected)
        image = tf.io.decode_png(decoded["image/encoded"]).numpy()
        np.testing.assert_array_equal(image, _rgb(index))
        assert (int(decoded["image/height"]), int(decoded["image/width"])) == (H, W)
        for class_id, count in zip(*np.unique(expected, return_counts=True)):
            histogram[str(class_id)] = histogram.get(str(class_id), 0) + int(count)
        seen[key] = decoded
    assert sorted(seen) == TRAIN_KEYS
    assert summary["splits"]["train"]["class_pixel_histogram"] == histogram
    # The training parser reads them: ignore pixels are the invalid ones.
    parser = segmentation_input.Parser(output_size=[H, W])
    _, labels = parser(seen[TRAIN_KEYS[1]], is_training=False)
    expected = np.vectorize(TRAIN_ID.get)(scene(1)[0])
    np.testing.assert_array_equal(labels["masks"].numpy()[..., 0], expected)
    np.testing.assert_array_equal(labels["valid_masks"].numpy()[..., 0], expected != 255)


@pytest.fixture(scope="module")
def detection(tree):
    out = tree / "out-detection"
    summary = pipeline.run(
        str(tree), str(out), splits=["train", "val"], num_shards=2, source="cityscapes",
        task="detection", include_masks=True,
    )  # fmt: skip
    return out, summary


def _decode_detection(output_dir, split, include_mask=True):
    decoder = TfExampleDecoder(include_mask=include_mask)
    out = {}
    for serialized in _records(output_dir, split):
        item = {k: v.numpy() for k, v in decoder.decode(tf.constant(serialized)).items()}
        text = tf.io.parse_single_example(
            serialized, {"image/object/class/text": tf.io.VarLenFeature(tf.string)}
        )["image/object/class/text"]
        item["class_text"] = [t.decode() for t in tf.sparse.to_dense(text).numpy()]
        out[int(item["source_id"])] = item
    return out


def _check_objects(record, objects, with_masks=True):
    boxes = []
    for _, _, _, mask in objects:
        ys, xs = np.nonzero(mask)
        boxes.append([ys.min() / H, xs.min() / W, (ys.max() + 1) / H, (xs.max() + 1) / W])
    np.testing.assert_allclose(record["groundtruth_boxes"], boxes, rtol=1e-6)
    classes = [class_id for _, class_id, _, _ in objects]
    np.testing.assert_array_equal(record["groundtruth_classes"], classes)
    assert record["class_text"] == [DETECTION_CLASSES[c] for c in classes]
    np.testing.assert_array_equal(record["groundtruth_is_crowd"], [c for _, _, c, _ in objects])
    np.testing.assert_array_equal(record["groundtruth_area"], [m.sum() for *_, m in objects])
    if with_masks:
        expected = np.stack([m for *_, m in objects]).astype(np.float32)
        np.testing.assert_array_equal(record["groundtruth_instance_masks"], expected)


def test_detection_records_hold_the_instances(detection):
    out, summary = detection
    assert summary["class_names"] == DETECTION_CLASSES
    assert summary["coco_category_ids"] == [24, 25, 26, 27, 28, 31, 32, 33]
    # Per image: a crowd region and a person (class 1), two cars (class 3).
    assert summary["splits"]["train"]["class_histogram"] == {"1": 8, "3": 8}
    _check_bad_records(out, summary, "_gtFine_instanceIds.png")
    records = _decode_detection(out, "train")
    # Image ids are the 1-based positions of the sorted keys.
    assert sorted(records) == [1, 2, 3, 4]
    for image_id, record in records.items():
        _check_objects(record, scene(image_id - 1)[2])
        np.testing.assert_array_equal(record["image"], _rgb(image_id - 1))
    # val: the good record is the third key; the bad ones keep their numbers.
    val = _decode_detection(out, "val")
    assert sorted(val) == [3]
    _check_objects(val[3], scene(2)[2])


def test_detection_groundtruth_matches_the_records_and_scores_them(detection):
    out, summary = detection
    assert summary["annotation_files"] == {
        "train": "annotations/instances_train.json",
        "val": "annotations/instances_val.json",
    }
    groundtruth = json.loads((out / summary["annotation_files"]["train"]).read_text())
    assert [(c["id"], c["name"], c["cityscapes_id"]) for c in groundtruth["categories"]] == [
        (i, name, cid)
        for i, (name, cid) in enumerate(
            zip(DETECTION_CLASSES[1:], [24, 25, 26, 27, 28, 31, 32, 33]), start=1
        )
    ]
    assert [(i["id"], i["file_name"], i["height"], i["width"]) for i in groundtruth["images"]] == [
        (n, f"{key}_leftImg8bit.png", H, W) for n, key in enumerate(TRAIN_KEYS, start=1)
    ]
    anns = groundtruth["annotations"]
    assert [a["id"] for a in anns] == list(range(1, 17))
    for image_id in range(1, 5):
        mine = [a for a in anns if a["image_id"] == image_id]
        objects = scene(image_id - 1)[2]
        assert [(a["category_id"], a["iscrowd"]) for a in mine] == [
            (c, z) for _, c, z, _ in objects
        ]
        for a, (*_, mask) in zip(mine, objects):
            np.testing.assert_array_equal(rle.decode(a["segmentation"]), mask)
            assert a["bbox"] == rle.bbox(mask) and a["area"] == mask.sum()
    val = json.loads((out / summary["annotation_files"]["val"]).read_text())
    assert [i["id"] for i in val["images"]] == [3] and len(val["annotations"]) == 4

    # The records' own non-crowd boxes as detections score AP 1: the source ids are the JSON's
    # image ids and the class ids agree.
    ap = convert_support.own_boxes_ap(
        out / summary["annotation_files"]["train"],
        _decode_detection(out, "train", include_mask=False),
        lambda r: ~r["groundtruth_is_crowd"],
        (H, W),
        include_mask=False,
    )
    assert ap == pytest.approx(1.0)


def test_strict_mode_fails_and_writes_nothing(tree):
    out = tree / "out-strict"
    with pytest.raises(errors.ConversionError, match="strict mode: 5 bad record"):
        pipeline.run(
            str(tree), str(out), splits=["val"], num_shards=1, source="cityscapes", strict=True
        )
    assert not (out / "summary.json").exists()
    assert not list(out.glob("*.tfrecord"))


def test_cli_detection_with_masks(tree, capsys):
    out = tree / "out-cli"
    argv = ["cityscapes", "--source-dir", str(tree), "--task", "detection", "--include-masks",
            "--splits", "train", "--output", str(out), "--num-shards", "1"]  # fmt: skip
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "train: 4 records in 1 shards" in printed
    assert "classes: background, person, rider, car" in printed
    records = _decode_detection(out, "train")
    _check_objects(records[2], scene(1)[2])  # --include-masks reached the source
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["source"], summary["task"]) == ("cityscapes", "detection")


def test_source_checks_without_beam(tree, tmp_path):
    with pytest.raises(errors.ConversionError, match="task must be one of"):
        cityscapes.CityscapesSource(str(tree), task="classification")
    with pytest.raises(errors.ConversionError, match="include_masks"):
        cityscapes.CityscapesSource(str(tree), include_masks=True)
    with pytest.raises(errors.ConversionError, match="leftImg8bit/test does not exist"):
        cityscapes.CityscapesSource(str(tree)).list_records("test")

    # An object index on a label without instances (road) is invalid.
    label, instances, _ = scene(0)
    instances[0:2, 0:2] = 7001
    with pytest.raises(errors.BadRecordError) as info:
        cityscapes.instance_map(_png(instances), "x.png", (H, W))
    assert info.value.reason == errors.ANNOTATION_INVALID and "'road'" in info.value.detail
    # labelIds must be 8-bit.
    with pytest.raises(errors.BadRecordError) as info:
        cityscapes.train_id_mask(_png(label.astype(np.uint16)), "x.png", (H, W))
    assert info.value.reason == errors.MASK_NOT_8BIT

    # The same image in two city folders.
    label, instances, _ = scene(0)
    key = "aachen_000000_000001"
    _write(tmp_path, "train", key, _png(_rgb(0)), label, instances)
    _write(tmp_path, "train", "bochum_000000_000002", _png(_rgb(0)), label, instances)
    (tmp_path / "leftImg8bit" / "train" / "bochum" / f"{key}_leftImg8bit.png").write_bytes(
        _png(_rgb(1))
    )
    source = cityscapes.CityscapesSource(str(tmp_path), splits=("train",), task="detection")
    refs = source.list_records("train")
    assert [(r.key, r.paths["image_id"]) for r in refs] == [
        (key, "1"), ("bochum_000000_000002", "2"),
    ]  # fmt: skip
    assert refs[0].problem[0] == errors.DUPLICATE_STEM
    assert source.load(refs[1]).class_histogram == {1: 2, 3: 2}


def test_object_masks_and_rle_agree_with_the_instance_map():
    rng = np.random.default_rng(5)
    values = np.full((9, 7), 7, np.int64)
    values[rng.random((9, 7)) < 0.4] = 26000  # scattered pixels: many runs
    values[0, 0] = values[8, 6] = 24001  # the first and the last pixel of the map
    values[3:5, 2:4] = 33  # a bicycle group (crowd)
    objects = cityscapes.find_objects(values)
    assert [(o.value, o.class_id, o.is_crowd) for o in objects] == [
        (33, 8, 1), (24001, 1, 0), (26000, 3, 0),
    ]  # fmt: skip
    for o in objects:
        mask = (values == o.value).astype(np.uint8)
        np.testing.assert_array_equal(o.mask(9, 7), mask)
        assert o.rle(9, 7) == rle.encode(mask) and o.area == mask.sum()
        x, y, w, h = rle.bbox(mask)
        assert o.box == (x, y, x + w, y + h)

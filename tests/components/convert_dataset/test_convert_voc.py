"""The Pascal VOC source: segmentation from palette masks, detection from XML, bad data, the CLI.

The fixture is a tiny VOC year folder written here, every value known: segmentation ids are
2007_*, detection ids 2008_*, and each bad-data rule has its own id.
"""

import io
import json

import convert_support
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from components.convert_dataset import __main__ as cli
from components.convert_dataset import errors, pipeline, voc
from vision_core.dataloaders import segmentation_input
from vision_core.dataloaders import tf_example_keys as keys
from vision_core.dataloaders.tf_example_decoder import TfExampleDecoder

H, W = 32, 48
# VOC's label colours of a few ids, as the VOC devkit's VOClabelcolormap.m gives them.
KNOWN_COLOURS = {
    0: (0, 0, 0), 1: (128, 0, 0), 2: (0, 128, 0), 3: (128, 128, 0), 4: (0, 0, 128),
    7: (128, 128, 128), 8: (64, 0, 0), 12: (64, 0, 128), 15: (192, 128, 128),
    20: (0, 64, 128), 255: (224, 224, 192),
}  # fmt: skip


def _jpeg(seed, height=H, width=W):
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (height, width, 3), np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def _palette_png(ids):
    image = Image.fromarray(np.asarray(ids, np.uint8), mode="P")
    palette = np.zeros((256, 3), np.uint8)
    for class_id, colour in KNOWN_COLOURS.items():
        palette[class_id] = colour
    image.putpalette(palette.ravel().tolist())
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _rgb_png(ids, colours=KNOWN_COLOURS):
    rgb = np.zeros((*ids.shape, 3), np.uint8)
    for class_id in np.unique(ids):
        rgb[ids == class_id] = colours[int(class_id)]
    buffer = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buffer, "PNG")
    return buffer.getvalue()


def _mask(*rects):
    """Class ids [H, W]: (class, y0, y1, x0, x1) rectangles, each with a 1-pixel 255 border."""
    ids = np.zeros((H, W), np.uint8)
    for class_id, y0, y1, x0, x1 in rects:
        ids[y0 - 1 : y1 + 1, x0 - 1 : x1 + 1] = 255
        ids[y0:y1, x0:x1] = class_id
    return ids


MASKS = {
    "2007_000001": _mask((15, 4, 20, 5, 20), (12, 22, 30, 30, 44)),
    "2007_000002": _mask((1, 10, 25, 10, 40)),  # stored as RGB colours
    "2007_000008": _mask((20, 2, 10, 2, 10)),
}


def _xml(objects, width=W, height=H):
    """A VOC annotation: objects are (name, (xmin, ymin, xmax, ymax), difficult, truncated)."""
    parts = [f"<annotation><filename>x.jpg</filename><size><width>{width}</width>"
             f"<height>{height}</height><depth>3</depth></size>"]  # fmt: skip
    for name, (x0, y0, x1, y1), difficult, truncated in objects:
        flags = "" if difficult is None else f"<difficult>{difficult}</difficult>"
        flags += "" if truncated is None else f"<truncated>{truncated}</truncated>"
        box = (
            f"<bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox>"
        )
        # A person's <part> has its own name and box, which are not objects.
        part = "<part><name>head</name>" + box + "</part>" if name == "person" else ""
        parts.append(f"<object><name>{name}</name><pose>Left</pose>{flags}{box}{part}</object>")
    return ("".join(parts) + "</annotation>").encode()


DETECTION_OBJECTS = [
    ("person", (5, 3, 20, 30), 0, 1),
    ("dog", (25, 10, 40, 25), 1, 0),
    ("car", (30, 20, 60, 40), 0, 0),  # reaches past the right and bottom edges: clipped
    ("bird", (10, 10, 9, 15), 0, 0),  # xmax = xmin - 1: zero width, dropped
    ("cat", (50, 5, 55, 9), 0, 0),  # entirely right of the image: dropped
]


def write_voc(root):
    """A VOC2012-style year folder; returns it."""
    for folder in ("JPEGImages", "SegmentationClass", "Annotations", "ImageSets/Segmentation",
                   "ImageSets/Main"):  # fmt: skip
        (root / folder).mkdir(parents=True)
    jpg = lambda i: root / "JPEGImages" / f"{i}.jpg"  # noqa: E731
    png = lambda i: root / "SegmentationClass" / f"{i}.png"  # noqa: E731
    xml = lambda i: root / "Annotations" / f"{i}.xml"  # noqa: E731

    # Segmentation.
    for seed, i in enumerate(["2007_000001", "2007_000002", "2007_000005", "2007_000006",
                              "2007_000007", "2007_000008", "2007_000009"]):  # fmt: skip
        jpg(i).write_bytes(_jpeg(seed))
    png("2007_000001").write_bytes(_palette_png(MASKS["2007_000001"]))
    png("2007_000002").write_bytes(_rgb_png(MASKS["2007_000002"]))
    png("2007_000008").write_bytes(_palette_png(MASKS["2007_000008"]))
    jpg("2007_000003").write_bytes(b"\xff\xd8 this is no JPEG")
    jpg("2007_000004").write_bytes(_jpeg(10)[:-100])  # cut short
    for i in ("2007_000003", "2007_000004"):
        png(i).write_bytes(_palette_png(np.zeros((H, W))))
    # 2007_000005 has no mask.
    png("2007_000006").write_bytes(_palette_png(np.zeros((H, W + 1))))
    off_map = {**KNOWN_COLOURS, 1: (128, 1, 0)}  # one colour that is no VOC label colour
    png("2007_000007").write_bytes(_rgb_png(MASKS["2007_000002"], off_map))
    png("2007_000009").write_bytes(_palette_png(np.full((H, W), 30)))  # no VOC class 30
    (root / "ImageSets/Segmentation/train.txt").write_text(
        "2007_000001\n2007_000002\n2007_000003\n2007_000004\n\n2007_000005\n2007_000006\n"
        "2007_000007\n2007_000009\n2007_000001\n"
    )
    (root / "ImageSets/Segmentation/val.txt").write_text("2007_000008\n")

    # Detection.
    for seed, i in enumerate(["2008_000001", "2008_000002", "2008_000003", "2008_000004",
                              "2008_000005", "2008_000006", "2008_000008"]):  # fmt: skip
        jpg(i).write_bytes(_jpeg(20 + seed))
    xml("2008_000001").write_bytes(_xml(DETECTION_OBJECTS))
    xml("2008_000002").write_bytes(_xml([("aeroplane", (1, 1, W, H), None, None)]))
    xml("2008_000003").write_bytes(_xml([("unicorn", (1, 1, 5, 5), 0, 0)]))
    xml("2008_000004").write_bytes(_xml([("dog", (1, 1, 5, 5), 0, 0)])[:-20])
    xml("2008_000005").write_bytes(_xml([("dog", (1, 1, 5, 5), 0, 0)], height=H + 8))
    # 2008_000006 has no XML; 2008_000007 has an XML but no image.
    xml("2008_000007").write_bytes(_xml([("dog", (1, 1, 5, 5), 0, 0)]))
    xml("2008_000008").write_bytes(_xml([]))
    (root / "ImageSets/Main/train.txt").write_text(
        "\n".join(f"2008_00000{i}" for i in range(1, 9)) + "\n"
    )
    (root / "ImageSets/Main/dog_train.txt").write_text("2008_000001  1\n")
    (root / "ImageSets/Main/train_train.txt").write_text("2008_000001 -1\n")  # class "train"
    return root


def _bad(out):
    lines = (out / "bad_records.jsonl").read_text().splitlines()
    return {(b["split"], b["record_id"]): b["reason"] for b in map(json.loads, lines)}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_voc(tmp_path_factory.mktemp("voc") / "VOC2012")


@pytest.fixture(scope="module")
def segmentation(root, tmp_path_factory):
    out = tmp_path_factory.mktemp("seg")
    summary = pipeline.run(str(root), str(out), splits=["train", "val"], num_shards=2, source="voc")
    return out, summary


@pytest.fixture(scope="module")
def detection(root, tmp_path_factory):
    out = tmp_path_factory.mktemp("det")
    summary = pipeline.run(
        str(root), str(out), splits=["train"], num_shards=1, source="voc", task="detection"
    )
    return out, summary


def test_colormap_is_vocs():
    colormap = voc.voc_colormap()
    assert colormap.shape == (256, 3) and colormap.dtype == np.uint8
    for class_id, colour in KNOWN_COLOURS.items():
        assert tuple(colormap[class_id]) == colour
    assert len({tuple(c) for c in colormap}) == 256
    ids, unknown = voc.mask_from_colours(colormap[[[0, 15], [255, 20]]])
    np.testing.assert_array_equal(ids, [[0, 15], [255, 20]])
    assert unknown == []
    # A label-map colour of an id that is no VOC class (30) is not accepted either.
    assert voc.mask_from_colours(colormap[[[0, 30]]])[1] == [tuple(colormap[30])]


def test_segmentation_summary_and_bad_records(segmentation):
    out, summary = segmentation
    assert summary["class_names"] == list(voc.CLASS_NAMES) and len(voc.CLASS_NAMES) == 21
    train = summary["splits"]["train"]
    assert train["records"] == 2 and summary["splits"]["val"]["records"] == 1
    assert train["duplicate_ids_in_split_file"] == 1
    assert train["rgb_masks_repaired"] == 1
    assert _bad(out) == {
        ("train", "2007_000003"): errors.IMAGE_CORRUPT,
        ("train", "2007_000004"): errors.IMAGE_TRUNCATED,
        ("train", "2007_000005"): errors.MASK_MISSING,
        ("train", "2007_000006"): errors.MASK_SIZE_MISMATCH,
        ("train", "2007_000007"): errors.MASK_NOT_SINGLE_CHANNEL,
        ("train", "2007_000009"): errors.UNKNOWN_CATEGORY,
    }
    expected = np.bincount(
        np.concatenate([MASKS["2007_000001"].ravel(), MASKS["2007_000002"].ravel()]),
        minlength=256,
    )
    assert train["class_pixel_histogram"] == {str(c): int(n) for c, n in enumerate(expected) if n}


def test_segmentation_records_hold_palette_indices(segmentation, root):
    out, _ = segmentation
    decoder = segmentation_input.Decoder()
    seen = {}
    for split in ("train", "val"):
        files = sorted(str(p) for p in out.glob(f"{split}-*.tfrecord"))
        for serialized in tf.data.TFRecordDataset(files):
            decoded = decoder.decode(serialized)
            source_id = tf.io.parse_single_example(
                serialized, {keys.IMAGE_SOURCE_ID: tf.io.FixedLenFeature([], tf.string)}
            )[keys.IMAGE_SOURCE_ID]
            mask = tf.io.decode_png(decoded[keys.SEGMENTATION_CLASS_ENCODED], channels=1)
            seen[source_id.numpy().decode()] = (decoded, mask.numpy()[..., 0])
    assert sorted(seen) == ["2007_000001", "2007_000002", "2007_000008"]
    for voc_id, (decoded, mask) in seen.items():
        np.testing.assert_array_equal(mask, MASKS[voc_id])  # 255 borders kept as they are
        assert (
            decoded[keys.IMAGE_ENCODED].numpy()
            == (root / "JPEGImages" / f"{voc_id}.jpg").read_bytes()
        )
        assert (int(decoded[keys.IMAGE_HEIGHT]), int(decoded[keys.IMAGE_WIDTH])) == (H, W)


def _decode_detection(out, split="train"):
    decoder = TfExampleDecoder()
    extra = {
        "text": tf.io.VarLenFeature(tf.string),
        "difficult": tf.io.VarLenFeature(tf.int64),
        "truncated": tf.io.VarLenFeature(tf.int64),
        "filename": tf.io.FixedLenFeature([], tf.string),
    }
    spelled = {"text": keys.OBJECT_CLASS_TEXT, "difficult": keys.OBJECT_DIFFICULT,
               "truncated": keys.OBJECT_TRUNCATED, "filename": keys.IMAGE_FILENAME}  # fmt: skip
    records = {}
    for serialized in tf.data.TFRecordDataset(sorted(str(p) for p in out.glob(f"{split}-*"))):
        item = {k: v.numpy() for k, v in decoder.decode(serialized).items()}
        parsed = tf.io.parse_single_example(serialized, {spelled[k]: f for k, f in extra.items()})
        for name, key in spelled.items():
            value = parsed[key]
            item[name] = tf.sparse.to_dense(value).numpy() if name != "filename" else value.numpy()
        records[int(item["source_id"])] = item
    return records


def test_detection_summary_and_bad_records(detection):
    out, summary = detection
    assert summary["class_names"] == list(voc.CLASS_NAMES)
    assert summary["coco_category_ids"] == list(range(1, 21))
    train = summary["splits"]["train"]
    assert train["records"] == 3
    assert (train["boxes_clipped"], train["boxes_dropped_zero_area"]) == (1, 2)
    assert (train["images_without_objects"], train["difficult_objects_dropped"]) == (1, 0)
    assert train["duplicate_ids_in_split_file"] == 0
    assert train["class_histogram"] == {"1": 1, "7": 1, "12": 1, "15": 1}
    assert _bad(out) == {
        ("train", "2008_000003"): errors.UNKNOWN_CATEGORY,
        ("train", "2008_000004"): errors.ANNOTATION_INVALID,
        ("train", "2008_000005"): errors.IMAGE_SIZE_MISMATCH,
        ("train", "2008_000006"): errors.ANNOTATION_MISSING,
        ("train", "2008_000007"): errors.IMAGE_MISSING,
    }


def test_detection_records_round_trip(detection):
    out, _ = detection
    records = _decode_detection(out)
    # source_id: 1-based position in the sorted split file (2008_000001 → 1, ...).
    assert sorted(records) == [1, 2, 8]
    a = records[1]
    assert a["filename"] == b"2008_000001.jpg"
    # VOC's 1-based inclusive pixels: [ymin - 1, xmin - 1, ymax, xmax] / size; car clipped.
    np.testing.assert_allclose(
        a["groundtruth_boxes"],
        [[2 / H, 4 / W, 30 / H, 20 / W], [9 / H, 24 / W, 25 / H, 40 / W], [19 / H, 29 / W, 1, 1]],
        rtol=1e-6,
    )
    np.testing.assert_array_equal(a["groundtruth_classes"], [15, 12, 7])
    assert [t.decode() for t in a["text"]] == ["person", "dog", "car"]
    np.testing.assert_array_equal(a["difficult"], [0, 1, 0])
    np.testing.assert_array_equal(a["truncated"], [1, 0, 0])
    np.testing.assert_array_equal(a["groundtruth_is_crowd"], [False, False, False])
    np.testing.assert_allclose(a["groundtruth_area"], [16 * 28, 16 * 16, 19 * 13])
    b = records[2]  # a box over the whole image; no difficult/truncated tags means 0
    np.testing.assert_allclose(b["groundtruth_boxes"], [[0, 0, 1, 1]])
    np.testing.assert_array_equal(b["groundtruth_classes"], [1])
    np.testing.assert_array_equal(b["difficult"], [0])
    np.testing.assert_allclose(b["groundtruth_area"], [H * W])
    assert records[8]["groundtruth_boxes"].shape == (0, 4)


def test_groundtruth_ignores_difficult_objects_in_coco_evaluation(detection):
    out, summary = detection
    path = out / summary["annotation_files"]["train"]
    groundtruth = json.loads(path.read_text())
    assert [(i["id"], i["file_name"]) for i in groundtruth["images"]] == [
        (1, "2008_000001.jpg"), (2, "2008_000002.jpg"), (8, "2008_000008.jpg"),
    ]  # fmt: skip
    assert [c["name"] for c in groundtruth["categories"]] == list(voc.CLASS_NAMES[1:])
    anns = groundtruth["annotations"]
    assert [(a["image_id"], a["category_id"], a["iscrowd"]) for a in anns] == [
        (1, 15, 0), (1, 12, 1), (1, 7, 0), (2, 1, 0),
    ]  # fmt: skip
    assert anns[2]["bbox"] == [29.0, 19.0, 19.0, 13.0]
    # The difficult dog is neither a hit nor a miss: AP is 1 whether it is detected or not...
    records = _decode_detection(out)
    assert _ap(path, records, detect_difficult=True) == pytest.approx(1.0)
    assert _ap(path, records, detect_difficult=False) == pytest.approx(1.0)
    # ...whereas as an ordinary object, missing it would cost the dog class its AP.
    groundtruth["annotations"][1]["iscrowd"] = 0
    plain = out.parent / f"{out.name}-plain.json"
    plain.write_text(json.dumps(groundtruth))
    assert _ap(plain, records, detect_difficult=False) < 0.99


def _ap(groundtruth_path, records, detect_difficult):
    """COCO AP of the records' own boxes used as detections."""

    def keep(r):
        return np.ones(len(r["difficult"]), bool) if detect_difficult else r["difficult"] == 0

    return convert_support.own_boxes_ap(groundtruth_path, records, keep, (H, W))


def test_parse_annotation_rejects_malformed_objects():
    def reason(data):
        with pytest.raises(errors.BadRecordError) as info:
            voc.parse_annotation(data, "a.xml")
        return info.value.reason, info.value.detail

    assert reason(b"<annotation><size>")[0] == errors.ANNOTATION_INVALID
    assert "without <size>" in reason(b"<annotation></annotation>")[1]
    assert "reversed" in reason(_xml([("dog", (10, 1, 5, 5), 0, 0)]))[1]
    assert "must be a number" in reason(_xml([("dog", (1, 1, "x", 5), 0, 0)]))[1]
    assert "must be 0 or 1" in reason(_xml([("dog", (1, 1, 5, 5), 2, 0)]))[1]
    assert reason(_xml([("Dog", (1, 1, 5, 5), 0, 0)]))[0] == errors.UNKNOWN_CATEGORY
    parsed = voc.parse_annotation(_xml(DETECTION_OBJECTS[:1]), "a.xml")
    assert (parsed.height, parsed.width, len(parsed.objects)) == (H, W, 1)  # the part is no object


def test_missing_split_file_names_it_and_lists_the_others(root):
    with pytest.raises(errors.ConversionError) as info:
        voc.VocSource(str(root), splits=("test",), task="detection")
    message = str(info.value)
    assert str(root / "ImageSets/Main/test.txt") in message
    assert message.endswith("split files in " + str(root / "ImageSets/Main") + ": train")
    with pytest.raises(errors.ConversionError, match=r"Segmentation: train, val"):
        voc.VocSource(str(root), splits=("trainval",))
    with pytest.raises(errors.ConversionError, match=r"did you mean .*VOC2012"):
        voc.VocSource(str(root.parent))


def test_strict_fails_on_bad_records(root, tmp_path):
    with pytest.raises(errors.ConversionError, match="strict mode: 6 bad record"):
        pipeline.run(str(root), str(tmp_path / "o"), splits=["train"], source="voc", strict=True)
    assert not (tmp_path / "o" / "summary.json").exists()


def test_cli_voc_detection_drop_difficult(root, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["voc", "--source-dir", str(root), "--output", str(out), "--task", "detection",
            "--splits", "train", "--num-shards", "1", "--drop-difficult"]  # fmt: skip
    assert cli.main(argv) == 0
    assert "train: 3 records in 1 shards, 5 bad" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["source"] == "voc" and summary["task"] == "detection"
    assert summary["splits"]["train"]["difficult_objects_dropped"] == 1
    record = _decode_detection(out)[1]
    np.testing.assert_array_equal(record["groundtruth_classes"], [15, 7])
    np.testing.assert_array_equal(record["difficult"], [0, 0])
    groundtruth = json.loads((out / summary["annotation_files"]["train"]).read_text())
    assert [a["category_id"] for a in groundtruth["annotations"]] == [15, 7, 1]
    # The flag belongs to voc detection only.
    argv = ["voc", "--source-dir", str(root), "--output", str(tmp_path / "o2"), "--drop-difficult"]
    assert cli.main(argv) == 1
    assert (
        "--drop-difficult belongs to --source voc with --task detection" in capsys.readouterr().err
    )


def test_source_splits_can_be_written_under_the_pipeline_names(root, tmp_path, capsys):
    # The train and evaluate steps read train-* and validation-*: VOC's 'val' is renamed on
    # the way out, and every output (shards, bad records, groundtruth) uses the new name.
    out = tmp_path / "out"
    argv = ["voc", "--source-dir", str(root), "--output", str(out),
            "--splits", "validation=val,segtrain=train", "--num-shards", "1"]  # fmt: skip
    assert cli.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["splits"]) == {"validation", "segtrain"}
    assert summary["source_splits"] == {"validation": "val", "segtrain": "train"}
    assert summary["splits"]["validation"]["records"] == 1
    assert (out / "validation-00000-of-00001.tfrecord").exists()
    assert not list(out.glob("val-*"))
    assert {split for split, _ in _bad(out)} == {"segtrain"}
    assert "validation: 1 records in 1 shards" in capsys.readouterr().out

    # Detection: the COCO groundtruth is named after the output split, and the summary's
    # annotation_file (what the evaluate step scores against) is set.
    (root / "ImageSets/Main/val.txt").write_text("2008_000002\n")
    try:
        summary = pipeline.run(
            str(root), str(tmp_path / "det"), splits={"validation": "val"}, num_shards=1,
            source="voc", task="detection",
        )  # fmt: skip
    finally:
        (root / "ImageSets/Main/val.txt").unlink()
    assert summary["annotation_file"] == "annotations/instances_validation.json"
    groundtruth = json.loads((tmp_path / "det" / summary["annotation_file"]).read_text())
    assert [im["file_name"] for im in groundtruth["images"]] == ["2008_000002.jpg"]

    with pytest.raises(errors.ConversionError, match="splits must be distinct"):
        pipeline.run(str(root), str(tmp_path / "x"), splits={"a": "val", "b": "val"}, source="voc")
    assert cli.main([*argv[:4], str(tmp_path / "y"), "--splits", "validation="]) == 1
    assert "names no source split" in capsys.readouterr().err

"""Detection records from COCO JSON: the 'coco' source, shapes for task='detection', the CLI.

The fixture is a small hand-written COCO dataset whose every value is known, so the decoded
records are compared with the JSON directly, and each bad-data rule has its own image.
"""

import io
import json

import convert_support
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from pycocotools import mask as mask_api

from components.convert_dataset import __main__ as cli
from components.convert_dataset import coco, errors, pipeline, rle
from vision_core.dataloaders.tf_example_decoder import TfExampleDecoder

H, W = 20, 30
CATEGORIES = [{"id": 12, "name": "bird"}, {"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]
# COCO ids sorted (3, 7, 12) become classes 1, 2, 3.
CLASS_OF = {3: 1, 7: 2, 12: 3}
CROWD = np.zeros((H, W), np.uint8)
CROWD[0:5, 0:4] = 1


def _png(height, width, seed):
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (height, width, 3), np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _annotation(ann_id, image_id, category, bbox, **extra):
    return {"id": ann_id, "image_id": image_id, "category_id": category, "bbox": bbox,
            "area": float(bbox[2] * bbox[3]), "iscrowd": 0, **extra}  # fmt: skip


def _square(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def write_fixture(root, split="validation"):
    """A COCO split: 2 good images (a, b), 4 bad ones (c-f) and one orphan annotation."""
    files = {
        "a.png": (H, W),
        "b.png": (H, W),
        "c.png": (H, W),
        "d.png": (H + 1, W),
        "f.png": (H, W),
    }  # fmt: skip  (e.png is listed in the JSON but has no file)
    image_dir = root / "images" / split
    image_dir.mkdir(parents=True)
    for seed, (name, (h, w)) in enumerate(files.items()):
        (image_dir / name).write_bytes(_png(h, w, seed))
    images = [
        {"id": 101 + i, "file_name": name, "height": H, "width": W}
        for i, name in enumerate(["a.png", "b.png", "c.png", "d.png", "e.png", "f.png"])
    ]
    crowd_rle = {"size": [H, W], "counts": rle.mask_to_counts(CROWD)}  # uncompressed, as COCO
    annotations = [
        _annotation(1, 101, 3, [2, 3, 10, 8], segmentation=_square(2, 3, 12, 11)),
        # Reaches past the right and bottom edges: clipped to [25, 15, 5, 5]; area kept.
        _annotation(2, 101, 7, [25, 15, 10, 10], segmentation=_square(25, 15, 29, 19)),
        {**_annotation(3, 101, 12, [0, 0, 4, 5], segmentation=crowd_rle), "iscrowd": 1},
        _annotation(4, 101, 7, [5, 5, 0, 4], segmentation=_square(5, 5, 5, 9)),  # zero width
        _annotation(5, 101, 3, [40, 40, 5, 5], segmentation=_square(40, 40, 45, 45)),  # outside
        _annotation(6, 103, 99, [1, 1, 4, 4]),  # unknown category
        _annotation(7, 104, 3, [1, 1, 4, 4], segmentation=_square(1, 1, 5, 5)),  # 21x30 file
        _annotation(8, 105, 3, [1, 1, 4, 4], segmentation=_square(1, 1, 5, 5)),  # no file
        _annotation(9, 106, 3, [1, 2, -3, 4]),  # negative width
        _annotation(10, 999, 3, [1, 1, 4, 4]),  # no such image
    ]
    path = root / "annotations" / f"instances_{split}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES})
    )
    return path


def _decode_split(output_dir, split, **decoder_options):
    decoder = TfExampleDecoder(**decoder_options)
    files = sorted(str(p) for p in output_dir.glob(f"{split}-*.tfrecord"))
    out = {}
    for record in tf.data.TFRecordDataset(files):
        decoded = decoder.decode(record)
        text = tf.io.parse_single_example(
            record, {"image/object/class/text": tf.io.VarLenFeature(tf.string)}
        )["image/object/class/text"]
        item = {k: v.numpy() for k, v in decoded.items()}
        item["class_text"] = [t.decode() for t in tf.sparse.to_dense(text).numpy()]
        out[int(item["source_id"])] = item
    return out


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    write_fixture(root)
    out = root / "out"
    summary = pipeline.run(
        str(root), str(out), splits=["validation"], num_shards=2, source="coco",
        task="detection", include_masks=True,
    )  # fmt: skip
    return root, out, summary


def test_summary_records_classes_counts_and_groundtruth_file(converted):
    _, out, summary = converted
    assert summary["task"] == "detection"
    assert summary["class_names"] == ["background", "cat", "dog", "bird"]
    assert summary["coco_category_ids"] == [3, 7, 12]
    assert summary["annotation_file"] == "annotations/instances_validation.json"
    split = summary["splits"]["validation"]
    assert split["records"] == 2
    assert split["bad_records_by_reason"] == {
        errors.ANNOTATION_INVALID: 1,
        errors.IMAGE_MISSING: 1,
        errors.IMAGE_SIZE_MISMATCH: 1,
        errors.UNKNOWN_CATEGORY: 1,
    }
    assert (split["boxes_clipped"], split["boxes_dropped_zero_area"]) == (1, 2)
    assert (split["images_without_objects"], split["annotations_without_image"]) == (1, 1)
    assert split["class_histogram"] == {"1": 1, "2": 1, "3": 1}
    bad = [json.loads(line) for line in (out / "bad_records.jsonl").read_text().splitlines()]
    assert {b["record_id"]: b["reason"] for b in bad} == {
        "c.png": errors.UNKNOWN_CATEGORY,
        "d.png": errors.IMAGE_SIZE_MISMATCH,
        "e.png": errors.IMAGE_MISSING,
        "f.png": errors.ANNOTATION_INVALID,
    }


def test_records_round_trip_through_the_decoder(converted):
    root, out, _ = converted
    records = _decode_split(out, "validation", include_mask=True)
    assert sorted(records) == [101, 102]
    a = records[101]
    assert (int(a["height"]), int(a["width"])) == (H, W)
    source = np.asarray(Image.open(root / "images" / "validation" / "a.png"))
    np.testing.assert_array_equal(a["image"], source)
    # [ymin, xmin, ymax, xmax] / image size, for the kept annotations 1, 2 (clipped) and 3.
    expected_boxes = [
        [3 / H, 2 / W, 11 / H, 12 / W],
        [15 / H, 25 / W, 1.0, 1.0],
        [0, 0, 5 / H, 4 / W],
    ]
    np.testing.assert_allclose(a["groundtruth_boxes"], expected_boxes, rtol=1e-6)
    np.testing.assert_array_equal(
        a["groundtruth_classes"], [CLASS_OF[3], CLASS_OF[7], CLASS_OF[12]]
    )
    assert a["class_text"] == ["cat", "dog", "bird"]
    np.testing.assert_array_equal(a["groundtruth_is_crowd"], [False, False, True])
    np.testing.assert_allclose(a["groundtruth_area"], [80.0, 100.0, 20.0])
    masks = a["groundtruth_instance_masks"]
    assert masks.shape == (3, H, W)
    polygons = [_square(2, 3, 12, 11), _square(25, 15, 29, 19)]
    for mask, polygon in zip(masks[:2], polygons):
        expected = mask_api.decode(mask_api.merge(mask_api.frPyObjects(polygon, H, W)))
        np.testing.assert_array_equal(mask, expected)
    np.testing.assert_array_equal(masks[2], CROWD)
    b = records[102]
    assert b["groundtruth_boxes"].shape == (0, 4) and b["groundtruth_classes"].shape == (0,)
    assert b["groundtruth_instance_masks"].shape == (0, H, W)


def test_groundtruth_json_matches_the_records_and_scores_them(converted):
    _, out, summary = converted
    groundtruth = json.loads((out / summary["annotation_file"]).read_text())
    assert [i["id"] for i in groundtruth["images"]] == [101, 102]  # bad records left out
    assert [(c["id"], c["name"]) for c in groundtruth["categories"]] == [
        (1, "cat"), (2, "dog"), (3, "bird"),
    ]  # fmt: skip
    anns = {a["id"]: a for a in groundtruth["annotations"]}
    assert sorted(anns) == [1, 2, 3]
    assert anns[2]["bbox"] == [25.0, 15.0, 5.0, 5.0] and anns[2]["category_id"] == 2
    assert anns[3]["iscrowd"] == 1
    # The records' own boxes as detections score perfectly against the written file: the
    # source ids are the COCO image ids and the class ids agree.
    records = _decode_split(out, "validation")
    ap = convert_support.own_boxes_ap(
        out / summary["annotation_file"], records, lambda r: ~r["groundtruth_is_crowd"], (H, W)
    )
    assert ap == pytest.approx(1.0)


def test_category_names_must_agree_across_splits(tmp_path):
    write_fixture(tmp_path, "train")
    path = write_fixture(tmp_path, "validation")
    data = json.loads(path.read_text())
    data["categories"][0]["name"] = "sparrow"
    path.write_text(json.dumps(data))
    with pytest.raises(errors.ConversionError, match="'bird'.*'sparrow'"):
        coco.CocoSource(str(tmp_path), splits=("train", "validation"))


def test_source_lists_and_loads_without_beam(tmp_path):
    write_fixture(tmp_path)
    source = coco.CocoSource(str(tmp_path), splits=("validation",))
    refs = {ref.key: ref for ref in source.list_records("validation")}
    assert sorted(refs) == ["a.png", "b.png", "c.png", "d.png", "e.png", "f.png"]
    assert refs["c.png"].problem[0] == errors.UNKNOWN_CATEGORY
    with pytest.raises(errors.BadRecordError) as info:
        source.load(refs["d.png"])
    assert info.value.reason == errors.IMAGE_SIZE_MISMATCH and "21x30" in info.value.detail
    # Boxes only (no masks asked): a record without segmentations is fine.
    assert source.load(refs["a.png"]).class_histogram == {1: 1, 2: 1, 3: 1}


def test_shapes_for_detection(tmp_path):
    source = tmp_path / "shapes"
    summary = pipeline.run(
        str(source), str(tmp_path / "out"), num_shards=1, source="shapes", task="detection",
        shapes_options={"num_train": 3, "num_validation": 2, "image_size": (32, 32), "seed": 2},
    )  # fmt: skip
    assert summary["task"] == "detection"
    assert summary["class_names"] == ["background", "circle", "square", "triangle"]
    assert summary["annotation_file"] == "annotations/instances_validation.json"
    shapes_json = json.loads((source / "annotations" / "instances_validation.json").read_text())
    records = _decode_split(tmp_path / "out", "validation")
    assert sorted(records) == [image["id"] for image in shapes_json["images"]]
    for image in shapes_json["images"]:
        anns = [a for a in shapes_json["annotations"] if a["image_id"] == image["id"]]
        record = records[image["id"]]
        boxes = [
            [y / 32, x / 32, (y + h) / 32, (x + w) / 32] for x, y, w, h in (a["bbox"] for a in anns)
        ]
        np.testing.assert_allclose(record["groundtruth_boxes"], boxes, rtol=1e-6)
        # Shapes' category ids are already 1..3, so they are kept.
        np.testing.assert_array_equal(
            record["groundtruth_classes"], [a["category_id"] for a in anns]
        )
        np.testing.assert_allclose(record["groundtruth_area"], [a["area"] for a in anns])


def test_run_rejects_task_and_source_mismatches(tmp_path):
    with pytest.raises(errors.ConversionError, match="source 'coco' converts for task"):
        pipeline.run(str(tmp_path), str(tmp_path / "o"), source="coco", task="classification")
    with pytest.raises(errors.ConversionError, match="use source 'coco'"):
        pipeline.run(str(tmp_path), str(tmp_path / "o"), source="folders", task="detection")
    with pytest.raises(errors.ConversionError, match="annotation file .* does not exist"):
        pipeline.run(str(tmp_path), str(tmp_path / "o"), source="coco", task="detection")


def test_cli_coco_arguments(monkeypatch, capsys):
    seen = convert_support.capture_run(monkeypatch)
    argv = ["coco", "--images", "val2017", "--annotations", "a/instances_val2017.json",
            "--output", "o", "--runner", "DataflowRunner"]  # fmt: skip
    assert cli.main(argv) == 0
    assert (seen["source"], seen["task"], seen["splits"]) == ("coco", "detection", ["val2017"])
    assert seen["annotation_files"] == {"val2017": "a/instances_val2017.json"}
    assert seen["image_dirs"] == {"val2017": "val2017"}
    assert seen["beam_args"] == ["--runner", "DataflowRunner"]

    argv = ["--source", "coco", "--annotations", "train=t.json", "--annotations",
            "validation=gs://b/v.json", "--images", "train=gs://b/train", "--images",
            "validation=gs://b/val", "--include-masks", "--output", "o"]  # fmt: skip
    assert cli.main(argv) == 0
    assert seen["splits"] == ["train", "validation"] and seen["include_masks"] is True
    assert seen["annotation_files"] == {"train": "t.json", "validation": "gs://b/v.json"}
    assert seen["image_dirs"]["validation"] == "gs://b/val"

    assert (
        cli.main(["coco", "--splits", "validation", "--annotations", "x.json", "--output", "o"])
        == 0
    )
    assert seen["splits"] == ["validation"] and seen["annotation_files"] == {"validation": "x.json"}
    capsys.readouterr()

    # A plain path with two splits is ambiguous; --annotations outside coco is a mistake.
    assert cli.main(["coco", "--images", "d", "--annotations", "train=t.json",
                     "--annotations", "validation=v.json", "--output", "o"]) == 1  # fmt: skip
    assert "needs exactly one split" in capsys.readouterr().err
    assert cli.main(["--source", "folders", "--annotations", "a.json", "--output", "o"]) == 1
    assert "belong to --source coco" in capsys.readouterr().err


def test_vision_pipelines_convert_coco(tmp_path, capsys):
    from pipelines.cli import main as vision_pipelines

    path = write_fixture(tmp_path)
    out = tmp_path / "out"
    argv = ["convert", "coco", "--images", str(tmp_path / "images" / "validation"),
            "--annotations", str(path), "--output", str(out), "--num-shards", "1"]  # fmt: skip
    assert vision_pipelines(argv) == 0
    printed = capsys.readouterr().out
    assert "validation: 2 records in 1 shards, 4 bad" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["source"] == "coco" and summary["annotation_file"]
    assert (out / "annotations" / "instances_validation.json").exists()

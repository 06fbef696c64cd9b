"""Segmentation records from COCO panoptic: the 'coco_panoptic' source behind coco + segmentation.

The fixture is a hand-made panoptic split whose segment layout is known pixel by pixel, so the
decoded semantic, category and instance masks are compared with masks computed here from that
layout, and each bad-data rule has its own image.
"""

import io
import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from components.convert_dataset import __main__ as cli
from components.convert_dataset import coco_panoptic, errors, pipeline, sources
from vision_core.dataloaders import segmentation_input
from vision_core.dataloaders import tf_example_keys as keys

H, W = 12, 16
CATEGORIES = [
    {"id": 150, "name": "road", "isthing": 0},
    {"id": 1, "name": "person", "isthing": 1},
    {"id": 92, "name": "sky", "isthing": 0},
    {"id": 5, "name": "car", "isthing": 1},
]
# COCO ids sorted (1, 5, 92, 150) become semantic classes 1..4; void is 0.
CLASS_OF = {1: 1, 5: 2, 92: 3, 150: 4}
# Image a's segments in segments_info order: (segment id, category id, iscrowd). 70000 needs
# the blue channel (70000 = 112 + 17*256 + 1*256²); road (9) is listed but not painted.
SEGMENTS_A = [(1000, 92, 0), (70000, 1, 0), (300, 5, 0), (7, 1, 1), (9, 150, 0)]


def _layout_a():
    ids = np.zeros((H, W), np.int64)  # rows 10-11 stay void
    ids[0:4, :] = 1000  # sky
    ids[4:10, 0:5] = 70000  # a person
    ids[4:10, 5:9] = 300  # a car
    ids[4:10, 9:16] = 7  # a crowd of people
    ids[9, 15] = 0  # one void pixel inside
    return ids


def _layout_b():
    ids = np.full((H, W), 42, np.int64)  # road
    ids[:, :3] = 0
    return ids


def _rgb(ids):
    return np.stack([ids % 256, ids // 256 % 256, ids // 256**2], axis=-1).astype(np.uint8)


def _png(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def _palette_png(ids):
    """A mode-P PNG whose palette colours encode the segment ids."""
    values, index = np.unique(ids, return_inverse=True)
    image = Image.fromarray(index.reshape(ids.shape).astype(np.uint8), mode="P")
    image.putpalette(_rgb(values).ravel().tolist())
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _image(height, width, seed):
    rng = np.random.default_rng(seed)
    return _png(rng.integers(0, 255, (height, width, 3), np.uint8))


def _expected(layout, segments, void_label=0):
    """Semantic, category and instance masks written pixel by pixel from the layout."""
    info = {s: (c, position) for position, (s, c, _) in enumerate(segments)}
    thing = {c["id"]: c["isthing"] for c in CATEGORIES}
    semantic = np.full((H, W), void_label, np.uint8)
    category = np.zeros((H, W), np.uint8)
    instance = np.zeros((H, W), np.uint8)
    for y in range(H):
        for x in range(W):
            segment = int(layout[y, x])
            if segment == 0:
                continue
            cat, position = info[segment]
            semantic[y, x] = CLASS_OF[cat]
            category[y, x] = cat
            instance[y, x] = position + 1 if thing[cat] else 0
    return semantic, category, instance


def write_fixture(root, split="validation"):
    """Good images a, b; bad images c-i; one annotation of an image that is not listed."""
    image_dir = root / "images" / split
    png_dir = root / "annotations" / f"panoptic_{split}"
    image_dir.mkdir(parents=True)
    png_dir.mkdir(parents=True)
    names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"]
    for seed, name in enumerate(names):
        if name != "g":  # g's image file is missing
            (image_dir / f"{name}.png").write_bytes(_image(H, W, seed))
    pngs = {
        "a": _png(_rgb(_layout_a())),
        "b": _palette_png(_layout_b()),  # palette PNG: its colours are the ids
        "d": _png(_rgb(_layout_b())[:, :-1]),  # one column short
        "e": _png(_rgb(_layout_b())),  # paints 42, which its segments_info lacks
        "f": _png(_rgb(_layout_b())),
        "g": _png(_rgb(_layout_b())),
        "h": _png(_layout_b().astype(np.uint8)),  # greyscale, not RGB
        "i": _png(_rgb(_layout_b())),
    }  # c has no PNG; i has no annotation
    for name, data in pngs.items():
        (png_dir / f"{name}.png").write_bytes(data)
    road = [{"id": 42, "category_id": 150, "iscrowd": 0}]
    segments = {
        "a": [{"id": s, "category_id": c, "iscrowd": crowd} for s, c, crowd in SEGMENTS_A],
        "b": road,
        "c": road,
        "d": road,
        "e": [{"id": 43, "category_id": 150, "iscrowd": 0}],
        "f": [{"id": 42, "category_id": 99, "iscrowd": 0}],
        "g": road,
        "h": road,
    }
    images = [
        {"id": 11 + i, "file_name": f"{name}.png", "height": H, "width": W}
        for i, name in enumerate(names)
    ]
    annotations = [
        {"image_id": 11 + names.index(name), "file_name": f"{name}.png", "segments_info": info}
        for name, info in segments.items()
    ]
    annotations.append({"image_id": 999, "file_name": "z.png", "segments_info": road})
    path = root / "annotations" / f"panoptic_{split}.json"
    path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES})
    )
    return path


def _decode_split(output_dir, split):
    """{source id: {'image', 'semantic', 'category', 'instance'}} as uint8 arrays."""
    decoder = segmentation_input.Decoder()
    panoptic = {
        keys.PANOPTIC_CATEGORY_MASK: tf.io.FixedLenFeature((), tf.string, default_value=""),
        keys.PANOPTIC_INSTANCE_MASK: tf.io.FixedLenFeature((), tf.string, default_value=""),
        keys.IMAGE_SOURCE_ID: tf.io.FixedLenFeature((), tf.string),
    }

    def png(data):
        return tf.io.decode_png(data, channels=1)[..., 0].numpy() if len(data.numpy()) else None

    out = {}
    files = sorted(str(p) for p in output_dir.glob(f"{split}-*.tfrecord"))
    for record in tf.data.TFRecordDataset(files):
        decoded = decoder.decode(record)
        extra = tf.io.parse_single_example(record, panoptic)
        out[int(extra[keys.IMAGE_SOURCE_ID])] = {
            "image": tf.io.decode_image(decoded[keys.IMAGE_ENCODED], channels=3).numpy(),
            "size": (int(decoded[keys.IMAGE_HEIGHT]), int(decoded[keys.IMAGE_WIDTH])),
            "semantic": png(decoded[keys.SEGMENTATION_CLASS_ENCODED]),
            "category": png(extra[keys.PANOPTIC_CATEGORY_MASK]),
            "instance": png(extra[keys.PANOPTIC_INSTANCE_MASK]),
        }
    return out


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("panoptic")
    write_fixture(root)
    out = root / "out"
    summary = pipeline.run(
        str(root), str(out), splits=["validation"], num_shards=2, source="coco",
        task="segmentation",
    )  # fmt: skip
    return root, out, summary


def test_registered_for_coco_segmentation():
    assert sources.SOURCES["coco_panoptic"] is coco_panoptic.CocoPanopticSource


def test_summary_classes_histogram_and_bad_records(converted):
    _, out, summary = converted
    assert summary["task"] == "segmentation"
    assert summary["class_names"] == ["void", "person", "car", "sky", "road"]
    split = summary["splits"]["validation"]
    assert split["records"] == 2
    assert split["annotations_without_image"] == 1
    bad = [json.loads(line) for line in (out / "bad_records.jsonl").read_text().splitlines()]
    assert {b["record_id"]: b["reason"] for b in bad} == {
        "c.png": errors.MASK_MISSING,
        "d.png": errors.MASK_SIZE_MISMATCH,
        "e.png": errors.SEGMENT_UNKNOWN,
        "f.png": errors.UNKNOWN_CATEGORY,
        "g.png": errors.IMAGE_MISSING,
        "h.png": errors.MASK_NOT_RGB,
        "i.png": errors.MASK_MISSING,
    }
    by_id = {b["record_id"]: b for b in bad}
    assert "{42: 156}" in by_id["e.png"]["detail"] and by_id["e.png"]["path"].endswith("e.png")
    assert "no annotation for image id 19" in by_id["i.png"]["detail"]
    semantic_a = _expected(_layout_a(), SEGMENTS_A)[0]
    semantic_b = np.where(_layout_b() == 0, 0, CLASS_OF[150])
    counts = np.bincount(np.concatenate([semantic_a.ravel(), semantic_b.ravel()]))
    assert split["class_pixel_histogram"] == {str(c): int(n) for c, n in enumerate(counts) if n}


def test_records_decode_to_the_exact_masks(converted):
    root, out, _ = converted
    records = _decode_split(out, "validation")
    assert sorted(records) == [11, 12]
    a, b = records[11], records[12]
    source = np.asarray(Image.open(root / "images" / "validation" / "a.png").convert("RGB"))
    assert a["size"] == (H, W)
    np.testing.assert_array_equal(a["image"], source)
    semantic, category, instance = _expected(_layout_a(), SEGMENTS_A)
    np.testing.assert_array_equal(a["semantic"], semantic)
    np.testing.assert_array_equal(a["category"], category)
    np.testing.assert_array_equal(a["instance"], instance)
    # Spot values, so the expected-mask helper cannot hide a shared mistake: the person is
    # segments_info entry 1 (instance 2), the crowd entry 3 (instance 4), sky is stuff.
    assert (a["semantic"][5, 2], a["category"][5, 2], a["instance"][5, 2]) == (1, 1, 2)
    assert (a["semantic"][5, 12], a["category"][5, 12], a["instance"][5, 12]) == (1, 1, 4)
    assert (a["semantic"][0, 0], a["category"][0, 0], a["instance"][0, 0]) == (3, 92, 0)
    assert (a["semantic"][11, 0], a["category"][11, 0], a["instance"][11, 0]) == (0, 0, 0)
    road = _layout_b() != 0
    np.testing.assert_array_equal(b["semantic"], np.where(road, 4, 0))
    np.testing.assert_array_equal(b["category"], np.where(road, 150, 0))
    np.testing.assert_array_equal(b["instance"], np.zeros((H, W), np.uint8))


def test_segmentation_parser_reads_the_records(converted):
    _, out, _ = converted
    files = sorted(str(p) for p in out.glob("validation-*.tfrecord"))
    decoder = segmentation_input.Decoder()
    parser = segmentation_input.Parser(output_size=[H, W])
    masks = []
    for record in tf.data.TFRecordDataset(files):
        _, labels = parser(decoder.decode(record), is_training=False)
        masks.append(labels["masks"][..., 0].numpy())
    semantic = _expected(_layout_a(), SEGMENTS_A)[0]
    assert any(np.array_equal(m, semantic) for m in masks)


def test_void_label_255_and_no_panoptic_masks(tmp_path):
    write_fixture(tmp_path)
    out = tmp_path / "out"
    pipeline.run(
        str(tmp_path), str(out), splits=["validation"], num_shards=1, source="coco",
        task="segmentation",
        extra_source_options={"void_label": 255, "include_panoptic_masks": False},
    )  # fmt: skip
    a = _decode_split(out, "validation")[11]
    np.testing.assert_array_equal(a["semantic"], _expected(_layout_a(), SEGMENTS_A, 255)[0])
    assert a["category"] is None and a["instance"] is None


def test_source_checks_categories_and_options(tmp_path):
    path = write_fixture(tmp_path)
    with pytest.raises(errors.ConversionError, match="void_label must be one of"):
        coco_panoptic.CocoPanopticSource(str(tmp_path), splits=("validation",), void_label=1)
    data = json.loads(path.read_text())
    data["categories"].append({"id": 300, "name": "wide", "isthing": 0})
    path.write_text(json.dumps(data))
    with pytest.raises(errors.ConversionError, match=r"category ids \[300\].*8-bit"):
        coco_panoptic.CocoPanopticSource(str(tmp_path), splits=("validation",))
    source = coco_panoptic.CocoPanopticSource(
        str(tmp_path), splits=("validation",), include_panoptic_masks=False
    )
    assert source.category_ids == (1, 5, 92, 150, 300)
    assert source.class_names[-1] == "wide"

    train = write_fixture(tmp_path / "two", "train")
    data = json.loads(train.read_text())
    data["categories"][0]["isthing"] = 1
    train.write_text(json.dumps(data))
    write_fixture(tmp_path / "two", "validation")
    with pytest.raises(errors.ConversionError, match="splits must agree"):
        coco_panoptic.CocoPanopticSource(str(tmp_path / "two"), splits=("train", "validation"))


def test_segment_ids_follow_the_coco_encoding():
    rgb = np.array([[[1, 0, 0], [0, 1, 0], [0, 0, 1], [255, 255, 255]]], np.uint8)
    np.testing.assert_array_equal(coco_panoptic.segment_ids(rgb), [[1, 256, 65536, 256**3 - 1]])


def test_cli_converts_coco_panoptic_paths(tmp_path, capsys):
    write_fixture(tmp_path)
    out = tmp_path / "out"
    argv = ["coco", "--task", "segmentation",
            "--annotations", str(tmp_path / "annotations" / "panoptic_validation.json"),
            "--masks", str(tmp_path / "annotations" / "panoptic_validation"),
            "--images", str(tmp_path / "images" / "validation"),
            "--output", str(out), "--num-shards", "1"]  # fmt: skip
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    # The split comes from the file name panoptic_validation.json.
    assert "validation: 2 records in 1 shards, 7 bad" in printed
    assert "classes: void, person, car, sky, road" in printed
    assert sorted(_decode_split(out, "validation")) == [11, 12]

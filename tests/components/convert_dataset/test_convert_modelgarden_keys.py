"""Every feature Model Garden's decoders read is in our converter's records, in the type they
parse it as, and our decoders return what the source files hold.

The specs below are Model Garden's parse specs, listed as facts from tf-models-official 2.20
(`official/vision/dataloaders/tf_example_decoder.py` `TfExampleDecoder.__init__`,
`tf_example_label_map_decoder.py`, `segmentation_input.py` `Decoder`, `classification_input.py`
`Decoder` with its DEFAULT_*_FIELD_KEY, and, for panoptic, the GitHub source of
`official/projects/panoptic/dataloaders/panoptic_maskrcnn_input.py`, which the wheel omits).
They are parsed strictly here (no defaults), so a missing key or a wrong list type fails. The
comparison against Model Garden's own decoders runs in
`benchmarks/modelgarden_tfrecord_interop.py` (it needs the reference venv, which CI lacks).
"""

import json

import convert_support
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from components.convert_dataset import __main__ as cli
from components.convert_dataset import coco, errors, pipeline, rle, shapes
from vision_core.dataloaders import classification_input, segmentation_input
from vision_core.dataloaders import tf_example_keys as keys
from vision_core.dataloaders.tf_example_decoder import TfExampleDecoder

_BYTES, _INT, _FLOAT = tf.string, tf.int64, tf.float32
# {task: {key: (dtype, fixed length?)}}: what Model Garden's decoder for that task parses.
MODEL_GARDEN_READS = {
    "detection": {
        "image/encoded": (_BYTES, True),
        "image/height": (_INT, True),
        "image/width": (_INT, True),
        "image/source_id": (_BYTES, True),
        "image/object/bbox/xmin": (_FLOAT, False),
        "image/object/bbox/xmax": (_FLOAT, False),
        "image/object/bbox/ymin": (_FLOAT, False),
        "image/object/bbox/ymax": (_FLOAT, False),
        "image/object/class/label": (_INT, False),
        "image/object/class/text": (_BYTES, False),  # the label-map decoder's
        "image/object/area": (_FLOAT, False),
        "image/object/is_crowd": (_INT, False),
        "image/object/mask": (_BYTES, False),  # with include_mask
    },
    "segmentation": {
        "image/encoded": (_BYTES, True),
        "image/height": (_INT, True),
        "image/width": (_INT, True),
        "image/segmentation/class/encoded": (_BYTES, True),
    },
    "classification": {
        "image/encoded": (_BYTES, True),
        "image/class/label": (_INT, True),
    },
    "panoptic": {
        "image/segmentation/class/encoded": (_BYTES, True),
        "image/panoptic/category_mask": (_BYTES, True),
        "image/panoptic/instance_mask": (_BYTES, True),
    },
}
SIZE = 32


def test_our_key_module_spells_model_gardens_keys():
    ours = {v for k, v in vars(keys).items() if k.isupper() and isinstance(v, str)}
    for task, spec in MODEL_GARDEN_READS.items():
        assert set(spec) <= ours, (task, sorted(set(spec) - ours))


def _strict_parse(files, spec):
    features = {
        key: tf.io.FixedLenFeature([], dtype) if fixed else tf.io.VarLenFeature(dtype)
        for key, (dtype, fixed) in spec.items()
    }
    return [tf.io.parse_single_example(r, features) for r in tf.data.TFRecordDataset(files)]


@pytest.fixture(scope="module")
def shapes_outputs(tmp_path_factory):
    """The same shapes files converted for detection (+ masks), segmentation, classification."""
    root = tmp_path_factory.mktemp("mgkeys")
    options = {"num_train": 2, "num_validation": 3, "image_size": (SIZE, SIZE), "seed": 5}
    shapes.generate_shapes_dataset(str(root / "shapes"), **options)
    runs = {
        "detection": {"source": "coco", "include_masks": True},
        "segmentation": {"source": "folders"},
        "classification": {"source": "shapes", "shapes_options": options},
    }
    out = {}
    for task, kwargs in runs.items():
        out[task] = root / task
        pipeline.run(
            str(root / "shapes"), str(out[task]), splits=["validation"], num_shards=1,
            task=task, **kwargs,
        )  # fmt: skip
    return root / "shapes", out


def _files(folder):
    return sorted(str(p) for p in folder.glob("validation-*.tfrecord"))


@pytest.mark.parametrize("task", ["detection", "segmentation", "classification"])
def test_records_hold_every_key_model_garden_parses(shapes_outputs, task):
    _, out = shapes_outputs
    parsed = _strict_parse(_files(out[task]), MODEL_GARDEN_READS[task])
    assert len(parsed) == 3


def test_detection_records_decode_to_the_coco_json(shapes_outputs):
    source, out = shapes_outputs
    data = json.loads((source / "annotations" / "instances_validation.json").read_text())
    decoder = TfExampleDecoder(include_mask=True)
    decoded = {}
    for record in tf.data.TFRecordDataset(_files(out["detection"])):
        d = {k: v.numpy() for k, v in decoder.decode(record).items()}
        decoded[int(d["source_id"])] = d
    assert sorted(decoded) == [image["id"] for image in data["images"]]
    for image in data["images"]:
        anns = [a for a in data["annotations"] if a["image_id"] == image["id"]]
        d = decoded[image["id"]]
        pixels = np.asarray(Image.open(source / "images" / "validation" / image["file_name"]))
        np.testing.assert_array_equal(d["image"], pixels)
        assert (int(d["height"]), int(d["width"])) == (SIZE, SIZE)
        boxes = [[y / SIZE, x / SIZE, (y + h) / SIZE, (x + w) / SIZE] for x, y, w, h in
                 (a["bbox"] for a in anns)]  # fmt: skip
        np.testing.assert_allclose(d["groundtruth_boxes"], boxes, rtol=1e-6)
        np.testing.assert_array_equal(d["groundtruth_classes"], [a["category_id"] for a in anns])
        np.testing.assert_array_equal(d["groundtruth_is_crowd"], [False] * len(anns))
        np.testing.assert_allclose(d["groundtruth_area"], [a["area"] for a in anns])
        masks = np.stack([rle.decode(a["segmentation"]) for a in anns])
        np.testing.assert_array_equal(d["groundtruth_instance_masks"], masks)


def _file_name(record):
    """The record's `image/filename`."""
    feature = {keys.IMAGE_FILENAME: tf.io.FixedLenFeature([], tf.string)}
    return tf.io.parse_single_example(record, feature)[keys.IMAGE_FILENAME].numpy().decode()


def test_segmentation_and_classification_records_decode_to_the_files(shapes_outputs):
    source, out = shapes_outputs
    decoder = segmentation_input.Decoder()
    seen = 0
    for record in tf.data.TFRecordDataset(_files(out["segmentation"])):
        d = decoder.decode(record)
        name = _file_name(record)
        image = tf.io.decode_image(d[keys.IMAGE_ENCODED], channels=3).numpy()
        mask = tf.io.decode_image(d[keys.SEGMENTATION_CLASS_ENCODED], channels=1).numpy()[..., 0]
        np.testing.assert_array_equal(
            image, np.asarray(Image.open(source / "images" / "validation" / name))
        )
        np.testing.assert_array_equal(
            mask, np.asarray(Image.open(source / "masks" / "validation" / name))
        )
        assert (int(d[keys.IMAGE_HEIGHT]), int(d[keys.IMAGE_WIDTH])) == (SIZE, SIZE)
        seen += 1
    assert seen == 3

    decoder = classification_input.Decoder()
    for record in tf.data.TFRecordDataset(_files(out["classification"])):
        d = decoder.decode(record)
        name = _file_name(record)
        mask = np.asarray(Image.open(source / "masks" / "validation" / name))
        assert int(d[keys.IMAGE_CLASS_LABEL]) == shapes.dominant_class(mask)


def _remapped_shapes_json(root):
    """The shapes validation JSON with COCO-like sparse category ids 3, 7, 12."""
    path = root / "annotations" / "instances_validation.json"
    data = json.loads(path.read_text())
    remap = {1: 3, 2: 7, 3: 12}
    for cat in data["categories"]:
        cat["id"] = remap[cat["id"]]
    for ann in data["annotations"]:
        ann["category_id"] = remap[ann["category_id"]]
    path.write_text(json.dumps(data))
    return data


def test_keep_category_ids_writes_the_coco_ids(tmp_path):
    shapes.generate_shapes_dataset(str(tmp_path), num_train=0, num_validation=2, seed=1,
                                   image_size=(SIZE, SIZE))  # fmt: skip
    data = _remapped_shapes_json(tmp_path)
    kept = coco.CocoSource(str(tmp_path), splits=("validation",), keep_category_ids=True)
    assert kept.category_ids == tuple(range(1, 13))
    assert kept.class_names[3] == "circle" and kept.class_names[12] == "triangle"
    assert kept.class_names[1] == "unused_1" and len(kept.class_names) == 13
    contiguous = coco.CocoSource(str(tmp_path), splits=("validation",))
    assert contiguous.category_ids == (3, 7, 12)
    for ref in kept.list_records("validation"):
        image_id = int(ref.paths["image_id"])
        expected = [a["category_id"] for a in data["annotations"] if a["image_id"] == image_id]
        labels = kept.load(ref).features[keys.OBJECT_CLASS_LABEL].int64_list.value
        assert list(labels) == expected
        labels = contiguous.load(ref).features[keys.OBJECT_CLASS_LABEL].int64_list.value
        assert list(labels) == [{3: 1, 7: 2, 12: 3}[c] for c in expected]


def test_keep_category_ids_rejects_id_zero(tmp_path):
    shapes.generate_shapes_dataset(str(tmp_path), num_train=0, num_validation=1,
                                   image_size=(SIZE, SIZE))  # fmt: skip
    path = tmp_path / "annotations" / "instances_validation.json"
    data = json.loads(path.read_text())
    data["categories"][0]["id"] = 0
    path.write_text(json.dumps(data))
    with pytest.raises(errors.ConversionError, match="ids >= 1"):
        coco.CocoSource(str(tmp_path), splits=("validation",), keep_category_ids=True)


def test_cli_keep_category_ids(monkeypatch, capsys):
    seen = convert_support.capture_run(monkeypatch)
    argv = ["coco", "--annotations", "instances_val2017.json", "--keep-category-ids",
            "--output", "o"]  # fmt: skip
    assert cli.main(argv) == 0
    assert seen["extra_source_options"] == {"keep_category_ids": True}
    assert cli.main(["coco", "--task", "segmentation", "--keep-category-ids", "--output", "o"]) == 1
    assert "--keep-category-ids belongs to" in capsys.readouterr().err

"""RetinaNetModel and build_retinanet: golden parameter count, outputs per mode, anchors,
output_specs, serialization.

Golden figure from /work/shared/API.md ("Measured in Model Garden 2.20 at 256x256"): RetinaNet
ResNet-50-FPN, 80 classes, 33,939,124 parameters, of which the head has 6,504,180. Forward
passes use a quarter-width ResNet-18 at 64x64 so the file stays fast.
"""

import json

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from vision_core.configs import retinanet as retinanet_cfg
from vision_core.modeling import factory
from vision_core.modeling.heads import dense_prediction_heads
from vision_core.modeling.retinanet_model import RetinaNetModel

SIZE = 64
NUM_CLASSES = 3


def _config(**overrides) -> retinanet_cfg.RetinaNet:
    data = {
        "num_classes": NUM_CLASSES,
        "input_size": [SIZE, SIZE, 3],
        "backbone": {"type": "resnet", "resnet": {"model_id": 18, "depth_multiplier": 0.25}},
        "decoder": {"type": "fpn", "fpn": {"num_filters": 16}},
        "head": {"num_convs": 1, "num_filters": 16},
        "detection_generator": {"max_num_detections": 10, "pre_nms_score_threshold": 0.0},
    }
    data.update(overrides)
    return retinanet_cfg.RetinaNet.from_dict(data)


def _spec(size=SIZE) -> tf_keras.layers.InputSpec:
    return tf_keras.layers.InputSpec(shape=[None, size, size, 3])


def _images(batch=2, size=SIZE, seed=0) -> tf.Tensor:
    return tf.random.stateless_uniform([batch, size, size, 3], seed=[seed, 1])


@pytest.fixture(scope="module")
def small_model() -> RetinaNetModel:
    tf_keras.utils.set_random_seed(0)
    return factory.build_retinanet(_spec(), _config())


def test_golden_parameter_count_resnet50_fpn():
    model = factory.build_retinanet(_spec(256), retinanet_cfg.RetinaNet(num_classes=80))
    assert model.count_params() == 33_939_124
    assert model.head.count_params() == 6_504_180
    assert isinstance(model.head, dense_prediction_heads.RetinaNetHead)


def test_training_outputs_per_level(small_model):
    outputs = small_model(_images(), training=True)
    assert sorted(outputs) == ["box_outputs", "cls_outputs"]
    for level in range(3, 8):
        size = max(1, SIZE // 2**level)
        assert outputs["cls_outputs"][str(level)].shape.as_list() == [2, size, size, 9 * 3]
        assert outputs["box_outputs"][str(level)].shape.as_list() == [2, size, size, 9 * 4]


def test_inference_outputs_detections_in_the_image(small_model):
    outputs = small_model(_images(), training=False)
    assert {"cls_outputs", "box_outputs", "detection_boxes", "detection_scores"} <= set(outputs)
    assert outputs["detection_boxes"].shape.as_list() == [2, 10, 4]
    assert outputs["detection_scores"].shape.as_list() == [2, 10]
    assert outputs["detection_classes"].shape.as_list() == [2, 10]
    assert outputs["num_detections"].shape.as_list() == [2]
    boxes = outputs["detection_boxes"].numpy()
    # Without image_shape the detections are clipped to the input image.
    assert boxes.min() >= 0.0 and boxes.max() <= SIZE
    # An untrained head scores every class at the 0.01 prior: all above threshold 0.
    assert (outputs["num_detections"].numpy() == 10).all()
    np.testing.assert_allclose(outputs["detection_scores"].numpy(), 0.01, atol=1e-3)


def test_image_shape_clips_detections(small_model):
    image_shape = tf.constant([[32.0, 40.0], [64.0, 16.0]])
    outputs = small_model(_images(), image_shape=image_shape, training=False)
    boxes = outputs["detection_boxes"].numpy()
    assert boxes[0, :, 0::2].max() <= 32.0 and boxes[0, :, 1::2].max() <= 40.0
    assert boxes[1, :, 1::2].max() <= 16.0


def test_output_specs_match_both_modes(small_model):
    specs = small_model.output_specs
    outputs = small_model(_images(), training=False)
    for key in ("cls_outputs", "box_outputs"):
        for level, shape in specs[key].items():
            assert shape.as_list() == [None, *outputs[key][level].shape.as_list()[1:]]
    for key in ("detection_boxes", "detection_scores", "detection_classes", "num_detections"):
        assert specs[key].as_list() == [None, *outputs[key].shape.as_list()[1:]]


def test_anchors_given_to_the_model_or_the_call_are_used(small_model):
    from vision_core.ops import anchor

    boxes = anchor.Anchor(3, 7, 3, [0.5, 1.0, 2.0], 4.0, [SIZE, SIZE]).multilevel_boxes
    images = _images()
    generated = small_model(images, training=False)
    given = small_model(images, anchor_boxes=boxes, training=False)
    np.testing.assert_allclose(given["detection_boxes"], generated["detection_boxes"], atol=1e-4)

    # Anchors fixed at construction replace the generated ones: the same anchors give the same
    # detections, shifted anchors move them.
    def fixed_model(anchors):
        return RetinaNetModel(
            small_model.backbone,
            small_model.decoder,
            small_model.head,
            small_model.detection_generator,
            anchor_boxes=anchors,
        )

    same = fixed_model(boxes)(images, training=False)
    np.testing.assert_allclose(same["detection_boxes"], generated["detection_boxes"], atol=1e-4)
    assert fixed_model(boxes).get_config()["num_scales"] is None
    moved = fixed_model({k: v + 8.0 for k, v in boxes.items()})(images, training=False)
    assert not np.allclose(moved["detection_boxes"], generated["detection_boxes"], atol=1.0)


def test_anchors_for_an_unknown_input_size_are_made_in_graph(small_model):
    # A serving signature with open height/width: anchors follow the runtime size.
    fn = tf.function(
        small_model._anchors_for,
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)],
    )
    dynamic = fn(_images(size=96))
    static = small_model._anchors_for(_images(size=96))
    assert sorted(dynamic) == sorted(static) == ["3", "4", "5", "6", "7"]
    for level in static:
        np.testing.assert_allclose(dynamic[level], static[level], atol=1e-4)
    assert static["3"].shape.as_list() == [12, 12, 36]


def test_intermediate_features_and_checkpoint_items(small_model):
    outputs = small_model(_images(), output_intermediate_features=True, training=True)
    assert {"backbone_2", "backbone_5", "decoder_3", "decoder_7"} <= set(outputs)
    assert sorted(small_model.checkpoint_items) == ["backbone", "decoder", "head"]


def test_attribute_heads_reach_the_outputs():
    config = _config(
        head={
            "num_convs": 1,
            "num_filters": 16,
            "attribute_heads": [{"name": "depth", "type": "regression", "size": 1}],
        }
    )
    model = factory.build_retinanet(_spec(), config)
    outputs = model(_images(), training=True)
    assert outputs["attribute_outputs"]["depth"]["3"].shape.as_list() == [2, 8, 8, 9]
    assert model.output_specs["attribute_outputs"]["depth"]["7"].as_list() == [None, 1, 1, 9]


def test_head_anchor_count_must_match_the_anchor_settings(small_model):
    with pytest.raises(ValueError, match="9 anchors per location but num_scales=2"):
        RetinaNetModel(small_model.backbone, small_model.decoder, small_model.head, num_scales=2)


def test_nasfpn_decoder_and_separable_head_from_config():
    config = _config(
        decoder={"type": "nasfpn", "nasfpn": {"num_filters": 16, "num_repeats": 1}},
        head={"num_convs": 1, "num_filters": 16, "use_separable_conv": True},
    )
    model = factory.build_retinanet(
        _spec(128), config, l2_regularizer=tf_keras.regularizers.L2(1e-4)
    )
    assert type(model.decoder).__name__ == "NASFPN"
    assert model.losses
    outputs = model(_images(size=128), training=True)
    assert outputs["cls_outputs"]["7"].shape.as_list() == [2, 1, 1, 27]


def test_generator_settings_reach_the_generator_and_unknown_ones_are_errors():
    import dataclasses

    config = _config(detection_generator={"max_num_detections": 7, "nms_iou_threshold": 0.3})
    generator = factory.build_retinanet(_spec(), config).detection_generator.get_config()
    assert (generator["max_num_detections"], generator["nms_iou_threshold"]) == (7, 0.3)

    @dataclasses.dataclass
    class WithExtra(retinanet_cfg.DetectionGenerator):
        not_a_generator_argument: int = 0

    with pytest.raises(ValueError, match="model.detection_generator.not_a_generator_argument"):
        factory._build_multilevel_detection_generator(
            WithExtra(not_a_generator_argument=1), _spec()
        )
    # At its default the extra field is not an error.
    factory._build_multilevel_detection_generator(WithExtra(), _spec())


def test_config_round_trip_gives_the_same_outputs(small_model):
    config = json.loads(json.dumps(small_model.get_config()))
    clone = RetinaNetModel.from_config(config)
    images = _images()
    clone(images, training=True)
    clone.set_weights(small_model.get_weights())
    expected = small_model(images, training=False)
    got = clone(images, training=False)
    for key in ("detection_boxes", "detection_scores"):
        np.testing.assert_allclose(got[key], expected[key], atol=1e-5)
    assert clone.get_config()["num_scales"] == 3

"""RetinaNet model configs: Model Garden's defaults, YAML-shaped construction, dotted-path errors.

Defaults checked against Model Garden 2.20's official/vision/configs/retinanet.py (Anchor,
AttributeHead, RetinaNetHead, DetectionGenerator, RetinaNet) and configs/common.py
(TFLitePostProcessingConfig).
"""

import pytest

from vision_core.configs import retinanet
from vision_core.hyperparams import ConfigError


def test_defaults_follow_model_garden():
    model = retinanet.RetinaNet()
    assert (model.num_classes, model.input_size) == (0, [])
    assert (model.min_level, model.max_level) == (3, 7)
    assert model.anchor.as_dict() == {
        "num_scales": 3,
        "aspect_ratios": [0.5, 1.0, 2.0],
        "anchor_size": 4.0,
    }
    assert model.backbone.type == "resnet" and model.backbone.resnet.model_id == 50
    assert model.decoder.type == "fpn" and model.decoder.fpn.num_filters == 256
    assert model.head.as_dict() == {
        "num_convs": 4,
        "num_filters": 256,
        "use_separable_conv": False,
        "attribute_heads": [],
        "share_classification_heads": False,
        "share_level_convs": True,
    }
    generator = model.detection_generator
    assert generator.apply_nms and generator.decode_boxes and not generator.use_cpu_nms
    assert (generator.pre_nms_top_k, generator.max_num_detections) == (5000, 100)
    assert (generator.pre_nms_score_threshold, generator.nms_iou_threshold) == (0.05, 0.5)
    assert generator.nms_version == "v2" and generator.soft_nms_sigma is None
    assert generator.return_decoded is None and generator.use_class_agnostic_nms is False
    assert generator.box_coder_weights is None
    assert generator.tflite_post_processing.max_detections == 200
    assert model.norm_activation.activation == "relu"
    attribute = retinanet.AttributeHead()
    assert attribute.as_dict() == {
        "name": "",
        "type": "regression",
        "size": 1,
        "prediction_tower_name": "",
        "num_convs": None,
        "num_filters": None,
    }


def test_from_dict_builds_nested_attribute_heads_and_decoders():
    model = retinanet.RetinaNet.from_dict(
        {
            "num_classes": 4,
            "input_size": [256, 256, 3],
            "decoder": {"type": "nasfpn", "nasfpn": {"num_repeats": 3}},
            "head": {
                "num_convs": 2,
                "attribute_heads": [
                    {"name": "depth", "type": "regression", "size": 1},
                    {"name": "kind", "type": "classification", "size": 3},
                ],
            },
            "detection_generator": {"nms_version": "v1", "soft_nms_sigma": 0.5},
        }
    )
    assert model.decoder.get().num_repeats == 3
    assert [h.name for h in model.head.attribute_heads] == ["depth", "kind"]
    assert isinstance(model.head.attribute_heads[1], retinanet.AttributeHead)
    assert model.detection_generator.soft_nms_sigma == 0.5
    again = retinanet.RetinaNet.from_dict(model.as_dict())
    assert again == model


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"min_level": 5, "max_level": 4}, "model.min_level: 5 is greater than max_level 4"),
        ({"input_size": [256, 256]}, "model.input_size"),
        ({"anchor": {"num_scales": 0}}, "model.anchor.num_scales"),
        ({"anchor": {"aspect_ratios": []}}, "model.anchor.aspect_ratios"),
        ({"head": {"attribute_heads": [{"type": "ranking"}]}}, r"attribute_heads\[0\].type"),
        (
            {"head": {"attribute_heads": [{"name": "a"}, {"name": "a"}]}},
            r"model.head.attribute_heads\[1\].name",
        ),
        (
            {
                "head": {
                    "share_classification_heads": True,
                    "attribute_heads": [{"name": "a", "prediction_tower_name": "t"}],
                }
            },
            r"attribute_heads\[0\].prediction_tower_name",
        ),
        ({"detection_generator": {"nms_version": "v9"}}, "model.detection_generator.nms_version"),
        (
            {"detection_generator": {"nms_iou_threshold": 1.5}},
            "model.detection_generator.nms_iou_threshold",
        ),
        (
            {"detection_generator": {"box_coder_weights": [1.0, 1.0]}},
            "model.detection_generator.box_coder_weights",
        ),
        ({"decoder": {"type": "nasfpn", "nasfpn": {"repeats": 3}}}, "model.decoder.nasfpn.repeats"),
    ],
)
def test_bad_values_name_the_dotted_path(data, match):
    with pytest.raises(ConfigError, match=match):
        retinanet.RetinaNet.from_dict(data, path="model")

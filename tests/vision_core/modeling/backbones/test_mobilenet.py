"""Tests for vision_core.modeling.backbones.mobilenet.

Golden parameter counts of MobileNetV1/V2/V3Large/V3Small (filter_size_scale 1.0) come from
/work/shared/API.md (Model Garden's own figures). The others were measured in Model Garden 2.20
(tf-models-official 2.20, TF 2.20) at 224x224 with

    ~/.cache/modelgarden-venv/bin/python -c "import tf_keras; \
      from official.vision.modeling.backbones import mobilenet as m; \
      print(m.MobileNet('MobileNetV3EdgeTPU', filter_size_scale=1.0, \
        input_specs=tf_keras.layers.InputSpec(shape=[None, 224, 224, 3])).count_params())"

`count_params()` includes the BatchNorm moving statistics and does not depend on the image size
(our counts at 64x64 were checked equal to Model Garden's at 224x224), so the tests build at
64x64 and run a forward pass on the same models.
"""

import json

import numpy as np
import pytest
import tf_keras

from vision_core.configs import backbones as backbone_configs
from vision_core.configs import common
from vision_core.modeling.backbones import mobilenet, registry
from vision_core.modeling.layers import nn_blocks

# (model_id, filter_size_scale): (params, final channels, final features pooled to 1x1)
COUNTS = {
    ("MobileNetV1", 1.0): (3_228_864, 1024, False),  # API.md
    ("MobileNetV2", 1.0): (2_257_984, 1280, False),  # API.md
    ("MobileNetV3Large", 1.0): (4_226_432, 1280, True),  # API.md
    ("MobileNetV3Small", 1.0): (1_529_968, 1024, True),  # API.md
    # Measured in Model Garden 2.20 (command in the module docstring):
    ("MobileNetV3EdgeTPU", 1.0): (2_849_312, 1280, False),
    ("MobileNetMultiAVG", 1.0): (3_704_416, 1280, True),
    ("MobileNetMultiMAX", 1.0): (3_174_560, 1280, True),
    ("MobileNetV2", 0.5): (706_224, 1280, False),  # finegrain mode keeps the last 1280
    ("MobileNetV1", 0.5): (829_536, 512, False),
}
SIZE = 64


def _specs(size=SIZE):
    return tf_keras.layers.InputSpec(shape=[None, size, size, 3])


def _images(size=SIZE):
    return np.random.default_rng(0).uniform(-1, 1, (2, size, size, 3)).astype(np.float32)


def _check_outputs_match_specs(network, outputs):
    assert sorted(outputs) == sorted(network.output_specs)
    for level, tensor in outputs.items():
        assert tensor.shape.as_list() == [2, *network.output_specs[level].as_list()[1:]]
        assert np.all(np.isfinite(tensor.numpy()))


@pytest.mark.parametrize("model_id, scale", sorted(COUNTS))
def test_param_count_and_outputs(model_id, scale):
    params, final_channels, pooled = COUNTS[(model_id, scale)]
    network = mobilenet.MobileNet(model_id=model_id, filter_size_scale=scale, input_specs=_specs())
    assert network.count_params() == params

    outputs = network(_images(), training=False)
    _check_outputs_match_specs(network, outputs)
    # Model Garden returns level '6' (the last features) but leaves it out of output_specs.
    assert sorted(outputs) == ["2", "3", "4", "5", "6"]
    for level in "2345":
        assert outputs[level].shape[1] == SIZE // 2 ** int(level)
    final_size = 1 if pooled else SIZE // 32
    assert network.output_specs["6"].as_list() == [None, final_size, final_size, final_channels]


def test_output_stride_16_and_8_use_dilation():
    os16 = mobilenet.MobileNet(model_id="MobileNetV2", output_stride=16, input_specs=_specs())
    _check_outputs_match_specs(os16, os16(_images(), training=False))
    # Past the output stride, endpoints share its level; the last features follow it.
    assert {k: v.as_list() for k, v in os16.output_specs.items()} == {
        "2": [None, 16, 16, 24],
        "3": [None, 8, 8, 32],
        "4": [None, 4, 4, 320],
        "5": [None, 4, 4, 1280],
    }
    os8 = mobilenet.MobileNet(model_id="MobileNetV2", output_stride=8, input_specs=_specs())
    _check_outputs_match_specs(os8, os8(_images(), training=False))
    assert {k: v.as_list() for k, v in os8.output_specs.items()} == {
        "2": [None, 16, 16, 24],
        "3": [None, 8, 8, 320],
        "4": [None, 8, 8, 1280],
    }
    assert os8.count_params() == COUNTS[("MobileNetV2", 1.0)][0]
    blocks = [b for b in os8.layers if isinstance(b, nn_blocks.InvertedBottleneckBlock)]
    # Model Garden's dilation schedule for stride 8 (checked numerically against it).
    assert [b.get_config()["dilation_rate"] for b in blocks] == [1] * 6 + [2] * 8 + [4] * 3
    assert all(b.get_config()["strides"] == 1 for b in blocks[6:])


def test_mobilenet_v1_output_stride_8():
    network = mobilenet.MobileNet(model_id="MobileNetV1", output_stride=8, input_specs=_specs())
    _check_outputs_match_specs(network, network(_images(), training=False))
    assert {k: v.as_list() for k, v in network.output_specs.items()} == {
        "2": [None, 16, 16, 128],
        "3": [None, 8, 8, 1024],
        "4": [None, 8, 8, 1024],
    }


def test_intermediate_endpoints_and_linear_stochastic_depth():
    network = mobilenet.MobileNet(
        model_id="MobileNetV3Small",
        input_specs=_specs(),
        output_intermediate_endpoints=True,
        stochastic_depth_drop_rate=0.2,
        flat_stochastic_depth_drop_rate=False,
    )
    outputs = network(_images(), training=False)
    _check_outputs_match_specs(network, outputs)
    assert sorted(outputs) == ["2", "2/depthwise", "3", "3/depthwise", "4", "4/depthwise"] + [
        "5",
        "5/depthwise",
        "6",
    ]
    assert network.output_specs["3/depthwise"].as_list() == [None, 8, 8, 88]

    specs = mobilenet.block_spec_decoder("MobileNetV3Small", 1.0)
    expected = [
        pytest.approx(0.2 * (i + 1) / len(specs))
        for i, spec in enumerate(specs)
        if spec.block_fn == "invertedbottleneck"
    ]
    blocks = [b for b in network.layers if isinstance(b, nn_blocks.InvertedBottleneckBlock)]
    assert [b.get_config()["stochastic_depth_drop_rate"] for b in blocks] == expected


def test_get_config_round_trip():
    network = mobilenet.MobileNet(
        model_id="MobileNetV3Small",
        filter_size_scale=0.75,
        input_specs=_specs(32),
        kernel_regularizer=tf_keras.regularizers.L2(1e-4),
        output_stride=16,
    )
    config = json.loads(json.dumps(network.get_config()))
    rebuilt = mobilenet.MobileNet.from_config(config)
    assert rebuilt.get_config() == network.get_config()
    assert rebuilt.count_params() == network.count_params() == 1_026_552  # measured, MG 2.20
    assert rebuilt.output_specs == network.output_specs


def test_builder_reads_backbone_and_norm_activation_configs():
    builder = registry.lookup_backbone_builder("mobilenet")
    config = backbone_configs.Backbone.from_dict(
        {"type": "mobilenet", "mobilenet": {"model_id": "MobileNetV3Small", "output_stride": 16}}
    )
    network = builder(
        input_specs=_specs(),
        backbone_config=config,
        norm_activation_config=common.NormActivation(norm_momentum=0.9, norm_epsilon=1e-5),
        l2_regularizer=tf_keras.regularizers.L2(5e-5),
    )
    assert isinstance(network, mobilenet.MobileNet)
    cfg = network.get_config()
    assert (cfg["model_id"], cfg["output_stride"]) == ("MobileNetV3Small", 16)
    assert (cfg["norm_momentum"], cfg["norm_epsilon"]) == (0.9, 1e-5)
    assert cfg["kernel_regularizer"]["config"]["l2"] == pytest.approx(5e-5)
    assert sorted(network.output_specs) == ["2", "3", "4", "5"]


def test_conv2d_bn_block_is_reachable_from_mobilenet():
    block = mobilenet.Conv2DBNBlock(filters=8, kernel_size=3, strides=2, use_explicit_padding=True)
    out = block(np.ones((1, 9, 9, 3), np.float32))
    assert out.shape.as_list() == [1, 5, 5, 8]
    assert block.count_params() == 3 * 3 * 3 * 8 + 4 * 8


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"model_id": "MobileNetV9"}, r"model_id: unknown MobileNet 'MobileNetV9'.*MobileNetV1"),
        ({"filter_size_scale": 0.0}, r"filter_size_scale: expected a value > 0, got 0.0"),
        ({"model_id": "MobileNetV1", "output_stride": 4}, r"output_stride: expected 8, 16, 32"),
        ({"output_stride": 3}, r"output_stride: expected None, 1 or a positive multiple of 2"),
    ],
)
def test_invalid_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        mobilenet.MobileNet(**kwargs)

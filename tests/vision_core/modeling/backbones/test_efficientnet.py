"""Tests for vision_core.modeling.backbones.efficientnet.

Golden parameter counts: b0/b3/b6 with se_ratio 0.25 and b0 with the default se_ratio 0.0 come
from /work/shared/API.md (Model Garden's own figures). The other model ids were measured in
Model Garden 2.20 (tf-models-official 2.20, TF 2.20) at 224x224 with

    ~/.cache/modelgarden-venv/bin/python -c "import tf_keras; \
      from official.vision.modeling.backbones import efficientnet as e; \
      print(e.EfficientNet('b1', se_ratio=0.25, \
        input_specs=tf_keras.layers.InputSpec(shape=[None, 224, 224, 3])).count_params())"

`count_params()` includes the BatchNorm moving statistics. Conv weights do not depend on the
image size, so the counting tests build with an unknown size (our count at 64x64 was also
checked equal to Model Garden's at 224x224 for every model id).
"""

import json

import numpy as np
import pytest
import tf_keras

from vision_core.configs import backbones as backbone_configs
from vision_core.configs import common
from vision_core.modeling.backbones import efficientnet, registry
from vision_core.modeling.layers import nn_blocks

GOLDEN_SE_025 = {"b0": 4_049_564, "b3": 10_783_528, "b6": 40_960_136}  # API.md
GOLDEN_B0_NO_SE = 3_413_024  # API.md (Model Garden's default se_ratio 0.0)
MEASURED_SE_025 = {  # Model Garden 2.20, command in the module docstring.
    "b1": 6_575_232,
    "b2": 7_768_562,
    "b4": 17_673_816,
    "b5": 28_513_520,
    "b7": 64_097_680,
}
B0_CHANNELS = {"2": 24, "3": 40, "4": 112, "5": 320, "6": 1280}


def _specs(size):
    return tf_keras.layers.InputSpec(shape=[None, size, size, 3])


@pytest.fixture(scope="module")
def b0_64():
    """B0 with SE and stochastic depth on 64x64 images (neither changes the variables)."""
    return efficientnet.EfficientNet(
        model_id="b0",
        input_specs=_specs(64),
        se_ratio=0.25,
        stochastic_depth_drop_rate=0.2,
        activation="swish",
        kernel_regularizer=tf_keras.regularizers.L2(1e-4),
    )


_COUNTED_ALONE = {k: v for k, v in {**GOLDEN_SE_025, **MEASURED_SE_025}.items() if k != "b0"}


@pytest.mark.parametrize("model_id, expected", sorted(_COUNTED_ALONE.items()))
def test_param_count_with_se(model_id, expected):
    # b0 is counted by test_b0_param_counts, on the shared fixture. Zero initialization only
    # makes building the big variants faster; the variables are the same.
    network = efficientnet.EfficientNet(
        model_id=model_id, se_ratio=0.25, kernel_initializer="zeros"
    )
    assert network.count_params() == expected


def test_b0_param_counts(b0_64):
    assert b0_64.count_params() == GOLDEN_SE_025["b0"]
    assert efficientnet.EfficientNet(model_id="b0").count_params() == GOLDEN_B0_NO_SE


def test_outputs_match_output_specs_including_head_level(b0_64):
    images = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 3)).astype(np.float32)
    outputs = b0_64(images, training=False)
    # Model Garden returns level '6' but leaves it out of output_specs; we list it.
    assert sorted(outputs) == sorted(b0_64.output_specs) == ["2", "3", "4", "5", "6"]
    for level, tensor in outputs.items():
        stride = 2 ** min(int(level), 5)
        expected = [None, 64 // stride, 64 // stride, B0_CHANNELS[level]]
        assert b0_64.output_specs[level].as_list() == expected
        assert tensor.shape.as_list() == [2, *expected[1:]]
        assert np.all(np.isfinite(tensor.numpy()))


def test_blocks_get_the_model_settings(b0_64):
    blocks = [
        layer for layer in b0_64.layers if isinstance(layer, nn_blocks.InvertedBottleneckBlock)
    ]
    assert len(blocks) == 16  # B0: 1 + 2 + 2 + 3 + 3 + 4 + 1 blocks.
    for block in blocks:
        cfg = block.get_config()
        # Model Garden uses one flat drop rate for every block of EfficientNet.
        assert cfg["stochastic_depth_drop_rate"] == 0.2
        assert cfg["se_ratio"] == 0.25
        assert cfg["activation"] == "swish"
        assert cfg["se_inner_activation"] == "relu"
    assert [b.get_config()["kernel_size"] for b in blocks[:5]] == [3, 3, 3, 5, 5]


def test_get_config_round_trip(b0_64):
    config = json.loads(json.dumps(b0_64.get_config()))
    rebuilt = efficientnet.EfficientNet.from_config(config)
    assert rebuilt.get_config() == b0_64.get_config()
    assert rebuilt.count_params() == b0_64.count_params()
    assert rebuilt.output_specs == b0_64.output_specs
    assert isinstance(rebuilt.layers[1].kernel_regularizer, tf_keras.regularizers.L2)


def test_builder_reads_backbone_and_norm_activation_configs():
    builder = registry.lookup_backbone_builder("efficientnet")
    config = backbone_configs.Backbone.from_dict(
        {
            "type": "efficientnet",
            "efficientnet": {"model_id": "b0", "se_ratio": 0.25, "se_inner_activation": "swish"},
        }
    )
    network = builder(
        input_specs=_specs(32),
        backbone_config=config,
        norm_activation_config=common.NormActivation(activation="swish", norm_epsilon=1e-3),
        l2_regularizer=tf_keras.regularizers.L2(5e-5),
    )
    assert isinstance(network, efficientnet.EfficientNet)
    assert network.count_params() == GOLDEN_SE_025["b0"]
    cfg = network.get_config()
    assert cfg["activation"] == "swish"
    assert cfg["se_inner_activation"] == "swish"
    assert cfg["kernel_regularizer"]["config"]["l2"] == pytest.approx(5e-5)
    assert network.output_specs["6"].as_list() == [None, 1, 1, 1280]


def test_scaling_map_and_decoded_specs():
    assert sorted(efficientnet.SCALING_MAP) == [f"b{i}" for i in range(8)]
    b7 = efficientnet.block_spec_decoder(efficientnet.EN_B0_BLOCK_SPECS, 2.0, 3.1)
    # Width 2.0 doubles the channels; depth 3.1 rounds the repeats up.
    assert [s.out_filters for s in b7] == [32, 48, 80, 160, 224, 384, 640]
    assert [s.block_repeats for s in b7] == [4, 7, 7, 10, 10, 13, 4]


def test_unknown_model_id_names_the_argument():
    with pytest.raises(ValueError, match=r"model_id: unknown EfficientNet 'b8'.*b0, b1"):
        efficientnet.EfficientNet(model_id="b8")

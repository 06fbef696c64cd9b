"""Tests for vision_core.modeling.backbones.factory and its registry."""

import subprocess
import sys
import types

import pytest
import tf_keras

from vision_core import hyperparams
from vision_core.configs import backbones as backbone_configs
from vision_core.configs import common
from vision_core.modeling.backbones import factory, registry, resnet, resnet_deeplab
from vision_core.modeling.layers import nn_blocks

INPUT_SPECS = tf_keras.layers.InputSpec(shape=[None, 64, 64, 3])


@pytest.fixture
def isolated_registry(monkeypatch):
    """A copy of the builder table, so registrations made by a test do not leak."""
    monkeypatch.setattr(registry, "_BACKBONE_BUILDERS", dict(registry._BACKBONE_BUILDERS))


def test_builtin_types_are_registered_by_importing_the_factory_alone():
    code = (
        "from vision_core.modeling.backbones import factory; "
        "print(','.join(factory.registered_backbone_types()))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    registered = result.stdout.strip().splitlines()[-1].split(",")
    assert {
        "resnet",
        "dilated_resnet",
        "efficientnet",
        "mobilenet",
        "vit",
        "spinenet",
        "spinenet_mobile",
        "unet",
    } <= set(registered)


def test_nested_resnet_config():
    config = backbone_configs.Backbone.from_dict({"type": "resnet", "resnet": {"model_id": 18}})
    network = factory.build_backbone(INPUT_SPECS, config, common.NormActivation())
    assert isinstance(network, resnet.ResNet)
    assert network.count_params() == 11_190_464  # Model Garden's ResNet-18 figure (API.md).
    assert network.output_specs["5"].as_list() == [None, 2, 2, 512]


def test_flat_config_as_tutorials_write_it():
    config = hyperparams.Config(type="resnet", model_id=10)
    network = factory.build_backbone(INPUT_SPECS, config, common.NormActivation())
    assert network.count_params() == 4_915_904  # Model Garden's ResNet-10 figure (API.md).


def test_norm_activation_and_backbone_fields_reach_the_layers():
    config = backbone_configs.Backbone.from_dict(
        {
            "type": "resnet",
            "resnet": {
                "model_id": 10,
                "se_ratio": 0.25,
                "stochastic_depth_drop_rate": 0.5,
                "bn_trainable": False,
            },
        }
    )
    norm = common.NormActivation(activation="swish", norm_momentum=0.9, norm_epsilon=1e-4)
    network = factory.build_backbone(
        INPUT_SPECS, config, norm, l2_regularizer=tf_keras.regularizers.L2(1e-4)
    )
    block = next(layer for layer in network.layers if isinstance(layer, nn_blocks.ResidualBlock))
    block_config = block.get_config()
    assert block_config["activation"] == "swish"
    assert block_config["norm_momentum"] == 0.9
    assert block_config["norm_epsilon"] == 1e-4
    assert block_config["se_ratio"] == 0.25
    assert block_config["stochastic_depth_drop_rate"] == pytest.approx(0.5 * 2 / 5)
    assert block_config["bn_trainable"] is False
    assert block_config["kernel_regularizer"]["config"]["l2"] == pytest.approx(1e-4)
    # Stem conv + 4 groups x 3 convs, plus 2 squeeze-excitation convs per block.
    assert len(network.losses) == 13 + 4 * 2


def test_dilated_resnet_config():
    config = backbone_configs.Backbone.from_dict(
        {"type": "dilated_resnet", "dilated_resnet": {"model_id": 50, "output_stride": 8}}
    )
    network = factory.build_backbone(INPUT_SPECS, config, common.NormActivation())
    assert isinstance(network, resnet_deeplab.DilatedResNet)
    assert network.output_specs["3"].as_list() == [None, 8, 8, 2048]
    assert sorted(network.output_specs) == ["2", "3"]


def test_simple_namespace_configs_with_missing_fields_use_defaults():
    config = types.SimpleNamespace(type="dilated_resnet", model_id=50, multigrid=[1, 2, 4])
    network = factory.build_backbone(INPUT_SPECS, config, None)
    assert network.get_config()["output_stride"] == 16
    assert network.get_config()["multigrid"] == [1, 2, 4]
    assert network.get_config()["activation"] == "relu"


def test_unknown_type_lists_known_types_and_closest():
    config = types.SimpleNamespace(type="resnte")
    with pytest.raises(ValueError, match=r"unknown backbone type 'resnte'") as info:
        factory.build_backbone(INPUT_SPECS, config, common.NormActivation())
    message = str(info.value)
    assert "dilated_resnet" in message and "resnet" in message
    assert "Did you mean 'resnet'?" in message


def test_missing_type_is_reported():
    with pytest.raises(ValueError, match="backbone.type"):
        factory.build_backbone(INPUT_SPECS, types.SimpleNamespace(), None)


def test_builder_rejects_a_config_of_another_type():
    config = backbone_configs.Backbone.from_dict({"type": "dilated_resnet"})
    with pytest.raises(ValueError, match="'resnet' builder got a config of type"):
        resnet.build_resnet(INPUT_SPECS, config, common.NormActivation())


@pytest.mark.usefixtures("isolated_registry")
def test_register_and_build_a_custom_backbone():
    calls = {}

    @factory.register_backbone_builder("my_backbone")
    def build_my_backbone(
        input_specs, backbone_config, norm_activation_config, l2_regularizer=None, **kwargs
    ):
        calls.update(kwargs, width=backbone_config.width)
        inputs = tf_keras.Input(shape=input_specs.shape[1:])
        return tf_keras.Model(inputs, {"2": tf_keras.layers.Conv2D(4, 1, strides=4)(inputs)})

    assert "my_backbone" in factory.registered_backbone_types()
    config = types.SimpleNamespace(type="my_backbone", width=7)
    network = factory.build_backbone(INPUT_SPECS, config, None, extra="yes")
    assert calls == {"extra": "yes", "width": 7}
    assert network.output_shape["2"] == (None, 16, 16, 4)


@pytest.mark.usefixtures("isolated_registry")
def test_duplicate_key_raises():
    def other_builder(*args, **kwargs):
        return None

    with pytest.raises(ValueError, match="'resnet' is already registered to .*build_resnet"):
        factory.register_backbone_builder("resnet")(other_builder)
    # The original stays in place.
    assert registry.lookup_backbone_builder("resnet") is resnet.build_resnet


@pytest.mark.usefixtures("isolated_registry")
def test_reregistering_the_same_function_is_allowed():
    # What importlib.reload(resnet) does.
    assert factory.register_backbone_builder("resnet")(resnet.build_resnet) is resnet.build_resnet


def test_bad_key_is_rejected():
    with pytest.raises(ValueError, match="non-empty string"):
        factory.register_backbone_builder("")

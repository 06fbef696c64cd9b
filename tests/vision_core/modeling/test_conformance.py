"""One contract for every registered backbone and decoder (timm's `test_models.py` habit).

Each entry of the builder tables is built from its config through the factory and must:
run; return exactly the levels and shapes its `output_specs` promise; round-trip
`get_config()` / `from_config()` to a network that computes the same function; and save to a
SavedModel that reloads (without custom objects) and gives the same outputs. A new backbone or
decoder registered in the factory is picked up here automatically: if it needs a small config
to stay fast, add it to the tables below.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from vision_core.configs.backbones import Backbone
from vision_core.configs.common import NormActivation
from vision_core.configs.semantic_segmentation import SemanticSegmentationModel
from vision_core.modeling.backbones import factory as backbone_factory
from vision_core.modeling.decoders import factory as decoder_factory
from vision_core.modeling.decoders.registry import registered_decoder_types

# Small members of each family, so the whole suite stays within the CI budget. Input sizes are
# the smallest each architecture accepts (SpineNet needs a multiple of 2^max_level).
BACKBONE_CASES: dict[str, tuple[dict, int]] = {
    "resnet": ({"model_id": 18, "depth_multiplier": 0.25}, 64),
    "dilated_resnet": ({"model_id": 50, "output_stride": 16}, 64),
    "efficientnet": ({"model_id": "b0", "se_ratio": 0.25}, 64),
    "mobilenet": ({"model_id": "MobileNetV3Small", "filter_size_scale": 0.5}, 64),
    "vit": ({"model_name": "vit-ti16"}, 32),
    "spinenet": ({"model_id": "49S"}, 128),
    "spinenet_mobile": ({"model_id": "49XS"}, 128),
    "unet": ({"filters": [8, 16, 32]}, 64),
}
DEFAULT_CASE: tuple[dict, int] = ({}, 64)

DECODER_CASES: dict[str, dict] = {
    "identity": {},
    "fpn": {"num_filters": 32},
    "nasfpn": {"num_filters": 16, "num_repeats": 1},
    "aspp": {"num_filters": 32, "dilation_rates": [2, 4], "level": 4},
    "unet": {"num_convs": 1},
}
# (min_level, max_level, input size) for decoders that cannot use the default levels 3..5 at
# 64x64: NAS-FPN's cells are made for levels 3..7, which need an input that 2^7 divides.
DECODER_LEVELS: dict[str, tuple[int, int, int]] = {"nasfpn": (3, 7, 128)}


def _flat(outputs) -> dict[str, np.ndarray]:
    if isinstance(outputs, dict):
        return {str(k): np.asarray(v) for k, v in outputs.items()}
    return {"output": np.asarray(outputs)}


def _assert_matches_specs(outputs, specs) -> None:
    outputs, specs = _flat(outputs), {str(k): v for k, v in (specs or {}).items()}
    assert sorted(outputs) == sorted(specs), "levels returned differ from output_specs"
    for key, value in outputs.items():
        expected = tf.TensorShape(specs[key]).as_list()
        assert expected[0] is None, f"{key}: output_specs must leave the batch size open"
        assert list(value.shape[1:]) == expected[1:], f"level {key}"


def _assert_same(a, b, atol: float = 1e-5) -> None:
    a, b = _flat(a), _flat(b)
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=atol, err_msg=f"output {key}")


def _round_trips(model: tf_keras.Model, inputs: tf.Tensor, tmp_path) -> None:
    expected = model(inputs, training=False)

    clone = model.__class__.from_config(model.get_config())
    assert clone.count_params() == model.count_params()
    clone.set_weights(model.get_weights())
    _assert_same(clone(inputs, training=False), expected)

    # Without traced functions the reload goes through the registered classes' from_config,
    # which is what this contract is about, and saving is several times faster (SpineNet).
    path = str(tmp_path / "saved_model")
    tf_keras.models.save_model(
        model, path, save_format="tf", include_optimizer=False, save_traces=False
    )
    reloaded = tf_keras.models.load_model(path, compile=False)
    _assert_same(reloaded(inputs, training=False), expected)


def _backbone_case(kind: str):
    overrides, size = BACKBONE_CASES.get(kind, DEFAULT_CASE)
    config = Backbone.from_dict({"type": kind, kind: overrides})
    return config, size


@pytest.mark.parametrize("kind", backbone_factory.registered_backbone_types())
def test_backbone_conformance(kind, tmp_path):
    config, size = _backbone_case(kind)
    tf_keras.utils.set_random_seed(0)
    model = backbone_factory.build_backbone(
        input_specs=tf_keras.layers.InputSpec(shape=[None, size, size, 3]),
        backbone_config=config,
        norm_activation_config=NormActivation(),
        l2_regularizer=tf_keras.regularizers.L2(1e-4),
    )
    assert model.losses, f"{kind}: the l2_regularizer reaches no weight"
    inputs = tf.random.stateless_uniform([2, size, size, 3], seed=[1, 2])
    outputs = model(inputs, training=False)
    _assert_matches_specs(outputs, model.output_specs)
    for value in _flat(outputs).values():
        assert np.isfinite(value).all()
    _round_trips(model, inputs, tmp_path)


def test_every_backbone_case_names_a_registered_type():
    unknown = set(BACKBONE_CASES) - set(backbone_factory.registered_backbone_types())
    assert not unknown, f"conformance cases for unregistered backbones: {sorted(unknown)}"


@pytest.mark.parametrize("kind", registered_decoder_types())
def test_decoder_conformance(kind, tmp_path):
    min_level, max_level, size = DECODER_LEVELS.get(kind, (3, 5, 64))
    model_config = SemanticSegmentationModel.from_dict(
        {
            "min_level": min_level,
            "max_level": max_level,
            "decoder": {"type": kind, kind: DECODER_CASES.get(kind, {})},
        }
    )
    tf_keras.utils.set_random_seed(0)
    backbone = backbone_factory.build_backbone(
        input_specs=tf_keras.layers.InputSpec(shape=[None, size, size, 3]),
        backbone_config=Backbone.from_dict({"type": "resnet", "resnet": {"model_id": 10}}),
        norm_activation_config=NormActivation(),
    )
    decoder = decoder_factory.build_decoder(backbone.output_specs, model_config)
    features = backbone(tf.random.stateless_uniform([2, size, size, 3], seed=[3, 4]))
    if decoder is None:  # identity: the backbone's pyramid passes through unchanged
        assert kind == "identity"
        return
    outputs = decoder(features, training=False)
    _assert_matches_specs(outputs, decoder.output_specs)

    expected = decoder(features, training=False)
    clone = decoder.__class__.from_config(decoder.get_config())
    clone(features)  # builds the subclassed layers
    clone.set_weights(decoder.get_weights())
    _assert_same(clone(features, training=False), expected)
    # Decoders may be layers (ASPP) or models (FPN); wrapping both in a functional model saves
    # them the way they are saved inside a task model.
    inputs = {
        level: tf_keras.Input(shape=spec[1:], name=f"level_{level}")
        for level, spec in backbone.output_specs.items()
    }
    wrapper = tf_keras.Model(inputs, decoder(inputs))
    path = str(tmp_path / "saved_model")
    # As for backbones: reloading through the registered classes' from_config is the contract,
    # and tracing NAS-FPN's hundred-odd op layers would make the save 15x slower.
    tf_keras.models.save_model(
        wrapper, path, save_format="tf", include_optimizer=False, save_traces=False
    )
    reloaded = tf_keras.models.load_model(path, compile=False)
    _assert_same(reloaded(features, training=False), expected)

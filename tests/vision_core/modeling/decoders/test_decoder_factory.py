"""Decoder factory: dispatch on model.decoder.type, identity, errors, user registration."""

import pytest
import tensorflow as tf
import tf_keras

from vision_core import hyperparams
from vision_core.configs import decoders as decoder_cfg
from vision_core.configs import semantic_segmentation as seg_cfg
from vision_core.modeling.decoders import aspp, factory, fpn, registry

SPECS = {
    str(level): tf.TensorShape([None, 64 // 2**level, 64 // 2**level, c])
    for level, c in zip(range(2, 6), (8, 12, 16, 20))
}


def _model_config(decoder, **kwargs):
    return seg_cfg.SemanticSegmentationModel(num_classes=3, decoder=decoder, **kwargs)


def test_known_types_are_registered_without_extra_imports():
    assert {"aspp", "fpn", "identity"} <= set(factory.registered_decoder_types())


@pytest.mark.parametrize("decoder_type", ["identity", None])
def test_identity_or_no_type_gives_none(decoder_type):
    config = _model_config(decoder_cfg.Decoder(type=decoder_type))
    assert factory.build_decoder(SPECS, config) is None


def test_fpn_from_nested_config_reads_levels_and_norm_activation():
    config = _model_config(
        decoder_cfg.Decoder(type="fpn", fpn=decoder_cfg.FPN(num_filters=16, fusion_type="concat")),
        min_level=3,
        max_level=6,
    )
    config.norm_activation.activation = "swish"
    config.norm_activation.norm_momentum = 0.9
    l2 = tf_keras.regularizers.l2(1e-4)
    decoder = factory.build_decoder(SPECS, config, l2_regularizer=l2)
    assert isinstance(decoder, fpn.FPN)
    got = decoder.get_config()
    assert (got["min_level"], got["max_level"], got["num_filters"]) == (3, 6, 16)
    assert (got["fusion_type"], got["activation"], got["norm_momentum"]) == ("concat", "swish", 0.9)
    # get_config gives the regularizer in its serialized form (the config survives JSON).
    assert got["kernel_regularizer"] == tf_keras.regularizers.serialize(l2)
    assert sorted(decoder.output_specs) == ["3", "4", "5", "6"]


def test_fpn_from_flat_tutorial_style_config():
    config = hyperparams.Config(
        decoder=hyperparams.Config(
            type="fpn", num_filters=8, fusion_type="sum", use_separable_conv=False
        ),
        min_level=3,
        max_level=5,
        norm_activation=seg_cfg.NormActivation(),
    )
    decoder = factory.build_decoder(SPECS, config)
    assert decoder.output_specs["3"].as_list() == [None, 8, 8, 8]


def test_aspp_from_config_is_built_from_the_specs():
    config = _model_config(
        decoder_cfg.Decoder(
            type="aspp",
            aspp=decoder_cfg.ASPP(
                level=4,
                dilation_rates=[2, 3],
                num_filters=8,
                dropout_rate=0.1,
                spp_layer_version="v2",
            ),
        )
    )
    decoder = factory.build_decoder(SPECS, config)
    assert isinstance(decoder, aspp.ASPP)
    assert decoder.output_specs == {"4": tf.TensorShape([None, 4, 4, 8])}
    cfg = decoder.get_config()
    assert (cfg["dilation_rates"], cfg["dropout_rate"], cfg["spp_layer_version"]) == (
        [2, 3],
        0.1,
        "v2",
    )
    out = decoder({k: tf.zeros([1, *v[1:]]) for k, v in SPECS.items()})
    assert out["4"].shape.as_list() == [1, 4, 4, 8]


def test_unknown_type_lists_known_types_and_closest_match():
    config = hyperparams.Config(decoder=hyperparams.Config(type="fpnn"))
    with pytest.raises(ValueError) as info:
        factory.build_decoder(SPECS, config)
    message = str(info.value)
    assert "model.decoder.type" in message
    assert "aspp, fpn, identity" in message
    assert "did you mean 'fpn'" in message


def test_builder_rejects_mismatched_type():
    config = hyperparams.Config(decoder=hyperparams.Config(type="aspp"))
    with pytest.raises(ValueError, match="expected 'fpn'"):
        fpn.build_fpn_decoder(SPECS, config)


def test_user_registered_builder_is_dispatched_and_duplicates_rejected():
    calls = {}

    @factory.register_decoder_builder("test_only_decoder")
    def build_mine(input_specs, model_config, l2_regularizer=None, **kwargs):
        calls["specs"] = input_specs
        calls["kwargs"] = kwargs
        return "mine"

    try:
        config = hyperparams.Config(decoder=hyperparams.Config(type="test_only_decoder"))
        assert factory.build_decoder(SPECS, config, extra=1) == "mine"
        assert calls == {"specs": SPECS, "kwargs": {"extra": 1}}

        def other(**kwargs):
            return None

        with pytest.raises(ValueError, match="already registered"):
            factory.register_decoder_builder("test_only_decoder")(other)
    finally:
        registry._DECODER_BUILDERS.pop("test_only_decoder", None)

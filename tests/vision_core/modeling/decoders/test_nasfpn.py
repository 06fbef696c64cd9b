"""NAS-FPN decoder: golden parameter counts, shapes, block-spec checks, config round trip.

The ResNet-50 figure is from /work/shared/API.md; the others were measured in Model Garden 2.20
(reference venv) on the same ResNet-50 feature specs (256x256 input):

    ~/.cache/modelgarden-venv/bin/python -c "
    import tensorflow as tf
    from official.vision.modeling.decoders import nasfpn
    s = {str(l): tf.TensorShape([None, 256 // 2**l, 256 // 2**l, c])
         for l, c in zip(range(2, 6), (256, 512, 1024, 2048))}
    print(nasfpn.NASFPN(s, num_repeats=2, use_separable_conv=True).count_params())"

(and `NASFPN(s, num_filters=64, num_repeats=3, use_separable_conv=True)`).
benchmarks/modelgarden_parity.py checks the outputs agree exactly with imported weights.
"""

import json

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from vision_core.configs.decoders import Decoder
from vision_core.configs.semantic_segmentation import SemanticSegmentationModel
from vision_core.modeling.decoders import factory, nasfpn

RESNET50_SPECS = {
    str(level): tf.TensorShape([None, 256 // 2**level, 256 // 2**level, channels])
    for level, channels in zip(range(2, 6), (256, 512, 1024, 2048))
}


def _tiny_specs(size=64, channels=(8, 12, 16, 20)):
    return {
        str(level): tf.TensorShape([None, size // 2**level, size // 2**level, c])
        for level, c in zip(range(2, 6), channels)
    }


def _features(specs, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    return {k: tf.constant(rng.normal(size=[batch, *v[1:]]), tf.float32) for k, v in specs.items()}


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        # /work/shared/API.md: NAS-FPN on ResNet-50 (levels 3-7, 256 filters, 5 repeats).
        ({}, 21_609_984),
        # Measured in Model Garden 2.20 (command in the module docstring).
        ({"num_repeats": 2, "use_separable_conv": True}, 1_892_608),
        # num_filters != 256: the cells still resample their inputs to 256 channels.
        ({"num_filters": 64, "num_repeats": 3, "use_separable_conv": True}, 1_484_032),
    ],
)
def test_golden_parameter_counts_on_resnet50_features(kwargs, expected):
    decoder = nasfpn.NASFPN(RESNET50_SPECS, min_level=3, max_level=7, **kwargs)
    assert decoder.count_params() == expected


def test_outputs_match_output_specs_including_levels_above_the_backbone():
    specs = _tiny_specs(size=128)
    decoder = nasfpn.NASFPN(specs, min_level=3, max_level=7, num_filters=8, num_repeats=2)
    outputs = decoder(_features(specs))
    assert sorted(outputs, key=int) == ["3", "4", "5", "6", "7"]
    for level, tensor in outputs.items():
        size = 128 // 2 ** int(level)
        assert tensor.shape.as_list() == [2, size, size, 8]
        assert decoder.output_specs[level].as_list() == [None, size, size, 8]
        assert np.isfinite(tensor.numpy()).all()


def test_unknown_spatial_sizes_are_accepted():
    specs = {k: tf.TensorShape([None, None, None, v[-1]]) for k, v in _tiny_specs().items()}
    decoder = nasfpn.NASFPN(specs, num_filters=8, num_repeats=1)
    assert decoder.output_specs["3"].as_list() == [None, None, None, 8]
    outputs = decoder(_features(_tiny_specs(size=128)))
    assert outputs["7"].shape.as_list() == [2, 1, 1, 8]


def test_every_output_depends_on_every_input_level():
    specs = _tiny_specs(size=128)
    decoder = nasfpn.NASFPN(specs, num_filters=8, num_repeats=1)
    base = _features(specs)
    reference = decoder(base)
    for level in ("3", "5"):
        changed = decoder(dict(base, **{level: base[level] + 1.0}))
        for out in ("3", "7"):
            assert not np.allclose(changed[out], reference[out]), (level, out)
    # Level 2 is below min_level: read as an input but unused.
    unchanged = decoder(dict(base, **{"2": base["2"] + 1.0}))
    for out in reference:
        np.testing.assert_array_equal(unchanged[out], reference[out])


def test_custom_block_specs_and_their_checks():
    specs = _tiny_specs()
    # Two cells merging levels 3..4 (nodes 0, 1), both outputs.
    blocks = [(3, "sum", (0, 1), True), (4, "attention", (1, 2), True)]
    decoder = nasfpn.NASFPN(
        specs, min_level=3, max_level=4, block_specs=blocks, num_filters=8, num_repeats=2
    )
    assert sorted(decoder(_features(specs))) == ["3", "4"]
    assert decoder.get_config()["block_specs"] == [
        [3, "sum", [0, 1], True],
        [4, "attention", [1, 2], True],
    ]
    with pytest.raises(ValueError, match="combine_fn 'max'"):
        nasfpn.NASFPN(specs, 3, 4, block_specs=[(3, "max", (0, 1), True)])
    with pytest.raises(ValueError, match="reads node 5"):
        nasfpn.NASFPN(specs, 3, 4, block_specs=[(3, "sum", (0, 5), True), (4, "sum", (0, 2), 1)])
    with pytest.raises(ValueError, match="covering levels 3..4"):
        nasfpn.NASFPN(specs, 3, 4, block_specs=[(3, "sum", (0, 1), True), (3, "sum", (0, 2), 1)])
    with pytest.raises(ValueError, match="level 6 is outside min_level..max_level 3..5"):
        nasfpn.NASFPN(specs, 3, 5, block_specs=[(6, "sum", (0, 1), True)])
    # The paper's cells are made for levels 3..7: its first cell reads node 3 (level 6).
    with pytest.raises(ValueError, match="reads node 3, but only 3 nodes exist"):
        nasfpn.NASFPN(specs, 3, 5)


def test_bad_levels_and_repeats_raise():
    specs = {k: v for k, v in _tiny_specs().items() if k not in ("2", "3")}
    with pytest.raises(ValueError, match="lacks min_level 3"):
        nasfpn.NASFPN(specs)
    with pytest.raises(ValueError, match="num_repeats must be >= 1"):
        nasfpn.NASFPN(_tiny_specs(size=128), num_repeats=0)
    with pytest.raises(ValueError, match="multiple of 2\\*\\*max_level = 128"):
        nasfpn.NASFPN(_tiny_specs(size=64))


def test_get_config_round_trips_through_json_and_keras():
    decoder = nasfpn.NASFPN(
        _tiny_specs(size=128),
        num_filters=8,
        num_repeats=1,
        activation="swish",
        kernel_regularizer=tf_keras.regularizers.L2(1e-4),
    )
    config = json.loads(json.dumps(decoder.get_config()))
    clone = nasfpn.NASFPN.from_config(config)
    assert clone.get_config() == decoder.get_config()
    assert clone.count_params() == decoder.count_params()
    assert len(clone.losses) == len(decoder.losses) > 0
    again = tf_keras.layers.deserialize(tf_keras.layers.serialize(decoder))
    assert isinstance(again, nasfpn.NASFPN)
    assert again.output_specs == decoder.output_specs


def test_builder_reads_the_decoder_config_and_norm_activation():
    model_config = SemanticSegmentationModel(
        min_level=3,
        max_level=7,
        decoder=Decoder.from_dict({"type": "nasfpn", "nasfpn": {"num_filters": 8}}),
    )
    model_config.decoder.nasfpn.num_repeats = 2
    model_config.norm_activation.activation = "swish"
    model_config.norm_activation.norm_momentum = 0.9
    decoder = factory.build_decoder(_tiny_specs(size=128), model_config)
    assert isinstance(decoder, nasfpn.NASFPN)
    config = decoder.get_config()
    assert (config["num_filters"], config["num_repeats"]) == (8, 2)
    assert (config["activation"], config["norm_momentum"]) == ("swish", 0.9)
    assert "nasfpn" in factory.registered_decoder_types()

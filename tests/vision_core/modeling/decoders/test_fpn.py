"""FPN decoder: golden parameter count, shapes, top-down topology, config round trip."""

import json

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from vision_core.modeling.decoders import fpn

# ResNet-50 feature channels at levels 2..5 for a 256x256 input.
RESNET50_SPECS = {
    str(level): tf.TensorShape([None, 256 // 2**level, 256 // 2**level, channels])
    for level, channels in zip(range(2, 6), (256, 512, 1024, 2048))
}


def _tiny_specs(size=64, channels=(8, 12, 16, 20)):
    return {
        str(level): tf.TensorShape([None, size // 2**level, size // 2**level, c])
        for level, c in zip(range(2, 6), channels)
    }


def _zeros(specs, batch=1):
    return {k: tf.zeros([batch, *v[1:]]) for k, v in specs.items()}


def test_golden_parameter_count_on_resnet50_features():
    # /work/shared/API.md, "Measured in Model Garden 2.20 at 256x256": FPN (3-7, 256) 3,873,792.
    decoder = fpn.FPN(RESNET50_SPECS, min_level=3, max_level=7, num_filters=256)
    assert decoder.count_params() == 3_873_792


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [({"fusion_type": "concat"}, 5_643_264), ({"use_separable_conv": True}, 1_267_456)],
)
def test_fusion_and_separable_parameter_counts_match_model_garden(kwargs, expected):
    # Measured in Model Garden 2.20 on the same ResNet-50 specs (256x256 input):
    #   ~/.cache/modelgarden-venv/bin/python -c "import tensorflow as tf
    #   from official.vision.modeling.decoders import fpn
    #   s = {str(l): tf.TensorShape([None, 256 // 2**l, 256 // 2**l, c])
    #        for l, c in zip(range(2, 6), (256, 512, 1024, 2048))}
    #   print(fpn.FPN(s, fusion_type='concat').count_params())"
    decoder = fpn.FPN(RESNET50_SPECS, min_level=3, max_level=7, num_filters=256, **kwargs)
    assert decoder.count_params() == expected


def test_output_specs_match_outputs_including_extra_coarse_levels():
    specs = _tiny_specs(size=128)
    decoder = fpn.FPN(specs, min_level=3, max_level=7, num_filters=16)
    outputs = decoder(_zeros(specs, batch=2))
    assert sorted(outputs, key=int) == ["3", "4", "5", "6", "7"]
    for level, tensor in outputs.items():
        size = 128 // 2 ** int(level)
        assert tensor.shape.as_list() == [2, size, size, 16]
        assert decoder.output_specs[level].as_list() == [None, size, size, 16]


def test_concat_fusion_parameter_count_by_hand():
    c3, c4, c5, f = 12, 16, 20, 8
    specs = _tiny_specs(channels=(8, c3, c4, c5))
    decoder = fpn.FPN(specs, min_level=3, max_level=7, num_filters=f, fusion_type="concat")
    lateral = (c3 + c4 + c5) * f + 3 * f
    # Concatenation grows the top-down features: level 5 has f, 4 has 2f, 3 has 3f channels.
    post_hoc = sum(9 * cin * f + f for cin in (f, 2 * f, 3 * f))
    coarser = 2 * (9 * f * f + f)
    norms = 5 * 4 * f
    assert decoder.count_params() == lateral + post_hoc + coarser + norms
    outputs = decoder(_zeros(specs))
    assert outputs["3"].shape.as_list() == [1, 8, 8, f]


def test_separable_conv_parameter_count_by_hand():
    c3, c4, c5, f = 12, 16, 20, 8
    specs = _tiny_specs(channels=(8, c3, c4, c5))
    decoder = fpn.FPN(specs, min_level=3, max_level=5, num_filters=f, use_separable_conv=True)

    def sep(cin, k):
        return k * k * cin + cin * f + f

    expected = sum(sep(c, 1) for c in (c3, c4, c5)) + 3 * sep(f, 3) + 3 * 4 * f
    assert decoder.count_params() == expected


def test_top_down_path_carries_coarse_information_down_only():
    specs = _tiny_specs()
    decoder = fpn.FPN(specs, min_level=3, max_level=6, num_filters=8)
    rng = np.random.default_rng(0)
    base = {k: tf.constant(rng.normal(size=[1, *v[1:]]), tf.float32) for k, v in specs.items()}
    ref = decoder(base)

    changed_top = dict(base, **{"5": base["5"] + 1.0})
    out_top = decoder(changed_top)
    # Level 5 reaches level 3 through the top-down path and level 6 through the stride-2 conv.
    assert not np.allclose(out_top["3"], ref["3"])
    assert not np.allclose(out_top["6"], ref["6"])

    changed_bottom = dict(base, **{"3": base["3"] + 1.0})
    out_bottom = decoder(changed_bottom)
    # No bottom-up path: coarser levels ignore level 3.
    for level in ("4", "5", "6"):
        np.testing.assert_allclose(out_bottom[level], ref[level])
    assert not np.allclose(out_bottom["3"], ref["3"])


def test_max_level_below_backbone_top_uses_only_needed_levels():
    specs = _tiny_specs()
    decoder = fpn.FPN(specs, min_level=3, max_level=4, num_filters=8)
    assert sorted(decoder.output_specs) == ["3", "4"]
    assert sorted(decoder(_zeros(specs))) == ["3", "4"]


def test_min_level_finer_than_backbone_raises():
    specs = {k: v for k, v in _tiny_specs().items() if k != "2"}
    with pytest.raises(ValueError, match="min_level 2"):
        fpn.FPN(specs, min_level=2, max_level=5)


def test_unknown_fusion_type_raises():
    with pytest.raises(ValueError, match="fusion_type 'mean'"):
        fpn.FPN(_tiny_specs(), fusion_type="mean")


def test_get_config_round_trips_through_json():
    decoder = fpn.FPN(
        _tiny_specs(),
        min_level=3,
        max_level=6,
        num_filters=8,
        fusion_type="concat",
        activation="swish",
        norm_momentum=0.9,
    )
    config = json.loads(json.dumps(decoder.get_config()))
    clone = fpn.FPN.from_config(config)
    assert clone.get_config() == decoder.get_config()
    assert clone.count_params() == decoder.count_params()
    assert clone.output_specs == decoder.output_specs


def test_keras_deserialize_by_registered_name():
    decoder = fpn.FPN(_tiny_specs(), min_level=3, max_level=5, num_filters=8)
    clone = tf_keras.layers.deserialize(tf_keras.layers.serialize(decoder))
    assert isinstance(clone, fpn.FPN)
    assert clone.output_specs == decoder.output_specs

"""Pyramid fusion helpers: nearest upsampling, pyramid_feature_fusion, PanopticFPNFusion."""

import numpy as np
import pytest
import tensorflow as tf

from vision_core.modeling.layers import fusion


def test_nearest_upsampling_repeats_pixels():
    x = np.arange(2 * 2 * 3 * 1, dtype=np.float32).reshape([2, 2, 3, 1])
    out = fusion.nearest_upsampling(tf.constant(x), 2).numpy()
    expected = np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)
    np.testing.assert_array_equal(out, expected)
    assert fusion.nearest_upsampling(tf.constant(x), 1).shape == x.shape


def test_pyramid_feature_fusion_sums_resized_levels():
    # Bilinear resizing keeps a constant map constant, so the fused map is the sum 1 + 2 + 4.
    inputs = {
        "3": tf.fill([2, 16, 16, 5], 1.0),
        "4": tf.fill([2, 8, 8, 5], 2.0),
        "5": tf.fill([2, 4, 4, 5], 4.0),
    }
    out = fusion.pyramid_feature_fusion(inputs, target_level=4)
    assert out.shape.as_list() == [2, 8, 8, 5]
    np.testing.assert_allclose(out, 7.0, rtol=1e-6)


def test_pyramid_feature_fusion_keeps_target_level_values():
    rng = np.random.default_rng(0)
    target = rng.normal(size=[1, 8, 8, 3]).astype(np.float32)
    inputs = {"3": tf.constant(target), "4": tf.zeros([1, 4, 4, 3])}
    np.testing.assert_allclose(fusion.pyramid_feature_fusion(inputs, 3), target)


def test_panoptic_fusion_parameter_count_and_shape():
    f, fpn_f = 32, 16
    layer = fusion.PanopticFPNFusion(
        min_level=2, max_level=5, target_level=2, num_filters=f, num_fpn_filters=fpn_f
    )

    def block(cin):
        return 9 * cin * f + f + 2 * f  # conv + bias + GroupNorm gamma/beta

    # Level 2: 1 block; level 3: 1; level 4: 2; level 5: 3 (the first from the FPN width).
    expected = 4 * block(fpn_f) + (0 + 0 + 1 + 2) * block(f)
    assert layer.count_params() == expected
    inputs = {str(lv): tf.zeros([1, 64 // 2**lv, 64 // 2**lv, fpn_f]) for lv in range(2, 6)}
    out = layer(inputs)
    assert out.shape.as_list() == [1, 16, 16, f]
    assert layer.output_specs["2"].as_list() == [None, None, None, f]


def test_panoptic_fusion_validates_levels_and_groups():
    with pytest.raises(ValueError, match="target_level 6"):
        fusion.PanopticFPNFusion(min_level=2, max_level=5, target_level=6)
    # A level finer than the target would need downsampling.
    with pytest.raises(ValueError, match="target_level 3, min_level 2"):
        fusion.PanopticFPNFusion(min_level=2, max_level=5, target_level=3)
    with pytest.raises(ValueError, match="multiple of 32"):
        fusion.PanopticFPNFusion(num_filters=48)


def test_panoptic_fusion_target_below_min_level_upsamples_every_level():
    layer = fusion.PanopticFPNFusion(
        min_level=3, max_level=4, target_level=2, num_filters=32, num_fpn_filters=8
    )
    out = layer({"3": tf.zeros([1, 8, 8, 8]), "4": tf.zeros([1, 4, 4, 8])})
    assert out.shape.as_list() == [1, 16, 16, 32]


def test_panoptic_fusion_config_round_trip():
    layer = fusion.PanopticFPNFusion(
        min_level=3, max_level=4, target_level=3, num_filters=32, num_fpn_filters=8
    )
    clone = fusion.PanopticFPNFusion.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert clone.count_params() == layer.count_params()

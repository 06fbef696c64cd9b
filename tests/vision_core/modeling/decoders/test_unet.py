"""U-Net encoder (backbone `unet`) and decoder (decoder `unet`): shapes, counts, errors."""

from __future__ import annotations

import pytest
import tensorflow as tf
import tf_keras

from vision_core.configs import load_experiment
from vision_core.modeling.backbones.unet import UNetEncoder
from vision_core.modeling.decoders.unet import UNetDecoder
from vision_core.tasks.factory import get_task


def _spec(size: int) -> tf_keras.layers.InputSpec:
    return tf_keras.layers.InputSpec(shape=[None, size, size, 3])


def test_parameter_counts_by_hand():
    encoder = UNetEncoder(_spec(16), filters=[4, 8], num_convs=1)
    # level 0: 3x3x3x4 kernel + 4x4 batch-norm values; level 1: 3x3x4x8 + 4x8.
    assert encoder.count_params() == (108 + 16) + (288 + 32)
    decoder = UNetDecoder(encoder.output_specs, min_level=0, num_convs=1)
    # level 0: upsampled 8 channels + 4 skip channels → 3x3x12x4 kernel + 4x4 batch norm.
    assert decoder.count_params() == 432 + 16


def test_levels_and_shapes_follow_the_specs():
    encoder = UNetEncoder(_spec(32), filters=[8, 16, 32, 64], downsample="conv")
    decoder = UNetDecoder(
        encoder.output_specs, min_level=1, num_filters=[24, 40], upsample="transpose"
    )
    features = encoder(tf.zeros([2, 32, 32, 3]))
    assert {k: v.shape.as_list() for k, v in features.items()} == {
        "0": [2, 32, 32, 8],
        "1": [2, 16, 16, 16],
        "2": [2, 8, 8, 32],
        "3": [2, 4, 4, 64],
    }
    decoded = decoder(features)
    assert {k: v.shape.as_list() for k, v in decoded.items()} == {
        "1": [2, 16, 16, 24],
        "2": [2, 8, 8, 40],
        "3": [2, 4, 4, 64],
    }
    assert {k: v.as_list()[1:] for k, v in decoder.output_specs.items()} == {
        k: v.shape.as_list()[1:] for k, v in decoded.items()
    }


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"filters": [8]}, "at least 2 positive"),
        ({"filters": [8, 0]}, "at least 2 positive"),
        ({"num_convs": 0}, "num_convs must be >= 1"),
        ({"downsample": "avg"}, "downsample must be one of"),
    ],
)
def test_encoder_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        UNetEncoder(_spec(32), **kwargs)


def test_encoder_needs_a_divisible_input():
    with pytest.raises(ValueError, match="multiples of 4"):
        UNetEncoder(_spec(30), filters=[4, 8, 16])


def test_decoder_rejects_missing_levels_and_bad_filters():
    encoder = UNetEncoder(_spec(32), filters=[4, 8, 16])
    specs = dict(encoder.output_specs)
    del specs["1"]
    with pytest.raises(ValueError, match=r"needs levels \[1\]"):
        UNetDecoder(specs, min_level=0)
    with pytest.raises(ValueError, match="one entry per decoded level"):
        UNetDecoder(encoder.output_specs, min_level=0, num_filters=[4])
    with pytest.raises(ValueError, match="must be below the deepest"):
        UNetDecoder(encoder.output_specs, min_level=2)


def test_segmentation_model_from_config_predicts_at_full_resolution():
    overrides = {
        "task": {
            "model": {
                "input_size": [32, 32, 3],
                "min_level": 0,
                "max_level": 3,
                "backbone": {"type": "unet", "unet": {"filters": [4, 8, 16, 32]}},
                "decoder": {"type": "unet", "unet": {"num_convs": 1}},
                "head": {
                    "level": 0,
                    "num_convs": 0,
                    "feature_fusion": None,
                    "upsample_factor": 1,
                },
            }
        }
    }
    params = load_experiment("shapes_segmentation", [], overrides)
    model = get_task(params.task).build_model()
    logits = model(tf.zeros([1, 32, 32, 3]))["logits"]
    assert logits.shape.as_list() == [1, 32, 32, 4]

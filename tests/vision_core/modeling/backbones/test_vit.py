"""Tests for vision_core.modeling.backbones.vit (and the transformer block it stacks).

Golden figures:
- ViT-B/16 with the token pooler, 85,798,656 parameters at 224 and 85,844,736 at 256: API.md
  (Model Garden's official/vision/modeling/backbones/vit_test.py).
- The other variants and the variable order: measured in Model Garden 2.20 with
  `~/.cache/modelgarden-venv/bin/python` running

      from official.vision.modeling.backbones import vit
      from official.vision.modeling.backbones.vit_specs import VIT_SPECS
      s = VIT_SPECS[name]
      m = vit.VisionTransformer(
          input_specs=tf_keras.layers.InputSpec(shape=[None, size, size, 3]),
          hidden_size=s['hidden_size'], patch_size=s['patch_size'], **s['transformer'])
      m.count_params()  # and [(w.name, w.shape) for w in m.weights]

Numerical parity with Model Garden (same weights, outputs bit-identical at 224 for ViT-Ti/16)
is checked outside CI, since it needs both environments.
"""

import json
import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from vision_core.configs.backbones import Backbone
from vision_core.configs.common import NormActivation
from vision_core.modeling.backbones import vit
from vision_core.modeling.backbones.registry import lookup_backbone_builder
from vision_core.modeling.backbones.vit_specs import VIT_SPECS, get_vit_spec
from vision_core.modeling.layers import transformer_encoder

# (model_name, input size) -> count_params() with the token pooler (see the module docstring).
GOLDEN_PARAMS = {
    ("vit-b16", 224): 85_798_656,  # API.md
    ("vit-b16", 256): 85_844_736,  # API.md
    ("vit-ti16", 224): 5_524_416,  # measured in Model Garden 2.20 (256: 5,535,936)
    ("vit-b32", 224): 87_455_232,  # measured in Model Garden 2.20 (256: 87,466,752)
}
# Measured in Model Garden 2.20; not built here to keep CI fast (S/16 differs from Ti/16 only
# in width, and the L models take about a minute each on 2 cores).
UNBUILT_PARAMS = {
    ("vit-s16", 224): 21_665_664,
    ("vit-s16", 256): 21_688_704,
    ("vit-l16", 224): 303_301_632,
    ("vit-l16", 256): 303_363_072,
    ("vit-l32", 224): 305_510_400,
    ("vit-l32", 256): 305_525_760,
}

# Model Garden's `weights` of VisionTransformer(hidden_size=8, mlp_dim=16, num_heads=2,
# num_layers=1, patch_size=16, layer_scale_init_value=0.1, representation_size=4) at 32x32:
# (last part of the variable name, shape), measured as in the module docstring. The weight
# converter pairs variables in this order.
MG_TINY_WEIGHTS = [
    ("kernel", (16, 16, 3, 8)),
    ("bias", (8,)),
    ("cls", (1, 1, 8)),
    ("pos_embedding", (1, 5, 8)),
    ("gamma", (8,)),
    ("beta", (8,)),
    ("kernel", (8, 16)),
    ("bias", (16,)),
    ("kernel", (16, 8)),
    ("bias", (8,)),
    ("gamma", (8,)),
    ("beta", (8,)),
    ("layerscale_gamma", (1, 1, 8)),
    ("layerscale_gamma", (1, 1, 8)),
    ("kernel", (8, 2, 4)),
    ("bias", (2, 4)),
    ("kernel", (8, 2, 4)),
    ("bias", (2, 4)),
    ("kernel", (8, 2, 4)),
    ("bias", (2, 4)),
    ("kernel", (2, 4, 8)),
    ("bias", (8,)),
    ("gamma", (8,)),
    ("beta", (8,)),
    ("kernel", (8, 4)),
    ("bias", (4,)),
]
MG_TINY_PARAMS = 6_868

TINY = {"hidden_size": 8, "mlp_dim": 16, "num_heads": 2, "num_layers": 1}


def _specs(size: int) -> tf_keras.layers.InputSpec:
    return tf_keras.layers.InputSpec(shape=[None, size, size, 3])


def _images(size: int, batch: int = 2) -> tf.Tensor:
    return tf.random.stateless_uniform([batch, size, size, 3], seed=[3, 4], minval=-1.0)


def _named(name: str, size: int, **kwargs) -> vit.VisionTransformer:
    spec = get_vit_spec(name)
    return vit.VisionTransformer(
        input_specs=_specs(size),
        hidden_size=spec["hidden_size"],
        patch_size=spec["patch_size"],
        **spec["transformer"],
        **kwargs,
    )


def _assert_outputs_match_specs(outputs, specs):
    assert sorted(outputs) == sorted(specs)
    for key, value in outputs.items():
        assert specs[key].as_list() == [None, *value.shape[1:]], key


# ------------------------------------------------------------------------------ golden sizes
@pytest.mark.parametrize(("name", "size"), sorted(GOLDEN_PARAMS))
def test_golden_param_counts(name, size):
    tf_keras.backend.clear_session()
    network = _named(name, size)
    assert network.count_params() == GOLDEN_PARAMS[(name, size)]
    width = VIT_SPECS[name]["hidden_size"]
    assert network.output_specs == {"pre_logits": tf.TensorShape([None, 1, 1, width])}


def _count_from_spec(name: str, size: int) -> int:
    """ViT parameter count from the architecture: patch conv, class token, position
    embeddings, blocks (2 layer norms, attention q/k/v/out, MLP), final layer norm."""
    spec = get_vit_spec(name)
    d, p = spec["hidden_size"], spec["patch_size"]
    mlp, layers = spec["transformer"]["mlp_dim"], spec["transformer"]["num_layers"]
    tokens = (size // p) ** 2 + 1
    block = 4 * d + (4 * d * d + 4 * d) + (2 * d * mlp + mlp + d)
    return (p * p * 3 * d + d) + d + tokens * d + layers * block + 2 * d


def test_unbuilt_variants_follow_the_measured_counts():
    # The architecture count, which equals every built golden figure above, must give Model
    # Garden's measured numbers for the variants not built here.
    for (name, size), count in {**GOLDEN_PARAMS, **UNBUILT_PARAMS}.items():
        assert _count_from_spec(name, size) == count, (name, size)


def test_spec_table_is_model_gardens():
    assert list(VIT_SPECS) == [
        "vit-ti16",
        "vit-s16",
        "vit-b16",
        "vit-b32",
        "vit-l16",
        "vit-l32",
        "vit-h14",
        "vit-g14",
        "vit-G14",
        "vit-e14",
    ]
    assert get_vit_spec("vit-l32") == {
        "hidden_size": 1024,
        "patch_size": 32,
        "transformer": {"mlp_dim": 4096, "num_heads": 16, "num_layers": 24},
    }
    with pytest.raises(TypeError):
        VIT_SPECS["vit-b16"]["hidden_size"] = 1  # type: ignore[index]
    with pytest.raises(ValueError, match="model_name.*vit-x99.*vit-ti16"):
        get_vit_spec("vit-x99")


def test_variable_order_and_shapes_are_model_gardens():
    network = vit.VisionTransformer(
        input_specs=_specs(32),
        patch_size=16,
        layer_scale_init_value=0.1,
        representation_size=4,
        **TINY,
    )
    ours = [(w.name.split("/")[-1].split(":")[0], tuple(w.shape)) for w in network.weights]
    assert ours == MG_TINY_WEIGHTS
    assert network.count_params() == MG_TINY_PARAMS
    assert all(w.trainable for w in network.weights)


# ----------------------------------------------------------------------- outputs and specs
@pytest.mark.parametrize("pooler", ["token", "gap", "none"])
@pytest.mark.parametrize("output_2d_feature_maps", [True, False])
def test_outputs_match_output_specs(pooler, output_2d_feature_maps):
    network = vit.VisionTransformer(
        input_specs=_specs(32),
        patch_size=16,
        pooler=pooler,
        representation_size=16,
        output_2d_feature_maps=output_2d_feature_maps,
        **TINY,
    )
    outputs = network(_images(32), training=False)
    expected = {}
    if pooler == "none":
        expected["encoded_tokens"] = [None, 4, 16]
    else:
        expected["pre_logits"] = [None, 1, 1, 16]
    if output_2d_feature_maps:
        expected["4"] = [None, 2, 2, 8]
    assert {k: v.as_list() for k, v in network.output_specs.items()} == expected
    _assert_outputs_match_specs(outputs, network.output_specs)
    for value in outputs.values():
        assert np.isfinite(value.numpy()).all()


@pytest.mark.parametrize(("patch_size", "level"), [(4, "2"), (6, "3")])
def test_feature_level_is_the_closest_power_of_two(patch_size, level):
    # Model Garden's vit_test: a 24x24 input, patch 4 -> 6x6 grid, patch 6 -> 4x4 grid.
    network = vit.VisionTransformer(
        input_specs=_specs(24),
        patch_size=patch_size,
        output_2d_feature_maps=True,
        **TINY,
    )
    grid = 24 // patch_size
    assert level == str(round(math.log2(patch_size)))
    assert network.output_specs[level].as_list() == [None, grid, grid, 8]


def test_feature_map_is_the_patch_tokens():
    network = vit.VisionTransformer(
        input_specs=_specs(32), patch_size=8, pooler="none", output_2d_feature_maps=True, **TINY
    )
    outputs = network(_images(32), training=False)
    tokens = outputs["encoded_tokens"].numpy()
    np.testing.assert_array_equal(outputs["3"].numpy(), tokens.reshape(2, 4, 4, 8))


def test_output_encoded_tokens_and_attention_scores():
    quiet = vit.VisionTransformer(
        input_specs=_specs(32),
        patch_size=16,
        pooler="none",
        output_encoded_tokens=False,
        output_2d_feature_maps=True,
        **TINY,
    )
    assert sorted(quiet.output_specs) == ["4"]
    scored = vit.VisionTransformer(
        input_specs=_specs(32), patch_size=16, output_attention_scores=True, **TINY
    )
    outputs = scored(_images(32), training=False)
    # The class token plus 2x2 patches attend to each other in each of the 2 heads.
    assert outputs["attention_scores"].shape == (2, 2, 5, 5)
    np.testing.assert_allclose(outputs["attention_scores"].numpy().sum(-1), 1.0, atol=1e-5)
    _assert_outputs_match_specs(outputs, scored.output_specs)


def test_pooled_outputs_are_the_class_token_and_the_token_mean():
    gap = vit.VisionTransformer(
        input_specs=_specs(32), patch_size=16, pooler="gap", output_2d_feature_maps=True, **TINY
    )
    outputs = gap(_images(32), training=False)
    np.testing.assert_allclose(
        outputs["pre_logits"].numpy().reshape(2, 8),
        outputs["4"].numpy().reshape(2, 4, 8).mean(axis=1),
        atol=1e-6,
    )
    # The class token starts at zero but is a real variable: changing it changes the output.
    token = vit.VisionTransformer(input_specs=_specs(32), patch_size=16, **TINY)
    before = token(_images(32), training=False)["pre_logits"].numpy()
    cls = token.get_layer("cls").cls
    cls.assign(tf.random.stateless_normal(cls.shape, seed=[9, 9]))
    after = token(_images(32), training=False)["pre_logits"].numpy()
    assert np.abs(after - before).max() > 1e-3


# ------------------------------------------------------------------ position interpolation
@pytest.mark.parametrize(("pooler", "length"), [("gap", 196), ("token", 197)])
def test_pos_embed_shape_keeps_the_trained_grid(pooler, length):
    # Position embeddings of a 224x224 model (14x14 patches) used at 64x64 (4x4 patches).
    network = vit.VisionTransformer(
        input_specs=_specs(64), patch_size=16, pooler=pooler, pos_embed_shape=(14, 14), **TINY
    )
    pos = network.get_layer("encoder")._pos_embed.pos_embedding
    assert tuple(pos.shape) == (1, length, 8)
    outputs = network(_images(64), training=False)
    _assert_outputs_match_specs(outputs, network.output_specs)
    assert outputs["pre_logits"].shape == (2, 1, 1, 8)


def test_interpolation_resizes_the_grid_and_keeps_the_class_position():
    layer = vit.AddPositionEmbs(
        posemb_init="random_normal", posemb_origin_shape=(2, 2), posemb_target_shape=(4, 4)
    )
    out = layer(tf.zeros([1, 17, 3])).numpy()
    table = layer.pos_embedding.numpy()
    assert table.shape == (1, 5, 3)
    np.testing.assert_array_equal(out[:, 0], table[:, 0])
    expected = tf.image.resize(table[:, 1:].reshape(1, 2, 2, 3), (4, 4), method="bilinear")
    np.testing.assert_allclose(out[:, 1:], expected.numpy().reshape(1, 16, 3), atol=1e-6)
    # The same grid needs no interpolation: the table is added as is.
    same = vit.AddPositionEmbs(posemb_origin_shape=(2, 2), posemb_target_shape=(2, 2))
    x = tf.random.stateless_normal([2, 4, 3], seed=[0, 1])
    np.testing.assert_allclose(same(x).numpy(), (x + same.pos_embedding).numpy())


# ------------------------------------------------------------- regularization and variants
def test_stochastic_depth_rates_grow_with_depth():
    network = vit.VisionTransformer(
        input_specs=_specs(32),
        patch_size=16,
        init_stochastic_depth_rate=0.3,
        dropout_rate=0.0,
        **{**TINY, "num_layers": 3},
    )
    blocks = network.get_layer("encoder")._encoder_layers
    rates = [block.get_config()["stochastic_depth_drop_rate"] for block in blocks]
    np.testing.assert_allclose(rates, [0.1, 0.2, 0.3])
    images = _images(32, batch=8)
    inference = network(images, training=False)["pre_logits"].numpy()
    np.testing.assert_array_equal(inference, network(images, training=False)["pre_logits"])
    tf_keras.utils.set_random_seed(0)
    training = network(images, training=True)["pre_logits"].numpy()
    assert np.isfinite(training).all()
    assert np.abs(training - inference).max() > 1e-4


def test_layer_scale_adds_two_scales_per_block():
    plain = vit.VisionTransformer(input_specs=_specs(32), patch_size=16, **TINY)
    scaled = vit.VisionTransformer(
        input_specs=_specs(32), patch_size=16, layer_scale_init_value=1e-4, **TINY
    )
    assert scaled.count_params() - plain.count_params() == 2 * 8
    gammas = [w for w in scaled.weights if "layerscale_gamma" in w.name]
    assert len(gammas) == 2
    for gamma in gammas:
        np.testing.assert_allclose(gamma.numpy(), np.full((1, 1, 8), 1e-4, np.float32))
    outputs = scaled(_images(32), training=False)
    _assert_outputs_match_specs(outputs, scaled.output_specs)


def test_kernel_regularizer_reaches_every_kernel():
    network = vit.VisionTransformer(
        input_specs=_specs(32),
        patch_size=16,
        representation_size=4,
        kernel_regularizer=tf_keras.regularizers.L2(1e-4),
        **TINY,
    )
    # Patch conv + q/k/v/output projections + 2 MLP kernels + pre-logits dense.
    assert len(network.losses) == 1 + 4 + 2 + 1


def test_original_init_false_uses_other_initializers():
    network = vit.VisionTransformer(
        input_specs=_specs(32), patch_size=16, original_init=False, **TINY
    )
    block = network.get_layer("encoder")._encoder_layers[0]
    initializer = block.get_config()["kernel_initializer"]
    assert initializer["class_name"] == "TruncatedNormal"
    assert initializer["config"]["stddev"] == 0.02
    assert network.get_layer("embedding").get_config()["kernel_initializer"]["class_name"] == (
        "HeUniform"
    )


def test_channels_first_builds_the_same_outputs():
    tf_keras.backend.set_image_data_format("channels_first")
    try:
        network = vit.VisionTransformer(
            input_specs=tf_keras.layers.InputSpec(shape=[None, 3, 32, 32]),
            patch_size=16,
            output_2d_feature_maps=True,
            **TINY,
        )
    finally:
        tf_keras.backend.set_image_data_format("channels_last")
    assert network.output_specs["4"].as_list() == [None, 2, 2, 8]
    assert network.output_specs["pre_logits"].as_list() == [None, 1, 1, 8]


# -------------------------------------------------------------------------------- config
def test_get_config_round_trip(tmp_path):
    network = vit.VisionTransformer(
        input_specs=_specs(32),
        patch_size=16,
        pooler="gap",
        representation_size=4,
        kernel_regularizer=tf_keras.regularizers.L2(1e-4),
        pos_embed_shape=(3, 3),
        layer_scale_init_value=0.1,
        init_stochastic_depth_rate=0.1,
        output_2d_feature_maps=True,
        **TINY,
    )
    config = json.loads(json.dumps(network.get_config()))
    assert config["pos_embed_shape"] == [3, 3]
    clone = vit.VisionTransformer.from_config(config)
    assert clone.get_config() == network.get_config()
    clone.set_weights(network.get_weights())
    images = _images(32)
    expected = network(images, training=False)
    for key, value in clone(images, training=False).items():
        np.testing.assert_allclose(value.numpy(), expected[key].numpy(), atol=1e-6)

    path = str(tmp_path / "vit")
    tf_keras.models.save_model(network, path, save_format="tf", include_optimizer=False)
    reloaded = tf_keras.models.load_model(path, compile=False)
    for key, value in reloaded(images, training=False).items():
        np.testing.assert_allclose(value.numpy(), expected[key].numpy(), atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"pooler": "cls"}, "pooler: expected one of token, gap, none"),
        ({"pooler": "none", "output_encoded_tokens": False}, "without outputs"),
        ({"patch_size": 64}, "smaller than one patch"),
        ({"pos_embed_shape": (14,)}, "pos_embed_shape"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        vit.VisionTransformer(input_specs=_specs(32), **{"patch_size": 16, **TINY, **kwargs})


def test_unknown_image_size_is_an_error():
    with pytest.raises(ValueError, match="input_specs: .*known image height and width"):
        vit.VisionTransformer(**TINY)


# ------------------------------------------------------------------------------- builder
def test_builder_takes_sizes_from_the_spec_table():
    config = Backbone.from_dict(
        {
            "type": "vit",
            "vit": {
                "model_name": "vit-ti16",
                "hidden_size": 5,  # ignored, as in Model Garden: the spec table decides
                "pooler": "gap",
                "representation_size": 32,
                "transformer": {"num_layers": 1, "dropout_rate": 0.2},
            },
        }
    )
    network = lookup_backbone_builder("vit")(
        input_specs=_specs(32),
        backbone_config=config,
        norm_activation_config=NormActivation(),
        l2_regularizer=tf_keras.regularizers.L2(1e-4),
    )
    got = network.get_config()
    assert (got["hidden_size"], got["patch_size"]) == (192, 16)
    assert (got["mlp_dim"], got["num_heads"], got["num_layers"]) == (768, 3, 12)
    assert got["dropout_rate"] == 0.2
    assert got["pooler"] == "gap"
    assert network.output_specs["pre_logits"].as_list() == [None, 1, 1, 32]
    assert network.losses


def test_builder_rejects_another_type():
    config = Backbone.from_dict({"type": "resnet"})
    with pytest.raises(ValueError, match="backbone.type"):
        vit.build_vit(_specs(32), config, NormActivation())


# ------------------------------------------------------------------ transformer block alone
def test_post_norm_block_output_is_normalized():
    block = transformer_encoder.TransformerEncoderBlock(
        num_attention_heads=2, inner_dim=16, inner_activation="gelu", norm_first=False
    )
    x = tf.random.stateless_normal([2, 5, 8], seed=[5, 6]) * 3.0 + 1.0
    y = block(x).numpy()
    # Post-norm ends with a fresh layer norm (gamma 1, beta 0): zero mean, unit variance.
    np.testing.assert_allclose(y.mean(-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.var(-1), 1.0, atol=1e-3)
    pre = transformer_encoder.TransformerEncoderBlock(
        num_attention_heads=2, inner_dim=16, inner_activation="gelu", norm_first=True
    )
    assert np.abs(pre(x).numpy().mean(-1)).max() > 0.1


def test_block_config_round_trip_and_scores():
    block = transformer_encoder.TransformerEncoderBlock(
        num_attention_heads=2,
        inner_dim=16,
        inner_activation="gelu",
        norm_first=True,
        norm_epsilon=1e-6,
        return_attention_scores=True,
        layer_scale_init_value=0.5,
        kernel_regularizer=tf_keras.regularizers.L2(1e-4),
    )
    x = tf.random.stateless_normal([2, 5, 8], seed=[7, 8])
    y, scores = block(x)
    assert y.shape == (2, 5, 8)
    assert scores.shape == (2, 2, 5, 5)
    assert len(block.losses) == 6
    clone = transformer_encoder.TransformerEncoderBlock.from_config(
        json.loads(json.dumps(block.get_config()))
    )
    clone(x)
    clone.set_weights(block.get_weights())
    np.testing.assert_allclose(clone(x)[0].numpy(), y.numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="activation: unknown name"):
        transformer_encoder.TransformerEncoderBlock(2, 16, inner_activation="gelux")
    with pytest.raises(ValueError, match="partition_dims"):
        transformer_encoder.MultiHeadAttention(num_heads=2, key_dim=4, partition_dims=[1, 2])

"""ClassificationModel: golden parameter counts, outputs, feature selection, config round trip."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from vision_core.configs import image_classification as cls_cfg
from vision_core.modeling import factory
from vision_core.modeling.backbones import resnet
from vision_core.modeling.classification_model import ClassificationModel, select_features


def _spec(size):
    return tf_keras.layers.InputSpec(shape=[None, size, size, 3])


def _small_model(**kwargs):
    tf_keras.utils.set_random_seed(0)
    spec = _spec(64)
    backbone = resnet.ResNet(18, input_specs=spec, depth_multiplier=0.25)
    return ClassificationModel(backbone, 10, input_specs=spec, **kwargs)


def test_resnet50_imagenet_golden_count():
    # API.md: ClassificationModel ResNet-50, 1000 classes, 224 -> 25,610,152 (BN statistics
    # included): the backbone's 23,561,152 plus a 2048 x 1000 dense layer with bias.
    spec = _spec(224)
    model = ClassificationModel(resnet.ResNet(50, input_specs=spec), 1000, input_specs=spec)
    assert model.count_params() == 25_610_152


def test_small_model_with_head_batch_norm_matches_model_garden():
    # Measured in Model Garden 2.20: ClassificationModel(ResNet(18, depth_multiplier=0.25) at
    # 64x64, 10 classes, add_head_batch_norm=True).count_params() == 706,618; the layer order
    # (backbone, batch norm, pooling, dropout, dense) is Model Garden's too.
    model = _small_model(add_head_batch_norm=True)
    assert model.count_params() == 706_618
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == [
        "InputLayer",
        "ResNet",
        "BatchNormalization",
        "GlobalAveragePooling2D",
        "Dropout",
        "Dense",
    ]


def test_outputs_logits_of_num_classes():
    model = _small_model(dropout_rate=0.2)
    logits = model(tf.random.uniform([2, 64, 64, 3]), training=False)
    assert logits.shape == (2, 10)
    assert model.output_specs == {"logits": tf.TensorShape([None, 10])}
    assert model.checkpoint_items == {"backbone": model.backbone}


def test_skip_logits_layer_outputs_pooled_features():
    model = _small_model(skip_logits_layer=True)
    features = model(tf.zeros([1, 64, 64, 3]))
    # ResNet-18 x 0.25: the last group has 512 * 0.25 channels.
    assert features.shape == (1, 128)
    assert not [layer for layer in model.layers if isinstance(layer, tf_keras.layers.Dense)]


def test_config_round_trip_gives_the_same_function():
    model = _small_model(kernel_regularizer=tf_keras.regularizers.l2(1e-4), dropout_rate=0.1)
    clone = ClassificationModel.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    x = tf.random.stateless_uniform([2, 64, 64, 3], seed=[1, 2])
    np.testing.assert_allclose(clone(x, training=False), model(x, training=False), atol=1e-6)
    assert clone.get_config()["dropout_rate"] == 0.1
    assert len(clone.losses) == len(model.losses) == 1


def test_select_features_prefers_pre_logits_then_the_highest_level():
    a, b, c = tf.zeros([1]), tf.ones([1]), tf.fill([1], 2.0)
    assert select_features({"pre_logits": a, "encoded_tokens": b}) is a
    # Levels compare as numbers, not strings ('10' > '9').
    assert select_features({"9": a, "10": b, "3": c}) is b
    with pytest.raises(ValueError, match="encoded_tokens"):
        select_features({"encoded_tokens": a})


class _TokenBackbone(tf_keras.Model):
    """A ViT-like backbone returning `pre_logits` [B, 1, 1, C] and tokens [B, N, C]."""

    def __init__(self):
        inputs = tf_keras.Input([32, 32, 3])
        tokens = tf_keras.layers.Reshape([16, 3 * 64])(
            tf_keras.layers.Conv2D(3 * 64, 8, strides=8)(inputs)
        )
        pooled = tf_keras.layers.Reshape([1, 1, 3 * 64])(
            tf_keras.layers.GlobalAveragePooling1D()(tokens)
        )
        super().__init__(inputs=inputs, outputs={"pre_logits": pooled, "encoded_tokens": tokens})


def test_vit_style_backbone_classifies_from_pre_logits():
    model = ClassificationModel(_TokenBackbone(), 5, input_specs=_spec(32))
    assert model(tf.zeros([3, 32, 32, 3])).shape == (3, 5)
    # The dense layer sits on the 192 pooled channels, not on the token sequence.
    assert model.layers[-1].kernel.shape == (192, 5)


def test_factory_builds_from_config_with_regularizer():
    config = cls_cfg.ImageClassificationModel.from_dict(
        {
            "num_classes": 4,
            "input_size": [32, 32, 3],
            "backbone": {"type": "resnet", "resnet": {"model_id": 10, "depth_multiplier": 0.25}},
            "dropout_rate": 0.3,
            "add_head_batch_norm": True,
            "norm_activation": {"norm_momentum": 0.9, "norm_epsilon": 1e-5},
        }
    )
    model = factory.build_classification_model(
        _spec(32), config, l2_regularizer=tf_keras.regularizers.l2(1e-4)
    )
    assert model(tf.zeros([1, 32, 32, 3])).shape == (1, 4)
    head_bn = model.layers[2]
    assert head_bn.momentum == 0.9 and head_bn.epsilon == 1e-5
    assert model.get_config()["dropout_rate"] == 0.3
    # The regularizer reaches the backbone convs and the logits kernel.
    assert model.layers[-1].kernel_regularizer is not None
    assert len(model.losses) > 1


def test_bad_arguments_name_themselves():
    spec = _spec(32)
    backbone = resnet.ResNet(10, input_specs=spec, depth_multiplier=0.25)
    with pytest.raises(ValueError, match="num_classes"):
        ClassificationModel(backbone, 0, input_specs=spec)
    with pytest.raises(ValueError, match="dropout_rate"):
        ClassificationModel(backbone, 3, input_specs=spec, dropout_rate=1.0)

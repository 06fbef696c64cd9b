"""SegmentationModel: outputs, output_specs, config round trip, compile/fit/evaluate."""

import logging

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from vision_core.modeling import segmentation_model
from vision_core.modeling.decoders import aspp, fpn
from vision_core.modeling.heads import segmentation_heads as sh
from vision_core.modeling.segmentation_model import SegmentationModel

SIZE = 32
NUM_CLASSES = 3


@tf_keras.utils.register_keras_serializable(package="VisionTest")
class TinyBackbone(tf_keras.Model):
    """A 4-level pyramid backbone (levels 2..5) with the backbone contract."""

    def __init__(self, input_size=SIZE, width=4, **kwargs):
        self._config = {"input_size": input_size, "width": width}
        inputs = tf_keras.Input(shape=[input_size, input_size, 3])
        x = tf_keras.layers.Conv2D(width, 3, strides=4, padding="same", activation="relu")(inputs)
        outputs = {"2": x}
        for level in range(3, 6):
            x = tf_keras.layers.Conv2D(
                width * (level - 1), 3, strides=2, padding="same", activation="relu"
            )(x)
            outputs[str(level)] = x
        self._output_specs = {k: v.shape for k, v in outputs.items()}
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

    @property
    def output_specs(self):
        return self._output_specs

    def get_config(self):
        return dict(self._config)

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)


def _model(decoder_kind="none", mask_scoring=False, regularizer=None):
    tf_keras.utils.set_random_seed(0)
    backbone = TinyBackbone()
    if decoder_kind == "fpn":
        decoder = fpn.FPN(
            backbone.output_specs,
            min_level=3,
            max_level=5,
            num_filters=8,
            kernel_regularizer=regularizer,
        )
        head = sh.SegmentationHead(
            NUM_CLASSES,
            level=3,
            num_convs=1,
            num_filters=8,
            feature_fusion="pyramid_fusion",
            kernel_regularizer=regularizer,
        )
    elif decoder_kind == "aspp":
        decoder = aspp.ASPP(level=4, dilation_rates=[1, 2], num_filters=8)
        head = sh.SegmentationHead(
            NUM_CLASSES,
            level=4,
            num_convs=1,
            num_filters=8,
            feature_fusion="deeplabv3plus",
            low_level=2,
            low_level_num_filters=8,
            upsample_factor=4,
        )
    else:
        decoder = None
        head = sh.SegmentationHead(
            NUM_CLASSES,
            level=4,
            num_convs=1,
            num_filters=8,
            feature_fusion="deeplabv3plus",
            low_level=2,
            upsample_factor=4,
            kernel_regularizer=regularizer,
        )
    scoring = None
    if mask_scoring:
        scoring = sh.MaskScoring(
            NUM_CLASSES, fc_input_size=[2, 2], num_convs=1, num_filters=4, fc_dims=8, num_fcs=1
        )
    return SegmentationModel(backbone, decoder, head, mask_scoring_head=scoring)


def _images(batch=2, seed=0):
    return tf.random.stateless_uniform([batch, SIZE, SIZE, 3], seed=[seed, 1])


@pytest.mark.parametrize("kind", ["none", "fpn", "aspp"])
@pytest.mark.parametrize("mask_scoring", [False, True])
def test_output_specs_match_outputs(kind, mask_scoring):
    model = _model(kind, mask_scoring)
    specs_before_call = model.output_specs  # from component specs, before any build
    outputs = model(_images(), training=False)
    assert set(outputs) == ({"logits", "mask_scores"} if mask_scoring else {"logits"})
    for name, tensor in outputs.items():
        assert specs_before_call[name].as_list() == [None, *tensor.shape.as_list()[1:]]
    assert model.output_specs == specs_before_call


def _logits_shape(kind):
    return _model(kind)(_images())["logits"].shape.as_list()


def test_logit_sizes_per_configuration():
    # deeplabv3plus at low level 2 (H/4) upsampled 4x gives full resolution; pyramid fusion at
    # level 3 gives H/8.
    assert _logits_shape("none") == [2, SIZE, SIZE, NUM_CLASSES]
    assert _logits_shape("fpn") == [2, SIZE // 8, SIZE // 8, NUM_CLASSES]


def test_output_specs_fall_back_to_tracing_for_spec_less_decoder():
    class PlainDecoder(tf_keras.layers.Layer):
        def call(self, inputs):
            return {k: v * 2.0 for k, v in inputs.items()}

    model = _model("none")
    model = SegmentationModel(model.backbone, PlainDecoder(), model.head)
    specs = model.output_specs
    assert specs["logits"].as_list() == [None, SIZE, SIZE, NUM_CLASSES]


def test_checkpoint_items():
    assert set(_model("none").checkpoint_items) == {"backbone", "head"}
    assert set(_model("fpn", mask_scoring=True).checkpoint_items) == {
        "backbone",
        "decoder",
        "head",
        "mask_scoring_head",
    }


def test_get_config_round_trip_rebuilds_components():
    model = _model("aspp", mask_scoring=True)
    clone = SegmentationModel.from_config(model.get_config())
    assert isinstance(clone.decoder, aspp.ASPP)
    assert clone.head.get_config() == model.head.get_config()
    assert clone.get_config() == model.get_config()
    images = _images()
    model(images)
    clone(images)
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone(images)["logits"], model(images)["logits"], rtol=1e-5)


# ----------------------------------------------------------------------------- training
def pixel_loss(labels, outputs):
    """Cross entropy of the logits, resized to the mask size, ignoring invalid pixels."""
    masks = labels["masks"]
    logits = tf.image.resize(outputs["logits"], tf.shape(masks)[1:3], method="bilinear")
    per_pixel = tf_keras.losses.sparse_categorical_crossentropy(
        tf.squeeze(masks, -1), logits, from_logits=True
    )
    valid = tf.cast(tf.squeeze(labels["valid_masks"], -1), per_pixel.dtype)
    return tf.reduce_sum(per_pixel * valid) / tf.maximum(tf.reduce_sum(valid), 1.0)


class PixelAccuracy(tf_keras.metrics.Metric):
    def __init__(self, name="pixel_accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.correct = self.add_weight(name="correct", initializer="zeros")
        self.total = self.add_weight(name="total", initializer="zeros")

    def update_state(self, labels, outputs, sample_weight=None):
        masks = tf.squeeze(labels["masks"], -1)
        logits = tf.image.resize(outputs["logits"], tf.shape(masks)[1:3])
        pred = tf.cast(tf.argmax(logits, -1), masks.dtype)
        self.correct.assign_add(tf.reduce_sum(tf.cast(pred == masks, tf.float32)))
        self.total.assign_add(tf.cast(tf.size(masks), tf.float32))

    def result(self):
        return self.correct / tf.maximum(self.total, 1.0)

    def reset_state(self):
        self.correct.assign(0.0)
        self.total.assign(0.0)


def _dataset():
    # Left half class 1, right half class 2: learnable from image content that differs by half.
    images = np.zeros([2, SIZE, SIZE, 3], np.float32)
    images[:, :, : SIZE // 2] = 1.0
    masks = np.full([2, SIZE, SIZE, 1], 2, np.int32)
    masks[:, :, : SIZE // 2] = 1
    labels = {
        "masks": masks,
        "valid_masks": np.ones_like(masks, dtype=bool),
        "image_info": np.tile(
            np.array([[[SIZE, SIZE], [SIZE, SIZE], [1, 1], [0, 0]]], np.float32), [2, 1, 1]
        ),
    }
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(2)


def test_fit_with_whole_dict_loss_and_metric_reduces_loss():
    model = _model("none")
    model.compile(
        optimizer=tf_keras.optimizers.Adam(learning_rate=1e-2),
        loss=pixel_loss,
        metrics=[PixelAccuracy()],
    )
    history = model.fit(_dataset(), epochs=8, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < losses[0]
    assert "pixel_accuracy" in history.history
    results = model.evaluate(_dataset(), verbose=0, return_dict=True)
    assert set(results) == {"loss", "pixel_accuracy"}
    assert 0.0 <= results["pixel_accuracy"] <= 1.0
    # Metric variables stay out of the model's weights (and checkpoints).
    assert all("correct" not in w.name for w in model.weights)


def test_keras3_optimizer_is_rebuilt_as_tf_keras(caplog):
    keras3 = pytest.importorskip("keras")
    if not keras3.__version__.startswith("3"):
        pytest.skip("Keras 3 not installed")
    model = _model("none")
    with caplog.at_level(logging.INFO, logger=segmentation_model.__name__):
        model.compile(
            optimizer=keras3.optimizers.Adam(learning_rate=1e-2, beta_1=0.8), loss=pixel_loss
        )
    assert isinstance(model.optimizer, tf_keras.optimizers.Adam)
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-2)
    assert model.optimizer.beta_1 == pytest.approx(0.8)
    assert any("Keras 3 optimizer" in r.getMessage() for r in caplog.records)
    history = model.fit(_dataset(), epochs=3, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_keras3_schedule_is_converted():
    keras3 = pytest.importorskip("keras")
    schedule = keras3.optimizers.schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)
    converted = segmentation_model.to_tf_keras_optimizer(
        keras3.optimizers.SGD(learning_rate=schedule, momentum=0.9)
    )
    assert isinstance(converted, tf_keras.optimizers.SGD)
    lr = converted._learning_rate  # the schedule; `learning_rate` is its current value
    assert isinstance(lr, tf_keras.optimizers.schedules.ExponentialDecay)
    assert float(lr(10)) == pytest.approx(0.05)
    assert converted.get_config()["momentum"] == pytest.approx(0.9)


def test_compute_loss_adds_regularization():
    model = _model("none", regularizer=tf_keras.regularizers.l2(1e-2))
    model.compile(optimizer="sgd", loss=pixel_loss)
    images, labels = next(iter(_dataset()))
    outputs = model(images, training=False)
    assert model.losses
    total = model.compute_loss(images, labels, outputs)
    expected = pixel_loss(labels, outputs) + tf.add_n(model.losses)
    np.testing.assert_allclose(total, expected, rtol=1e-6)


def test_compile_rejects_string_metrics_and_fit_without_loss():
    model = _model("none")
    with pytest.raises(ValueError, match=r"metrics\[0\]"):
        model.compile(optimizer="sgd", loss=pixel_loss, metrics=["accuracy"])
    model.compile(optimizer="sgd")
    with pytest.raises(ValueError, match="no loss"):
        model.fit(_dataset(), epochs=1, verbose=0)


def test_savedmodel_round_trip_reloads_same_outputs(tmp_path):
    model = _model("aspp", mask_scoring=True)
    images = _images()
    expected = model(images, training=False)
    model.save(str(tmp_path / "model"), save_format="tf")
    loaded = tf_keras.models.load_model(str(tmp_path / "model"), compile=False)
    assert isinstance(loaded, SegmentationModel)
    outputs = loaded(images, training=False)
    for name in ("logits", "mask_scores"):
        np.testing.assert_allclose(outputs[name], expected[name], rtol=1e-5, atol=1e-6)

"""`RetinaNetModel`: backbone → decoder → dense head → (inference) anchors + detection generator.

Model Garden's `official/vision/modeling/retinanet_model.py` (same constructor, call arguments
and output keys), plus what its tutorials expect: `RetinaNetModel(backbone=..., decoder=...,
head=...)` works on its own (a default `MultilevelDetectionGenerator`, anchor settings read from
the head and Model Garden's anchor defaults) and `model.output_specs` lists the output shapes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras

logger = logging.getLogger(__name__)

_COMPONENTS = ("backbone", "decoder", "head", "detection_generator")

# Model Garden's anchor defaults (`configs.retinanet.Anchor`): 3 scales x 3 aspect ratios.
DEFAULT_NUM_SCALES = 3
DEFAULT_ASPECT_RATIOS = (0.5, 1.0, 2.0)
DEFAULT_ANCHOR_SIZE = 4.0


def _component_config(component: Any) -> dict[str, Any]:
    try:
        return dict(component.get_config())
    except (AttributeError, NotImplementedError, TypeError):
        return {}


def _default_detection_generator() -> tf_keras.layers.Layer:
    # Imported here so this module loads without the post-processing stack.
    from vision_core.modeling.layers import detection_generator

    return detection_generator.MultilevelDetectionGenerator()


def _as_numpy_anchors(anchor_boxes: Mapping[Any, Any]) -> dict[str, np.ndarray]:
    return {str(k): np.asarray(v, dtype=np.float32) for k, v in anchor_boxes.items()}


@tf_keras.utils.register_keras_serializable(package="Vision")
class RetinaNetModel(tf_keras.Model):
    """A one-stage detector: images → per-level class/box outputs (→ detections).

    `model(images, training=True)` gives `{'cls_outputs', 'box_outputs'}` ({level: tensor}
    each, plus `'attribute_outputs'` when the head has attribute heads). With `training=False`
    the outputs also go through the detection generator: `'detection_boxes'` [B, N, 4] (pixels,
    `[ymin, xmin, ymax, xmax]`), `'detection_scores'`, `'detection_classes'`,
    `'num_detections'` (or `'decoded_boxes'` / `'decoded_box_scores'` when the generator does no
    NMS or is asked to return them).
    """

    def __init__(
        self,
        backbone: tf_keras.Model,
        decoder: tf_keras.Model | tf_keras.layers.Layer | None,
        head: tf_keras.layers.Layer,
        detection_generator: tf_keras.layers.Layer | None = None,
        anchor_boxes: Mapping[str, Any] | None = None,
        min_level: int | None = None,
        max_level: int | None = None,
        num_scales: int | None = None,
        aspect_ratios: Sequence[float] | None = None,
        anchor_size: float | None = None,
        **kwargs: Any,
    ):
        """Initializes the model.

        Args:
          backbone: a model returning {level: features} with `output_specs`.
          decoder: a model/layer mapping {level: features} to {level: features}, or None (the
            head reads the backbone features).
          head: e.g. `RetinaNetHead`; returns `(scores, boxes[, attributes])` per level.
          detection_generator: e.g. `MultilevelDetectionGenerator`; None = one with its
            defaults.
          anchor_boxes: fixed {level: [H_l, W_l, A * 4]} anchors for inference; otherwise they
            are made per input size from the anchor settings below.
          min_level: finest level; None = the head's `min_level`.
          max_level: coarsest level; None = the head's `max_level`.
          num_scales: anchor scales per octave; None = 3 (Model Garden's default).
          aspect_ratios: anchor width/height ratios; None = [0.5, 1.0, 2.0].
          anchor_size: base anchor size in units of the level's stride; None = 4.0.
          **kwargs: `tf_keras.Model` arguments.

        Raises:
          ValueError: levels missing and not readable from the head, or anchor settings that
            disagree with the head's anchors per location.
        """
        super().__init__(**kwargs)
        head_config = _component_config(head)
        if min_level is None:
            min_level = head_config.get("min_level")
        if max_level is None:
            max_level = head_config.get("max_level")
        if min_level is None or max_level is None:
            raise ValueError(
                "RetinaNetModel: min_level and max_level are required when the head does not "
                f"report them (head config: {sorted(head_config)})"
            )
        if anchor_boxes is None:
            num_scales = DEFAULT_NUM_SCALES if num_scales is None else num_scales
            aspect_ratios = list(DEFAULT_ASPECT_RATIOS if aspect_ratios is None else aspect_ratios)
            anchor_size = DEFAULT_ANCHOR_SIZE if anchor_size is None else anchor_size
            expected = head_config.get("num_anchors_per_location")
            if isinstance(expected, int) and expected != num_scales * len(aspect_ratios):
                raise ValueError(
                    f"RetinaNetModel: the head predicts {expected} anchors per location but "
                    f"num_scales={num_scales} x aspect_ratios={aspect_ratios} make "
                    f"{num_scales * len(aspect_ratios)}; pass matching num_scales / "
                    "aspect_ratios or anchor_boxes"
                )
        elif aspect_ratios is not None:
            aspect_ratios = list(aspect_ratios)
        if detection_generator is None:
            detection_generator = _default_detection_generator()
        self._config_dict = {
            "backbone": backbone,
            "decoder": decoder,
            "head": head,
            "detection_generator": detection_generator,
            "min_level": min_level,
            "max_level": max_level,
            "num_scales": num_scales,
            "aspect_ratios": aspect_ratios,
            "anchor_size": anchor_size,
        }
        # Attribute names as in Model Garden, so object-based checkpoints line up.
        self._backbone = backbone
        self._decoder = decoder
        self._head = head
        self._detection_generator = detection_generator
        self._set_anchor_state(
            None if anchor_boxes is None else _as_numpy_anchors(anchor_boxes), cache={}
        )
        # The model owns no variables of its own: once its components hold theirs (as
        # `build_retinanet` makes sure), `count_params()` / `summary()` work before any call.
        parts = [backbone, head] + ([] if decoder is None else [decoder])
        if all(getattr(part, "built", False) for part in parts):
            self.built = True

    @tf.__internal__.tracking.no_automatic_dependency_tracking
    def _set_anchor_state(
        self, anchor_boxes: dict[str, np.ndarray] | None, cache: dict[Any, Any]
    ) -> None:
        # Plain numpy, not tracked: anchors are constants, not weights or checkpoint entries.
        self._anchor_boxes = anchor_boxes
        self._anchor_cache = cache

    # ----------------------------------------------------------------------------- anchors
    def _anchor_generator(self, image_size: Any) -> Any:
        from vision_core.ops import anchor

        cfg = self._config_dict
        return anchor.Anchor(
            min_level=cfg["min_level"],
            max_level=cfg["max_level"],
            num_scales=cfg["num_scales"],
            aspect_ratios=cfg["aspect_ratios"],
            anchor_size=cfg["anchor_size"],
            image_size=image_size,
        )

    def _anchors_for(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        """{level: [H_l, W_l, A * 4]} anchors for the images' (padded) size."""
        if self._config_dict["num_scales"] is None:
            raise ValueError(
                "RetinaNetModel: no anchors for inference; pass anchor_boxes to the model or "
                "the call, or build the model with num_scales / aspect_ratios / anchor_size"
            )
        height, width = images.shape[1], images.shape[2]
        if height is None or width is None:
            # Unknown until run time (e.g. an image-bytes serving signature): built in-graph.
            size = tf.shape(images)[1:3]
            return dict(self._anchor_generator(size).multilevel_boxes)
        key = (int(height), int(width))
        if key not in self._anchor_cache:
            # Computed once per input size, eagerly, and kept as numpy so the constants are
            # neither rebuilt on every call nor tied to one traced graph.
            with tf.init_scope():
                boxes = self._anchor_generator(list(key)).multilevel_boxes
                self._anchor_cache[key] = {
                    str(k): np.asarray(v, dtype=np.float32) for k, v in boxes.items()
                }
        return {k: tf.constant(v) for k, v in self._anchor_cache[key].items()}

    # -------------------------------------------------------------------------------- call
    def call(
        self,
        images: tf.Tensor | Sequence[tf.Tensor],
        image_shape: tf.Tensor | None = None,
        anchor_boxes: Mapping[str, tf.Tensor] | None = None,
        output_intermediate_features: bool = False,
        training: bool | None = None,
    ) -> dict[str, Any]:
        """Runs the detector.

        Args:
          images: [B, H, W, 3] images (or a sequence of image tensors for multi-input
            backbones; anchors then follow the first).
          image_shape: [B, 2] height and width of the real image inside each (padded) input;
            detections are clipped to it. None = the full input size.
          anchor_boxes: {level: [B, H_l, W_l, A * 4]} (or unbatched) anchors for inference,
            used when the model holds no fixed anchors.
          output_intermediate_features: also return 'backbone_<level>' / 'decoder_<level>'.
          training: training mode (no post-processing) or inference.

        Returns:
          The outputs dict described in the class docstring.
        """
        if isinstance(images, list | tuple):
            if not images:
                raise ValueError("RetinaNetModel: images is an empty sequence")
            primary = images[0]
        else:
            primary = images
        primary = tf.convert_to_tensor(primary)
        outputs: dict[str, Any] = {}
        features = self._backbone(images, training=training)
        if output_intermediate_features:
            outputs.update({f"backbone_{k}": v for k, v in features.items()})
        if self._decoder is not None:
            features = self._decoder(features, training=training)
            if output_intermediate_features:
                outputs.update({f"decoder_{k}": v for k, v in features.items()})

        head_outputs = self._head(features, training=training)
        raw_scores, raw_boxes = head_outputs[0], head_outputs[1]
        # Heads of Model Garden's shape always return a third (possibly empty) attributes dict.
        raw_attributes = head_outputs[2] if len(head_outputs) > 2 else {}
        outputs["cls_outputs"] = raw_scores
        outputs["box_outputs"] = raw_boxes
        if training:
            if raw_attributes:
                outputs["attribute_outputs"] = raw_attributes
            return outputs

        batch_size = tf.shape(primary)[0]
        if self._anchor_boxes is not None:
            anchors = {k: tf.constant(v) for k, v in self._anchor_boxes.items()}
        elif anchor_boxes is not None:
            anchors = dict(anchor_boxes)
        else:
            anchors = self._anchors_for(primary)
        anchors = {k: tf.convert_to_tensor(v, tf.float32) for k, v in anchors.items()}
        anchors = {
            k: tf.tile(v[None], [batch_size, 1, 1, 1]) if v.shape.rank == 3 else v
            for k, v in anchors.items()
        }
        if image_shape is None:
            size = tf.cast(tf.shape(primary)[1:3], tf.float32)
            image_shape = tf.tile(size[None], [batch_size, 1])

        results = self._detection_generator(
            raw_boxes, raw_scores, anchors, image_shape, raw_attributes or None
        )
        generator_config = _component_config(self._detection_generator)
        apply_nms = generator_config.get("apply_nms", True)
        if apply_nms:
            for key in ("detection_boxes", "detection_scores", "detection_classes"):
                outputs[key] = results[key]
            outputs["num_detections"] = results["num_detections"]
        if not apply_nms or generator_config.get("return_decoded"):
            outputs["decoded_boxes"] = results["decoded_boxes"]
            outputs["decoded_box_scores"] = results["decoded_box_scores"]
            if results.get("decoded_box_attributes") is not None:
                outputs["decoded_box_attributes"] = results["decoded_box_attributes"]
        if raw_attributes:
            outputs["attribute_outputs"] = raw_attributes
            if results.get("detection_attributes") is not None:
                outputs["detection_attributes"] = results["detection_attributes"]
        return outputs

    # ---------------------------------------------------------------------------- structure
    @property
    def backbone(self) -> tf_keras.Model:
        return self._backbone

    @property
    def decoder(self) -> tf_keras.Model | tf_keras.layers.Layer | None:
        return self._decoder

    @property
    def head(self) -> tf_keras.layers.Layer:
        return self._head

    @property
    def detection_generator(self) -> tf_keras.layers.Layer:
        return self._detection_generator

    @property
    def anchor_boxes(self) -> dict[str, tf.Tensor] | None:
        """The fixed inference anchors given at construction, or None."""
        if self._anchor_boxes is None:
            return None
        return {k: tf.constant(v) for k, v in self._anchor_boxes.items()}

    @property
    def checkpoint_items(self) -> dict[str, tf_keras.Model | tf_keras.layers.Layer]:
        """Components to checkpoint by name, e.g. to restore only the backbone."""
        items = {"backbone": self._backbone, "head": self._head}
        if self._decoder is not None:
            items["decoder"] = self._decoder
        return items

    @property
    def output_specs(self) -> dict[str, Any]:
        """Shapes of the inference outputs (batch None), from the components' specs.

        {'cls_outputs': {level: TensorShape}, 'box_outputs': {level: TensorShape}} (+
        'attribute_outputs': {name: {level: TensorShape}}), and with NMS 'detection_boxes'
        [None, N, 4], 'detection_scores' / 'detection_classes' [None, N], 'num_detections'
        [None], N being the generator's `max_num_detections`. Spatial sizes are None when the
        backbone was built for any input size.
        """
        features = self._backbone.output_specs
        if self._decoder is not None:
            if hasattr(self._decoder, "output_specs"):
                features = self._decoder.output_specs
            else:
                features = self._decoder.compute_output_shape(features)
        head_shapes = self._head.compute_output_shape(features)

        def unbatched(shapes: Mapping[str, Any]) -> dict[str, tf.TensorShape]:
            return {
                k: tf.TensorShape([None, *tf.TensorShape(v).as_list()[1:]])
                for k, v in shapes.items()
            }

        specs: dict[str, Any] = {
            "cls_outputs": unbatched(head_shapes[0]),
            "box_outputs": unbatched(head_shapes[1]),
        }
        if len(head_shapes) > 2 and head_shapes[2]:
            specs["attribute_outputs"] = {
                name: unbatched(shapes) for name, shapes in head_shapes[2].items()
            }
        generator_config = _component_config(self._detection_generator)
        if generator_config.get("apply_nms", True):
            num = generator_config.get("max_num_detections")
            specs["detection_boxes"] = tf.TensorShape([None, num, 4])
            specs["detection_scores"] = tf.TensorShape([None, num])
            specs["detection_classes"] = tf.TensorShape([None, num])
            specs["num_detections"] = tf.TensorShape([None])
        return specs

    # ------------------------------------------------------------------------ serialization
    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {}
        for name, value in self._config_dict.items():
            if name in _COMPONENTS:
                config[name] = (
                    None if value is None else tf_keras.utils.serialize_keras_object(value)
                )
            else:
                config[name] = value
        config["anchor_boxes"] = (
            None
            if self._anchor_boxes is None
            else {k: v.tolist() for k, v in self._anchor_boxes.items()}
        )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> RetinaNetModel:
        config = dict(config)
        for name in _COMPONENTS:
            value = config.get(name)
            if isinstance(value, Mapping):
                config[name] = tf_keras.layers.deserialize(value, custom_objects=custom_objects)
        return cls(**config)

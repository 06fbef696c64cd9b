"""Dense prediction heads: `RetinaNetHead` (one-stage detection) and `RPNHead` (proposals).

Constructor arguments, defaults, layer names, variable shapes and the order in which the layers
are tracked follow Model Garden's `official/vision/modeling/heads/dense_prediction_heads.py`, so
its checkpoints and weight bundles map onto these heads one to one.

Both heads run a small conv tower on every pyramid level. The tower convs are shared across
levels (by default) while each level keeps its own batch norms, because feature statistics differ
from level to level even when the filters are the same.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf
import tf_keras

from vision_core.modeling.layers import nn_layers

logger = logging.getLogger(__name__)

ATTRIBUTE_TYPES = ("regression", "classification")

# Focal-loss prior (Lin et al., 2017): every anchor starts with foreground probability 0.01, so
# the loss of the many background anchors does not swamp the first steps.
PRIOR_PROBABILITY = 0.01


def prior_bias(probability: float = PRIOR_PROBABILITY) -> float:
    """The logit bias giving `sigmoid(bias) == probability`."""
    return -math.log((1.0 - probability) / probability)


def _check_levels(owner: str, min_level: int, max_level: int) -> None:
    if int(min_level) > int(max_level):
        raise ValueError(f"{owner}: min_level {min_level} is greater than max_level {max_level}")


def _select_level(owner: str, features: Mapping[str, Any], level: int) -> Any:
    if not isinstance(features, Mapping):
        raise ValueError(
            f"{owner}: expected a {{level: features}} dict (a decoder's output), "
            f"got {type(features).__name__}"
        )
    key = str(level)
    if key not in features:
        raise ValueError(
            f"{owner}: level {key} is missing from the features; got levels "
            f"{sorted(features, key=lambda k: (len(str(k)), str(k)))}"
        )
    return features[key]


def _random_normal(stddev: float) -> tf_keras.initializers.Initializer:
    return tf_keras.initializers.RandomNormal(stddev=stddev)


def _normalize_anchor_counts(
    value: int | Mapping[Any, int], min_level: int, max_level: int
) -> int | dict[str, int]:
    if isinstance(value, Mapping):
        counts = {str(k): int(v) for k, v in value.items()}
        missing = [lv for lv in range(min_level, max_level + 1) if str(lv) not in counts]
        if missing:
            raise ValueError(
                f"RetinaNetHead: num_anchors_per_location lacks levels {missing} "
                f"(has {sorted(counts)})"
            )
        if any(v <= 0 for v in counts.values()):
            raise ValueError(f"RetinaNetHead: num_anchors_per_location must be > 0, got {counts}")
        return counts
    if int(value) <= 0:
        raise ValueError(f"RetinaNetHead: num_anchors_per_location must be > 0, got {value}")
    return int(value)


def _normalize_attribute_heads(
    attribute_heads: Sequence[Any] | None, share_classification_heads: bool
) -> list[dict[str, Any]]:
    """Attribute head specs as plain dicts with every key present (configs or dicts accepted)."""
    normalized = []
    names = set()
    for index, head in enumerate(attribute_heads or []):
        if hasattr(head, "as_dict"):
            head = head.as_dict()
        if not isinstance(head, Mapping):
            raise ValueError(
                f"RetinaNetHead: attribute_heads[{index}] must be a dict with name, type, size, "
                f"got {head!r}"
            )
        spec = {
            "name": head.get("name", ""),
            "type": head.get("type", "regression"),
            "size": head.get("size", 1),
            "prediction_tower_name": head.get("prediction_tower_name") or "",
            "num_convs": head.get("num_convs"),
            "num_filters": head.get("num_filters"),
        }
        unknown = set(head) - set(spec)
        if unknown:
            raise ValueError(
                f"RetinaNetHead: attribute_heads[{index}] has unknown keys {sorted(unknown)}; "
                f"allowed: {', '.join(spec)}"
            )
        if not spec["name"] or spec["name"] in names:
            raise ValueError(
                f"RetinaNetHead: attribute_heads[{index}].name must be a unique non-empty "
                f"string, got {spec['name']!r}"
            )
        names.add(spec["name"])
        if spec["type"] not in ATTRIBUTE_TYPES:
            raise ValueError(
                f"RetinaNetHead: attribute_heads[{index}].type {spec['type']!r} is not one of "
                f"{', '.join(ATTRIBUTE_TYPES)}"
            )
        if int(spec["size"]) <= 0:
            raise ValueError(
                f"RetinaNetHead: attribute_heads[{index}].size must be > 0, got {spec['size']}"
            )
        for key in ("num_convs", "num_filters"):
            if spec[key] is not None and spec[key] < 0:
                raise ValueError(
                    f"RetinaNetHead: attribute_heads[{index}].{key} must be >= 0, got {spec[key]}"
                )
        if spec["prediction_tower_name"] and share_classification_heads:
            raise ValueError(
                f"RetinaNetHead: attribute_heads[{index}] sets prediction_tower_name "
                f"{spec['prediction_tower_name']!r}, which cannot be combined with "
                "share_classification_heads=True"
            )
        normalized.append(spec)
    return normalized


@tf_keras.utils.register_keras_serializable(package="Vision")
class RetinaNetHead(tf_keras.layers.Layer):
    """RetinaNet's class and box subnets (Lin et al., 2017), plus optional attribute subnets.

    Called with `{level: [B, H_l, W_l, C]}` for every level min_level..max_level, returns
    `(scores, boxes, attributes)`: `scores[level]` is `[B, H_l, W_l, A_l * num_classes]` logits,
    `boxes[level]` is `[B, H_l, W_l, A_l * num_params_per_anchor]` box codes, and
    `attributes[name][level]` is `[B, H_l, W_l, A * size]` per attribute head (an empty dict
    without attribute heads), where `A_l` is the number of anchors per location at that level.
    """

    def __init__(
        self,
        min_level: int,
        max_level: int,
        num_classes: int,
        num_anchors_per_location: int | Mapping[str, int],
        num_convs: int = 4,
        num_filters: int = 256,
        attribute_heads: Sequence[Mapping[str, Any]] | None = None,
        share_classification_heads: bool = False,
        use_separable_conv: bool = False,
        activation: str = "relu",
        use_sync_bn: bool = False,
        norm_momentum: float = 0.99,
        norm_epsilon: float = 0.001,
        kernel_regularizer: tf_keras.regularizers.Regularizer | None = None,
        bias_regularizer: tf_keras.regularizers.Regularizer | None = None,
        num_params_per_anchor: int = 4,
        share_level_convs: bool = True,
        **kwargs: Any,
    ):
        """Initializes the head.

        Args:
          min_level: finest pyramid level predicted on.
          max_level: coarsest pyramid level predicted on.
          num_classes: classes scored per anchor (sigmoid logits, no background class).
          num_anchors_per_location: anchors per pixel, one number for all levels or
            `{level: number}`; per-level numbers need `share_level_convs=False` unless equal.
          num_convs: 3x3 conv + BN + activation blocks in each tower.
          num_filters: channels of the tower convs.
          attribute_heads: extra per-anchor predictions, each a dict (or config) with `name`,
            `type` ('regression' or 'classification'), `size` (values per anchor) and
            optionally `prediction_tower_name` (heads naming the same tower share it),
            `num_convs`, `num_filters` (default: the head's).
          share_classification_heads: classification attribute heads predict from the class
            tower's features instead of a tower of their own.
          use_separable_conv: separable instead of regular convs.
          activation: activation after each tower batch norm.
          use_sync_bn: synchronize batch-norm statistics across replicas.
          norm_momentum: batch-norm moving-average momentum.
          norm_epsilon: batch-norm epsilon.
          kernel_regularizer: regularizer of the conv kernels.
          bias_regularizer: regularizer of the conv biases.
          num_params_per_anchor: box parameters per anchor (4 for axis-aligned boxes).
          share_level_convs: share the tower convs and predictors across levels (batch norms
            are always per level).
          **kwargs: `tf_keras.layers.Layer` arguments.

        Raises:
          ValueError: bad levels or counts, or a malformed attribute head.
        """
        super().__init__(**kwargs)
        _check_levels("RetinaNetHead", min_level, max_level)
        if num_classes <= 0:
            raise ValueError(f"RetinaNetHead: num_classes must be > 0, got {num_classes}")
        anchors = _normalize_anchor_counts(num_anchors_per_location, min_level, max_level)
        if isinstance(anchors, dict) and share_level_convs:
            distinct = {anchors[str(lv)] for lv in range(min_level, max_level + 1)}
            if len(distinct) > 1:
                raise ValueError(
                    f"RetinaNetHead: num_anchors_per_location differs per level ({anchors}); "
                    "the predictors shared across levels need one count, so set "
                    "share_level_convs=False"
                )
        attributes = _normalize_attribute_heads(attribute_heads, share_classification_heads)
        if attributes and isinstance(anchors, dict):
            distinct = {anchors[str(lv)] for lv in range(min_level, max_level + 1)}
            if len(distinct) > 1:
                raise ValueError(
                    "RetinaNetHead: attribute_heads predict with one layer for all levels and "
                    f"need one num_anchors_per_location, got {anchors}"
                )
        self._config_dict = {
            "min_level": min_level,
            "max_level": max_level,
            "num_classes": num_classes,
            "num_anchors_per_location": anchors,
            "num_convs": num_convs,
            "num_filters": num_filters,
            "attribute_heads": attributes,
            "share_classification_heads": share_classification_heads,
            "use_separable_conv": use_separable_conv,
            "activation": activation,
            "use_sync_bn": use_sync_bn,
            "norm_momentum": norm_momentum,
            "norm_epsilon": norm_epsilon,
            "kernel_regularizer": nn_layers.canonical_regularizer(kernel_regularizer),
            "bias_regularizer": nn_layers.canonical_regularizer(bias_regularizer),
            "num_params_per_anchor": num_params_per_anchor,
            "share_level_convs": share_level_convs,
        }
        self._activation = nn_layers.get_activation(activation)

    # ------------------------------------------------------------------------------ helpers
    @property
    def _levels(self) -> range:
        return range(self._config_dict["min_level"], self._config_dict["max_level"] + 1)

    def anchors_at(self, level: int | str) -> int:
        """Anchors per location at `level`."""
        anchors = self._config_dict["num_anchors_per_location"]
        return anchors[str(level)] if isinstance(anchors, dict) else anchors

    def _shared_anchor_count(self) -> int:
        return self.anchors_at(self._config_dict["min_level"])

    def _norm(self, name: str) -> tf_keras.layers.Layer:
        cfg = self._config_dict
        return nn_layers.get_norm_layer(cfg["use_sync_bn"])(
            axis=nn_layers.get_bn_axis(),
            momentum=cfg["norm_momentum"],
            epsilon=cfg["norm_epsilon"],
            name=name,
        )

    def _tower_conv(self, name: str, filters: int) -> tf_keras.layers.Layer:
        cfg = self._config_dict
        common = {
            "filters": filters,
            "kernel_size": 3,
            "padding": "same",
            "bias_initializer": "zeros",
            "bias_regularizer": cfg["bias_regularizer"],
            "name": name,
        }
        if cfg["use_separable_conv"]:
            # Model Garden leaves separable tower convs at the Keras initializers and without a
            # kernel regularizer; kept so training behaves the same.
            return tf_keras.layers.SeparableConv2D(**common)
        return tf_keras.layers.Conv2D(
            kernel_initializer=_random_normal(0.01),
            kernel_regularizer=cfg["kernel_regularizer"],
            **common,
        )

    def _predictor(
        self, name: str, filters: int, bias: float, separable_init: bool = True
    ) -> tf_keras.layers.Layer:
        cfg = self._config_dict
        common = {
            "filters": filters,
            "kernel_size": 3,
            "padding": "same",
            "bias_initializer": tf_keras.initializers.Constant(bias) if bias else "zeros",
            "bias_regularizer": cfg["bias_regularizer"],
            "name": name,
        }
        if cfg["use_separable_conv"]:
            if not separable_init:
                return tf_keras.layers.SeparableConv2D(**common)
            return tf_keras.layers.SeparableConv2D(
                depthwise_initializer=_random_normal(0.03),
                depthwise_regularizer=cfg["kernel_regularizer"],
                pointwise_initializer=_random_normal(0.03),
                pointwise_regularizer=cfg["kernel_regularizer"],
                **common,
            )
        # A near-zero kernel: the first predictions are the prior (classes) or zero (boxes).
        return tf_keras.layers.Conv2D(
            kernel_initializer=_random_normal(1e-5),
            kernel_regularizer=cfg["kernel_regularizer"],
            **common,
        )

    def _build_tower(
        self, net_name: str, predictor_name: str, values_per_anchor: int, bias: float
    ) -> tuple[list[Any], list[list[tf_keras.layers.Layer]], Any]:
        """(convs, per-level norms, predictor(s)) of one subnet, named as in Model Garden."""
        cfg = self._config_dict
        shared = cfg["share_level_convs"]
        num_convs, num_filters = cfg["num_convs"], cfg["num_filters"]
        norms = [
            [self._norm(f"{net_name}-conv-norm_{level}_{i}") for i in range(num_convs)]
            for level in self._levels
        ]
        if shared:
            convs: list[Any] = [
                self._tower_conv(f"{net_name}-conv_{i}", num_filters) for i in range(num_convs)
            ]
            predictors: Any = self._predictor(
                predictor_name, values_per_anchor * self._shared_anchor_count(), bias
            )
        else:
            convs = [
                [
                    self._tower_conv(f"{net_name}-conv_{level}_{i}", num_filters)
                    for i in range(num_convs)
                ]
                for level in self._levels
            ]
            predictors = [
                self._predictor(
                    f"{predictor_name}-{level}", values_per_anchor * self.anchors_at(level), bias
                )
                for level in self._levels
            ]
        return convs, norms, predictors

    def _build_attribute_nets(self) -> None:
        cfg = self._config_dict
        # Three dicts assigned before they are filled, as Model Garden does, so the layers are
        # tracked (and their weights listed) in the same order.
        self._att_predictors = {}
        self._att_convs = {}
        self._att_norms = {}
        for head in cfg["attribute_heads"]:
            name = head["name"]
            num_convs = head["num_convs"] or cfg["num_convs"]
            num_filters = head["num_filters"] or cfg["num_filters"]
            # Convs are shared across levels; a tower that is never called (shared with another
            # head or with the class net) creates no variables.
            self._att_convs[name] = [
                self._tower_conv(f"{name}-conv_{i}", num_filters) for i in range(num_convs)
            ]
            self._att_norms[name] = [
                [self._norm(f"{name}-conv-norm_{level}_{i}") for i in range(num_convs)]
                for level in self._levels
            ]
            bias = prior_bias() if head["type"] == "classification" else 0.0
            self._att_predictors[name] = self._predictor(
                f"{name}_attributes",
                head["size"] * self._shared_anchor_count(),
                bias,
                separable_init=False,
            )

    # -------------------------------------------------------------------------------- keras
    def build(self, input_shape: Any) -> None:
        cfg = self._config_dict
        self._cls_convs, self._cls_norms, self._classifier = self._build_tower(
            "classnet", "scores", cfg["num_classes"], prior_bias()
        )
        self._box_convs, self._box_norms, self._box_regressor = self._build_tower(
            "boxnet", "boxes", cfg["num_params_per_anchor"], 0.0
        )
        if cfg["attribute_heads"]:
            self._build_attribute_nets()
        super().build(input_shape)

    def _tower(self, x: tf.Tensor, convs: Sequence[Any], norms: Sequence[Any]) -> tf.Tensor:
        for conv, norm in zip(convs, norms):
            x = self._activation(norm(conv(x)))
        return x

    def call(
        self, features: Mapping[str, tf.Tensor]
    ) -> tuple[dict[str, tf.Tensor], dict[str, tf.Tensor], dict[str, dict[str, tf.Tensor]]]:
        cfg = self._config_dict
        shared = cfg["share_level_convs"]
        scores: dict[str, tf.Tensor] = {}
        boxes: dict[str, tf.Tensor] = {}
        attributes: dict[str, dict[str, tf.Tensor]] = {
            head["name"]: {} for head in cfg["attribute_heads"]
        }
        for i, level in enumerate(self._levels):
            key = str(level)
            x = _select_level("RetinaNetHead", features, level)
            cls_convs = self._cls_convs if shared else self._cls_convs[i]
            box_convs = self._box_convs if shared else self._box_convs[i]
            classifier = self._classifier if shared else self._classifier[i]
            regressor = self._box_regressor if shared else self._box_regressor[i]

            class_features = self._tower(x, cls_convs, self._cls_norms[i])
            scores[key] = classifier(class_features)
            boxes[key] = regressor(self._tower(x, box_convs, self._box_norms[i]))
            if cfg["attribute_heads"]:
                self._predict_attributes(attributes, key, i, x, class_features)
        return scores, boxes, attributes

    def _predict_attributes(
        self,
        attributes: dict[str, dict[str, tf.Tensor]],
        key: str,
        level_index: int,
        x: tf.Tensor,
        class_features: tf.Tensor,
    ) -> None:
        cfg = self._config_dict
        towers: dict[str, tf.Tensor] = {}
        for head in cfg["attribute_heads"]:
            name = head["name"]
            if cfg["share_classification_heads"] and head["type"] == "classification":
                tower_features = class_features
            else:
                tower_name = head["prediction_tower_name"]
                if not tower_name or tower_name not in towers:
                    # The first head naming a tower runs it with its own convs and norms.
                    out = self._tower(x, self._att_convs[name], self._att_norms[name][level_index])
                    if tower_name:
                        towers[tower_name] = out
                    tower_features = out
                else:
                    tower_features = towers[tower_name]
            attributes[name][key] = self._att_predictors[name](tower_features)

    def compute_output_shape(self, input_shape: Mapping[str, Any]) -> tuple[dict, dict, dict]:
        """({level: scores shape}, {level: boxes shape}, {name: {level: shape}})."""
        cfg = self._config_dict
        scores, boxes = {}, {}
        attributes: dict[str, dict[str, tf.TensorShape]] = {
            head["name"]: {} for head in cfg["attribute_heads"]
        }
        for level in self._levels:
            shape = tf.TensorShape(_select_level("RetinaNetHead", input_shape, level)).as_list()
            anchors = self.anchors_at(level)
            scores[str(level)] = tf.TensorShape(shape[:3] + [anchors * cfg["num_classes"]])
            boxes[str(level)] = tf.TensorShape(shape[:3] + [anchors * cfg["num_params_per_anchor"]])
            for head in cfg["attribute_heads"]:
                attributes[head["name"]][str(level)] = tf.TensorShape(
                    shape[:3] + [anchors * head["size"]]
                )
        return scores, boxes, attributes

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **nn_layers.serializable_config(self._config_dict)}

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> RetinaNetHead:
        return cls(**config)


@tf_keras.utils.register_keras_serializable(package="Vision")
class RPNHead(tf_keras.layers.Layer):
    """Region proposal head (Ren et al., 2015): objectness and box codes for every anchor.

    Called with `{level: [B, H_l, W_l, C]}`, returns `(scores, boxes)` with `scores[level]`
    `[B, H_l, W_l, A]` objectness logits and `boxes[level]` `[B, H_l, W_l, 4 * A]`. The 3x3
    convs are shared across levels, their batch norms are per level, and the two predictors
    are 1x1 convs.
    """

    def __init__(
        self,
        min_level: int,
        max_level: int,
        num_anchors_per_location: int,
        num_convs: int = 1,
        num_filters: int = 256,
        use_separable_conv: bool = False,
        activation: str = "relu",
        use_sync_bn: bool = False,
        norm_momentum: float = 0.99,
        norm_epsilon: float = 0.001,
        kernel_regularizer: tf_keras.regularizers.Regularizer | None = None,
        bias_regularizer: tf_keras.regularizers.Regularizer | None = None,
        **kwargs: Any,
    ):
        """Initializes the head.

        Args:
          min_level: finest pyramid level predicted on.
          max_level: coarsest pyramid level predicted on.
          num_anchors_per_location: anchors per pixel.
          num_convs: 3x3 conv + BN + activation blocks before the predictors.
          num_filters: channels of those convs.
          use_separable_conv: separable instead of regular convs.
          activation: activation after each batch norm.
          use_sync_bn: synchronize batch-norm statistics across replicas.
          norm_momentum: batch-norm moving-average momentum.
          norm_epsilon: batch-norm epsilon.
          kernel_regularizer: regularizer of the conv kernels.
          bias_regularizer: regularizer of the conv biases.
          **kwargs: `tf_keras.layers.Layer` arguments.

        Raises:
          ValueError: bad levels or anchor count.
        """
        super().__init__(**kwargs)
        _check_levels("RPNHead", min_level, max_level)
        if int(num_anchors_per_location) <= 0:
            raise ValueError(
                f"RPNHead: num_anchors_per_location must be > 0, got {num_anchors_per_location}"
            )
        self._config_dict = {
            "min_level": min_level,
            "max_level": max_level,
            "num_anchors_per_location": int(num_anchors_per_location),
            "num_convs": num_convs,
            "num_filters": num_filters,
            "use_separable_conv": use_separable_conv,
            "activation": activation,
            "use_sync_bn": use_sync_bn,
            "norm_momentum": norm_momentum,
            "norm_epsilon": norm_epsilon,
            "kernel_regularizer": nn_layers.canonical_regularizer(kernel_regularizer),
            "bias_regularizer": nn_layers.canonical_regularizer(bias_regularizer),
        }
        self._activation = nn_layers.get_activation(activation)

    @property
    def _levels(self) -> range:
        return range(self._config_dict["min_level"], self._config_dict["max_level"] + 1)

    def _conv(self, name: str, filters: int, kernel_size: int, stddev: float) -> Any:
        cfg = self._config_dict
        common = {
            "filters": filters,
            "kernel_size": kernel_size,
            "padding": "same" if kernel_size > 1 else "valid",
            "bias_initializer": "zeros",
            "bias_regularizer": cfg["bias_regularizer"],
            "name": name,
        }
        if cfg["use_separable_conv"]:
            # As in Model Garden: Keras' default initializers, no kernel regularizer.
            return tf_keras.layers.SeparableConv2D(**common)
        return tf_keras.layers.Conv2D(
            kernel_initializer=_random_normal(stddev),
            kernel_regularizer=cfg["kernel_regularizer"],
            **common,
        )

    def build(self, input_shape: Any) -> None:
        cfg = self._config_dict
        self._convs = [
            self._conv(f"rpn-conv_{i}", cfg["num_filters"], 3, 0.01)
            for i in range(cfg["num_convs"])
        ]
        self._norms = [
            [
                nn_layers.get_norm_layer(cfg["use_sync_bn"])(
                    axis=nn_layers.get_bn_axis(),
                    momentum=cfg["norm_momentum"],
                    epsilon=cfg["norm_epsilon"],
                    name=f"rpn-conv-norm_{level}_{i}",
                )
                for i in range(cfg["num_convs"])
            ]
            for level in self._levels
        ]
        anchors = cfg["num_anchors_per_location"]
        self._classifier = self._conv("rpn-scores", anchors, 1, 1e-5)
        self._box_regressor = self._conv("rpn-boxes", 4 * anchors, 1, 1e-5)
        super().build(input_shape)

    def call(
        self, features: Mapping[str, tf.Tensor]
    ) -> tuple[dict[str, tf.Tensor], dict[str, tf.Tensor]]:
        scores, boxes = {}, {}
        for i, level in enumerate(self._levels):
            x = _select_level("RPNHead", features, level)
            for conv, norm in zip(self._convs, self._norms[i]):
                x = self._activation(norm(conv(x)))
            scores[str(level)] = self._classifier(x)
            boxes[str(level)] = self._box_regressor(x)
        return scores, boxes

    def compute_output_shape(self, input_shape: Mapping[str, Any]) -> tuple[dict, dict]:
        """({level: scores shape}, {level: boxes shape})."""
        anchors = self._config_dict["num_anchors_per_location"]
        scores, boxes = {}, {}
        for level in self._levels:
            shape = tf.TensorShape(_select_level("RPNHead", input_shape, level)).as_list()
            scores[str(level)] = tf.TensorShape(shape[:3] + [anchors])
            boxes[str(level)] = tf.TensorShape(shape[:3] + [4 * anchors])
        return scores, boxes

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **nn_layers.serializable_config(self._config_dict)}

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> RPNHead:
        return cls(**config)

"""Detection post-processing: raw head outputs to final boxes (Model Garden's
`official.vision.modeling.layers.detection_generator`).

Results follow Model Garden's definitions: scores are per-class probabilities with class 0 the
background (dropped, and detected classes reported 1-based); every class keeps at most
`pre_nms_top_k` candidates scoring above `pre_nms_score_threshold`; greedy NMS runs per class
with `nms_iou_threshold`; the best `max_num_detections` over all classes are returned.

How they are computed is ours, and is what makes post-processing cheap next to the network
(Model Garden's v1/v2 loop over every class with a full top-k and a tiled NMS each). Greedy
per-class NMS followed by a global top-N equals one greedy pass over all (anchor, class) pairs
in descending score order that keeps a pair unless a kept pair of the same class overlaps it
and stops after N keeps. So only a pool of the best pairs is ranked (two-stage: best anchors by
their top class score, then pairs among those), only the pool's boxes are decoded, and the pool
goes through TensorFlow's C++ combined NMS. The first pool holds max(1000, 10 N) pairs; if it
runs out before N boxes survive while more candidates above the threshold remain, a pool of
`pre_nms_top_k` pairs is tried, and then every anchor, so the result never depends on the pool
size. (Pairs with exactly equal scores may come out in another order than in Model Garden.)

`nms_version` accepts Model Garden's names; 'v1', 'v2' and 'v3' give the definition above (for
'v3', exact NMS rather than Model Garden's EdgeTPU approximation), 'batched' drops the
per-class `pre_nms_top_k` cap and suppresses at IoU > threshold where the others suppress at
IoU >= threshold, as Model Garden's versions do. Soft-NMS (`soft_nms_sigma` > 0) applies with
'v1' only, as in Model Garden. Unlike Model Garden's v1/v2, padding entries past
`num_detections` are all zero (boxes, scores and class 0) in every version.

Not jit-compilable (the NMS kernels have no XLA lowering); SavedModel export works.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf
import tf_keras

from vision_core.modeling.layers import nn_layers
from vision_core.ops import box_ops, nms

logger = logging.getLogger(__name__)

NMS_VERSIONS = ("v1", "v2", "v3", "batched")
# Size of the first candidate pool: enough for max_num_detections survivors in the usual case;
# a larger pool (pre_nms_top_k) and then every anchor are tried only when it falls short.
_FIRST_POOL = 1000
_FIRST_POOL_PER_DETECTION = 10


def _check_common_args(config: Mapping[str, Any]) -> None:
    version = config["nms_version"]
    if version not in NMS_VERSIONS:
        hint = " (TFLite export's custom NMS op is not provided)" if version == "tflite" else ""
        raise ValueError(
            f"nms_version {version!r} is not supported{hint}; allowed values: {NMS_VERSIONS}."
        )
    if int(config["pre_nms_top_k"]) < 1:
        raise ValueError(f"pre_nms_top_k must be >= 1, got {config['pre_nms_top_k']}.")
    if int(config["max_num_detections"]) < 1:
        raise ValueError(f"max_num_detections must be >= 1, got {config['max_num_detections']}.")
    if not 0.0 <= float(config["nms_iou_threshold"]) <= 1.0:
        raise ValueError(f"nms_iou_threshold must be in [0, 1], got {config['nms_iou_threshold']}.")
    sigma = config["soft_nms_sigma"]
    if sigma is not None and sigma > 0 and version != "v1":
        logger.warning(
            "soft_nms_sigma=%s is ignored with nms_version=%r (soft-NMS applies to 'v1' only, "
            "as in Model Garden).",
            sigma,
            version,
        )


def _gather(values: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
    """values [B or 1, N, ...] at indices [B, K] -> [B, K, ...] (a batch of 1 is shared)."""
    if values.shape[0] == 1:
        return tf.gather(values[0], indices)
    return tf.gather(values, indices, axis=1, batch_dims=1)


def _top_pairs(rank_values: tf.Tensor, k: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """The k largest entries of [B, N, C] as (values, anchor index, class index), each [B, k].

    The k best pairs lie among the k anchors with the best top class: an anchor outside them
    is beaten by k anchors each holding a larger pair. Ranking those k x C entries instead of
    all N x C is several times cheaper. The pool comes out unordered.
    """
    num_anchors, num_classes = rank_values.shape[1], rank_values.shape[2]
    if k < num_anchors:
        _, anchors = tf.math.top_k(tf.reduce_max(rank_values, axis=-1), k=k, sorted=False)
        subset = tf.gather(rank_values, anchors, axis=1, batch_dims=1)
    else:
        anchors, subset = None, rank_values
    values, flat = tf.math.top_k(tf.reshape(subset, [tf.shape(subset)[0], -1]), k, sorted=False)
    rows, classes = flat // num_classes, flat % num_classes
    if anchors is not None:
        rows = tf.gather(anchors, rows, batch_dims=1)
    return values, rows, classes


def _finalize(boxes, scores, classes, valid, attributes: Mapping[str, tf.Tensor]):
    """Zeroes padding, makes classes 1-based and packs the output dict."""
    keep = tf.range(tf.shape(scores)[1])[None, :] < valid[:, None]

    def zero_pad(t):
        mask = keep
        for _ in range(t.shape.rank - 2):
            mask = mask[..., None]
        return tf.where(mask, t, tf.zeros_like(t))

    return {
        "num_detections": valid,
        "detection_boxes": zero_pad(boxes),
        "detection_classes": zero_pad(tf.cast(classes, tf.int32) + 1),
        "detection_scores": zero_pad(scores),
        "detection_attributes": {name: zero_pad(t) for name, t in attributes.items()},
    }


class _Detector:
    """NMS over one batch for a given configuration (shared by both generator layers).

    `rank_values` [B, N, C] rank (anchor, class) pairs like the scores do (logits for a
    sigmoid, or the probabilities themselves), column 0 being the background, and `to_scores`
    maps them to probabilities. The background column stays in place (slicing it off would
    copy the largest tensor of the post-processing); pools simply skip its pairs.
    `pool_boxes(anchors, classes)` decodes and clips the boxes of selected pairs ([B, K] ->
    [B, K, 4], classes counted from the first foreground class); `dense_boxes()` gives
    [B, N, q, 4] boxes of every anchor (q = 1 or C - 1).
    """

    def __init__(self, config: Mapping[str, Any]):
        self.top_k = int(config["pre_nms_top_k"])
        self.threshold = float(config["pre_nms_score_threshold"])
        self.iou = float(config["nms_iou_threshold"])
        self.max_det = int(config["max_num_detections"])
        self.version = config["nms_version"]
        self.at_threshold = self.version != "batched"
        sigma = config.get("soft_nms_sigma")
        self.soft_sigma = sigma if (sigma and sigma > 0 and self.version == "v1") else None
        self.first_pool = max(_FIRST_POOL, _FIRST_POOL_PER_DETECTION * self.max_det)
        # Sigmoid/softmax scores are >= 0; a fill below both never passes the threshold.
        self.kernel_threshold = max(self.threshold, -1.0)

    def __call__(self, rank_values, to_scores, pool_boxes, dense_boxes, attributes):
        if self.soft_sigma is not None:
            return self._soft(rank_values, to_scores, pool_boxes, attributes)
        return self._class_aware(rank_values, to_scores, pool_boxes, dense_boxes, attributes)

    def class_agnostic(self, rank_values, to_scores, pool_boxes, attributes):
        """Model Garden's v2 class-agnostic NMS: each anchor competes with its top class."""
        rank_values = rank_values[:, :, 1:]
        best = tf.reduce_max(rank_values, axis=-1)
        best_class = tf.argmax(rank_values, axis=-1, output_type=tf.int32)
        k = min(self.top_k, rank_values.shape[1])
        values, anchors = tf.math.top_k(best, k=k, sorted=True)
        scores = to_scores(values)
        classes = tf.gather(best_class, anchors, batch_dims=1)
        boxes = pool_boxes(anchors, classes)
        kept, valid = nms.greedy_nms_padded(
            boxes, scores, self.max_det, self.iou, self.threshold, suppress_at_threshold=True
        )
        take = lambda t: tf.gather(t, kept, axis=1, batch_dims=1)  # noqa: E731
        kept_anchors = take(anchors)
        return _finalize(
            take(boxes),
            take(scores),
            take(classes),
            valid,
            {name: _gather(t, kept_anchors) for name, t in attributes.items()},
        )

    def _class_aware(self, rank_values, to_scores, pool_boxes, dense_boxes, attributes):
        total = rank_values.shape[1] * rank_values.shape[2]
        # Pools tried in turn: a small one that usually suffices, then the full pre_nms_top_k.
        # Both are prefixes of the descending order within every class's top pre_nms_top_k.
        sizes = {min(size, total) for size in (self.first_pool, self.top_k)}
        if self.version != "batched":
            # A larger pool could admit pairs beyond their class's pre_nms_top_k.
            sizes = {min(size, self.top_k) for size in sizes}
        sizes = sorted(sizes)

        def attempt(tier):
            k = sizes[tier]
            pooled, pool_cut = self._from_pool(rank_values, to_scores, pool_boxes, attributes, k)
            if k == total:
                return pooled

            def larger():
                if tier + 1 < len(sizes):
                    return attempt(tier + 1)
                return self._dense(rank_values, to_scores, dense_boxes, attributes)

            # A pool is exact unless it was cut above the threshold and too few boxes survived.
            short = pooled["num_detections"] < self.max_det
            return tf.cond(tf.reduce_any(pool_cut & short), larger, lambda: pooled)

        return attempt(0)

    def _from_pool(self, rank_values, to_scores, pool_boxes, attributes, k):
        """Detections from the best k pairs, and whether the pool cut above the threshold.

        Background pairs in the pool take part in nothing; the foreground pairs left are still
        the best ones of their classes, so the pool stays exact.
        """
        values, anchors, classes = _top_pairs(rank_values, k)
        scores = to_scores(values)
        classes -= 1  # background becomes -1, which one_hot leaves all False
        boxes = pool_boxes(anchors, tf.maximum(classes, 0))
        num_classes = rank_values.shape[2] - 1
        onehot = tf.one_hot(classes, num_classes, on_value=True, off_value=False)
        per_class = tf.where(onehot, scores[..., None], -1.0)
        out = nms.class_aware_nms(
            boxes[:, :, None, :],
            per_class,
            self.max_det,
            self.max_det,
            self.iou,
            self.kernel_threshold,
            suppress_at_threshold=self.at_threshold,
        )
        picked = {}
        if attributes:
            idx = nms.match_selected_indices(boxes, scores, classes, *out[:3])
            kept_anchors = tf.gather(anchors, idx, batch_dims=1)
            picked = {name: _gather(t, kept_anchors) for name, t in attributes.items()}
        return _finalize(*out, picked), tf.reduce_min(scores, axis=1) > self.threshold

    def _dense(self, rank_values, to_scores, dense_boxes, attributes):
        """The same detections computed from every anchor (the rarely needed fallback)."""
        scores = to_scores(rank_values[:, :, 1:])
        if self.version != "batched" and scores.shape[1] > self.top_k:
            # Per-class cap: only each class's best `pre_nms_top_k` anchors compete.
            kth = tf.math.top_k(tf.transpose(scores, [0, 2, 1]), k=self.top_k).values[..., -1]
            scores = tf.where(scores >= kth[:, None, :], scores, -1.0)
        boxes = dense_boxes()
        out = nms.class_aware_nms(
            boxes,
            scores,
            self.max_det,
            self.max_det,
            self.iou,
            self.kernel_threshold,
            suppress_at_threshold=self.at_threshold,
        )
        picked = {}
        if attributes:
            out_boxes, out_scores, out_classes, _ = out
            # Which anchor produced each output: same box (in its class) and same score.
            class_scores = tf.gather(scores, out_classes, axis=2, batch_dims=1)  # [B, N, M]
            box_columns = tf.minimum(out_classes, boxes.shape[2] - 1)
            class_boxes = tf.gather(boxes, box_columns, axis=2, batch_dims=1)  # [B, N, M, 4]
            same = tf.equal(tf.transpose(class_scores, [0, 2, 1]), out_scores[..., None])
            same &= tf.reduce_all(
                tf.equal(tf.transpose(class_boxes, [0, 2, 1, 3]), out_boxes[:, :, None, :]), -1
            )
            kept_anchors = tf.argmax(tf.cast(same, tf.int8), axis=-1, output_type=tf.int32)
            picked = {name: _gather(t, kept_anchors) for name, t in attributes.items()}
        return _finalize(*out, picked)

    def _soft(self, rank_values, to_scores, pool_boxes, attributes):
        """Model Garden v1 with soft-NMS: per class top-k, soft-NMS, then the global best."""
        rank_values = rank_values[:, :, 1:]
        batch = tf.shape(rank_values)[0]
        num_classes = rank_values.shape[2]
        k = min(self.top_k, rank_values.shape[1])
        values, anchors = tf.math.top_k(tf.transpose(rank_values, [0, 2, 1]), k=k)  # [B, C, k]
        classes = tf.broadcast_to(tf.range(num_classes)[None, :, None], tf.shape(anchors))
        boxes = pool_boxes(tf.reshape(anchors, [batch, -1]), tf.reshape(classes, [batch, -1]))
        kept, kept_scores, _ = nms.soft_nms_padded(
            tf.reshape(boxes, [-1, k, 4]),
            tf.reshape(to_scores(values), [-1, k]),
            self.max_det,
            self.iou,
            self.threshold,
            self.soft_sigma,
        )
        # Back to [B, C * max_det] candidates, then the global best max_det.
        kept_anchors = tf.reshape(
            tf.gather(tf.reshape(anchors, [-1, k]), kept, batch_dims=1), [batch, -1]
        )
        kept_boxes = tf.gather(tf.reshape(boxes, [-1, k, 4]), kept, batch_dims=1)
        kept_boxes = tf.reshape(kept_boxes, [batch, -1, 4])
        kept_classes = tf.reshape(
            tf.broadcast_to(tf.range(num_classes)[:, None], [num_classes, self.max_det]), [1, -1]
        )
        kept_scores = tf.reshape(kept_scores, [batch, -1])
        top_scores, order = tf.math.top_k(kept_scores, k=self.max_det)
        valid = tf.reduce_sum(tf.cast(top_scores > -1.0, tf.int32), axis=1)
        take = lambda t: tf.gather(t, order, axis=1, batch_dims=1)  # noqa: E731
        return _finalize(
            take(kept_boxes),
            top_scores,
            tf.gather(kept_classes[0], order),
            valid,
            {name: _gather(t, take(kept_anchors)) for name, t in attributes.items()},
        )


@contextlib.contextmanager
def _maybe_cpu(use_cpu_nms: bool):
    if use_cpu_nms:
        with tf.device("/cpu:0"):
            yield
    else:
        yield


def _static_count(tensor: tf.Tensor, name: str) -> int:
    """Number of locations H * W of a [B, H, W, C] output, which must be static."""
    height, width = tensor.shape[1], tensor.shape[2]
    if height is None or width is None:
        raise ValueError(
            f"{name} needs static spatial sizes to size its candidate pool, got shape "
            f"{tensor.shape.as_list()}; build the model with a fixed input size."
        )
    return height * width


def _clip_shape(image_shape: tf.Tensor | Sequence[float] | None) -> tf.Tensor | None:
    """image_shape [B, 2] or [2] -> a tensor that broadcasts against [B, N, 4] boxes."""
    if image_shape is None:
        return None
    image_shape = tf.cast(image_shape, tf.float32)
    if image_shape.shape.rank == 1:
        return image_shape[None, None, :]
    return image_shape[:, None, :]


@tf_keras.utils.register_keras_serializable(package="Vision")
class MultilevelDetectionGenerator(tf_keras.layers.Layer):
    """Final detections of a one-stage detector (RetinaNet) from per-level head outputs.

    Scores are sigmoids of the class logits; boxes are decoded from class-agnostic box codes
    relative to the anchors and clipped to `image_shape`.
    """

    def __init__(
        self,
        apply_nms: bool = True,
        pre_nms_top_k: int = 5000,
        pre_nms_score_threshold: float = 0.05,
        nms_iou_threshold: float = 0.5,
        max_num_detections: int = 100,
        nms_version: str = "v1",
        use_cpu_nms: bool = False,
        soft_nms_sigma: float | None = None,
        tflite_post_processing_config: dict[str, Any] | None = None,
        pre_nms_top_k_sharding_block: int | None = None,
        nms_v3_refinements: int | None = None,
        return_decoded: bool | None = None,
        use_class_agnostic_nms: bool | None = None,
        box_coder_weights: Sequence[float] | None = None,
        **kwargs,
    ):
        """Initializes the generator.

        Args:
          apply_nms: False returns every anchor's decoded box and scores instead of detections.
          pre_nms_top_k: most candidates per class entering NMS.
          pre_nms_score_threshold: candidates must score above this.
          nms_iou_threshold: NMS IoU threshold in [0, 1].
          max_num_detections: detections returned per image (padded).
          nms_version: 'v1' (Model Garden's default for this class), 'v2', 'v3' or 'batched';
            see the module docstring for what differs.
          use_cpu_nms: pin the NMS to the CPU.
          soft_nms_sigma: > 0 enables soft-NMS (with 'v1').
          tflite_post_processing_config: kept for config compatibility with Model Garden;
            unused (nms_version 'tflite' is not supported).
          pre_nms_top_k_sharding_block: kept for config compatibility; unused.
          nms_v3_refinements: kept for config compatibility; unused ('v3' is exact).
          return_decoded: also return the decoded boxes and scores of every anchor.
          use_class_agnostic_nms: one NMS over all classes, each anchor with its best class
            (requires nms_version 'v2', as in Model Garden).
          box_coder_weights: None or the four (dy, dx, dh, dw) weights the head's box codes
            were trained with.
          **kwargs: passed to `tf_keras.layers.Layer`.
        """
        if use_class_agnostic_nms and nms_version != "v2":
            raise ValueError(
                f"use_class_agnostic_nms=True requires nms_version='v2', got {nms_version!r}."
            )
        self._config_dict = {
            "apply_nms": apply_nms,
            "pre_nms_top_k": pre_nms_top_k,
            "pre_nms_score_threshold": pre_nms_score_threshold,
            "nms_iou_threshold": nms_iou_threshold,
            "max_num_detections": max_num_detections,
            "nms_version": nms_version,
            "use_cpu_nms": use_cpu_nms,
            "soft_nms_sigma": soft_nms_sigma,
            "tflite_post_processing_config": tflite_post_processing_config,
            "pre_nms_top_k_sharding_block": pre_nms_top_k_sharding_block,
            "nms_v3_refinements": nms_v3_refinements,
            "return_decoded": return_decoded,
            "use_class_agnostic_nms": use_class_agnostic_nms,
            "box_coder_weights": box_coder_weights,
        }
        _check_common_args(self._config_dict)
        super().__init__(**kwargs)

    def __call__(
        self,
        raw_boxes: Mapping[str, tf.Tensor],
        raw_scores: Mapping[str, tf.Tensor],
        anchor_boxes: Mapping[str, tf.Tensor],
        image_shape: tf.Tensor | None,
        raw_attributes: Mapping[str, Mapping[str, tf.Tensor]] | None = None,
    ) -> dict[str, Any]:
        """Generates detections.

        (Called directly rather than through Keras' `Layer.__call__`, as in Model Garden, so
        the nested dict inputs and a None `image_shape` pass through untouched.)

        Args:
          raw_boxes: level -> [B, H_l, W_l, A * 4] box codes.
          raw_scores: level -> [B, H_l, W_l, A * num_classes] logits; class 0 is background.
          anchor_boxes: level -> [B, H_l, W_l, A * 4] or [H_l, W_l, A * 4] anchors.
          image_shape: [B, 2] (or [2]) height and width to clip boxes to, or None.
          raw_attributes: optional name -> level -> [B, H_l, W_l, A * size] predictions.

        Returns:
          With NMS: 'detection_boxes' [B, D, 4], 'detection_scores' [B, D],
          'detection_classes' int32 [B, D] (1-based), 'num_detections' int32 [B] and
          'detection_attributes' (name -> [B, D, size]; empty without attributes), D =
          max_num_detections. Without NMS, or with `return_decoded`: 'decoded_boxes'
          [B, N, 1, 4], 'decoded_box_scores' [B, N, num_classes - 1] and
          'decoded_box_attributes' (name -> [B, N, 1, size]), N = all anchors.
        """
        cfg = self._config_dict
        codes, logits, anchors, attributes = self._flatten(
            raw_boxes, raw_scores, anchor_boxes, raw_attributes or {}
        )
        clip_shape = _clip_shape(image_shape)
        weights = cfg["box_coder_weights"]

        def decode(box_codes, box_anchors):
            boxes = box_ops.decode_boxes(box_codes, box_anchors, weights=weights)
            return boxes if clip_shape is None else box_ops.clip_boxes(boxes, clip_shape)

        def pool_boxes(anchor_index, unused_class_index):
            return decode(_gather(codes, anchor_index), _gather(anchors, anchor_index))

        def dense_boxes():
            return decode(codes, anchors)[:, :, None, :]

        decoded = {}
        if not cfg["apply_nms"] or cfg["return_decoded"]:
            decoded = {
                "decoded_boxes": dense_boxes(),
                "decoded_box_scores": tf.sigmoid(logits[:, :, 1:]),
                "decoded_box_attributes": {n: a[:, :, None, :] for n, a in attributes.items()},
            }
            if not cfg["apply_nms"]:
                return decoded

        detector = _Detector(cfg)
        with _maybe_cpu(cfg["use_cpu_nms"]):
            if cfg["use_class_agnostic_nms"]:
                results = detector.class_agnostic(logits, tf.sigmoid, pool_boxes, attributes)
            else:
                results = detector(logits, tf.sigmoid, pool_boxes, dense_boxes, attributes)
        return {**decoded, **results}

    def _flatten(self, raw_boxes, raw_scores, anchor_boxes, raw_attributes):
        """Concatenates levels: codes [B, N, 4], logits [B, N, C] (background included),
        anchors [B or 1, N, 4] and attributes name -> [B, N, size]."""
        codes, logits, anchors = [], [], []
        attributes = {name: [] for name in raw_attributes}
        for level in sorted(raw_scores, key=int):
            boxes_l, scores_l = raw_boxes[level], raw_scores[level]
            batch = tf.shape(boxes_l)[0]
            per_location = boxes_l.shape[-1] // 4
            count = _static_count(boxes_l, "MultilevelDetectionGenerator") * per_location
            num_classes = scores_l.shape[-1] // per_location
            codes.append(tf.reshape(boxes_l, [batch, count, 4]))
            logits.append(tf.reshape(scores_l, [batch, count, num_classes]))
            anchors_l = anchor_boxes[level]
            anchor_batch = -1 if anchors_l.shape.rank == 4 else 1
            anchors.append(tf.reshape(anchors_l, [anchor_batch, count, 4]))
            for name, raw in raw_attributes.items():
                size = raw[level].shape[-1] // per_location
                attributes[name].append(tf.reshape(raw[level], [batch, count, size]))
        concat = lambda parts: tf.concat(parts, axis=1)  # noqa: E731
        return (
            tf.cast(concat(codes), tf.float32),
            tf.cast(concat(logits), tf.float32),
            tf.cast(concat(anchors), tf.float32),
            {name: concat(parts) for name, parts in attributes.items()},
        )

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **nn_layers.serializable_config(self._config_dict)}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> MultilevelDetectionGenerator:
        return cls(**config)


@tf_keras.utils.register_keras_serializable(package="Vision")
class DetectionGenerator(tf_keras.layers.Layer):
    """Final detections of a two-stage detector (Faster R-CNN style box head) from per-RoI
    class logits and (per-class or shared) box codes."""

    def __init__(
        self,
        apply_nms: bool = True,
        pre_nms_top_k: int = 5000,
        pre_nms_score_threshold: float = 0.05,
        nms_iou_threshold: float = 0.5,
        max_num_detections: int = 100,
        nms_version: str = "v2",
        use_cpu_nms: bool = False,
        soft_nms_sigma: float | None = None,
        use_sigmoid_probability: bool = False,
        **kwargs,
    ):
        """Initializes the generator.

        Args:
          apply_nms: False returns the decoded boxes and scores of every RoI instead.
          pre_nms_top_k: most candidates per class entering NMS.
          pre_nms_score_threshold: candidates must score above this.
          nms_iou_threshold: NMS IoU threshold in [0, 1].
          max_num_detections: detections returned per image (padded).
          nms_version: 'v1', 'v2' (default), 'v3' or 'batched'.
          use_cpu_nms: pin the NMS to the CPU.
          soft_nms_sigma: > 0 enables soft-NMS (with 'v1').
          use_sigmoid_probability: per-class sigmoid scores instead of a softmax.
          **kwargs: passed to `tf_keras.layers.Layer`.
        """
        self._config_dict = {
            "apply_nms": apply_nms,
            "pre_nms_top_k": pre_nms_top_k,
            "pre_nms_score_threshold": pre_nms_score_threshold,
            "nms_iou_threshold": nms_iou_threshold,
            "max_num_detections": max_num_detections,
            "nms_version": nms_version,
            "use_cpu_nms": use_cpu_nms,
            "soft_nms_sigma": soft_nms_sigma,
            "use_sigmoid_probability": use_sigmoid_probability,
        }
        _check_common_args(self._config_dict)
        super().__init__(**kwargs)

    def __call__(
        self,
        raw_boxes: tf.Tensor,
        raw_scores: tf.Tensor,
        anchor_boxes: tf.Tensor,
        image_shape: tf.Tensor | None,
        regression_weights: Sequence[float] | None = None,
        bbox_per_class: bool = True,
    ) -> dict[str, tf.Tensor]:
        """Generates detections.

        Args:
          raw_boxes: [B, K, num_classes * 4] per-class box codes (or [B, K, 4] when
            `bbox_per_class` is False).
          raw_scores: [B, K, num_classes] logits; class 0 is background.
          anchor_boxes: [B, K, 4] RoIs the codes are relative to.
          image_shape: [B, 2] (or [2]) height and width to clip boxes to, or None.
          regression_weights: None or the four (dy, dx, dh, dw) code weights.
          bbox_per_class: whether `raw_boxes` holds one box per class.

        Returns:
          With NMS: 'detection_boxes', 'detection_scores', 'detection_classes' (1-based),
          'num_detections'. Without: 'decoded_boxes' [B, K, num_classes - 1 (or 1), 4] and
          'decoded_box_scores' [B, K, num_classes - 1].
        """
        cfg = self._config_dict
        raw_scores = tf.cast(raw_scores, tf.float32)
        if cfg["use_sigmoid_probability"]:
            scores = tf.sigmoid(raw_scores)
        else:
            scores = tf.nn.softmax(raw_scores, axis=-1)
        num_rois = raw_scores.shape[1]
        if bbox_per_class:
            codes = tf.reshape(raw_boxes, [tf.shape(raw_boxes)[0], num_rois, -1, 4])[:, :, 1:]
        else:
            codes = tf.reshape(raw_boxes, [tf.shape(raw_boxes)[0], num_rois, 1, 4])
        codes = tf.cast(codes, tf.float32)
        # Materialized rather than broadcast: the element-wise kernels then round exactly as
        # in Model Garden (broadcasting ones may differ in the last bit).
        anchors = tf.broadcast_to(tf.cast(anchor_boxes, tf.float32)[:, :, None, :], tf.shape(codes))
        boxes = box_ops.decode_boxes(codes, anchors, regression_weights)
        clip_shape = _clip_shape(image_shape)
        if clip_shape is not None:
            boxes = box_ops.clip_boxes(boxes, clip_shape[:, :, None, :])
        if not cfg["apply_nms"]:
            return {"decoded_boxes": boxes, "decoded_box_scores": scores[:, :, 1:]}

        columns = boxes.shape[2]

        def pool_boxes(roi_index, class_index):
            flat = tf.reshape(boxes, [tf.shape(boxes)[0], -1, 4])
            return _gather(flat, roi_index * columns + tf.minimum(class_index, columns - 1))

        with _maybe_cpu(cfg["use_cpu_nms"]):
            results = _Detector(cfg)(scores, tf.identity, pool_boxes, lambda: boxes, {})
        results.pop("detection_attributes")
        return results

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **nn_layers.serializable_config(self._config_dict)}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DetectionGenerator:
        return cls(**config)

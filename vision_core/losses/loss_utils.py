"""Helpers shared by the detection losses (Model Garden's `official.vision.losses.loss_utils`)."""

from __future__ import annotations

from collections.abc import Mapping

import tensorflow as tf


def multi_level_flatten(
    multi_level_inputs: Mapping[str, tf.Tensor], last_dim: int | None = None
) -> tf.Tensor:
    """Concatenates per-level [batch, ...] tensors along the anchor axis, in dict order.

    Args:
      multi_level_inputs: level -> [batch, d1, ..., dm] tensor.
      last_dim: None to flatten each level to [batch, -1]; an int to reshape each level to
        [batch, -1, last_dim] (e.g. the number of classes, or 4 for boxes).

    Returns:
      [batch, total] or [batch, total, last_dim].
    """
    flattened = []
    batch_size = None
    for value in multi_level_inputs.values():
        if batch_size is None:
            batch_size = value.shape[0] or tf.shape(value)[0]
        shape = [batch_size, -1] if last_dim is None else [batch_size, -1, last_dim]
        flattened.append(tf.reshape(value, shape))
    return tf.concat(flattened, axis=1)

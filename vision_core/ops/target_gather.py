"""Gathers per-anchor targets from matched groundtruth rows (Model Garden's
`official.vision.ops.target_gather`)."""

from __future__ import annotations

import tensorflow as tf


class TargetGather:
    """`labels[match_indices]`, with masked entries replaced by a constant.

    Works unbatched (labels [N] or [N, d], indices [M]) or batched (labels [B, N, ...],
    indices [B, M]). With no groundtruth rows (N == 0) every output entry is `mask_val`.
    """

    def __call__(
        self,
        labels: tf.Tensor,
        match_indices: tf.Tensor,
        mask: tf.Tensor | None = None,
        mask_val: float = 0.0,
    ) -> tf.Tensor:
        """Gathers targets.

        Args:
          labels: [N], [N, d] or [B, N, ...] groundtruth values.
          match_indices: [M] or [B, M] row of `labels` each anchor takes.
          mask: optional bool tensor shaped like the output; True entries get `mask_val`.
          mask_val: fill value for masked entries and for the no-groundtruth case.

        Returns:
          [M, ...] or [B, M, ...] targets in the dtype of `labels`.
        """
        rank = len(labels.shape)
        if rank > 3:
            raise ValueError(f"`TargetGather` supports `labels` of rank <= 3, got rank {rank}.")
        batched = rank == 3
        fill = tf.cast(mask_val, labels.dtype)

        def gathered():
            targets = tf.gather(labels, match_indices, axis=int(batched), batch_dims=int(batched))
            if mask is None:
                return targets
            return tf.where(mask, tf.fill(tf.shape(targets), fill), targets)

        def empty():
            out_shape = tf.concat([tf.shape(match_indices), tf.shape(labels)[1 + batched :]], 0)
            return tf.fill(out_shape, fill)

        num_rows = tf.shape(labels)[int(batched)]
        return tf.cond(num_rows > 0, gathered, empty)

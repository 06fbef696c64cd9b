"""Threshold-based matching of anchors (rows) to groundtruth boxes (columns) (Model Garden's
`official.vision.ops.box_matcher`)."""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf


class BoxMatcher:
    """Matches every row of a similarity matrix to its best column and grades the match.

    The row's best similarity falls into one of the intervals cut by `thresholds`
    ([-inf, t0), [t0, t1), ..., [t_last, inf)); the interval's entry of `indicators` is the
    row's match indicator. With thresholds [negative, positive] and indicators [-1, -2, 1]
    rows become negative (-1), ignored (-2) or positive (1).

    With `force_match_for_each_col`, the best row of every column is matched to that column
    with the last (positive) indicator even when its similarity is low, so every groundtruth
    box gets at least one anchor; when two columns pick the same row the lower column index
    wins. Columns whose similarities are all negative (masked padding, see
    `IouSimilarity(mask_val=-1)`) are not force-matched: they are not real boxes.
    """

    def __init__(
        self,
        thresholds: Sequence[float],
        indicators: Sequence[int],
        force_match_for_each_col: bool = False,
    ):
        """Initializes the matcher.

        Args:
          thresholds: sorted similarity cut points.
          indicators: len(thresholds) + 1 match types, one per interval.
          force_match_for_each_col: ensure every column is matched to at least one row.
        """
        thresholds = list(thresholds)
        if any(lo > hi for lo, hi in zip(thresholds[:-1], thresholds[1:])):
            raise ValueError(f"`thresholds` must be sorted, got {thresholds}.")
        if len(indicators) != len(thresholds) + 1:
            raise ValueError(
                "len(`indicators`) must be len(`thresholds`) + 1, got indicators "
                f"{list(indicators)}, thresholds {thresholds}."
            )
        self.indicators = list(indicators)
        self.thresholds = [-float("inf"), *thresholds, float("inf")]
        self._force_match_for_each_col = force_match_for_each_col

    def __call__(self, similarity_matrix: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Matches rows to columns.

        Args:
          similarity_matrix: [rows, cols] or [B, rows, cols] float similarities.

        Returns:
          matched_columns: int32 [rows] / [B, rows], the best column per row (0 when there
            are no columns).
          match_indicators: int32 [rows] / [B, rows] indicator per row (-1 when there are no
            columns).
        """
        unbatched = len(similarity_matrix.shape) == 2
        if unbatched:
            similarity_matrix = similarity_matrix[None]
        out_shape = tf.shape(similarity_matrix)[:2]

        def no_columns():
            return tf.zeros(out_shape, tf.int32), -tf.ones(out_shape, tf.int32)

        def match():
            matched = tf.argmax(similarity_matrix, axis=-1, output_type=tf.int32)
            best = tf.reduce_max(similarity_matrix, axis=-1)
            indicators = tf.zeros(out_shape, tf.int32)
            for value, low, high in zip(self.indicators, self.thresholds[:-1], self.thresholds[1:]):
                in_range = (best >= tf.cast(low, best.dtype)) & (best < tf.cast(high, best.dtype))
                indicators = tf.where(in_range, value, indicators)
            if not self._force_match_for_each_col:
                return matched, indicators
            # Best row of each column, [B, cols]; padded columns point nowhere (-1).
            best_row = tf.argmax(similarity_matrix, axis=1, output_type=tf.int32)
            real_column = tf.reduce_max(similarity_matrix, axis=1) >= 0.0
            best_row = tf.where(real_column, best_row, -1)
            # forced[b, col, row] is True where `row` is the best row of `col`.
            forced = tf.equal(best_row[:, :, None], tf.range(out_shape[1])[None, None, :])
            is_forced = tf.reduce_any(forced, axis=1)
            forced_col = tf.argmax(tf.cast(forced, tf.int32), axis=1, output_type=tf.int32)
            matched = tf.where(is_forced, forced_col, matched)
            indicators = tf.where(is_forced, self.indicators[-1], indicators)
            return matched, indicators

        num_cols = similarity_matrix.shape[-1]
        if num_cols is not None:
            matched, indicators = match() if num_cols > 0 else no_columns()
        else:
            matched, indicators = tf.cond(tf.shape(similarity_matrix)[-1] > 0, match, no_columns)
        if unbatched:
            matched, indicators = matched[0], indicators[0]
        return matched, indicators

"""Feature dicts → tf.train.Example, and the one serialization every shard uses.

Sources produce plain dicts keyed by names from `vision_core.dataloaders.tf_example_keys`; this
module is the only place that knows how Python values map onto tf.train.Feature lists. The
messages are `tfrecord`'s TensorFlow-free twins of tf.train.Example (same bytes), so conversion
workers never import TensorFlow; a ready `tf.train.Feature` is accepted too.
"""

from __future__ import annotations

import hashlib
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from components.convert_dataset import tfrecord


def bytes_feature(values: bytes | str | Sequence[bytes | str]) -> Any:
    if isinstance(values, bytes | str):
        values = [values]
    encoded = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in values]
    return tfrecord.Feature(bytes_list=tfrecord.BytesList(value=encoded))


def int64_feature(values: int | Sequence[int]) -> Any:
    if isinstance(values, numbers.Integral):
        values = [values]
    return tfrecord.Feature(int64_list=tfrecord.Int64List(value=[int(v) for v in values]))


def float_feature(values: float | Sequence[float]) -> Any:
    if isinstance(values, numbers.Real):
        values = [values]
    return tfrecord.Feature(float_list=tfrecord.FloatList(value=[float(v) for v in values]))


def _to_feature(key: str, value: Any) -> Any:
    if isinstance(value, tfrecord.Feature):
        return value
    if type(value).__name__ == "Feature" and hasattr(value, "SerializeToString"):
        # A tf.train.Feature (TensorFlow's own class): same wire format.
        return tfrecord.Feature.FromString(value.SerializeToString())
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, bytes | str):
        return bytes_feature(value)
    # bool is an Integral; it is stored as 0/1 like Model Garden's is_crowd.
    if isinstance(value, numbers.Integral):
        return int64_feature(value)
    if isinstance(value, numbers.Real):
        return float_feature(value)
    if isinstance(value, Sequence):
        if not value:
            raise ValueError(
                f"feature {key!r} is an empty list, whose type cannot be inferred; pass "
                "bytes_feature([]), int64_feature([]) or float_feature([])"
            )
        return _list_feature(key, value)
    raise TypeError(f"feature {key!r} has unsupported type {type(value).__name__}")


def _list_feature(key: str, values: Sequence[Any]) -> Any:
    if all(isinstance(v, bytes | str) for v in values):
        return bytes_feature(values)
    if all(isinstance(v, numbers.Integral) for v in values):
        return int64_feature(values)
    if all(isinstance(v, numbers.Real) for v in values):
        return float_feature(values)
    kinds = sorted({type(v).__name__ for v in values})
    raise TypeError(f"feature {key!r} mixes value types: {kinds}")


def build_example(features: Mapping[str, Any]) -> Any:
    """A tf.train.Example (`tfrecord.Example`) from {key: value}.

    Values may be bytes/str (bytes_list), ints (int64_list), floats (float_list), non-empty lists
    or numpy arrays of one of those, or a ready Feature (needed for empty lists).
    """
    return tfrecord.Example(
        features=tfrecord.Features(
            feature={key: _to_feature(key, value) for key, value in features.items()}
        )
    )


def serialize(example: Any) -> bytes:
    """Deterministic serialization: protobuf maps otherwise have no guaranteed key order, and shards
    must be byte-identical from run to run."""
    return example.SerializeToString(deterministic=True)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()

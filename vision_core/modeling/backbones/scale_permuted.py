"""The wiring shared by SpineNet and SpineNet-Mobile (`spinenet.py`, `spinenet_mobile.py`).

A scale-permuted network is a list of blocks, each at its own pyramid level, each fed by two
earlier features resampled to its level. This module holds what both families share: the block
spec record, the plan of feature sizes (made from planned sizes, so an unknown input size gives
the same network as a known one), the check that an input size can be resampled to every level,
Model Garden's nearest upsampling graph, and the loop that wires the blocks. The layers that
resample, fuse and form blocks are the families' own and are passed in.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf
import tf_keras


@dataclasses.dataclass
class BlockSpec:
    """One block of a scale-permuted network.

    Attributes:
      level: pyramid level of the block's output (stride 2^level).
      block_fn: 'bottleneck' or 'residual' ('mbconv' in SpineNet-Mobile).
      input_offsets: indices of the two parent features among those built before this block
        (the stem features come first).
      is_output: the block's features are the backbone's output at `level`.
    """

    level: int
    block_fn: str
    input_offsets: tuple[int, int]
    is_output: bool

    def as_list(self) -> list[Any]:
        """The JSON-ready form `[level, block_fn, [offset0, offset1], is_output]`."""
        return [self.level, self.block_fn, list(self.input_offsets), self.is_output]


def as_block_specs(
    block_specs: Sequence[BlockSpec | Sequence[Any]] | None,
    default: Sequence[Sequence[Any]],
    allowed_block_fns: Sequence[str],
    num_stem_features: int = 2,
) -> list[BlockSpec]:
    """Checked `BlockSpec`s from `BlockSpec`s, tuples or the lists a config holds.

    Raises:
      ValueError: an entry is malformed, names an unknown block type, or points at a parent
        that is not built before it.
    """
    specs = []
    num_features = num_stem_features
    for index, spec in enumerate(block_specs or default):
        if not isinstance(spec, BlockSpec):
            try:
                level, block_fn, offsets, is_output = spec
                spec = BlockSpec(int(level), block_fn, tuple(int(o) for o in offsets), is_output)
            except (TypeError, ValueError):
                raise ValueError(
                    f"block_specs[{index}]: expected (level, block_fn, (offset0, offset1), "
                    f"is_output), got {spec!r}"
                ) from None
        if spec.block_fn not in allowed_block_fns:
            raise ValueError(
                f"block_specs[{index}].block_fn: expected one of {', '.join(allowed_block_fns)}, "
                f"got {spec.block_fn!r}"
            )
        if len(spec.input_offsets) != 2 or not all(
            0 <= o < num_features for o in spec.input_offsets
        ):
            raise ValueError(
                f"block_specs[{index}].input_offsets: expected two indices in [0, {num_features}) "
                f"(features built before this block), got {tuple(spec.input_offsets)}"
            )
        specs.append(spec)
        num_features += 1
    return specs


@dataclasses.dataclass
class Feature:
    """A feature built so far, with what the block wiring needs to know about it."""

    tensor: tf.Tensor
    # Planned spatial size; the resampling plan is made from these, not from the static shape,
    # so an unknown input size gives the same plan (and function) as a known one.
    width: int
    height: int
    block_fn: str
    # How many later blocks take this feature as a parent.
    consumers: int = 0


def downsample_steps(input_size: float, target_size: int) -> int:
    """Halvings from `input_size` down to `target_size`, counted as Model Garden counts them:
    halve (true division) while still above the target."""
    steps = 0
    while input_size > target_size:
        input_size /= 2
        steps += 1
    return steps


def resampled_size(input_size: int, target_size: int) -> int:
    """The size a feature really has after resampling `input_size` towards `target_size`:
    stride-2 'same' ops round up; nearest upsampling multiplies by `target // input`."""
    if input_size > target_size:
        size = input_size
        for _ in range(downsample_steps(input_size, target_size)):
            size = -(-size // 2)
        return size
    return input_size * (target_size // input_size)


def check_resampling(parent: Feature, width: int, height: int, level: int, index: int) -> None:
    """Raises a ValueError naming `input_specs` when a parent cannot be resampled exactly to
    the target size (the sum of the parents would fail on mismatched shapes)."""
    for axis, size, target in (("width", parent.width, width), ("height", parent.height, height)):
        got = resampled_size(size, target)
        if got != target:
            raise ValueError(
                f"input_specs: block {index + 1} (level {level}) needs {axis} {target} but a "
                f"parent of {axis} {size} resamples to {got}; use an input height and width "
                f"divisible by 2^(deepest block level)"
            )


def build_scale_permuted_blocks(
    features: list[Feature],
    block_specs: Sequence[BlockSpec],
    input_width: int,
    input_height: int,
    resample: Callable[[Feature, BlockSpec, int, int], tf.Tensor],
    fuse: Callable[[list[tf.Tensor]], tf.Tensor],
    block_group: Callable[[tf.Tensor, BlockSpec, int], tuple[tf.Tensor, str]],
    level_of: Callable[[BlockSpec], int] = lambda spec: spec.level,
) -> list[tuple[int, tf.Tensor]]:
    """Wires the blocks of a scale-permuted network (shared by SpineNet and SpineNet-Mobile).

    For each block: resample its two parents to the block's level, add (for output blocks) every
    earlier feature of the same width and channels that no block consumed yet, fuse the parents,
    run the block group and append the result to `features`.

    Args:
      features: the stem features; the block outputs are appended in place.
      block_specs: the blocks, in order.
      input_width: planned input width (a nominal one when the real width is unknown).
      input_height: planned input height.
      resample: (parent, spec, level, target width) -> the parent at the block's level and
        channels.
      fuse: parents -> their fused sum (activation included).
      block_group: (fused, spec, block index) -> (block output, its block type).
      level_of: the level a spec's block is built at.

    Returns:
      (level, features) of each output block, in block order.
    """
    outputs = []
    for index, spec in enumerate(block_specs):
        level = level_of(spec)
        width = math.ceil(input_width / 2**level)
        height = math.ceil(input_height / 2**level)
        parents = []
        for offset in spec.input_offsets:
            parent = features[offset]
            check_resampling(parent, width, height, level, index)
            parents.append(resample(parent, spec, level, width))
            parent.consumers += 1
        if spec.is_output:
            channels = parents[0].shape[-1]
            for feature in features:
                if (
                    feature.consumers == 0
                    and feature.width == width
                    and feature.tensor.shape[-1] == channels
                ):
                    parents.append(feature.tensor)
                    feature.consumers += 1
        x, block_fn = block_group(fuse(parents), spec, index)
        features.append(Feature(x, width, height, block_fn))
        if spec.is_output:
            outputs.append((level, x))
    return outputs


def nearest_upsampling_ops(x: tf.Tensor, scale: int) -> tf.Tensor:
    """Nearest-neighbour upsampling by `scale`, built from TF ops on the symbolic tensor.

    Why not `UpSampling2D`: Keras lists a functional model's layers (and so its `weights`) by
    their longest distance to the outputs. Model Garden upsamples with a five-deep chain of op
    layers (shape, slice, reshape, tile, reshape); the same chain here keeps every layer at the
    same depth, hence the same variable order, which weight conversion relies on.
    """
    channels = x.shape[-1]
    dims = tf.shape(x)
    height, width = dims[1], dims[2]
    # [B, H, 1, W, 1, C] tiled to [B, H, s, W, s, C] repeats each pixel s x s times.
    x = tf.reshape(x, [-1, height, 1, width, 1, channels])
    x = tf.tile(x, [1, 1, scale, 1, scale, 1])
    return tf.reshape(x, [-1, height * scale, width * scale, channels])


def planned_input_size(
    input_specs: tf_keras.layers.InputSpec, block_specs: Sequence[BlockSpec]
) -> tuple[int, int]:
    """(width, height) to plan the resampling for; unknown sizes become the nominal
    2^(deepest block level), which every divisible input size plans identically to."""
    nominal = 2 ** max(spec.level for spec in block_specs)
    shape = list(input_specs.shape or [None, None, None, None])
    height, width = shape[1], shape[2]
    return (width or nominal), (height or nominal)


def check_levels(
    min_level: int, max_level: int, output_levels: Sequence[int], what: str = "SpineNet"
) -> None:
    """Raises a ValueError unless every level in [min_level, max_level] has an output block."""
    if min_level > max_level:
        raise ValueError(f"min_level: must be <= max_level ({max_level}), got {min_level}")
    missing = [lvl for lvl in range(min_level, max_level + 1) if lvl not in output_levels]
    if missing:
        raise ValueError(
            f"min_level/max_level: {what} has output blocks at levels "
            f"{sorted(set(output_levels))}; [{min_level}, {max_level}] also asks for {missing}"
        )


def scaling_params(model_id: Any, scaling_map: dict[str, dict[str, Any]], what: str) -> dict:
    """The scaling entry of `model_id` (ints such as 49 are read as '49')."""
    key = str(model_id)
    if key not in scaling_map:
        raise ValueError(
            f"model_id: unknown {what} variant {model_id!r}; expected one of "
            f"{', '.join(scaling_map)}"
        )
    return scaling_map[key]

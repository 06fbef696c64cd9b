"""NAS-FPN decoder (Ghiasi et al., 2019, https://arxiv.org/abs/1904.07392).

A feature pyramid whose merging cells were found by architecture search. Each cell takes two
earlier pyramid nodes, resamples both to its own level (1x1 conv + batch norm when the channel
count differs, max pooling to go coarser, nearest upsampling to go finer), merges them by sum or
by global attention, then applies activation → 3x3 conv → batch norm. The cell sequence is
repeated `num_repeats` times, each repeat reading the previous one's outputs.

Same constructor, block specs, op sequence and weight order as Model Garden's
`decoders/nasfpn.py`, so a Model Garden weight bundle imports one to one.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf
import tf_keras

from vision_core.modeling.decoders import registry
from vision_core.modeling.decoders.fpn import MultilevelDecoderMixin, normalize_input_specs
from vision_core.modeling.layers import nn_layers

logger = logging.getLogger(__name__)

COMBINE_FNS = ("sum", "attention")

# Channels the cells resample their inputs to. Model Garden fixes this at 256 whatever
# `num_filters` is (only the input projections and the cells' 3x3 convs use `num_filters`), so
# with num_filters != 256 every cell input gets a 1x1 conv + batch norm to 256 channels; kept
# because its checkpoints have those variables.
CELL_INPUT_FILTERS = 256


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One merging cell: its output `level`, how it merges (`combine_fn`), which two earlier
    nodes it reads (`input_offsets`, indices into the list of nodes built so far, the first
    `max_level - min_level + 1` being the input pyramid), and whether it is an output cell
    (`is_output`: it also absorbs nodes of its level that nothing has read yet)."""

    level: int
    combine_fn: str
    input_offsets: tuple[int, int]
    is_output: bool


# The cell sequence of the paper's best architecture (its Figure 7), for levels 3..7.
NASFPN_BLOCK_SPECS: list[tuple[int, str, tuple[int, int], bool]] = [
    (4, "attention", (1, 3), False),
    (4, "sum", (1, 5), False),
    (3, "sum", (0, 6), True),
    (4, "sum", (6, 7), True),
    (5, "attention", (7, 8), True),
    (7, "attention", (6, 9), True),
    (6, "attention", (9, 10), True),
]


def _to_block_spec(spec: Any, index: int) -> BlockSpec:
    if isinstance(spec, BlockSpec):
        return spec
    if isinstance(spec, Mapping):
        spec = (spec["level"], spec["combine_fn"], spec["input_offsets"], spec["is_output"])
    try:
        level, combine_fn, offsets, is_output = spec
        offsets = tuple(int(o) for o in offsets)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"NASFPN: block_specs[{index}] must be (level, combine_fn, (offset0, offset1), "
            f"is_output), got {spec!r}"
        ) from err
    if len(offsets) != 2:
        raise ValueError(f"NASFPN: block_specs[{index}] needs two input offsets, got {offsets}")
    if combine_fn not in COMBINE_FNS:
        raise ValueError(
            f"NASFPN: block_specs[{index}].combine_fn {combine_fn!r} is not one of "
            f"{', '.join(COMBINE_FNS)}"
        )
    return BlockSpec(int(level), str(combine_fn), offsets, bool(is_output))


def build_block_specs(block_specs: Sequence[Any] | None = None) -> list[BlockSpec]:
    """`BlockSpec`s from tuples, dicts or `BlockSpec`s; the paper's cells when None or empty."""
    if not block_specs:
        block_specs = NASFPN_BLOCK_SPECS
    return [_to_block_spec(spec, i) for i, spec in enumerate(block_specs)]


def _check_topology(block_specs: list[BlockSpec], min_level: int, max_level: int) -> None:
    """Raises unless every cell reads existing nodes and the last cells cover every level."""
    levels = list(range(min_level, max_level + 1))
    for i, spec in enumerate(block_specs):
        for offset in spec.input_offsets:
            if not 0 <= offset < len(levels):
                raise ValueError(
                    f"NASFPN: block_specs[{i}] reads node {offset}, but only {len(levels)} "
                    "nodes exist at that point"
                )
        if not min_level <= spec.level <= max_level:
            raise ValueError(
                f"NASFPN: block_specs[{i}].level {spec.level} is outside min_level..max_level "
                f"{min_level}..{max_level}"
            )
        levels.append(spec.level)
    num_outputs = max_level - min_level + 1
    last = levels[-num_outputs:]
    if len(block_specs) < num_outputs or sorted(last) != list(range(min_level, max_level + 1)):
        raise ValueError(
            f"NASFPN: block_specs must end with {num_outputs} cells covering levels "
            f"{min_level}..{max_level} once each; the last {num_outputs} nodes have levels "
            f"{last} (the default cells are made for levels 3..7)"
        )


def _global_attention(coarse: tf.Tensor, fine: tf.Tensor) -> tf.Tensor:
    """Gates `fine` by the sigmoid of `coarse`'s global max per channel, adds `coarse`."""
    gate = tf.math.sigmoid(tf.math.reduce_max(coarse, axis=[1, 2], keepdims=True))
    return coarse + fine * gate


def _nearest_upsampling(x: tf.Tensor, scale: int) -> tf.Tensor:
    """Nearest-neighbour upsampling by an integer factor, also for unknown spatial sizes.

    Each pixel is repeated through a reshape → tile → reshape; Model Garden builds the same
    op sequence, which keeps the functional graph (and so the weight order) identical.
    """
    _, _, _, channels = x.shape.as_list()
    dynamic = tf.shape(x)
    height, width = dynamic[1], dynamic[2]
    x = tf.reshape(x, [-1, height, 1, width, 1, channels])
    x = tf.tile(x, [1, 1, scale, 1, scale, 1])
    return tf.reshape(x, [-1, height * scale, width * scale, channels])


@tf_keras.utils.register_keras_serializable(package="Vision")
class NASFPN(MultilevelDecoderMixin, tf_keras.Model):
    """NAS-FPN: {level: features} in, {level: num_filters features} out for min..max_level."""

    def __init__(
        self,
        input_specs: Mapping[str, tf.TensorShape],
        min_level: int = 3,
        max_level: int = 7,
        block_specs: Sequence[Any] | None = None,
        num_filters: int = 256,
        num_repeats: int = 5,
        use_separable_conv: bool = False,
        activation: str = "relu",
        use_sync_bn: bool = False,
        norm_momentum: float = 0.99,
        norm_epsilon: float = 0.001,
        kernel_initializer: str = "VarianceScaling",
        kernel_regularizer: tf_keras.regularizers.Regularizer | None = None,
        bias_regularizer: tf_keras.regularizers.Regularizer | None = None,
        **kwargs: Any,
    ):
        """Initializes the NAS-FPN.

        Args:
          input_specs: {level: TensorShape} of the backbone features (its `output_specs`); it
            must include `min_level`. Levels above the backbone's top are made by max pooling.
          min_level: finest output level.
          max_level: coarsest output level.
          block_specs: the merging cells, as `BlockSpec`s or `(level, combine_fn, (offset0,
            offset1), is_output)` tuples; None = the paper's cells (levels 3..7).
          num_filters: channels of every node and output.
          num_repeats: how many times the cell sequence is stacked.
          use_separable_conv: separable instead of regular convs.
          activation: activation before each cell's 3x3 conv.
          use_sync_bn: synchronize batch-norm statistics across replicas.
          norm_momentum: batch-norm moving-average momentum.
          norm_epsilon: batch-norm epsilon.
          kernel_initializer: 'VarianceScaling' (the default) means He normal with fan-out,
            Model Garden's choice here; any other Keras initializer is used as given.
          kernel_regularizer: regularizer of the conv kernels.
          bias_regularizer: regularizer of the conv biases.
          **kwargs: `tf_keras.Model` arguments (e.g. `name`).

        Raises:
          ValueError: the backbone lacks `min_level`, bad levels or repeats, or block specs
            that read missing nodes or do not produce every output level.
        """
        specs = normalize_input_specs(input_specs, "NASFPN")
        if min_level > max_level:
            raise ValueError(f"NASFPN: min_level {min_level} is greater than max_level {max_level}")
        if str(min_level) not in specs:
            raise ValueError(
                f"NASFPN: input_specs lacks min_level {min_level} (has levels "
                f"{sorted(int(k) for k in specs)}); the backbone must provide the finest level"
            )
        factor = 2 ** (max_level - min_level)
        for size in specs[str(min_level)][1:3]:
            if size is not None and size % factor:
                # Cells upsample coarse nodes by exact powers of two and add them to finer ones.
                raise ValueError(
                    f"NASFPN: level {min_level} features are {size} pixels across, not a "
                    f"multiple of {factor}; the input size must be a multiple of "
                    f"2**max_level = {2**max_level}"
                )
        if num_repeats < 1:
            raise ValueError(f"NASFPN: num_repeats must be >= 1, got {num_repeats}")
        blocks = build_block_specs(block_specs)
        _check_topology(blocks, min_level, max_level)
        kernel_regularizer = nn_layers.canonical_regularizer(kernel_regularizer)
        bias_regularizer = nn_layers.canonical_regularizer(bias_regularizer)
        self._config_dict = {
            "input_specs": specs,
            "min_level": min_level,
            "max_level": max_level,
            "block_specs": [
                [b.level, b.combine_fn, list(b.input_offsets), b.is_output] for b in blocks
            ],
            "num_filters": num_filters,
            "num_repeats": num_repeats,
            "use_separable_conv": use_separable_conv,
            "activation": activation,
            "use_sync_bn": use_sync_bn,
            "norm_momentum": norm_momentum,
            "norm_epsilon": norm_epsilon,
            "kernel_initializer": kernel_initializer,
            "kernel_regularizer": kernel_regularizer,
            "bias_regularizer": bias_regularizer,
        }
        self._activation_fn = nn_layers.get_activation(activation)

        logger.info("NASFPN input_specs: %s, %d cells x %d", specs, len(blocks), num_repeats)
        # Every backbone level is an input (also unused ones) so the backbone dict feeds in as is.
        inputs = {level: tf_keras.Input(shape=spec[1:]) for level, spec in specs.items()}

        feats = []
        for level in range(min_level, max_level + 1):
            if str(level) in inputs:
                feats.append(self._resample(inputs[str(level)], level, level, num_filters))
            else:
                feats.append(self._resample(feats[-1], level - 1, level, num_filters))

        for _ in range(num_repeats):
            outputs = self._build_cells(feats, blocks)
            feats = [outputs[level] for level in range(min_level, max_level + 1)]

        self._output_specs = {
            str(level): outputs[level].shape for level in range(min_level, max_level + 1)
        }
        super().__init__(
            inputs=inputs,
            outputs={str(level): tensor for level, tensor in outputs.items()},
            **kwargs,
        )

    # -------------------------------------------------------------------------- the graph
    def _conv(self, kernel_size: int, filters: int | None = None) -> tf_keras.layers.Layer:
        cfg = self._config_dict
        initializer = cfg["kernel_initializer"]

        def make_initializer() -> Any:
            if initializer == "VarianceScaling":
                return tf_keras.initializers.VarianceScaling(
                    scale=2.0, mode="fan_out", distribution="untruncated_normal"
                )
            return nn_layers.clone_initializer(nn_layers.canonical_initializer(initializer))

        common = {
            "filters": cfg["num_filters"] if filters is None else filters,
            "kernel_size": kernel_size,
            "padding": "same",
            "bias_initializer": "zeros",
            "bias_regularizer": cfg["bias_regularizer"],
        }
        if cfg["use_separable_conv"]:
            return tf_keras.layers.SeparableConv2D(
                depthwise_initializer=make_initializer(),
                pointwise_initializer=make_initializer(),
                depthwise_regularizer=cfg["kernel_regularizer"],
                pointwise_regularizer=cfg["kernel_regularizer"],
                **common,
            )
        return tf_keras.layers.Conv2D(
            kernel_initializer=make_initializer(),
            kernel_regularizer=cfg["kernel_regularizer"],
            **common,
        )

    def _norm(self) -> tf_keras.layers.Layer:
        cfg = self._config_dict
        return nn_layers.get_norm_layer(cfg["use_sync_bn"])(
            axis=nn_layers.get_bn_axis(),
            momentum=cfg["norm_momentum"],
            epsilon=cfg["norm_epsilon"],
        )

    def _resample(
        self, x: tf.Tensor, input_level: int, target_level: int, filters: int = CELL_INPUT_FILTERS
    ) -> tf.Tensor:
        """`x` at `target_level` with `filters` channels."""
        if x.shape[-1] != filters:
            x = self._norm()(self._conv(1, filters)(x))
        if input_level < target_level:
            stride = 2 ** (target_level - input_level)
            return tf_keras.layers.MaxPool2D(pool_size=stride, strides=stride, padding="same")(x)
        if input_level > target_level:
            return _nearest_upsampling(x, 2 ** (input_level - target_level))
        # Under a mixed-precision policy a backbone feature can arrive in float32 while the
        # resampled nodes are in the compute dtype; the merges need one dtype.
        compute_dtype = tf_keras.mixed_precision.global_policy().compute_dtype
        if compute_dtype is not None and x.dtype != compute_dtype:
            return tf.cast(x, compute_dtype)
        return x

    def _build_cells(self, feats: list[tf.Tensor], blocks: list[BlockSpec]) -> dict[int, Any]:
        """Runs the cell sequence once on `feats` (one node per level, finest first)."""
        cfg = self._config_dict
        min_level, max_level = cfg["min_level"], cfg["max_level"]
        feats = list(feats)
        levels = list(range(min_level, max_level + 1))
        # How many cells read each node; output cells absorb nodes nothing has read.
        readers = [0] * len(feats)
        for spec in blocks:
            nodes = []
            for offset in spec.input_offsets:
                readers[offset] += 1
                nodes.append(
                    (self._resample(feats[offset], levels[offset], spec.level), levels[offset])
                )
            (node0, level0), (node1, level1) = nodes
            if spec.combine_fn == "sum":
                merged = node0 + node1
            elif level0 >= level1:
                merged = _global_attention(node0, node1)
            else:
                merged = _global_attention(node1, node0)

            if spec.is_output:
                for j, (feat, level) in enumerate(zip(feats, levels)):
                    if readers[j] == 0 and level == spec.level:
                        readers[j] += 1
                        merged += self._resample(feat, level, spec.level)

            merged = self._activation_fn(merged)
            merged = self._norm()(self._conv(3)(merged))
            feats.append(merged)
            levels.append(spec.level)
            readers.append(0)

        num_outputs = max_level - min_level + 1
        return {levels[i]: feats[i] for i in range(len(feats) - num_outputs, len(feats))}


@registry.register_decoder_builder("nasfpn")
def build_nasfpn_decoder(
    input_specs: Mapping[str, tf.TensorShape],
    model_config: Any,
    l2_regularizer: tf_keras.regularizers.Regularizer | None = None,
    **kwargs: Any,
) -> NASFPN:
    """Builds a NAS-FPN from `model_config.decoder` (type 'nasfpn'), levels and norm_activation.

    Args:
      input_specs: the backbone's output_specs.
      model_config: a model config with `decoder`, `min_level`, `max_level`, `norm_activation`.
      l2_regularizer: kernel regularizer of the convs.
      **kwargs: extra `NASFPN` keyword arguments (e.g. `block_specs`), overriding the config.

    Returns:
      The NAS-FPN.
    """
    cfg, params = registry.builder_params(model_config, "nasfpn", l2_regularizer)
    params.update(
        {
            "input_specs": input_specs,
            "min_level": model_config.min_level,
            "max_level": model_config.max_level,
            "num_filters": cfg.num_filters,
            "num_repeats": cfg.num_repeats,
            "use_separable_conv": cfg.use_separable_conv,
        }
    )
    params.update(kwargs)
    return NASFPN(**params)

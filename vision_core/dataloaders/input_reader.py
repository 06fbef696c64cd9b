"""A tf.data reader for sharded record files (Model Garden's `official.core.input_reader`).

`InputReader(params, decoder_fn=..., parser_fn=...)` turns a `DataConfig` into a batched,
prefetched `tf.data.Dataset`:

    files ─▶ [shuffle files] ─▶ [shard] ─▶ [repeat] ─▶ interleave(read) ─▶ [shuffle examples]
          ─▶ decode ─▶ parse ─▶ [cache ─▶ repeat ─▶ shuffle] ─▶ batch ─▶ prefetch

Brackets mark the steps taken only when training (or when asked). Paths may be local or any
filesystem `tf.io.gfile` knows (`gs://...`). GZIP-compressed TFRecords are recognised by their
magic bytes, file by file, unless the config says otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf

logger = logging.getLogger(__name__)

_GLOB_CHARS = ("*", "?", "[")
_GZIP_MAGIC = b"\x1f\x8b"
_COMPRESSIONS = {"": "", "none": "", "gzip": "GZIP", "zlib": "ZLIB"}


class NoMatchingFilesError(FileNotFoundError, ValueError):
    """An input path or pattern matched no file.

    Subclasses both FileNotFoundError (what it is) and ValueError (what Model Garden raises), so
    either `except` clause catches it.
    """


def match_files(input_path: str | Sequence[str]) -> list[str]:
    """Expands an input path into the sorted list of files it names.

    Args:
      input_path: a path or glob pattern, several separated by commas, or a list of such strings.
        Paths may be local or remote (`gs://bucket/train-*.tfrecord`).

    Returns:
      The matched files: globs sorted and de-duplicated, in the order the patterns were given.

    Raises:
      NoMatchingFilesError: a pattern matched nothing, or a plain path does not exist.
      ValueError: `input_path` is neither a string nor a list of strings, or is empty.
    """
    usage = (
        "input_path: expected a file path or glob pattern, several separated by commas, "
        f"or a list of them; got {input_path!r}"
    )
    if isinstance(input_path, str):
        entries = [input_path]
    elif isinstance(input_path, list | tuple) and all(isinstance(p, str) for p in input_path):
        entries = list(input_path)
    else:
        raise ValueError(usage)

    matched: list[str] = []
    seen: set[str] = set()
    for entry in entries:
        for pattern in (p.strip() for p in entry.split(",")):
            if not pattern:
                continue
            if any(c in pattern for c in _GLOB_CHARS):
                files = sorted(tf.io.gfile.glob(pattern))
                if not files:
                    raise NoMatchingFilesError(f"input_path: {pattern!r} does not match any files")
            else:
                if not tf.io.gfile.exists(pattern):
                    raise NoMatchingFilesError(f"input_path: {pattern!r} does not exist")
                files = [pattern]
            for f in files:
                if f not in seen:
                    seen.add(f)
                    matched.append(f)
    if not matched:
        raise ValueError(usage)
    return matched


def detect_compression(path: str) -> str:
    """Returns 'GZIP' when the file starts with the gzip magic bytes, else '' (uncompressed)."""
    with tf.io.gfile.GFile(path, "rb") as f:
        head = f.read(2)
    return "GZIP" if head == _GZIP_MAGIC else ""


def resolve_compression(
    files: Sequence[str], compression: str | None = None, file_type: str | None = None
) -> list[str]:
    """The `tf.data.TFRecordDataset` compression_type of each file.

    An explicit `compression` ('GZIP', 'ZLIB', or 'NONE') applies to all files;
    `file_type='tfrecord_compressed'` means GZIP as in Model Garden; otherwise each file's magic
    bytes decide between GZIP and none ('' and None both mean "detect").
    """
    if compression:
        key = str(compression).lower()
        if key not in _COMPRESSIONS:
            raise ValueError(
                f"compression: expected one of GZIP, ZLIB, NONE or empty, got {compression!r}"
            )
        return [_COMPRESSIONS[key]] * len(files)
    if file_type == "tfrecord_compressed":
        return ["GZIP"] * len(files)
    return [detect_compression(f) for f in files]


def _maybe_map(dataset: tf.data.Dataset, fn: Callable[..., Any] | None) -> tf.data.Dataset:
    return dataset if fn is None else dataset.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


class InputReader:
    """Builds a `tf.data.Dataset` from a data config (Model Garden's `InputReader`).

    Reads these fields of `params` (missing optional ones take the defaults shown):
    `input_path`, `global_batch_size`, `is_training`, `shuffle_buffer_size` (1000),
    `cycle_length` (None = autotune), `block_length` (None), `drop_remainder` (True),
    `file_type` ('tfrecord'), `compression` (None = detect), `cache` (False), `seed` (None),
    `deterministic` (None), `sharding` (True), `prefetch_buffer_size` (None = autotune).
    """

    def __init__(
        self,
        params: Any,
        dataset_fn: Callable[..., tf.data.Dataset] | None = None,
        decoder_fn: Callable[..., Any] | None = None,
        sample_fn: Callable[[tf.data.Dataset], tf.data.Dataset] | None = None,
        parser_fn: Callable[..., Any] | None = None,
        transform_and_batch_fn: Callable[..., tf.data.Dataset] | None = None,
        postprocess_fn: Callable[..., Any] | None = None,
        repeat: bool | None = None,
    ):
        """Initializes the reader and matches the input files (errors surface here).

        Args:
          params: a DataConfig-like object (see the class docstring).
          dataset_fn: reads one file name into a dataset of serialized records. The default is
            `tf.data.TFRecordDataset` with each file's compression resolved as described in
            `resolve_compression`.
          decoder_fn: maps a serialized record to a dict of tensors.
          sample_fn: transforms the decoded dataset before parsing.
          parser_fn: maps decoded tensors to the model's (inputs, labels).
          transform_and_batch_fn: `(dataset, input_context) -> dataset` that replaces the
            default batching.
          postprocess_fn: maps batched tensors.
          repeat: repeat the data forever; defaults to `params.is_training` (Model Garden).
            Keras `fit(dataset, epochs=N)` without `steps_per_epoch` needs a finite dataset.
        """
        if not getattr(params, "input_path", None):
            raise ValueError("input_path: expected a file path or pattern, got nothing")
        self._files = match_files(params.input_path)
        self._is_training = bool(params.is_training)
        self._global_batch_size = int(getattr(params, "global_batch_size", 0) or 0)
        if self._global_batch_size <= 0 and transform_and_batch_fn is None:
            raise ValueError(
                "global_batch_size: expected a positive batch size, "
                f"got {getattr(params, 'global_batch_size', None)!r}"
            )
        self._drop_remainder = bool(getattr(params, "drop_remainder", True))
        self._shuffle_buffer_size = int(getattr(params, "shuffle_buffer_size", 1000) or 1)
        self._cycle_length = getattr(params, "cycle_length", None)
        self._block_length = getattr(params, "block_length", None)
        self._cache = bool(getattr(params, "cache", False))
        self._seed = getattr(params, "seed", None)
        self._deterministic = getattr(params, "deterministic", None)
        self._sharding = bool(getattr(params, "sharding", True))
        self._prefetch = getattr(params, "prefetch_buffer_size", None) or tf.data.AUTOTUNE
        self._repeat = self._is_training if repeat is None else bool(repeat)

        self._dataset_fn = dataset_fn
        self._compressions = (
            resolve_compression(
                self._files,
                getattr(params, "compression", None),
                getattr(params, "file_type", None),
            )
            if dataset_fn is None
            else None
        )
        self._decoder_fn = decoder_fn
        self._sample_fn = sample_fn
        self._parser_fn = parser_fn
        self._transform_and_batch_fn = transform_and_batch_fn
        self._postprocess_fn = postprocess_fn
        logger.info(
            "InputReader: %d file(s) from %r (training=%s)",
            len(self._files),
            params.input_path,
            self._is_training,
        )

    @property
    def files(self) -> list[str]:
        """The matched input files."""
        return list(self._files)

    def _read_records(self, input_context: tf.distribute.InputContext | None) -> tf.data.Dataset:
        num_pipelines = input_context.num_input_pipelines if input_context else 1
        shard_files = self._sharding and num_pipelines > 1 and len(self._files) >= num_pipelines
        repeat_files = self._repeat and not self._cache

        if self._compressions is None:
            files = tf.data.Dataset.from_tensor_slices(self._files)
            read = self._dataset_fn
        else:
            # The compression travels with its file name, so one input may mix both kinds.
            files = tf.data.Dataset.from_tensor_slices((self._files, self._compressions))

            def read(name, compression):
                return tf.data.TFRecordDataset(name, compression_type=compression)

        if self._is_training and len(self._files) > 1:
            seed = self._seed
            if seed is None and shard_files:
                # Every worker must draw the same file order, or shards would overlap.
                seed = 0
            files = files.shuffle(
                len(self._files), seed=seed, reshuffle_each_iteration=not self._cache
            )
        if shard_files:
            files = files.shard(num_pipelines, input_context.input_pipeline_id)
        if repeat_files:
            files = files.repeat()

        dataset = files.interleave(
            read,
            cycle_length=self._cycle_length,
            block_length=self._block_length,
            num_parallel_calls=self._cycle_length or tf.data.AUTOTUNE,
            deterministic=self._deterministic,
        )
        if self._sharding and num_pipelines > 1 and not shard_files:
            logger.warning(
                "%d file(s) for %d input pipelines: every worker reads all files and keeps "
                "every %d-th record; shard the data into more files.",
                len(self._files),
                num_pipelines,
                num_pipelines,
            )
            options = tf.data.Options()
            options.experimental_distribute.auto_shard_policy = (
                tf.data.experimental.AutoShardPolicy.OFF
            )
            dataset = dataset.with_options(options)
            dataset = dataset.shard(num_pipelines, input_context.input_pipeline_id)
        return dataset

    def read(
        self,
        input_context: tf.distribute.InputContext | None = None,
        dataset: tf.data.Dataset | None = None,
    ) -> tf.data.Dataset:
        """Returns the batched, prefetched dataset.

        Args:
          input_context: given by `strategy.distribute_datasets_from_function`; selects this
            worker's shard and the per-replica batch size.
          dataset: a dataset of serialized records to use instead of the files.
        """
        if dataset is None:
            dataset = self._read_records(input_context)
        if self._is_training and not self._cache:
            dataset = dataset.shuffle(self._shuffle_buffer_size, seed=self._seed)
        dataset = _maybe_map(dataset, self._decoder_fn)
        if self._sample_fn is not None:
            dataset = dataset.apply(self._sample_fn)
        dataset = _maybe_map(dataset, self._parser_fn)
        if self._cache:
            dataset = dataset.cache()
            if self._repeat:
                dataset = dataset.repeat()
            if self._is_training:
                dataset = dataset.shuffle(self._shuffle_buffer_size, seed=self._seed)

        if self._transform_and_batch_fn is not None:
            dataset = self._transform_and_batch_fn(dataset, input_context)
        else:
            batch_size = (
                input_context.get_per_replica_batch_size(self._global_batch_size)
                if input_context
                else self._global_batch_size
            )
            dataset = dataset.batch(batch_size, drop_remainder=self._drop_remainder)
        dataset = _maybe_map(dataset, self._postprocess_fn)
        return dataset.prefetch(self._prefetch)

"""The conversion step: an Apache Beam pipeline from a dataset source to sharded TFRecords.

Graph (one pipeline for all splits):

  shards.jsonl: one line per (split, shard) naming refs/<split>-<shard>.jsonl, the shard's record
  references, listed and sorted in the launcher (shard = sorted index mod num_shards)
    → Reshuffle (spreads the shards over the workers)
    → per shard, on a worker: load + encode each record in key order, append it to the
      shard's TFRecord file, then write the shard's statistics   ──bad──▶ bad_records.jsonl

Records never pass through the runner, only the shard lines and bad-record entries do: memory
is one record per worker whatever the dataset's size (a shuffle of the encoded records held the
whole dataset in the runner), and there is no serialization of records between stages.

Determinism: the shard of a record depends only on its position in the sorted key list, records
inside a shard are written in key order and examples are serialized deterministically, so the same
input gives byte-identical shards on any runner and any number of workers.

Atomicity: everything is written under `{output_dir}/.tmp-convert-<id>/` and moved into place only
after the pipeline succeeded; `summary.json` is written last and marks a complete conversion.
Locally each move is a rename; on gs:// (paths go through `_fs`, i.e. Beam's filesystems) a move
is a copy then a delete and every object appears whole, but the moves as a group are not atomic:
only a `summary.json` whose listed shards are all present marks a finished output.

Statistics: workers reduce each record to small counters (`report.record_stats`), each shard's
statistics file holds their sum, and the launcher adds up the shards for the summary and the
dataset report (`report.py`); progress goes through files too (`progress.py`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import posixpath
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from components.convert_dataset import (
    _fs,
    catalog,
    errors,
    examples,
    outputs,
    report,
    runners,
    shapes,
    sources,
    tfrecord,
)
from components.convert_dataset import progress as progress_lib
from components.convert_dataset.sharding import (  # noqa: F401 (public names here too)
    parse_byte_size,
    shard_name,
    shards_for_target_size,
)

logger = logging.getLogger(__name__)

TASKS = catalog.TASKS
SOURCE_NAMES = catalog.SOURCE_NAMES
SOURCE_TASKS = catalog.SOURCE_TASKS
SUMMARY_FILE = outputs.SUMMARY_FILE
BAD_RECORDS_FILE = outputs.BAD_RECORDS_FILE
SUMMARY_VERSION = outputs.SUMMARY_VERSION
_TMP_DIR_PREFIX = ".tmp-convert-"
_REFS_DIR = "refs"
_STATS_DIR = outputs.STATS_DIR
_BAD_TAG = "bad"
# Kept here under their old names: tests and callers reach them through this module.
_pipeline_runner_and_options = runners.pipeline_runner_and_options


def _normalize_compression(compression: str | None) -> str | None:
    if compression is None or str(compression).lower() in ("", "none"):
        return None
    if str(compression).lower() == "gzip":
        return "GZIP"
    raise errors.ConversionError(f"compression must be None or 'gzip', got {compression!r}")


class _WriteShardDoFn(beam.DoFn):
    """Converts one shard: loads its records in key order, writes each to the shard's TFRecord
    file as it goes, then the shard's statistics file; bad records go to the `bad` output.

    The element is one manifest line, {split, shard, refs_file}. Records never travel through
    the runner: it moves only these lines and the bad-record entries, and the worker reads the
    shard's references one at a time, so memory stays that of one record per worker whatever
    the dataset's size; the shard is the unit of parallelism.
    With a `progress_dir`, each instance also keeps its running counts in a file there.
    """

    def __init__(
        self,
        source: sources.Source,
        tmp_dir: str,
        num_shards: Mapping[str, int],
        compression: str | None,
        progress_dir: str | None = None,
    ):
        self._source = source
        self._tmp_dir = tmp_dir
        self._num_shards = dict(num_shards)
        self._compression = compression
        self._progress_dir = progress_dir
        self._progress: progress_lib.ProgressWriter | None = None

    def setup(self) -> None:
        if self._progress_dir:
            self._progress = progress_lib.ProgressWriter(self._progress_dir)

    def finish_bundle(self) -> None:
        if self._progress is not None:
            self._progress.flush()

    def _count(self, bad: bool = False) -> None:
        if self._progress is not None:
            self._progress.count(bad=bad)

    def process(self, line: str) -> Iterator[Any]:
        item = json.loads(line)
        # The output split: the source's split renamed (VOC's 'val' written as 'validation').
        split, shard = item["split"], item["shard"]
        # The shard's references are read one at a time from its own file.
        refs = (
            sources.RecordRef.from_json(text)
            for text in _fs.read_bytes(item["refs_file"]).decode("utf-8").splitlines()
        )
        name = shard_name(split, shard, self._num_shards[split], self._compression)
        written: list[list[str]] = []
        histogram: Counter[str] = Counter()
        record_stats: dict[str, Any] = {}
        bad = []
        # Written to a local file, then moved (on gs:// uploaded through Beam's filesystems,
        # with the credentials and emulator settings the pipeline uses).
        with (
            _fs.local_file_for(_fs.join(self._tmp_dir, name)) as local_path,
            tfrecord.TFRecordWriter(local_path, self._compression) as writer,
        ):
            for ref in refs:
                try:
                    record = self._source.load(ref)
                    serialized = examples.serialize(examples.build_example(record.features))
                except errors.BadRecordError as e:
                    self._count(bad=True)
                    bad.append(
                        {
                            "split": split,
                            "record_id": ref.key,
                            "path": e.path,
                            "reason": e.reason,
                            "detail": e.detail,
                        }
                    )
                    continue
                writer.write(serialized)
                written.append([ref.key, examples.sha256_hex(serialized)])
                histogram.update({str(k): v for k, v in record.class_histogram.items()})
                report.merge(
                    record_stats, report.record_stats(record.features, record.class_histogram)
                )
                self._count()
        stats = {
            "split": split,
            "shard": shard,
            "file": name,
            "records": written,
            "class_histogram": dict(histogram),
            "report": record_stats,
        }
        _fs.write_text_atomic(
            _fs.join(self._tmp_dir, _STATS_DIR, f"{split}-{shard:05d}.json"),
            json.dumps(stats, sort_keys=True),
        )
        for entry in bad:
            yield beam.pvalue.TaggedOutput(_BAD_TAG, entry)
        yield name


class _WriteBadRecordsDoFn(beam.DoFn):
    def __init__(self, path: str):
        self._path = path

    def process(self, bad: list[dict[str, str]]) -> Iterator[str]:
        ordered = sorted(bad, key=lambda b: (b["split"], b["record_id"], b["path"]))
        _fs.write_text_atomic(
            self._path, "".join(json.dumps(b, sort_keys=True) + "\n" for b in ordered)
        )
        yield self._path


def _build(
    p: beam.Pipeline,
    source: sources.Source,
    manifest: str,
    tmp_dir: str,
    num_shards: Mapping[str, int],
    compression: str | None,
    progress_dir: str | None = None,
) -> None:
    converted = (
        p
        # A manifest file rather than beam.Create: Create would embed every reference in the
        # pipeline graph, which remote runners limit in size. One line per shard.
        | "ReadManifest" >> beam.io.ReadFromText(manifest)
        # Breaks fusion with the read, so the shards spread over the workers.
        | "SpreadShards" >> beam.Reshuffle()
        | "ConvertShards"
        >> beam.ParDo(
            _WriteShardDoFn(source, tmp_dir, num_shards, compression, progress_dir)
        ).with_outputs(_BAD_TAG, main="shards")
    )
    _ = (
        converted[_BAD_TAG]
        | "CollectBad" >> beam.combiners.ToList()
        | "WriteBad" >> beam.ParDo(_WriteBadRecordsDoFn(_fs.join(tmp_dir, BAD_RECORDS_FILE)))
    )


def _write_manifest(
    manifest: str,
    tmp_dir: str,
    shard_keys: Sequence[tuple[str, int]],
    refs: Sequence[tuple[str, int, sources.RecordRef]],
) -> None:
    """One line per shard naming the file of its record references (one JSON line each, in key
    order), so the runner moves only short lines and a worker holds one reference at a time."""
    by_shard: dict[tuple[str, int], list[sources.RecordRef]] = {key: [] for key in shard_keys}
    for split, shard, ref in refs:
        by_shard[(split, shard)].append(ref)
    lines = []
    for (split, shard), shard_refs in by_shard.items():
        refs_file = _fs.join(tmp_dir, _REFS_DIR, f"{split}-{shard:05d}.jsonl")
        _fs.write_text_atomic(refs_file, "".join(ref.to_json() + "\n" for ref in shard_refs))
        lines.append(
            json.dumps({"split": split, "shard": shard, "refs_file": refs_file}, sort_keys=True)
        )
    _fs.write_text_atomic(manifest, "".join(line + "\n" for line in lines))


def run(
    source_dir: str | None,
    output_dir: str,
    splits: Sequence[str] | Mapping[str, str] = ("train", "validation"),
    num_shards: int = 4,
    compression: str | None = None,
    strict: bool = False,
    overwrite: bool = False,
    beam_args: Sequence[str] | None = None,
    source: str = "folders",
    shapes_options: Mapping[str, Any] | None = None,
    direct_running_mode: str = "in_memory",
    direct_num_workers: int = 1,
    task: str = "segmentation",
    class_names: Sequence[str] | None = None,
    annotation_files: Mapping[str, str] | None = None,
    image_dirs: Mapping[str, str] | None = None,
    include_masks: bool = False,
    mask_dirs: Mapping[str, str] | None = None,
    extra_source_options: Mapping[str, Any] | None = None,
    target_shard_bytes: int | None = None,
    progress: bool | Callable[[progress_lib.ProgressState], Any] = False,
) -> dict[str, Any]:
    """Converts a dataset folder into sharded TFRecords of Model Garden tf.Examples.

    Args:
      source_dir: The dataset folder (local or gs://). With `source='shapes'` the shapes dataset is
        generated there first; None generates it in a temporary folder that is deleted afterwards.
      output_dir: Where `{split}-SSSSS-of-NNNNN.tfrecord[.gz]`, `bad_records.jsonl`, the dataset
        report (`report.json`, `report.md`, `examples.png`; see `report.py`) and `summary.json`
        go.
      splits: Split names to convert, or {output split: source split} to write a source's
        split under another name (e.g. {'train': 'train', 'validation': 'val'} for VOC, so the
        train and evaluate steps find `validation-*` shards).
      num_shards: Shards per split.
      compression: None or 'gzip'.
      strict: Fail (writing nothing) if any record is bad, instead of skipping and reporting it.
      overwrite: Allow a non-empty `output_dir`; an earlier conversion's files are replaced.
      beam_args: Extra Beam pipeline flags (`--runner`, `--project`, `--temp_location`, ...).
      source: 'folders', 'shapes', 'coco', 'voc' or 'cityscapes' (`SOURCE_TASKS` lists the
        tasks of each). For segmentation, folders means images/<split> + masks/<split>; for
        classification, ImageNet-style <split>/<class_name>/<image>. 'coco' reads
        annotations/instances_<split>.json + images/<split>/ under `source_dir` (detection), or
        annotations/panoptic_<split>.json + annotations/panoptic_<split>/ (segmentation), or
        the paths given in `annotation_files` / `image_dirs` / `mask_dirs`. 'voc' reads a
        VOCdevkit year folder (VOC2012: JPEGImages, Annotations, SegmentationClass, ImageSets);
        'cityscapes' reads leftImg8bit/<split>/<city>/ + gtFine/<split>/<city>/.
      shapes_options: Keyword arguments of `shapes.generate_shapes_dataset` (num_train,
        num_validation, image_size, seed, min_objects, max_objects, radius_range) for
        `source='shapes'`.
      direct_running_mode: 'in_memory', 'multi_threading' or 'multi_processing' (DirectRunner).
      direct_num_workers: Worker count for the DirectRunner.
      task: 'segmentation' (records carry `image/segmentation/class/encoded`),
        'classification' (records carry `image/class/label` and `image/class/text`; shapes
        images are labelled by their dominant shape) or 'detection' (Model Garden's
        `image/object/*` boxes, classes 1..N, crowd flags, areas; from 'coco' or 'shapes').
      class_names: Classification with folders: the class order (ids are positions in it);
        default the sorted class folder names. Ignored otherwise.
      annotation_files: 'coco': {split: COCO instances JSON} instead of the default layout.
      image_dirs: 'coco': {split: image folder} instead of the default layout.
      include_masks: detection: also write `image/object/mask` (one 0/1 PNG per object).
      mask_dirs: 'coco' with task 'segmentation' (COCO panoptic): {split: folder of the
        panoptic PNGs} instead of the default layout; `annotation_files` then name the
        panoptic JSON files.
      extra_source_options: further keyword arguments of the source class (see
        `sources.SOURCES`), e.g. `{'keep_difficult': False}` for 'voc'.
      target_shard_bytes: instead of `num_shards`, aim for shards of about this many bytes:
        each split gets ceil(input bytes / target) shards, the input bytes being the sizes of
        the files its records read (the examples hold those files' encoded bytes, so shards
        come out close to the target). Deterministic for a given input.
      progress: Show the job's progress (records loaded / total, bad so far, rate) while it
        runs: True for a tqdm bar on stderr when that is a terminal, else a log line every
        ~10 s; or a callable, given a `progress.ProgressState` about every second and a last
        one with `final=True` after the job. Counted by the workers, so it works with every
        runner that can write to `output_dir`.

    Returns:
      The summary also written to `summary.json`: per split the records written, bad records by
      reason, shard files, a class histogram (pixels per class for segmentation as
      `class_pixel_histogram`, images per class id for classification as `class_histogram`) and
      a fingerprint (sha256 over sorted record keys and the sha256 of each serialized example);
      for classification also the `class_names` the ids index. For detection: `class_names`
      by class id ('background' first), `coco_category_ids` (the source's id of class 1, 2, ...),
      objects per class id as `class_histogram`, per split the counts `boxes_clipped`,
      `boxes_dropped_zero_area`, `images_without_objects`, `annotations_without_image`, and
      `annotation_files` {split: path relative to `output_dir`} of the COCO groundtruth JSON
      written beside the TFRecords (contiguous class ids, bad records left out), with
      `annotation_file` the validation split's (the COCO evaluator's `annotation_file`).
      `report` names the report files ({'json', 'markdown', 'examples'}: file names relative
      to `output_dir`).

    Raises:
      ConversionError: bad options, a missing or malformed source folder, a non-empty output
        folder without `overwrite`, or bad records in strict mode.
    """
    if task not in TASKS:
        raise errors.ConversionError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if source not in SOURCE_NAMES:
        raise errors.ConversionError(
            f"source must be one of {', '.join(SOURCE_NAMES)}, got {source!r}"
        )
    if task not in SOURCE_TASKS[source]:
        hint = " (detection reads COCO JSON: use source 'coco')" if source == "folders" else ""
        raise errors.ConversionError(
            f"source {source!r} converts for task {' or '.join(map(repr, SOURCE_TASKS[source]))}"
            f", not {task!r}{hint}"
        )
    split_map = _split_map(splits)
    splits = list(split_map)
    if int(num_shards) < 1:
        raise errors.ConversionError(f"num_shards must be >= 1, got {num_shards}")
    if target_shard_bytes is not None and int(target_shard_bytes) < 1:
        raise errors.ConversionError(
            f"target_shard_bytes must be a positive byte count, got {target_shard_bytes}"
        )
    num_shards = int(num_shards)
    compression = _normalize_compression(compression)
    output_dir = output_dir.rstrip("/") or "/"
    outputs.check_output_dir(output_dir, overwrite)
    runner, options = _pipeline_runner_and_options(
        list(beam_args or []), direct_running_mode, direct_num_workers
    )

    generated_dir = None
    source_info = None
    if source == "shapes":
        if source_dir is None:
            generated_dir = tempfile.mkdtemp(prefix="shapes-")
            source_dir = generated_dir
        try:
            source_info = shapes.generate_shapes_dataset(source_dir, **dict(shapes_options or {}))
        except (ValueError, TypeError, FileExistsError) as e:
            raise errors.ConversionError(f"cannot generate the shapes dataset: {e}") from e
    elif source_dir is None and source != "coco":
        raise errors.ConversionError(f"source {source!r} needs a source_dir")
    source_name, source_options = _source_for(source, task, list(split_map.values()), class_names)
    if source_name in ("coco", "coco_panoptic"):
        source_options.update(
            annotation_files=dict(annotation_files or {}),
            image_dirs=dict(image_dirs or {}),
        )
    if source_name == "coco":
        source_options.update(include_masks=bool(include_masks))
    if source_name == "cityscapes" and task == "detection":
        source_options.update(include_masks=bool(include_masks))
    if source_name == "coco_panoptic":
        source_options.update(mask_dirs=dict(mask_dirs or {}))
    source_options.update(dict(extra_source_options or {}))
    try:
        return _convert(
            source_name, source_dir, output_dir, split_map, num_shards, compression, strict,
            overwrite, runner, options,
            {
                "source": source,
                "source_info": source_info,
                "source_dir": None if generated_dir else source_dir,
                "task": task,
            },
            source_options, target_shard_bytes,
            progress_lib.default_display() if progress is True else (progress or None),
        )  # fmt: skip
    finally:
        if generated_dir is not None:
            _fs.rmtree(generated_dir)


def _split_map(splits: Sequence[str] | Mapping[str, str]) -> dict[str, str]:
    """{output split: source split} from split names or a {output: source} mapping.

    Raises:
      ConversionError: no splits, a repeated name, or a name unusable in a file name.
    """
    if isinstance(splits, Mapping):
        split_map = {str(k): str(v) for k, v in splits.items()}
    else:
        names = [str(s) for s in splits]
        if len(set(names)) != len(names):
            raise errors.ConversionError(f"splits must be distinct names, got {names}")
        split_map = {s: s for s in names}
    if not split_map or len(set(split_map.values())) != len(split_map):
        raise errors.ConversionError(
            f"splits must be distinct names, got {dict(split_map) or list(splits)}"
        )
    for split in split_map:
        if not split or "/" in split or split.startswith("."):
            raise errors.ConversionError(f"invalid split name {split!r}")
    return split_map


def _source_for(
    source: str, task: str, splits: Sequence[str], class_names: Sequence[str] | None
) -> tuple[str, dict[str, Any]]:
    """The `sources.SOURCES` entry (and its options) reading `source` for `task`."""
    if source in ("voc", "cityscapes"):
        return source, {"splits": tuple(splits), "task": task}
    if source == "coco" and task == "segmentation":
        return "coco_panoptic", {"splits": tuple(splits)}
    if task == "detection":
        # The shapes generator writes COCO JSON in the 'coco' source's default layout.
        return "coco", {"splits": tuple(splits)}
    if task == "segmentation":
        # The shapes generator writes the folders layout.
        return "folders", {}
    if source == "shapes":
        return "shapes_classification", {}
    return "class_folders", {"splits": tuple(splits), "class_names": tuple(class_names or ())}


def _convert(
    source_name: str,
    source_dir: str | None,
    output_dir: str,
    split_map: Mapping[str, str],
    num_shards: int,
    compression: str | None,
    strict: bool,
    overwrite: bool,
    runner: Any,
    options: PipelineOptions,
    extra: Mapping[str, Any],
    source_options: Mapping[str, Any] | None = None,
    target_shard_bytes: int | None = None,
    on_progress: Callable[[progress_lib.ProgressState], Any] | None = None,
) -> dict[str, Any]:
    src = sources.build_source(source_name, source_dir, **dict(source_options or {}))
    splits = list(split_map)
    renamed = {out: source for out, source in split_map.items() if out != source}
    refs: list[tuple[str, int, sources.RecordRef]] = []
    shard_counts: dict[str, int] = {}
    for split in splits:
        split_refs = src.list_records(split_map[split])
        if target_shard_bytes:
            shard_counts[split] = shards_for_target_size(split_refs, target_shard_bytes)
        else:
            shard_counts[split] = num_shards
        refs.extend((split, i % shard_counts[split], ref) for i, ref in enumerate(split_refs))
        logger.info(
            "split %r: %d candidate records in %s, %d shards",
            split, len(split_refs), source_dir, shard_counts[split],
        )  # fmt: skip
    notes = {split: src.listing_notes(split_map[split]) for split in splits}
    shard_keys = [(split, shard) for split in splits for shard in range(shard_counts[split])]

    tmp_dir = _fs.join(output_dir, f"{_TMP_DIR_PREFIX}{uuid.uuid4().hex}")
    _fs.makedirs(_fs.join(tmp_dir, _STATS_DIR))
    try:
        manifest = _fs.join(tmp_dir, "shards.jsonl")
        _write_manifest(manifest, tmp_dir, shard_keys, refs)
        progress_dir = _fs.join(tmp_dir, progress_lib.PROGRESS_DIR) if on_progress else None
        monitor = (
            progress_lib.ProgressMonitor(progress_dir, len(refs), on_progress)
            if progress_dir
            else contextlib.nullcontext()
        )
        with monitor, beam.Pipeline(runner=runner, options=options) as p:
            _build(p, src, manifest, tmp_dir, shard_counts, compression, progress_dir)
        bad_path = _fs.join(tmp_dir, BAD_RECORDS_FILE)
        bad = [json.loads(line) for line in _fs.read_bytes(bad_path).decode().splitlines()]
        if strict and bad:
            raise outputs.strict_error(bad)
        task = extra.get("task")
        summary, split_stats = outputs.summarize(
            tmp_dir, splits, shard_counts, compression, bad, notes,
            "class_pixel_histogram" if task == "segmentation" else "class_histogram",
        )  # fmt: skip
        lost = len(refs) - summary["records"] - len(bad)
        if lost:
            # Every listed record ends up written or reported bad; anything else is a runner
            # fault, and a silently incomplete dataset is worse than a failed conversion.
            raise RuntimeError(
                f"the pipeline lost {lost} of {len(refs)} records ({summary['records']} written, "
                f"{len(bad)} bad); nothing was written. Rerun, or use another "
                "--direct-running-mode / runner"
            )
        summary.update(extra)
        if getattr(src, "class_names", ()):
            summary["class_names"] = list(src.class_names)
        groundtruth_files = {}
        if task == "detection":
            summary["coco_category_ids"] = list(src.category_ids)
            groundtruth_files = outputs.write_groundtruth(src, split_map, bad, tmp_dir)
            summary["annotation_files"] = groundtruth_files
            summary["annotation_file"] = groundtruth_files.get("validation")
        elif source_name == "coco_panoptic":
            summary["coco_category_ids"] = list(src.category_ids)
        if renamed:
            summary["source_splits"] = renamed
        summary["report"] = report.write(tmp_dir, summary, split_stats)
        if overwrite:
            outputs.remove_previous_outputs(output_dir)
        shards = [name for split in splits for name in summary["splits"][split]["shards"]]
        # One batched move (on gs:// each move is a copy and a delete).
        _fs.rename_many(
            [_fs.join(tmp_dir, name) for name in shards],
            [_fs.join(output_dir, name) for name in shards],
        )
        for relative in groundtruth_files.values():
            _fs.makedirs(posixpath.dirname(_fs.join(output_dir, relative)))
            _fs.rename(_fs.join(tmp_dir, relative), _fs.join(output_dir, relative))
        _fs.rename(bad_path, _fs.join(output_dir, BAD_RECORDS_FILE))
        for name in summary["report"].values():
            _fs.rename(_fs.join(tmp_dir, name), _fs.join(output_dir, name))
        _fs.write_text_atomic(
            _fs.join(output_dir, SUMMARY_FILE), json.dumps(summary, indent=2, sort_keys=True) + "\n"
        )
    finally:
        _fs.rmtree(tmp_dir)
    for split in splits:
        s = summary["splits"][split]
        logger.info(
            "split %r: %d records in %d shards, %d bad %s",
            split, s["records"], s["num_shards"], s["bad_records"], s["bad_records_by_reason"],
        )  # fmt: skip
    return summary

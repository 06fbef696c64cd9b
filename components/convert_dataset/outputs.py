"""What a conversion leaves in its output folder besides the shards: the summary (from the
per-shard statistics files), the COCO groundtruth, and the clean-up of an earlier conversion."""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from components.convert_dataset import _fs, errors, report

SUMMARY_FILE = "summary.json"
BAD_RECORDS_FILE = "bad_records.jsonl"
SUMMARY_VERSION = 1
STATS_DIR = "stats"
# Failures listed in a strict-mode error message before it says "and N more".
STRICT_LIST_LIMIT = 20


def check_output_dir(output_dir: str, overwrite: bool) -> None:
    if _fs.isdir(output_dir) and _fs.listdir(output_dir):
        if not overwrite:
            raise errors.ConversionError(
                f"output folder {output_dir} is not empty; pass overwrite=True (CLI: --overwrite) "
                "to replace its TFRecords, or choose an empty folder"
            )
    elif _fs.exists(output_dir) and not _fs.isdir(output_dir):
        raise errors.ConversionError(f"output path {output_dir} exists and is not a folder")


def remove_previous_outputs(output_dir: str) -> None:
    """Deletes what an earlier conversion wrote (summary first, so nothing looks complete)."""
    summary_path = _fs.join(output_dir, SUMMARY_FILE)
    previous: dict[str, Any] = {}
    if _fs.exists(summary_path):
        try:
            previous = json.loads(_fs.read_bytes(summary_path))
        except ValueError:
            previous = {}
    _fs.remove(summary_path)
    for relative in (previous.get("annotation_files") or {}).values():
        _fs.remove(_fs.join(output_dir, relative))
    _fs.remove(_fs.join(output_dir, BAD_RECORDS_FILE))
    for name in {*report.REPORT_FILES, *(previous.get("report") or {}).values()}:
        _fs.remove(_fs.join(output_dir, name))
    for pattern in ("*-?????-of-?????.tfrecord", "*-?????-of-?????.tfrecord.gz"):
        for path in _fs.glob(output_dir, pattern):
            _fs.remove(path)


def fingerprint(lines: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for line in sorted(lines):
        digest.update(line.encode("utf-8") + b"\n")
    return digest.hexdigest()


def summarize(
    tmp_dir: str,
    splits: Sequence[str],
    num_shards: Mapping[str, int],
    compression: str | None,
    bad: Sequence[Mapping[str, str]],
    notes: Mapping[str, Mapping[str, int]],
    histogram_key: str = "class_pixel_histogram",
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The summary, and per split the sum of its shards' record statistics (for the report)."""
    per_split: dict[str, Any] = {}
    split_stats: dict[str, dict[str, Any]] = {}
    all_lines = []
    for split in splits:
        files, per_shard, lines = [], [], []
        histogram: Counter[str] = Counter()
        split_stats[split] = {}
        for shard in range(num_shards[split]):
            stats_path = _fs.join(tmp_dir, STATS_DIR, f"{split}-{shard:05d}.json")
            if not _fs.exists(stats_path):
                raise RuntimeError(f"the pipeline finished without writing shard {stats_path}")
            stats = json.loads(_fs.read_bytes(stats_path))
            files.append(stats["file"])
            per_shard.append(len(stats["records"]))
            lines.extend(f"{key}\t{digest}" for key, digest in stats["records"])
            histogram.update(stats["class_histogram"])
            report.merge(split_stats[split], stats["report"])
        split_bad = [b for b in bad if b["split"] == split]
        per_split[split] = {
            "records": sum(per_shard),
            "bad_records": len(split_bad),
            "bad_records_by_reason": dict(sorted(Counter(b["reason"] for b in split_bad).items())),
            "shards": files,
            "records_per_shard": per_shard,
            "num_shards": num_shards[split],
            "file_pattern": f"{split}-*-of-{num_shards[split]:05d}.tfrecord"
            + (".gz" if compression else ""),
            histogram_key: dict(sorted(histogram.items(), key=lambda kv: int(kv[0]))),
            "fingerprint": fingerprint(lines),
            **notes.get(split, {}),
        }
        all_lines.extend(f"{split}/{line}" for line in lines)
    counts = set(num_shards.values())
    summary = {
        "version": SUMMARY_VERSION,
        # One figure when every split has the same count; {split: count} otherwise.
        "num_shards": counts.pop() if len(counts) == 1 else dict(num_shards),
        "compression": compression.lower() if compression else None,
        "records": sum(s["records"] for s in per_split.values()),
        "bad_records": len(bad),
        "fingerprint": fingerprint(all_lines),
        "splits": per_split,
    }
    return summary, split_stats


def write_groundtruth(
    src: Any, split_map: Mapping[str, str], bad: Sequence[Mapping[str, str]], tmp_dir: str
) -> dict[str, str]:
    """Writes each split's COCO groundtruth (what its good records hold) under `tmp_dir`.

    Args:
      split_map: {output split: the source's split}.

    Returns:
      {output split: path relative to the output folder}.
    """
    written = {}
    for split, source_split in split_map.items():
        bad_keys = {b["record_id"] for b in bad if b["split"] == split}
        dataset = src.groundtruth_dataset(source_split, exclude=bad_keys)
        relative = posixpath.join("annotations", f"instances_{split}.json")
        _fs.write_text_atomic(_fs.join(tmp_dir, relative), json.dumps(dataset) + "\n")
        written[split] = relative
    return written


def strict_error(bad: Sequence[Mapping[str, str]]) -> errors.ConversionError:
    lines = [f"  {b['split']}/{b['record_id']}: {b['reason']}: {b['path']}" for b in bad]
    if len(lines) > STRICT_LIST_LIMIT:
        lines = [*lines[:STRICT_LIST_LIMIT], f"  ... and {len(lines) - STRICT_LIST_LIMIT} more"]
    return errors.ConversionError(
        f"strict mode: {len(bad)} bad record(s); nothing was written:\n" + "\n".join(lines)
    )

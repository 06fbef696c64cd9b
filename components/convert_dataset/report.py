"""The dataset report written beside the TFRecords: `report.json`, `report.md`, `examples.png`.

Statistics are gathered without holding the dataset or re-reading it: each worker turns a loaded
record's features into a small dict of counters (`record_stats`), the shard writer adds up its
records' dicts into its statistics file, and the launcher adds up the shards' (`merge`). Every
counter is a {value: count} map of integers (image heights, box sizes in whole pixels, objects
per image, ...), so the sums are exact and the median comes out the same on any sharding. Only
the example grid reads records again: the first few of the first shards.

What the counters hold (keys present only when they apply):
  images                   records (1 per record)
  heights, widths          {pixels: images}
  images_per_class         {class id: images showing the class}
  objects_per_class        detection: {class id: objects}
  pixels_per_class         segmentation: {class id: pixels}
  objects_per_image        detection: {objects: images}
  box_sizes                detection: {floor(sqrt(box area in pixels)): boxes}
  box_area_ranges          detection: boxes per COCO area range, `small` (area < 32²),
                           `medium` (32² <= area < 96²) and `large` (area >= 96²)
"""

from __future__ import annotations

import bisect
import io
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from components.convert_dataset import _fs, tfrecord
from vision_core.dataloaders import tf_example_keys as keys
from vision_core.utils import visualization

REPORT_JSON = "report.json"
REPORT_MARKDOWN = "report.md"
EXAMPLES_PNG = "examples.png"
REPORT_FILES = (REPORT_JSON, REPORT_MARKDOWN, EXAMPLES_PNG)
REPORT_VERSION = 1

# COCO's object size ranges (pycocotools' areaRng), by box area in pixels.
SMALL_AREA = 32**2
LARGE_AREA = 96**2
# Histogram bucket lower edges; the last bucket is open-ended.
IMAGE_SIZE_EDGES = (0, 32, 64, 128, 256, 384, 512, 640, 768, 1024, 1536, 2048, 4096)
BOX_SIZE_EDGES = (0, 8, 16, 32, 64, 96, 128, 256, 512, 1024)
OBJECTS_EDGES = (0, 1, 2, 3, 4, 5, 6, 11, 21, 51, 101)
# The example grid: up to EXAMPLES_MAX records, each scaled so its longer side is EXAMPLE_TILE
# pixels, under a caption strip CAPTION_HEIGHT pixels high, EXAMPLE_COLUMNS per row.
EXAMPLES_MAX = 8
EXAMPLE_TILE = 192
EXAMPLE_COLUMNS = 4
CAPTION_HEIGHT = 14
IGNORE_LABEL = 255


def _values(value: Any) -> list[Any]:
    """The values of a feature as the sources give it: a tf.train.Feature, array, list or scalar."""
    if isinstance(value, tfrecord.Feature) or type(value).__name__ == "Feature":
        kind = value.WhichOneof("kind")
        return list(getattr(value, kind).value) if kind else []
    if isinstance(value, np.ndarray):
        return value.ravel().tolist()
    if isinstance(value, bytes | str) or not isinstance(value, Sequence):
        return [value]
    return list(value)


def _one(counter: dict[str, int], key: Any, count: int = 1) -> None:
    counter[str(key)] = counter.get(str(key), 0) + int(count)


def record_stats(features: Mapping[str, Any], class_histogram: Mapping[int, int]) -> dict:
    """The counters of one record, read from its tf.Example features (see the module docstring).

    Args:
      features: The record's feature dict (what is serialized into the TFRecord).
      class_histogram: The source's per-record histogram; for segmentation, pixels per class id.
    """
    height = int(_values(features[keys.IMAGE_HEIGHT])[0])
    width = int(_values(features[keys.IMAGE_WIDTH])[0])
    stats: dict[str, Any] = {"images": 1, "heights": {str(height): 1}, "widths": {str(width): 1}}
    per_image: dict[str, int] = {}
    if keys.OBJECT_CLASS_LABEL in features:
        labels = [int(v) for v in _values(features[keys.OBJECT_CLASS_LABEL])]
        # float32, as stored in the TFRecord, so a reader of the records gets the same sizes.
        coords = {
            k: np.asarray(_values(features[k]), np.float32).astype(np.float64)
            for k in (
                keys.OBJECT_BBOX_YMIN,
                keys.OBJECT_BBOX_XMIN,
                keys.OBJECT_BBOX_YMAX,
                keys.OBJECT_BBOX_XMAX,
            )
        }
        box_h = np.maximum(coords[keys.OBJECT_BBOX_YMAX] - coords[keys.OBJECT_BBOX_YMIN], 0)
        box_w = np.maximum(coords[keys.OBJECT_BBOX_XMAX] - coords[keys.OBJECT_BBOX_XMIN], 0)
        areas = (box_h * height) * (box_w * width)
        objects: dict[str, int] = {}
        sizes: dict[str, int] = {}
        ranges = {"small": 0, "medium": 0, "large": 0}
        for label, area in zip(labels, areas.tolist()):
            _one(objects, label)
            _one(sizes, int(math.sqrt(area)))
            ranges[
                "small" if area < SMALL_AREA else "medium" if area < LARGE_AREA else "large"
            ] += 1
        stats.update(
            objects_per_class=objects,
            objects_per_image={str(len(labels)): 1},
            box_sizes=sizes,
            box_area_ranges=ranges,
        )
        per_image = dict.fromkeys(objects, 1)
    elif keys.SEGMENTATION_CLASS_ENCODED in features:
        pixels = {str(c): int(n) for c, n in class_histogram.items() if n}
        stats["pixels_per_class"] = pixels
        per_image = dict.fromkeys(pixels, 1)
    elif keys.IMAGE_CLASS_LABEL in features:
        per_image = {str(int(_values(features[keys.IMAGE_CLASS_LABEL])[0])): 1}
    stats["images_per_class"] = per_image
    return stats


def merge(into: dict, stats: Mapping[str, Any]) -> dict:
    """Adds the counters of `stats` into `into` (nested maps added key by key); returns `into`."""
    for key, value in stats.items():
        if isinstance(value, Mapping):
            merge(into.setdefault(key, {}), value)
        else:
            into[key] = into.get(key, 0) + value
    return into


def _describe(counter: Mapping[str, int], edges: Sequence[int]) -> dict[str, Any]:
    """min / median / mean / max of a {value: count} map and its histogram over `edges`."""
    items = sorted((int(v), int(n)) for v, n in counter.items() if n)
    total = sum(n for _, n in items)
    if not total:
        return {"count": 0, "min": None, "median": None, "mean": None, "max": None, "histogram": []}

    def nth(index: int) -> int:  # The index-th smallest value (0-based).
        seen = 0
        for value, n in items:
            seen += n
            if index < seen:
                return value
        raise AssertionError("index beyond the count")

    median = (nth((total - 1) // 2) + nth(total // 2)) / 2
    counts = [0] * len(edges)
    for value, n in items:
        counts[bisect.bisect_right(edges, value) - 1] += n
    used = [i for i, n in enumerate(counts) if n]
    histogram = []
    for i in range(used[0], used[-1] + 1):
        upper = edges[i + 1] if i + 1 < len(edges) else None
        histogram.append({"from": edges[i], "to": upper, "count": counts[i]})
    return {
        "count": total,
        "min": items[0][0],
        "median": int(median) if median == int(median) else median,
        "mean": round(sum(v * n for v, n in items) / total, 3),
        "max": items[-1][0],
        "histogram": histogram,
    }


def class_names_of(summary: Mapping[str, Any]) -> list[str] | None:
    """Names by class id: the summary's `class_names`, else the shapes dataset's classes."""
    names = summary.get("class_names") or (summary.get("source_info") or {}).get("classes")
    return list(names) if names else None


def _class_name(class_id: int, names: Sequence[str] | None, task: str) -> str:
    if (
        task == "segmentation"
        and class_id == IGNORE_LABEL
        and not (names and class_id < len(names))
    ):
        return "ignore"
    return visualization.class_label(class_id, names)


def build(
    summary: Mapping[str, Any], split_stats: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """The report (what `report.json` holds) from the summary and each split's merged counters."""
    task = summary.get("task")
    names = class_names_of(summary)
    ids: set[int] = set()
    for stats in split_stats.values():
        for key in ("images_per_class", "objects_per_class", "pixels_per_class"):
            ids.update(int(c) for c in stats.get(key, {}))
    if names:
        # Detection's class 0 is 'background', which no object has.
        ids.update(range(1 if task == "detection" else 0, len(names)))
    splits = {}
    for split, info in summary["splits"].items():
        stats = split_stats.get(split, {})
        entry: dict[str, Any] = {
            "images": int(info["records"]),
            "bad_records": int(info["bad_records"]),
            "bad_records_by_reason": dict(info["bad_records_by_reason"]),
            "num_shards": int(info["num_shards"]),
        }
        classes = []
        for class_id in sorted(ids):
            row = {
                "id": class_id,
                "name": _class_name(class_id, names, task),
                "images": int(stats.get("images_per_class", {}).get(str(class_id), 0)),
            }
            if task == "detection":
                row["objects"] = int(stats.get("objects_per_class", {}).get(str(class_id), 0))
            if task == "segmentation":
                row["pixels"] = int(stats.get("pixels_per_class", {}).get(str(class_id), 0))
            classes.append(row)
        if task == "detection":
            entry["objects"] = sum(r["objects"] for r in classes)
        if task == "segmentation":
            entry["pixels"] = sum(r["pixels"] for r in classes)
        entry["classes"] = classes
        entry["image_height"] = _describe(stats.get("heights", {}), IMAGE_SIZE_EDGES)
        entry["image_width"] = _describe(stats.get("widths", {}), IMAGE_SIZE_EDGES)
        if task == "detection":
            entry["box_size"] = _describe(stats.get("box_sizes", {}), BOX_SIZE_EDGES)
            ranges = stats.get("box_area_ranges", {})
            entry["box_size"]["coco_area_ranges"] = {
                r: int(ranges.get(r, 0)) for r in ("small", "medium", "large")
            }
            per_image = dict(stats.get("objects_per_image", {}))
            # A source may leave the object keys out of an image without objects.
            unseen = int(stats.get("images", 0)) - sum(per_image.values())
            if unseen > 0:
                per_image["0"] = per_image.get("0", 0) + unseen
            entry["objects_per_image"] = _describe(per_image, OBJECTS_EDGES)
        splits[split] = entry
    return {
        "version": REPORT_VERSION,
        "task": task,
        "source": summary.get("source"),
        "records": int(summary["records"]),
        "bad_records": int(summary["bad_records"]),
        "fingerprint": summary.get("fingerprint"),
        "class_names": names,
        "splits": splits,
    }


def _bucket_label(bucket: Mapping[str, Any]) -> str:
    low, high = bucket["from"], bucket["to"]
    if high is None:
        return f"≥ {low}"
    return str(low) if high == low + 1 else f"{low}–{high - 1}"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """A Markdown table; the first column left-aligned, the others (figures) right-aligned."""
    lines = ["| " + " | ".join(header) + " |", "|---" + "|--:" * (len(header) - 1) + "|"]
    # A '|' in a class name would end its cell.
    cells = [["–" if v is None else str(v).replace("|", "\\|") for v in row] for row in rows]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return [*lines, ""]


def _histogram_table(
    title: str, columns: Mapping[str, Mapping[str, Any]], edges: Sequence[int]
) -> list[str]:
    """One row per bucket any column uses, one column per described counter."""
    counts: dict[int, dict[str, int]] = {}
    for name, described in columns.items():
        for bucket in described["histogram"]:
            counts.setdefault(bucket["from"], {})[name] = bucket["count"]
    rows = []
    for i, low in enumerate(edges):
        if low in counts:
            high = edges[i + 1] if i + 1 < len(edges) else None
            label = _bucket_label({"from": low, "to": high})
            rows.append([label, *(counts[low].get(name, 0) for name in columns)])
    return _table([title, *columns], rows) if rows else ["No data.", ""]


def markdown(report: Mapping[str, Any]) -> str:
    """`report.md`: the report as headings and tables."""
    task, splits = report["task"], report["splits"]
    out = [
        "# Dataset report",
        "",
        f"Task **{task}**, source `{report['source']}`: {report['records']} records written, "
        f"{report['bad_records']} bad. Fingerprint `{report['fingerprint']}`.",
        "",
        "## Splits",
        "",
    ]
    header = ["split", "images"]
    header += ["objects"] if task == "detection" else ["pixels"] if task == "segmentation" else []
    header += ["bad records", "shards"]
    rows = []
    for split, s in splits.items():
        extra = [s["objects"]] if task == "detection" else []
        extra += [s["pixels"]] if task == "segmentation" else []
        rows.append([split, s["images"], *extra, s["bad_records"], s["num_shards"]])
    out += _table(header, rows)

    out += ["## Classes", ""]
    measures = {"detection": ["images", "objects"], "segmentation": ["images", "pixels"]}
    measures_of_task = measures.get(task, ["images"])
    header = ["id", "class"] + [f"{s} {m}" for s in splits for m in measures_of_task]
    first = next(iter(splits.values()), {"classes": []})
    rows = []
    for i, row in enumerate(first["classes"]):
        cells = [splits[s]["classes"][i][m] for s in splits for m in measures_of_task]
        rows.append([row["id"], row["name"], *cells])
    if task == "segmentation":
        out += ["Pixels of each class, and images showing it (255 = ignore).", ""]
    out += _table(header, rows) if rows else ["No classes.", ""]

    out += ["## Image sizes", ""]
    rows = []
    for split, s in splits.items():
        h, w = s["image_height"], s["image_width"]
        rows.append([split, *(d[k] for d in (h, w) for k in ("min", "median", "max"))])
    header = ["split", *(f"{d} {k}" for d in ("height", "width") for k in ("min", "median", "max"))]
    out += _table(header, rows)
    columns = {
        f"{split} {dim}s": s[f"image_{dim}"]
        for split, s in splits.items()
        for dim in ("height", "width")
    }
    out += _histogram_table("pixels", columns, IMAGE_SIZE_EDGES)

    if task == "detection":
        out += ["## Box sizes", "", "√(box area) in pixels; COCO ranges by area.", ""]
        rows = []
        for split, s in splits.items():
            b, r = s["box_size"], s["box_size"]["coco_area_ranges"]
            rows.append(
                [split, b["min"], b["median"], b["max"], r["small"], r["medium"], r["large"]]
            )
        header = [
            "split",
            "min",
            "median",
            "max",
            "small (< 32²)",
            "medium (32²–96²)",
            "large (≥ 96²)",
        ]
        out += _table(header, rows)
        columns = {split: s["box_size"] for split, s in splits.items()}
        out += _histogram_table("√area", columns, BOX_SIZE_EDGES)
        out += ["## Objects per image", ""]
        rows = []
        for split, s in splits.items():
            o = s["objects_per_image"]
            rows.append([split, o["min"], o["median"], o["mean"], o["max"]])
        out += _table(["split", "min", "median", "mean", "max"], rows)
        columns = {split: s["objects_per_image"] for split, s in splits.items()}
        out += _histogram_table("objects", columns, OBJECTS_EDGES)

    out += ["## Bad records", ""]
    rows = [
        [split, reason, count]
        for split, s in splits.items()
        for reason, count in s["bad_records_by_reason"].items()
    ]
    out += _table(["split", "reason", "count"], rows) if rows else ["None.", ""]
    if report.get("examples"):
        shown = report["examples"]["records"]
        out += [
            "## Examples",
            "",
            f"The first {len(shown)} records of `{shown[0]['file']}`"
            + (" and the next shards" if len({r["file"] for r in shown}) > 1 else "")
            + ".",
            "",
            f"![examples]({report['examples']['file']})",
            "",
        ]
    return "\n".join(out)


def _first_records(
    tmp_dir: str, summary: Mapping[str, Any], limit: int
) -> list[tuple[str, str, bytes]]:
    """(split, shard file, serialized example) of the first `limit` records, in split, shard and
    key order (the first shard of the first split, then the next shards when it holds fewer)."""
    compression = "GZIP" if summary.get("compression") else ""
    found: list[tuple[str, str, bytes]] = []
    for split, info in summary["splits"].items():
        for name in info["shards"]:
            if len(found) >= limit:
                return found
            # A local copy on gs://: TensorFlow's own gs:// access bypasses Beam's filesystems.
            with _fs.local_copy(_fs.join(tmp_dir, name)) as local_path:
                records = tfrecord.read_records(local_path, compression or None)
                found += [(split, name, r) for r in itertools.islice(records, limit - len(found))]
    return found


def _decode(data: bytes, mode: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert(mode))


def _caption(text: str, width: int) -> np.ndarray:
    strip = Image.new("RGB", (width, CAPTION_HEIGHT), (0, 0, 0))
    # The default bitmap font is about 6 pixels a character.
    limit = max(1, width // 6)
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    ImageDraw.Draw(strip).text((2, 1), text, fill=(255, 255, 255))
    return np.asarray(strip)


def example_tile(
    serialized: bytes, task: str | None, class_names: Sequence[str] | None
) -> np.ndarray:
    """One record drawn for the grid: boxes and class names (detection), the mask over the image
    (segmentation) or the class name (classification) under a caption."""
    feature = tfrecord.Example.FromString(serialized).features.feature
    image = _decode(feature[keys.IMAGE_ENCODED].bytes_list.value[0], "RGB")
    height, width = image.shape[:2]
    scale = EXAMPLE_TILE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    # Nearest when enlarging keeps small images' pixels sharp.
    resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.BILINEAR
    tile = np.asarray(Image.fromarray(image).resize(size, resample))
    name_key = keys.IMAGE_FILENAME if keys.IMAGE_FILENAME in feature else keys.IMAGE_SOURCE_ID
    caption = feature[name_key].bytes_list.value[0].decode("utf-8", "replace")
    if task == "detection":
        labels = list(feature[keys.OBJECT_CLASS_LABEL].int64_list.value)
        boxes = np.stack(
            [
                np.asarray(feature[k].float_list.value, np.float64) * s
                for k, s in (
                    (keys.OBJECT_BBOX_YMIN, size[1]),
                    (keys.OBJECT_BBOX_XMIN, size[0]),
                    (keys.OBJECT_BBOX_YMAX, size[1]),
                    (keys.OBJECT_BBOX_XMAX, size[0]),
                )
            ],
            axis=-1,
        ).reshape(-1, 4)
        tile = visualization.draw_boxes(tile, boxes, np.asarray(labels), class_names=class_names)
        caption += f" ({len(labels)} objects)"
    elif task == "segmentation" and keys.SEGMENTATION_CLASS_ENCODED in feature:
        mask = Image.fromarray(
            _decode(feature[keys.SEGMENTATION_CLASS_ENCODED].bytes_list.value[0], "L")
        ).resize(size, Image.Resampling.NEAREST)
        mask = np.asarray(mask).astype(np.int64)
        present = [c for c in np.unique(mask).tolist() if c not in (0, IGNORE_LABEL)]
        mask[mask == IGNORE_LABEL] = 0  # Left clear, like the background.
        tile = visualization.overlay_mask(tile, mask)
        caption += ": " + (", ".join(_class_name(c, class_names, task) for c in present) or "-")
    elif keys.IMAGE_CLASS_LABEL in feature:
        label = int(feature[keys.IMAGE_CLASS_LABEL].int64_list.value[0])
        text = (
            feature[keys.IMAGE_CLASS_TEXT].bytes_list.value
            if keys.IMAGE_CLASS_TEXT in feature
            else []
        )
        caption = (
            text[0].decode("utf-8", "replace") if text else _class_name(label, class_names, task)
        )
    return np.concatenate([_caption(caption, tile.shape[1]), tile[..., :3]], axis=0)


def write(
    tmp_dir: str,
    summary: Mapping[str, Any],
    split_stats: Mapping[str, Mapping[str, Any]],
) -> dict[str, str]:
    """Writes the report files into `tmp_dir` (where the shards still are).

    Returns:
      {'json': ..., 'markdown': ..., 'examples': ...} file names relative to the output folder
      (`examples` only when some record was written).
    """
    report = build(summary, split_stats)
    files = {"json": REPORT_JSON, "markdown": REPORT_MARKDOWN}
    records = _first_records(tmp_dir, summary, EXAMPLES_MAX)
    if records:
        names = report["class_names"]
        tiles = [example_tile(data, report["task"], names) for _, _, data in records]
        png = visualization.png_bytes(visualization.grid(tiles, columns=EXAMPLE_COLUMNS))
        _fs.write_bytes_atomic(_fs.join(tmp_dir, EXAMPLES_PNG), png)
        files["examples"] = EXAMPLES_PNG
        report["examples"] = {
            "file": EXAMPLES_PNG,
            "records": [
                {
                    "split": split,
                    "file": name,
                    "source_id": tfrecord.Example.FromString(data)
                    .features.feature[keys.IMAGE_SOURCE_ID]
                    .bytes_list.value[0]
                    .decode("utf-8", "replace"),
                }
                for split, name, data in records
            ],
        }
    report["files"] = dict(files)
    _fs.write_text_atomic(
        _fs.join(tmp_dir, REPORT_JSON), json.dumps(report, indent=2, ensure_ascii=False) + "\n"
    )
    _fs.write_text_atomic(_fs.join(tmp_dir, REPORT_MARKDOWN), markdown(report))
    return files

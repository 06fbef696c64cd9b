"""The dataset report (report.json / report.md / examples.png) and the progress display.

Every figure of report.json is recomputed here from the written TFRecords (decoded) and the
summary; the progress counts are checked against the records written.
"""

import io
import json
import logging
import os
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from components.convert_dataset import __main__ as cli
from components.convert_dataset import pipeline, progress, report
from vision_core.dataloaders import tf_example_keys as keys

HEIGHT, WIDTH = 48, 40
NUM_TRAIN, NUM_VALIDATION = 6, 3
SHAPES = {
    "num_train": NUM_TRAIN,
    "num_validation": NUM_VALIDATION,
    "image_size": (HEIGHT, WIDTH),
    "seed": 7,
    "max_objects": 5,
}
REPORT_NAMES = {"report.json", "report.md", "examples.png"}


def _convert(out, task, **kwargs):
    states = []
    summary = pipeline.run(
        None,
        str(out),
        source="shapes",
        task=task,
        num_shards=2,
        shapes_options=SHAPES,
        progress=states.append,
        **kwargs,
    )
    return summary, states


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """{task: (output folder, summary, progress states)}; segmentation on two threads."""
    runs = {}
    for task in ("detection", "segmentation", "classification"):
        out = tmp_path_factory.mktemp(task)
        extra = {}
        if task == "segmentation":
            extra = {"direct_running_mode": "multi_threading", "direct_num_workers": 2}
        runs[task] = (out, *_convert(out, task, **extra))
    return runs


def _examples(out, summary):
    """{split: [tf.train.Example feature maps]} in split, shard and record order."""
    found = {}
    for split, info in summary["splits"].items():
        found[split] = [
            tf.train.Example.FromString(r.numpy()).features.feature
            for name in info["shards"]
            for r in tf.data.TFRecordDataset(str(out / name))
        ]
    return found


def _floats(feature, key):
    return np.asarray(feature[key].float_list.value, np.float32).astype(np.float64)


def _described(values, edges):
    """What report.json should say about these values: min, median, max and the histogram."""
    values = np.asarray(values)
    bucket = np.searchsorted(np.asarray(edges), values, side="right") - 1
    used = range(bucket.min(), bucket.max() + 1)
    histogram = [
        {
            "from": edges[i],
            "to": edges[i + 1] if i + 1 < len(edges) else None,
            "count": int((bucket == i).sum()),
        }
        for i in used
    ]
    return {
        "count": len(values),
        "min": int(values.min()),
        "median": float(np.median(values)),
        "max": int(values.max()),
        "histogram": histogram,
    }


def _check_described(actual, values, edges):
    expected = _described(values, edges)
    assert actual["median"] == expected.pop("median")
    assert actual["mean"] == pytest.approx(np.mean(values), abs=1e-3)
    assert {k: actual[k] for k in expected} == expected


def _report(out):
    return json.loads((out / "report.json").read_text())


def _check_common(out, summary, states, task):
    got = _report(out)
    assert summary["report"] == {
        "json": "report.json",
        "markdown": "report.md",
        "examples": "examples.png",
    }
    assert got["task"] == task
    assert (got["records"], got["bad_records"]) == (summary["records"], summary["bad_records"])
    for split, records in _examples(out, summary).items():
        s = got["splits"][split]
        assert s["images"] == len(records) == summary["splits"][split]["records"]
        assert s["bad_records_by_reason"] == summary["splits"][split]["bad_records_by_reason"]
        heights = [r[keys.IMAGE_HEIGHT].int64_list.value[0] for r in records]
        widths = [r[keys.IMAGE_WIDTH].int64_list.value[0] for r in records]
        assert set(heights) == {HEIGHT} and set(widths) == {WIDTH}
        _check_described(s["image_height"], heights, report.IMAGE_SIZE_EDGES)
        _check_described(s["image_width"], widths, report.IMAGE_SIZE_EDGES)
    # Progress: every listed record was counted once, by the workers' files.
    final = states[-1]
    assert final.final and not any(s.final for s in states[:-1])
    assert final.total == final.done == summary["records"] + summary["bad_records"]
    assert final.bad == summary["bad_records"]
    assert [s.done for s in states] == sorted(s.done for s in states)
    # Nothing but the outputs: no progress files, statistics or temporary folders.
    names = set(os.listdir(out))
    shards = {n for s in summary["splits"].values() for n in s["shards"]}
    expected = shards | REPORT_NAMES | {"summary.json", "bad_records.jsonl"}
    assert names - {"annotations"} == expected
    return got


def test_detection_report_matches_the_records(converted):
    out, summary, states = converted["detection"]
    got = _check_common(out, summary, states, "detection")
    names = summary["class_names"]
    assert got["class_names"] == names
    for split, records in _examples(out, summary).items():
        s = got["splits"][split]
        labels = [list(r[keys.OBJECT_CLASS_LABEL].int64_list.value) for r in records]
        objects = {c: sum(ls.count(c) for ls in labels) for c in range(1, len(names))}
        images = {c: sum(c in ls for ls in labels) for c in range(1, len(names))}
        assert s["classes"] == [
            {"id": c, "name": names[c], "images": images[c], "objects": objects[c]}
            for c in range(1, len(names))
        ]
        assert s["objects"] == sum(map(len, labels))
        histogram = summary["splits"][split]["class_histogram"]
        assert {str(c): n for c, n in objects.items() if n} == histogram
        _check_described(s["objects_per_image"], [len(ls) for ls in labels], report.OBJECTS_EDGES)
        areas = np.concatenate(
            [
                ((_floats(r, keys.OBJECT_BBOX_YMAX) - _floats(r, keys.OBJECT_BBOX_YMIN)) * HEIGHT)
                * ((_floats(r, keys.OBJECT_BBOX_XMAX) - _floats(r, keys.OBJECT_BBOX_XMIN)) * WIDTH)
                for r in records
            ]
        )
        sizes = np.floor(np.sqrt(areas)).astype(int)
        _check_described(s["box_size"], sizes, report.BOX_SIZE_EDGES)
        assert s["box_size"]["coco_area_ranges"] == {
            "small": int((areas < 32**2).sum()),
            "medium": int(((areas >= 32**2) & (areas < 96**2)).sum()),
            "large": int((areas >= 96**2).sum()),
        }
    markdown = (out / "report.md").read_text()
    assert "| split | images | objects | bad records | shards |" in markdown
    train = got["splits"]["train"]
    assert f"| train | {NUM_TRAIN} | {train['objects']} | 0 | 2 |" in markdown
    for name in names[1:]:
        assert f"| {name} |" in markdown
    assert "## Box sizes" in markdown and "## Objects per image" in markdown


def test_segmentation_report_matches_the_records(converted):
    out, summary, states = converted["segmentation"]
    got = _check_common(out, summary, states, "segmentation")
    # No class_names in a segmentation summary: the shapes dataset's classes name the ids.
    names = summary["source_info"]["classes"]
    assert got["class_names"] == names
    for split, records in _examples(out, summary).items():
        masks = [
            np.asarray(
                Image.open(io.BytesIO(r[keys.SEGMENTATION_CLASS_ENCODED].bytes_list.value[0]))
            )
            for r in records
        ]
        pixels = np.bincount(np.concatenate([m.ravel() for m in masks]), minlength=256)
        images = [sum(bool((m == c).any()) for m in masks) for c in range(256)]
        ids = sorted(set(range(len(names))) | {c for c in range(256) if pixels[c]})
        s = got["splits"][split]
        assert s["classes"] == [
            {
                "id": c,
                "name": names[c] if c < len(names) else "ignore",
                "images": images[c],
                "pixels": int(pixels[c]),
            }
            for c in ids
        ]
        assert s["pixels"] == len(records) * HEIGHT * WIDTH
        assert summary["splits"][split]["class_pixel_histogram"] == {
            str(c): int(pixels[c]) for c in ids if pixels[c]
        }
        assert "box_size" not in s and "objects_per_image" not in s
    markdown = (out / "report.md").read_text()
    assert "| split | images | pixels | bad records | shards |" in markdown
    assert "| id | class | train images | train pixels | validation images |" in markdown


def test_classification_report_matches_the_records(converted):
    out, summary, states = converted["classification"]
    got = _check_common(out, summary, states, "classification")
    names = summary["class_names"]
    for split, records in _examples(out, summary).items():
        labels = [r[keys.IMAGE_CLASS_LABEL].int64_list.value[0] for r in records]
        assert got["splits"][split]["classes"] == [
            {"id": c, "name": name, "images": labels.count(c)} for c, name in enumerate(names)
        ]
        histogram = summary["splits"][split]["class_histogram"]
        assert {str(c): n for c in range(len(names)) if (n := labels.count(c))} == histogram


def test_example_grid_shows_the_first_records(converted):
    grids = {}
    for task, (out, summary, _) in converted.items():
        image = Image.open(out / "examples.png")
        image.verify()  # A complete, valid PNG.
        image = Image.open(out / "examples.png")
        assert image.format == "PNG" and image.mode == "RGB"
        shown = _report(out)["examples"]["records"]
        first = [
            (split, r[keys.IMAGE_SOURCE_ID].bytes_list.value[0].decode())
            for split, records in _examples(out, summary).items()
            for r in records
        ][: report.EXAMPLES_MAX]
        assert [(r["split"], r["source_id"]) for r in shown] == first
        assert shown[0]["file"] == summary["splits"]["train"]["shards"][0]
        # Tiles: the longer side scaled to EXAMPLE_TILE, under a caption; grid pad 4.
        tile_h = report.EXAMPLE_TILE + report.CAPTION_HEIGHT
        tile_w = round(WIDTH * report.EXAMPLE_TILE / HEIGHT)
        columns = min(report.EXAMPLE_COLUMNS, len(first))
        rows = -(-len(first) // columns)
        assert image.size == (columns * (tile_w + 4) + 4, rows * (tile_h + 4) + 4)
        grids[task] = np.asarray(image)
    assert not np.array_equal(grids["detection"], grids["segmentation"])
    assert not np.array_equal(grids["detection"], grids["classification"])
    assert not np.array_equal(grids["segmentation"], grids["classification"])


def _all_bad_source(root):
    """A folders dataset whose every image lacks its mask."""
    for split in ("train", "validation"):
        os.makedirs(root / "images" / split)
        os.makedirs(root / "masks" / split)
        Image.new("RGB", (8, 6)).save(root / "images" / split / "a.png")
    return root


def test_overwrite_replaces_the_report_and_bad_records_are_reported(converted, tmp_path):
    out = tmp_path / "out"
    _convert(out, "classification")
    assert set(os.listdir(out)) >= REPORT_NAMES
    states = []
    summary = pipeline.run(
        str(_all_bad_source(tmp_path / "src")), str(out), overwrite=True, progress=states.append
    )
    # No record to show: the earlier examples.png went with the rest of the earlier output.
    assert summary["report"] == {"json": "report.json", "markdown": "report.md"}
    assert "examples.png" not in os.listdir(out)
    got = _report(out)
    assert got["records"] == 0 and got["bad_records"] == 2
    assert got["splits"]["train"]["bad_records_by_reason"] == {"mask_missing": 1}
    assert got["splits"]["train"]["image_height"]["min"] is None
    assert (states[-1].done, states[-1].bad) == (2, 2)
    markdown = (out / "report.md").read_text()
    assert "| train | mask_missing | 1 |" in markdown
    assert "## Examples" not in markdown


def test_cli_shows_progress_unless_told_not_to(tmp_path, caplog, capsys):
    # Restores the level the command sets (INFO, so its progress lines show) afterwards.
    caplog.set_level(logging.NOTSET, logger=progress.__name__)
    args = ["shapes", "--num-train", "2", "--num-validation", "1", "--image-size", "32"]
    assert cli.main([*args, "--output", str(tmp_path / "a")]) == 0
    lines = [r.getMessage() for r in caplog.records if r.name == progress.__name__]
    assert lines and lines[-1].startswith("loaded 3/3 records (0 bad)")
    printed = capsys.readouterr().out
    assert f"Dataset report: {tmp_path / 'a'}/report.json, {tmp_path / 'a'}/report.md" in printed
    caplog.clear()
    assert cli.main([*args, "--output", str(tmp_path / "b"), "--no-progress"]) == 0
    assert not [r for r in caplog.records if r.name == progress.__name__]


def test_progress_files_are_summed_and_temporary_files_skipped(tmp_path):
    folder = str(tmp_path)
    first, second = progress.ProgressWriter(folder), progress.ProgressWriter(folder)
    for _ in range(3):
        first.count()
    first.count(bad=True)
    second.count()
    assert progress.read_counts(folder) == (0, 0)  # Nothing flushed yet (under a second).
    first.flush()
    second.flush()
    (tmp_path / ".tmp-x.json-123").write_text('{"done": 100, "bad": 100}')
    assert progress.read_counts(folder) == (5, 1)
    assert progress.read_counts(str(tmp_path / "missing")) == (0, 0)
    states = []
    with progress.ProgressMonitor(folder, 9, states.append, interval=60):
        pass
    assert [(s.done, s.bad, s.total, s.final) for s in states] == [(5, 1, 9, True)]


def test_displays(monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger=progress.__name__)
    display = progress.LogDisplay(interval=10)
    for elapsed, final in ((1, False), (5, False), (11, False), (12, True)):
        display(progress.ProgressState(done=elapsed, bad=1, total=12, elapsed=elapsed, final=final))
    assert [r.getMessage().split(",")[0] for r in caplog.records] == [
        "loading 11/12 records (1 bad)",
        "loaded 12/12 records (1 bad)",
    ]

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    bar = progress.default_display()
    assert isinstance(bar, progress.TqdmDisplay)
    bar(progress.ProgressState(done=4, bad=1, total=8, elapsed=1.0))
    bar(progress.ProgressState(done=8, bad=2, total=8, elapsed=2.0, final=True))
    shown = terminal.getvalue()
    assert "8/8" in shown and "bad=2" in shown
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert isinstance(progress.default_display(), progress.LogDisplay)


def test_record_statistics_add_up_exactly_over_shards():
    features = {
        keys.IMAGE_HEIGHT: 100,
        keys.IMAGE_WIDTH: 200,
        # Plain lists, as a source may give them: boxes of 20x40, 40x100 and 100x200 pixels.
        keys.OBJECT_BBOX_YMIN: [0.1, 0.0, 0.0],
        keys.OBJECT_BBOX_XMIN: [0.0, 0.5, 0.0],
        keys.OBJECT_BBOX_YMAX: [0.3, 0.4, 1.0],
        keys.OBJECT_BBOX_XMAX: [0.2, 1.0, 1.0],
        keys.OBJECT_CLASS_LABEL: [2, 2, 1],
    }
    one = report.record_stats(features, {})
    assert one["box_sizes"] == {"28": 1, "63": 1, "141": 1}  # floor(sqrt(800 | 4000 | 20000))
    assert one["box_area_ranges"] == {"small": 1, "medium": 1, "large": 1}
    assert one["objects_per_class"] == {"2": 2, "1": 1}
    assert one["images_per_class"] == {"2": 1, "1": 1}
    shard_a = report.merge({}, one)
    shard_b = report.merge({}, report.record_stats({**features, keys.IMAGE_HEIGHT: 50}, {}))
    split = report.merge(report.merge({}, shard_a), shard_b)
    assert split["heights"] == {"100": 1, "50": 1}
    assert split["objects_per_class"] == {"2": 4, "1": 2}
    # An image whose source left the object keys out counts as one without objects.
    split = report.merge(
        split, report.record_stats({k: features[k] for k in list(features)[:2]}, {})
    )
    summary = {
        "task": "detection",
        "records": 3,
        "bad_records": 0,
        "class_names": ["background", "cat", "dog"],
        "splits": {
            "train": {"records": 3, "bad_records": 0, "bad_records_by_reason": {}, "num_shards": 2}
        },
    }
    train = report.build(summary, {"train": split})["splits"]["train"]
    assert train["objects_per_image"]["min"] == 0
    assert train["objects_per_image"]["median"] == 3
    assert train["image_height"]["median"] == 100
    assert [(c["name"], c["images"], c["objects"]) for c in train["classes"]] == [
        ("cat", 2, 2),
        ("dog", 2, 4),
    ]


def test_a_record_the_runner_loses_fails_the_conversion(monkeypatch, tmp_path):
    # Written + bad must account for every listed record (Beam's multi_threading workers were
    # seen dropping elements); here the shard writer drops one.
    write = pipeline._WriteShardDoFn.process

    def drop_first(self, line):
        item = json.loads(line)
        if (item["split"], item["shard"]) == ("train", 0):
            path = item["refs_file"]
            with open(path) as f:
                lines = f.readlines()
            with open(path, "w") as f:
                f.writelines(lines[1:])
        return write(self, line)

    monkeypatch.setattr(pipeline._WriteShardDoFn, "process", drop_first)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="lost 1 of 9 records"):
        _convert(out, "classification")
    assert not out.exists() or os.listdir(out) == []


def test_local_grpc_workers_flush_by_size_only():
    from apache_beam.runners.portability.fn_api_runner import worker_handlers

    runner, options = pipeline._pipeline_runner_and_options([], "multi_threading", 2)
    # No timed flush of the data streams, whose race loses elements (see runners.py).
    assert worker_handlers.DATA_BUFFER_TIME_LIMIT_MS == 0
    assert options.get_all_options()["direct_running_mode"] == "multi_threading"
    assert options.get_all_options()["direct_num_workers"] == 2

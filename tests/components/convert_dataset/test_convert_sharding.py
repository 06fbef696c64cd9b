"""Shard counts from a target shard size (`--target-shard-size`)."""

import json
import math
import os

import pytest

from components.convert_dataset import __main__ as cli
from components.convert_dataset import errors, pipeline, shapes
from components.convert_dataset.records import RecordRef
from components.convert_dataset.sharding import parse_byte_size, shards_for_target_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1000000", 1_000_000),
        ("200MB", 200_000_000),
        ("200mb", 200_000_000),
        ("1.5GiB", int(1.5 * 2**30)),
        ("64k", 64_000),
        ("512 KiB", 512 * 1024),
    ],
)
def test_parse_byte_size(text, expected):
    assert parse_byte_size(text) == expected


@pytest.mark.parametrize("text", ["", "MB", "-5MB", "12 apples", "0"])
def test_parse_byte_size_rejects_non_sizes(text):
    with pytest.raises(ValueError, match="expected a"):
        parse_byte_size(text)


def test_shard_count_is_input_bytes_over_target(tmp_path):
    files = []
    for i, size in enumerate([1000, 2500, 700]):
        path = tmp_path / f"f{i}"
        path.write_bytes(b"x" * size)
        files.append(str(path))
    refs = [
        RecordRef("train", "a", {"image": files[0], "mask": files[1], "image_id": "7"}),
        # The same file twice counts once; ids and class names are not files.
        RecordRef("train", "b", {"image": files[2], "class": "f0", "also": files[0]}),
        RecordRef("train", "c", {"image": str(tmp_path / "missing")}),
    ]
    assert shards_for_target_size(refs, 1000) == math.ceil(4200 / 1000)
    assert shards_for_target_size(refs, 10**9) == 1
    assert shards_for_target_size([], 1000) == 1


def test_each_split_gets_shards_for_its_size(tmp_path):
    source = tmp_path / "src"
    shapes.generate_shapes_dataset(
        str(source), num_train=12, num_validation=3, image_size=(48, 48), seed=2
    )
    sizes = {}
    for split in ("train", "validation"):
        folders = [source / "images" / split, source / "masks" / split]
        sizes[split] = sum(f.stat().st_size for d in folders for f in d.iterdir())
    target = sizes["train"] // 3 + 1
    out = tmp_path / "out"
    argv = ["folders", "--source-dir", str(source), "--output", str(out),
            "--target-shard-size", str(target)]  # fmt: skip
    assert cli.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    expected = {split: math.ceil(sizes[split] / target) for split in sizes}
    assert expected == {"train": 3, "validation": 1}
    assert summary["num_shards"] == expected
    for split, count in expected.items():
        names = sorted(n for n in os.listdir(out) if n.startswith(f"{split}-"))
        assert names == [f"{split}-{i:05d}-of-{count:05d}.tfrecord" for i in range(count)]
        assert summary["splits"][split]["num_shards"] == count
    # Shards hold the files' bytes plus a little framing: close to the target.
    shard_bytes = [(out / n).stat().st_size for n in summary["splits"]["train"]["shards"]]
    assert max(shard_bytes) < 1.5 * target

    with pytest.raises(errors.ConversionError, match="target_shard_bytes must be a positive"):
        pipeline.run(str(source), str(tmp_path / "o2"), target_shard_bytes=0)
    assert cli.main([*argv[:4], str(tmp_path / "o3"), "--target-shard-size", "lots"]) == 1

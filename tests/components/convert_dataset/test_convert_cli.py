"""`python -m components.convert_dataset`: argument handling, output and error exits."""

import json
import subprocess
import sys

import convert_support
import pytest

from components.convert_dataset import __main__ as cli


def test_shapes_end_to_end(tmp_path, capsys):
    out = tmp_path / "out"
    code = cli.main(
        [
            "--source", "shapes", "--num-train", "3", "--num-validation", "2",
            "--image-size", "32x40", "--seed", "1", "--output", str(out), "--num-shards", "2",
        ]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "Wrote 5 records" in printed
    assert "train: 3 records in 2 shards" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["source_info"]["image_size"] == [32, 40]
    assert (out / "validation-00001-of-00002.tfrecord").exists()


def test_unknown_flags_go_to_beam(monkeypatch, capsys):
    seen = convert_support.capture_run(monkeypatch)
    code = cli.main(
        [
            "--source-dir", "d", "--output", "o", "--compression", "gzip", "--strict",
            "--runner", "DataflowRunner", "--project", "p", "--temp_location=gs://b/tmp",
            "--num_workers=3",
        ]
    )  # fmt: skip
    assert code == 0
    assert seen["beam_args"] == [
        "--runner", "DataflowRunner", "--project", "p", "--temp_location=gs://b/tmp",
        "--num_workers=3",
    ]  # fmt: skip
    assert seen["compression"] == "gzip"
    assert seen["strict"] is True
    assert seen["num_shards"] == 4
    assert seen["splits"] == ["train", "validation"]


def test_bad_input_exits_non_zero_with_a_message(tmp_path):
    # A real process: the exit status and the absence of a traceback are what a user sees.
    result = subprocess.run(
        [
            sys.executable, "-m", "components.convert_dataset", "--source", "folders",
            "--source-dir", str(tmp_path / "missing"), "--output", str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert f"error: source folder {tmp_path / 'missing'} does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_strict_failure_lists_records(tmp_path, capsys):
    (tmp_path / "src/images/train").mkdir(parents=True)
    (tmp_path / "src/images/train/a.png").write_bytes(b"not a png")
    code = cli.main(
        [
            "--source-dir", str(tmp_path / "src"), "--output", str(tmp_path / "out"),
            "--splits", "train", "--strict",
        ]
    )  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err
    assert "strict mode: 1 bad record" in err
    # The missing mask is found while listing, before the image is read.
    assert "train/a: mask_missing" in err


@pytest.mark.parametrize("size", ["0", "12x", "axb"])
def test_bad_image_size_is_an_argument_error(size, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--source", "shapes", "--output", "o", "--image-size", size])
    assert info.value.code == 2
    assert "HEIGHTxWIDTH" in capsys.readouterr().err

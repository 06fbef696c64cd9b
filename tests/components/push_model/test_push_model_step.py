"""The push step: a new version per call, the alias moved only when promoting."""

import json
import os

import pytest

from components.push_model import run
from components.registry import open_registry


@pytest.fixture
def inputs(tmp_path):
    sm = tmp_path / "export" / "saved_model"
    (sm / "variables").mkdir(parents=True)
    (sm / "saved_model.pb").write_bytes(b"graph-bytes")
    (sm / "variables" / "variables.index").write_bytes(b"index")
    config = tmp_path / "experiment.yaml"
    config.write_text("task:\n  model:\n    num_classes: 2\n")
    return {
        "saved_model_dir": str(sm),
        "registry_uri": "file://" + str(tmp_path / "registry"),
        "model_name": "seg",
        "config_path": str(config),
        "lineage": {"dataset_fingerprint": "fp-1", "parent_run": "run-7"},
    }


def test_push_then_promote_moves_the_champion(inputs, tmp_path):
    first = run(metrics={"mean_iou": 0.7}, **inputs)
    root = str(tmp_path / "registry")
    assert first == {
        "version": 1,
        "uri": os.path.join(root, "seg", "versions", "1"),
        "alias_moved": True,
    }
    second = run(metrics={"mean_iou": 0.8}, **inputs)
    assert second["version"] == 2 and second["alias_moved"]
    registry = open_registry(root)
    assert registry.get_alias("seg", "champion") == 2
    record = registry.get_version("seg", 2)
    assert record.metrics == {"mean_iou": 0.8}
    assert record.lineage["dataset_fingerprint"] == "fp-1"
    assert record.lineage["parent_run"] == "run-7"
    with open(os.path.join(second["uri"], "config.yaml")) as f:
        assert f.read() == "task:\n  model:\n    num_classes: 2\n"
    registry.verify("seg", 2)


def test_without_promote_the_alias_stays(inputs, tmp_path):
    run(metrics={"mean_iou": 0.7}, **inputs)
    out = run(metrics={"mean_iou": 0.6}, promote=False, **inputs)
    assert out["version"] == 2 and out["alias_moved"] is False
    with open(tmp_path / "registry" / "seg" / "aliases.json") as f:
        assert json.load(f) == {"champion": 1}


def test_custom_alias(inputs):
    run(metrics={"mean_iou": 0.7}, alias="candidate", **inputs)
    registry = open_registry(inputs["registry_uri"])
    assert registry.aliases("seg") == {"candidate": 1}


def test_a_bad_alias_is_refused_before_anything_is_pushed(inputs, tmp_path):
    with pytest.raises(ValueError, match="alias '7'"):
        run(metrics={"mean_iou": 0.7}, alias="7", **inputs)
    assert not os.path.exists(tmp_path / "registry")


def test_unimplemented_backends_say_so(inputs, monkeypatch):
    from components.registry import factory

    # No scheme is planned at the moment; the step's behaviour is tested with a made-up entry.
    monkeypatch.setitem(factory._PLANNED, "s3", "an S3 bucket, s3://bucket/prefix")
    inputs["registry_uri"] = "s3://bucket/registry"
    with pytest.raises(NotImplementedError, match="s3:// backend"):
        run(metrics={"mean_iou": 0.7}, **inputs)

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


# --- the lineage a pipeline's push step records ---------------------------------------------

PINNED = "registry.example/vision-pipelines@sha256:" + "ab" * 32


def test_the_step_reports_the_code_it_runs(monkeypatch):
    from components.push_model.step import pipeline_lineage

    base = {"dataset_fingerprint": "fp-1", "parent_run": "run-7"}
    # The image bakes its code version in: that, not the compile-time value, is what ran.
    monkeypatch.setenv("VISION_PIPELINES_CODE_VERSION", "0.1.0+gabc1234")
    lineage = pipeline_lineage(base, image=PINNED, code_version="image:sha256:ab")
    assert lineage == {**base, "image": PINNED, "code_version": "0.1.0+gabc1234"}
    # Unset or empty (an image built without CODE_VERSION): the compile-time value.
    monkeypatch.setenv("VISION_PIPELINES_CODE_VERSION", "")
    assert pipeline_lineage(base, PINNED, "0.1.0+gdef")["code_version"] == "0.1.0+gdef"
    monkeypatch.delenv("VISION_PIPELINES_CODE_VERSION")
    assert pipeline_lineage(base, "", "0.1.0+gdef")["image"] is None
    assert base == {"dataset_fingerprint": "fp-1", "parent_run": "run-7"}  # Not modified.


def test_the_kfp_push_op_records_image_and_code_version(inputs, tmp_path, monkeypatch):
    from types import SimpleNamespace

    from components.kfp_ops import push_op

    monkeypatch.setenv("VISION_PIPELINES_CODE_VERSION", "0.1.0+gabc1234")
    model = SimpleNamespace(
        path=os.path.dirname(inputs["saved_model_dir"]),
        uri="gs://root/train/model",
        metadata={"config_hash": "sha256:cfg"},
    )
    dataset = SimpleNamespace(
        path="", uri="gs://root/convert/dataset", metadata={"fingerprint": "fp"}
    )
    result = push_op(
        model=model,
        dataset=dataset,
        metrics={"mean_iou": 0.7},
        experiment_yaml="task: {}\n",
        registry_uri=inputs["registry_uri"],
        model_name="seg",
        alias="champion",
        code_version="image:sha256:" + "ab" * 32,
        run_name="run-9",
        image=PINNED,
    )
    lineage = open_registry(inputs["registry_uri"]).get_version("seg", result["version"]).lineage
    assert lineage["image"] == PINNED
    assert lineage["code_version"] == "0.1.0+gabc1234"
    assert lineage["parent_run"] == "run-9" and lineage["dataset_fingerprint"] == "fp"
    assert lineage["config_hash"] == "sha256:cfg"

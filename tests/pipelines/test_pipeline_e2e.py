"""The whole pipeline under the real KFP local runner, on a tiny configuration."""

import json
import os
import sys

import pytest

from components.registry import open_registry
from pipelines.cli import main as cli_main
from pipelines.config import load_pipeline_config
from pipelines.local_run import run_local

sys.path.insert(0, os.path.dirname(__file__))
from tiny_pipeline import write_tiny_pipeline  # noqa: E402

pytestmark = pytest.mark.slow


def _tiny_configs(tmp_path):
    exp = {
        "experiment": "shapes_segmentation",
        "task": {
            "model": {
                # The default U-Net, shrunk: three levels of 4/8/16 channels.
                "input_size": [64, 64, 3],
                "max_level": 2,
                "backbone": {"type": "unet", "unet": {"filters": [4, 8, 16]}},
            },
            "train_data": {"global_batch_size": 4, "output_size": [64, 64]},
            "validation_data": {"global_batch_size": 4, "output_size": [64, 64]},
        },
    }
    return write_tiny_pipeline(
        tmp_path,
        exp,
        name="tiny-seg",
        task="segmentation",
        gate_metric="mean_iou",
        num_validation=4,
        seed=3,
        registry={"uri": "artifacts/registry", "model_name": "tiny"},
        # Cluster settings the local runner must accept and ignore.
        resources={
            "train": {
                "cpu_limit": "2",
                "memory_limit": "4Gi",
                "node_selector": {"pool": "cpu"},
                "tolerations": [{"key": "dedicated", "value": "ml", "effect": "NoSchedule"}],
                "retries": 1,
            }
        },
    )


def test_pipeline_runs_end_to_end_and_the_gate_guards_the_champion(tmp_path, capsys, monkeypatch):
    # The code version joins the cache key; pin it so edits elsewhere in the tree cannot
    # change it between the two runs.
    monkeypatch.setenv("VISION_PIPELINES_CODE_VERSION", "test-e2e")
    pipe_path = _tiny_configs(tmp_path)
    config = load_pipeline_config(str(pipe_path))
    assert config.registry.uri == str(tmp_path / "artifacts" / "registry")

    summary = run_local(config)
    metrics = summary["metrics"]
    assert 0.0 <= metrics["mean_iou"] <= 1.0
    assert metrics["num_examples"] == 4
    assert set(k for k in metrics if k.startswith("iou/")) == {
        "iou/background",
        "iou/circle",
        "iou/square",
        "iou/triangle",
    }
    assert summary["gate"]["passed"] is True
    assert summary["registry"]["version"] == 1
    registry = open_registry(config.registry.uri)
    assert registry.get_alias("tiny", "champion") == 1
    record = registry.get_version("tiny", 1)
    lineage = record.lineage
    assert lineage["dataset_fingerprint"] and lineage["config_hash"]
    # What ran the steps: no image (the subprocess runner runs this checkout) and the code
    # version the push step saw.
    assert lineage["image"] is None and lineage["code_version"] == "test-e2e"
    # `path` is the version's SavedModel folder.
    assert os.path.isfile(os.path.join(registry.path("tiny", 1), "saved_model.pb"))

    # A second run that cannot meet the threshold: the gate holds it back, nothing moves.
    code = cli_main(["run", str(pipe_path), "--set", "gate.min_value=1.5", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["gate"]["passed"] is False
    assert "1.5" in out["gate"]["reason"]
    # Same data and model config: convert and train come from the step cache, evaluate reruns,
    # and the summary still reports the cached steps' outputs.
    assert out["cached_steps"] == ["convert", "train"]
    assert out["metrics"]["mean_iou"] == metrics["mean_iou"]
    assert out["train"]["export_dir"] == summary["train"]["export_dir"]
    assert out["registry"]["version"] is None
    assert [v.version for v in registry.list_versions("tiny")] == [1]
    assert registry.get_alias("tiny", "champion") == 1

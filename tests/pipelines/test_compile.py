"""Compiling pipeline configs to KFP YAML, and pipeline-config errors."""

import pytest
import yaml

from pipelines.cli import main as cli_main
from pipelines.config import DEFAULT_PIPELINE_CONFIG, load_pipeline_config


def test_default_pipeline_compiles_to_the_five_step_graph(tmp_path):
    out = tmp_path / "p.yaml"
    assert cli_main(["compile", "-o", str(out)]) == 0
    spec = next(yaml.safe_load_all(out.read_text()))
    tasks = spec["root"]["dag"]["tasks"]
    assert {"convert-dataset-op", "train-op", "evaluate-op", "validate-op"} <= set(tasks)
    condition = [t for t in tasks.values() if "triggerPolicy" in t]
    assert condition and "validate-op-Output" in condition[0]["triggerPolicy"]["condition"]
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["gate_min_value"]["defaultValue"] == 0.85
    assert params["num_classes"]["defaultValue"] == 4
    # The experiment config travels inside the pipeline, fully resolved.
    exp = yaml.safe_load(params["experiment_yaml"]["defaultValue"])
    assert exp["task"]["model"]["backbone"]["unet"]["filters"] == [16, 32, 64, 128, 256]


def test_pipeline_config_errors_name_file_and_path(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("gate:\n  min_valu: 0.5\n")
    assert cli_main(["run", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "gate.min_valu: unknown key" in err and "min_value" in err
    assert "Traceback" not in err


def test_set_overrides_are_validated():
    with pytest.raises(Exception, match="dataset.num_shards"):
        load_pipeline_config(DEFAULT_PIPELINE_CONFIG, {"dataset": {"num_shards": 0}})


def test_bad_experiment_config_fails_before_anything_is_written(tmp_path, capsys):
    exp = tmp_path / "configs" / "experiments" / "e.yaml"
    exp.parent.mkdir(parents=True)
    exp.write_text("task:\n  model:\n    backbone:\n      resnet:\n        model_id: 19\n")
    pipe = tmp_path / "configs" / "pipelines" / "p.yaml"
    pipe.parent.mkdir(parents=True)
    pipe.write_text("experiment:\n  config_file: configs/experiments/e.yaml\n")
    assert cli_main(["run", str(pipe)]) == 2
    err = capsys.readouterr().err
    assert str(exp) in err and "task.model.backbone.resnet.model_id: invalid value 19" in err
    assert not (tmp_path / "artifacts").exists()

"""Registered experiments, YAML layering and experiment-level validation."""

import pytest

from vision_core.configs import get_exp_config, list_experiments, load_experiment
from vision_core.hyperparams import ConfigError


def test_registered_experiments_build_and_validate():
    names = list_experiments()
    assert {"semantic_segmentation", "seg_deeplabv3plus_pascal", "shapes_segmentation"} <= set(
        names
    )
    pascal = get_exp_config("seg_deeplabv3plus_pascal")
    assert pascal.task.model.backbone.get().model_id == 101
    assert pascal.task.model.decoder.get().dilation_rates == [6, 12, 18]


def test_unknown_experiment_lists_known_ones():
    with pytest.raises(ConfigError, match="Did you mean 'shapes_segmentation'"):
        get_exp_config("shape_segmentation")


def test_yaml_layers_then_overrides(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(
        "experiment: shapes_segmentation\n"
        "task:\n  model:\n    backbone:\n      type: resnet\n      resnet:\n        model_id: 34\n"
    )
    cfg = load_experiment(None, [str(path)], {"trainer": {"train_steps": 7}})
    assert cfg.task.model.backbone.resnet.model_id == 34
    assert cfg.trainer.train_steps == 7
    assert cfg.task.model.num_classes == 4  # from the registered base


def test_yaml_errors_name_the_file_and_path(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("task:\n  model:\n    backbone:\n      resnet:\n        model_id: 19\n")
    with pytest.raises(ConfigError) as err:
        load_experiment("shapes_segmentation", [str(path)])
    assert str(path) in str(err.value)
    assert "task.model.backbone.resnet.model_id: invalid value 19" in str(err.value)


def test_cross_field_validation():
    cfg = get_exp_config("shapes_segmentation")
    with pytest.raises(ConfigError, match="task.losses.top_k_percent_pixels"):
        cfg.override({"task": {"losses": {"top_k_percent_pixels": 0.0}}})
    with pytest.raises(ConfigError, match="task.model.input_size"):
        cfg.override({"task": {"model": {"input_size": [128, 128]}}})


def test_fingerprint_is_stable_and_sensitive():
    a, b = get_exp_config("shapes_segmentation"), get_exp_config("shapes_segmentation")
    assert a.fingerprint() == b.fingerprint()
    b.override({"trainer": {"train_steps": 1}})
    assert a.fingerprint() != b.fingerprint()

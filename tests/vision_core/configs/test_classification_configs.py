"""Classification experiments: registration, Model Garden values, params.yaml, config errors."""

import pytest

from vision_core.configs import get_exp_config, list_experiments, load_experiment
from vision_core.configs.image_classification import ImageClassificationTask
from vision_core.hyperparams import ConfigError, save_yaml


def test_registered_and_found_by_load_experiment():
    assert {"image_classification", "resnet_imagenet", "shapes_classification"} <= set(
        list_experiments()
    )
    cfg = load_experiment("shapes_classification")
    assert isinstance(cfg.task, ImageClassificationTask)
    assert cfg.task.model.num_classes == 3 and cfg.task.evaluation.top_k == 2


def test_resnet_imagenet_has_model_gardens_values():
    # Model Garden 2.20 official/vision/configs/image_classification.py: batch 4096, 312 steps
    # per epoch (1281167 // 4096), 90 epochs, LR 0.1 x 4096 / 256 = 1.6 stepped down 10x at
    # epochs 30, 60, 80 after 5 warm-up epochs.
    cfg = get_exp_config("resnet_imagenet")
    task, trainer = cfg.task, cfg.trainer
    assert task.model.num_classes == 1001 and task.model.input_size == [224, 224, 3]
    assert task.model.backbone.type == "resnet" and task.model.backbone.resnet.model_id == 50
    assert task.model.norm_activation.norm_momentum == 0.9
    assert task.model.norm_activation.norm_epsilon == 1e-5
    assert task.losses.l2_weight_decay == 1e-4 and task.losses.one_hot
    assert task.train_data.global_batch_size == 4096
    assert task.train_data.input_path == "imagenet-2012-tfrecord/train*"
    assert trainer.train_steps == 90 * 312 and trainer.validation_steps == 50000 // 4096
    lr = trainer.optimizer_config.learning_rate.stepwise
    assert lr.boundaries == [30 * 312, 60 * 312, 80 * 312]
    assert lr.values == pytest.approx([1.6, 0.16, 0.016, 0.0016])
    assert trainer.optimizer_config.warmup.linear.warmup_steps == 5 * 312
    assert cfg.runtime.enable_xla


def test_defaults_follow_model_garden():
    task = get_exp_config("image_classification").task
    assert task.model.kernel_initializer == "random_uniform"
    assert task.train_data.aug_crop and task.train_data.aug_rand_hflip
    assert task.train_data.crop_area_range == [0.08, 1.0]
    assert task.validation_data.center_crop_fraction == 0.875
    assert task.train_data.label_field_key == "image/class/label"
    assert task.evaluation.top_k == 5 and task.losses.label_smoothing == 0.0


def test_saved_params_yaml_reloads_as_classification(tmp_path):
    cfg = get_exp_config("shapes_classification")
    cfg.override({"trainer": {"train_steps": 7}})
    path = tmp_path / "params.yaml"
    save_yaml(cfg, str(path))
    # No experiment name: the task's `name` picks the classification base.
    again = load_experiment(None, [str(path)])
    assert isinstance(again.task, ImageClassificationTask)
    assert again.as_dict() == cfg.as_dict()


@pytest.mark.parametrize(
    "override, message",
    [
        ({"evaluation": {"top_k": 4}}, "task.evaluation.top_k: 4 is more than model.num_classes"),
        ({"evaluation": {"top_k": 0}}, "task.evaluation.top_k: expected >= 1"),
        ({"losses": {"label_smoothing": 1.0}}, "task.losses.label_smoothing"),
        ({"train_data": {"crop_area_range": [0.9, 0.1]}}, "task.train_data.crop_area_range"),
        ({"validation_data": {"center_crop_fraction": 0}}, "center_crop_fraction"),
        ({"train_data": {"tf_resize_method": "cubic"}}, "task.train_data.tf_resize_method"),
        ({"model": {"input_size": [64, 64]}}, "task.model.input_size"),
        ({"model": {"dropout_rate": 1.5}}, "task.model.dropout_rate"),
        ({"init_checkpoint_modules": "head"}, "task.init_checkpoint_modules"),
        # Model Garden augmentations that are not implemented are refused, not ignored.
        ({"train_data": {"aug_type": {"type": "randaug"}}}, "task.train_data.aug_type: unknown"),
    ],
)
def test_config_errors_name_the_path(override, message):
    cfg = get_exp_config("shapes_classification")
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        cfg.override({"task": override})


def test_yaml_errors_name_the_file(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("experiment: shapes_classification\ntask:\n  losses:\n    one_hott: true\n")
    with pytest.raises(ConfigError) as err:
        load_experiment(None, [str(path)])
    assert str(path) in str(err.value) and "task.losses.one_hott" in str(err.value)
    assert "one_hot" in str(err.value)

"""The training loop: it learns, checkpoints, resumes where it stopped, and refuses bad configs."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from vision_core.configs import get_exp_config
from vision_core.training.optimization import build_learning_rate
from vision_core.training.trainer import run_experiment


def tiny_experiment(data_dir, steps=6):
    cfg = get_exp_config("shapes_segmentation_resnet_fpn")
    cfg.override(
        {
            "task": {
                "model": {
                    "num_classes": 2,
                    "input_size": [32, 32, 3],
                    "backbone": {"resnet": {"model_id": 10, "depth_multiplier": 0.25}},
                    "decoder": {"fpn": {"num_filters": 32}},
                    "head": {"num_filters": 32, "num_decoder_filters": 32},
                },
                "train_data": {
                    "input_path": os.path.join(data_dir, "train.tfrecord"),
                    "global_batch_size": 4,
                    "output_size": [32, 32],
                    "aug_scale_min": 1.0,
                    "aug_scale_max": 1.0,
                },
                "validation_data": {
                    "input_path": os.path.join(data_dir, "train.tfrecord"),
                    "global_batch_size": 4,
                    "output_size": [32, 32],
                },
            },
            "trainer": {
                "train_steps": steps,
                "steps_per_loop": 2,
                "validation_interval": 3,
                "checkpoint_interval": 2,
                "optimizer_config": {
                    "optimizer": {"type": "adam"},
                    "learning_rate": {"type": "constant", "constant": {"learning_rate": 0.003}},
                    "warmup": {"type": None},
                },
            },
            "runtime": {"seed": 1},
        }
    )
    return cfg


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, square_records):
    path = tmp_path_factory.mktemp("data")
    square_records(str(path / "train.tfrecord"))
    return str(path)


def test_train_checkpoint_and_resume(data_dir, tmp_path):
    model_dir = str(tmp_path / "model")
    first = run_experiment(tiny_experiment(data_dir, steps=4), model_dir)
    assert first["start_step"] == 0 and first["step"] == 4
    assert tf.train.latest_checkpoint(model_dir).endswith("ckpt-4")
    assert os.path.exists(os.path.join(model_dir, "params.yaml"))
    # Asking for more steps continues from step 4, not from scratch.
    second = run_experiment(tiny_experiment(data_dir, steps=6), model_dir)
    assert second["start_step"] == 4 and second["step"] == 6
    assert tf.train.latest_checkpoint(model_dir).endswith("ckpt-6")
    # A finished run called again trains no further.
    third = run_experiment(tiny_experiment(data_dir, steps=6), model_dir)
    assert third["start_step"] == 6 and third["step"] == 6
    with open(os.path.join(model_dir, "metrics_history.jsonl")) as f:
        history = [json.loads(line) for line in f]
    assert [h["step"] for h in history] == [3, 4, 6]
    assert all(0.0 <= h["mean_iou"] <= 1.0 for h in history)
    with open(os.path.join(model_dir, "best_ckpt", "info.json")) as f:
        best = json.load(f)
    assert best["metric"] == "mean_iou"
    assert best["value"] == max(h["mean_iou"] for h in history[:3])


def test_training_reduces_the_loss(data_dir, tmp_path):
    cfg = tiny_experiment(data_dir, steps=30)
    cfg.override({"trainer": {"validation_interval": 30, "steps_per_loop": 30}})
    result = run_experiment(cfg, str(tmp_path / "m"))
    # Cross-entropy of two classes starts near ln 2 ≈ 0.69; the square is easy to find.
    assert result["loss"] < 0.35
    assert result["mean_iou"] > 0.6


def test_seeded_runs_are_reproducible_through_the_cli(data_dir, tmp_path):
    # Seeded runs repeat bit for bit in a fresh process (which is how pipeline steps run);
    # this also drives `python -m vision_core.train` with Model Garden's flags.
    import subprocess
    import sys

    from vision_core.hyperparams import save_yaml

    config = tmp_path / "tiny.yaml"
    save_yaml(tiny_experiment(data_dir, steps=2), str(config))
    losses = []
    for name in ("a", "b"):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "vision_core.train",
                "--experiment",
                "shapes_segmentation_resnet_fpn",
                "--mode",
                "train",
                "--model_dir",
                str(tmp_path / name),
                "--config_file",
                str(config),
                "--params_override",
                "trainer.validation_interval=2",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        losses.append(json.loads(proc.stdout)["loss"])
    assert losses[0] == losses[1]


def test_eval_mode_and_bad_mode(data_dir, tmp_path):
    model_dir = str(tmp_path / "model")
    run_experiment(tiny_experiment(data_dir, steps=2), model_dir)
    result = run_experiment(tiny_experiment(data_dir, steps=2), model_dir, mode="eval")
    assert "mean_iou" in result and "validation_loss" in result
    with pytest.raises(ValueError, match="--mode"):
        run_experiment(tiny_experiment(data_dir), model_dir, mode="fit")


def test_missing_training_files_name_the_pattern(tmp_path):
    cfg = tiny_experiment(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        run_experiment(cfg, str(tmp_path / "m"))


def test_warmup_then_cosine_schedule_values():
    cfg = get_exp_config("shapes_segmentation").trainer.optimizer_config
    cfg.override(
        {
            "learning_rate": {
                "type": "cosine",
                "cosine": {"initial_learning_rate": 0.1, "decay_steps": 100},
            },
            "warmup": {
                "type": "linear",
                "linear": {"warmup_steps": 10, "warmup_learning_rate": 0.0},
            },
        }
    )
    lr = build_learning_rate(cfg)
    # Linear warmup reaches the cosine value at step 10: 0.1 * (1 + cos(pi * 10/100)) / 2.
    expected_10 = 0.1 * (1 + np.cos(np.pi * 0.1)) / 2
    assert float(lr(0)) == pytest.approx(0.0)
    assert float(lr(5)) == pytest.approx(expected_10 / 2, rel=1e-5)
    assert float(lr(10)) == pytest.approx(expected_10, rel=1e-5)
    assert float(lr(100)) == pytest.approx(0.0, abs=1e-7)


def test_hard_pixel_mining_trains_inside_the_compiled_loop(data_dir, tmp_path):
    # top_k_percent_pixels takes a different loss path; it must trace inside tf.range loops.
    cfg = tiny_experiment(data_dir, steps=2)
    cfg.override({"task": {"losses": {"top_k_percent_pixels": 0.5}}})
    result = run_experiment(cfg, str(tmp_path / "m"))
    assert np.isfinite(result["loss"])

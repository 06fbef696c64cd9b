"""Compiling pipeline configs to KFP YAML, and pipeline-config errors."""

import pytest
import yaml

from pipelines.cli import main as cli_main
from pipelines.config import DEFAULT_PIPELINE_CONFIG, load_pipeline_config

# Compiling for a cluster needs an image it can pull.
IMAGE = "registry.example/vision-pipelines:test"


def test_default_pipeline_compiles_to_the_five_step_graph(tmp_path):
    out = tmp_path / "p.yaml"
    assert cli_main(["compile", "-o", str(out), "--image", IMAGE]) == 0
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


# --- the image a compiled pipeline names -----------------------------------------------------

DIGEST = "sha256:" + "5e" * 32
PUSHED = "us-docker.pkg.dev/proj/repo/vision-pipelines:0.1.0"
PINNED = f"us-docker.pkg.dev/proj/repo/vision-pipelines@{DIGEST}"


def _images_and_code_version(path):
    spec = next(yaml.safe_load_all(path.read_text()))
    images = {
        name: e["container"]["image"] for name, e in spec["deploymentSpec"]["executors"].items()
    }
    version = spec["root"]["inputDefinitions"]["parameters"]["code_version"]["defaultValue"]
    push = spec["components"]["comp-condition-1"]["dag"]["tasks"]["push-op"]
    lineage_image = push["inputs"]["parameters"]["image"]["runtimeValue"]["constant"]
    return images, version, lineage_image


def test_a_pushed_tag_compiles_to_its_digest_on_every_step(tmp_path, monkeypatch, capsys):
    from pipelines.image_ref import make_image_record, write_image_record

    write_image_record(make_image_record(PUSHED, DIGEST, "0.1.0+gabc"))
    # The checkout's own version must not be the cache key of steps that run the image.
    monkeypatch.setenv("VISION_PIPELINES_CODE_VERSION", "checkout-version")
    out = tmp_path / "p.yaml"
    assert cli_main(["compile", "-o", str(out), "--image", PUSHED]) == 0
    assert f"image: {PINNED}" in capsys.readouterr().out
    images, version, lineage_image = _images_and_code_version(out)
    assert set(images) == {
        "exec-convert-dataset-op", "exec-train-op", "exec-evaluate-op", "exec-validate-op",
        "exec-push-op",
    }  # fmt: skip
    assert set(images.values()) == {PINNED}
    assert version == f"image:{DIGEST}"
    assert lineage_image == PINNED
    # Without --image the record's pinned reference is used as well.
    assert cli_main(["compile", "-o", str(out)]) == 0
    assert set(_images_and_code_version(out)[0].values()) == {PINNED}


def test_a_tag_alone_keeps_the_checkout_code_version(tmp_path, monkeypatch):
    monkeypatch.setenv("VISION_PIPELINES_CODE_VERSION", "checkout-version")
    out = tmp_path / "p.yaml"
    assert cli_main(["compile", "-o", str(out), "--image", IMAGE]) == 0
    images, version, lineage_image = _images_and_code_version(out)
    assert set(images.values()) == {IMAGE} and lineage_image == IMAGE
    assert version == "checkout-version"


def test_the_config_image_is_used_and_checked(tmp_path, capsys):
    config = tmp_path / "configs" / "pipelines" / "p.yaml"
    config.parent.mkdir(parents=True)
    config.write_text(f"image: {PINNED}\n")
    out = tmp_path / "p.yaml"
    assert cli_main(["compile", str(config), "-o", str(out)]) == 0
    images, version, _ = _images_and_code_version(out)
    assert set(images.values()) == {PINNED} and version == f"image:{DIGEST}"
    out.unlink()
    config.write_text("image: localhost/vision-pipelines:0.1.0\n")
    assert cli_main(["compile", str(config), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"error: {config}: image: image 'localhost/vision-pipelines:0.1.0'" in err
    assert "podman's prefix" in err and not out.exists()


def test_an_image_no_cluster_can_pull_is_refused_before_compiling(tmp_path, capsys):
    out = tmp_path / "p.yaml"
    assert cli_main(["compile", "-o", str(out), "--image", "vision-pipelines:dev"]) == 2
    err = capsys.readouterr().err
    assert "error: --image: image 'vision-pipelines:dev' cannot be pulled by a cluster" in err
    assert "us-docker.pkg.dev/PROJECT/REPO/vision-pipelines:0.1.0" in err
    assert cli_main(["compile", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no container image for the cluster: pass --image REGISTRY/PATH:TAG" in err
    assert not out.exists() and "Traceback" not in err

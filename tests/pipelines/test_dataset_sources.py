"""Pipeline configs over real dataset layouts: VOC / Cityscapes / COCO sources, split names."""

import json
import sys
from pathlib import Path

import pytest
import yaml
from kfp import dsl

from components.kfp_ops import build_ops
from pipelines.cli import main as cli_main
from pipelines.config import load_pipeline_config
from vision_core.hyperparams import ConfigError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "components" / "convert_dataset"))
from test_convert_voc import write_voc  # noqa: E402

# Compiling for a cluster needs an image it can pull.
IMAGE = "registry.example/vision-pipelines:test"


def _config(tmp_path, dataset, **extra):
    path = tmp_path / "configs" / "pipelines" / "p.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"dataset": dataset, **extra}))
    return path


def test_voc_maps_its_val_split_to_validation_and_paths_resolve(tmp_path):
    path = _config(tmp_path, {"source": "voc", "source_dir": "data/VOC2012"})
    config = load_pipeline_config(str(path))
    assert config.dataset.source_dir == str(tmp_path / "data" / "VOC2012")
    assert config.dataset.split_map() == {"train": "train", "validation": "val"}
    out = tmp_path / "p.yaml"
    assert cli_main(["compile", str(path), "-o", str(out), "--image", IMAGE]) == 0
    params = next(yaml.safe_load_all(out.read_text()))["root"]["inputDefinitions"]["parameters"]
    assert params["source"]["defaultValue"] == "voc"
    assert params["splits"]["defaultValue"] == {"train": "train", "validation": "val"}
    assert params["source_options"]["defaultValue"] == {}


def test_coco_paths_and_options_reach_the_convert_step(tmp_path):
    path = _config(
        tmp_path,
        {
            "source": "coco",
            "annotations": {"train": "ann/train.json", "validation": "gs://b/val.json"},
            "images": {"train": "img/train", "validation": "gs://b/val"},
            "include_masks": True,
            "target_shard_size": "200MB",
        },
        task="detection",
        experiment={"name": "shapes_retinanet"},
        gate={"metric": "AP50"},
    )
    config = load_pipeline_config(str(path))
    assert config.dataset.annotations["train"] == str(tmp_path / "ann" / "train.json")
    assert config.dataset.images["validation"] == "gs://b/val"
    out = tmp_path / "p.yaml"
    assert cli_main(["compile", str(path), "-o", str(out), "--image", IMAGE]) == 0
    params = next(yaml.safe_load_all(out.read_text()))["root"]["inputDefinitions"]["parameters"]
    assert params["source_options"]["defaultValue"] == {
        "annotation_files": {
            "train": str(tmp_path / "ann" / "train.json"),
            "validation": "gs://b/val.json",
        },
        "image_dirs": {"train": str(tmp_path / "img" / "train"), "validation": "gs://b/val"},
        "include_masks": True,
        "target_shard_bytes": 200_000_000,
    }


@pytest.mark.parametrize(
    ("dataset", "message"),
    [
        ({"source": "voc"}, "dataset.source_dir: required when source is 'voc'"),
        ({"source": "coco"}, "dataset.annotations: source 'coco' needs source_dir"),
        ({"source": "voc", "source_dir": "x", "splits": {"val": "val"}}, "dataset.splits: keys"),
        ({"source": "voc", "source_dir": "x", "images": {"train": "i"}}, "dataset.images: only"),
        ({"target_shard_size": "huge"}, "dataset.target_shard_size: expected a size"),
        ({"source": "kitti"}, "dataset.source"),
    ],
)
def test_dataset_config_errors_name_the_dotted_path(tmp_path, dataset, message):
    with pytest.raises(ConfigError, match=message):
        load_pipeline_config(str(_config(tmp_path, dataset)))


def test_convert_step_writes_voc_validation_under_the_pipeline_name(tmp_path):
    root = write_voc(tmp_path / "VOC2012")
    config = load_pipeline_config(
        str(_config(tmp_path, {"source": "voc", "source_dir": str(root), "num_shards": 1}))
    )
    artifact = dsl.Dataset(uri=str(tmp_path / "dataset"))
    report = dsl.Markdown(uri=str(tmp_path / "dataset_report"))
    # The step's own function, as the KFP runner calls it, with this config's parameters.
    summary = build_ops().convert_dataset.python_func(
        task="segmentation", source="voc", source_dir=config.dataset.source_dir,
        num_train=0, num_validation=0, image_height=0, image_width=0, seed=0, min_objects=1,
        max_objects=1, radius_range=[0.1, 0.2], num_shards=1, compression="", class_names=[],
        beam_args=[], code_version="test", splits=config.dataset.split_map(),
        source_options={}, dataset=artifact, dataset_report=report,
    )  # fmt: skip
    assert set(summary["splits"]) == {"train", "validation"}
    assert (tmp_path / "dataset" / "validation-00000-of-00001.tfrecord").exists()
    assert artifact.metadata["validation_records"] == 1
    assert artifact.metadata["class_names"][:2] == ["background", "aeroplane"]
    # The dataset report travels as its own Markdown artifact.
    assert (tmp_path / "dataset_report").read_text() == (
        tmp_path / "dataset" / summary["report"]["markdown"]
    ).read_text()
    assert "validation" in (tmp_path / "dataset_report").read_text()
    written = json.loads((tmp_path / "dataset" / "summary.json").read_text())
    assert written["source_splits"] == {"validation": "val"}

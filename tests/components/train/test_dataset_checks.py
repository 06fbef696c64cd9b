"""The train step's early checks of a converted dataset against the experiment."""

import json

import pytest

from components.train.step import check_dataset_matches, dataset_class_names
from vision_core.configs import load_experiment


def _dataset(tmp_path, task, names):
    (tmp_path / "summary.json").write_text(json.dumps({"task": task, "class_names": names}))
    return str(tmp_path)


VOC_NAMES = ["background", "aeroplane", "bicycle", "bird", "boat"]


def test_segmentation_with_fewer_outputs_than_classes_fails_early(tmp_path):
    params = load_experiment("shapes_segmentation")  # 4 classes
    with pytest.raises(ValueError, match="num_classes: 4, but .* has 5 classes including"):
        check_dataset_matches(_dataset(tmp_path, "segmentation", VOC_NAMES), params)
    # Four names for four outputs is fine, and so is a dataset without names.
    check_dataset_matches(_dataset(tmp_path, "segmentation", VOC_NAMES[:4]), params)
    check_dataset_matches(_dataset(tmp_path, "segmentation", None), params)


def test_task_mismatch_names_both_tasks(tmp_path):
    params = load_experiment("shapes_segmentation")
    with pytest.raises(ValueError, match="converted for detection, but .* semantic_segmentation"):
        check_dataset_matches(_dataset(tmp_path, "detection", VOC_NAMES[:4]), params)


def test_class_names_put_the_background_first_only_when_missing(tmp_path):
    params = load_experiment("shapes_segmentation")
    names = ["circle", "square", "triangle"]
    assert dataset_class_names(_dataset(tmp_path, "segmentation", names), params) == [
        "background",
        *names,
    ]
    assert (
        dataset_class_names(_dataset(tmp_path, "segmentation", VOC_NAMES[:4]), params)
        == (VOC_NAMES[:4])
    )
    assert dataset_class_names(_dataset(tmp_path, "segmentation", VOC_NAMES), params) is None

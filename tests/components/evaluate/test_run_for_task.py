"""`run_for_task`: the dispatch the pipeline's one evaluate op and the CLI go through."""

import pytest

import components.evaluate as evaluate


def test_unknown_task_and_foreign_options_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="task: expected one of"):
        evaluate.run_for_task("detectionn", "m", "d", str(tmp_path), 3)
    with pytest.raises(ValueError, match=r"\['top_k'\] do not apply to segmentation"):
        evaluate.run_for_task("segmentation", "m", "d", str(tmp_path), 3, options={"top_k": 2})


def test_kfp_float_numbers_become_ints(monkeypatch, tmp_path):
    seen = {}

    def fake(saved_model_dir, dataset_dir, output_dir, num_classes, class_names, **options):
        seen.update(options)
        return {}

    monkeypatch.setitem(evaluate.EVALUATORS, "classification", (fake, ("top_k", "split")))
    evaluate.run_for_task(
        "classification", "m", "d", str(tmp_path), 3, options={"top_k": 2.0, "split": "train"}
    )
    assert seen == {"top_k": 2, "split": "train"}
    assert isinstance(seen["top_k"], int)

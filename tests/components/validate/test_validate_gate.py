"""The validation gate: thresholds, the champion comparison and the wording of its reasons."""

import pytest

from components.registry import open_registry
from components.validate import GateDecision, run


@pytest.fixture
def registry_with_champion(tmp_path):
    """A registry whose model 'seg' has v1 (mean_iou 0.700) and champion v2 (mean_iou 0.812)."""
    sm = tmp_path / "saved_model"
    sm.mkdir()
    (sm / "saved_model.pb").write_bytes(b"graph")
    config = tmp_path / "config.yaml"
    config.write_text("task: {}\n")
    uri = str(tmp_path / "registry")
    registry = open_registry(uri)
    registry.push("seg", str(sm), str(config), {"mean_iou": 0.700, "loss": 0.30})
    registry.push("seg", str(sm), str(config), {"mean_iou": 0.812, "loss": 0.25})
    registry.set_alias("seg", "champion", 2)
    return uri


def test_missing_metric_fails_and_lists_what_is_there():
    decision = run({"pixel_accuracy": 0.9, "iou/road": 0.8}, metric_name="mean_iou")
    assert decision == GateDecision(
        passed=False,
        reason="Metric 'mean_iou' is missing from the candidate's metrics "
        "(available: 'iou/road', 'pixel_accuracy').",
        candidate=None,
        champion=None,
        champion_version=None,
        metric_name="mean_iou",
    )
    assert "available: none" in run({}).reason


@pytest.mark.parametrize("value", [float("nan"), "high", None, True])
def test_a_metric_that_is_not_a_finite_number_fails(value):
    decision = run({"mean_iou": value})
    assert not decision.passed
    assert "not a finite number" in decision.reason


def test_below_threshold_fails_with_the_numbers():
    decision = run({"mean_iou": 0.812}, min_value=0.85)
    assert not decision.passed
    assert decision.reason == "mean_iou 0.812 < required minimum 0.850."
    assert decision.candidate == 0.812


def test_close_numbers_get_enough_digits_to_differ():
    decision = run({"mean_iou": 0.8499}, min_value=0.85)
    assert decision.reason == "mean_iou 0.8499 < required minimum 0.8500."


def test_threshold_is_inclusive_and_no_registry_means_no_comparison():
    decision = run({"mean_iou": 0.85}, min_value=0.85)
    assert decision.passed
    assert decision.reason == (
        "mean_iou 0.850 meets the minimum 0.850; no champion comparison requested."
    )


def test_no_champion_yet_passes_on_threshold_alone(tmp_path):
    uri = str(tmp_path / "empty-registry")
    decision = run({"mean_iou": 0.6}, min_value=0.5, registry_uri=uri, model_name="seg")
    assert decision.passed
    assert decision.champion is None and decision.champion_version is None
    assert "model 'seg' has no 'champion' yet" in decision.reason
    # ... but the threshold still applies.
    assert not run({"mean_iou": 0.4}, min_value=0.5, registry_uri=uri, model_name="seg").passed


def test_regression_beyond_tolerance_fails(registry_with_champion):
    decision = run(
        {"mean_iou": 0.801},
        registry_uri=registry_with_champion,
        model_name="seg",
        max_regression=0.005,
    )
    assert not decision.passed
    assert (decision.candidate, decision.champion, decision.champion_version) == (0.801, 0.812, 2)
    assert decision.reason == (
        "mean_iou 0.801 is 0.011 below champion v2 (0.812), more than the allowed regression "
        "of 0.005."
    )


def test_regression_within_tolerance_passes(registry_with_champion):
    decision = run(
        {"mean_iou": 0.809},
        registry_uri=registry_with_champion,
        model_name="seg",
        max_regression=0.005,
    )
    assert decision.passed
    assert decision.reason == (
        "mean_iou 0.809 meets the minimum 0.000 and is 0.003 below champion v2 (0.812), within "
        "the allowed regression of 0.005."
    )


def test_regression_exactly_at_tolerance_passes_despite_float_rounding(registry_with_champion):
    # 0.812 - 0.807 is 0.005000000000000004 in binary floating point.
    assert 0.812 - 0.807 > 0.005
    decision = run(
        {"mean_iou": 0.807},
        registry_uri=registry_with_champion,
        model_name="seg",
        max_regression=0.005,
    )
    assert decision.passed, decision.reason


def test_default_tolerance_requires_at_least_the_champion(registry_with_champion):
    kwargs = {"registry_uri": registry_with_champion, "model_name": "seg"}
    assert not run({"mean_iou": 0.8119}, **kwargs).passed
    tie = run({"mean_iou": 0.812}, **kwargs)
    assert tie.passed and "equals champion v2 (0.812)" in tie.reason
    better = run({"mean_iou": 0.9}, **kwargs)
    assert better.passed and "is 0.088 above champion v2 (0.812)" in better.reason


def test_lower_is_better_metrics(registry_with_champion):
    kwargs = {"registry_uri": registry_with_champion, "model_name": "seg", "metric_name": "loss"}
    worse = run({"loss": 0.27}, higher_is_better=False, max_regression=0.01, **kwargs)
    assert not worse.passed
    assert worse.reason.startswith("loss 0.270 is 0.020 above champion v2 (0.250)")
    better = run({"loss": 0.2}, higher_is_better=False, **kwargs)
    assert better.passed and "is 0.050 below champion v2 (0.250)" in better.reason
    capped = run({"loss": 0.2}, higher_is_better=False, max_value=0.1, **kwargs)
    assert not capped.passed and capped.reason == "loss 0.200 > allowed maximum 0.100."


def test_champion_without_the_metric_is_judged_on_thresholds(registry_with_champion):
    decision = run(
        {"boundary_f1": 0.5},
        metric_name="boundary_f1",
        registry_uri=registry_with_champion,
        model_name="seg",
    )
    assert decision.passed
    assert decision.champion_version == 2 and decision.champion is None
    assert "champion v2 has no numeric 'boundary_f1' to compare with" in decision.reason


def test_other_alias_can_be_the_reference(registry_with_champion):
    open_registry(registry_with_champion).set_alias("seg", "baseline", 1)
    decision = run(
        {"mean_iou": 0.75},
        registry_uri=registry_with_champion,
        model_name="seg",
        champion_alias="baseline",
    )
    assert decision.passed and decision.champion_version == 1 and decision.champion == 0.7


def test_inconsistent_arguments_are_errors(tmp_path):
    with pytest.raises(ValueError, match="model_name: required"):
        run({"mean_iou": 1.0}, registry_uri=str(tmp_path))
    with pytest.raises(ValueError, match="max_regression"):
        run({"mean_iou": 1.0}, max_regression=-0.1)
    with pytest.raises(ValueError, match="min_value 0.9 is above max_value 0.1"):
        run({"mean_iou": 1.0}, min_value=0.9, max_value=0.1)


def test_decision_serialises():
    assert run({"mean_iou": 0.5}).to_dict() == {
        "passed": True,
        "reason": "mean_iou 0.500 meets the minimum 0.000; no champion comparison requested.",
        "candidate": 0.5,
        "champion": None,
        "champion_version": None,
        "metric_name": "mean_iou",
    }

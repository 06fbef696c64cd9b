"""The validation gate: decides whether an evaluated model may be pushed and promoted.

A candidate passes when its metric exists, lies within [min_value, max_value], and is not worse
than the current champion's value of the same metric by more than `max_regression`. With no
champion (a new model, or a registry not given) the thresholds alone decide. Every decision
carries a one-sentence reason with the numbers, for logs, pipeline UIs and review.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger(__name__)

# Differences this close to the tolerance are float noise (0.812 - 0.807 != 0.005 exactly), not
# a real regression beyond it.
_REL_TOL = 1e-9
_ABS_TOL = 1e-12


@dataclasses.dataclass(frozen=True)
class GateDecision:
    """The outcome of the gate.

    Attributes:
      passed: whether the candidate may be pushed.
      reason: one full sentence with the numbers that decided it.
      candidate: the candidate's value of the metric (None if missing or not a number).
      champion: the champion's value of the metric (None with no comparable champion).
      champion_version: the version the champion alias pointed at (None without a champion).
      metric_name: the metric that was judged.
    """

    passed: bool
    reason: str
    candidate: float | None
    champion: float | None
    champion_version: int | None
    metric_name: str = "mean_iou"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (for KFP outputs and the CLI)."""
        return dataclasses.asdict(self)


def _format_pair(a: float, b: float) -> tuple[str, str]:
    """Formats two numbers with 3 decimals, or more when 3 would make different numbers equal."""
    for digits in (3, 4, 5, 6, 8, 10, 12):
        fa, fb = f"{a:.{digits}f}", f"{b:.{digits}f}"
        if fa != fb or a == b:
            return fa, fb
    return repr(a), repr(b)


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _champion(
    registry_uri: str, model_name: str, alias: str
) -> tuple[int | None, Mapping[str, Any] | None]:
    # Imported here so the gate without a registry needs nothing beyond the standard library.
    from components.registry import AliasNotFoundError, ModelNotFoundError, open_registry

    registry = open_registry(registry_uri)
    try:
        version = registry.get_alias(model_name, alias)
    except (AliasNotFoundError, ModelNotFoundError):
        return None, None
    return version, registry.get_version(model_name, version).metrics


def run(
    metrics: Mapping[str, Any],
    metric_name: str = "mean_iou",
    min_value: float = 0.0,
    registry_uri: str | None = None,
    model_name: str | None = None,
    max_regression: float = 0.0,
    higher_is_better: bool = True,
    max_value: float | None = None,
    champion_alias: str = "champion",
) -> GateDecision:
    """Judges a candidate's metrics against thresholds and the registry's champion.

    Args:
      metrics: the candidate's evaluation metrics (e.g. the evaluate step's output).
      metric_name: the metric that decides.
      min_value: the lowest acceptable value (inclusive), whatever the metric's direction.
      registry_uri: the registry holding the champion; None skips the champion comparison.
      model_name: the model in that registry; required when `registry_uri` is given.
      max_regression: how much worse than the champion the candidate may be (>= 0), in the
        metric's units; 0 means "at least as good".
      higher_is_better: the metric's direction (False for losses and error rates).
      max_value: the highest acceptable value (inclusive), or None for no upper bound; the
        threshold to use for lower-is-better metrics.
      champion_alias: the alias naming the current champion.

    Returns:
      A GateDecision; a failing gate is a normal outcome, not an exception.

    Raises:
      ValueError: inconsistent arguments (a registry without a model name, a negative or
        non-finite tolerance, min_value above max_value).
    """
    if registry_uri and not model_name:
        raise ValueError("model_name: required when registry_uri is given, to find the champion")
    if _as_number(max_regression) is None or max_regression < 0:
        raise ValueError(f"max_regression: expected a finite number >= 0, got {max_regression!r}")
    if max_value is not None and min_value > max_value:
        raise ValueError(f"min_value {min_value} is above max_value {max_value}")

    def decide(passed: bool, reason: str, candidate=None, champion=None, version=None):
        decision = GateDecision(passed, reason, candidate, champion, version, metric_name)
        logger.log(logging.INFO if passed else logging.WARNING, "Gate: %s", reason)
        return decision

    if metric_name not in metrics:
        available = ", ".join(repr(k) for k in sorted(metrics)) or "none"
        return decide(
            False,
            f"Metric {metric_name!r} is missing from the candidate's metrics "
            f"(available: {available}).",
        )
    candidate = _as_number(metrics[metric_name])
    if candidate is None:
        return decide(
            False,
            f"Metric {metric_name!r} of the candidate is {metrics[metric_name]!r}, "
            "not a finite number.",
        )
    if candidate < min_value:
        c, m = _format_pair(candidate, min_value)
        return decide(False, f"{metric_name} {c} < required minimum {m}.", candidate)
    if max_value is not None and candidate > max_value:
        c, m = _format_pair(candidate, max_value)
        return decide(False, f"{metric_name} {c} > allowed maximum {m}.", candidate)

    bounds = f"meets the minimum {_format_pair(candidate, min_value)[1]}"
    if max_value is not None:
        bounds += f" and maximum {_format_pair(candidate, max_value)[1]}"

    if not registry_uri:
        c = _format_pair(candidate, min_value)[0]
        return decide(
            True, f"{metric_name} {c} {bounds}; no champion comparison requested.", candidate
        )
    champion_version, champion_metrics = _champion(registry_uri, model_name, champion_alias)
    if champion_version is None:
        c = _format_pair(candidate, min_value)[0]
        return decide(
            True,
            f"{metric_name} {c} {bounds}; model {model_name!r} has no {champion_alias!r} yet.",
            candidate,
        )
    champion = _as_number(champion_metrics.get(metric_name))
    if champion is None:
        c = _format_pair(candidate, min_value)[0]
        logger.warning(
            "Champion v%d of %r has no numeric %r metric; judging on thresholds alone",
            champion_version,
            model_name,
            metric_name,
        )
        return decide(
            True,
            f"{metric_name} {c} {bounds}; champion v{champion_version} has no numeric "
            f"{metric_name!r} to compare with.",
            candidate,
            None,
            champion_version,
        )

    # Positive regression = how much worse the candidate is, whatever the metric's direction.
    regression = champion - candidate if higher_is_better else candidate - champion
    c, ch = _format_pair(candidate, champion)
    beyond = regression > max_regression and not math.isclose(
        regression, max_regression, rel_tol=_REL_TOL, abs_tol=_ABS_TOL
    )
    worse = "below" if higher_is_better else "above"
    better = "above" if higher_is_better else "below"
    if beyond:
        r, t = _format_pair(regression, max_regression)
        return decide(
            False,
            f"{metric_name} {c} is {r} {worse} champion v{champion_version} ({ch}), more than "
            f"the allowed regression of {t}.",
            candidate,
            champion,
            champion_version,
        )
    if regression > 0:
        r, t = _format_pair(regression, max_regression)
        comparison = (
            f"is {r} {worse} champion v{champion_version} ({ch}), within the allowed "
            f"regression of {t}"
        )
    elif regression < 0:
        comparison = (
            f"is {_format_pair(-regression, 0.0)[0]} {better} champion v{champion_version} ({ch})"
        )
    else:
        comparison = f"equals champion v{champion_version} ({ch})"
    return decide(
        True,
        f"{metric_name} {c} {bounds} and {comparison}.",
        candidate,
        champion,
        champion_version,
    )

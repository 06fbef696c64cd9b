"""The validate step: thresholds plus no regression against the registry's champion."""

from components.validate.step import GateDecision, run

__all__ = ["GateDecision", "run"]

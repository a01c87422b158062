"""Replaying recorded merges and comparing the result with published weights, tensor by tensor."""

from attest.replay.engine import DEFAULT_TOLERANCE_ULPS, replay
from attest.replay.report import ReplayCounts, ReplayReport, TensorComparison, TensorStatus, Verdict

__all__ = [
    "DEFAULT_TOLERANCE_ULPS",
    "ReplayCounts",
    "ReplayReport",
    "TensorComparison",
    "TensorStatus",
    "Verdict",
    "replay",
]

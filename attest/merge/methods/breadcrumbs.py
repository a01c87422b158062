"""breadcrumbs -- Model breadcrumbs: drop the largest (gamma) and smallest task-vector entries."""

from __future__ import annotations

from attest.merge.methods.task_arithmetic_core import task_arithmetic_method

BREADCRUMBS = task_arithmetic_method(
    "breadcrumbs", sign_consensus=False, sparsification="magnitude_outliers", normalize=False, rescale=False
)

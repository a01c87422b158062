"""task_arithmetic -- Task arithmetic: base + sum of weighted task vectors (no sparsification, no sign election)."""

from __future__ import annotations

from attest.merge.methods.task_arithmetic_core import task_arithmetic_method

TASK_ARITHMETIC = task_arithmetic_method(
    "task_arithmetic", sign_consensus=False, sparsification=None, normalize=False, rescale=False
)

"""della_linear -- DELLA linear: rank-scaled random drop with L1 rescale, no sign election."""

from __future__ import annotations

from attest.merge.methods.task_arithmetic_core import task_arithmetic_method

DELLA_LINEAR = task_arithmetic_method(
    "della_linear", sign_consensus=False, sparsification="della_magprune", normalize=False, rescale=True
)

"""della -- DELLA: rank-scaled random drop (MagPrune) with L1 rescale, then sign election."""

from __future__ import annotations

from attest.merge.methods.task_arithmetic_core import task_arithmetic_method

DELLA = task_arithmetic_method(
    "della", sign_consensus=True, sparsification="della_magprune", normalize=True, rescale=True
)

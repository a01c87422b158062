"""dare_ties -- DARE-TIES: random drop (Bernoulli(density)) with L1 rescale, then sign election."""

from __future__ import annotations

from attest.merge.methods.task_arithmetic_core import task_arithmetic_method

DARE_TIES = task_arithmetic_method(
    "dare_ties", sign_consensus=True, sparsification="random", normalize=False, rescale=True
)

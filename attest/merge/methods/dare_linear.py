"""dare_linear -- DARE linear: random drop (Bernoulli(density)) with L1 rescale, no sign election."""

from __future__ import annotations

from attest.merge.methods.task_arithmetic_core import task_arithmetic_method

DARE_LINEAR = task_arithmetic_method(
    "dare_linear", sign_consensus=False, sparsification="random", normalize=False, rescale=True
)

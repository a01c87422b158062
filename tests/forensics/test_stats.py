"""The robust statistics over tensors (attest.forensics.stats, SPEC.md §6.4)."""

from __future__ import annotations

import numpy as np
import pytest

from attest.forensics.stats import (
    NORMAL_MIN_TENSORS,
    _bootstrap_medians,
    effective_tensors,
    normal_interval,
    participation,
    robust_estimate,
    weighted_median,
)


def _sample(n: int, seed: int, weights: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    v = 0.57 + 0.01 * rng.standard_t(3, size=n)  # heavy tails, like coefficients after training
    if weights == "equal":
        w = np.ones(n)
    elif weights == "sizes":  # MoE-like: many expert tensors, fewer large ones
        w = rng.choice([1024.0, 4096.0, 65536.0], size=n, p=[0.6, 0.3, 0.1])
    else:
        w = rng.pareto(1.5, size=n) + 1.0
    return v, w


@pytest.mark.parametrize(("n", "weights"), [(2000, "equal"), (20000, "sizes"), (12000, "pareto")])
def test_the_closed_form_interval_matches_the_bootstrap(n: int, weights: str) -> None:
    """The closed form replaces 2000 resamples at scale: its ends must agree with the resampled percentiles to a
    small fraction of the interval (the bootstrap's own Monte Carlo noise is of that order)."""
    v, w = _sample(n, seed=n, weights=weights)
    assert effective_tensors(w) >= NORMAL_MIN_TENSORS  # where robust_estimate uses the closed form
    boot_lo, boot_hi = np.quantile(_bootstrap_medians(v, w), [0.025, 0.975])
    lo, hi = normal_interval(v, w)
    width = boot_hi - boot_lo
    assert width > 0
    assert abs(lo - boot_lo) <= 0.1 * width
    assert abs(hi - boot_hi) <= 0.1 * width
    assert lo <= weighted_median(v, w) <= hi


def test_the_closed_form_is_used_only_with_many_effective_tensors() -> None:
    v, w = _sample(3000, seed=1, weights="equal")
    assert effective_tensors(w) >= NORMAL_MIN_TENSORS
    est = robust_estimate(v, w)
    assert (est.ci_low, est.ci_high) == pytest.approx(normal_interval(v, w))
    # One tensor carrying almost all the weight: few effective tensors, the resampling decides.
    w2 = w.copy()
    w2[0] = 1e9
    assert effective_tensors(w2) < 2
    est2 = robust_estimate(v, w2)
    boot = np.quantile(_bootstrap_medians(v, w2), [0.025, 0.975])
    assert est2.ci_low == pytest.approx(min(boot[0], est2.value))
    assert est2.ci_high == pytest.approx(max(boot[1], est2.value))


def test_a_shifted_sample_moves_the_interval() -> None:
    """Not a constant: the interval follows the data."""
    v, w = _sample(5000, seed=2, weights="sizes")
    lo, hi = normal_interval(v, w)
    lo2, hi2 = normal_interval(v + 0.1, w)
    assert lo2 == pytest.approx(lo + 0.1) and hi2 == pytest.approx(hi + 0.1)


def test_participation_in_one_layer_only() -> None:
    """A gradient merge: weight 0 in every layer but the last, 0.8 there. The model-wide median is 0; the parent
    still takes part (the per-layer check runs its bootstrap only where the layer's median is large enough)."""
    rng = np.random.default_rng(3)
    layers = [list(range(i * 50, (i + 1) * 50)) for i in range(10)]
    values = np.concatenate([rng.normal(0.0, 1e-3, 450), rng.normal(0.8, 1e-3, 50)])
    weights = np.ones(500)
    est, takes_part = participation(values, weights, layers, 0.05)
    assert abs(est.value) < 0.01 and takes_part
    _est0, part0 = participation(values[:450], weights[:450], layers[:9], 0.05)
    assert not part0

"""Robust statistics over tensors: the coefficient estimates and the merge test (SPEC.md §6.4, §6.5).

Each informative tensor is one measurement of the recipe (a merge applies one recipe to every tensor), so the
statistics here treat tensors as the sampling unit:

* the value of a quantity is the **size-weighted median** over tensors: a tensor ruined by one outlier element (or a
  tensor that training moved more than the rest) is one vote, not a lever on a sum of squares;
* its 95% interval is a **percentile bootstrap over tensors** (resampling tensors with replacement, 2000 draws,
  fixed seed 0: the report is deterministic) of that weighted median.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from attest.forensics.fit_table import FitTable
from attest.forensics.report import MergeTest
from attest.forensics.verdict import MERGE_SHARE_CRITICAL, MERGE_SHARE_CRITICAL_BASE, MIDPOINT_CRITICAL

BOOTSTRAP_DRAWS = 2000
BOOTSTRAP_SEED = 0
NORMAL_MIN_TENSORS = 250
"""From this many effective tensors (Kish) the bootstrap's interval is taken in closed form (`normal_interval`): the
resampling costs 2000 passes over the tensors (seconds at 10^5 tensors), the closed form one sort."""
BLOCK_ELEMENTS = 1 << 21
"""Work-array elements per block of bootstrap draws (16 MiB of int64/float64)."""


@dataclass(frozen=True)
class RobustEstimate:
    value: float
    ci_low: float  # nan with fewer than two tensors
    ci_high: float
    n: int  # tensors with a finite value


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """The lower weighted median: the smallest value whose cumulative weight reaches half the total."""
    ok = np.isfinite(values) & (weights > 0)
    v, w = values[ok], weights[ok]
    if len(v) == 0:
        return math.nan
    order = np.argsort(v, kind="stable")
    cum = np.cumsum(w[order])
    return float(v[order][int(np.searchsorted(cum, cum[-1] / 2))])


def _bootstrap_medians(v: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted medians of BOOTSTRAP_DRAWS resamples of the tensors. The values are sorted once; a resample only
    changes each tensor's multiplicity, so each draw is a bincount and a cumulative sum (O(n)), in blocks of draws
    that keep the work arrays under BLOCK_ELEMENTS whatever the number of tensors."""
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    n = len(v)
    order = np.argsort(v, kind="stable")
    vs, ws = v[order], w[order]
    out = np.empty(BOOTSTRAP_DRAWS)
    block = max(1, BLOCK_ELEMENTS // n)
    for start in range(0, BOOTSTRAP_DRAWS, block):
        b = min(block, BOOTSTRAP_DRAWS - start)
        idx = rng.integers(0, n, size=(b, n)) + (np.arange(b) * n)[:, None]
        counts = np.bincount(idx.ravel(), minlength=b * n).reshape(b, n)
        cum = np.cumsum(counts * ws, axis=1)
        pos = (cum < cum[:, -1:] / 2).sum(axis=1)
        out[start : start + b] = vs[pos]
    return out


def effective_tensors(w: np.ndarray) -> float:
    """Kish's effective sample size (sum w)^2 / sum w^2: how many equal-size tensors the weights are worth."""
    return float(w.sum() ** 2 / np.square(w).sum())


def normal_interval(v: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """The 95% interval of the bootstrap's weighted median in closed form (SPEC.md §6.4), O(n log n) instead of the
    O(2000 n) resampling. With values sorted, cumulative weights W_j and total T, a resample's median is <= v_j
    exactly when its resampled cumulative weight S_j reaches T/2; S_j - T/2 = sum_i c_i a_i with multinomial counts
    c ~ Mult(n, 1/n) and a_i = +w_i/2 (i <= j) or -w_i/2, so it has mean W_j - T/2 and variance
    Q/4 - (W_j - T/2)^2 / n (Q = sum w^2), and is close to normal when many tensors carry the weight. The interval
    ends are the first values where Phi(mean / sd) reaches 2.5% and 97.5%."""
    order = np.argsort(v, kind="stable")
    vs, ws = v[order], w[order]
    n = len(vs)
    cum = np.cumsum(ws)
    d = cum - cum[-1] / 2
    var = np.maximum(float(np.square(ws).sum()) / 4 - np.square(d) / n, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(var > 0, d / np.sqrt(var), np.sign(d) * math.inf)
    # z is increasing in j (d increases, and |d| <= T/2 keeps the variance term from turning it back)
    z = np.maximum.accumulate(z)
    lo_z, hi_z = NormalDist().inv_cdf(0.025), NormalDist().inv_cdf(0.975)
    lo = vs[min(int(np.searchsorted(z, lo_z, side="left")), n - 1)]
    hi = vs[min(int(np.searchsorted(z, hi_z, side="left")), n - 1)]
    return float(lo), float(hi)


def robust_estimate(values: np.ndarray, weights: np.ndarray) -> RobustEstimate:
    """Weighted median over tensors with a 95% percentile-bootstrap interval over tensors (in closed form when at
    least NORMAL_MIN_TENSORS effective tensors carry the weight; measured against the resampling down to ~100 effective
    tensors, the ends agree within a few percent of the width)."""
    ok = np.isfinite(values) & (weights > 0)
    v, w = values[ok], weights[ok]
    if len(v) == 0:
        return RobustEstimate(math.nan, math.nan, math.nan, 0)
    med = weighted_median(v, w)
    if len(v) < 2:
        return RobustEstimate(med, math.nan, math.nan, 1)
    if effective_tensors(w) >= NORMAL_MIN_TENSORS:
        lo, hi = normal_interval(v, w)
    else:
        lo, hi = (float(q) for q in np.quantile(_bootstrap_medians(v, w), [0.025, 0.975]))
    return RobustEstimate(med, min(lo, med), max(hi, med), len(v))


def participation(
    values: np.ndarray, weights: np.ndarray, layers: list[list[int]], minimum: float
) -> tuple[RobustEstimate, bool]:
    """A participant's model-wide estimate, and whether it takes part: |value| >= minimum with an interval excluding
    0, model-wide or within one layer (a gradient merge can give a parent weight 0 in most tensors and 0.8 in the
    last layer: the median over all tensors is 0, the parent still takes part). `layers`: tensor indices per layer."""
    est = robust_estimate(values, weights)
    if _takes_part(est, minimum):
        return est, True
    for idx in layers:
        # The interval (the costly part) only where the layer's median is large enough to count.
        if (
            len(idx) >= 2
            and _large(weighted_median(values[idx], weights[idx]), minimum)
            and _takes_part(robust_estimate(values[idx], weights[idx]), minimum)
        ):
            return est, True
    return est, False


def _large(value: float, minimum: float) -> bool:
    return math.isfinite(value) and abs(value) >= minimum


def _takes_part(e: RobustEstimate, minimum: float) -> bool:
    """|value| >= minimum and an interval that excludes 0."""
    return _large(e.value, minimum) and (e.ci_low > 0 or e.ci_high < 0)


def merge_shares(rss: np.ndarray, nearest: np.ndarray) -> np.ndarray:
    """Per tensor, the share of the squared distance to the nearest single reference that the fitted merge removes:
    1 - RSS_t / min_X |M - X|_t^2 (nan where the model equals a reference in that tensor)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(nearest > 0, 1.0 - rss / np.where(nearest > 0, nearest, 1.0), math.nan)


def midpoint_ratios(fits: FitTable) -> np.ndarray:
    """Without a base, per tensor: |M - P̄|^2 over the candidates' mean squared distance to their mean P̄ (nan where
    the candidates agree). By the parallelogram rule (1/k) sum_i |M - P_i|^2 = |M - P̄|^2 + (1/k) sum_i |P_i - P̄|^2,
    so the denominator comes from the distances already taken, over all elements."""
    near = fits.ref_energy
    spread = fits.dist2.mean(axis=1) - near
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(spread > 0, near / np.where(spread > 0, spread, 1.0), math.nan)


def merge_test(fits: FitTable, with_base: bool) -> MergeTest | None:
    """The merge test over informative tensors (SPEC.md §6.5); its critical value depends on whether a base is a
    reference."""
    if not len(fits):
        return None
    weights = fits.numel.astype(float)
    # References: the given models; without a base also the candidates' mean, standing in for their unknown common
    # base (a sibling sits near it and the fit reproduces it with weights 1/k; with a base ref_energy is |M - B|^2,
    # already among dist2); and the zero model (an unrelated model is nearer to nothing than to any candidate).
    nearest = fits.dist2.min(axis=1)
    for other in (fits.ref_energy, fits.raw_gram[:, 0, 0]):  # min() of the three as Python took it: a NaN later on
        nearest = np.where(other < nearest, other, nearest)  # is skipped
    shares = merge_shares(fits.rss, nearest)
    est = robust_estimate(shares, weights)
    critical = MERGE_SHARE_CRITICAL_BASE if with_base else MERGE_SHARE_CRITICAL
    value = est.value if math.isfinite(est.value) else 0.0
    mid: dict[str, float | None] = {}
    if not with_base:
        # The sibling null of the midpoint test is derived for two candidates (SPEC.md §6.5): with k of them the
        # untouched base itself reads 1/(k - 1), so with more the statistic is not reported and no test reads it.
        mean_first = (fits.ref_energy < fits.dist2.min(axis=1)) & (fits.ref_energy < fits.raw_gram[:, 0, 0])
        mid["mean_nearest"] = float(weights[mean_first].sum() / weights.sum())
        if fits.dist2.shape[1] == 2:
            ratio = robust_estimate(midpoint_ratios(fits), weights)
            mid |= {
                "midpoint_ratio": ratio.value if math.isfinite(ratio.value) else None,
                "midpoint_ci_low": ratio.ci_low if math.isfinite(ratio.ci_low) else None,
                "midpoint_ci_high": ratio.ci_high if math.isfinite(ratio.ci_high) else None,
                "midpoint_critical": MIDPOINT_CRITICAL,
            }
    return MergeTest(
        merge_share=value,
        ci_low=est.ci_low if math.isfinite(est.ci_low) else None,
        ci_high=est.ci_high if math.isfinite(est.ci_high) else None,
        critical=critical,
        tensors_above=int(np.sum(np.nan_to_num(shares, nan=-math.inf) >= critical)),
        tensors=len(fits),
        training_share=1.0 - value,
        rejects_single_parent=value >= critical,
        **mid,
    )

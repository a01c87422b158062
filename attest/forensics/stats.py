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

import numpy as np

from attest.forensics.fit import TensorFit
from attest.forensics.report import MergeTest
from attest.forensics.verdict import MERGE_SHARE_CRITICAL

BOOTSTRAP_DRAWS = 2000
BOOTSTRAP_SEED = 0
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


def robust_estimate(values: np.ndarray, weights: np.ndarray) -> RobustEstimate:
    """Weighted median over tensors with a 95% percentile-bootstrap interval over tensors."""
    ok = np.isfinite(values) & (weights > 0)
    v, w = values[ok], weights[ok]
    if len(v) == 0:
        return RobustEstimate(math.nan, math.nan, math.nan, 0)
    med = weighted_median(v, w)
    if len(v) < 2:
        return RobustEstimate(med, math.nan, math.nan, 1)
    meds = _bootstrap_medians(v, w)
    lo, hi = np.quantile(meds, [0.025, 0.975])
    return RobustEstimate(med, min(float(lo), med), max(float(hi), med), len(v))


def participation(
    values: np.ndarray, weights: np.ndarray, layers: list[list[int]], minimum: float
) -> tuple[RobustEstimate, bool]:
    """A participant's model-wide estimate, and whether it takes part: |value| >= minimum with an interval excluding
    0, model-wide or within one layer (a gradient merge can give a parent weight 0 in most tensors and 0.8 in the
    last layer: the median over all tensors is 0, the parent still takes part). `layers`: tensor indices per layer."""
    est = robust_estimate(values, weights)
    for e in (est, *(robust_estimate(values[idx], weights[idx]) for idx in layers if len(idx) >= 2)):
        if math.isfinite(e.value) and abs(e.value) >= minimum and (e.ci_low > 0 or e.ci_high < 0):
            return est, True
    return est, False


def merge_shares(rss: np.ndarray, nearest: np.ndarray) -> np.ndarray:
    """Per tensor, the share of the squared distance to the nearest single reference that the fitted merge removes:
    1 - RSS_t / min_X |M - X|_t^2 (nan where the model equals a reference in that tensor)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(nearest > 0, 1.0 - rss / np.where(nearest > 0, nearest, 1.0), math.nan)


def merge_test(fits: list[TensorFit]) -> MergeTest | None:
    """The merge test over informative tensors (SPEC.md §6.5)."""
    if not fits:
        return None
    weights = np.array([f.numel for f in fits], dtype=float)
    # References: the given models; without a base also the candidates' mean, standing in for their unknown common
    # base (a sibling sits near it and the fit reproduces it with weights 1/k; with a base ref_energy is |M - B|^2,
    # already among dist2); and the zero model (an unrelated model is nearer to nothing than to any candidate).
    nearest = np.array([min(float(np.min(f.dist2)), f.ref_energy, float(f.raw_gram[0, 0])) for f in fits])
    shares = merge_shares(np.array([f.rss for f in fits]), nearest)
    est = robust_estimate(shares, weights)
    critical = MERGE_SHARE_CRITICAL
    value = est.value if math.isfinite(est.value) else 0.0
    return MergeTest(
        merge_share=value,
        ci_low=est.ci_low if math.isfinite(est.ci_low) else None,
        ci_high=est.ci_high if math.isfinite(est.ci_high) else None,
        critical=critical,
        tensors_above=int(np.sum(np.nan_to_num(shares, nan=-math.inf) >= critical)),
        tensors=len(fits),
        training_share=1.0 - value,
        rejects_single_parent=value >= critical,
    )

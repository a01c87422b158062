"""From per-tensor coefficients to one estimate with a confidence interval, and their shape across layers.

Why a t-interval over tensors, weighted by size: a merge applies one recipe to every tensor, so each tensor is one
independent estimate of it, and the spread between tensors is the honest error (it includes rounding, training and
any gradient over layers). The per-tensor OLS errors alone are far too small: they ignore all of that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}

FLAT_RANGE = 0.02
"""Per-layer coefficients within this range of each other: one flat merge."""

GRADIENT_R2 = 0.9
"""A straight line (or two segments) in the layer index explaining this share of the variance: a gradient."""


def t975(dof: float) -> float:
    """Two-sided 95% Student t quantile (table to 10, then the Cornish-Fisher expansion; no scipy needed)."""
    if dof < 1:
        return math.inf
    d = int(dof)
    if d in _T975:
        return _T975[d]
    z = 1.959964
    return (
        z
        + (z**3 + z) / (4 * dof)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * dof**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * dof**3)
    )


@dataclass(frozen=True)
class Estimate:
    value: float
    ci_low: float
    ci_high: float
    se: float
    n_eff: float


def weighted_estimate(values: np.ndarray, weights: np.ndarray) -> Estimate:
    """Size-weighted mean with a t-interval on Kish's effective number of tensors."""
    ok = np.isfinite(values) & (weights > 0)
    v, w = values[ok], weights[ok]
    if len(v) == 0:
        return Estimate(math.nan, math.nan, math.nan, math.nan, 0.0)
    mean = float(np.sum(w * v) / np.sum(w))
    n_eff = float(np.sum(w) ** 2 / np.sum(w * w))
    if len(v) < 2 or n_eff < 1.5:
        return Estimate(mean, math.nan, math.nan, math.nan, n_eff)
    var = float(np.sum(w * (v - mean) ** 2) / np.sum(w)) * n_eff / (n_eff - 1)
    se = math.sqrt(var / n_eff)
    half = t975(n_eff - 1) * se
    return Estimate(mean, mean - half, mean + half, se, n_eff)


@dataclass(frozen=True)
class LayerSpread:
    shape: str  # flat | linear_gradient | piecewise_gradient | irregular | single_layer
    layer_range: float
    knots: list[tuple[int, float]]  # (layer, value) anchors of the fitted line / segments


def classify_spread(layers: list[int], values: list[float]) -> LayerSpread:
    """Flat, a straight line in the layer index, two straight segments, or none of these."""
    pts = [(i, v) for i, v in zip(layers, values, strict=True) if math.isfinite(v)]
    if len(pts) < 2:
        return LayerSpread("single_layer", 0.0, [(i, v) for i, v in pts])
    x = np.array([p[0] for p in pts], dtype=float)
    y = np.array([p[1] for p in pts])
    rng = float(y.max() - y.min())
    mean = float(y.mean())
    if rng <= FLAT_RANGE:
        return LayerSpread("flat", rng, [(int(x[0]), mean), (int(x[-1]), mean)])
    sst = float(np.sum((y - mean) ** 2))
    slope, icpt = np.polyfit(x, y, 1)
    r2_line = 1 - float(np.sum((y - (slope * x + icpt)) ** 2)) / sst
    if r2_line >= GRADIENT_R2:
        return LayerSpread(
            "linear_gradient", rng, [(int(x[0]), slope * x[0] + icpt), (int(x[-1]), slope * x[-1] + icpt)]
        )
    best: tuple[float, list[tuple[int, float]]] = (-math.inf, [])
    for j in range(1, len(x) - 1):  # one interior knot, continuous at the knot
        basis = np.stack([np.ones_like(x), x - x[0], np.clip(x - x[j], 0, None)], axis=1)
        c, *_ = np.linalg.lstsq(basis, y, rcond=None)
        pred = basis @ c
        r2 = 1 - float(np.sum((y - pred) ** 2)) / sst
        if r2 > best[0]:
            best = (r2, [(int(x[0]), float(pred[0])), (int(x[j]), float(pred[j])), (int(x[-1]), float(pred[-1]))])
    if len(x) >= 4 and best[0] >= GRADIENT_R2:
        return LayerSpread("piecewise_gradient", rng, best[1])
    return LayerSpread("irregular", rng, [(int(a), float(b)) for a, b in zip(x, y, strict=True)])

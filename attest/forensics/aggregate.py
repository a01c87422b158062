"""The shape of per-layer coefficients: flat (one merge), a gradient over layers, or neither (SPEC.md §6.4).

The model-wide estimates and their intervals are in `attest.forensics.stats` (weighted median, bootstrap over
tensors)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

FLAT_RANGE = 0.02
"""Per-layer coefficients within this range of each other: one flat merge."""

GRADIENT_R2 = 0.9
"""A straight line (or two segments) in the layer index explaining this share of the variance: a gradient."""


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

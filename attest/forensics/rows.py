"""detect's report tables over fitted tensors: per-tensor rows, where the unexplained elements concentrate, the linear
and passthrough readings of the coefficients (SPEC.md §6.4-6.6)."""

from __future__ import annotations

import heapq
import math
from collections import defaultdict

import numpy as np

from attest.checkpoint.reader import TensorTable
from attest.forensics import hints as H
from attest.forensics.fit import TensorFit
from attest.forensics.pairing import layer_of
from attest.forensics.report import Coefficient, Concentration, Hint, Share, TensorRows
from attest.forensics.stats import robust_estimate
from attest.forensics.verdict import SIGNIFICANT_WEIGHT


def tensor_rows(fits: list[TensorFit], part_of: list[list[float]], with_base: bool) -> TensorRows:
    """One row per fitted tensor (`part_of`: each tensor's participants' weights, `participant_weights`), held as
    columns."""
    n = len(fits)
    ints = np.array([(f.numel, f.differing, f.unexplained) for f in fits], dtype=np.int64).reshape(n, 3)
    floats = np.array([(f.cond, f.rss, f.ref_energy) for f in fits], dtype=np.float64).reshape(n, 3)
    cond, rss, ref = floats.T
    cos = np.full(n, math.nan)
    if with_base:
        has = ref > 0
        cos[has] = np.sqrt(np.maximum(0.0, 1 - rss[has] / ref[has]))
    coefs = np.array(part_of, dtype=np.float64).reshape(n, -1)
    names = [f.name for f in fits]
    return TensorRows(names, ints[:, 0], coefs, cond.copy(), cos, ints[:, 1].copy(), ints[:, 2].copy())


SHARE_MIN_SUM = 0.1
"""Tensors whose candidate coefficients sum to less than this in magnitude are left out of the shares: a ratio over
a sum near 0 is noise (a model unrelated to the candidates, a tensor no candidate changed)."""


def candidate_shares(per_tensor: np.ndarray, weights: np.ndarray, labels: list[str]) -> list[Share]:
    """Each candidate's share of the candidates' weight (SPEC.md §6.4) over the informative tensors (`per_tensor`:
    their candidate coefficients, a row per tensor; `weights`: their sizes). Empty with one candidate."""
    if len(labels) < 2 or not len(per_tensor):
        return []
    total = per_tensor.sum(axis=1)
    ok = np.abs(total) >= SHARE_MIN_SUM
    if not ok.any():
        return []
    ratios = per_tensor[ok] / total[ok, None]
    out = []
    for j, lab in enumerate(labels):
        est = robust_estimate(ratios[:, j], weights[ok])
        lo, hi = finite_or_none(est.ci_low), finite_or_none(est.ci_high)
        out.append(Share(candidate=lab, value=finite(est.value), ci_low=lo, ci_high=hi))
    return out


def participant_weights(f: TensorFit, with_base: bool) -> list[float]:
    """Candidates' coefficients, then with a base its weight 1 - sum(l) + s (s: the fitted base rescaling)."""
    if not with_base:
        return [float(x) for x in f.coef]
    vals = [float(x) for x in f.coef[:-1]]
    return [*vals, 1.0 - sum(vals) + float(f.coef[-1])]


def concentration(fits: list[TensorFit], by_layer: dict[int, list[int]]) -> list[Concentration]:
    """The tensors and layers with the largest unexplained share (`by_layer`: layer -> indices into `fits`)."""
    worst = heapq.nsmallest(5, (f for f in fits if f.unexplained > 0), key=lambda f: -f.unexplained / max(f.numel, 1))
    out = [Concentration(name=f.name, unexplained=f.unexplained, fraction=f.unexplained / f.numel) for f in worst]
    per_layer = {
        li: (sum(fits[i].unexplained for i in idx), sum(fits[i].numel for i in idx)) for li, idx in by_layer.items()
    }
    layers = sorted(per_layer.items(), key=lambda kv: -kv[1][0] / max(kv[1][1], 1))
    out += [Concentration(name=f"layer {li}", unexplained=u, fraction=u / n) for li, (u, n) in layers[:3] if u > 0]
    return out


def linear_hint(coefs: list[Coefficient], with_base: bool) -> Hint:
    parts = []
    for c in coefs:
        frac = H.simple_ratio(c.value, c.ci_low, c.ci_high)
        parts.append(f"{c.candidate} {c.value:.4f}" + (f" (~{frac})" if frac else ""))
    base_w = coefs[-1] if with_base else None
    if base_w is not None and base_w.significant:
        return Hint(
            method="task_arithmetic",
            evidence="B + sum of weighted deltas with the candidate weights not summing to 1 (the same recipe as a "
            "linear merge that includes the base): " + ", ".join(parts),
        )
    return Hint(method="linear", evidence="a weighted average, weights summing to 1: " + ", ".join(parts))


def passthrough_coefficients(
    mapping: list[H.Mapping], labels: list[str], fits: list[TensorFit], msrc: TensorTable
) -> list[Coefficient]:
    """For a passthrough merge a candidate's coefficient is the share of layer parameters copied from it."""
    size: dict[int, int] = defaultdict(int)
    for name in msrc.where:
        key = layer_of(name)
        if key is not None:
            info = msrc.info(name)
            size[key.index] += math.prod(info.shape)
    total = sum(size.values()) or 1
    share = [0.0] * len(labels)
    for m in mapping:
        share[m.candidate] += size[m.model_layer] / total
    return [
        Coefficient(candidate=lab, value=s, ci_low=s, ci_high=s, significant=s >= SIGNIFICANT_WEIGHT)
        for lab, s in zip(labels, share, strict=True)
    ]


def finite(x: float) -> float:
    return float(x) if math.isfinite(x) else 0.0


def finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None

"""detect's report tables over fitted tensors: per-tensor rows, where the unexplained elements concentrate, the linear
and passthrough readings of the coefficients (SPEC.md §6.4-6.6)."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from attest.checkpoint.reader import TensorTable
from attest.forensics import hints as H
from attest.forensics.fit_table import FitTable
from attest.forensics.pairing import layer_of
from attest.forensics.report import Coefficient, Concentration, Hint, LayerMap, Share, TensorRows
from attest.forensics.stats import robust_estimate
from attest.forensics.verdict import SIGNIFICANT_WEIGHT


def tensor_rows(fits: FitTable, part_of: np.ndarray) -> TensorRows:
    """One row per fitted tensor (`part_of`: each tensor's participants' weights, FitTable.participant_weights),
    held as columns."""
    cos = np.full(len(fits), math.nan)
    if fits.with_base:
        rss, ref = fits.rss, fits.ref_energy
        has = ref > 0
        cos[has] = np.sqrt(np.maximum(0.0, 1 - rss[has] / ref[has]))
    names = list(fits.names)
    return TensorRows(names, fits.numel, part_of, fits.cond, cos, fits.differing, fits.unexplained)


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


def concentration(fits: FitTable, by_layer: dict[int, list[int]]) -> list[Concentration]:
    """The tensors and layers with the largest unexplained share (`by_layer`: layer -> rows of `fits`)."""
    u, n = fits.unexplained, fits.numel
    some = np.flatnonzero(u > 0)
    share = -u[some] / np.maximum(n[some], 1)
    worst = some[np.argsort(share, kind="stable")[:5]].tolist()  # ties in row order
    out = [Concentration(name=fits.names[i], unexplained=int(u[i]), fraction=int(u[i]) / int(n[i])) for i in worst]
    per_layer = {li: (int(u[idx].sum()), int(n[idx].sum())) for li, idx in by_layer.items()}
    layers = sorted(per_layer.items(), key=lambda kv: -kv[1][0] / max(kv[1][1], 1))
    out += [Concentration(name=f"layer {li}", unexplained=x, fraction=x / m) for li, (x, m) in layers[:3] if x > 0]
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


def mapping_text(mapping: list[H.Mapping], labels: list[str]) -> str:
    """`0<-a[1], 1<-b[0]`: each model layer and the candidate layer it was copied from (hints, notes, reasons)."""
    return ", ".join(f"{m.model_layer}<-{labels[m.candidate]}[{m.candidate_layer}]" for m in mapping)


def layer_maps(mapping: list[H.Mapping], labels: list[str]) -> list[LayerMap]:
    """The report's `layer_mapping` rows of a mapping."""
    return [LayerMap(model_layer=m.model_layer, candidate=labels[m.candidate], candidate_layer=m.candidate_layer)
            for m in mapping]  # fmt: skip


def passthrough_coefficients(mapping: list[H.Mapping], labels: list[str], msrc: TensorTable) -> list[Coefficient]:
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

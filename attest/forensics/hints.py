"""Method hints: which merge method the weights look like (SPEC.md §6.6). Hints are evidence, not proof."""

from __future__ import annotations

import contextlib
import math
from collections import abc, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from attest.forensics.fit_table import FitTable, total
from attest.forensics.pairing import LayerKey, layer_of

SPARSE_EXCESS = 0.05
"""Share of elements with a non-zero candidate delta that are exactly B in M but not in the rounded linear recipe,
above which the merge was sparsified (TIES / DARE / breadcrumbs)."""

TIES_MAGNITUDE_RATIO = 0.6
"""Mean |delta| of the dropped elements over that of the kept ones: TIES trims the smallest, DARE drops at random."""

SLERP_MIN_EXCESS = 0.002
"""slerp and linear differ by sum(coefficients) - 1; below this predicted excess they cannot be told apart."""


@dataclass(frozen=True)
class Mapping:
    model_layer: int
    candidate: int
    candidate_layer: int


def layer_mapping(
    model_digests: abc.Mapping[str, bytes],
    cand_digests: Sequence[abc.Mapping[str, bytes]],
    shared: set[bytes],
) -> tuple[list[Mapping], bool, int, list[int]]:
    """Map each model layer to a candidate layer whose every tensor is bit-identical (renumbering allowed).

    `shared`: the model's digests that some candidate tensor has (attest.forensics.digests.shared_digests).
    Returns the mapping, whether every non-layer tensor equals the same-name tensor of some candidate, the number of
    model layers and each candidate's number of layers. Memory: an index only over the digests of model layers whose
    every tensor is shared (none for a plain merge; building the whole index held ~1 KB per tensor at 10^5
    tensors)."""
    cand_layers: list[set[int]] = [set() for _ in cand_digests]
    for c, digests in enumerate(cand_digests):
        for name in digests:
            key = layer_of(name)
            if key is not None:
                cand_layers[c].add(key.index)
    # Model layers in first-seen order; None once some tensor of the layer is in no candidate layer.
    layers: dict[tuple[str, int], list[tuple[LayerKey, bytes]] | None] = {}
    non_layer_ok = True
    for name, dig in model_digests.items():
        key = layer_of(name)
        if key is None:
            if not any(d.get(name) == dig for d in cand_digests):
                non_layer_ok = False
            continue
        lk = (key.prefix, key.index)
        items = layers.setdefault(lk, [])
        if items is None:
            continue
        if dig in shared:  # a candidate tensor has it; whether a layer tensor, the index below says
            items.append((key, dig))
        else:
            layers[lk] = None
    wanted = {dig for items in layers.values() if items for _, dig in items}
    index: dict[tuple[str, str, bytes], set[tuple[int, int]]] = defaultdict(set)
    if wanted:
        for c, digests in enumerate(cand_digests):
            for name, dig in digests.items():
                if dig in wanted and (key := layer_of(name)) is not None:
                    index[(key.prefix, key.suffix, dig)].add((c, key.index))
    mapping: list[Mapping] = []
    for (_prefix, idx), entries in sorted(layers.items(), key=lambda kv: kv[0][1]):
        common: set[tuple[int, int]] | None = None
        for key, dig in entries or []:
            found = index.get((key.prefix, key.suffix, dig), set())
            common = found if common is None else common & found
            if not common:
                break
        if common:
            c, k = min(common, key=lambda ck: (ck[1] != idx, ck[0], ck[1]))
            mapping.append(Mapping(idx, c, k))
    n_layers = len({idx for (_p, idx) in layers})
    return mapping, non_layer_ok, n_layers, [len(c) for c in cand_layers]


def is_passthrough(mapping: list[Mapping], n_layers: int, cand_layers: list[int]) -> bool:
    """Every layer copied, and from more than one place or renumbered (a plain copy is identity, not a merge)."""
    if n_layers == 0 or len(mapping) != n_layers:
        return False
    sources = {m.candidate for m in mapping}
    renumbered = any(m.model_layer != m.candidate_layer for m in mapping)
    return len(sources) > 1 or renumbered or any(n != n_layers for n in cand_layers)


def sparse_hint(fits: FitTable) -> tuple[str, str] | None:
    """TIES / DARE: far more exact-zero deltas than the dense recipe rounds to (needs a base)."""
    eligible = int(fits.zero_eligible.sum())
    if eligible == 0:
        return None
    observed = int(fits.zero_observed.sum())
    expected = int(fits.zero_expected.sum())
    excess = (observed - expected) / eligible
    if excess < SPARSE_EXCESS:
        return None
    n_excess = int(fits.excess_zero.sum())
    kept = int(fits.kept.sum())
    dropped_mag = total(fits.excess_zero_delta) / max(n_excess, 1)
    kept_mag = total(fits.kept_delta) / max(kept, 1)
    ratio = dropped_mag / kept_mag if kept_mag > 0 else math.nan
    method = "ties" if ratio < TIES_MAGNITUDE_RATIO else "dare"
    why = "smallest deltas were trimmed" if method == "ties" else "deltas were dropped regardless of size"
    return method, (
        f"{excess:.1%} of elements with a candidate delta are exactly the base in the model but not in the dense "
        f"recipe ({observed} observed vs {expected} expected zeros); dropped deltas average {ratio:.2f}x the kept "
        f"ones' magnitude: {why}"
    )


def slerp_hint(fits: FitTable, pair: tuple[int, int]) -> str | None:
    """slerp: each tensor's two coefficients (a, b) lie on (sin((1-t)θ), sin(tθ)) / sin θ, not on a + b = 1.

    `pair` indexes the two endpoint vectors in FitTable.raw_gram (0 is the model); `fits`: the informative ones.
    Arrays over tensors."""
    i, j = pair
    if len(fits) < 2:
        return None
    g = fits.raw_gram
    gii, gjj, gij = g[:, i, i], g[:, j, j], g[:, i, j]
    ok = (gii > 0) & (gjj > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cosang = gij / np.sqrt(np.where(ok, gii * gjj, 1.0))
    g, cosang = g[ok & (np.abs(cosang) <= 0.9995)], cosang[ok & (np.abs(cosang) <= 0.9995)]
    theta = np.arccos(np.clip(cosang, -1.0, 1.0))
    ab, solved = _solve2(g[:, [i, j]][:, :, [i, j]], g[:, 0, [i, j]])
    a, b = ab[:, 0], ab[:, 1]
    keep = solved & (a > 0) & (b > 0)
    a, b, theta = a[keep], b[keep], theta[keep]
    t = _slerp_t(b / a, theta)
    pred = (np.sin((1 - t) * theta) + np.sin(t * theta)) / np.sin(theta) - 1
    on = pred >= SLERP_MIN_EXCESS
    obs_a, pred_a, ts = (a + b - 1)[on], pred[on], t[on]
    if len(obs_a) < 2:
        return None
    if float(np.median(np.abs(obs_a - pred_a) / pred_a)) > 0.25:
        return None
    return (
        f"in {len(obs_a)} tensors the coefficient pair lies on the slerp curve (median t = {np.median(ts):.3f}); "
        f"sum of coefficients exceeds 1 by {np.median(obs_a):.4f}, slerp predicts {np.median(pred_a):.4f}, linear 0"
    )


def _solve2(m: np.ndarray, rhs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Solve each 2x2 system (stacked); a singular one is left out (second result False there)."""
    try:
        return np.linalg.solve(m, rhs[:, :, None])[:, :, 0], np.ones(len(m), dtype=bool)
    except np.linalg.LinAlgError:  # some system is singular: one by one
        out, solved = np.zeros((len(m), 2)), np.zeros(len(m), dtype=bool)
        for x in range(len(m)):
            with contextlib.suppress(np.linalg.LinAlgError):
                out[x], solved[x] = np.linalg.solve(m[x], rhs[x]), True
        return out, solved


def _slerp_t(ratio: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Solve sin(tθ) / sin((1-t)θ) = ratio for t in (0, 1) by bisection (the left side increases in t)."""
    lo, hi = np.zeros_like(ratio), np.ones_like(ratio)
    for _ in range(60):
        mid = (lo + hi) / 2
        den = np.sin((1 - mid) * theta)
        with np.errstate(divide="ignore", invalid="ignore"):
            val = np.where(den <= 0, math.inf, np.sin(mid * theta) / np.where(den <= 0, 1.0, den))
        below = val < ratio
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return (lo + hi) / 2


def simple_ratio(value: float, lo: float | None, hi: float | None) -> str | None:
    """A small fraction inside the confidence interval (4/7 for weights 1.0 : 0.75), as a readable hint. The
    interval is widened to 2^-8 of the value: mergekit's task arithmetic rounds its weights to bf16 (0.6 -> 0.6016)."""
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    slack = abs(value) * 2.0**-8
    for den in range(1, 21):
        frac = Fraction(round(value * den), den)
        if lo - slack <= float(frac) <= hi + slack:
            return f"{frac.numerator}/{frac.denominator}" if frac.denominator != 1 else str(frac.numerator)
    return None

"""Routed experts in detect (SPEC.md §6.9): per-expert coefficients, and which parent each expert comes from.

A plain merge gives every expert the same coefficients. A frankenMoE (mergekit-moe style, or experts swapped in from
other models) copies whole experts: each model expert then equals, bit for bit, an expert (or the dense MLP) of one
candidate, maybe at another index, or after training sits much nearer one candidate's same-index expert than any
other. The expert map says which, for every expert, once any expert shows that pattern.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np

from attest.checkpoint.canonical import PER_EXPERT, ExpertKey, expert_of
from attest.forensics.fit_table import FitTable
from attest.forensics.pairing import layer_of
from attest.forensics.report import ExpertMatch, ExpertRows

PROJS = ("gate_proj", "up_proj", "down_proj")
NEAR_RATIO = 0.5
"""An expert is nearest one candidate when its distance to it is at most this share of the distance to the next."""


def expert_rows(fits: FitTable, part_of: np.ndarray, informative: np.ndarray) -> ExpertRows:
    """Size-weighted coefficients of each routed expert over its gate, up and down projections, held as columns
    (`part_of`: each tensor's participants' weights; only `informative` tensors count for them)."""
    groups: dict[str, tuple[ExpertKey, list[int]]] = {}
    for i, name in enumerate(fits.names):
        key = expert_of(name)
        if key is not None:
            groups.setdefault(key.expert_name, (key, []))[1].append(i)
    order = sorted(groups, key=_order)
    n, participants = len(order), part_of.shape[1]
    ints = np.zeros((n, 4), dtype=np.int64)  # layer (-1: none), index, numel, unexplained
    coefs = np.full((n, participants), math.nan)
    has = np.zeros(n, dtype=bool)  # some tensor of the expert determines coefficients (else none listed)
    for r, name in enumerate(order):
        key, rows = groups[name]
        idx = np.array(rows, dtype=np.intp)
        used = idx[informative[idx]]
        if len(used):  # size-weighted mean of the finite values, summed left to right (a few tensors)
            vals, w = part_of[used], fits.numel[used].astype(float)[:, None]
            ok = np.isfinite(vals)
            den = np.cumsum(np.where(ok, w, 0.0), axis=0)[-1] + 0.0
            num = np.cumsum(np.where(ok, vals * w, 0.0), axis=0)[-1] + 0.0  # + 0.0: sum()'s start, no -0.0
            with np.errstate(invalid="ignore", divide="ignore"):
                coefs[r] = np.where(ok.any(axis=0), num / den, math.nan)
        layer = _layer(name)
        numel, unexplained = int(fits.numel[idx].sum()), int(fits.unexplained[idx].sum())
        ints[r] = (-1 if layer is None else layer, key.expert, numel, unexplained)
        has[r] = bool(len(used))
    layer_col, index, numel_col, unexplained_col = (ints[:, c].copy() for c in range(4))
    return ExpertRows(order, layer_col, index, numel_col, coefs, unexplained_col, has)


def _expert_digests(digests: Mapping[str, bytes], among: set[bytes] | None = None) -> dict[str, tuple[bytes, ...]]:
    """expert name -> (gate, up, down) digests, for experts with all three projections (and, with `among`, all three
    digests in it: a model expert can only be a copy of a candidate's if every projection is some candidate tensor)."""
    parts: dict[str, list[bytes | None]] = {}
    for name, dig in digests.items():
        key = expert_of(name)
        if key is not None and key.proj in PROJS and (among is None or dig in among):
            parts.setdefault(key.expert_name, [None, None, None])[PROJS.index(key.proj)] = dig
    return {
        e: (p[0], p[1], p[2]) for e, p in parts.items() if p[0] is not None and p[1] is not None and p[2] is not None
    }


def _dense_mlps(digests: Mapping[str, bytes]) -> dict[str, tuple[bytes, ...]]:
    """`P.mlp` -> digests of a dense MLP's (gate, up, down) (a candidate whose MLP became an expert)."""
    out: dict[str, tuple[bytes, ...]] = {}
    for name in digests:
        if name.endswith(".mlp.gate_proj.weight") and not PER_EXPERT.match(name):
            prefix = name[: -len(".gate_proj.weight")]
            names = [f"{prefix}.{p}.weight" for p in PROJS]
            if all(n in digests for n in names):
                out[prefix] = tuple(digests[n] for n in names)
    return out


def _order(expert: str) -> tuple[int, str, int]:
    prefix, index = expert.rsplit(".", 1)
    layer = _layer(expert)
    return (layer if layer is not None else -1, prefix, int(index))


def _layer(name: str) -> int | None:
    key = layer_of(name + ".x")
    return key.index if key is not None else None


def expert_map(
    mdig: Mapping[str, bytes],
    cdig: Sequence[Mapping[str, bytes]],
    labels: list[str],
    fits: FitTable,
    shared: set[bytes],
) -> list[ExpertMatch]:
    """Each model expert's source, when the experts come from different places; [] for a uniform merge. Candidate
    experts are indexed only for model experts whose every projection is some candidate tensor (none for a plain
    merge: the whole index held ~0.5 KB per tensor at 10^5 tensors)."""
    copies = _expert_digests(mdig, among=shared)
    identical: dict[str, tuple[int, str]] = {}
    if copies:
        wanted = {dig for digs in copies.values() for dig in digs}
        pool: dict[tuple[int | None, tuple[bytes, ...]], tuple[int, str]] = {}
        for ci, d in enumerate(cdig):
            for name, digs in [*_expert_digests(d, among=wanted).items(), *_dense_mlps(d).items()]:
                pool.setdefault((_layer(name), digs), (ci, name))
        identical = {e: hit for e, digs in copies.items() if (hit := pool.get((_layer(e), digs))) is not None}
    dist2: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(len(labels)))
    norm2: dict[str, float] = defaultdict(float)
    for i, name in enumerate(fits.names):
        key = expert_of(name)
        if key is not None:
            dist2[key.expert_name] += fits.dist2[i, : len(labels)]
            norm2[key.expert_name] += float(fits.raw_gram[i, 0, 0])
    nearest: dict[str, tuple[int, float]] = {}
    for e, d2 in dist2.items():
        order = np.argsort(d2)
        near = len(labels) == 1 or d2[order[0]] <= NEAR_RATIO**2 * d2[order[1]]
        if near and norm2[e] > 0:
            nearest[e] = (int(order[0]), math.sqrt(float(d2[order[0]]) / norm2[e]))
    sources = {c for c, _ in identical.values()} | {c for c, _ in nearest.values()}
    if not identical and len(sources) < 2:
        return []
    out = []
    for e in sorted(_expert_digests(mdig), key=_order):
        if e in identical:
            ci, src = identical[e]
            out.append(ExpertMatch(expert=e, candidate=labels[ci], candidate_expert=src, identical=True, distance=0.0))
        elif e in nearest:
            ci, dist = nearest[e]
            out.append(ExpertMatch(expert=e, candidate=labels[ci], candidate_expert=e, identical=False, distance=dist))
    return out

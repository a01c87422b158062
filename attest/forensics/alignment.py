"""Permutation alignment (SPEC.md §6.10): undo a function-preserving permutation of the model before fitting.

Permuting the residual stream, the MLP units of a layer, or its KV groups and query heads leaves a transformer's
function unchanged and defeats every elementwise comparison. When the plain fit leaves weight matrices uncorrelated
with every given model, detect matches the model's units to a reference (the mean of the candidates), weight-matching
style: the residual dimensions by the cosine of their embedding / lm_head columns (token rows are never permuted),
then per layer the MLP units by their gate and up rows and down columns, the KV groups by their k and v blocks plus
the sums of their query blocks and o_proj columns (invariant to the order of heads inside a group), then the query
heads inside each matched group; each assignment is solved exactly (`scipy.optimize.linear_sum_assignment`, maximum
total cosine). The permutations are propagated through every tensor with a known role and the model is read through
the permuted view; the report says which permutations were found and how well the matched units agree.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from attest.bounded import read_bounded
from attest.checkpoint.canonical import CanonicalView
from attest.checkpoint.reader import (
    ARRAY_DTYPES,
    MAX_CONFIG_BYTES,
    TensorTable,
    as_float32,
    raw_digest_of,
    sampled_digest,
)
from attest.errors import InputError
from attest.forensics.fit_table import FitTable
from attest.forensics.report import AlignmentReport, DetectReport, PermutationFound
from attest.strict_json import strict_loads

if TYPE_CHECKING:
    import torch

MIN_COSINE = 0.5
"""Matched units must agree at least this much on average (cosine) in every permutation for the alignment to be
applied; an unrelated model's best matches stay near 0 (the same bar as the relatedness correlation, §6.5)."""

Key = tuple[str, int | None]  # ("H", None) residual, ("I", L) MLP units, ("Q", L) query rows, ("KV", L) k/v rows
_LAYER = re.compile(r"^(?P<prefix>.*\.)?layers\.(?P<layer>\d+)\.(?P<suffix>.+)$")
_LAYER_ROLES: dict[str, tuple[str, ...]] = {
    "self_attn.q_proj.weight": ("Q", "H"),
    "self_attn.q_proj.bias": ("Q",),
    "self_attn.k_proj.weight": ("KV", "H"),
    "self_attn.k_proj.bias": ("KV",),
    "self_attn.v_proj.weight": ("KV", "H"),
    "self_attn.v_proj.bias": ("KV",),
    "self_attn.o_proj.weight": ("H", "Q"),
    "self_attn.o_proj.bias": ("H",),
    "mlp.gate_proj.weight": ("I", "H"),
    "mlp.up_proj.weight": ("I", "H"),
    "mlp.down_proj.weight": ("H", "I"),
    "mlp.gate_proj.bias": ("I",),
    "mlp.up_proj.bias": ("I",),
    "mlp.down_proj.bias": ("H",),
    "input_layernorm.weight": ("H",),
    "input_layernorm.bias": ("H",),
    "post_attention_layernorm.weight": ("H",),
    "post_attention_layernorm.bias": ("H",),
    "self_attn.q_norm.weight": ("",),  # per head dimension, shared by all heads: unchanged
    "self_attn.k_norm.weight": ("",),
}
_TOP_ROLES: dict[str, tuple[str, ...]] = {
    "embed_tokens.weight": ("", "H"),
    "lm_head.weight": ("", "H"),
    "norm.weight": ("H",),
    "norm.bias": ("H",),
}


def role_of(name: str) -> tuple[Key | None, ...] | None:
    """Which permutation indexes each axis of a tensor (None: an axis that is never permuted); None: unknown."""
    m = _LAYER.match(name)
    if m is not None:
        roles = _LAYER_ROLES.get(m["suffix"])
        layer: int | None = int(m["layer"])
    else:
        roles = next((r for s, r in _TOP_ROLES.items() if name == s or name.endswith("." + s)), None)
        layer = None
    if roles is None:
        return None
    return tuple(None if r == "" else (r, None if r == "H" else layer) for r in roles)


@dataclass
class Heads:
    heads: int
    kv: int
    dim: int


@dataclass
class Alignment:
    """Permutations of the model's units onto the reference's: aligned[..., i, ...] = model[..., perm[i], ...]."""

    perms: dict[Key, np.ndarray] = field(default_factory=dict)
    found: list[PermutationFound] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def confident(self) -> bool:
        return bool(self.found) and all(p.cosine >= MIN_COSINE for p in self.found)

    @property
    def moved(self) -> bool:
        return any(p.moved for p in self.found)


def _cosine(sim: np.ndarray, nr: np.ndarray, nm: np.ndarray) -> np.ndarray:
    return sim / np.sqrt(np.maximum(np.outer(nr, nm), 1e-300))


def _assign(kind: str, layer: int | None, cos: np.ndarray) -> tuple[np.ndarray, PermutationFound]:
    from scipy.optimize import linear_sum_assignment  # lazy heavy dependency: only when a fit needs alignment

    rows, cols = linear_sum_assignment(cos, maximize=True)
    perm = cols[np.argsort(rows)]
    matched = cos[np.arange(len(perm)), perm]
    other = cos.copy()
    other[np.arange(len(perm)), perm] = -np.inf
    runner = other.max(axis=1) if cos.shape[1] > 1 else np.full(len(perm), np.nan)
    found = PermutationFound(
        kind=kind,
        layer=layer,
        size=len(perm),
        moved=int(np.count_nonzero(perm != np.arange(len(perm)))),
        cosine=float(matched.mean()),
        runner_up=float(np.nanmean(runner)) if np.isfinite(runner).any() else None,
    )
    return perm, found


class _Reader:
    """float32 tensors of the model and the reference (mean of the candidates), pages released after use."""

    def __init__(self, model: TensorTable, refs: list[TensorTable]) -> None:
        self.model, self.refs = model, refs

    def has(self, name: str) -> bool:
        """Stored as floating weights in the model and every reference."""
        return all(name in t.where and t.info(name).dtype in ARRAY_DTYPES for t in (self.model, *self.refs))

    def pair(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        m = _load(self.model, name)
        refs = [_load(x, name) for x in self.refs]
        for t in (self.model, *self.refs):
            t.release(name)
        if any(r.shape != m.shape for r in refs):
            raise InputError(self.model.folder, f"tensor {name!r} has another shape than in the candidates")
        return m, np.stack(refs).mean(axis=0, dtype=np.float32)


def _load(table: TensorTable, name: str) -> np.ndarray:
    """A tensor in its shape as float32 (a copy: the pages are released after)."""
    return as_float32(table.array(name)).reshape(table.info(name).shape).copy()


def find_alignment(model: TensorTable, refs: list[TensorTable], heads: Heads | None) -> Alignment:
    """Match the model's residual dimensions, MLP units, KV groups and query heads to the reference's."""
    al = Alignment()
    rd = _Reader(model, refs)
    by_layer: dict[int, dict[str, str]] = {}
    top: list[str] = []
    for name in model.where:
        m = _LAYER.match(name)
        if m is not None and m["suffix"] in _LAYER_ROLES:
            by_layer.setdefault(int(m["layer"]), {})[m["suffix"]] = name
        elif m is None and role_of(name) is not None and (name.endswith(("embed_tokens.weight", "lm_head.weight"))):
            top.append(name)
    # Residual stream: columns of the embedding and lm_head (their rows are tokens, never permuted).
    sim = nr = nm = None
    for name in top:
        if not rd.has(name) or model.info(name).shape[-1:] == ():
            continue
        mt, rt = rd.pair(name)
        s = (rt.T @ mt).astype(np.float64)  # float32 products: cosines for matching, not a fit
        sim = s if sim is None else sim + s
        a, b = (rt**2).sum(0, dtype=np.float64), (mt**2).sum(0, dtype=np.float64)
        nr, nm = (a, b) if nr is None or nm is None else (nr + a, nm + b)
    if sim is None or nr is None or nm is None:
        al.notes.append("no embedding or lm_head shared with the candidates: the residual stream cannot be matched")
        return al
    ph, found = _assign("residual", None, _cosine(sim, nr, nm))
    al.perms["H", None] = ph
    al.found.append(found)
    for layer in sorted(by_layer):
        names = by_layer[layer]
        _match_mlp(al, rd, layer, names, ph)
        _match_heads(al, rd, layer, names, ph, heads)
    return al


def _match_mlp(al: Alignment, rd: _Reader, layer: int, names: dict[str, str], ph: np.ndarray) -> None:
    sim = nr = nm = None
    for suffix, rows in (("mlp.gate_proj.weight", True), ("mlp.up_proj.weight", True), ("mlp.down_proj.weight", False)):
        name = names.get(suffix)
        if name is None or not rd.has(name):
            continue
        mt, rt = rd.pair(name)
        # unit features as rows: gate/up rows over the (aligned) residual, down columns over the aligned residual
        mf, rf = (mt[:, ph], rt) if rows else (mt[ph, :].T, rt.T)
        s = (rf @ mf.T).astype(np.float64)
        a, b = (rf**2).sum(1, dtype=np.float64), (mf**2).sum(1, dtype=np.float64)
        sim, nr, nm = (s, a, b) if sim is None or nr is None or nm is None else (sim + s, nr + a, nm + b)
    if sim is not None and nr is not None and nm is not None:
        perm, found = _assign("mlp_units", layer, _cosine(sim, nr, nm))
        al.perms["I", layer] = perm
        al.found.append(found)


def _match_heads(
    al: Alignment, rd: _Reader, layer: int, names: dict[str, str], ph: np.ndarray, heads: Heads | None
) -> None:
    parts = {s: names.get(f"self_attn.{s}_proj.weight") for s in "qkvo"}
    if any(n is None or not rd.has(n) for n in parts.values()):
        return
    if heads is None:
        al.notes.append(f"layer {layer}: no head layout in config.json, attention heads not matched")
        return
    h, kv, d = heads.heads, heads.kv, heads.dim
    rep = h // kv
    t = {s: rd.pair(n) for s, n in parts.items() if n is not None}
    q_m, q_r = t["q"][0][:, ph], t["q"][1]
    k_m, k_r = t["k"][0][:, ph], t["k"][1]
    v_m, v_r = t["v"][0][:, ph], t["v"][1]
    o_m, o_r = t["o"][0][ph, :].T, t["o"][1].T  # rows = query dims
    if q_r.shape[0] != h * d or k_r.shape[0] != kv * d or o_r.shape[0] != h * d:
        al.notes.append(f"layer {layer}: attention shapes do not match config.json's heads, heads not matched")
        return
    hid = q_r.shape[1]

    def blocks(x: np.ndarray, n: int) -> np.ndarray:  # [n, rows_per_block * hidden]
        return x.reshape(n, -1).astype(np.float64)

    def group_sum(x: np.ndarray) -> np.ndarray:  # query-head blocks summed per KV group: order inside ignored
        return x.reshape(kv, rep, d * hid).sum(1).astype(np.float64)

    fm = np.concatenate([blocks(k_m, kv), blocks(v_m, kv), group_sum(q_m), group_sum(o_m)], axis=1)
    fr = np.concatenate([blocks(k_r, kv), blocks(v_r, kv), group_sum(q_r), group_sum(o_r)], axis=1)
    gperm, found = _assign("kv_groups", layer, _cosine(fr @ fm.T, _sq(fr), _sq(fm)))
    al.found.append(found)
    qm = np.concatenate([blocks(q_m, h), blocks(o_m, h)], axis=1)
    qr = np.concatenate([blocks(q_r, h), blocks(o_r, h)], axis=1)
    qperm = np.zeros(h, dtype=np.int64)
    cos_all, moved, runner = [], 0, []
    for g in range(kv):
        mine = np.arange(g * rep, (g + 1) * rep)
        theirs = np.arange(int(gperm[g]) * rep, (int(gperm[g]) + 1) * rep)
        fr_g, fm_g = qr[mine], qm[theirs]
        inner, f = _assign("query_heads", layer, _cosine(fr_g @ fm_g.T, _sq(fr_g), _sq(fm_g)))
        qperm[mine] = theirs[inner]
        cos_all.append(f.cosine)
        moved += f.moved
        if f.runner_up is not None:
            runner.append(f.runner_up)
    al.found.append(
        PermutationFound(
            kind="query_heads",
            layer=layer,
            size=h,
            moved=int(np.count_nonzero(qperm != np.arange(h))),
            cosine=float(np.mean(cos_all)),
            runner_up=float(np.mean(runner)) if runner else None,
        )
    )
    al.perms["KV", layer] = gperm
    al.perms["Q", layer] = qperm


def _sq(x: np.ndarray) -> np.ndarray:
    return np.asarray((x**2).sum(1))


def head_layout(folders: list[Path]) -> Heads | None:
    """Head counts from the first config.json among the folders that states them (validated; None if none does)."""
    for folder in folders:
        path = folder / "config.json"
        if not path.is_file():
            continue
        try:
            cfg = strict_loads(read_bounded(path, MAX_CONFIG_BYTES))
        except (ValueError, UnicodeDecodeError, RecursionError):
            continue
        cfg = cfg.get("text_config", cfg) if isinstance(cfg, dict) else None
        if not isinstance(cfg, dict):
            continue
        h, kv, hidden = cfg.get("num_attention_heads"), cfg.get("num_key_value_heads", None), cfg.get("hidden_size")
        kv = h if kv is None else kv
        d = cfg.get("head_dim") or (hidden // h if isinstance(hidden, int) and isinstance(h, int) and h > 0 else None)
        if all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in (h, kv, d)):
            assert isinstance(h, int) and isinstance(kv, int) and isinstance(d, int)
            if h % kv == 0:
                return Heads(h, kv, d)
    return None


def _row_index(key: Key, size: int, al: Alignment, heads: Heads | None) -> np.ndarray | None:
    perm = al.perms.get(key)
    if perm is None:
        return None
    p = np.asarray(perm, dtype=np.int64)
    if key[0] in ("Q", "KV"):
        assert heads is not None
        block = size // len(perm)
        p = (p[:, None] * block + np.arange(block)).reshape(-1)
    return p if len(p) == size else None


class AlignedView(CanonicalView):
    """A canonical view whose tensors are read permuted by an alignment (a copy per tensor, bits unchanged)."""

    def __init__(self, view: CanonicalView, al: Alignment, heads: Heads | None) -> None:
        TensorTable.__init__(self, view.folder, view.label, view.where)
        self.relayouts, self.notes, self.stored_of = view.relayouts, list(view.notes), view.stored_of
        self.renamed = view.renamed
        self.base_view, self.alignment, self.heads = view, al, heads
        self.unknown = [n for n in view.where if role_of(n) is None]

    def _aligned(self, name: str) -> np.ndarray | None:
        """The stored elements' bits of a tensor with a known role, permuted (flat, a copy), whatever its dtype (an
        FP8 model's digests are taken permuted too); None when nothing moves or its elements are sub-byte."""
        roles = role_of(name)
        info = self.info(name)
        flat = self.base_view.bits(name) if roles is not None and len(roles) == len(info.shape) else None
        if flat is None:
            return None
        t = flat.reshape(info.shape)
        changed = False
        for axis, key in enumerate(roles or ()):
            idx = _row_index(key, info.shape[axis], self.alignment, self.heads) if key is not None else None
            if idx is not None:
                t = np.take(t, idx, axis=axis)
                changed = True
        if not changed:
            return None
        out = np.ascontiguousarray(t).reshape(-1)
        out.flags.writeable = False
        return out

    def array(self, name: str) -> np.ndarray:
        dtype = ARRAY_DTYPES.get(self.info(name).dtype)
        t = self._aligned(name) if dtype is not None else None
        return self.base_view.array(name) if t is None or dtype is None else t.view(dtype)

    def flat(self, name: str) -> torch.Tensor:
        """The permuted tensor in torch (a copy; any whole-byte dtype), for callers that compute in torch."""
        import torch

        from attest.checkpoint.torch_dtypes import torch_dtype

        t = self._aligned(name)
        if t is None:
            return self.base_view.flat(name)
        signed = t.view(t.dtype.str.replace("u", "i")).copy()  # torch has no uint16/32/64 views to reinterpret
        return torch.from_numpy(signed).view(torch_dtype(self.info(name).dtype, self.folder))

    def load(self, name: str) -> torch.Tensor:
        return self.flat(name).reshape(self.info(name).shape)

    def raw_digest(self, name: str) -> bytes:
        t = self._aligned(name)
        if t is None:
            return self.base_view.raw_digest(name)
        return raw_digest_of(self.info(name), t.view(np.uint8))

    def sample_digest(self, name: str) -> bytes:
        t = self._aligned(name)
        if t is None:
            return self.base_view.sample_digest(name)
        data = t.view(np.uint8)
        return sampled_digest(self.info(name), lambda b, e: data[b:e].tobytes())

    def copy_digest(self, name: str, sampled_above: int) -> bytes:
        """As stored, through the two methods above (each reads the tensor permuted where it is)."""
        return self.raw_digest(name) if self.info(name).nbytes <= sampled_above else self.sample_digest(name)


def misaligned_matrices(fits: FitTable, model: TensorTable) -> list[str]:
    """Fitted weight matrices whose correlation with every given model is under MIN_COSINE: what a permutation of
    the model's units leaves behind (a fine-tune or a merge keeps every matrix near its parents)."""
    finite = np.isfinite(fits.corr)
    largest = np.where(finite, np.abs(fits.corr), -math.inf).max(axis=1, initial=-math.inf)
    low = finite.any(axis=1) & (largest < MIN_COSINE)  # no finite correlation (constant): no evidence
    return [fits.names[i] for i in np.flatnonzero(low).tolist() if len(model.info(fits.names[i]).shape) >= 2]


def align_and_refit(
    plain: DetectReport,
    misaligned: list[str],
    msrc: CanonicalView,
    csrc: list[CanonicalView],
    folders: list[Path],
    refit: Callable[[CanonicalView], DetectReport],
) -> DetectReport:
    """Match the model's units to the candidates and fit again on the permuted view when the match is confident."""
    heads = head_layout(folders)
    al = find_alignment(msrc, list(csrc), heads)
    view = AlignedView(msrc, al, heads)
    if al.confident and al.moved:
        report = refit(view)
        why = (
            f"{len(misaligned)} weight matrices were unrelated to every given model (e.g. {misaligned[0]}); the model "
            "is a function-preserving permutation of weights matched to the candidates, fitted again after alignment"
        )
    elif al.confident:
        report, why = plain, "matched every unit to its own index: no permutation to undo"
    else:
        weakest = min(al.found, key=lambda p: p.cosine) if al.found else None
        where = f" ({weakest.kind}, cosine {weakest.cosine:.3f})" if weakest is not None else ""
        report, why = plain, f"no confident match of the model's units to the candidates{where}: not applied"
    report.alignment = AlignmentReport(
        applied=al.confident and al.moved,
        reason=why,
        reference="mean of the candidates",
        plain_verdict=plain.verdict,
        plain_reason=plain.reason,
        permutations=al.found,
        unaligned_tensors=len(view.unknown),
    )
    report.notes.extend(f"alignment: {n}" for n in al.notes)
    if report.alignment.applied and view.unknown:
        report.notes.append(
            f"alignment: {len(view.unknown)} tensors of no known role were read as stored (e.g. {view.unknown[0]})"
        )
    return report

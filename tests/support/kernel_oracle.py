"""The torch/numpy implementation of detect's two sweeps that attest used before the compiled kernels
(attest.forensics.compiled): an independent reference the compiled sweeps are tested against
(tests/forensics/test_compiled_sweeps.py). Same definitions (SPEC.md §6.2-6.3), other arithmetic: batched GEMMs in
float64 for the Gram matrices, the recipe in float32 for storage of 16 bits or less (its own rounding in the
tolerance), bit-pattern comparisons."""

from __future__ import annotations

import threading

import numpy as np
import torch

from attest.forensics.kernels import (
    CHUNK_ELEMENTS,
    COEF_SIGMAS,
    RESOLVED_RATIO,
    RESOLVED_STRIDE,
    RVAR_MIN_ELEMENTS,
    RVAR_STRIDE,
    ULP_BINS,
    GramBlock,
    Piece,
    RefineStep,
    ResidualCounts,
)
from attest.forensics.pairing import MIN_EXPONENT, PRECISION_BITS

_EDGES = np.array([1, 2, 4, 16])
_INT_VIEW = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}

_LOCAL = threading.local()


def _buffer(tag: str, rows: int, cols: int, dtype: torch.dtype) -> torch.Tensor:
    """A per-thread work buffer reused across blocks and tensors: allocating and freeing megabytes per block costs
    page faults on every touch (the allocator trims them back to the system)."""
    key = (tag, rows, dtype)
    bufs: dict[tuple[str, int, torch.dtype], torch.Tensor] = _LOCAL.__dict__.setdefault("bufs", {})
    buf = bufs.get(key)
    if buf is None or buf.shape[1] < cols:
        buf = torch.empty((rows, max(cols, CHUNK_ELEMENTS)), dtype=dtype)
        bufs[key] = buf
    return buf[:, :cols]


def _stacked(tag: str, parts: list[torch.Tensor]) -> torch.Tensor:
    """The pieces' row as one (G, n) tensor in its stored dtype: a view for one piece, else a copy into a buffer."""
    if len(parts) == 1:
        return parts[0].unsqueeze(0)
    dtype = parts[0].dtype
    if any(p.dtype != dtype for p in parts):  # mixed storage dtypes in one input: promoted, a fresh tensor
        return torch.stack(parts)
    out = _buffer(tag, 1, len(parts) * parts[0].numel(), dtype)[0].view(len(parts), -1)
    return torch.stack(parts, out=out)


def _fill(dst: torch.Tensor, parts: list[torch.Tensor]) -> None:
    """dst (G, n) <- the pieces' row, converted (a copy into a wider dtype is exact)."""
    dst.copy_(_stacked("stack", parts))


_EXPONENT_BITS = 0x7FF0000000000000


def gram_block(pieces: list[Piece], k: int, with_base: bool, dtype: str, chunk: bool = False) -> GramBlock:
    """The Gram matrices of every piece of a block (`dtype`: M's storage dtype). `chunk`: the block is one chunk of
    a large tensor (chunks are cut the same way on every path; its resolved-element statistics come from every
    RESOLVED_STRIDE-th element); small tensors' results must not depend on which
    others share their block, so they take the batched path whatever the block's size."""
    g, n, nvec = len(pieces), pieces[0][0].numel(), k + 2
    bits = PRECISION_BITS[dtype]
    y = _buffer("gram", nvec, g * n, torch.float64).view(nvec, g, n)
    for i in range(1, k + 1):
        _fill(y[i], [p[i] for p in pieces])
    a = y[-1]
    if with_base:
        _fill(a, [p[-1] for p in pieces])
    else:
        torch.mean(y[1 : k + 1], dim=0, out=a)
    _fill(y[0], [p[0] for p in pieces])
    y[:-1].sub_(a)
    yb = y.permute(1, 0, 2)
    # Fresh small results: an array left alive inside the reused buffer would pin it.
    gram = torch.bmm(yb, yb.transpose(1, 2)).numpy()
    sums = y.sum(dim=2).T.contiguous().numpy()
    # A chunk of a large tensor (2^18 elements) takes its resolved-element statistics from every RESOLVED_STRIDE-th
    # element: plenty for the coefficients, and the costliest part of the sweep falls 4x.
    src = y
    if chunk and n >= RESOLVED_STRIDE * RVAR_MIN_ELEMENTS:
        ns = (n + RESOLVED_STRIDE - 1) // RESOLVED_STRIDE
        src = _buffer("strided", nvec, g * ns, torch.float64).view(nvec, g, ns).copy_(y[:, :, ::RESOLVED_STRIDE])
    # Resolved elements: the spread of the given models (the base's own deviation 0 included) is at least
    # RESOLVED_RATIO * 2^-p of s = |A| + spread, i.e. spread >= r / (1 - r) * |A| with r = RESOLVED_RATIO * 2^-p.
    gs, ns = src.shape[1], src.shape[2]
    deltas = src[1 : k + 1]
    spread, low = (_buffer(tag, 1, gs * ns, torch.float64)[0].view(gs, ns) for tag in ("spread", "low"))
    torch.amax(deltas, dim=0, out=spread)
    torch.amin(deltas, dim=0, out=low)
    if with_base:
        spread.clamp_(min=0.0)
        low.clamp_(max=0.0)
    spread.sub_(low)
    ratio = RESOLVED_RATIO * 2.0**-bits
    resolved = torch.ge(spread, torch.abs(src[-1], out=low).mul_(ratio / (1 - ratio)))  # bool (g, n)
    count = torch.count_nonzero(resolved, dim=1).numpy().astype(np.float64)
    gram_resolved, rounding_gram, rounding = _resolved_block(src, resolved, spread, dtype)
    return GramBlock(gram, sums, gram_resolved, rounding_gram, rounding, count)


def _variance(s: torch.Tensor, dtype: str) -> torch.Tensor:
    """u^2/12 per element, in place of s: u = 2^floor(log2 s) * 2^(1-p) from s's exponent bits (not below the
    subnormal spacing)."""
    bits = PRECISION_BITS[dtype]
    s.view(torch.int64).bitwise_and_(_EXPONENT_BITS)  # in place: s becomes 2^floor(log2 s)
    return s.mul_(2.0 ** (1 - bits)).clamp_(min=2.0 ** (MIN_EXPONENT[dtype] + 1 - bits)).square_().mul_(1 / 12)


def _resolved_block(
    y: torch.Tensor, resolved: torch.Tensor, spread: torch.Tensor, dtype: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resolved and rounding-variance Gram matrices of a block of small pieces, batched over the pieces (the
    rounding-variance one from every _rvar_stride(n)-th element of each piece, so a piece's result does not depend on
    its block)."""
    nvec, g, n = y.shape
    yb = y.permute(1, 0, 2)
    mask = _buffer("mask64", 1, g * n, torch.float64)[0].view(g, n).copy_(resolved)  # bool x float64 is 4x slower
    masked = _buffer("masked", nvec, g * n, torch.float64).view(nvec, g, n)
    torch.mul(y, mask, out=masked)
    gram_resolved = torch.bmm(masked.permute(1, 0, 2), yb.transpose(1, 2)).numpy()
    stride = _rvar_stride(n)
    ns = (n + stride - 1) // stride
    ys = _buffer("ys", nvec, g * ns, torch.float64).view(nvec, g, ns).copy_(y[:, :, ::stride])
    var = _buffer("var", 1, g * ns, torch.float64)[0].view(g, ns)
    torch.abs(ys[-1], out=var).add_(spread[:, ::stride])
    var = _variance(var, dtype).mul_(mask[:, ::stride]).mul_(stride)
    weighted = _buffer("weighted", nvec, g * ns, torch.float64).view(nvec, g, ns)
    torch.mul(ys, var, out=weighted)
    rounding_gram = torch.bmm(weighted.permute(1, 0, 2), ys.permute(1, 2, 0)).numpy()
    return gram_resolved, rounding_gram, var.sum(dim=1).numpy()


def _rvar_stride(n: int) -> int:
    """The rounding-variance Gram only has to be a good estimate: every RVAR_STRIDE-th element of a piece of at least
    RVAR_MIN_ELEMENTS (weighted by RVAR_STRIDE)."""
    return RVAR_STRIDE if n >= RVAR_MIN_ELEMENTS else 1


def _ordered(bits: np.ndarray) -> np.ndarray:
    """Map IEEE bit patterns (as signed ints) to integers whose difference counts ulps across the sign."""
    x = bits.astype(np.int64)
    mag = x & ((1 << (bits.itemsize * 8 - 1)) - 1)
    return np.where(x < 0, -mag, mag)


def _row_counts(mask: np.ndarray) -> np.ndarray:
    """True elements per row (a flat count is ~8x faster than numpy's per-axis one, so one row takes it)."""
    if mask.shape[0] == 1:
        return np.array([np.count_nonzero(mask)], dtype=np.int64)
    return np.count_nonzero(mask, axis=1).astype(np.int64)


def _row_dot(values: np.ndarray, mask: np.ndarray, tmp: np.ndarray) -> np.ndarray:
    """Per row, the float64 sum of `values` where `mask` (tmp: scratch of values' shape and dtype)."""
    np.multiply(values, mask, out=tmp)
    return tmp.sum(axis=1, dtype=np.float64)


def _unexplained(
    flat: np.ndarray,
    n: int,
    k: int,
    dtype: str,
    rows: torch.Tensor,
    mbits: np.ndarray,
    rbits: np.ndarray,
    coef: np.ndarray,
    cov: np.ndarray,
    with_base: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Unexplained elements per piece and the ulp histogram, over the differing elements only (`flat`: their
    indices in the block): the tolerance needs x^T Cov x, so it is computed there. In numpy: a differing set is
    usually small, where torch's per-call cost dominates."""
    g, nreg = coef.shape[0], coef.shape[1]
    work = rows.numpy().dtype.type
    eps_w = 2.0**-24 if work == np.float32 else 2.0**-53
    piece = flat // n
    r = rows.numpy().reshape(rows.shape[0], -1)
    xd = r[1 : 1 + nreg][:, flat]  # regressors of the differing elements
    md, vd = r[0][flat], r[k + 2][flat]  # M and the recipe
    abs_terms = np.abs(xd * np.nan_to_num(coef).astype(work)[piece].T).sum(axis=0)
    arith = arith_allowance(abs_terms, np.abs(r[k + 1][flat]) if with_base else None, k, dtype)
    arith += 2 * (k + 2) * eps_w * (np.abs(vd) + abs_terms)  # our own work precision
    bound = ulp(np.maximum(np.abs(md), np.abs(vd)), dtype) * 0.5 + arith
    # float64 even for float32 work: without a base the candidates are nearly collinear and x^T Cov x cancels.
    xd64 = xd.astype(np.float64)
    covd = np.nan_to_num(cov, nan=0.0, posinf=0.0)[piece]
    var = np.einsum("in,nij,jn->n", xd64, covd, xd64).clip(0).astype(work)
    bad = np.abs(md - vd) > bound + np.sqrt(var) * COEF_SIGMAS
    unexplained = np.bincount(piece[bad], minlength=g).astype(np.int64)
    d = np.abs(_ordered(mbits.reshape(-1)[flat]) - _ordered(rbits.reshape(-1)[flat]))
    code = piece * len(ULP_BINS) + np.searchsorted(_EDGES, d, side="left")
    return unexplained, np.bincount(code, minlength=g * len(ULP_BINS)).reshape(g, len(ULP_BINS)).astype(np.int64)


def residual_block(
    pieces: list[Piece], k: int, dtype: str, coef: np.ndarray, cov: np.ndarray, with_base: bool
) -> ResidualCounts:
    """Recompute each piece's fitted recipe (coef (G, nreg), cov (G, nreg, nreg)), round it to the stored dtype and
    count what rounding cannot explain (SPEC.md §6.3)."""
    g, n = len(pieces), pieces[0][0].numel()
    nreg = coef.shape[1]  # k, or k + 1 with the base column
    # Storage of 16 bits or less: float32 work is 2^16 times finer than the grid we test on; its own rounding goes
    # into the tolerance. Wider storage needs float64 work.
    work = torch.float32 if PRECISION_BITS[dtype] <= 11 else torch.float64
    mstack = _stacked("m", [p[0] for p in pieces])
    ivew = _INT_VIEW[mstack.element_size()]
    rows = _buffer("residual", k + 4, g * n, work).view(k + 4, g, n)
    # [M, P_1 - B, ..., P_k - B, B, v, scratch] with a base, [M, P_1, ..., P_k, unused, v, scratch] without;
    # x: the regressors
    mc, bc, x, value, spare = rows[0], rows[k + 1], rows[1 : 1 + nreg], rows[k + 2], rows[k + 3]
    mc.copy_(mstack)
    for i in range(1, k + 1):
        _fill(rows[i], [p[i] for p in pieces])
    bstack = _stacked("b", [p[-1] for p in pieces]) if with_base else None
    if bstack is not None:
        bc.copy_(bstack)
        rows[1 : k + 1].sub_(bc)
    coef_t = torch.from_numpy(np.nan_to_num(coef)).to(work)
    xb = x.permute(1, 0, 2)
    # one batched GEMM for sum_i l_i x_i (+ B): no [nreg, n] temporary
    lhs = coef_t.unsqueeze(1)
    if bstack is not None:
        torch.baddbmm(bc.unsqueeze(1), lhs, xb, out=value.unsqueeze(1))
    else:
        torch.bmm(lhs, xb, out=value.unsqueeze(1))
    rstack = _buffer("r", 1, g * n, mstack.dtype)[0].view(g, n).copy_(value)  # rounded to the stored dtype
    mbits, rbits = mstack.view(ivew).numpy(), rstack.view(ivew).numpy()
    masks = _buffer("mask", 4, g * n, torch.bool).numpy().reshape(4, g, n)
    differ = np.not_equal(mbits, rbits, out=masks[0])
    differing = _row_counts(differ)
    unexplained = np.zeros(g, dtype=np.int64)
    hist = np.zeros((g, len(ULP_BINS)), dtype=np.int64)
    if differing.any():
        unexplained, hist = _unexplained(
            np.flatnonzero(differ), n, k, dtype, rows, mbits, rbits, coef, cov, bstack is not None
        )
    sp = spare.numpy()
    torch.sub(mc, value, out=spare)
    rss = np.square(sp, out=sp).sum(axis=1, dtype=np.float64)  # float32 squares, float64 sum
    zero = np.zeros((g, 5), dtype=np.int64)
    excess_delta = np.zeros(g)
    kept_delta = np.zeros(g)
    if bstack is not None:
        bbits = (bstack if bstack.dtype == mstack.dtype else bstack.to(mstack.dtype)).view(ivew).numpy()
        dn = rows[1 : k + 1].numpy()
        dmag = np.abs(dn[0], out=value.numpy())  # the recipe is done with: its row takes sum_i |D_i|
        for i in range(1, k):
            dmag += np.abs(dn[i], out=dn[i])
        eligible, m_is_b, r_is_b = masks[1], masks[2], masks[3]
        np.greater(dmag, 0, out=eligible)
        np.equal(mbits, bbits, out=m_is_b)
        np.equal(rbits, bbits, out=r_is_b)
        obs = np.logical_and(eligible, m_is_b, out=masks[0])
        counts = [_row_counts(eligible), _row_counts(obs)]
        kept = np.greater(eligible, m_is_b, out=m_is_b)  # eligible and M != B
        kept_delta = _row_dot(dmag, kept, sp)
        n_kept = _row_counts(kept)
        expected = np.logical_and(eligible, r_is_b, out=eligible)
        counts.append(_row_counts(expected))
        excess = np.greater(obs, r_is_b, out=r_is_b)  # zero in M - B, not in the rounded recipe
        counts += [_row_counts(excess), n_kept]
        excess_delta = _row_dot(dmag, excess, sp)
        zero = np.stack(counts, axis=1)
    return ResidualCounts(rss, differing, unexplained, hist, zero, excess_delta, kept_delta)


def ulp(x: np.ndarray, dtype: str) -> np.ndarray:
    """M's grid spacing at |x| in the storage dtype (SPEC.md §6.3): 2^(max(floor(log2 |x|), min_exp) + 1 - p), the
    smallest spacing at zero."""
    _, exp = np.frexp(x)  # x = f 2^exp, f in [0.5, 1): floor(log2 |x|) = exp - 1; frexp(0) gives exp 0
    exp = np.where(x == 0, MIN_EXPONENT[dtype] + 1, exp)
    return np.ldexp(np.ones_like(x), np.maximum(exp, MIN_EXPONENT[dtype] + 1) - PRECISION_BITS[dtype])


def arith_allowance(abs_terms: np.ndarray, abs_b: np.ndarray | None, k: int, dtype: str) -> np.ndarray:
    """What any order of computing the recipe may add to its exact value (SPEC.md §6.3; `abs_terms` = sum_i |l_i x_i|,
    `abs_b` = |B| with a base, None without)."""
    if abs_b is not None:
        # Task arithmetic / TIES compute deltas in the storage dtype: each delta, product and partial sum may round
        # there. Any float32 order of B + sum(l_i D_i) is covered by the second term.
        return (k + 1) * 2.0 ** -PRECISION_BITS[dtype] * abs_terms + 4 * 2.0**-24 * (abs_b + abs_terms)
    # Linear / slerp accumulate in float32 (products, partial sums, the final normalisation).
    return (k + 2) * 2.0**-24 * abs_terms


def refine_block(pieces: list[Piece], k: int, dtype: str, coef: np.ndarray, with_base: bool) -> RefineStep:
    """The refinement pass as numpy over float64 copies (the implementation the compiled pass replaced)."""
    g = len(pieces)
    nreg = coef.shape[1]
    out = RefineStep(np.zeros((g, nreg, nreg)), np.zeros((g, nreg)), np.zeros(g))
    for i, piece in enumerate(pieces):
        m = piece[0].to(torch.float64).numpy()
        ps = [t.to(torch.float64).numpy() for t in piece[1 : k + 1]]
        if with_base:
            b = piece[-1].to(torch.float64).numpy()
            x, target, abs_b = np.stack([*(p - b for p in ps), b]), m - b, np.abs(b)
        else:
            x, target, abs_b = np.stack(ps), m, None
        v = coef[i] @ x
        terms = np.abs(coef[i]) @ np.abs(x)
        allow = arith_allowance(terms, abs_b, k, dtype)
        # aimed inside by half the allowance's float32 part (with a base: 4 * 2^-24 * (|B| + terms))
        inward = 0.5 * (4 * 2.0**-24 * (abs_b + terms) if abs_b is not None else arith_allowance(terms, None, k, dtype))
        half = 0.5 * ulp(np.abs(m), dtype) + allow
        lo, hi = target - half, target + half
        err = np.where(v < lo, lo + inward - v, np.where(v > hi, hi - inward - v, 0.0))
        idx = np.flatnonzero((v < lo) | (v > hi))
        out.gram[i] = x[:, idx] @ x[:, idx].T
        out.rhs[i] = x[:, idx] @ err[idx]
        out.violations[i] = len(idx)
    return out

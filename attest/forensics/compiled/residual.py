"""detect's residual sweep, compiled (numba; SPEC.md §6.3, §6.8): per piece of a block, recompute the fitted recipe
in float64 from the stored values, round it to the storage grid and count what no order of computing it explains.

Inputs as attest.forensics.compiled.gram's. With two candidates and a storage grid narrower than float64 (the common
case) each 512-element block first runs one fused loop that keeps every intermediate in registers and rounds by
integer arithmetic on the bits; a block where that loop meets an element it does not handle (a value below the
grid's normal range or past its largest finite value) is redone by the general path, and a block with differing
elements decodes its rows again for the per-element tolerance test. Both paths give the same counts.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from attest.forensics.compiled.elements import (
    BLOCK,
    FAST,
    block_rows,
    grid_index,
    rounded,
    rounded_normal,
    spacing,
    stored_value,
    two_candidate_block,
)
from attest.forensics.compiled.gram import (
    MEAN2_ZERO,
    mean2_add,
    mean2_sample,
    mean2_store,
    mirror_lower,
    sample_constants,
)

ELEMENTS_SHA256 = "956948cf03a0f3011fa3c1569bb0e552a25e941d33683f5ca346cb3b57168af7"
"""SHA-256 of elements.py, whose helpers are compiled into this file's cached code (see its docstring)."""
GRAM_SHA256 = "73c2b1d7e955193062725748d81fa2d972b9f4c1c27dd4b4f3f23ef7915917cf"
"""SHA-256 of gram.py: its per-element and per-block helpers are compiled into this file's cached code too (the
Gram sums of `residual_sweep(..., gram=...)`)."""


@njit(inline="always")
def recipe_element(
    mv: float,
    x1: float,
    x2: float,
    bv: float,
    scale: float,
    l1: float,
    l2: float,
    shift: int,
    half: int,
    keep: int,
    tiny: float,
    max_finite: float,
    e: int,
    v: np.ndarray,
    r_out: np.ndarray,
    m_out: np.ndarray,
) -> tuple[float, float, float, float]:
    """One element of the two-candidate loop: v = scale B + l_1 x_1 + l_2 x_2 in that order, its rounding by integer
    arithmetic (rounded_normal), both and M's value stored at e; returns (rounded v, 1 when the element is one the
    loop does not round (else 0), (M - v)^2, 1 when M differs from the rounded v)."""
    val = scale * bv
    val += l1 * x1
    val += l2 * x2
    r = rounded_normal(val, shift, half, keep)
    v[e] = val
    r_out[e] = r
    m_out[e] = mv
    mag = abs(val)
    # no `and`/`or` here: short-circuit branches keep the loop from vectorizing
    special = (1.0 if mag < tiny else 0.0) - (1.0 if mag == 0.0 else 0.0) + (1.0 if abs(r) > max_finite else 0.0)
    d = mv - val
    return r, special, d * d, 1.0 if r != mv else 0.0


@njit(inline="always")
def _fused2(
    m: np.ndarray,
    p1: np.ndarray,
    p2: np.ndarray,
    base: np.ndarray,
    with_base: bool,
    cg: np.ndarray,
    shift: int,
    half: int,
    keep: int,
    tiny: float,
    max_finite: float,
    v: np.ndarray,
    r_out: np.ndarray,
    m_out: np.ndarray,
) -> tuple[float, float, float, float, float, float, float, float, float]:
    """One block with two candidates in one loop: v, its rounding and M's values (stored: the tolerance test reads
    them), then (elements the loop does not round, |M - v|^2, differing, the zero pattern's eligible / observed /
    expected / excess counts, and the excess and kept delta mass), v accumulated in the order of the general path
    (v = (1 + s) B, += l_1 x_1, += l_2 x_2)."""
    scale = 1.0 + cg[2] if with_base else 0.0
    l1, l2 = cg[0], cg[1]
    special = rss = nd = c0 = c1 = c2 = c3 = d_excess = d_kept = 0.0
    for e in range(m.size):
        mv = stored_value(m[e])
        bv = stored_value(base[e]) if with_base else 0.0
        x1 = stored_value(p1[e]) - bv
        x2 = stored_value(p2[e]) - bv
        r, e_special, e_rss, e_nd = recipe_element(
            mv, x1, x2, bv, scale, l1, l2, shift, half, keep, tiny, max_finite, e, v, r_out, m_out
        )
        special += e_special
        rss += e_rss
        nd += e_nd
        if with_base:
            dmag = abs(x1) + abs(x2)
            eligible = 1.0 if dmag > 0.0 else 0.0
            m_is_b = eligible if mv == bv else 0.0
            r_is_b = eligible if r == bv else 0.0
            excess = m_is_b - m_is_b * r_is_b
            c0 += eligible
            c1 += m_is_b
            c2 += r_is_b
            c3 += excess
            d_excess += dmag * excess
            d_kept += dmag * (eligible - m_is_b)
    return special, rss, nd, c0, c1, c2, c3, d_excess, d_kept


@njit(inline="always")
def _gram_and_fused2(
    m: np.ndarray,
    p1: np.ndarray,
    p2: np.ndarray,
    cg: np.ndarray,
    shift: int,
    half: int,
    keep: int,
    tiny: float,
    max_finite: float,
    v: np.ndarray,
    r_out: np.ndarray,
    m_out: np.ndarray,
    y: np.ndarray,
    sums: np.ndarray,
    gram: np.ndarray,
) -> tuple[float, float, float, float, float, float, float, float, float]:
    """`_fused2` without a base and the Gram sweep's `_mean_rows2` (attest.forensics.compiled.gram) in one loop
    over the block: each element read and decoded once. Returns `_fused2`'s results; the Gram rows, sums and
    products as `_mean_rows2` leaves them."""
    y0, y1, y2, y3 = y[0, : m.size], y[1, : m.size], y[2, : m.size], y[3, : m.size]
    acc = MEAN2_ZERO
    l1, l2 = cg[0], cg[1]
    special = rss = nd = 0.0
    for e in range(m.size):
        mv, x1, x2 = stored_value(m[e]), stored_value(p1[e]), stored_value(p2[e])
        acc = mean2_add(acc, y0, y1, y2, y3, e, mv, x1, x2)
        _, e_special, e_rss, e_nd = recipe_element(
            mv, x1, x2, 0.0, 0.0, l1, l2, shift, half, keep, tiny, max_finite, e, v, r_out, m_out
        )
        special += e_special
        rss += e_rss
        nd += e_nd
    mean2_store(acc, sums, gram)
    return special, rss, nd, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0


@njit(nogil=True, fastmath=FAST, cache=True)
def residual_sweep(
    m: np.ndarray,
    cands: tuple[np.ndarray, ...],
    base: np.ndarray,
    with_base: bool,
    coef: np.ndarray,
    cov: np.ndarray,
    bits: int,
    min_exp: int,
    max_finite: float,
    sigmas: float,
    fused: bool,
    out: tuple[np.ndarray, ...],
    gram: tuple[int, int, int, float, tuple[np.ndarray, ...]] | None = None,
) -> None:
    """Per piece g: recompute the fitted recipe v = B + sum_j coef_j x_j (x = [P_1 - B, ..., P_k - B, B]; without a
    base v = sum_i coef_i P_i) in float64, round it to the storage grid and count what no order of computing it can
    explain (tolerance of SPEC.md §6.3 plus `sigmas` standard errors of the fitted value from `cov`), as
    attest.forensics.kernels.ResidualCounts. `fused`: the two-candidate loop where it applies (False: the general
    path everywhere, which tests compare it with). `out`: (rss, differing, unexplained, hist (G, 5), zero (G, 5),
    excess_delta, kept_delta), zeroed by the caller; the zero pattern needs a base.

    `gram`: also the Gram sweep's sums in the same pass (gram_sweep(m, cands, m, False, bits, min_exp, *gram[:4],
    True, gram[4]), the same results), for two candidates without a base and inputs narrower than float64 (the caller
    checks): (resolved stride, rounding-variance minimum, its stride, resolved ratio, gram_sweep's `out`). Each
    element is then read and decoded once for both sweeps (the sampled recipe's pass of a large tensor,
    attest.forensics.fit.fit_large)."""
    rss, differing, unexplained, hist, zero, excess_delta, kept_delta = out
    g_count, n = m.shape
    k = len(cands)
    nreg = coef.shape[1]
    grid = math.ldexp(1.0, -bits)  # 2^-p: one rounding in the storage dtype, relative
    f32_eps = math.ldexp(1.0, -24)
    own = 2.0 * (k + 2) * math.ldexp(1.0, -53)
    shift = 53 - bits
    half = (1 << (shift - 1)) - 1 if shift > 0 else 0
    keep = -(1 << shift)
    tiny = math.ldexp(1.0, min_exp)
    fast = fused and k == 2 and bits < 53
    # rows: x_1..x_nreg, M, B, v, rounded v, sum_i |D_i|
    rows = np.empty((nreg + 5, BLOCK))
    mv, b, v, r, dmag = rows[nreg], rows[nreg + 1], rows[nreg + 2], rows[nreg + 3], rows[nreg + 4]
    differ = np.empty(BLOCK, np.int64)
    if gram is not None:
        resolved_stride, rvar_min, rvar_stride, ratio, gram_out = gram
        g_gram, g_sums, g_res, g_rgram, g_rounding, g_resolved = gram_out
        threshold, floor_u, top, vstride = sample_constants(
            n, bits, min_exp, ratio, resolved_stride, rvar_min, rvar_stride
        )
        y = np.empty((4, BLOCK))
        ext = np.empty((4, BLOCK))
        weight = np.empty(BLOCK)
        zbuf = np.empty((4, (BLOCK + resolved_stride - 1) // resolved_stride))
    for g in range(g_count):
        acc_rss = d_excess = d_kept = 0.0
        n_diff = 0
        counts = np.zeros(5, np.int64)
        for s0 in range(0, n, BLOCK):
            w = min(BLOCK, n - s0)
            special = 1.0
            if gram is not None:
                mb, p1, p2, _ = two_candidate_block(m, cands, base, g, s0, w)
                res = _gram_and_fused2(
                    mb, p1, p2, coef[g], shift, half, keep, tiny, max_finite, v, r, mv, y, g_sums[g], g_gram[g]
                )
                special, b_rss, nd_f, c0, c1, c2, c3, b_excess, b_kept = res
                n_res, rv = mean2_sample(
                    y, zbuf, w, resolved_stride, vstride, threshold, top, floor_u, ext, weight, g_res[g], g_rgram[g]
                )
                g_resolved[g] += n_res
                g_rounding[g] += rv
            elif fast:
                mb, p1, p2, bb = two_candidate_block(m, cands, base, g, s0, w)
                # with_base as a constant in each call: a branch on it inside the loop keeps it from vectorizing
                if with_base:
                    res = _fused2(mb, p1, p2, bb, True, coef[g], shift, half, keep, tiny, max_finite, v, r, mv)
                else:
                    res = _fused2(mb, p1, p2, bb, False, coef[g], shift, half, keep, tiny, max_finite, v, r, mv)
                special, b_rss, nd_f, c0, c1, c2, c3, b_excess, b_kept = res
            if special != 0.0:
                block_rows(m, cands, base, g, s0, w, with_base, rows, mv, b)
                if with_base:
                    scale = 1.0 + coef[g, k]  # B + s B
                    for e in range(w):
                        v[e] = scale * b[e]
                else:
                    v[:w] = 0.0
                dmag[:w] = 0.0
                for i in range(k):
                    for e in range(w):
                        d = rows[i, e]
                        v[e] += coef[g, i] * d
                        dmag[e] += abs(d)
                if bits < 53:
                    for e in range(w):
                        r[e] = rounded(v[e], bits, min_exp, max_finite)
                else:
                    r[:w] = v[:w]
                # One vectorized pass: squared residual, differing count and the zero pattern as 0/1 sums (in
                # float64: exact below 2^53, and the loop vectorizes).
                b_rss = nd_f = c0 = c1 = c2 = c3 = b_excess = b_kept = 0.0
                for e in range(w):
                    d = mv[e] - v[e]
                    b_rss += d * d
                    nd_f += 1.0 if r[e] != mv[e] else 0.0
                    eligible = 1.0 if dmag[e] > 0.0 else 0.0
                    m_is_b = eligible if mv[e] == b[e] else 0.0
                    r_is_b = eligible if r[e] == b[e] else 0.0
                    excess = m_is_b - m_is_b * r_is_b
                    c0 += eligible
                    c1 += m_is_b
                    c2 += r_is_b
                    c3 += excess
                    b_excess += dmag[e] * excess
                    b_kept += dmag[e] * (eligible - m_is_b)
            acc_rss += b_rss
            d_excess += b_excess
            d_kept += b_kept
            if with_base:
                counts[0] += int(c0)
                counts[1] += int(c1)
                counts[2] += int(c2)
                counts[3] += int(c3)
                counts[4] += int(c0 - c1)
            nd, want = 0, int(nd_f)
            for e in range(w if want else 0):  # a few per block: a branch that is rarely taken, stopping early
                if r[e] != mv[e]:
                    differ[nd] = e
                    nd += 1
                    if nd == want:
                        break
            n_diff += nd
            for t in range(nd):
                e = differ[t]
                if special == 0.0:  # the fused loop kept v, its rounding and M: the rest of this element's row
                    b[e] = stored_value(base[g, s0 + e]) if with_base else 0.0
                    if with_base:
                        rows[k, e] = b[e]
                    for i in range(k):
                        rows[i, e] = stored_value(cands[i][g, s0 + e]) - b[e]
                step = abs(grid_index(mv[e], bits, min_exp) - grid_index(r[e], bits, min_exp))
                hist[g, 0 if step <= 1 else 1 if step <= 2 else 2 if step <= 4 else 3 if step <= 16 else 4] += 1
                terms = 0.0
                for j in range(nreg):
                    terms += abs(rows[j, e] * coef[g, j])
                if with_base:  # SPEC.md §6.3 `arith`, per element (the refine sweep has the same)
                    arith = (k + 1) * grid * terms + 4.0 * f32_eps * (abs(b[e]) + terms)
                else:
                    arith = (k + 2) * f32_eps * terms
                arith += own * (abs(v[e]) + terms)
                fitted_var = 0.0  # x^T Cov x: the fitted value's variance from the coefficients' uncertainty
                for i in range(nreg):
                    for j in range(nreg):
                        fitted_var += rows[i, e] * cov[g, i, j] * rows[j, e]
                grid_step = spacing(max(abs(mv[e]), abs(v[e])), bits, min_exp)
                if abs(mv[e] - v[e]) > 0.5 * grid_step + arith + math.sqrt(max(fitted_var, 0.0)) * sigmas:
                    unexplained[g] += 1
        if gram is not None:
            mirror_lower(g_gram[g], g_res[g], g_rgram[g])
        rss[g] = acc_rss
        differing[g] = n_diff
        zero[g] = counts
        if with_base:  # without one, dmag summed the candidates themselves
            excess_delta[g] = d_excess
            kept_delta[g] = d_kept

"""One pass of the exact-recipe refinement, compiled (numba; SPEC.md §6.3, "Refinement"; attest.forensics.refine
iterates it). As numpy calls over float64 copies of every chunk a pass cost ~40 ms per 2^18 elements, one thread
at a time, and a pure merge fitted without a base (least squares biased by the grid: some elements unexplained)
refined up to 30 passes of each large tensor: 80 of the 83 seconds of detect on an 861 MB merge and its two
candidates. Inputs as attest.forensics.compiled.gram's.

With two candidates and a storage grid narrower than float64 (the common case) each 512-element block is one fused
loop in registers: the violating elements are a few percent at the first pass and fewer after, and the general path
decoded every element into rows and summed x x^T over all of them. Both paths give the same violations and, to
summation order, the same sums.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from attest.forensics.compiled.elements import (
    BLOCK,
    FAST,
    block_rows,
    products,
    spacing,
    stored_value,
    two_candidate_block,
)

ELEMENTS_SHA256 = "956948cf03a0f3011fa3c1569bb0e552a25e941d33683f5ca346cb3b57168af7"
"""SHA-256 of elements.py, whose helpers are compiled into this file's cached code (see its docstring)."""


@njit(inline="always")
def _pull(
    v: float,
    mv: float,
    bv: float,
    terms: float,
    bits: int,
    min_exp: int,
    on_terms: float,
    on_b: float,
    f32_terms: float,
) -> tuple[float, float]:
    """One element's rule, for both paths: (its move err, 1.0 when it violates else 0.0). Interval half-width h =
    half M's grid spacing + the arithmetic allowance (on_terms * terms + on_b * |B|); a violating element is pulled to
    its interval's end moved inward by half the allowance's float32 part (f32_terms * terms + on_b * |B|)."""
    allow = on_terms * terms + on_b * abs(bv)
    inward = 0.5 * (f32_terms * terms + on_b * abs(bv))
    half = 0.5 * spacing(abs(mv), bits, min_exp) + allow
    target = mv - bv
    lo = target - half
    hi = target + half
    d = (lo + inward - v) if v < lo else ((hi - inward - v) if v > hi else 0.0)
    return d, (1.0 if v < lo else (1.0 if v > hi else 0.0))


@njit(inline="always")
def _refine2(
    m: np.ndarray,
    p1: np.ndarray,
    p2: np.ndarray,
    base: np.ndarray,
    with_base: bool,
    cg: np.ndarray,
    bits: int,
    min_exp: int,
    on_terms: float,
    on_b: float,
    f32_terms: float,
) -> tuple[float, float, float, float, float, float, float, float, float, float]:
    """One block with two candidates in one loop: (violations, the upper triangle of sum x x^T over them as g00 g01
    g02 g11 g12 g22, and sum x err as r0 r1 r2; the third regressor is B, with a base only), each element's values as
    the general path computes them (v and sum |l_j x_j| accumulated in regressor order)."""
    l1, l2 = cg[0], cg[1]
    l3 = cg[2] if with_base else 0.0
    cnt = g00 = g01 = g02 = g11 = g12 = g22 = r0 = r1 = r2 = 0.0
    for e in range(m.size):
        mv = stored_value(m[e])
        bv = stored_value(base[e]) if with_base else 0.0
        x1 = stored_value(p1[e]) - bv
        x2 = stored_value(p2[e]) - bv
        v = 0.0
        v += l1 * x1
        v += l2 * x2
        terms = 0.0
        terms += abs(l1 * x1)
        terms += abs(l2 * x2)
        if with_base:
            v += l3 * bv
            terms += abs(l3 * bv)
        d, hit = _pull(v, mv, bv, terms, bits, min_exp, on_terms, on_b, f32_terms)
        cnt += hit
        g00 += hit * x1 * x1
        g01 += hit * x1 * x2
        g11 += hit * x2 * x2
        r0 += x1 * d
        r1 += x2 * d
        if with_base:
            g02 += hit * x1 * bv
            g12 += hit * x2 * bv
            g22 += hit * bv * bv
            r2 += bv * d
    return cnt, g00, g01, g02, g11, g12, g22, r0, r1, r2


@njit(nogil=True, fastmath=FAST, cache=True)
def refine_sweep(
    m: np.ndarray,
    cands: tuple[np.ndarray, ...],
    base: np.ndarray,
    with_base: bool,
    coef: np.ndarray,
    bits: int,
    min_exp: int,
    fused: bool,
    out: tuple[np.ndarray, ...],
) -> None:
    """Per piece g, with x = [P_1 - B, ..., P_k - B, B] and target M - B (without a base x = [P_1..P_k], target M):
    v = coef[g] . x in float64; h = half M's grid spacing + the arithmetic allowance of §6.3 (without our own work's
    term); an element violates when v lies outside [target - h, target + h], and err = its distance to the nearest
    end moved inward by half the float32 part of the arithmetic allowance (a step that only reaches the end can stall a
    hair outside it).
    `fused`: the two-candidate loop where it applies (False: the general path everywhere, which tests compare it
    with). `out`: (gram (G, nreg, nreg): sum over violating elements of x x^T, rhs (G, nreg): sum of x err, violations
    (G,)), zeroed by the caller."""
    gram, rhs, violations = out
    g_count, n = m.shape
    k = len(cands)
    nreg = coef.shape[1]
    grid = math.ldexp(1.0, -bits)
    f32_eps = math.ldexp(1.0, -24)
    # rows: x_1..x_nreg, M, B, v, sum_j |l_j x_j|, err, violating (0/1)
    rows = np.empty((nreg + 6, BLOCK))
    mv, b, v, terms, err, hit = (
        rows[nreg],
        rows[nreg + 1],
        rows[nreg + 2],
        rows[nreg + 3],
        rows[nreg + 4],
        rows[nreg + 5],
    )
    # the allowance as factors (no branch on with_base inside the loop: it would keep it from vectorizing)
    on_terms = (k + 1) * grid + 4.0 * f32_eps if with_base else (k + 2) * f32_eps
    on_b = 4.0 * f32_eps if with_base else 0.0
    # the float32 part of the allowance (with a base, without its storage-grid term): half of it is how far inside
    # its interval a violating element is aimed (half the whole allowance stalls merges computed in the storage dtype)
    f32_terms = 4.0 * f32_eps if with_base else (k + 2) * f32_eps
    fast = fused and k == 2 and bits < 53
    for g in range(g_count):
        cg = coef[g]
        count = 0.0
        for s0 in range(0, n, BLOCK):
            w = min(BLOCK, n - s0)
            if fast:
                mb, p1, p2, bb = two_candidate_block(m, cands, base, g, s0, w)
                # with_base as a constant in each call: a branch on it inside the loop keeps it from vectorizing
                if with_base:
                    res = _refine2(mb, p1, p2, bb, True, cg, bits, min_exp, on_terms, on_b, f32_terms)
                else:
                    res = _refine2(mb, p1, p2, bb, False, cg, bits, min_exp, on_terms, on_b, f32_terms)
                cnt, g00, g01, g02, g11, g12, g22, r0, r1, r2 = res
                count += cnt
                gram[g, 0, 0] += g00
                gram[g, 0, 1] += g01
                gram[g, 1, 1] += g11
                rhs[g, 0] += r0
                rhs[g, 1] += r1
                if with_base:
                    gram[g, 0, 2] += g02
                    gram[g, 1, 2] += g12
                    gram[g, 2, 2] += g22
                    rhs[g, 2] += r2
                continue
            block_rows(m, cands, base, g, s0, w, with_base, rows, mv, b)
            v[:w] = 0.0
            terms[:w] = 0.0
            for j in range(nreg):
                xj = rows[j]
                c = cg[j]
                for e in range(w):
                    v[e] += c * xj[e]
                    terms[e] += abs(c * xj[e])
            for e in range(w):
                err[e], hit[e] = _pull(v[e], mv[e], b[e], terms[e], bits, min_exp, on_terms, on_b, f32_terms)
                count += hit[e]
            for r in range(nreg):
                xr = rows[r]
                acc = 0.0
                for e in range(w):
                    acc += xr[e] * err[e]  # err is 0 where nothing violates
                rhs[g, r] += acc
            products(rows[:nreg], w, hit, gram[g])
        violations[g] = count
        for r in range(nreg):
            for c2 in range(r):
                gram[g, r, c2] = gram[g, c2, r]

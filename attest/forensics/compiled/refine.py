"""One pass of the exact-recipe refinement, compiled (numba; SPEC.md §6.3, "Refinement"; attest.forensics.refine
iterates it). As numpy calls over float64 copies of every chunk a pass cost ~40 ms per 2^18 elements, one thread
at a time, and a pure merge fitted without a base (least squares biased by the grid: some elements unexplained)
refined up to 30 passes of each large tensor: 80 of the 83 seconds of detect on an 861 MB merge and its two
candidates. Inputs as attest.forensics.compiled.gram's.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from attest.forensics.compiled.elements import BLOCK, FAST, block_rows, products, spacing

ELEMENTS_SHA256 = "0fc852ce5acccebd55b02d2cd5ed7531b68ea8f3dc61dc4dc92cfbe10e8f4de2"
"""SHA-256 of elements.py, whose helpers are compiled into this file's cached code (see its docstring)."""


@njit(nogil=True, fastmath=FAST, cache=True)
def refine_sweep(
    m: np.ndarray,
    cands: tuple[np.ndarray, ...],
    base: np.ndarray,
    with_base: bool,
    coef: np.ndarray,
    bits: int,
    min_exp: int,
    out: tuple[np.ndarray, ...],
) -> None:
    """Per piece g, with x = [P_1 - B, ..., P_k - B, B] and target M - B (without a base x = [P_1..P_k], target M):
    v = coef[g] . x in float64; h = half M's grid spacing + the arithmetic allowance of §6.3 (without our own work's
    term); an element violates when v lies outside [target - h, target + h], and err = its distance to the nearest
    end. `out`: (gram (G, nreg, nreg): sum over violating elements of x x^T, rhs (G, nreg): sum of x err, violations
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
    for g in range(g_count):
        cg = coef[g]
        count = 0.0
        for s0 in range(0, n, BLOCK):
            w = min(BLOCK, n - s0)
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
                target = mv[e] - b[e]
                half = 0.5 * spacing(abs(mv[e]), bits, min_exp) + on_terms * terms[e] + on_b * abs(b[e])
                lo = target - half
                hi = target + half
                clipped = lo if v[e] < lo else (hi if v[e] > hi else v[e])
                d = clipped - v[e]
                err[e] = d
                hit[e] = 1.0 if d != 0.0 else 0.0
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

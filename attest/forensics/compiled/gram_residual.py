"""detect's Gram sweep and residual sweep in one pass (numba; SPEC.md §6.3, §6.8), for the case that is nearly all
of a large no-base detect: two candidates, no base, a storage grid narrower than float64, and a recipe already known
from the tensor's sample (attest.forensics.fit.fit_large). The two sweeps read the same three inputs; run one after
the other, each decoded every element and read the chunk from memory again (the second time from L3, or from DRAM
after the other thread's chunk evicted it). Here each element is read and decoded once and both sweeps' sums are
taken in the same loop: the results are those of attest.forensics.compiled.gram.gram_sweep and
.residual.residual_sweep with the same inputs (the tests compare them), from their own per-element and per-block
helpers.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from attest.forensics.compiled.elements import BLOCK, FAST, stored_value, two_candidate_block
from attest.forensics.compiled.gram import MEAN2_ZERO, mean2_add, mean2_sample, mean2_store
from attest.forensics.compiled.residual import finish_block, recipe_element

ELEMENTS_SHA256 = "956948cf03a0f3011fa3c1569bb0e552a25e941d33683f5ca346cb3b57168af7"
"""SHA-256 of elements.py, whose helpers are compiled into this file's cached code (see its docstring)."""
GRAM_SHA256 = "e88d65fb48848d21cf1415d5ce8c38ca95bcebf34f83f04eb673c13bcfc44eac"
"""SHA-256 of gram.py: its per-element and per-block helpers are compiled into this file's cached code too."""
RESIDUAL_SHA256 = "7c2719057a176a1d2c38eef62cbf75c471ac1e63f32cf9dac932cb5afea2a2bc"
"""SHA-256 of residual.py, likewise."""


@njit(nogil=True, fastmath=FAST, cache=True)
def gram_residual_sweep(
    m: np.ndarray,
    cands: tuple[np.ndarray, ...],
    bits: int,
    min_exp: int,
    resolved_stride: int,
    rvar_min: int,
    rvar_stride: int,
    ratio: float,
    coef: np.ndarray,
    cov: np.ndarray,
    max_finite: float,
    sigmas: float,
    gram_out: tuple[np.ndarray, ...],
    residual_out: tuple[np.ndarray, ...],
) -> None:
    """gram_sweep(m, cands, m, False, bits, min_exp, resolved_stride, rvar_min, rvar_stride, ratio, True, gram_out)
    and residual_sweep(m, cands, m, False, coef, cov, bits, min_exp, max_finite, sigmas, True, residual_out) in one
    pass, for two candidates (`cands`), no base and bits < 53 (the caller checks). Outputs as theirs, zeroed by the
    caller."""
    gram, sums, gram_res, rgram, rounding, resolved = gram_out
    rss, differing, unexplained, hist, zero, _, _ = residual_out
    g_count, n = m.shape
    threshold = ratio / (1.0 - ratio)
    floor_u = math.ldexp(1.0, min_exp + 1 - bits)
    top = math.ldexp(1.0, 1 - bits)
    shift = 53 - bits
    half = (1 << (shift - 1)) - 1
    keep = -(1 << shift)
    tiny = math.ldexp(1.0, min_exp)
    y = np.empty((4, BLOCK))
    y0, y1, y2, y3 = y[0], y[1], y[2], y[3]
    ext = np.empty((4, BLOCK))
    weight = np.empty(BLOCK)
    zbuf = np.empty((4, (BLOCK + resolved_stride - 1) // resolved_stride))
    # the residual's rows (attest.forensics.compiled.residual.finish_block): x_1, x_2, M, B, v, rounded v, sum |D_i|
    rows = np.empty((coef.shape[1] + 5, BLOCK))
    mv_row, v_row, r_row = rows[2], rows[4], rows[5]
    differ = np.empty(BLOCK, np.int64)
    for g in range(g_count):
        sub = (n + resolved_stride - 1) // resolved_stride
        vstride = rvar_stride if sub >= rvar_min else 1
        l1, l2 = coef[g, 0], coef[g, 1]
        acc_rss = 0.0
        n_diff = 0
        counts = np.zeros(5, np.int64)
        for s0 in range(0, n, BLOCK):
            w = min(BLOCK, n - s0)
            mb, c1, c2, _ = two_candidate_block(m, cands, m, g, s0, w)
            acc = MEAN2_ZERO
            special = b_rss = nd = 0.0
            for e in range(w):
                mv, p1, p2 = stored_value(mb[e]), stored_value(c1[e]), stored_value(c2[e])
                acc = mean2_add(acc, y0, y1, y2, y3, e, mv, p1, p2)
                _, e_special, e_rss, e_nd = recipe_element(
                    mv, p1, p2, 0.0, 0.0, l1, l2, shift, half, keep, tiny, max_finite, e, v_row, r_row, mv_row
                )
                special += e_special
                b_rss += e_rss
                nd += e_nd
            mean2_store(acc, sums[g], gram[g])
            n_res, rv = mean2_sample(
                y, zbuf, w, resolved_stride, vstride, threshold, top, floor_u, ext, weight, gram_res[g], rgram[g]
            )
            resolved[g] += n_res
            rounding[g] += rv
            fused = (special, b_rss, nd, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
            b_rss, nd_block, _, _ = finish_block(
                m, cands, m, g, s0, w, False, coef, cov, bits, min_exp, max_finite, sigmas, fused, rows, differ,
                counts, hist, unexplained,
            )  # fmt: skip
            acc_rss += b_rss
            n_diff += nd_block
        for r in range(4):
            for c in range(r):
                gram[g, r, c] = gram[g, c, r]
                gram_res[g, r, c] = gram_res[g, c, r]
                rgram[g, r, c] = rgram[g, c, r]
        rss[g] = acc_rss
        differing[g] = n_diff
        zero[g] = counts

"""detect's Gram sweep, compiled (numba; SPEC.md §6.2, §6.8): per piece of a block, one pass over the stored values
in float64 for the Gram matrices the fit solves. As array-library calls it was ~30 passes over every chunk (decode,
subtract, stack, mask, multiply, reduce); here each element is decoded once into 512-element rows that stay in L1.

Inputs: M and B as (pieces, elements) arrays and the candidates as a tuple of k such arrays, all of bf16 bit
patterns (uint16) or all float32 or all float64 values, read-only (attest.forensics.kernels widens mixed or float16
inputs: exact), so the sweep has a specialization per input type and candidate count. Two candidates (four rows
with the base or the mean) is the common case and runs fused loops. `nogil`: the thread pool runs chunks in
parallel. `cache`: compiled once per machine (a few seconds), then loaded.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from attest.forensics.compiled.elements import (
    BLOCK,
    FAST,
    add_into,
    decode,
    exponent,
    power,
    products,
    stored_value,
    two_candidate_block,
)

ELEMENTS_SHA256 = "956948cf03a0f3011fa3c1569bb0e552a25e941d33683f5ca346cb3b57168af7"
"""SHA-256 of elements.py, whose helpers are compiled into this file's cached code (see its docstring)."""


@njit(inline="always")
def _products(y: np.ndarray, w: int, weight: np.ndarray | None, out: np.ndarray) -> None:
    """`products`, four unweighted rows in one loop."""
    if y.shape[0] == 4 and weight is None:
        _products4(y, w, out)
    else:
        products(y, w, weight, out)


@njit(inline="always")
def _products4(y: np.ndarray, w: int, out: np.ndarray) -> None:
    """`_products` for four rows (two candidates and a base, the common case) in one loop with ten accumulators:
    each row is read once instead of four times (the Gram sweep's full products 0.47 -> 0.27 ms per chunk)."""
    y0, y1, y2, y3 = y[0, :w], y[1, :w], y[2, :w], y[3, :w]
    acc = _ZERO10
    for e in range(w):
        a, b, c, d = y0[e], y1[e], y2[e], y3[e]
        acc = _products_of(acc, a, b, c, d, a, b, c, d)
    _add_upper4(out, acc)


@njit(inline="always")
def _extremes(z: np.ndarray, k: int, w: int, with_base: bool, ext: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column t < w: the largest and smallest of z[1..k, t] (and 0 with a base), in two rows of `ext`. The
    running extremes alternate between two rows: a maximum stored back into the array it reads does not vectorize."""
    hi, hi_next, lo, lo_next = ext[0, :w], ext[1, :w], ext[2, :w], ext[3, :w]
    z1 = z[1, :w]
    if with_base:
        for t in range(w):
            x = z1[t]
            hi[t] = x if x > 0.0 else 0.0
            lo[t] = x if x < 0.0 else 0.0
    else:
        hi[:] = z1
        lo[:] = z1
    for i in range(2, k + 1):
        zi = z[i, :w]
        for t in range(w):
            x = zi[t]
            h = hi[t]
            hi_next[t] = x if x > h else h
        for t in range(w):
            x = zi[t]
            lw = lo[t]
            lo_next[t] = x if x < lw else lw
        hi, hi_next = hi_next, hi
        lo, lo_next = lo_next, lo
    return hi, lo


@njit(inline="always")
def _resolved4(
    z: np.ndarray, w: int, with_base: bool, threshold: float, spread: np.ndarray, weight: np.ndarray, out: np.ndarray
) -> float:
    """For rows z = [M - A, P_1 - A, P_2 - A, A] in one loop: each column's spread (the two candidates' deviations,
    and 0 with a base), its weight (1 when resolved, else 0), the resolved Gram products into `out` (upper
    triangle) and the number resolved. What the general path does in ~15 loops over short rows, with the same
    values (the weights are 0 or 1, so the products are exact whichever way they are grouped)."""
    z0, z1, z2, z3 = z[0, :w], z[1, :w], z[2, :w], z[3, :w]
    acc = _ZERO10
    n = 0.0
    for t in range(w):
        a, b, c, d = z0[t], z1[t], z2[t], z3[t]
        hi = b if b > c else c
        lo = c if b > c else b
        if with_base:
            hi = hi if hi > 0.0 else 0.0
            lo = lo if lo < 0.0 else 0.0
        sp = hi - lo
        wt = 1.0 if sp >= abs(d) * threshold else 0.0
        spread[t] = sp
        weight[t] = wt
        n += wt
        acc = _products_of(acc, wt * a, wt * b, wt * c, wt * d, a, b, c, d)
    _add_upper4(out, acc)
    return n


@njit(inline="always")
def _resolved_mean2(
    z: np.ndarray, w: int, threshold: float, spread: np.ndarray, weight: np.ndarray, out: np.ndarray
) -> float:
    """`_resolved4` without a base for rows z = [M - A, P_1 - A, ., A] (A the two candidates' mean), writing row 2
    as -(P_1 - A) (see _mean_rows2): the spread is 2 |P_1 - A|, and six products make the ten."""
    z0, z1, z2, z3 = z[0, :w], z[1, :w], z[2, :w], z[3, :w]
    g00 = g01 = g03 = g11 = g13 = g33 = 0.0
    n = 0.0
    for t in range(w):
        a, b, d = z0[t], z1[t], z3[t]
        z2[t] = -b
        sp = abs(b) + abs(b)
        wt = 1.0 if sp >= abs(d) * threshold else 0.0
        spread[t] = sp
        weight[t] = wt
        n += wt
        wa, wb, wd = wt * a, wt * b, wt * d
        g00 += wa * a
        g01 += wa * b
        g03 += wa * d
        g11 += wb * b
        g13 += wb * d
        g33 += wd * d
    _add_upper4(out, (g00, g01, -g01, g03, g11, -g11, g13, g11, -g13, g33))
    return n


@njit(inline="always")
def _rounding4(
    z: np.ndarray,
    spread: np.ndarray,
    weight: np.ndarray,
    nq: int,
    stride: int,
    top: float,
    floor_u: float,
    out: np.ndarray,
) -> float:
    """The rounding variance u^2/12 (times `stride`, 0 where unresolved) of every stride-th column of the four rows,
    its weighted Gram products into `out` and its sum, in one loop over those columns."""
    z0, z1, z2, z3 = z[0], z[1], z[2], z[3]
    acc = _ZERO10
    total = 0.0
    for t in range(nq):
        e = t * stride
        a, b, c, d = z0[e], z1[e], z2[e], z3[e]
        u = max(power(exponent(abs(d) + spread[e])) * top, floor_u)
        qv = u * u * (stride / 12.0) * weight[e]
        total += qv
        acc = _products_of(acc, qv * a, qv * b, qv * c, qv * d, a, b, c, d)
    _add_upper4(out, acc)
    return total


@njit(inline="always")
def _mean_rows2(
    m: np.ndarray, c1: np.ndarray, c2: np.ndarray, w: int, y: np.ndarray, sums: np.ndarray, out: np.ndarray
) -> None:
    """Two candidates and no base, in one loop over the stored block: the rows y = [M - A, P_1 - A, P_2 - A, A]
    (A the candidates' mean), their sums into `sums` and their Gram products into `out` (upper triangle). With two
    candidates P_2 - A = -(P_1 - A), exactly whenever P_1 + P_2 is exact in float64 (stored values whose exponents
    are within ~45 (bf16) or ~29 (float32) of each other; else they differ by a rounding of A, 2^-53 of it, as any
    order of summation does), so six products and three sums make the ten and four. The general path decodes each
    candidate twice (for the mean and against it) and passes over the rows ~12 times; here every element is read
    once and its values stay in registers (the sweep 1.83 -> 1.21 ms per 2^18-element chunk on Zen 1)."""
    y0, y1, y2, y3 = y[0, :w], y[1, :w], y[2, :w], y[3, :w]  # 1-D: indexing y itself in the loop defeats vectors
    acc = MEAN2_ZERO
    for e in range(w):
        acc = mean2_add(acc, y0, y1, y2, y3, e, stored_value(m[e]), stored_value(c1[e]), stored_value(c2[e]))
    mean2_store(acc, sums, out)


@njit(inline="always")
def mean2_add(
    acc: tuple[float, ...],
    y0: np.ndarray,
    y1: np.ndarray,
    y2: np.ndarray,
    y3: np.ndarray,
    e: int,
    mv: float,
    p1: float,
    p2: float,
) -> tuple[float, ...]:
    """One element of `_mean_rows2`: its rows into column e of y0..y3, and acc + (its three sums, its six
    products)."""
    a = (p1 + p2) / 2.0
    d0 = mv - a
    d1 = p1 - a
    y0[e], y1[e], y2[e], y3[e] = d0, d1, -d1, a
    return (
        acc[0] + d0, acc[1] + d1, acc[2] + a, acc[3] + d0 * d0, acc[4] + d0 * d1, acc[5] + d0 * a,
        acc[6] + d1 * d1, acc[7] + d1 * a, acc[8] + a * a,
    )  # fmt: skip


@njit(inline="always")
def mean2_store(acc: tuple[float, ...], sums: np.ndarray, out: np.ndarray) -> None:
    """The sums and products of `mean2_add` into the four sums and the ten products of the rows (P_2 - A's from
    P_1 - A's)."""
    s0, s1, s3, g00, g01, g03, g11, g13, g33 = acc
    sums[0] += s0
    sums[1] += s1
    sums[2] -= s1
    sums[3] += s3
    _add_upper4(out, (g00, g01, -g01, g03, g11, -g11, g13, g11, -g13, g33))


@njit(inline="always")
def mean2_sample(
    y: np.ndarray,
    zbuf: np.ndarray,
    w: int,
    resolved_stride: int,
    vstride: int,
    threshold: float,
    top: float,
    floor_u: float,
    ext: np.ndarray,
    weight: np.ndarray,
    gram_res: np.ndarray,
    rgram: np.ndarray,
) -> tuple[float, float]:
    """The resolved and rounding-variance statistics of a block's rows from `_mean_rows2` (every
    `resolved_stride`-th element, copied together so that the loops vectorize; P_2 - A is written as -(P_1 - A) by
    _resolved_mean2): (resolved count, summed rounding variance), the Gram products into gram_res and rgram."""
    ws = (w + resolved_stride - 1) // resolved_stride
    if resolved_stride == 1:
        z = y
    else:
        z = zbuf
        _every_of(z, y, (0, 1, 3), ws, resolved_stride)
    wres = weight[:ws]
    spread = ext[0, :ws]
    n_res = _resolved_mean2(z, ws, threshold, spread, wres, gram_res)
    return n_res, _rounding4(z, spread, wres, (ws + vstride - 1) // vstride, vstride, top, floor_u, rgram)


@njit(inline="always")
def sample_constants(
    n: int, bits: int, min_exp: int, ratio: float, resolved_stride: int, rvar_min: int, rvar_stride: int
) -> tuple[float, float, float, int]:
    """For pieces of n elements: the resolved test's threshold on |A|, the rounding variance's floor and top spacing
    factors, and the stride of the rounding-variance sample (gram_sweep's parameters)."""
    vstride = rvar_stride if (n + resolved_stride - 1) // resolved_stride >= rvar_min else 1
    return ratio / (1.0 - ratio), math.ldexp(1.0, min_exp + 1 - bits), math.ldexp(1.0, 1 - bits), vstride


@njit(inline="always")
def mirror_lower(gram: np.ndarray, gram_res: np.ndarray, rgram: np.ndarray) -> None:
    """A piece's three Gram matrices, summed in their upper triangles, made symmetric."""
    nv = gram.shape[0]
    for r in range(nv):
        for c in range(r):
            gram[r, c] = gram[c, r]
            gram_res[r, c] = gram_res[c, r]
            rgram[r, c] = rgram[c, r]


MEAN2_ZERO: tuple[float, ...] = (0.0,) * 9
_ZERO10: tuple[float, ...] = (0.0,) * 10


@njit(inline="always")
def _products_of(
    acc: tuple[float, ...], wa: float, wb: float, wc: float, wd: float, a: float, b: float, c: float, d: float
) -> tuple[float, ...]:
    """acc + the upper triangle of (wa, wb, wc, wd)^T (a, b, c, d), row by row: ten running sums that stay in
    registers (a tuple in a loop is ten scalars to LLVM, and the loop vectorizes as with ten named sums)."""
    return (
        acc[0] + wa * a, acc[1] + wa * b, acc[2] + wa * c, acc[3] + wa * d, acc[4] + wb * b,
        acc[5] + wb * c, acc[6] + wb * d, acc[7] + wc * c, acc[8] + wc * d, acc[9] + wd * d,
    )  # fmt: skip


@njit(inline="always")
def _add_upper4(out: np.ndarray, acc: tuple[float, ...]) -> None:
    """out's upper triangle += the ten sums of `_products_of`."""
    i = 0
    for r in range(4):
        for c in range(r, 4):
            out[r, c] += acc[i]
            i += 1


@njit(inline="always")
def _every_of(dst: np.ndarray, src: np.ndarray, rows: tuple[int, ...], count: int, stride: int) -> None:
    """`_every` for the given rows only."""
    for r in rows:
        d = dst[r, :count]
        s = src[r]
        for t in range(count):
            d[t] = s[t * stride]


@njit(inline="always")
def _every(dst: np.ndarray, src: np.ndarray, count: int, stride: int) -> None:
    """dst[r, :count] = every stride-th element of src[r], for each row: a sample copied together so that the loops
    over it vectorize."""
    for r in range(src.shape[0]):
        d = dst[r, :count]
        s = src[r]
        for t in range(count):
            d[t] = s[t * stride]


@njit(nogil=True, fastmath=FAST, cache=True)
def gram_sweep(
    m: np.ndarray,
    cands: tuple[np.ndarray, ...],
    base: np.ndarray,
    with_base: bool,
    bits: int,
    min_exp: int,
    resolved_stride: int,
    rvar_min: int,
    rvar_stride: int,
    ratio: float,
    fused: bool,
    out: tuple[np.ndarray, ...],
) -> None:
    """Per piece g: Gram matrix, row sums, resolved Gram matrix, rounding-variance Gram matrix, summed rounding
    variance and resolved count of Y = [M - A, P_1 - A, ..., P_k - A, A] (A = B, or the candidates' mean), as
    attest.forensics.kernels.GramBlock. The resolved statistics come from every `resolved_stride`-th element, the
    rounding-variance ones from every `rvar_stride`-th of those when there are at least `rvar_min` (weighted by that
    stride). `fused`: the four-row loops where they apply (False: the general
    path everywhere, which tests compare them with). `out`: (gram, sums, gram_resolved, rounding_gram, rounding,
    resolved), zeroed by the caller."""
    gram, sums, gram_res, rgram, rounding, resolved = out
    g_count, n = m.shape
    k = len(cands)
    nv = k + 2
    threshold, floor_u, top, vstride = sample_constants(n, bits, min_exp, ratio, resolved_stride, rvar_min, rvar_stride)
    y = np.empty((nv, BLOCK))
    a = y[nv - 1]
    scratch = np.empty(BLOCK)
    ext = np.empty((4, BLOCK))
    q = np.empty((nv, BLOCK))
    qvar = np.empty(BLOCK)
    weight = np.empty(BLOCK)  # 1 for a resolved element of the sample, else 0
    zbuf = np.empty((nv, (BLOCK + resolved_stride - 1) // resolved_stride))  # the sample of one block
    # narrow inputs (bf16 bits, float32): P_1 + P_2 is exact in float64 (see _mean_rows2); float64 inputs take the
    # general path, whose rows keep M - P_2 = (M - A) - (P_2 - A) exact
    mean2 = nv == 4 and fused and not with_base and m.itemsize < 8
    for g in range(g_count):
        for s0 in range(0, n, BLOCK):
            w = min(BLOCK, n - s0)
            if mean2:
                mb, c1, c2, _ = two_candidate_block(m, cands, base, g, s0, w)
                _mean_rows2(mb, c1, c2, w, y, sums[g], gram[g])
            else:
                if with_base:
                    decode(a, base[g, s0 : s0 + w])
                else:
                    a[:w] = 0.0
                    for i in range(k):
                        decode(scratch, cands[i][g, s0 : s0 + w])
                        add_into(a, scratch, w)
                    for e in range(w):
                        a[e] /= k
                decode(y[0], m[g, s0 : s0 + w], a)
                for i in range(k):
                    decode(y[i + 1], cands[i][g, s0 : s0 + w], a)
                for r in range(nv):
                    yr = y[r]
                    acc = 0.0
                    for e in range(w):
                        acc += yr[e]
                    sums[g, r] += acc
                _products(y, w, None, gram[g])
            # Resolved elements: the given models (the base's own deviation 0 included) spread over at least
            # `ratio` of |A| + spread. The sample (every resolved_stride-th element; s0 is a multiple of BLOCK,
            # itself a multiple of every stride) is first copied together so that the loops below vectorize.
            if mean2:
                n_res, rv = mean2_sample(
                    y, zbuf, w, resolved_stride, vstride, threshold, top, floor_u, ext, weight, gram_res[g], rgram[g]
                )
                resolved[g] += n_res
                rounding[g] += rv
                continue
            ws = (w + resolved_stride - 1) // resolved_stride
            if resolved_stride == 1:
                z = y
            else:
                z = zbuf
                _every(z, y, ws, resolved_stride)
            wres = weight[:ws]
            if nv == 4 and fused:
                spread = ext[0, :ws]
                if with_base:  # a constant in each call: a branch on it inside the loop keeps it from vectorizing
                    resolved[g] += _resolved4(z, ws, True, threshold, spread, wres, gram_res[g])
                else:
                    resolved[g] += _resolved4(z, ws, False, threshold, spread, wres, gram_res[g])
                rounding[g] += _rounding4(
                    z, spread, wres, (ws + vstride - 1) // vstride, vstride, top, floor_u, rgram[g]
                )
                continue
            hi, lo = _extremes(z, k, ws, with_base, ext)
            za = z[nv - 1, :ws]
            n_res = 0.0
            for t in range(ws):
                sp = hi[t] - lo[t]
                hi[t] = sp
                wres[t] = 1.0 if sp >= abs(za[t]) * threshold else 0.0
                n_res += wres[t]
            resolved[g] += n_res
            _products(z, ws, wres, gram_res[g])
            # Rounding variance u^2/12 of every vstride-th sample element (0 where unresolved), copied together.
            nq = (ws + vstride - 1) // vstride
            _every(q, z, nq, vstride)
            qv = qvar[:nq]
            for t in range(nq):
                x = abs(za[t * vstride]) + hi[t * vstride]
                u = max(power(exponent(x)) * top, floor_u)
                qv[t] = u * u * (vstride / 12.0) * wres[t * vstride]
                rounding[g] += qv[t]
            _products(q, nq, qv, rgram[g])
        mirror_lower(gram[g], gram_res[g], rgram[g])

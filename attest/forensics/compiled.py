"""detect's two sweeps over the weights, compiled (numba): one pass per sweep over each element, in float64, straight
from the stored bits (SPEC.md §6.2-6.3). The sweeps are nearly all of detect's work, and as array-library calls
they were ~30 passes over every chunk (decode, subtract, stack, mask, multiply, reduce, compare, count): detect then
took 5.5x the time of hashing the same bytes. Fused, the work per element is a few dozen instructions in registers.

Inputs: M and B as (pieces, elements) arrays, the candidates as one (k, pieces, elements) array, all of bf16 bit
patterns (uint16) or all float32 or all float64 values (attest.forensics.kernels widens mixed or float16 inputs:
exact), so each sweep has three specializations whatever k is. `nogil`: the thread pool runs chunks in parallel.
`cache`: compiled once per machine (a few seconds each), then loaded. Every compiled helper lives in this file on
purpose: numba's cache is invalidated by changes to the file of the cached function only, so a helper inlined from
another module could change while the cached sweeps kept its old code.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

_FAST = {"reassoc", "nsz", "arcp", "contract"}
"""Reordered sums and fused multiply-adds only (no finite-math assumptions: an Inf input must show in the Gram)."""

BLOCK = 512
"""Elements decoded at a time into float64 rows that stay in L1 while the Gram products run over them."""

_EXPONENT = 0x7FF0000000000000


def _bitcast(source: Any, target: Any, llvm_type: ir.Type) -> Any:
    """A compiled function reinterpreting a `source` value's bits as `target` (an LLVM bitcast: no memory round trip,
    and it vectorizes)."""

    def typer(typingctx: Any, value: Any) -> tuple[Any, Callable[..., Any]]:
        def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            return builder.bitcast(args[0], llvm_type)

        return target(source), codegen

    typer.__name__ = f"bitcast_{source}_to_{target}"
    return intrinsic(typer)


_f32_from_bits = _bitcast(types.uint32, types.float32, ir.FloatType())
_bits_of = _bitcast(types.float64, types.int64, ir.IntType(64))
_from_bits = _bitcast(types.int64, types.float64, ir.DoubleType())


def stored_value(x: np.generic) -> float:
    """The float64 value of one stored element: a bf16 bit pattern (uint16) or a float (the Python meaning of the
    compiled overload below)."""
    if isinstance(x, np.uint16):
        return float(np.array([int(x) << 16], dtype=np.uint32).view(np.float32)[0])
    return float(x)


@overload(stored_value, inline="always")
def _stored_value(x: Any) -> Callable[[Any], float]:
    # numba matches the implementations' parameters, annotations included, against this signature
    if isinstance(x, types.Integer):

        def bf16(x: Any) -> float:
            return np.float64(_f32_from_bits(np.uint32(x) << np.uint32(16)))

        return bf16

    def widened(x: Any) -> float:
        return np.float64(x)

    return widened


@njit(inline="always")
def _power(q: int) -> float:
    """2^q for a normal float64 exponent q, built from its bits (no libm call: vectorizes)."""
    return _from_bits((q + 1023) << 52)


@njit(inline="always")
def _exponent(x: float) -> int:
    """floor(log2 |x|) for a normal float64 x (-1023 for zero)."""
    return ((_bits_of(x) >> 52) & 0x7FF) - 1023


@njit(inline="always")
def _rounded(v: float, bits: int, min_exp: int, max_finite: float) -> float:
    """v rounded to nearest-even on a storage grid narrower than float64 (Inf past its largest finite value).
    Scaling by the grid's spacing is exact (a power of two), so rint does the rounding."""
    q = max(_exponent(v), min_exp) + 1 - bits
    r = np.rint(v * _power(-q)) * _power(q)
    return r if abs(r) <= max_finite else v * math.inf


@njit(inline="always")
def _spacing(x: float, bits: int, min_exp: int) -> float:
    """The storage grid's spacing at |x|: its ulp there (float64 storage: float64's)."""
    if bits >= 53:
        return np.spacing(abs(x))
    return _power(max(_exponent(x), min_exp) + 1 - bits)


@njit(inline="always")
def _grid_index(x: float, bits: int, min_exp: int) -> int:
    """Signed position of a storage-grid value on that grid (ulps from zero, IEEE order): the difference of two
    indices counts the ulps between them across the sign."""
    a = abs(x)
    e = _exponent(a)
    if e < min_exp:  # subnormal in storage: a multiple of the smallest spacing
        idx = int(a / math.ldexp(1.0, min_exp + 1 - bits))
    else:
        idx = ((e - min_exp + 1) << (bits - 1)) + ((_bits_of(a) & 0xFFFFFFFFFFFFF) >> (53 - bits))
    return -idx if x < 0 else idx


@njit(inline="always")
def _decode(dst: np.ndarray, src: np.ndarray, minus: np.ndarray | None = None) -> None:
    """dst[:] = the float64 values of src (less `minus`). 1-D views: indexing a 2-D array in the loop defeats
    vectorization."""
    if minus is None:
        for e in range(src.size):
            dst[e] = stored_value(src[e])
    else:
        for e in range(src.size):
            dst[e] = stored_value(src[e]) - minus[e]


@njit(inline="always")
def _products(y: np.ndarray, w: int, weight: np.ndarray | None, out: np.ndarray) -> None:
    """out[r, c] += sum_e weight[e] y[r, e] y[c, e] over the first w columns, upper triangle (weight None: 1)."""
    nv = y.shape[0]
    if nv == 4 and weight is None:
        _products4(y, w, out)
        return
    for r in range(nv):
        yr = y[r, :w]
        for c in range(r, nv):
            yc = y[c, :w]
            acc = 0.0
            if weight is None:
                for e in range(w):
                    acc += yr[e] * yc[e]
            else:
                wt = weight[:w]
                for e in range(w):
                    acc += wt[e] * yr[e] * yc[e]
            out[r, c] += acc


@njit(inline="always")
def _products4(y: np.ndarray, w: int, out: np.ndarray) -> None:
    """`_products` for four rows (two candidates and a base, the common case) in one loop with ten accumulators:
    each row is read once instead of four times (the Gram sweep's full products 0.47 -> 0.27 ms per chunk)."""
    y0, y1, y2, y3 = y[0, :w], y[1, :w], y[2, :w], y[3, :w]
    g00 = g01 = g02 = g03 = g11 = g12 = g13 = g22 = g23 = g33 = 0.0
    for e in range(w):
        a, b, c, d = y0[e], y1[e], y2[e], y3[e]
        g00 += a * a
        g01 += a * b
        g02 += a * c
        g03 += a * d
        g11 += b * b
        g12 += b * c
        g13 += b * d
        g22 += c * c
        g23 += c * d
        g33 += d * d
    out[0, 0] += g00
    out[0, 1] += g01
    out[0, 2] += g02
    out[0, 3] += g03
    out[1, 1] += g11
    out[1, 2] += g12
    out[1, 3] += g13
    out[2, 2] += g22
    out[2, 3] += g23
    out[3, 3] += g33


@njit(nogil=True, fastmath=_FAST, cache=True)
def gram_sweep(
    m: np.ndarray,
    cands: np.ndarray,
    base: np.ndarray,
    with_base: bool,
    bits: int,
    min_exp: int,
    resolved_stride: int,
    rvar_min: int,
    rvar_stride: int,
    ratio: float,
    out: tuple[np.ndarray, ...],
) -> None:
    """Per piece g: Gram matrix, row sums, resolved Gram matrix, rounding-variance Gram matrix, summed rounding
    variance and resolved count of Y = [M - A, P_1 - A, ..., P_k - A, A] (A = B, or the candidates' mean), as
    attest.forensics.kernels.GramBlock. The resolved statistics come from every `resolved_stride`-th element, the
    rounding-variance ones from every `rvar_stride`-th of those when there are at least `rvar_min` (weighted by that
    stride). `out`: (gram, sums, gram_resolved, rounding_gram, rounding, resolved), zeroed by the caller."""
    gram, sums, gram_res, rgram, rounding, resolved = out
    g_count, n = m.shape
    k = cands.shape[0]
    nv = k + 2
    threshold = ratio / (1.0 - ratio)
    floor_u = math.ldexp(1.0, min_exp + 1 - bits)
    top = math.ldexp(1.0, 1 - bits)
    y = np.empty((nv, BLOCK))
    a = y[nv - 1]
    scratch = np.empty(BLOCK)
    ext = np.empty((4, BLOCK))
    q = np.empty((nv, BLOCK))
    qvar = np.empty(BLOCK)
    weight = np.empty(BLOCK)  # 1 for a resolved element of the sample, else 0
    zbuf = np.empty((nv, (BLOCK + resolved_stride - 1) // resolved_stride))  # the sample of one block
    for g in range(g_count):
        sub = (n + resolved_stride - 1) // resolved_stride
        vstride = rvar_stride if sub >= rvar_min else 1
        for s0 in range(0, n, BLOCK):
            w = min(BLOCK, n - s0)
            if with_base:
                _decode(a, base[g, s0 : s0 + w])
            else:
                a[:w] = 0.0
                for i in range(k):
                    _decode(scratch, cands[i, g, s0 : s0 + w])
                    _add(a, scratch, w)
                for e in range(w):
                    a[e] /= k
            _decode(y[0], m[g, s0 : s0 + w], a)
            for i in range(k):
                _decode(y[i + 1], cands[i, g, s0 : s0 + w], a)
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
            ws = (w + resolved_stride - 1) // resolved_stride
            if resolved_stride == 1:
                z = y
            else:
                z = zbuf
                for r in range(nv):
                    zr = z[r, :ws]
                    yr = y[r, :w]
                    for t in range(ws):
                        zr[t] = yr[t * resolved_stride]
            hi, lo = _extremes(z, k, ws, with_base, ext)
            za = z[nv - 1, :ws]
            wres = weight[:ws]
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
            for r in range(nv):
                qr = q[r, :nq]
                zr = z[r, :ws]
                for t in range(nq):
                    qr[t] = zr[t * vstride]
            qv = qvar[:nq]
            for t in range(nq):
                x = abs(za[t * vstride]) + hi[t * vstride]
                u = max(_power(_exponent(x)) * top, floor_u)
                qv[t] = u * u * (vstride / 12.0) * wres[t * vstride]
                rounding[g] += qv[t]
            _products(q, nq, qv, rgram[g])
        for r in range(nv):
            for c in range(r):
                gram[g, r, c] = gram[g, c, r]
                gram_res[g, r, c] = gram_res[g, c, r]
                rgram[g, r, c] = rgram[g, c, r]


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
def _delta(x: np.ndarray, src: np.ndarray, b: np.ndarray, c: float, v: np.ndarray, dmag: np.ndarray) -> None:
    """One pass per candidate: x = P_i - B from the stored values, v += c x, dmag += |x| (over src's length)."""
    for e in range(src.size):
        d = stored_value(src[e]) - b[e]
        x[e] = d
        v[e] += c * d
        dmag[e] += abs(d)


@njit(inline="always")
def _add(dst: np.ndarray, src: np.ndarray, w: int) -> None:
    """dst[:w] += src[:w]."""
    d = dst[:w]
    s = src[:w]
    for e in range(w):
        d[e] += s[e]


@njit(nogil=True, fastmath=_FAST, cache=True)
def residual_sweep(
    m: np.ndarray,
    cands: np.ndarray,
    base: np.ndarray,
    with_base: bool,
    coef: np.ndarray,
    cov: np.ndarray,
    bits: int,
    min_exp: int,
    max_finite: float,
    sigmas: float,
    out: tuple[np.ndarray, ...],
) -> None:
    """Per piece g: recompute the fitted recipe v = B + sum_j coef_j x_j (x = [P_1 - B, ..., P_k - B, B]; without a
    base v = sum_i coef_i P_i) in float64, round it to the storage grid and count what no order of computing it can
    explain (tolerance of SPEC.md §6.3 plus `sigmas` standard errors of the fitted value from `cov`), as
    attest.forensics.kernels.ResidualCounts. `out`: (rss, differing, unexplained, hist (G, 5), zero (G, 5),
    excess_delta, kept_delta), zeroed by the caller; the zero pattern needs a base."""
    rss, differing, unexplained, hist, zero, excess_delta, kept_delta = out
    g_count, n = m.shape
    k = cands.shape[0]
    nreg = coef.shape[1]
    grid = math.ldexp(1.0, -bits)  # 2^-p: one rounding in the storage dtype, relative
    f32_eps = math.ldexp(1.0, -24)
    own = 2.0 * (k + 2) * math.ldexp(1.0, -53)
    # rows: x_1..x_nreg, M, B, v, rounded v, sum_i |D_i|
    rows = np.empty((nreg + 5, BLOCK))
    mv, b, v, r, dmag = rows[nreg], rows[nreg + 1], rows[nreg + 2], rows[nreg + 3], rows[nreg + 4]
    differ = np.empty(BLOCK, np.int64)
    for g in range(g_count):
        acc_rss = 0.0
        n_diff = 0
        counts = np.zeros(5, np.int64)
        d_excess = 0.0
        d_kept = 0.0
        for s0 in range(0, n, BLOCK):
            w = min(BLOCK, n - s0)
            _decode(mv, m[g, s0 : s0 + w])
            if with_base:
                _decode(b, base[g, s0 : s0 + w])
                rows[k, :w] = b[:w]
                scale = 1.0 + coef[g, k]  # B + s B
                for e in range(w):
                    v[e] = scale * b[e]
            else:
                b[:w] = 0.0
                v[:w] = 0.0
            dmag[:w] = 0.0
            for i in range(k):
                _delta(rows[i], cands[i, g, s0 : s0 + w], b, coef[g, i], v, dmag)
            if bits < 53:
                for e in range(w):
                    r[e] = _rounded(v[e], bits, min_exp, max_finite)
            else:
                r[:w] = v[:w]
            # One vectorized pass: squared residual, differing count and the zero pattern as 0/1 sums (in float64:
            # exact below 2^53, and the loop vectorizes).
            nd_f = c0 = c1 = c2 = c3 = 0.0
            for e in range(w):
                d = mv[e] - v[e]
                acc_rss += d * d
                nd_f += 1.0 if r[e] != mv[e] else 0.0
                eligible = 1.0 if dmag[e] > 0.0 else 0.0
                m_is_b = eligible if mv[e] == b[e] else 0.0
                r_is_b = eligible if r[e] == b[e] else 0.0
                excess = m_is_b - m_is_b * r_is_b
                c0 += eligible
                c1 += m_is_b
                c2 += r_is_b
                c3 += excess
                d_excess += dmag[e] * excess
                d_kept += dmag[e] * (eligible - m_is_b)
            nd = int(nd_f)
            if with_base:
                counts[0] += int(c0)
                counts[1] += int(c1)
                counts[2] += int(c2)
                counts[3] += int(c3)
                counts[4] += int(c0 - c1)
            if nd:
                nd = 0
                for e in range(w):
                    differ[nd] = e
                    nd += r[e] != mv[e]
            n_diff += nd
            for t in range(nd):
                e = differ[t]
                step = abs(_grid_index(mv[e], bits, min_exp) - _grid_index(r[e], bits, min_exp))
                hist[g, 0 if step <= 1 else 1 if step <= 2 else 2 if step <= 4 else 3 if step <= 16 else 4] += 1
                terms = 0.0
                for j in range(nreg):
                    terms += abs(rows[j, e] * coef[g, j])
                if with_base:  # attest.forensics.kernels.arith_allowance, per element
                    arith = (k + 1) * grid * terms + 4.0 * f32_eps * (abs(b[e]) + terms)
                else:
                    arith = (k + 2) * f32_eps * terms
                arith += own * (abs(v[e]) + terms)
                fitted_var = 0.0  # x^T Cov x: the fitted value's variance from the coefficients' uncertainty
                for i in range(nreg):
                    for j in range(nreg):
                        fitted_var += rows[i, e] * cov[g, i, j] * rows[j, e]
                spacing = _spacing(max(abs(mv[e]), abs(v[e])), bits, min_exp)
                if abs(mv[e] - v[e]) > 0.5 * spacing + arith + math.sqrt(max(fitted_var, 0.0)) * sigmas:
                    unexplained[g] += 1
        rss[g] = acc_rss
        differing[g] = n_diff
        zero[g] = counts
        if with_base:  # without one, dmag summed the candidates themselves
            excess_delta[g] = d_excess
            kept_delta[g] = d_kept

"""What detect's compiled sweeps (attest.forensics.compiled.gram, .residual) do to single stored elements: read a
bf16 bit pattern or a float as float64, round a value to a storage grid, find its spacing and its index on it.
Every helper is inlined into the sweeps (`inline="always"`), so it is compiled into their cached code. numba
invalidates a cached function when its own file changes, not when a helper in another file does: each sweep module
carries this file's SHA-256 (ELEMENTS_SHA256), and a test fails until it is updated after an edit here, which
changes the sweep files and so their caches.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

FAST = {"reassoc", "nsz", "arcp", "contract"}
"""Reordered sums and fused multiply-adds only (no finite-math assumptions: an Inf input must show in the Gram)."""

BLOCK = 512
"""Elements decoded at a time into float64 rows that stay in L1 while the Gram products run over them."""


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
bits_of = _bitcast(types.float64, types.int64, ir.IntType(64))
from_bits = _bitcast(types.int64, types.float64, ir.DoubleType())


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
def power(q: int) -> float:
    """2^q for a normal float64 exponent q, built from its bits (no libm call: vectorizes)."""
    return from_bits((q + 1023) << 52)


@njit(inline="always")
def exponent(x: float) -> int:
    """floor(log2 |x|) for a normal float64 x (-1023 for zero)."""
    return ((bits_of(x) >> 52) & 0x7FF) - 1023


@njit(inline="always")
def rounded(v: float, bits: int, min_exp: int, max_finite: float) -> float:
    """v rounded to nearest-even on a storage grid narrower than float64 (Inf past its largest finite value).
    Scaling by the grid's spacing is exact (a power of two), so rint does the rounding."""
    q = max(exponent(v), min_exp) + 1 - bits
    r = np.rint(v * power(-q)) * power(q)
    return r if abs(r) <= max_finite else v * math.inf


@njit(inline="always")
def rounded_normal(v: float, shift: int, half: int, keep: int) -> float:
    """`rounded` by integer arithmetic on v's bits, for v normal on the grid and within its range (the caller checks
    and takes `rounded` otherwise): add just under half a grid step, plus the last kept bit (ties to even), and drop
    the `shift` = 53 - bits low bits (`half` = 2^(shift-1) - 1, `keep` the mask of the high 64 - shift bits). A
    carry into the exponent is the rounding up to the next binade, as it should be."""
    x = bits_of(v)
    return from_bits((x + half + ((x >> shift) & 1)) & keep)


@njit(inline="always")
def spacing(x: float, bits: int, min_exp: int) -> float:
    """The storage grid's spacing at |x|: its ulp there (float64 storage: float64's)."""
    if bits >= 53:
        return np.spacing(abs(x))
    return power(max(exponent(x), min_exp) + 1 - bits)


@njit(inline="always")
def grid_index(x: float, bits: int, min_exp: int) -> int:
    """Signed position of a storage-grid value on that grid (ulps from zero, IEEE order): the difference of two
    indices counts the ulps between them across the sign."""
    a = abs(x)
    e = exponent(a)
    if e < min_exp:  # subnormal in storage: a multiple of the smallest spacing
        idx = int(a / math.ldexp(1.0, min_exp + 1 - bits))
    else:
        idx = ((e - min_exp + 1) << (bits - 1)) + ((bits_of(a) & 0xFFFFFFFFFFFFF) >> (53 - bits))
    return -idx if x < 0 else idx


@njit(inline="always")
def decode(dst: np.ndarray, src: np.ndarray, minus: np.ndarray | None = None) -> None:
    """dst[:] = the float64 values of src (less `minus`). 1-D views: indexing a 2-D array in the loop defeats
    vectorization."""
    if minus is None:
        for e in range(src.size):
            dst[e] = stored_value(src[e])
    else:
        for e in range(src.size):
            dst[e] = stored_value(src[e]) - minus[e]


@njit(inline="always")
def add_into(dst: np.ndarray, src: np.ndarray, w: int) -> None:
    """dst[:w] += src[:w]."""
    d = dst[:w]
    s = src[:w]
    for e in range(w):
        d[e] += s[e]


@njit(inline="always")
def products(y: np.ndarray, w: int, weight: np.ndarray | None, out: np.ndarray) -> None:
    """out[r, c] += sum_e weight[e] y[r, e] y[c, e] over the first w columns, upper triangle (weight None: 1). A loop
    per pair over 1-D rows: indexing the 2-D array inside the loop would keep it from vectorizing."""
    nv = y.shape[0]
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
def two_candidate_block(
    m: np.ndarray, cands: tuple[np.ndarray, ...], base: np.ndarray, g: int, s0: int, w: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Piece g's block [s0, s0 + w) of M, the two candidates and B (the fused loops' inputs): 1-D views."""
    sl = slice(s0, s0 + w)
    return m[g, sl], cands[0][g, sl], cands[len(cands) - 1][g, sl], base[g, sl]  # cands[1], typed for every k


@njit(inline="always")
def block_rows(
    m: np.ndarray,
    cands: tuple[np.ndarray, ...],
    base: np.ndarray,
    g: int,
    s0: int,
    w: int,
    with_base: bool,
    rows: np.ndarray,
    mv: np.ndarray,
    b: np.ndarray,
) -> None:
    """Block [s0, s0 + w) of piece g: M, B (0 without a base) and x_i = P_i - B as float64 rows (x_{k+1} = B with a
    base)."""
    k = len(cands)
    decode(mv, m[g, s0 : s0 + w])
    if with_base:
        decode(b, base[g, s0 : s0 + w])
        rows[k, :w] = b[:w]
    else:
        b[:w] = 0.0
    for i in range(k):
        decode(rows[i], cands[i][g, s0 : s0 + w], b)

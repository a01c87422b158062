"""The sweeps of detect's fit over a **block**: G equal-length pieces, each piece one small tensor whole or one chunk
of a large tensor (SPEC.md §6.2-6.3, §6.8): the Gram sweep, the residual sweep and a refinement pass. The sweeps
themselves are compiled (attest.forensics.compiled); this module defines their results and hands them the stored
values without copies where it can. Every result is per piece and does not depend on the other pieces of its
block, so a tensor fits the same alone, in any group, in one process or in a work unit.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, fields
from typing import Any, TypeVar

import numpy as np

from attest.checkpoint.reader import as_float32
from attest.forensics import compiled
from attest.forensics.pairing import MAX_FINITE, MIN_EXPONENT, PRECISION_BITS

CHUNK_ELEMENTS = 1 << 18
"""Elements per piece row of a block (a larger tensor is cut into chunks of this size)."""

COEF_SIGMAS = 4.0
"""Coefficient uncertainty allowed in the rounding tolerance, in standard errors of the fitted value."""

ULP_BINS = ("1", "2", "3-4", "5-16", ">16")

Piece = tuple[np.ndarray, ...]
"""Flat arrays of one length (attest.checkpoint.reader.TensorTable.array: BF16 as uint16 bit patterns): the model's,
each candidate's, then the base's when given."""


_S = TypeVar("_S", bound="ChunkSums")


class ChunkSums:
    """Per-piece arrays that add up over the chunks of a large tensor (a dataclass of numpy arrays)."""

    @classmethod
    def total(cls: type[_S], parts: list[_S]) -> _S:
        """The sums over chunks of one tensor."""
        return cls(*(np.sum([getattr(p, f.name) for p in parts], axis=0) for f in fields(cls)))  # type: ignore[arg-type]


@dataclass
class ResidualCounts(ChunkSums):
    """Per piece of a block (arrays of length G; `hist` and `zero` G x 5)."""

    rss: np.ndarray  # |M - v|^2 (float64)
    differing: np.ndarray
    unexplained: np.ndarray
    hist: np.ndarray  # differing elements by ulp distance, bins ULP_BINS
    zero: np.ndarray  # eligible, observed, expected, excess, kept (with a base; zeros without)
    excess_delta: np.ndarray
    kept_delta: np.ndarray


RESOLVED_RATIO = 32.0
"""An element is **resolved** when the given models spread over at least RESOLVED_RATIO * 2^-p of its magnitude
(16-32 ulps of the storage grid, SPEC.md §6.2). Only resolved elements determine the coefficients: where the models
differ by a few ulps, rounding the merge to the grid pulls the result toward the nearer parent (a 1-ulp difference
times 3/7 rounds to no difference at all), and least squares over those elements is biased toward that parent
(measured: +0.05 on a 4/7 merge of bf16 models 2.5 ulps apart)."""


@dataclass
class GramBlock(ChunkSums):
    """Per piece (arrays over G pieces) for Y = [M - A, P_1 - A, ..., P_k - A, A] (A = B, or mean(P) without a base):
    its float64 Gram matrix and row sums over all elements; over the resolved elements its Gram matrix, the same
    weighted by each element's rounding variance u^2/12 (u: the storage grid's spacing at the element; the middle of
    the coefficients' sandwich covariance), the summed rounding variance, and their count."""

    gram: np.ndarray  # (G, k+2, k+2)
    sums: np.ndarray  # (G, k+2)
    gram_resolved: np.ndarray  # (G, k+2, k+2)
    rounding_gram: np.ndarray  # (G, k+2, k+2)
    rounding: np.ndarray  # (G,)
    resolved: np.ndarray  # (G,)


RESOLVED_STRIDE = 4
RVAR_STRIDE = 8
RVAR_MIN_ELEMENTS = 2048
"""Pieces of at least this many elements estimate the rounding-variance Gram from every RVAR_STRIDE-th element."""

_LOCAL = threading.local()

_BITS = np.dtype(np.uint16)
"""A bf16 input's type: its bit patterns (attest.checkpoint.reader.ARRAY_DTYPES)."""


def _buffer(slot: int, rows: int, cols: int, dtype: np.dtype[Any]) -> np.ndarray:
    """This thread's buffer for input `slot` of a block, reused across blocks: allocating and freeing megabytes per
    block costs page faults on every touch (the allocator trims them back to the system)."""
    bufs: dict[tuple[int, int, np.dtype[Any]], np.ndarray] = _LOCAL.__dict__.setdefault("bufs", {})
    key = (slot, rows, dtype)
    buf = bufs.get(key)
    if buf is None or buf.size < rows * cols:
        buf = np.empty(rows * max(cols, CHUNK_ELEMENTS // rows), dtype=dtype)
        bufs[key] = buf
    return buf[: rows * cols].reshape(rows, cols)


def _kernel_dtype(pieces: list[Piece]) -> np.dtype[Any]:
    """One element type for every input of a block, so the compiled sweep has one specialization per type: bf16 bit
    patterns when everything is bf16, else float32 when every input widens to it exactly, else float64."""
    kinds = {t.dtype for p in pieces for t in p}
    if kinds == {_BITS}:
        return _BITS
    return (
        np.dtype(np.float32) if kinds <= {_BITS, np.dtype(np.float16), np.dtype(np.float32)} else np.dtype(np.float64)
    )


def _rows(parts: list[np.ndarray], slot: int, kind: np.dtype[Any]) -> np.ndarray:
    """One input of every piece as a (G, n) read-only array of the kernel type: a view of the stored tensor for one
    piece of that type, else a copy into this thread's buffer for the slot. Read-only either way: numba types the
    two differently, and one type keeps one compiled sweep."""
    if len(parts) == 1 and parts[0].dtype == kind:
        a = parts[0].reshape(1, -1)
    else:
        a = _buffer(slot, len(parts), parts[0].size, kind)
        for row, q in zip(a, parts, strict=True):
            row[:] = as_float32(q) if q.dtype == _BITS and kind != _BITS else q  # exact
        a = a.view()
    a.flags.writeable = False
    return a


Inputs = tuple[np.ndarray, tuple[np.ndarray, ...], np.ndarray]
"""M (G, n), the candidates and B as the compiled sweeps read them (attest.forensics.kernels._inputs)."""


def _inputs(pieces: list[Piece], k: int, with_base: bool) -> Inputs:
    """M (G, n), the candidates as a tuple of k (G, n) arrays and B (G, n), all of one kernel type; without a base M
    stands in for B, unread. Each is a view of the stored tensor for a single piece of that type (a large tensor's
    chunk: nothing is copied), else a copy into this thread's buffer for its slot."""
    kind = _kernel_dtype(pieces)
    m = _rows([p[0] for p in pieces], 0, kind)
    cands = tuple(_rows([p[1 + i] for p in pieces], 2 + i, kind) for i in range(k))
    base = _rows([p[k + 1] for p in pieces], 1, kind) if with_base else m
    return m, cands, base


def gram_block(pieces: list[Piece], k: int, with_base: bool, dtype: str, chunk: bool = False) -> GramBlock:
    """The Gram matrices of every piece of a block (`dtype`: M's storage dtype). `chunk`: the block is one chunk of
    a large tensor (chunks are cut the same way on every path; its resolved-element statistics come from every
    RESOLVED_STRIDE-th element); small tensors' results must not depend on which others share their block, so they
    take every element whatever the block's size."""
    return gram_of(_inputs(pieces, k, with_base), with_base, dtype, chunk)


def gram_of(inputs: Inputs, with_base: bool, dtype: str, chunk: bool = False) -> GramBlock:
    """gram_block over inputs already in the kernels' form (TensorArrays.chunk)."""
    m, cands, base = inputs
    out = _gram_out(m.shape[0], len(cands))
    bits = PRECISION_BITS[dtype]
    compiled.gram_sweep(
        m, cands, base, with_base, bits, MIN_EXPONENT[dtype], _stride(m, chunk), RVAR_MIN_ELEMENTS, RVAR_STRIDE,
        RESOLVED_RATIO * 2.0**-bits, True, _fields(out),
    )  # fmt: skip
    return out


def gram_residual_of(
    inputs: Inputs, with_base: bool, dtype: str, coef: np.ndarray, cov: np.ndarray, chunk: bool = False
) -> tuple[GramBlock, ResidualCounts]:
    """gram_of and residual_of over the same inputs, in one pass where the compiled sweep has it (two candidates, no
    base, a storage grid and kernel inputs narrower than float64: attest.forensics.compiled.residual.residual_sweep's
    `gram`), else one after the other; the same results either way."""
    m, cands, _ = inputs
    bits = PRECISION_BITS[dtype]
    # float64 kernel inputs (any F64 input, M's included): gram_sweep's general path
    if with_base or len(cands) != 2 or m.itemsize >= 8:
        return gram_of(inputs, with_base, dtype, chunk), residual_of(inputs, dtype, coef, cov, with_base)
    g = m.shape[0]
    grams, counts = _gram_out(g, 2), _residual_out(g)
    compiled.residual_sweep(
        m, cands, m, False, _finite(coef), _finite(cov, posinf=0.0), bits, MIN_EXPONENT[dtype], MAX_FINITE[dtype],
        COEF_SIGMAS, True, _fields(counts),
        (_stride(m, chunk), RVAR_MIN_ELEMENTS, RVAR_STRIDE, RESOLVED_RATIO * 2.0**-bits, _fields(grams)),
    )  # fmt: skip
    return grams, counts


def _stride(m: np.ndarray, chunk: bool) -> int:
    """The resolved statistics' stride for a block (gram_block's `chunk`)."""
    return RESOLVED_STRIDE if chunk and m.shape[1] >= RESOLVED_STRIDE * RVAR_MIN_ELEMENTS else 1


def _gram_out(g: int, k: int) -> GramBlock:
    nvec = k + 2
    return GramBlock(
        np.zeros((g, nvec, nvec)), np.zeros((g, nvec)), np.zeros((g, nvec, nvec)), np.zeros((g, nvec, nvec)),
        np.zeros(g), np.zeros(g),
    )  # fmt: skip


def _residual_out(g: int) -> ResidualCounts:
    return ResidualCounts(
        np.zeros(g), np.zeros(g, np.int64), np.zeros(g, np.int64), np.zeros((g, len(ULP_BINS)), np.int64),
        np.zeros((g, 5), np.int64), np.zeros(g), np.zeros(g),
    )  # fmt: skip


def _fields(out: ChunkSums) -> tuple[np.ndarray, ...]:
    """A result's arrays in field order: the compiled sweeps' `out`."""
    return tuple(getattr(out, f.name) for f in fields(out))  # type: ignore[arg-type]


def residual_block(
    pieces: list[Piece], k: int, dtype: str, coef: np.ndarray, cov: np.ndarray, with_base: bool
) -> ResidualCounts:
    """Recompute each piece's fitted recipe (coef (G, nreg), cov (G, nreg, nreg)), round it to the stored dtype and
    count what rounding cannot explain (SPEC.md §6.3)."""
    return residual_of(_inputs(pieces, k, with_base), dtype, coef, cov, with_base)


def residual_of(inputs: Inputs, dtype: str, coef: np.ndarray, cov: np.ndarray, with_base: bool) -> ResidualCounts:
    """residual_block over inputs already in the kernels' form (TensorArrays.chunk)."""
    m, cands, base = inputs
    out = _residual_out(m.shape[0])
    compiled.residual_sweep(
        m, cands, base, with_base, _finite(coef), _finite(cov, posinf=0.0),
        PRECISION_BITS[dtype], MIN_EXPONENT[dtype], MAX_FINITE[dtype], COEF_SIGMAS, True, _fields(out),
    )  # fmt: skip
    return out


def _finite(a: np.ndarray, posinf: float | None = None) -> np.ndarray:
    """a as contiguous float64 with NaN as 0 (and +Inf as `posinf` when given): numpy's nan_to_num, skipped for the
    finite contiguous float64 arrays every chunk of a tensor passes (it cost ~9 us a call)."""
    if a.dtype == np.float64 and a.flags.c_contiguous and np.isfinite(a).all():
        return a
    return np.ascontiguousarray(np.nan_to_num(a, nan=0.0, posinf=posinf), dtype=np.float64)


@dataclass
class RefineStep(ChunkSums):
    """One refinement pass over a block's pieces (SPEC.md §6.3, "Refinement"): per piece, the violating elements'
    x x^T and x err, and their count."""

    gram: np.ndarray  # (G, nreg, nreg)
    rhs: np.ndarray  # (G, nreg)
    violations: np.ndarray  # (G,)


def refine_block(pieces: list[Piece], k: int, dtype: str, coef: np.ndarray, with_base: bool) -> RefineStep:
    """One refinement pass with coefficients coef (G, nreg) over each piece."""
    return refine_of(_inputs(pieces, k, with_base), dtype, coef, with_base)


def refine_of(inputs: Inputs, dtype: str, coef: np.ndarray, with_base: bool) -> RefineStep:
    """refine_block over inputs already in the kernels' form (TensorArrays.chunk)."""
    m, cands, base = inputs
    g, nreg = m.shape[0], coef.shape[1]
    out = RefineStep(np.zeros((g, nreg, nreg)), np.zeros((g, nreg)), np.zeros(g))
    compiled.refine_sweep(
        m, cands, base, with_base, np.ascontiguousarray(coef, dtype=np.float64), PRECISION_BITS[dtype],
        MIN_EXPONENT[dtype], True, (out.gram, out.rhs, out.violations),
    )  # fmt: skip
    return out


class TensorArrays:
    """One tensor's inputs (a Piece) cut into chunks for the sweeps. When every input already has the kernel type
    (the common case: all bf16) they are made into the kernels' read-only arrays once, and a chunk is a column slice
    of them; per chunk that was ~23 us of array views and wrapping per sweep call, ~0.1 s over an 861 MB merge and
    its two candidates. Otherwise each chunk is converted as any block is (attest.forensics.kernels._inputs)."""

    def __init__(self, piece: Piece, k: int, with_base: bool) -> None:
        self.piece, self.k, self.with_base = piece, k, with_base
        used = piece[: k + 2] if with_base else piece[: k + 1]
        kind = _kernel_dtype([used])
        self.whole = _inputs([piece], k, with_base) if all(t.dtype == kind for t in used) else None

    def chunk(self, sl: slice) -> Inputs:
        if self.whole is None:
            return _inputs([tuple(t[sl] for t in self.piece)], self.k, self.with_base)
        m, cands, base = self.whole
        return m[:, sl], tuple(c[:, sl] for c in cands), base[:, sl]


def chunks_of(n: int) -> list[slice]:
    """The CHUNK_ELEMENTS-element chunks a tensor of n elements is cut into (the same on every path)."""
    return [slice(s, min(n, s + CHUNK_ELEMENTS)) for s in range(0, n, CHUNK_ELEMENTS)]

"""Per-tensor least squares and the residual test at the storage precision (SPEC.md §6.1-6.3, §6.8).

Two sweeps over a tensor while its pages are resident (attest.forensics.kernels): the first accumulates a float64
Gram matrix, the solve gives the coefficients, the second recomputes the fitted recipe, rounds it to the stored dtype
and counts the elements that differ and whether rounding can explain them. Small tensors of one size and dtype are
fitted together as one block (`fit_block`: one compiled sweep each, one stacked eigen-solve);
a tensor larger than a block is cut into chunks spread over a thread pool (`fit_large`). A tensor's fit does not
depend on which others share its block.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from attest.forensics.fit_table import FitTable
from attest.forensics.kernels import (
    CHUNK_ELEMENTS,
    ULP_BINS,
    GramBlock,
    Piece,
    ResidualCounts,
    TensorArrays,
    chunks_of,
    gram_block,
    gram_of,
    gram_residual_of,
    residual_block,
    residual_of,
)
from attest.forensics.pairing import PRECISION_BITS
from attest.forensics.refine import REFINE_MAX_FRACTION, SAMPLE_CHUNKS, refine, refine_sample, sample_chunks

__all__ = ["CHUNK_ELEMENTS", "ULP_BINS", "FitTable", "fit_block", "fit_large", "parallel_map", "submit", "workers"]

MAX_COND = 1e12
"""Gram matrices worse conditioned than this (a candidate equal to another, or to the base) determine nothing."""

MIN_RESOLVED = 64
"""A tensor with fewer resolved elements is fitted over all its elements (attest.forensics.kernels.RESOLVED_RATIO;
its candidates barely differ anywhere, so it is not informative either way)."""


def fit_block(names: list[str], dtype: str, pieces: list[Piece], k: int, with_base: bool) -> FitTable:
    """Fit tensors of one size and stored dtype, each whole as one piece of a block (at most CHUNK_ELEMENTS in all
    per input): M - B on {P_i - B} with a base, M on {P_i} without, then the residual test. A row per tensor."""
    grams = gram_block(pieces, k, with_base, dtype)
    fits, cov = _fits(names, dtype, pieces[0][0].size, grams, k, with_base)
    ok = np.flatnonzero(fits.finite)
    if len(ok):
        fits.set_counts(ok, residual_block([pieces[i] for i in ok], k, dtype, fits.coef[ok], cov[ok], with_base))
    # Nearly explained tensors: look for the exact recipe (least squares is biased on few-ulp differences).
    tried = {
        i: refine(pieces[i], k, dtype, fits.coef[i], with_base, parallel_map) for i in ok[_refinable(fits, ok)].tolist()
    }
    exact = {i: c for i, c in tried.items() if c is not None}
    if exact:
        idx = np.array(list(exact), dtype=np.intp)
        new = np.stack([exact[i] for i in idx.tolist()])
        counts = residual_block([pieces[i] for i in idx.tolist()], k, dtype, new, cov[idx], with_base)
        fits.coef[idx] = new
        fits.set_counts(idx, counts)
    return fits


def _refinable(fits: FitTable, rows: np.ndarray) -> np.ndarray:
    u = fits.unexplained[rows]
    return (u > 0) & (u <= REFINE_MAX_FRACTION * fits.numel[rows])


def fit_large(name: str, dtype: str, piece: Piece, k: int, with_base: bool) -> FitTable:
    """Fit one tensor chunk by chunk, the chunks spread over the pool: each sweep is a block per chunk. One row.

    Without a base, least squares is biased by the storage grid and a large tensor is nearly always refined: one of
    2 * SAMPLE_CHUNKS chunks or more is first fitted and refined on its sample (attest.forensics.refine), and when
    that gives an exact recipe of the sample, the one pass over the tensor both sums its Gram matrices and runs the
    residual test of that recipe, chunk by chunk while each is in cache; when no element is left unexplained the
    tensor is done in one pass (SPEC.md §6.3). Otherwise (and with a base, whose least squares is unbiased and
    explains a merge by itself), the least-squares pass, then the residual test and the refinement as for any
    tensor."""
    n = piece[0].size
    chunks = chunks_of(n)
    nreg = k + 1 if with_base else k
    arrays = TensorArrays(piece, k, with_base)

    def gram(sl: slice) -> GramBlock:
        return gram_of(arrays.chunk(sl), with_base, dtype, chunk=True)

    row = np.zeros(1, dtype=np.intp)
    sampled = not with_base and len(chunks) >= 2 * SAMPLE_CHUNKS
    start = _sample_recipe(name, dtype, arrays, gram) if sampled else None
    if start is not None:
        # Zero covariance: the strictest test. Nothing unexplained under it is nothing unexplained under the fit's
        # own covariance, and every other count does not depend on it.
        strict = np.zeros((1, nreg, nreg))
        recipe = np.ascontiguousarray(start[None, :])

        def both(sl: slice) -> tuple[GramBlock, ResidualCounts]:
            return gram_residual_of(arrays.chunk(sl), with_base, dtype, recipe, strict, chunk=True)

        parts = parallel_map(both, chunks)
        grams = GramBlock.total([g for g, _ in parts])
    else:
        grams = GramBlock.total(parallel_map(gram, chunks))
    fit, cov = _fits([name], dtype, n, grams, k, with_base)
    if not fit.finite[0]:
        return fit
    if start is not None:
        counts = ResidualCounts.total([r for _, r in parts])
        if int(counts.unexplained[0]) == 0:
            fit.coef[0] = start
            fit.set_counts(row, counts)
            return fit

    def residual(coef: np.ndarray) -> ResidualCounts:
        c = np.ascontiguousarray(coef[None, :])
        parts = parallel_map(lambda sl: residual_of(arrays.chunk(sl), dtype, c, cov, with_base), chunks)
        return ResidualCounts.total(parts)

    fit.set_counts(row, residual(fit.coef[0].copy()))
    if not _refinable(fit, row)[0]:
        return fit
    settled: list[tuple[np.ndarray, ResidualCounts]] = []

    def settles(c: np.ndarray) -> bool:
        settled.append((c, residual(c)))
        return int(settled[-1][1].unexplained[0]) == 0

    exact = refine(piece, k, dtype, fit.coef[0].copy(), with_base, parallel_map, settles)
    if exact is not None:
        fit.coef[0] = exact
        fit.set_counts(row, settled[-1][1] if settled and settled[-1][0] is exact else residual(exact))
    return fit


def _sample_recipe(
    name: str, dtype: str, arrays: TensorArrays, gram: Callable[[slice], GramBlock]
) -> np.ndarray | None:
    """The exact recipe of the tensor's sample (attest.forensics.refine.sample_chunks): least squares over the
    sample, refined there; None when the sample has none."""
    sample = sample_chunks(chunks_of(arrays.piece[0].size))
    grams = GramBlock.total(parallel_map(gram, sample))
    fit, _ = _fits([name], dtype, sum(sl.stop - sl.start for sl in sample), grams, arrays.k, arrays.with_base)
    if not fit.finite[0]:
        return None
    return refine_sample(arrays.piece, arrays.k, dtype, fit.coef[0].copy(), arrays.with_base, sample, parallel_map)


def _fits(
    names: list[str], dtype: str, n: int, grams: GramBlock, k: int, with_base: bool
) -> tuple[FitTable, np.ndarray]:
    """The fits (residual counts not yet set) and the coefficients' covariances, from each tensor's Gram matrices
    (arrays over tensors, one row per tensor). The coefficients come from the resolved elements only
    (attest.forensics.kernels.RESOLVED_RATIO), distances and correlations from all."""
    nvec = k + 2
    gram, sums = grams.gram, grams.sums
    # Raw vectors R = T Y: M = Y0 + A, P_i = Y_i + A, A itself (= B with a base).
    t = np.eye(nvec)
    t[: k + 1, -1] = 1.0

    def raw(m: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", over="ignore"):  # an Inf input makes these NaN: `finite` below says so
            return t @ m @ t.T

    raw_gram = raw(gram)
    with np.errstate(invalid="ignore", over="ignore"):
        raw_sums = sums @ t.T
    # With a base: M - B on {P_i - B} and B itself (the extra B column is a per-tensor rescaling of the base: slerp's
    # weights do not sum to 1; for linear and task arithmetic its coefficient is 0). Without: M on {P_i}. Row and
    # column 0 are the fitted vector.
    rows = slice(1, None) if with_base else slice(1, k + 1)
    if with_base:
        g_all, g_res, h_res = gram, grams.gram_resolved, grams.rounding_gram
    else:
        g_all, g_res, h_res = raw_gram, raw(grams.gram_resolved), raw(grams.rounding_gram)
    # Too few resolved elements (norm weights, rows no model changed): all elements, and no rounding sandwich.
    few = grams.resolved < MIN_RESOLVED
    g_use = np.where(few[:, None, None], g_all, g_res)
    n_use = np.where(few, n, grams.resolved).astype(np.int64)
    coef, cov, ginv, cond, rss_use = solve_batch(g_use[:, rows, rows], g_use[:, rows, 0], g_use[:, 0, 0], n_use)
    cov, se_rounding = _rounding_covariance(cov, ginv, h_res[:, rows, rows], grams.rounding, rss_use, n_use, few)
    finite = np.isfinite(gram).all(axis=(1, 2)) & np.isfinite(sums).all(axis=1)
    # Rounding to p significand bits: error uniform within half an ulp, ulp between 2^-p and 2^(1-p) of |x|.
    floor_var = (2.0 ** (1 - PRECISION_BITS[dtype])) ** 2 / 12 * raw_gram[:, 0, 0] / n
    nx = k + (1 if with_base else 0)  # given models: candidates, then the base
    j = np.arange(1, k + 1)
    with np.errstate(invalid="ignore"):  # Inf - Inf where an input is not finite: `finite` says so
        dist2 = gram[:, 0, 0, None] - 2 * gram[:, 0, j] + gram[:, j, j]
    if with_base:
        dist2 = np.concatenate([dist2, gram[:, 0, 0, None]], axis=1)
    dist2 = np.clip(dist2, 0, None)
    idx = np.array([*range(1, k + 1), *([nvec - 1] if with_base else [])], dtype=np.intp)
    mean = raw_sums / n
    var = np.diagonal(raw_gram, axis1=1, axis2=2) / n - mean**2
    cv = raw_gram[:, 0, idx] / n - mean[:, :1] * mean[:, idx]
    defined = (var[:, :1] > 0) & (var[:, idx] > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.where(defined, cv / np.sqrt(np.where(defined, var[:, :1] * var[:, idx], 1.0)), np.nan)
    raw_idx = np.array([0, *idx], dtype=np.intp)
    raw_kept = raw_gram[:, raw_idx][:, :, raw_idx]
    diag_g = np.diagonal(ginv, axis1=1, axis2=2)
    # sqrt(floor_var * diag(G^-1)); an undetermined direction (inf) stays inf even for an all-zero model
    with np.errstate(invalid="ignore"):
        se_floor = np.where(
            np.isfinite(diag_g),
            np.sqrt(np.clip(floor_var[:, None] * np.nan_to_num(diag_g, posinf=0.0), 0, None)),
            np.inf,
        )
    se_design = np.where(few[:, None], se_floor, se_rounding)
    fits = FitTable.empty(names, k, with_base)  # the residual counts are set by the residual sweep
    fits.numel[:] = n
    fits.coef, fits.se_design, fits.cond, fits.ref_energy = coef, se_design, cond, gram[:, 0, 0].copy()
    fits.dist2, fits.corr, fits.raw_gram, fits.finite = dist2, corr[:, :nx], raw_kept, finite
    return fits, cov


def _rounding_covariance(
    cov: np.ndarray,
    ginv: np.ndarray,
    h: np.ndarray,
    rounding: np.ndarray,
    rss: np.ndarray,
    n: np.ndarray,
    few: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The coefficients' covariance when the residual is rounding to the storage grid, whose variance u^2/12 grows
    with each element's magnitude: the sandwich G^-1 H G^-1 (H = sum u^2/12 x x^T over the resolved elements), scaled
    up by RSS / its rounding-only expectation when the residual is larger (training). Plain OLS (sigma^2 G^-1)
    assumes one variance for all elements and understates it by ~2x on real weights, so exact merges left elements
    unexplained. Also the rounding-only standard errors (the informative test). `few`: tensors that keep `cov`."""
    gi = np.where(np.isfinite(ginv), ginv, 0.0)
    with np.errstate(invalid="ignore", over="ignore"):
        sandwich = gi @ h @ gi
        expected = rounding * np.maximum(n - ginv.shape[1], 1) / np.maximum(n, 1)
        ratio = np.where(expected > 0, np.maximum(rss / np.where(expected > 0, expected, 1.0), 1.0), 1.0)
    out = sandwich * np.nan_to_num(ratio, nan=1.0)[:, None, None]
    d = np.arange(ginv.shape[1])
    undetermined = ~np.isfinite(ginv[:, d, d])
    out[:, d, d] = np.where(undetermined, np.inf, out[:, d, d])
    se_rounding = np.where(undetermined, np.inf, np.sqrt(np.clip(sandwich[:, d, d], 0, None)))
    return np.where(few[:, None, None], cov, out), se_rounding


def solve_batch(
    g: np.ndarray, bv: np.ndarray, yy: np.ndarray, n: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`_solve` over a stack of normal equations (G, K, K): one stacked eigendecomposition for the tensors whose
    regressors are all active and finite (the common case), `_solve` one by one for the others."""
    count, kk = bv.shape
    coef = np.zeros((count, kk))
    cov = np.zeros((count, kk, kk))
    ginv = np.zeros((count, kk, kk))
    cond = np.zeros(count)
    rss = np.zeros(count)
    with np.errstate(invalid="ignore"):
        full = (
            np.isfinite(g).all(axis=(1, 2))
            & np.isfinite(bv).all(axis=1)
            & (np.diagonal(g, axis1=1, axis2=2) > 0).all(axis=1)
        )
    for i in np.flatnonzero(~full):
        coef[i], cov[i], ginv[i], cond[i], rss[i] = _solve(g[i], bv[i], float(yy[i]), int(n[i]))
    sel = np.flatnonzero(full)
    if len(sel):
        # One eigendecomposition gives both the condition number and the pseudo-inverse (what eigvalsh and
        # pinv(rcond=1e-13, hermitian=True) computed separately): eigenvalues below 1e-13 of the largest dropped.
        w, v = np.linalg.eigh(g[sel])
        with np.errstate(divide="ignore", invalid="ignore"):
            c = np.where(w[:, 0] > 0, w[:, -1] / w[:, 0], math.inf)
        keep = np.abs(w) > 1e-13 * np.abs(w).max(axis=1, keepdims=True)
        sub_inv = (v * np.where(keep, 1.0 / np.where(keep, w, 1.0), 0.0)[:, None, :]) @ np.swapaxes(v, 1, 2)
        lam = (sub_inv @ bv[sel][:, :, None])[:, :, 0]
        gi = np.where((c <= MAX_COND)[:, None, None], sub_inv, np.inf)
        r = yy[sel] - np.einsum("gk,gk->g", lam, bv[sel])
        sigma2 = np.maximum(r, 0.0) / np.maximum(n[sel] - kk, 1)
        cv = sigma2[:, None, None] * np.where(np.isfinite(gi), gi, 0.0)
        d = np.arange(kk)
        cv[:, d, d] = np.where(np.isfinite(gi[:, d, d]), cv[:, d, d], np.inf)
        coef[sel], cov[sel], ginv[sel], cond[sel], rss[sel] = lam, cv, gi, c, r
    return coef, cov, ginv, cond, rss


def _solve(g: np.ndarray, bv: np.ndarray, yy: float, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """Normal equations over the regressors that are not identically zero in this tensor (a candidate that did not
    change it, an all-zero base bias): those get coefficient 0 and infinite variance, the others are still solved."""
    k = len(bv)
    if not np.all(np.isfinite(g)) or not np.all(np.isfinite(bv)):
        nan = np.full(k, np.nan)
        return nan, np.full((k, k), np.nan), np.full((k, k), np.nan), math.inf, math.nan
    act = np.diag(g) > 0
    n_active = int(act.sum())
    coef = np.zeros(k)
    ginv = np.full((k, k), np.inf)
    cond = math.inf
    if n_active:
        sub = g[np.ix_(act, act)]
        w, v = np.linalg.eigh(sub)
        cond = float(w[-1] / w[0]) if w[0] > 0 else math.inf
        keep = np.abs(w) > 1e-13 * float(np.abs(w).max())
        sub_inv = (v * np.where(keep, 1.0 / np.where(keep, w, 1.0), 0.0)) @ v.T
        coef[act] = sub_inv @ bv[act]
        if cond <= MAX_COND:
            ginv[np.ix_(act, act)] = sub_inv
            ginv[np.ix_(act, ~act)] = 0.0
            ginv[np.ix_(~act, act)] = 0.0
    rss = float(yy - coef @ bv)
    sigma2 = max(rss, 0.0) / max(n - n_active, 1)
    cov = sigma2 * np.where(np.isfinite(ginv), ginv, 0.0)
    # Undetermined directions: infinite variance on the diagonal (the residual test then ignores them, since their
    # regressor is zero there; the aggregate leaves such tensors out).
    cov[np.diag_indices(k)] = np.where(np.isfinite(np.diag(ginv)), np.diag(cov), np.inf)
    return coef, cov, ginv, cond, rss


_T = TypeVar("_T")
_I = TypeVar("_I")
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def workers() -> int:
    """Pool workers: one per core (at most 8)."""
    return max(1, min(8, os.cpu_count() or 1))


def _pool() -> ThreadPoolExecutor | None:
    global _POOL
    if workers() == 1:
        return None
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=workers(), thread_name_prefix="attest-forensics")
    return _POOL


def parallel_map(fn: Callable[[_I], _T], items: list[_I]) -> list[_T]:
    """Chunks of one tensor on a small thread pool: the compiled sweeps release the GIL. Results in the order of
    `items`."""
    pool = _pool() if len(items) > 1 else None
    return [fn(it) for it in items] if pool is None else list(pool.map(fn, items))


def submit(fn: Callable[[], _T]) -> Future[_T]:
    """fn on the pool (blocks of small tensors, while the caller prepares the next), or here with one worker."""
    pool = _pool()
    if pool is not None:
        return pool.submit(fn)
    done: Future[_T] = Future()
    done.set_result(fn())
    return done

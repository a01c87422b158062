"""Per-tensor least squares and the residual test at the storage precision (SPEC.md §6.1-6.3).

Two sweeps over one tensor while its pages are resident: the first accumulates a float64 Gram matrix chunk by
chunk and solves for the coefficients; the second recomputes the fitted recipe, rounds it to the stored dtype and
counts the elements that differ and whether rounding can explain them. Chunks keep the float64 working set fixed.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import torch

from attest.forensics.pairing import MIN_EXPONENT, PRECISION_BITS

CHUNK_ELEMENTS = 1 << 18
"""float64 working set per input: 8 MiB."""

COEF_SIGMAS = 4.0
"""Coefficient uncertainty allowed in the rounding tolerance, in standard errors of the fitted value."""

INFORMATIVE_SE = 0.005
"""A tensor whose coefficients would have a larger standard error even for an exact merge (rounding noise of the
stored dtype only: deltas of a few ulps such as norm weights, frozen rows) does not determine the recipe; it is left
out of the aggregate and of the residual verdict, and reported apart."""

MAX_COND = 1e12
"""Gram matrices worse conditioned than this (a candidate equal to another, or to the base) determine nothing."""

ULP_BINS = ("1", "2", "3-4", "5-16", ">16")


@dataclass
class TensorFit:
    """Everything the aggregate, the verdict and the hints need from one tensor."""

    name: str
    numel: int
    dtype: str
    candidates: int  # k
    coef: np.ndarray  # (k,) coefficients on the candidates; with a base (k + 1,): then the base rescaling s
    se: np.ndarray  # (k,) their standard errors (OLS, residual variance from this tensor)
    se_design: np.ndarray  # (k,) standard errors if the residual were rounding to the stored dtype only
    cond: float  # condition number of the Gram matrix that was solved
    ref_energy: float  # |M - B|^2 with a base, |M - mean(P)|^2 without
    rss: float  # |M - fit|^2, exact (second sweep)
    dist2: np.ndarray  # |M - X_j|^2 for each candidate, then the base when given
    corr: np.ndarray  # Pearson correlation of M with each candidate, then the base (nan: zero variance)
    raw_gram: np.ndarray  # Gram matrix of the raw vectors [M, P_1..P_k, (B)] (slerp angles)
    differing: int = 0  # elements whose recomputed value, rounded to the stored dtype, differs from M
    unexplained: int = 0  # differing elements that no rounding of the recipe (in any order) can produce
    ulp_hist: np.ndarray | None = None  # differing elements by ulp distance, bins ULP_BINS
    zero_eligible: int = 0  # elements where some candidate delta is non-zero (base only)
    zero_observed: int = 0  # ... and M equals B exactly
    zero_expected: int = 0  # ... and the rounded linear recipe equals B exactly
    excess_zero: int = 0  # elements zero in M - B but not in the rounded recipe
    excess_zero_delta: float = 0.0  # sum over elements zero in M but not in the recipe of sum_i |D_i|
    kept_delta: float = 0.0  # sum over elements where M != B of sum_i |D_i|
    kept: int = 0
    finite: bool = True  # False: some input holds NaN/Inf here (its float64 Gram is not finite); nothing else is set

    @property
    def informative(self) -> bool:
        """Tensors whose coefficients are determined: finite, and rounding alone would leave them within
        INFORMATIVE_SE (a property of the candidates' deltas, not of how well the model fits)."""
        cand = self.se_design[: self.candidates]  # not the base rescaling s: an all-zero base bias leaves it open
        return bool(
            np.all(np.isfinite(self.coef)) and np.all(np.isfinite(cand)) and float(cand.max()) <= INFORMATIVE_SE
        )


def _ulp(x: torch.Tensor, dtype: str) -> torch.Tensor:
    """ulp of |x| in the storage dtype (float64 in, float64 out)."""
    _, exp = torch.frexp(x)
    exp = torch.clamp(exp, min=MIN_EXPONENT[dtype] + 1)
    return torch.ldexp(torch.ones_like(x), exp - PRECISION_BITS[dtype])


def _ordered(bits: torch.Tensor) -> torch.Tensor:
    """Map IEEE bit patterns (as signed ints) to integers whose difference counts ulps across the sign."""
    x = bits.to(torch.int64)
    width = bits.element_size() * 8
    sign_bit = 1 << (width - 1)
    mag = x & (sign_bit - 1)
    return torch.where(x < 0, -mag, mag)


_INT_VIEW = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def fit_tensor(name: str, dtype: str, m: torch.Tensor, ps: list[torch.Tensor], b: torch.Tensor | None) -> TensorFit:
    """Fit M - B on {P_i - B} (with a base) or M on {P_i} (without), then run the residual test."""
    k = len(ps)
    n = m.numel()
    with_base = b is not None
    nvec = k + 2  # [M - A, P_1 - A, ..., P_k - A, A], A = B or mean(P)

    def gram_of(sl: slice) -> tuple[list[list[float]], list[float]]:
        y = _fill(_buffer(nvec, sl.stop - sl.start, torch.float64), m, ps, b, sl)
        # Plain Python results: a small array left alive inside a freed chunk buffer would pin it (heap growth).
        return torch.mm(y, y.T).tolist(), y.sum(dim=1).tolist()

    parts = parallel_map(gram_of, _slices(n))
    gram = np.sum([np.array(g) for g, _ in parts], axis=0)
    sums = np.sum([np.array(s) for _, s in parts], axis=0)

    # Raw vectors R = T Y: M = Y0 + A, P_i = Y_i + A, A itself (= B with a base).
    t = np.eye(nvec)
    t[: k + 1, -1] = 1.0
    with np.errstate(invalid="ignore", over="ignore"):  # an Inf input makes these NaN: `finite` below says so
        raw_gram = t @ gram @ t.T
        raw_sums = t @ sums
    if with_base:
        # M - B on {P_i - B} and B itself: the extra B column is a per-tensor rescaling of the base (slerp's
        # weights do not sum to 1); for linear and task arithmetic its coefficient is 0.
        g_fit = gram[1:, 1:]
        b_fit = gram[1:, 0]
        yy = gram[0, 0]
    else:
        g_fit = raw_gram[1 : k + 1, 1 : k + 1]
        b_fit = raw_gram[1 : k + 1, 0]
        yy = raw_gram[0, 0]
    coef, cov, ginv, cond, rss_gram = _solve(g_fit, b_fit, yy, n)
    finite = bool(np.all(np.isfinite(gram)) and np.all(np.isfinite(sums)))
    # Rounding to p significand bits: error uniform within half an ulp, ulp between 2^-p and 2^(1-p) of |x|.
    floor_var = (2.0 ** (1 - PRECISION_BITS[dtype])) ** 2 / 12 * raw_gram[0, 0] / n

    nx = k + (1 if with_base else 0)  # given models: candidates, then the base
    dist2 = np.array([gram[0, 0] - 2 * gram[0, j] + gram[j, j] for j in range(1, k + 1)])
    if with_base:
        dist2 = np.append(dist2, gram[0, 0])
    corr = np.full(nx, np.nan)
    mean = raw_sums / n
    var = np.diag(raw_gram) / n - mean**2
    for j in range(nx):
        idx = j + 1 if j < k else nvec - 1
        cv = raw_gram[0, idx] / n - mean[0] * mean[idx]
        if var[0] > 0 and var[idx] > 0:
            corr[j] = cv / math.sqrt(var[0] * var[idx])
    raw_idx = [0, *range(1, k + 1), *([nvec - 1] if with_base else [])]
    fit = TensorFit(
        name=name,
        numel=n,
        dtype=dtype,
        candidates=k,
        coef=coef,
        se=np.sqrt(np.clip(np.diag(cov), 0, None)),
        se_design=_design_se(floor_var, ginv),
        cond=cond,
        ref_energy=float(gram[0, 0]),
        rss=max(rss_gram, 0.0),
        dist2=np.clip(dist2, 0, None),
        corr=corr,
        raw_gram=raw_gram[np.ix_(raw_idx, raw_idx)],
        finite=finite,
    )
    if finite:
        _residual(fit, m, ps, b, cov)
    return fit


def _design_se(floor_var: float, ginv: np.ndarray) -> np.ndarray:
    """sqrt(floor_var * diag(G^-1)); an undetermined direction (inf) stays inf even for an all-zero model."""
    diag = np.diag(ginv)
    return np.where(np.isfinite(diag), np.sqrt(np.clip(floor_var * np.nan_to_num(diag, posinf=0.0), 0, None)), np.inf)


def _slices(n: int) -> list[slice]:
    return [slice(s, min(n, s + CHUNK_ELEMENTS)) for s in range(0, n, CHUNK_ELEMENTS)]


def _fill(
    buf: torch.Tensor, m: torch.Tensor, ps: list[torch.Tensor], b: torch.Tensor | None, sl: slice
) -> torch.Tensor:
    """Rows [M - A, P_i - A ..., A] of one chunk, converted in place into a float64 buffer."""
    y = buf
    a = y[-1]
    for i, p in enumerate(ps):
        y[i + 1].copy_(p[sl])
    if b is not None:
        a.copy_(b[sl])
    else:
        torch.mean(y[1:-1], dim=0, out=a)
    y[0].copy_(m[sl])
    y[:-1].sub_(a)
    return y


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
        full = n_active == k  # the common case: no index gymnastics
        sub = g if full else g[np.ix_(act, act)]
        # One eigendecomposition gives both the condition number and the pseudo-inverse (what eigvalsh and
        # pinv(rcond=1e-13, hermitian=True) computed separately): eigenvalues below 1e-13 of the largest dropped.
        w, v = np.linalg.eigh(sub)
        cond = float(w[-1] / w[0]) if w[0] > 0 else math.inf
        keep = np.abs(w) > 1e-13 * float(np.abs(w).max())
        sub_inv = (v * np.where(keep, 1.0 / np.where(keep, w, 1.0), 0.0)) @ v.T
        coef[act] = sub_inv @ bv[act]
        if cond <= MAX_COND:
            if full:
                ginv = sub_inv
            else:
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


@dataclass
class _ChunkStats:
    rss: float = 0.0
    differing: int = 0
    unexplained: int = 0
    hist: list[int] = field(default_factory=lambda: [0] * len(ULP_BINS))
    zero: list[int] = field(default_factory=lambda: [0] * 5)  # eligible, observed, expected, excess, kept
    excess_delta: float = 0.0
    kept_delta: float = 0.0


_LOCAL = threading.local()


def _buffer(rows: int, cols: int, dtype: torch.dtype) -> torch.Tensor:
    """A per-thread work buffer reused across chunks and tensors, so the heap does not fragment chunk by chunk."""
    key = (rows, dtype)
    bufs: dict[tuple[int, torch.dtype], torch.Tensor] = _LOCAL.__dict__.setdefault("bufs", {})
    buf = bufs.get(key)
    if buf is None or buf.shape[1] < cols:
        buf = torch.empty((rows, max(cols, CHUNK_ELEMENTS)), dtype=dtype)
        bufs[key] = buf
    return buf[:, :cols]


def _residual(fit: TensorFit, m: torch.Tensor, ps: list[torch.Tensor], b: torch.Tensor | None, cov: np.ndarray) -> None:
    """Recompute the recipe, round to the stored dtype, count what rounding cannot explain (SPEC.md §6.3)."""
    k = len(ps)
    dtype = fit.dtype
    ivew = _INT_VIEW[m.element_size()]
    eps_s = 2.0 ** -PRECISION_BITS[dtype]  # half-ulp bound, relative, in the storage dtype
    eps_32 = 2.0**-24
    # Storage of 16 bits or less: float32 work is 2^16 times finer than the grid we test on; its own rounding goes
    # into the tolerance. Wider storage needs float64 work.
    work = torch.float32 if PRECISION_BITS[dtype] <= 11 else torch.float64
    eps_w = eps_32 if work == torch.float32 else 2.0**-53
    coef_col = torch.tensor([float(c) for c in np.nan_to_num(fit.coef)], dtype=work).unsqueeze(1)
    coef_row = coef_col.T.contiguous()
    nreg = len(fit.coef)  # k, or k + 1 with the base column
    # float64 even for float32 work: without a base the candidates are nearly collinear and x^T Cov x cancels.
    covt = torch.from_numpy(np.nan_to_num(cov, nan=0.0, posinf=0.0)).to(torch.float64)
    edges = torch.tensor([1, 2, 4, 16])

    def chunk(sl: slice) -> _ChunkStats:
        st = _ChunkStats()
        rows = _buffer(k + 2, sl.stop - sl.start, work)
        # [M, P_1 - B, ..., P_k - B, B] with a base, [M, P_1, ..., P_k, unused] without; x: the regressors
        mc, bc, x = rows[0], rows[k + 1], rows[1 : 1 + nreg]
        mc.copy_(m[sl])
        for i, p in enumerate(ps):
            rows[i + 1].copy_(p[sl])
        if b is not None:
            bc.copy_(b[sl])
            rows[1 : k + 1].sub_(bc)
        # one GEMM pass for sum_i l_i x_i (+ B): no [nreg, chunk] temporary
        value = (torch.addmm(bc.unsqueeze(0), coef_row, x) if b is not None else torch.mm(coef_row, x)).squeeze(0)
        resid = mc - value
        st.rss = float(torch.dot(resid, resid))
        mbits = m[sl].view(ivew)
        rbits = value.to(m.dtype).view(ivew)
        differ = mbits != rbits
        st.differing = int(torch.count_nonzero(differ))
        if st.differing:
            # Only differing elements can be unexplained; the coefficient term needs x^T Cov x, so do it there.
            idx = torch.nonzero(differ).squeeze(1)  # gather once: boolean masks re-scan the chunk every time
            xd = x.index_select(1, idx)
            vd = value.index_select(0, idx)
            abs_terms = (xd * coef_col).abs().sum(dim=0)
            if b is not None:
                # Task arithmetic / TIES compute deltas in the storage dtype: each delta, product and partial sum
                # may round there. Any float32 order of B + sum(l_i D_i) is covered by the second term.
                arith = (k + 1) * eps_s * abs_terms + 4 * eps_32 * (bc.index_select(0, idx).abs() + abs_terms)
            else:
                # Linear / slerp accumulate in float32 (products, partial sums, the final normalisation).
                arith = (k + 2) * eps_32 * abs_terms
            arith += 2 * (k + 2) * eps_w * (vd.abs() + abs_terms)  # our own work precision
            r_d = resid.index_select(0, idx).abs()
            bound = _ulp(torch.maximum(mc.index_select(0, idx).abs(), vd.abs()), dtype).mul_(0.5).add_(arith)
            xd64 = xd.to(torch.float64)
            var = torch.einsum("in,ij,jn->n", xd64, covt, xd64).clamp_min_(0).to(work)
            st.unexplained = int(torch.count_nonzero(r_d > bound.add_(var.sqrt_().mul_(COEF_SIGMAS))))
            d = (_ordered(mbits.index_select(0, idx)) - _ordered(rbits.index_select(0, idx))).abs()
            st.hist = torch.bincount(torch.bucketize(d, edges), minlength=len(ULP_BINS)).tolist()
        if b is not None:
            bbits = (b[sl] if b.dtype == m.dtype else b[sl].to(m.dtype)).view(ivew)
            dmag = rows[1 : k + 1].abs().sum(dim=0)  # sum of |D_i|
            eligible = dmag > 0
            m_is_b = mbits == bbits
            obs = eligible & m_is_b
            exp = eligible & (rbits == bbits)
            excess = obs & ~exp
            kept = eligible & ~m_is_b
            st.zero = [int(torch.count_nonzero(t)) for t in (eligible, obs, exp, excess, kept)]
            st.excess_delta = float(torch.dot(dmag, excess.to(work)))
            st.kept_delta = float(torch.dot(dmag, kept.to(work)))
        return st

    parts = parallel_map(chunk, _slices(m.numel()))
    fit.rss = sum(p.rss for p in parts)
    fit.differing = sum(p.differing for p in parts)
    fit.unexplained = sum(p.unexplained for p in parts)
    fit.ulp_hist = np.sum([np.array(p.hist, dtype=np.int64) for p in parts], axis=0)
    zero = np.sum([np.array(p.zero, dtype=np.int64) for p in parts], axis=0)
    fit.zero_eligible, fit.zero_observed, fit.zero_expected, fit.excess_zero, fit.kept = (int(z) for z in zero)
    fit.excess_zero_delta = sum(p.excess_delta for p in parts)
    fit.kept_delta = sum(p.kept_delta for p in parts)


_T = TypeVar("_T")
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def workers() -> int:
    """Chunk workers: one per core (at most 8); each runs torch single-threaded (see `single_threaded_ops`)."""
    return max(1, min(8, os.cpu_count() or 1))


def parallel_map(fn: Callable[[slice], _T], slices: list[slice]) -> list[_T]:
    """Chunks of one tensor on a small thread pool: torch releases the GIL inside its kernels, and per-chunk work
    (2^18 elements) is too small for torch's own intra-op threads, which thrash on a busy machine."""
    global _POOL
    if len(slices) <= 1 or workers() == 1:
        return [fn(sl) for sl in slices]
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=workers(), thread_name_prefix="attest-forensics")
    return list(_POOL.map(fn, slices))


@contextlib.contextmanager
def single_threaded_ops() -> Iterator[None]:
    """torch intra-op threads off while the chunk pool runs (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)

"""Per-tensor least squares and the residual test at the storage precision (SPEC.md §6.1-6.3).

Two sweeps over one tensor while its pages are resident: the first accumulates a float64 Gram matrix chunk by
chunk and solves for the coefficients; the second recomputes the fitted recipe, rounds it to the stored dtype and
counts the elements that differ and whether rounding can explain them. Chunks keep the float64 working set fixed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from attest.forensics.streaming import MIN_EXPONENT, PRECISION_BITS

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
    coef: np.ndarray  # (k,) fitted coefficients on the candidates
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

    @property
    def informative(self) -> bool:
        """Tensors whose coefficients are determined: finite, and rounding alone would leave them within
        INFORMATIVE_SE (a property of the candidates' deltas, not of how well the model fits)."""
        return bool(
            np.all(np.isfinite(self.coef))
            and np.all(np.isfinite(self.se_design))
            and float(self.se_design.max()) <= INFORMATIVE_SE
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
    gram = np.zeros((nvec, nvec))
    sums = np.zeros(nvec)
    buf = torch.empty((nvec, min(n, CHUNK_ELEMENTS)), dtype=torch.float64)
    for sl in _slices(n):
        y = _fill(buf, m, ps, b, sl)
        gram += torch.mm(y, y.T).numpy()
        sums += y.sum(dim=1).numpy()

    # Raw vectors R = T Y: M = Y0 + A, P_i = Y_i + A, A itself (= B with a base).
    t = np.eye(nvec)
    t[: k + 1, -1] = 1.0
    raw_gram = t @ gram @ t.T
    raw_sums = t @ sums
    if with_base:
        g_fit = gram[1 : k + 1, 1 : k + 1]
        b_fit = gram[1 : k + 1, 0]
        yy = gram[0, 0]
    else:
        g_fit = raw_gram[1 : k + 1, 1 : k + 1]
        b_fit = raw_gram[1 : k + 1, 0]
        yy = raw_gram[0, 0]
    coef, cov, ginv, cond, rss_gram = _solve(g_fit, b_fit, yy, n)
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
        coef=coef,
        se=np.sqrt(np.clip(np.diag(cov), 0, None)),
        se_design=np.sqrt(np.clip(floor_var * np.diag(ginv), 0, None)),
        cond=cond,
        ref_energy=float(gram[0, 0]),
        rss=max(rss_gram, 0.0),
        dist2=np.clip(dist2, 0, None),
        corr=corr,
        raw_gram=raw_gram[np.ix_(raw_idx, raw_idx)],
    )
    _residual(fit, m, ps, b, cov)
    return fit


def _slices(n: int) -> list[slice]:
    return [slice(s, min(n, s + CHUNK_ELEMENTS)) for s in range(0, n, CHUNK_ELEMENTS)]


def _fill(
    buf: torch.Tensor, m: torch.Tensor, ps: list[torch.Tensor], b: torch.Tensor | None, sl: slice
) -> torch.Tensor:
    """Rows [M - A, P_i - A ..., A] of one chunk, converted in place into a reused float64 buffer."""
    y = buf[:, : sl.stop - sl.start]
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
    """Normal equations with a pseudo-inverse (a candidate with a zero delta gets coefficient 0, not inf)."""
    k = len(bv)
    if not np.all(np.isfinite(g)) or not np.all(np.isfinite(bv)):
        nan = np.full(k, np.nan)
        return nan, np.full((k, k), np.nan), np.full((k, k), np.nan), math.inf, math.nan
    eig = np.linalg.eigvalsh(g)
    cond = float(eig[-1] / eig[0]) if eig[0] > 0 else math.inf
    ginv = np.linalg.pinv(g, rcond=1e-13, hermitian=True)
    coef = ginv @ bv
    rss = float(yy - coef @ bv)
    dof = max(n - k, 1)
    sigma2 = max(rss, 0.0) / dof
    cov = sigma2 * ginv
    if not cond <= MAX_COND:
        # Directions with no signal: their coefficients are not determined, whatever pinv returned.
        undetermined = np.diag(np.where(np.diag(g) <= 0, np.inf, 0.0))
        cov = cov + undetermined
        return coef, cov, np.full((k, k), np.inf), cond, rss
    return coef, cov, ginv, cond, rss


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
    coef = [float(c) for c in np.nan_to_num(fit.coef)]
    covt = torch.from_numpy(np.nan_to_num(cov, nan=0.0, posinf=0.0)).to(work)
    hist = np.zeros(len(ULP_BINS), dtype=np.int64)
    edges = torch.tensor([1, 2, 4, 16])
    rss = 0.0
    buf = torch.empty((k + 2, min(m.numel(), CHUNK_ELEMENTS)), dtype=work)
    for sl in _slices(m.numel()):
        rows = buf[:, : sl.stop - sl.start]
        mc, bc, x = rows[0], rows[1], rows[2:]  # x: candidates, or their deltas from the base
        mc.copy_(m[sl])
        for i, p in enumerate(ps):
            x[i].copy_(p[sl])
        if b is not None:
            bc.copy_(b[sl])
            x.sub_(bc)
        coef_col = torch.tensor(coef, dtype=work).unsqueeze(1)
        value = (x * coef_col).sum(dim=0)
        if b is not None:
            value += bc
        resid = mc - value
        rss += float(torch.dot(resid, resid))
        mbits = m[sl].view(ivew)
        rbits = value.to(m.dtype).view(ivew)
        differ = mbits != rbits
        n_diff = int(torch.count_nonzero(differ))
        fit.differing += n_diff
        if n_diff:
            # Only differing elements can be unexplained; the coefficient term needs x^T Cov x, so do it there.
            xd = x[:, differ]
            vd = value[differ]
            abs_terms = (xd * coef_col).abs().sum(dim=0)
            if b is not None:
                # Task arithmetic / TIES compute deltas in the storage dtype: each delta, product and partial sum
                # may round there. Any float32 order of B + sum(l_i D_i) is covered by the second term.
                arith = (k + 1) * eps_s * abs_terms + 4 * eps_32 * (bc[differ].abs() + abs_terms)
            else:
                # Linear / slerp accumulate in float32 (products, partial sums, the final normalisation).
                arith = (k + 2) * eps_32 * abs_terms
            arith += 2 * (k + 2) * eps_w * (vd.abs() + abs_terms)  # our own work precision
            r_d = resid[differ].abs()
            bound = _ulp(torch.maximum(mc[differ].abs(), vd.abs()), dtype).mul_(0.5).add_(arith)
            var = torch.einsum("in,ij,jn->n", xd, covt, xd).clamp_min_(0)
            fit.unexplained += int(torch.count_nonzero(r_d > bound.add_(var.sqrt_().mul_(COEF_SIGMAS))))
            d = (_ordered(mbits[differ]) - _ordered(rbits[differ])).abs()
            hist += np.bincount(torch.bucketize(d, edges).numpy(), minlength=len(ULP_BINS))[: len(ULP_BINS)]
        if b is not None:
            bbits = (b[sl] if b.dtype == m.dtype else b[sl].to(m.dtype)).view(ivew)
            dmag = x.abs().sum(dim=0)
            eligible = dmag > 0
            m_is_b = mbits == bbits
            obs = eligible & m_is_b
            exp = eligible & (rbits == bbits)
            excess = obs & ~exp
            kept = eligible & ~m_is_b
            fit.zero_eligible += int(torch.count_nonzero(eligible))
            fit.zero_observed += int(torch.count_nonzero(obs))
            fit.zero_expected += int(torch.count_nonzero(exp))
            fit.excess_zero += int(torch.count_nonzero(excess))
            fit.excess_zero_delta += float(dmag[excess].sum())
            fit.kept_delta += float(dmag[kept].sum())
            fit.kept += int(torch.count_nonzero(kept))
    fit.ulp_hist = hist
    fit.rss = rss

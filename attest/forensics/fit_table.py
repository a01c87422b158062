"""detect's per-tensor fits as columns (SPEC.md §6.1-6.3): one row per tensor, one numpy array per quantity.

A large mixture of experts has 10^5 fitted tensors. One object per tensor holding six small arrays (coefficients,
standard errors, distances, correlations, Gram matrix, ulp histogram) held ~0.9 KB per tensor at detect's peak, most
of it array headers; a row of the columns is ~0.3 KB, and the aggregate, the verdict and the hints read whole columns
instead of looping over objects. A block fit (`attest.forensics.fit`) returns a small table, and detect's pass puts
each block's rows at the tensors' positions in a table made for every paired tensor up front.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import numpy as np

from attest.forensics.kernels import ULP_BINS, ResidualCounts

INFORMATIVE_SE = 0.005
"""A tensor whose coefficients would have a larger standard error even for an exact merge (rounding noise of the
stored dtype only: deltas of a few ulps such as norm weights, frozen rows) does not determine the recipe; it is left
out of the aggregate and of the residual verdict, and reported apart."""


@dataclass(slots=True)
class FitTable:
    """Everything the aggregate, the verdict and the hints need from each fitted tensor, row i for names[i]. With
    k candidates and a base, the given models are the candidates then the base (nx = k + 1), else the candidates
    (nx = k)."""

    names: Sequence[str]
    candidates: int  # k
    numel: np.ndarray  # (N,) int64
    coef: np.ndarray  # (N, nx) coefficients on the candidates; with a base, then the base rescaling s
    se_design: np.ndarray  # (N, nx) standard errors if the residual were rounding to the stored dtype only
    cond: np.ndarray  # (N,) condition number of the Gram matrix that was solved
    ref_energy: np.ndarray  # (N,) |M - B|^2 with a base, |M - mean(P)|^2 without
    rss: np.ndarray  # (N,) |M - fit|^2, exact (second sweep)
    dist2: np.ndarray  # (N, nx) |M - X_j|^2 for each given model
    corr: np.ndarray  # (N, nx) Pearson correlation of M with each given model (nan: zero variance)
    raw_gram: np.ndarray  # (N, nx + 1, nx + 1) Gram matrix of the raw vectors [M, P_1..P_k, (B)] (slerp angles)
    differing: np.ndarray  # (N,) int64 elements whose recomputed value, rounded to the stored dtype, differs from M
    unexplained: np.ndarray  # (N,) int64 differing elements that no rounding of the recipe (in any order) produces
    ulp_hist: np.ndarray  # (N, len(ULP_BINS)) int64 differing elements by ulp distance
    zero_eligible: np.ndarray  # (N,) int64 elements where some candidate delta is non-zero (base only)
    zero_observed: np.ndarray  # ... and M equals B exactly
    zero_expected: np.ndarray  # ... and the rounded linear recipe equals B exactly
    excess_zero: np.ndarray  # elements zero in M - B but not in the rounded recipe
    excess_zero_delta: np.ndarray  # (N,) sum over elements zero in M but not in the recipe of sum_i |D_i|
    kept_delta: np.ndarray  # (N,) sum over elements where M != B of sum_i |D_i|
    kept: np.ndarray  # (N,) int64 elements where M != B among the eligible
    finite: np.ndarray  # (N,) bool; False: not fitted (yet), or some input holds NaN/Inf (its Gram is not finite)

    @classmethod
    def empty(cls, names: Sequence[str], k: int, with_base: bool) -> FitTable:
        """Rows for `names`, none fitted yet (`finite` False; `put` fills them)."""
        n, nx = len(names), k + (1 if with_base else 0)

        def floats(*shape: int) -> np.ndarray:
            return np.full((n, *shape), math.nan)

        def ints(*shape: int) -> np.ndarray:
            return np.zeros((n, *shape), dtype=np.int64)

        return cls(
            names=names,
            candidates=k,
            numel=ints(),
            coef=floats(nx),
            se_design=floats(nx),
            cond=floats(),
            ref_energy=floats(),
            rss=floats(),
            dist2=floats(nx),
            corr=floats(nx),
            raw_gram=floats(nx + 1, nx + 1),
            differing=ints(),
            unexplained=ints(),
            ulp_hist=ints(len(ULP_BINS)),
            zero_eligible=ints(),
            zero_observed=ints(),
            zero_expected=ints(),
            excess_zero=ints(),
            excess_zero_delta=np.zeros(n),
            kept_delta=np.zeros(n),
            kept=ints(),
            finite=np.zeros(n, dtype=bool),
        )

    def __len__(self) -> int:
        return len(self.names)

    @property
    def with_base(self) -> bool:
        return bool(self.coef.shape[1] > self.candidates)

    def _columns(self) -> list[str]:
        return [f.name for f in fields(self) if f.name not in ("names", "candidates")]

    def select(self, rows: np.ndarray) -> FitTable:
        """The rows at these indices (or where a boolean mask is true), in order; the table itself when that is every
        row."""
        idx = np.flatnonzero(rows) if rows.dtype == bool else np.asarray(rows, dtype=np.intp)
        if len(idx) == len(self) and np.array_equal(idx, np.arange(len(self))):
            return self
        names = [self.names[i] for i in idx.tolist()]
        return replace(self, names=names, **{c: getattr(self, c)[idx] for c in self._columns()})

    def put(self, rows: Sequence[int] | np.ndarray, block: FitTable) -> None:
        """Copy `block`'s rows into these rows (the tensors' positions in this table)."""
        idx = np.asarray(rows, dtype=np.intp)
        for c in self._columns():
            getattr(self, c)[idx] = getattr(block, c)

    def set_counts(self, rows: np.ndarray, c: ResidualCounts) -> None:
        """The residual test's counts (attest.forensics.kernels.residual_block) for these rows, in order."""
        self.rss[rows] = c.rss
        self.differing[rows] = c.differing
        self.unexplained[rows] = c.unexplained
        self.ulp_hist[rows] = c.hist
        for j, col in enumerate((self.zero_eligible, self.zero_observed, self.zero_expected, self.excess_zero)):
            col[rows] = c.zero[:, j]
        self.kept[rows] = c.zero[:, 4]
        self.excess_zero_delta[rows] = c.excess_delta
        self.kept_delta[rows] = c.kept_delta

    @property
    def informative(self) -> np.ndarray:
        """Rows whose coefficients are determined: finite, and rounding alone would leave them within INFORMATIVE_SE
        (a property of the candidates' deltas, not of how well the model fits). Not the base rescaling s: a zero
        base bias leaves it open."""
        cand = self.se_design[:, : self.candidates]
        with np.errstate(invalid="ignore"):
            small = cand.max(axis=1, initial=-math.inf) <= INFORMATIVE_SE
        return np.isfinite(self.coef).all(axis=1) & np.isfinite(cand).all(axis=1) & small

    def participant_weights(self) -> np.ndarray:
        """(N, nx): the candidates' coefficients, then with a base its weight 1 - sum(l) + s (s: the fitted base
        rescaling)."""
        if not self.with_base:
            return self.coef.copy()
        lam = self.coef[:, :-1]
        base = 1.0 - np.cumsum(lam, axis=1)[:, -1] + self.coef[:, -1]  # summed left to right, as `total`
        return np.concatenate([lam, base[:, None]], axis=1)


def total(column: np.ndarray) -> float:
    """The left-to-right sum of a column (0.0 when empty): the order the report has always summed in. numpy's
    pairwise sum rounds differently, and the report is stable to the last bit."""
    return float(np.cumsum(column)[-1]) + 0.0 if len(column) else 0.0  # + 0.0: sum()'s start (never -0.0)

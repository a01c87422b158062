"""The exact recipe behind a nearly explained tensor (SPEC.md §6.3, "Refinement").

Least squares is biased when the given models differ by a few ulps of the storage grid: rounding the merged value
to the grid is a deterministic function of the models' difference in ulps, correlated with it (3/7 of a 1-ulp
difference always rounds to no difference), and the bias shrinks only like 1 / (spread in ulps)^2. On real bf16
fine-tunes that leaves a pure merge with a few tenths of a percent of elements "unexplained" and reads as a merge
followed by training: a false accusation of hidden training. An exact merge has a coefficient vector under which
every element rounds to its stored value; this module looks for it.

Each iteration takes the elements whose recomputed value lies outside their rounding interval [M - u/2 - a,
M + u/2 + a] (u: M's grid spacing, a: the float32 arithmetic allowance of §6.3) and moves the coefficients by the
least-squares step that brings those elements to the nearest end of their interval. For a pure merge this converges
in a few iterations to within float32 rounding of the recipe (4/7 recovered to 2e-7 where least squares said
4/7 + 6e-4); after training no vector fits and the iteration gives up.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from attest.forensics.kernels import Piece, RefineStep, TensorArrays, chunks_of, refine_of

REFINE_MAX_FRACTION = 0.05
"""Only tensors whose least-squares recipe leaves at most this share of elements unexplained are refined (the bias
left 1.1% in a real bf16 MoE embedding); each iteration is a pass over the tensor."""

REFINE_ITERATIONS = 30
"""At most this many passes; a refinement that has not halved its violations after PROGRESS_AFTER gives up."""
PROGRESS_AFTER = 10

ChunkMap = Callable[[Callable[[slice], RefineStep], list[slice]], list[RefineStep]]
"""How a pass runs over a tensor's chunks (attest.forensics.fit.parallel_map: the pool)."""


def _in_turn(fn: Callable[[slice], RefineStep], chunks: list[slice]) -> list[RefineStep]:
    return [fn(sl) for sl in chunks]


SAMPLE_CHUNKS = 8
"""A tensor of at least 2 * SAMPLE_CHUNKS chunks is first refined on about SAMPLE_CHUNKS of them, evenly spaced: a
pass over the sample costs a fraction of a pass, the iteration converges in about as many passes on it, and the
passes over the whole tensor that follow start next to the answer (an 861 MB merge fitted without a base: 8-11
passes over each 206-chunk tensor before, 1-2 after ~10 over its sample)."""


def refine(
    piece: Piece,
    k: int,
    dtype: str,
    coef: np.ndarray,
    with_base: bool,
    over_chunks: ChunkMap = _in_turn,
    settles: Callable[[np.ndarray], bool] | None = None,
) -> np.ndarray | None:
    """A coefficient vector under which every element of the tensor rounds to its stored value, starting from the
    least-squares `coef`; None when the iteration finds none (training, or a recipe this form cannot express). Each
    pass is the compiled refine sweep over the tensor's chunks (attest.forensics.kernels.refine_block). A sample's
    violations are some of the tensor's: when the iteration gives up on the sample, it gives up. `settles(c)`: whether
    the sample's solution already explains the whole tensor (the caller's residual test over it, SPEC.md §6.3); then
    it is the answer, without passes over the whole tensor."""
    chunks = chunks_of(piece[0].size)
    start = np.nan_to_num(coef).astype(np.float64)
    if len(chunks) >= 2 * SAMPLE_CHUNKS:
        sampled = _iterate(piece, k, dtype, start, with_base, sample_chunks(chunks), over_chunks)
        if sampled is None or (settles is not None and settles(sampled)):
            return sampled
        start = sampled
    return _iterate(piece, k, dtype, start, with_base, chunks, over_chunks)


def sample_chunks(chunks: list[slice]) -> list[slice]:
    """Every floor(c / SAMPLE_CHUNKS)-th chunk from the first: the sample of a tensor of c >= 2 * SAMPLE_CHUNKS."""
    return chunks[:: len(chunks) // SAMPLE_CHUNKS]


def refine_sample(
    piece: Piece, k: int, dtype: str, coef: np.ndarray, with_base: bool, sample: list[slice], over_chunks: ChunkMap
) -> np.ndarray | None:
    """The iteration over the tensor's sample (`sample_chunks`) only, from `coef` (the sample's least squares): the
    recipe to test over the whole tensor before its first pass (attest.forensics.fit.fit_large). None as soon as the
    first pass leaves more than REFINE_MAX_FRACTION of the sample outside its rounding intervals (training, not a
    rounding bias), or when the iteration gives up."""
    elements = sum(sl.stop - sl.start for sl in sample)
    start = np.nan_to_num(coef).astype(np.float64)
    return _iterate(piece, k, dtype, start, with_base, sample, over_chunks, REFINE_MAX_FRACTION * elements)


def _iterate(
    piece: Piece,
    k: int,
    dtype: str,
    c: np.ndarray,
    with_base: bool,
    chunks: list[slice],
    over_chunks: ChunkMap,
    first_at_most: float = np.inf,
) -> np.ndarray | None:
    """The iteration of SPEC.md §6.3 over these chunks, from c; None when the first pass finds more than
    `first_at_most` violations."""
    first = None
    arrays = TensorArrays(piece, k, with_base)
    for it in range(REFINE_ITERATIONS):
        coef_now = np.ascontiguousarray(c[None])

        def one_pass(sl: slice, coef_now: np.ndarray = coef_now) -> RefineStep:
            return refine_of(arrays.chunk(sl), dtype, coef_now, with_base)

        step = RefineStep.total(over_chunks(one_pass, chunks))
        gram, rhs, violations = step.gram[0], step.rhs[0], int(step.violations[0])
        if violations == 0:
            return c
        if first is None:
            if violations > first_at_most:
                return None
            first = violations
        elif it >= PROGRESS_AFTER and violations > first / 2:
            return None
        if not np.all(np.isfinite(gram)) or not np.all(np.isfinite(rhs)):
            return None
        c = c + np.linalg.lstsq(gram, rhs, rcond=None)[0]
    return None

"""The compiled sweeps (attest.forensics.compiled, through attest.forensics.kernels) against the torch/numpy
implementation they replaced (tests/support/kernel_oracle.py): same Gram matrices to float64 summation order, same
verdict-relevant counts; and their bit-level helpers against torch's own conversions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attest.forensics import compiled, kernels
from attest.forensics.pairing import FLOAT_DTYPES, MAX_FINITE, MIN_EXPONENT, PRECISION_BITS
from tests.support import kernel_oracle

TAGS = {t: tag for tag, t in FLOAT_DTYPES.items()}


def _family(n: int, k: int, dtype: torch.dtype, merged: bool, seed: int) -> tuple[torch.Tensor, ...]:
    """(M, P_1..P_k, B): candidates are the base plus noise; M a linear merge of them or one more noisy sibling."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, generator=g) * 0.02
    cands = [base + torch.randn(n, generator=g) * 2e-3 for _ in range(k)]
    cands = [c.to(dtype).float() for c in cands]
    base = base.to(dtype).float()
    weights = torch.linspace(1.0, 2.0, k) / torch.linspace(1.0, 2.0, k).sum()
    if merged:
        m = base + sum((w * (c - base) for w, c in zip(weights.tolist(), cands, strict=True)), torch.zeros(n))
    else:
        m = base + torch.randn(n, generator=g) * 2e-3
    return tuple(t.to(dtype) for t in (m, *cands, base))


def _close(ours: np.ndarray, ref: np.ndarray) -> None:
    scale = max(float(np.abs(ref).max()), 1e-300)
    assert np.abs(ours - ref).max() <= 1e-10 * scale


def _assert_gram_equal(ours: kernels.GramBlock, ref: kernels.GramBlock) -> None:
    for field in kernels.GramBlock.__dataclass_fields__:
        _close(getattr(ours, field), getattr(ref, field))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize("with_base", [True, False])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_gram_of_a_chunk_matches_the_reference(dtype: torch.dtype, with_base: bool, k: int) -> None:
    piece = _family(kernels.CHUNK_ELEMENTS, k, dtype, merged=True, seed=k)
    if not with_base:
        piece = piece[:-1]
    tag = TAGS[dtype]
    ours = kernels.gram_block([piece], k, with_base, tag, chunk=True)
    ref = kernel_oracle.gram_block([piece], k, with_base, tag, chunk=True)
    _assert_gram_equal(ours, ref)
    assert ours.resolved[0] > 0 or (k == 1 and not with_base)  # one candidate and no base: it spreads nowhere


@pytest.mark.parametrize("n", [1, 7, 513, 1000, 3001])
def test_gram_of_a_block_of_small_pieces_matches_the_reference_piece_by_piece(n: int) -> None:
    """Lengths that are not a multiple of the compiled block, below and above the rounding-variance stride."""
    pieces = [_family(n, 2, torch.bfloat16, merged=s % 2 == 0, seed=10 + s) for s in range(5)]
    ours = kernels.gram_block(pieces, 2, True, "BF16")
    ref = kernel_oracle.gram_block(pieces, 2, True, "BF16")
    _assert_gram_equal(ours, ref)
    alone = kernels.gram_block(pieces[3:4], 2, True, "BF16")
    for field in kernels.GramBlock.__dataclass_fields__:  # a piece's result does not depend on its block
        np.testing.assert_array_equal(getattr(alone, field)[0], getattr(ours, field)[3])


def test_mixed_storage_types_widen_exactly() -> None:
    m, a, b, base = _family(5000, 2, torch.bfloat16, merged=True, seed=3)
    piece = (m, a.float(), b, base.half())  # a float32 candidate, a float16 base: widened to float32 exactly
    ours = kernels.gram_block([piece], 2, True, "BF16")
    ref = kernel_oracle.gram_block([piece], 2, True, "BF16")
    _assert_gram_equal(ours, ref)


def test_a_non_finite_input_shows_in_the_gram_matrix() -> None:
    m, a, b, base = _family(4096, 2, torch.bfloat16, merged=True, seed=4)
    a = a.clone()
    a[100] = float("nan")
    assert not np.isfinite(kernels.gram_block([(m, a, b, base)], 2, True, "BF16").gram).all()
    b = b.clone()
    b[7] = float("inf")
    assert not np.isfinite(kernels.gram_block([(m, m, b, base)], 2, True, "BF16").gram).all()


def _coefficients(piece: tuple[torch.Tensor, ...], k: int, with_base: bool) -> np.ndarray:
    """The exact recipe of _family's merges: weights on the candidates (and a zero base rescaling)."""
    w = (torch.linspace(1.0, 2.0, k) / torch.linspace(1.0, 2.0, k).sum()).double().numpy()
    return np.concatenate([w, [0.0]])[None] if with_base else w[None]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize("with_base", [True, False])
@pytest.mark.parametrize("merged", [True, False])
def test_residual_counts_match_the_reference(dtype: torch.dtype, with_base: bool, merged: bool) -> None:
    """Counts agree up to the elements where float32 work (the reference) and float64 work (ours) round the recipe
    to different neighbours. For a merge, ours counts the elements that are not the nearest storage value to the
    recipe's exact value: the producer's own float32 arithmetic, nearly all an ulp or two away, and all explained."""
    k, n = 2, kernels.CHUNK_ELEMENTS
    piece = _family(n, k, dtype, merged=merged, seed=20)
    if not with_base:
        piece = piece[:-1]
    tag = TAGS[dtype]
    coef = _coefficients(piece, k, with_base)
    cov = np.eye(coef.shape[1])[None] * 1e-10
    ours = kernels.residual_block([piece], k, tag, coef, cov, with_base)
    ref = kernel_oracle.residual_block([piece], k, tag, coef, cov, with_base)
    slack = 2e-3 * n
    if merged:
        assert ours.unexplained[0] == 0 and ref.unexplained[0] == 0
    if merged and tag in ("BF16", "F16"):
        assert ours.differing[0] <= 0.02 * n
        # an ulp or two, but for values that cancel to ~0 (there float32 work lands on 0, many tiny ulps away)
        assert ours.hist[0, :2].sum() >= 0.99 * ours.differing[0]
    else:  # a fine-tune, or float32 / float64 storage (both sides work in float64)
        assert ours.unexplained[0] > 0.9 * n or merged
        assert abs(int(ours.unexplained[0]) - int(ref.unexplained[0])) <= slack
        assert abs(int(ours.differing[0]) - int(ref.differing[0])) <= slack
        assert np.abs(ours.hist - ref.hist).max() <= slack
    assert np.abs(ours.zero - ref.zero).max() <= slack
    assert ours.rss[0] == pytest.approx(ref.rss[0], rel=1e-3)  # float32 work is 2^-13 of an f16 rounding
    assert ours.kept_delta[0] == pytest.approx(ref.kept_delta[0], rel=1e-6, abs=1e-12)
    assert abs(ours.excess_delta[0] - ref.excess_delta[0]) <= 2e-3 * ref.kept_delta[0]  # the same few elements


def test_residual_of_a_block_matches_each_piece_alone() -> None:
    pieces = [_family(777, 2, torch.bfloat16, merged=s != 1, seed=30 + s) for s in range(3)]
    coef = np.repeat(_coefficients(pieces[0], 2, True), 3, axis=0)
    cov = np.repeat(np.eye(3)[None] * 1e-10, 3, axis=0)
    block = kernels.residual_block(pieces, 2, "BF16", coef, cov, True)
    for j, piece in enumerate(pieces):
        alone = kernels.residual_block([piece], 2, "BF16", coef[j : j + 1], cov[j : j + 1], True)
        for field in kernels.ResidualCounts.__dataclass_fields__:
            np.testing.assert_array_equal(getattr(alone, field)[0], getattr(block, field)[j])
    assert block.unexplained[0] == 0 and block.unexplained[1] > 0


def _edge_values(dtype: torch.dtype) -> torch.Tensor:
    """float32 values around the storage grid: random magnitudes over the whole range, subnormals, exact ties,
    zeros of both signs, values that overflow the storage type."""
    g = torch.Generator().manual_seed(5)
    info = torch.finfo(dtype)
    spread = torch.exp2(torch.randint(-140, 128, (20000,), generator=g).float()) * torch.randn(20000, generator=g)
    grid = torch.randn(5000, generator=g).to(dtype).float()
    ties = grid + torch.sign(grid) * (grid.abs() * 2.0 ** -(PRECISION_BITS[TAGS[dtype]]))
    tiny = torch.randn(5000, generator=g) * float(info.smallest_normal)
    special = torch.tensor([0.0, -0.0, float(info.max), -float(info.max), float(info.max) * 1.0039, 3e38])
    return torch.cat([spread, grid, ties, tiny, special]).float()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_rounding_to_the_storage_grid_is_torchs(dtype: torch.dtype) -> None:
    tag = TAGS[dtype]
    values = _edge_values(dtype)
    expected = values.to(dtype).double().numpy()
    ours = np.array(
        [compiled._rounded(float(v), PRECISION_BITS[tag], MIN_EXPONENT[tag], MAX_FINITE[tag]) for v in values]
    )
    np.testing.assert_array_equal(ours, expected)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_grid_index_counts_ulps_like_the_bit_patterns(dtype: torch.dtype) -> None:
    """Differences of grid indices equal differences of sign-magnitude bit patterns (the ulp histogram's measure)."""
    tag = TAGS[dtype]
    stored = _edge_values(dtype).to(dtype)
    stored = stored[torch.isfinite(stored)]
    ints = stored.view({2: torch.int16, 4: torch.int32}[stored.element_size()]).numpy().astype(np.int64)
    magnitude = ints & ((1 << (8 * stored.element_size() - 1)) - 1)
    ordered = np.where(ints < 0, -magnitude, magnitude)
    ours = np.array([compiled._grid_index(float(v), PRECISION_BITS[tag], MIN_EXPONENT[tag]) for v in stored.double()])
    np.testing.assert_array_equal(ours, ordered)

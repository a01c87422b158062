"""The compiled sweeps (attest.forensics.compiled, through attest.forensics.kernels) against the torch/numpy
implementation they replaced (tests/support/kernel_oracle.py): same Gram matrices to float64 summation order, same
verdict-relevant counts; their fused two-candidate loops against their general path; and their bit-level helpers
against torch's own conversions."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from attest.forensics import kernels
from attest.forensics.compiled import elements, gram, refine, residual
from attest.forensics.pairing import MAX_FINITE, MIN_EXPONENT, PRECISION_BITS
from tests.support import kernel_oracle
from tests.support.stored import stored_piece

TAGS = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32", torch.float64: "F64"}


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
    ours = kernels.gram_block([stored_piece(piece)], k, with_base, tag, chunk=True)
    ref = kernel_oracle.gram_block([piece], k, with_base, tag, chunk=True)
    _assert_gram_equal(ours, ref)
    assert ours.resolved[0] > 0 or (k == 1 and not with_base)  # one candidate and no base: it spreads nowhere


@pytest.mark.parametrize("n", [1, 7, 513, 1000, 3001])
def test_gram_of_a_block_of_small_pieces_matches_the_reference_piece_by_piece(n: int) -> None:
    """Lengths that are not a multiple of the compiled block, below and above the rounding-variance stride."""
    pieces = [_family(n, 2, torch.bfloat16, merged=s % 2 == 0, seed=10 + s) for s in range(5)]
    ours = kernels.gram_block([stored_piece(p) for p in pieces], 2, True, "BF16")
    ref = kernel_oracle.gram_block(pieces, 2, True, "BF16")
    _assert_gram_equal(ours, ref)
    alone = kernels.gram_block([stored_piece(p) for p in pieces[3:4]], 2, True, "BF16")
    for field in kernels.GramBlock.__dataclass_fields__:  # a piece's result does not depend on its block
        np.testing.assert_array_equal(getattr(alone, field)[0], getattr(ours, field)[3])


def test_mixed_storage_types_widen_exactly() -> None:
    m, a, b, base = _family(5000, 2, torch.bfloat16, merged=True, seed=3)
    piece = (m, a.float(), b, base.half())  # a float32 candidate, a float16 base: widened to float32 exactly
    ours = kernels.gram_block([stored_piece(piece)], 2, True, "BF16")
    ref = kernel_oracle.gram_block([piece], 2, True, "BF16")
    _assert_gram_equal(ours, ref)


def test_a_non_finite_input_shows_in_the_gram_matrix() -> None:
    m, a, b, base = _family(4096, 2, torch.bfloat16, merged=True, seed=4)
    a = a.clone()
    a[100] = float("nan")
    assert not np.isfinite(kernels.gram_block([stored_piece((m, a, b, base))], 2, True, "BF16").gram).all()
    b = b.clone()
    b[7] = float("inf")
    assert not np.isfinite(kernels.gram_block([stored_piece((m, m, b, base))], 2, True, "BF16").gram).all()


def _coefficients(piece: tuple[torch.Tensor, ...], k: int, with_base: bool) -> np.ndarray:
    """The exact recipe of _family's merges: weights on the candidates (and a zero base rescaling)."""
    w = (torch.linspace(1.0, 2.0, k) / torch.linspace(1.0, 2.0, k).sum()).double().numpy()
    return np.concatenate([w, [0.0]])[None] if with_base else w[None]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize("with_base", [True, False])
@pytest.mark.parametrize("merged", [True, False])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_residual_counts_match_the_reference(dtype: torch.dtype, with_base: bool, merged: bool, k: int) -> None:
    """Counts agree up to the elements where float32 work (the reference) and float64 work (ours) round the recipe
    to different neighbours. For a merge, ours counts the elements that are not the nearest storage value to the
    recipe's exact value: the producer's own float32 arithmetic, nearly all an ulp or two away, and all explained."""
    n = kernels.CHUNK_ELEMENTS
    piece = _family(n, k, dtype, merged=merged, seed=20)
    if not with_base:
        piece = piece[:-1]
    tag = TAGS[dtype]
    coef = _coefficients(piece, k, with_base)
    cov = np.eye(coef.shape[1])[None] * 1e-10
    ours = kernels.residual_block([stored_piece(piece)], k, tag, coef, cov, with_base)
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
    block = kernels.residual_block([stored_piece(p) for p in pieces], 2, "BF16", coef, cov, True)
    for j, piece in enumerate(pieces):
        alone = kernels.residual_block([stored_piece(piece)], 2, "BF16", coef[j : j + 1], cov[j : j + 1], True)
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
        [elements.rounded(float(v), PRECISION_BITS[tag], MIN_EXPONENT[tag], MAX_FINITE[tag]) for v in values]
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
    ours = np.array([elements.grid_index(float(v), PRECISION_BITS[tag], MIN_EXPONENT[tag]) for v in stored.double()])
    np.testing.assert_array_equal(ours, ordered)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_rounding_by_bits_is_rounding_on_the_normal_range(dtype: torch.dtype) -> None:
    """The fused residual loop's integer rounding equals `rounded` wherever it is used: values in the storage
    type's normal range (or zero) whose rounding does not overflow."""
    tag = TAGS[dtype]
    bits, min_exp, top = PRECISION_BITS[tag], MIN_EXPONENT[tag], MAX_FINITE[tag]
    shift = 53 - bits
    used = 0
    for v in _edge_values(dtype).double().tolist():
        exact = elements.rounded(v, bits, min_exp, top)
        if (0.0 < abs(v) < 2.0**min_exp) or abs(exact) > top:
            continue  # the loop sends these to the general path
        assert elements.rounded_normal(v, shift, (1 << (shift - 1)) - 1, -(1 << shift)) == exact, v
        used += 1
    assert used > 10000  # of 35,006 values: the rest are outside the storage type's normal range


def _frozen(a: np.ndarray | tuple[np.ndarray, ...]) -> Any:
    """A read-only copy (of each array of a tuple), typed as the sweeps' inputs are."""
    if isinstance(a, tuple):
        return tuple(_frozen(x) for x in a)
    out = a.copy()
    out.flags.writeable = False
    return out


def _sweep_both_ways(
    piece: tuple[torch.Tensor, ...], k: int, with_base: bool, tag: str, coef: np.ndarray | None = None
) -> None:
    """Both sweeps with fused=True and fused=False on the same inputs give the same results: exactly for every
    count, to summation order for the float64 sums."""
    m, cands, base = (
        _frozen(a) for a in kernels._inputs([stored_piece(piece)], k, with_base)
    )  # views, or per-thread buffers
    bits, min_exp = PRECISION_BITS[tag], MIN_EXPONENT[tag]
    if coef is None:
        coef = _coefficients(piece, k, with_base) * 1.0000001  # slightly off: some elements differ
    cov = np.eye(coef.shape[1])[None] * 1e-12
    off = coef.copy()
    off[:, -1] += 0.01  # moves v by ~2e-4: elements leave their rounding intervals
    outs = []
    for fused in (True, False):
        g_out = tuple(np.zeros(s) for s in ((1, k + 2, k + 2), (1, k + 2), (1, k + 2, k + 2), (1, k + 2, k + 2), 1, 1))
        gram.gram_sweep(m, cands, base, with_base, bits, min_exp, 4, kernels.RVAR_MIN_ELEMENTS, kernels.RVAR_STRIDE,
                        kernels.RESOLVED_RATIO * 2.0**-bits, fused, g_out)  # fmt: skip
        r_out = (np.zeros(1), *(np.zeros(s, np.int64) for s in (1, 1, (1, 5), (1, 5))), np.zeros(1), np.zeros(1))
        residual.residual_sweep(m, cands, base, with_base, coef, cov, bits, min_exp, MAX_FINITE[tag], 4.0, fused,
                                r_out)  # fmt: skip
        f_out = (np.zeros((1,) + coef.shape[1:] * 2), np.zeros(coef.shape), np.zeros(1))
        refine.refine_sweep(m, cands, base, with_base, off, bits, min_exp, fused, f_out)
        outs.append((g_out, r_out, f_out))
    (g_f, r_f, f_f), (g_g, r_g, f_g) = outs
    np.testing.assert_array_equal(f_f[2], f_g[2])  # refinement: violations exactly, the sums to summation order
    assert f_f[2][0] > 0
    for a, b in zip(f_f[:2], f_g[:2], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-300)
    for a, b in zip(g_f, g_g, strict=True):
        _close(a, b)
    np.testing.assert_array_equal(g_f[5], g_g[5])  # resolved counts
    for i, (a, b) in enumerate(zip(r_f, r_g, strict=True)):
        if i in (0, 5, 6):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=0)
        else:
            np.testing.assert_array_equal(a, b)
    assert r_f[1][0] > 0  # the comparison covered differing elements


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("with_base", [True, False])
@pytest.mark.parametrize("merged", [True, False])
def test_fused_two_candidate_loops_equal_the_general_path(dtype: torch.dtype, with_base: bool, merged: bool) -> None:
    piece = _family(3 * 512 + 77, 2, dtype, merged=merged, seed=40)
    _sweep_both_ways(piece if with_base else piece[:-1], 2, with_base, TAGS[dtype])


def test_fused_residual_hands_values_off_the_normal_range_to_the_general_path() -> None:
    """Blocks holding recipe values below bf16's normal range or rounding past its largest value are redone by the
    general path, with the same counts. Recipe 1.0025 x the inputs (base 0): 127 units of the subnormal spacing
    2^-133 become 127.3, which rounds to 127 on bf16's grid (not differing) but to 127.5 on the normal grid the
    loop's integer rounding assumes; +-max becomes +-Inf, which the loop would round to +-2^128 (1 ulp, not >16)."""
    m, a, b, base = (t.clone() for t in _family(2048, 2, torch.bfloat16, merged=True, seed=41))
    big = torch.finfo(torch.bfloat16).max
    for t, x in ((m, 127 * 2.0**-133), (a, 127 * 2.0**-133), (b, 127 * 2.0**-133), (base, 0.0)):
        t[5] = x  # in the first block
    for t, x in ((m, big), (a, big), (b, big), (base, 0.0)):
        t[600], t[601] = x, -x  # in the second block
    _sweep_both_ways((m, a, b, base), 2, True, "BF16", coef=np.array([[0.50125, 0.50125, 0.0]]))


def test_each_sweep_module_carries_the_hash_of_the_elements_it_compiles_in() -> None:
    """numba's cache follows the cached function's own file: after an edit of elements.py the sweep modules must
    change too (update ELEMENTS_SHA256 in both), or machines would keep running the sweeps with the old helpers."""
    import hashlib
    from pathlib import Path

    want = hashlib.sha256(Path(elements.__file__).read_bytes()).hexdigest()
    assert gram.ELEMENTS_SHA256 == want, f"set ELEMENTS_SHA256 = {want!r} in compiled/gram.py"
    assert residual.ELEMENTS_SHA256 == want, f"set ELEMENTS_SHA256 = {want!r} in compiled/residual.py"
    assert refine.ELEMENTS_SHA256 == want, f"set ELEMENTS_SHA256 = {want!r} in compiled/refine.py"


@pytest.mark.parametrize("chunk", [True, False])
def test_a_float64_copy_of_a_candidate_is_at_distance_zero_from_it(chunk: bool) -> None:
    """Regression: the no-base two-candidate Gram loop takes P_2 - A as -(P_1 - A), exact only for inputs narrower
    than float64 (P_1 + P_2 exact). Float64 inputs keep the general path, whose rows make M - P_2 exactly
    (M - A) - (P_2 - A): a model that is a float64 copy of a candidate is at distance 0 from it, not ~1e-16."""
    g = torch.Generator().manual_seed(70)
    p1 = torch.randn(kernels.CHUNK_ELEMENTS, generator=g, dtype=torch.float64) * 0.02
    p2 = p1 + torch.randn(kernels.CHUNK_ELEMENTS, generator=g, dtype=torch.float64) * 1e-11
    out = kernels.gram_block([stored_piece((p2.clone(), p1, p2))], 2, False, "F64", chunk=chunk)
    gm = out.gram[0]
    assert gm[0, 0] - 2 * gm[0, 2] + gm[2, 2] == 0.0
    assert gm[0, 0] - 2 * gm[0, 1] + gm[1, 1] > 0.0


def test_the_residual_sweep_carries_the_hash_of_the_gram_helpers_it_compiles_in() -> None:
    """residual_sweep's one-pass form inlines gram.py's helpers: after an edit of gram.py it must change too."""
    import hashlib
    from pathlib import Path

    want = hashlib.sha256(Path(gram.__file__).read_bytes()).hexdigest()
    assert residual.GRAM_SHA256 == want, f"set GRAM_SHA256 = {want!r} in compiled/residual.py"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize(("n", "chunk"), [(kernels.CHUNK_ELEMENTS, True), (3 * 512 + 77, False)])
@pytest.mark.parametrize("merged", [True, False])
def test_the_one_pass_sweep_equals_the_two_sweeps(dtype: torch.dtype, n: int, chunk: bool, merged: bool) -> None:
    """Gram sums and residual counts in one pass (no base, two candidates) are the Gram sweep's and the residual
    sweep's: every count exactly, the float64 sums to summation order; with differing and unexplained elements."""
    piece = stored_piece(_family(n, 2, dtype, merged=merged, seed=60)[:-1])
    tag = TAGS[dtype]
    coef = _coefficients(_family(8, 2, dtype, merged=True, seed=60), 2, False) * 1.0000001
    cov = np.zeros((1, 2, 2))
    inputs = kernels._inputs([piece], 2, False)
    one_g, one_r = kernels.gram_residual_of(inputs, False, tag, coef, cov, chunk=chunk)
    two_g = kernels.gram_of(inputs, False, tag, chunk=chunk)
    two_r = kernels.residual_of(inputs, tag, coef, cov, False)
    _assert_gram_equal(one_g, two_g)
    np.testing.assert_array_equal(one_g.resolved, two_g.resolved)
    for field in ("differing", "unexplained", "hist", "zero"):
        np.testing.assert_array_equal(getattr(one_r, field), getattr(two_r, field))
    np.testing.assert_allclose(one_r.rss, two_r.rss, rtol=1e-12, atol=0)
    assert two_r.differing[0] > 0 and (merged or two_r.unexplained[0] > 0)


def test_the_one_pass_sweep_hands_values_off_the_normal_range_to_the_general_path() -> None:
    """A block with recipe values below bf16's normal range or rounding past its largest value is redone by the
    residual's general path inside the one-pass sweep too, with the same counts as the residual sweep."""
    m, a, b, _ = (t.clone() for t in _family(2048, 2, torch.bfloat16, merged=True, seed=41))
    big = torch.finfo(torch.bfloat16).max
    for t in (m, a, b):
        t[5] = 127 * 2.0**-133  # in the first block
        t[600], t[601] = big, -big  # in the second
    inputs = kernels._inputs([stored_piece((m, a, b))], 2, False)
    coef, cov = np.array([[0.50125, 0.50125]]), np.zeros((1, 2, 2))
    _, one_r = kernels.gram_residual_of(inputs, False, "BF16", coef, cov)
    two_r = kernels.residual_of(inputs, "BF16", coef, cov, False)
    for field in ("differing", "unexplained", "hist"):
        np.testing.assert_array_equal(getattr(one_r, field), getattr(two_r, field))
    assert two_r.differing[0] > 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize("with_base", [True, False])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_refinement_pass_matches_the_reference(dtype: torch.dtype, with_base: bool, k: int) -> None:
    """The compiled refinement pass against numpy over float64 copies (the code it replaced, with M's grid spacing
    as SPEC.md §6.3 defines it): the same violating elements up to those on an interval's edge, the same sums."""
    n = 5000
    piece = _family(n, k, dtype, merged=True, seed=50 + k)
    if not with_base:
        piece = piece[:-1]
    tag = TAGS[dtype]
    coef = _coefficients(piece, k, with_base) * 1.05 + 0.01  # off the recipe: many elements violate
    ours = kernels.refine_block([stored_piece(piece)], k, tag, coef, with_base)
    ref = kernel_oracle.refine_block([piece], k, tag, coef, with_base)
    assert ref.violations[0] > 0
    assert abs(ours.violations[0] - ref.violations[0]) <= 2
    np.testing.assert_allclose(ours.rhs, ref.rhs, rtol=1e-3, atol=1e-12 * np.abs(ref.rhs).max())
    np.testing.assert_allclose(ours.gram, ref.gram, rtol=1e-3, atol=1e-12 * np.abs(ref.gram).max())


def test_refinement_takes_the_grid_spacing_at_zero() -> None:
    """Regression: the numpy refinement took the spacing of M = 0 as 2^(1-p) (numpy.frexp gives 0 the exponent 0),
    an interval of +-0.004 for bf16, so a recipe of 0.001 where the model stores 0 was no violation. At zero the
    spacing is the smallest subnormal's (SPEC.md §6.3)."""
    n = 1000
    p = torch.full((n,), 1e-3).bfloat16()
    m = torch.zeros(n, dtype=torch.bfloat16)
    step = kernels.refine_block([stored_piece((m, p, p))], 2, "BF16", np.array([[0.5, 0.5]]), False)
    assert step.violations[0] == n
    assert kernel_oracle.refine_block([(m, p, p)], 2, "BF16", np.array([[0.5, 0.5]]), False).violations[0] == n

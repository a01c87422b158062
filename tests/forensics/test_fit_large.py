"""fit_large over every chunk of a large tensor (SPEC.md §6.2): NaN/Inf anywhere makes the row not finite, and the
distances the merge share divides are sums over the same elements as the residual's. A Gram sampled from every 4th
chunk and scaled up was tried (it saved ~40% of detect's compute) and dropped: a fine-tune that changed one chunk's
rows read a merge share of 0.75 (`test_a_change_confined_to_one_chunk_is_no_merge`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attest.forensics.evidence import non_finite_count
from attest.forensics.fit import fit_large
from attest.forensics.kernels import CHUNK_ELEMENTS
from tests.support.stored import stored, stored_piece

N = 16 * CHUNK_ELEMENTS + 1001  # 17 chunks: without a base, refined on a sample of chunks first


def _models(trained: float, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """A bf16 task-arithmetic merge (0.7, 0.5) of two fine-tunes of a base, then `trained` noise on every element."""
    g = torch.Generator().manual_seed(seed)
    base = (torch.randn(N, generator=g) * 0.02).bfloat16().float()
    a = (base + torch.randn(N, generator=g) * 2e-3).bfloat16().float()
    b = (base + torch.randn(N, generator=g) * 2e-3).bfloat16().float()
    m = base + 0.7 * (a - base) + 0.5 * (b - base) + trained * torch.randn(N, generator=g)
    return m.bfloat16(), a.bfloat16(), b.bfloat16(), base.bfloat16()


@pytest.mark.parametrize("chunk", [0, 1])
def test_a_change_confined_to_one_chunk_is_no_merge(chunk: int) -> None:
    """A single-parent fine-tune whose change sits in one chunk (new token rows of an embedding): its distance to the
    parent is its residual, so nothing is explained by a merge (review: a Gram over every 4th chunk, scaled up, read
    a share of 0.75 for chunk 0 and no distance at all for chunk 1)."""
    _, a, b, base = _models(trained=0.0)
    g = torch.Generator().manual_seed(5)
    m = a.float().clone()
    rows = slice(chunk * CHUNK_ELEMENTS, (chunk + 1) * CHUNK_ELEMENTS)
    m[rows] += 0.004 * torch.randn(CHUNK_ELEMENTS, generator=g)
    fit = fit_large("t", "BF16", stored_piece((m.bfloat16(), a, b, base)), 2, True)
    assert fit.finite[0]
    rss, to_parent = float(fit.rss[0]), float(fit.dist2[0, 0])
    assert to_parent > 0 and abs(1 - rss / to_parent) < 1e-3  # explained share ~0
    assert fit.numel[0] == N


@pytest.mark.parametrize("with_base", [True, False])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("which", [0, 1])
def test_a_non_finite_element_outside_the_gram_chunks_is_found(with_base: bool, value: float, which: int) -> None:
    """A NaN/Inf past the first chunk (and the sample-first chunks without a base) makes the row not finite (then
    counted as a fact, never fitted), in the model or in a candidate."""
    models = list(_models(trained=0.0))
    t = models[which].clone()
    t[CHUNK_ELEMENTS + 17] = value
    models[which] = t
    piece = stored_piece(tuple(models) if with_base else tuple(models[:3]))
    assert not fit_large("t", "BF16", piece, 2, with_base).finite[0]
    assert non_finite_count(piece[which]) == 1


def test_a_clean_merge_of_many_chunks_is_exact() -> None:
    m, a, b, base = _models(trained=0.0)
    fit = fit_large("t", "BF16", stored_piece((m, a, b, base)), 2, True)
    assert fit.finite[0] and int(fit.unexplained[0]) == 0
    np.testing.assert_allclose(fit.coef[0, :2], [0.7, 0.5], atol=1e-3)


def test_non_finite_count_reads_bf16_bit_patterns() -> None:
    t = torch.tensor([1.0, float("nan"), float("inf"), -float("inf"), 3.3895313892515355e38, -0.0, 1e-40])
    assert non_finite_count(stored(t.bfloat16())) == 3
    assert non_finite_count(stored(t.half())) == 4  # 3.39e38 overflows float16 to Inf
    assert non_finite_count(stored(t)) == 3
    assert non_finite_count(stored(torch.zeros(3 * CHUNK_ELEMENTS + 5).bfloat16())) == 0

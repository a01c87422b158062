"""fit_large's Gram matrices from every GRAM_STRIDE-th chunk of a large tensor (SPEC.md §6.2): the same fit as from
every chunk up to the sample's error, sums on the whole tensor's scale, and every element still read by the
residual test, so NaN/Inf anywhere is found and nothing unexplained is missed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import attest.forensics.fit as fit_module
from attest.forensics.evidence import non_finite_count
from attest.forensics.fit import GRAM_MIN_CHUNKS, GRAM_STRIDE, fit_large
from attest.forensics.kernels import CHUNK_ELEMENTS
from tests.support.stored import stored, stored_piece

N = GRAM_MIN_CHUNKS * CHUNK_ELEMENTS + 1001  # the smallest tensor whose Gram matrices are strided, plus a tail


def _models(trained: float, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """A bf16 task-arithmetic merge (0.7, 0.5) of two fine-tunes of a base, then `trained` noise on every element."""
    g = torch.Generator().manual_seed(seed)
    base = (torch.randn(N, generator=g) * 0.02).bfloat16().float()
    a = (base + torch.randn(N, generator=g) * 2e-3).bfloat16().float()
    b = (base + torch.randn(N, generator=g) * 2e-3).bfloat16().float()
    m = base + 0.7 * (a - base) + 0.5 * (b - base) + trained * torch.randn(N, generator=g)
    return m.bfloat16(), a.bfloat16(), b.bfloat16(), base.bfloat16()


@pytest.mark.parametrize("with_base", [True, False])
def test_strided_gram_fits_like_the_whole_tensor(monkeypatch: pytest.MonkeyPatch, with_base: bool) -> None:
    m, a, b, base = _models(trained=5e-4)
    piece = stored_piece((m, a, b, base) if with_base else (m, a, b))
    strided = fit_large("t", "BF16", piece, 2, with_base)
    monkeypatch.setattr(fit_module, "GRAM_STRIDE", 1)
    whole = fit_large("t", "BF16", piece, 2, with_base)
    assert GRAM_STRIDE > 1
    assert strided.numel[0] == whole.numel[0] == N
    np.testing.assert_allclose(strided.coef, whole.coef, atol=2e-3)
    np.testing.assert_allclose(strided.dist2, whole.dist2, rtol=0.02)  # on the whole tensor's scale
    np.testing.assert_allclose(strided.ref_energy, whole.ref_energy, rtol=0.02)
    np.testing.assert_allclose(strided.raw_gram, whole.raw_gram, rtol=0.02)
    np.testing.assert_allclose(strided.corr, whole.corr, atol=0.01)
    # the residual test reads every element either way: the trained merge is unexplained nearly everywhere
    assert strided.unexplained[0] > 0.5 * N
    assert abs(int(strided.unexplained[0]) - int(whole.unexplained[0])) < 0.02 * N  # tolerances from either fit


@pytest.mark.parametrize("with_base", [True, False])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("which", [0, 1])
def test_a_non_finite_element_outside_the_gram_chunks_is_found(with_base: bool, value: float, which: int) -> None:
    """Chunk 1 is not summed into the Gram matrices (chunks 0, GRAM_STRIDE, ...): its NaN/Inf still makes the row
    not finite (then counted as a fact, never fitted), in the model or in a candidate."""
    models = list(_models(trained=0.0))
    t = models[which].clone()
    t[CHUNK_ELEMENTS + 17] = value
    models[which] = t
    piece = stored_piece(tuple(models) if with_base else tuple(models[:3]))
    assert not fit_large("t", "BF16", piece, 2, with_base).finite[0]
    assert non_finite_count(piece[which]) == 1


def test_a_clean_strided_merge_is_exact() -> None:
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

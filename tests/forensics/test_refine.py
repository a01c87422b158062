"""The exact-recipe refinement and the resolved-element fit (attest.forensics.refine, attest.forensics.kernels).

Regression: least squares over bf16 models a few ulps apart is biased toward the nearer parent (3/7 of a 1-ulp
difference rounds to no difference), so a pure merge left up to ~1% of a tensor "unexplained" and read as a merge
followed by training (a Qwen3.5-MoE embedding: 1.1%, coefficient off by 6e-4 = 5.6 standard errors).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from attest.forensics import detect
from attest.forensics.fit import fit_block, fit_large
from attest.forensics.kernels import CHUNK_ELEMENTS, refine_block
from attest.forensics.refine import refine
from tests.support.stored import stored_piece

N = 4096


def _near_models(seed: int, ulps: float, with_base: bool, n: int = N) -> tuple[torch.Tensor, ...]:
    """bf16 models whose differences are ~`ulps` grid steps: candidates (and their base)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, generator=g)
    step = ulps * 2.0**-7  # about `ulps` bf16 spacings for |x| ~ 1
    p1 = (base + step * torch.randn(n, generator=g)).bfloat16()
    p2 = (base + step * torch.randn(n, generator=g)).bfloat16()
    return p1, p2, base.bfloat16()


def _linear(p1: torch.Tensor, p2: torch.Tensor, w1: float = 1.0, w2: float = 0.75) -> torch.Tensor:
    """mergekit's linear merge: float32 weighted sum, normalised, rounded to bf16."""
    return ((w1 * p1.float() + w2 * p2.float()) / (w1 + w2)).bfloat16()


def _plain_least_squares(m: torch.Tensor, p1: torch.Tensor, p2: torch.Tensor) -> np.ndarray:
    x = torch.stack([p1, p2]).double().numpy()
    return np.linalg.lstsq(x.T, m.double().numpy(), rcond=None)[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_pure_merge_of_few_ulp_models_is_exact(seed: int) -> None:
    p1, p2, _ = _near_models(seed, ulps=1.2, with_base=False)
    m = _linear(p1, p2)
    biased = _plain_least_squares(m, p1, p2)
    assert abs(biased[0] - 4 / 7) > 0.005  # the bias this fixes is really there
    fit = fit_block(["t"], "BF16", [stored_piece((m, p1, p2))], 2, False)
    assert fit.unexplained[0] == 0
    # resolved elements, the rounding sandwich and (where elements were still unexplained) the refinement
    assert np.allclose(fit.coef[0], [4 / 7, 3 / 7], atol=0.002), fit.coef


def test_task_arithmetic_of_few_ulp_deltas_is_exact() -> None:
    p1, p2, b = _near_models(3, ulps=1.5, with_base=True)
    m = (b.float() + 0.7 * (p1.float() - b.float()) + 0.5 * (p2.float() - b.float())).bfloat16()
    fit = fit_block(["t"], "BF16", [stored_piece((m, p1, p2, b))], 2, True)
    assert fit.unexplained[0] == 0
    assert np.allclose(fit.coef[0], [0.7, 0.5, 0.0], atol=0.005), fit.coef


def test_a_large_tensor_is_refined_chunk_by_chunk() -> None:
    n = 2 * CHUNK_ELEMENTS + 1000
    p1, p2, _ = _near_models(4, ulps=2.5, with_base=False, n=n)
    m = _linear(p1, p2)
    fit = fit_large("big", "BF16", stored_piece((m, p1, p2)), 2, False)
    assert fit.unexplained[0] == 0
    assert np.allclose(fit.coef[0], [4 / 7, 3 / 7], atol=1e-4), fit.coef


def test_training_after_the_merge_is_not_refined_away() -> None:
    """2% of elements moved by 1-3 ulps after the merge: no coefficient vector rounds to them, so they stay
    unexplained and refine() reports that it found none."""
    p1, p2, _ = _near_models(5, ulps=2.5, with_base=False)
    m = _linear(p1, p2)
    g = torch.Generator().manual_seed(9)
    moved = torch.rand(N, generator=g) < 0.02
    bits = m.view(torch.int16).clone()
    bits[moved] += torch.randint(1, 4, (int(moved.sum()),), generator=g, dtype=torch.int16)
    trained = bits.view(torch.bfloat16)
    fit = fit_block(["t"], "BF16", [stored_piece((trained, p1, p2))], 2, False)
    assert fit.unexplained[0] > 0.01 * N
    assert refine(stored_piece((trained, p1, p2)), 2, "BF16", np.array([4 / 7, 3 / 7]), False) is None


def test_refine_returns_the_recipe_from_a_biased_start() -> None:
    p1, p2, _ = _near_models(6, ulps=1.2, with_base=False)
    m = _linear(p1, p2)
    start = _plain_least_squares(m, p1, p2)
    assert abs(start[0] - 4 / 7) > 0.005
    exact = refine(stored_piece((m, p1, p2)), 2, "BF16", start, False)
    # Every vector under which each element rounds to its stored value is an exact recipe; with 4,096 elements 1.2
    # ulps apart they span about +-2.5e-4 around 4/7 (3e-4 off either way leaves elements outside), and the
    # iteration may stop anywhere among them.
    assert exact is not None and np.allclose(exact, [4 / 7, 3 / 7], atol=3e-4), exact
    piece = [stored_piece((m, p1, p2))]
    assert int(refine_block(piece, 2, "BF16", exact[None], False).violations[0]) == 0
    for off in (3e-4, -3e-4):
        outside = np.array([[4 / 7 + off, 3 / 7 - off]])
        assert int(refine_block(piece, 2, "BF16", outside, False).violations[0]) > 0


def test_real_low_lr_finetunes_merged_by_mergekit_read_pure_merge(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """Real checkpoints: two 3-step AdamW fine-tunes at lr 1e-4 (deltas of a few bf16 ulps), mergekit's linear
    1.0 : 0.75 merge, detect without the base."""
    pytest.importorskip("mergekit", reason="mergekit 0.1.5 is a test dependency")
    from tests.support.builders import finetune
    from tests.support.mergekit_peer import run_mergekit

    base = tiny_models["base"]
    a = finetune(base, tmp_path / "a", seed=21, steps=3, lr=1e-4)
    b = finetune(base, tmp_path / "b", seed=22, steps=3, lr=1e-4)
    recipe = (
        f"merge_method: linear\nmodels:\n  - model: {a}\n    parameters: {{weight: 1.0}}\n"
        f"  - model: {b}\n    parameters: {{weight: 0.75}}\ndtype: bfloat16\n"
    )
    merged = run_mergekit(recipe, tmp_path / "linear")
    r = detect(merged, [a, b])
    assert r.verdict == "pure_merge", r.reason
    assert r.residual is not None and r.residual.unexplained == 0
    assert abs(r.coefficients[0].value - 4 / 7) <= 0.005


@pytest.mark.parametrize("seed", [3, 16])
def test_refinement_does_not_stall_a_hair_outside_an_interval(seed: int) -> None:
    """Regression: each step aimed the violating elements at the ends of their intervals, and from plain least
    squares the iteration could stop with one element 1e-17 outside its interval, the next step too small to move
    the coefficients, until it gave up after 30 passes (these two seeds of bench_detect's models at 65,536 elements;
    3 of the 8 tensors of its 861 MB merge from their samples): a pure merge read as partly unexplained. Aimed half
    the float32 allowance inside the ends, it converges."""
    g = torch.Generator().manual_seed(seed)
    n = 65_536
    base = (torch.randn(n, generator=g) * 0.02).bfloat16()
    p1 = (base.float() + torch.randn(n, generator=g) * 2e-3).bfloat16()
    p2 = (base.float() + torch.randn(n, generator=g) * 2e-3).bfloat16()
    m = _linear(p1, p2)
    exact = refine(stored_piece((m, p1, p2)), 2, "BF16", _plain_least_squares(m, p1, p2), False)
    assert exact is not None and np.allclose(exact, [4 / 7, 3 / 7], atol=1e-6), exact
    piece = [stored_piece((m, p1, p2))]
    assert int(refine_block(piece, 2, "BF16", exact[None], False).violations[0]) == 0


def test_a_tensor_of_many_chunks_is_refined_on_a_sample_first() -> None:
    """At least 2 * SAMPLE_CHUNKS chunks: the iteration runs on about SAMPLE_CHUNKS evenly spaced chunks, then over
    the whole tensor from there; the answer is still exact on every element, in few passes over the whole tensor."""
    from attest.forensics.refine import SAMPLE_CHUNKS

    n = 2 * SAMPLE_CHUNKS * CHUNK_ELEMENTS + 777
    p1, p2, _ = _near_models(7, ulps=1.2, with_base=False, n=n)
    m = _linear(p1, p2)
    start = np.array([4 / 7 + 6e-4, 3 / 7 - 6e-4])  # the least-squares bias of few-ulp models
    passes: list[int] = []

    def counting(fn, chunks):  # type: ignore[no-untyped-def]
        passes.append(len(chunks))
        return [fn(sl) for sl in chunks]

    exact = refine(stored_piece((m, p1, p2)), 2, "BF16", start, False, counting)
    assert exact is not None and np.allclose(exact, [4 / 7, 3 / 7], atol=1e-4), exact
    whole = len(range(0, n, CHUNK_ELEMENTS))
    assert passes[0] < whole and passes[-1] == whole  # sample first, the whole tensor last
    assert 1 <= passes.count(whole) <= 3, passes
    # every element of the tensor rounds to its stored value under the answer
    fit = fit_large("big", "BF16", stored_piece((m, p1, p2)), 2, False)
    assert fit.unexplained[0] == 0


def test_training_gives_up_on_the_sample() -> None:
    from attest.forensics.refine import SAMPLE_CHUNKS

    n = 2 * SAMPLE_CHUNKS * CHUNK_ELEMENTS
    p1, p2, _ = _near_models(8, ulps=2.5, with_base=False, n=n)
    bits = _linear(p1, p2).view(torch.int16).clone()
    g = torch.Generator().manual_seed(10)
    moved = torch.rand(n, generator=g) < 0.02
    bits[moved] += torch.randint(1, 4, (int(moved.sum()),), generator=g, dtype=torch.int16)
    passes: list[int] = []

    def counting(fn, chunks):  # type: ignore[no-untyped-def]
        passes.append(len(chunks))
        return [fn(sl) for sl in chunks]

    assert (
        refine(stored_piece((bits.view(torch.bfloat16), p1, p2)), 2, "BF16", np.array([4 / 7, 3 / 7]), False, counting)
        is None
    )
    chunks = len(range(0, n, CHUNK_ELEMENTS))
    sample = len(range(chunks)[:: chunks // SAMPLE_CHUNKS])
    assert passes and set(passes) == {sample}  # never a pass over the whole tensor


def test_fit_large_takes_the_samples_answer_when_it_explains_the_whole_tensor(monkeypatch: pytest.MonkeyPatch) -> None:
    """fit_large fits and refines the sample first; its one pass over the whole tensor sums the Gram matrices and runs
    the residual test of the sample's answer: when that leaves nothing unexplained the answer is the refined recipe,
    with no other pass over the whole tensor. The least-squares recipe is offset by the bias of few-ulp models (what
    makes a large tensor need refining)."""
    import attest.forensics.fit as fit_module
    import attest.forensics.refine as refine_module
    from attest.forensics.refine import SAMPLE_CHUNKS

    n = 2 * SAMPLE_CHUNKS * CHUNK_ELEMENTS
    p1, p2, _ = _near_models(11, ulps=2.5, with_base=False, n=n)
    m = _linear(p1, p2)
    real_fits, real_iterate, real_map = fit_module._fits, refine_module._iterate, fit_module.parallel_map
    iterated: list[int] = []  # the chunks each iteration ran over
    mapped: list[int] = []  # the chunks of each pass fit_large made

    def biased(*args):  # type: ignore[no-untyped-def]
        fit, cov = real_fits(*args)
        fit.coef[:, :2] += [6e-4, -6e-4]
        return fit, cov

    def counting(piece, k, dtype, c, with_base, chunks, *rest):  # type: ignore[no-untyped-def]
        iterated.append(len(chunks))
        return real_iterate(piece, k, dtype, c, with_base, chunks, *rest)

    def mapping(fn, chunks):  # type: ignore[no-untyped-def]
        mapped.append(len(chunks))
        return real_map(fn, chunks)

    monkeypatch.setattr(fit_module, "_fits", biased)
    monkeypatch.setattr(fit_module, "parallel_map", mapping)
    monkeypatch.setattr(refine_module, "_iterate", counting)
    fit = fit_large("big", "BF16", stored_piece((m, p1, p2)), 2, False)
    assert iterated, "the biased recipe was refined"
    assert fit.unexplained[0] == 0
    assert np.allclose(fit.coef[0], [4 / 7, 3 / 7], atol=1e-4), fit.coef
    whole = n // CHUNK_ELEMENTS
    assert iterated == [len(range(whole)[:: whole // SAMPLE_CHUNKS])]  # the sample only
    assert mapped.count(whole) == 1, mapped  # one pass over the whole tensor


def test_fit_large_counts_training_outside_the_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a base the sample's recipe is tested over the whole tensor in its one pass: elements moved only in a
    chunk the sample leaves out must still read as unexplained (the pass falls back to the tensor's own least
    squares and residual test), never as a pure merge."""
    import attest.forensics.fit as fit_module
    from attest.forensics.refine import SAMPLE_CHUNKS, sample_chunks

    n = 2 * SAMPLE_CHUNKS * CHUNK_ELEMENTS
    p1, p2, _ = _near_models(12, ulps=2.5, with_base=False, n=n)
    bits = _linear(p1, p2).view(torch.int16).clone()
    chunks = [slice(s, s + CHUNK_ELEMENTS) for s in range(0, n, CHUNK_ELEMENTS)]
    outside = next(sl for sl in chunks if sl not in sample_chunks(chunks))
    g = torch.Generator().manual_seed(13)
    moved = torch.zeros(n, dtype=torch.bool)
    moved[outside] = torch.rand(CHUNK_ELEMENTS, generator=g) < 0.01
    bits[moved] += torch.randint(2, 5, (int(moved.sum()),), generator=g, dtype=torch.int16)
    m = bits.view(torch.bfloat16)
    sampled: list[np.ndarray | None] = []
    real = fit_module._sample_recipe

    def recording(*args):  # type: ignore[no-untyped-def]
        sampled.append(real(*args))
        return sampled[-1]

    monkeypatch.setattr(fit_module, "_sample_recipe", recording)
    fit = fit_large("big", "BF16", stored_piece((m, p1, p2)), 2, False)
    assert sampled and sampled[0] is not None  # the sample alone was an exact merge
    assert int(fit.unexplained[0]) >= int(moved.sum()) * 9 // 10, (int(fit.unexplained[0]), int(moved.sum()))
    assert np.allclose(fit.coef[0], [4 / 7, 3 / 7], atol=1e-3), fit.coef


def test_fit_large_with_a_base_takes_no_sample_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a base least squares explains a merge by itself: the sample is not fitted first (it only cost time and
    gave a less accurate coefficient), and the merge is exact from the tensor's own least squares."""
    import attest.forensics.fit as fit_module
    from attest.forensics.refine import SAMPLE_CHUNKS

    def never(*args):  # type: ignore[no-untyped-def]
        raise AssertionError("sampled first with a base")

    n = 2 * SAMPLE_CHUNKS * CHUNK_ELEMENTS
    p1, p2, base = _near_models(14, ulps=2.5, with_base=True, n=n)
    delta = ((1.0 * (p1.float() - base.float()) + 0.75 * (p2.float() - base.float())) / 1.75).bfloat16()
    m = (base.float() + delta.float()).bfloat16()
    monkeypatch.setattr(fit_module, "_sample_recipe", never)
    fit = fit_large("big", "BF16", stored_piece((m, p1, p2, base)), 2, True)
    assert int(fit.unexplained[0]) == 0
    assert np.allclose(fit.coef[0][:2], [4 / 7, 3 / 7], atol=1e-3), fit.coef

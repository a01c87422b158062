"""Permutation alignment in `attest detect` (SPEC.md §6.10), on a real mergekit 0.1.5 merge of real fine-tunes.

A function-preserving permutation (residual stream, MLP units of every layer, KV groups and the query heads inside
them: tests/support/permute.py) leaves the logits equal and used to make detect say `not_derived`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from attest.cli import cli
from attest.forensics import detect
from tests.support.builders import finetune, make_tiny_model
from tests.support.permute import permute_model

FOUR_SEVENTHS = 4 / 7


@pytest.fixture(scope="module")
def permuted(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("mergekit", reason="mergekit 0.1.5 is a test dependency")
    from tests.support.mergekit_peer import run_mergekit

    root = tmp_path_factory.mktemp("alignment")
    a, b = tiny_models["ft_a"], tiny_models["ft_b"]
    recipe = (
        f"merge_method: linear\nmodels:\n  - model: {a}\n    parameters: {{weight: 1.0}}\n"
        f"  - model: {b}\n    parameters: {{weight: 0.75}}\ndtype: bfloat16\n"
    )
    merge = run_mergekit(recipe, root / "linear")
    out = dict(tiny_models)
    out["linear"] = merge
    out["perm_linear"] = root / "perm_linear"
    permute_model(merge, out["perm_linear"], seed=11)
    out["perm_mlp_only"] = root / "perm_mlp_only"
    permute_model(merge, out["perm_mlp_only"], seed=12, residual=False, heads=False)
    out["perm_ft_a"] = root / "perm_ft_a"
    permute_model(a, out["perm_ft_a"], seed=13)
    out["sibling"] = finetune(tiny_models["base"], root / "sibling", seed=3, steps=5, lr=1e-3)
    indep = make_tiny_model(root / "independent", seed=42)
    out["perm_independent"] = root / "perm_independent"
    permute_model(indep, out["perm_independent"], seed=14)
    return out


def test_the_permutation_preserves_the_function(permuted: dict[str, Path]) -> None:
    from transformers import AutoModelForCausalLM

    ids = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(0))
    logits = []
    for f in (permuted["linear"], permuted["perm_linear"]):
        model = AutoModelForCausalLM.from_pretrained(f, dtype=torch.float32).eval()
        with torch.no_grad():
            logits.append(model(input_ids=ids).logits)
    assert torch.allclose(logits[0], logits[1], atol=1e-5, rtol=0), (logits[0] - logits[1]).abs().max()
    assert not torch.equal(logits[0], torch.zeros_like(logits[0]))


@pytest.mark.parametrize("with_base", [True, False])
def test_permuted_merge_found_with_its_coefficients(permuted: dict[str, Path], with_base: bool) -> None:
    m = permuted
    r = detect(m["perm_linear"], [m["ft_a"], m["ft_b"]], m["base"] if with_base else None)
    assert r.alignment is not None and r.alignment.applied, r.alignment
    assert r.alignment.plain_verdict == "not_derived", r.alignment.plain_reason
    assert r.verdict == "pure_merge", r.reason
    assert abs(r.coefficients[0].value - FOUR_SEVENTHS) <= 0.005
    assert abs(r.coefficients[1].value - 3 / 7) <= 0.005
    assert r.residual is not None and r.residual.unexplained == 0
    kinds = {(p.kind, p.layer) for p in r.alignment.permutations if p.moved}
    assert ("residual", None) in kinds
    for layer in (0, 1):
        assert {("mlp_units", layer), ("kv_groups", layer), ("query_heads", layer)} <= kinds
    assert all(p.cosine > 0.9 for p in r.alignment.permutations)
    assert r.alignment.unaligned_tensors == 0


def test_mlp_only_permutation_is_undone(permuted: dict[str, Path]) -> None:
    m = permuted
    r = detect(m["perm_mlp_only"], [m["ft_a"], m["ft_b"]], m["base"])
    assert r.alignment is not None and r.alignment.applied
    assert r.alignment.plain_verdict != "pure_merge"
    assert r.verdict == "pure_merge", r.reason
    moved = {p.kind for p in r.alignment.permutations if p.moved}
    assert moved == {"mlp_units"}


def test_permuted_candidate_is_identical_after_alignment(permuted: dict[str, Path]) -> None:
    m = permuted
    r = detect(m["perm_ft_a"], [m["ft_a"], m["ft_b"]], m["base"])
    assert r.alignment is not None and r.alignment.applied
    assert r.verdict == "derived_not_merge" and r.derived_from == str(m["ft_a"]), r.reason
    assert "bit-identical" in r.reason


@pytest.mark.parametrize("which", ["linear", "sibling"])
def test_unpermuted_models_do_not_run_alignment(permuted: dict[str, Path], which: str) -> None:
    m = permuted
    r = detect(m[which], [m["ft_a"], m["ft_b"]], m["base"])
    assert r.alignment is None
    assert r.verdict == ("pure_merge" if which == "linear" else "derived_not_merge"), r.reason


def test_permuted_unrelated_model_stays_not_derived(permuted: dict[str, Path]) -> None:
    m = permuted
    r = detect(m["perm_independent"], [m["ft_a"], m["ft_b"]], m["base"])
    assert r.verdict == "not_derived", r.reason
    assert r.alignment is not None and not r.alignment.applied
    assert "no confident match" in r.alignment.reason
    assert min(p.cosine for p in r.alignment.permutations) < 0.5


def test_cli_reports_the_alignment(permuted: dict[str, Path]) -> None:
    m = permuted
    args = ["detect", str(m["perm_linear"]), "--candidate", str(m["ft_a"]), "--candidate", str(m["ft_b"])]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "pure_merge" in res.output and "aligned" in res.output and "not_derived" in res.output

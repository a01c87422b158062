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


def test_an_aligned_view_permutes_every_whole_byte_dtype(tmp_path: Path) -> None:
    """Digests of an aligned model are taken permuted for FP8 and integer tensors too (the numpy port first
    permuted floating tensors only and read the others as stored); values and torch reads agree with torch's own
    index_select of the stored tensor."""
    import numpy as np
    from safetensors.torch import save_file

    from attest.checkpoint.canonical import CanonicalView
    from attest.checkpoint.reader import Checkpoint, raw_digest_of
    from attest.forensics.alignment import AlignedView, Alignment
    from tests.support.stored import stored

    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 4, generator=g)
    tensors = {
        "model.layers.0.mlp.up_proj.weight": w.bfloat16(),
        "model.layers.0.mlp.gate_proj.weight": w.to(torch.float8_e4m3fn),
        "model.layers.0.mlp.down_proj.weight": torch.arange(24, dtype=torch.int32).reshape(4, 6),
    }
    save_file(tensors, str(tmp_path / "model.safetensors"))
    units, hidden = np.array([3, 0, 5, 1, 4, 2]), np.array([2, 3, 0, 1])
    al = Alignment(perms={("I", 0): units, ("H", None): hidden})
    with Checkpoint(tmp_path, with_config=False) as ck:
        view = AlignedView(CanonicalView(ck), al, None)
        for name, t in tensors.items():
            rows, cols = (units, hidden) if "down" not in name else (hidden, units)
            expected = t.index_select(0, torch.from_numpy(rows)).index_select(1, torch.from_numpy(cols))
            got = view.load(name)
            assert got.dtype == t.dtype
            assert torch.equal(got.view(torch.uint8), expected.contiguous().view(torch.uint8)), name
            data = expected.contiguous().reshape(-1).view(torch.uint8).numpy()
            assert view.raw_digest(name) == raw_digest_of(ck.info(name), data), name
            assert view.raw_digest(name) != ck.raw_digest(name), name
        up = "model.layers.0.mlp.up_proj.weight"
        bits = tensors[up].index_select(0, torch.from_numpy(units)).index_select(1, torch.from_numpy(hidden))
        assert np.array_equal(view.array(up), stored(bits))

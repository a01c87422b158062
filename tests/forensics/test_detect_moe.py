"""`attest detect` and `attest diff` on real tiny Qwen3.5-MoE checkpoints, through the layout-canonical view.

The parents are real fine-tunes (AdamW steps) of a tiny `Qwen3_5MoeForCausalLM` (tests/support/moe_builders.py),
stored per expert as transformers saves them; the fused layout is what mergekit 0.1.5 itself writes under
transformers 5; the per-expert merge is attest's own (`--layout per-expert`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from attest.cli import cli
from attest.forensics import DetectReport, detect
from attest.forensics.report import report_json_chunks
from tests.support.builders import copy_model, token_batches

FOUR_SEVENTHS = 4 / 7
EXPERTS = 8
MOE_INTER = 32  # tests.support.moe_builders: hidden 64, moe_intermediate_size 32
CHANGED_LAYER = 2


def train_layer_experts(src: Path, out: Path, layer: int, steps: int = 2) -> Path:
    """Real AdamW steps on one layer's routed experts only (every other parameter frozen), saved in bf16."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(7)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    trained = [p for n, p in model.named_parameters() if n.startswith(f"model.layers.{layer}.mlp.experts.")]
    assert trained
    for p in model.parameters():
        p.requires_grad_(False)
    for p in trained:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(trained, lr=3e-4)
    for ids in token_batches(7, steps):
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
    model.to(torch.bfloat16)
    model.save_pretrained(out)
    return out


def _stored(folder: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def _rewrite(src: Path, dst: Path, tensors: dict[str, torch.Tensor]) -> Path:
    copy_model(src, dst)
    for f in dst.glob("*.safetensors"):
        f.unlink()
    for f in dst.glob("*.safetensors.index.json"):
        f.unlink()
    save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


@pytest.fixture(scope="module")
def moe(
    moe_models: Callable[[str], dict[str, Path]],
    mergekit_moe: Callable[[str, str], tuple[str, Path]],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Path]:
    """The shared Qwen3.5-MoE family, mergekit 0.1.5's linear 1.0 : 0.75 merge of it (fused), attest's (per expert)."""
    fam = moe_models("qwen3_5_moe")
    text, fused = mergekit_moe("qwen3_5_moe", "linear")
    root = tmp_path_factory.mktemp("moe_detect")
    recipe = root / "linear.yml"
    recipe.write_text(text)
    res = CliRunner().invoke(cli, ["merge", str(recipe), str(root / "attest_merge"), "--layout", "per-expert"])
    assert res.exit_code == 0, res.output
    return {**fam, "fused": fused, "per_expert": root / "attest_merge"}


def _detect(model: Path, moe: dict[str, Path]) -> DetectReport:
    return detect(model, [moe["ft_a"], moe["ft_b"]])


def test_mergekit_writes_fused_experts(moe: dict[str, Path]) -> None:
    """The premise: the real mergekit output is fused, attest's merge per expert (as the parents are)."""
    fused, per = _stored(moe["fused"]), _stored(moe["per_expert"])
    assert list(fused["model.layers.0.mlp.experts.gate_up_proj"].shape) == [EXPERTS, 2 * MOE_INTER, 64]
    assert not any(".experts.0." in n for n in fused)
    assert "model.layers.0.mlp.experts.7.up_proj.weight" in per
    assert "model.layers.0.mlp.experts.gate_up_proj" not in per


@pytest.mark.parametrize("layout", ["fused", "per_expert"])
def test_detect_recovers_four_sevenths_over_every_expert(moe: dict[str, Path], layout: str) -> None:
    r = _detect(moe[layout], moe)
    assert r.verdict == "pure_merge", r.reason
    assert r.coverage is not None and r.coverage.fraction == 1.0
    assert r.coverage.compared == r.coverage.elements
    assert abs(r.coefficients[0].value - FOUR_SEVENTHS) < 0.003
    assert bool(r.coverage.layouts) == (layout == "fused")
    assert len(r.experts) == 4 * EXPERTS
    for row in r.experts:
        a = row.coefficients[0]
        assert a is not None and abs(a - FOUR_SEVENTHS) < 0.01, row
    assert r.expert_map == []  # a uniform merge: no expert comes from one parent alone
    assert not any("not fitted" in n for n in r.notes)
    assert "".join(report_json_chunks(r)) == r.model_dump_json(indent=2)  # --json streams both row tables


def test_training_one_layers_experts_reads_merge_plus_training(moe: dict[str, Path], tmp_path: Path) -> None:
    trained = train_layer_experts(moe["per_expert"], tmp_path / "trained", CHANGED_LAYER)
    before, after = _stored(moe["per_expert"]), _stored(trained)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and all(n.startswith(f"model.layers.{CHANGED_LAYER}.mlp.experts.") for n in changed)
    r = _detect(trained, moe)
    assert r.verdict == "merge_plus_training", r.reason
    names = [c.name for c in r.residual.concentration] if r.residual else []
    tensors = [n for n in names if not n.startswith("layer ")]
    assert tensors and all(n in changed for n in tensors), names
    assert f"layer {CHANGED_LAYER}" in names
    assert f"model.layers.{CHANGED_LAYER}.mlp.experts." in r.reason


def test_perturbed_fused_experts_read_merge_plus_training(moe: dict[str, Path], tmp_path: Path) -> None:
    """A change inside one fused tensor is named per expert (the stored name would hide which expert)."""
    t = _stored(moe["fused"])
    name = f"model.layers.{CHANGED_LAYER}.mlp.experts.down_proj"
    g = torch.Generator().manual_seed(3)
    w = t[name].float()
    w[5] += 0.05 * w[5].abs().mean() * torch.randn(w[5].shape, generator=g)
    t[name] = w.to(torch.bfloat16)
    r = _detect(_rewrite(moe["fused"], tmp_path / "perturbed", t), moe)
    assert r.verdict == "merge_plus_training", r.reason
    assert r.residual is not None
    assert r.residual.concentration[0].name == f"model.layers.{CHANGED_LAYER}.mlp.experts.5.down_proj.weight"
    bad = [row.expert for row in r.experts if row.unexplained > 0]
    assert bad == [f"model.layers.{CHANGED_LAYER}.mlp.experts.5"]


def test_under_99_percent_coverage_is_never_pure_merge(moe: dict[str, Path], tmp_path: Path) -> None:
    """Experts the view cannot read (here: renamed) are left out; what was not compared counts against purity."""
    t = {n.replace("experts.gate_up_proj", "experts.gate_up_fused"): v for n, v in _stored(moe["fused"]).items()}
    r = _detect(_rewrite(moe["fused"], tmp_path / "renamed", t), moe)
    assert r.coverage is not None and r.coverage.fraction < 0.99
    assert r.verdict != "pure_merge"
    assert r.verdict == "merge_plus_training" and "weight elements were compared" in r.reason, r.reason
    assert abs(r.coefficients[0].value - FOUR_SEVENTHS) < 0.003


def test_frankenmoe_expert_map(moe: dict[str, Path], tmp_path: Path) -> None:
    """Experts copied whole from different parents (one of them to another index) are mapped to their sources."""
    a, b = _stored(moe["ft_a"]), _stored(moe["ft_b"])
    t = dict(a)
    for layer in range(4):
        for e in range(4, EXPERTS):
            src = 2 if e == 5 else e  # expert 5 comes from ft_b's expert 2
            for p in ("gate_proj", "up_proj", "down_proj"):
                t[f"model.layers.{layer}.mlp.experts.{e}.{p}.weight"] = b[
                    f"model.layers.{layer}.mlp.experts.{src}.{p}.weight"
                ]
    r = _detect(_rewrite(moe["ft_a"], tmp_path / "franken", t), moe)
    assert r.verdict != "derived_not_merge" or r.expert_map
    by_expert = {m.expert: m for m in r.expert_map}
    assert len(by_expert) == 4 * EXPERTS
    for layer in range(4):
        for e in range(EXPERTS):
            m = by_expert[f"model.layers.{layer}.mlp.experts.{e}"]
            assert m.identical and m.distance == 0.0
            assert m.candidate == str(moe["ft_a"] if e < 4 else moe["ft_b"])
            src = 2 if e == 5 else e
            assert m.candidate_expert == f"model.layers.{layer}.mlp.experts.{src}"


def _diff(a: Path, b: Path) -> tuple[int, dict]:
    res = CliRunner().invoke(cli, ["diff", str(a), str(b), "--json"])
    assert res.exit_code in (0, 1), res.output
    return res.exit_code, json.loads(res.output)


def test_diff_fused_vs_per_expert_is_identical_weights(moe: dict[str, Path], tmp_path: Path) -> None:
    code, d = _diff(moe["fused"], moe["per_expert"])
    assert d["same_weights"] is False  # the stored tensors differ by name and shape
    assert d["canonical_same_weights"] is True
    assert d["canonical_changed_tensors"] == [] and d["changed_experts"] == []
    assert any("fused" in n for n in d["notes"])
    assert any("identical weights in different layouts" in n for n in d["notes"])
    # Same weights and same other files: identical. mergekit rewrote config.json, so copy attest's alongside.
    same_files = copy_model(moe["fused"], tmp_path / "fused_same_files")
    for f in ("config.json", "mergekit_config.yml", "README.md"):
        (same_files / f).unlink(missing_ok=True)
        if (moe["per_expert"] / f).exists():
            (same_files / f).write_bytes((moe["per_expert"] / f).read_bytes())
    code, d = _diff(same_files, moe["per_expert"])
    assert d["canonical_same_weights"] is True
    assert code == (0 if not (d["changed_files"] or d["missing_files"] or d["added_files"]) else 1)


def test_diff_names_changed_experts(moe: dict[str, Path], tmp_path: Path) -> None:
    t = _stored(moe["fused"])
    name = "model.layers.1.mlp.experts.gate_up_proj"
    w = t[name].clone()
    w[3, MOE_INTER + 1, 0] += 1.0  # expert 3's up_proj
    t[name] = w
    code, d = _diff(moe["per_expert"], _rewrite(moe["fused"], tmp_path / "one_expert", t))
    assert code == 1
    assert d["canonical_same_weights"] is False
    assert d["changed_experts"] == ["model.layers.1.mlp.experts.3"]
    assert d["canonical_changed_tensors"] == ["model.layers.1.mlp.experts.3.up_proj.weight"]


def test_mixtral_block_sparse_moe_pairs_with_mergekit_fused_output(
    moe_models: Callable[[str], dict[str, Path]], mergekit_moe: Callable[[str, str], tuple[str, Path]]
) -> None:
    """Mixtral parents store `block_sparse_moe.experts.E.w1/w3/w2`; mergekit 0.1.5 writes `mlp.experts.gate_up_proj`
    and `mlp.experts.down_proj` (and `mlp.gate`): the canonical view pairs them expert by expert, nothing left out."""
    fam = moe_models("mixtral")
    _, merged = mergekit_moe("mixtral", "linear")
    assert any(".block_sparse_moe.experts.0.w1.weight" in n for n in _stored(fam["ft_a"]))
    assert "model.layers.0.mlp.experts.gate_up_proj" in _stored(merged)
    r = detect(merged, [fam["ft_a"], fam["ft_b"]], fam["base"])
    assert r.verdict == "pure_merge", r.reason
    assert r.coverage is not None and r.coverage.fraction == 1.0
    assert not any("not fitted" in n for n in r.notes), r.notes
    assert any("block_sparse_moe" in x for x in r.coverage.layouts)
    assert abs(r.coefficients[0].value - FOUR_SEVENTHS) < 0.003
    assert len(r.experts) == 2 * EXPERTS and all(row.unexplained == 0 for row in r.experts)
    fitted = {t.name for t in r.tensors}
    assert "model.layers.1.mlp.gate.weight" in fitted and "model.layers.1.mlp.experts.7.up_proj.weight" in fitted

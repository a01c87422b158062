"""Mixture-of-experts merges: real tiny Qwen3.5-MoE, Qwen3-MoE and Mixtral, merged by real mergekit 0.1.5 and by
attest, replayed bit for bit in mergekit's fused layout (config.json included) and in the per-expert layout."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from attest.errors import InputError
from attest.merge import parse_recipe, replay_options, run_merge
from attest.merge.moe_layout import recorded_layout
from attest.replay import TensorStatus, Verdict, replay
from tests.support.merge_recipes import MOE_METHODS, moe_recipe
from tests.support.mergekit_peer import differing_tensors
from tests.support.moe_builders import MOE_ARCHS

MoeModels = Callable[[str], dict[str, Path]]
MergekitMoe = Callable[[str, str], tuple[str, Path]]


def _names(folder: Path) -> dict[str, list[int]]:
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return {k: list(f.get_slice(k).get_shape()) for k in f.keys()}


def _parents(text: str) -> dict[str, str]:
    return {ref: ref for ref in parse_recipe(text).referenced_models()}


@pytest.mark.parametrize("arch", MOE_ARCHS)
def test_checkpoints_store_experts_per_expert_and_mergekit_writes_them_fused(
    arch: str, moe_models: MoeModels, mergekit_moe: MergekitMoe
) -> None:
    parent = _names(moe_models(arch)["ft_a"])
    _, merged = mergekit_moe(arch, "linear")
    out = _names(merged)
    moe = "block_sparse_moe" if arch == "mixtral" else "mlp"
    gate, up = ("w1", "w3") if arch == "mixtral" else ("gate_proj", "up_proj")
    inter, hidden = parent[f"model.layers.0.{moe}.experts.0.{gate}.weight"]
    assert parent[f"model.layers.0.{moe}.experts.7.{up}.weight"] == [inter, hidden]
    assert not any("gate_up_proj" in n for n in parent)
    assert out["model.layers.0.mlp.experts.gate_up_proj"] == [8, 2 * inter, hidden]
    assert out["model.layers.0.mlp.experts.down_proj"] == [8, hidden, inter]
    assert not any(".experts.0." in n or "block_sparse_moe" in n for n in out)
    assert "model.layers.0.mlp.gate.weight" in out  # Mixtral's router is renamed from block_sparse_moe.gate
    if arch == "qwen3_5_moe":
        assert "model.layers.0.linear_attn.in_proj_qkv.weight" in out
        assert "model.layers.3.self_attn.q_proj.weight" in out
        assert "model.layers.0.mlp.shared_expert_gate.weight" in out


@pytest.mark.parametrize("method", MOE_METHODS)
@pytest.mark.parametrize("arch", MOE_ARCHS)
def test_replay_reproduces_mergekit_moe_merges_bit_for_bit(arch: str, method: str, mergekit_moe: MergekitMoe) -> None:
    text, merged = mergekit_moe(arch, method)
    report = replay(parse_recipe(text), _parents(text), merged)
    assert report.verdict is Verdict.REPRODUCED, report.mismatched
    assert report.layout == "mergekit" and report.counts.exact == len(_names(merged)) + 0
    # Read per expert, the same merge is a different folder: names and (for TIES/SLERP) values.
    per_expert = replay(parse_recipe(text), _parents(text), merged, layout="per-expert")
    assert per_expert.verdict is Verdict.NOT_REPRODUCED
    assert {r.status for r in per_expert.tensors} >= {TensorStatus.MISSING, TensorStatus.UNEXPECTED}


@pytest.mark.parametrize("arch", MOE_ARCHS)
def test_attest_merge_writes_what_mergekit_writes(arch: str, mergekit_moe: MergekitMoe, tmp_path: Path) -> None:
    for method in ("ties", "slerp"):
        text, merged = mergekit_moe(arch, method)
        ours = run_merge(parse_recipe(text), _parents(text), tmp_path / method)
        assert ours.layout == "mergekit" and ours.engine_parameters()["layout"] == "mergekit"
        assert differing_tensors(ours.output, merged) == []
        assert (ours.output / "config.json").read_bytes() == (merged / "config.json").read_bytes()


def test_per_expert_layout_merges_each_stored_tensor(mergekit_moe: MergekitMoe, tmp_path: Path) -> None:
    """--layout per-expert keeps the parents' names; whole-tensor methods then see one expert at a time, so TIES and
    SLERP differ from mergekit's fused merge while linear (elementwise) gives the same values."""
    for method in ("linear", "ties"):
        text, merged = mergekit_moe("qwen3_moe", method)
        result = run_merge(parse_recipe(text), _parents(text), tmp_path / method, layout="per-expert")
        names = _names(result.output)
        assert "model.layers.1.mlp.experts.7.down_proj.weight" in names and result.layout == "per-expert"
        options = replay_options(result.engine_parameters())
        assert options["layout"] == "per-expert"
        same = replay(parse_recipe(text), _parents(text), result.output, **options)  # type: ignore[arg-type]
        assert same.verdict is Verdict.REPRODUCED
        fused = load_file(merged / "model.safetensors")["model.layers.1.mlp.experts.down_proj"]
        mine = load_file(result.output / "model.safetensors")
        stacked = torch.stack([mine[f"model.layers.1.mlp.experts.{e}.down_proj.weight"] for e in range(8)])
        assert torch.equal(stacked, fused) == (method == "linear")


def test_an_altered_expert_is_not_reproduced_and_named(mergekit_moe: MergekitMoe, tmp_path: Path) -> None:
    text, merged = mergekit_moe("qwen3_5_moe", "ties")
    cand = tmp_path / "cand"
    shutil.copytree(merged, cand)
    tensors = load_file(cand / "model.safetensors")
    name = "model.layers.2.mlp.experts.gate_up_proj"
    tensors[name] = tensors[name].clone()
    tensors[name][5, 3, 7] += 0.125  # one element of expert 5
    save_file(tensors, cand / "model.safetensors", metadata={"format": "pt"})
    report = replay(parse_recipe(text), _parents(text), cand)
    assert report.verdict is Verdict.NOT_REPRODUCED and report.mismatched == [name]
    (row,) = [r for r in report.tensors if r.name == name]
    assert row.differing_elements == 1


def test_config_json_is_rewritten_through_transformers_as_mergekit_does(moe_models: MoeModels, tmp_path: Path) -> None:
    """Parents with a config.json as a hub release has it (torch_dtype, rope_theta, num_experts, few defaults):
    mergekit writes transformers 5's form; attest writes the same bytes and replay compares against them."""
    pytest.importorskip("mergekit", reason="mergekit 0.1.5 is a test dependency")
    from tests.support.mergekit_peer import run_mergekit

    fam = moe_models("qwen3_moe")
    for name in ("ft_a", "ft_b"):
        shutil.copytree(fam[name], tmp_path / name)
        full = json.loads((fam[name] / "config.json").read_text())
        keep = ("architectures", "model_type", "hidden_size", "num_hidden_layers", "num_attention_heads")
        short = {k: full[k] for k in (*keep, "num_key_value_heads", "head_dim", "num_experts_per_tok")}
        short |= {k: full[k] for k in ("moe_intermediate_size", "intermediate_size", "vocab_size")}
        short |= {"num_experts": 8, "torch_dtype": "bfloat16", "rope_theta": 10000.0, "norm_topk_prob": True}
        short |= {"tie_word_embeddings": False, "max_position_embeddings": 128, "transformers_version": "4.51.0"}
        (tmp_path / name / "config.json").write_text(json.dumps(short))
    text = moe_recipe("linear", {"base": tmp_path / "ft_a", "ft_a": tmp_path / "ft_a", "ft_b": tmp_path / "ft_b"})
    merged = run_mergekit(text, tmp_path / "mergekit")
    written = json.loads((merged / "config.json").read_text())
    assert "num_experts" not in written and written["num_local_experts"] == 8 and written["dtype"] == "bfloat16"
    assert written["rope_parameters"]["rope_theta"] == 10000.0 and "rope_theta" not in written
    ours = run_merge(parse_recipe(text), _parents(text), tmp_path / "ours")
    assert (ours.output / "config.json").read_bytes() == (merged / "config.json").read_bytes()
    assert replay(parse_recipe(text), _parents(text), merged).verdict is Verdict.REPRODUCED
    # The parents' own form is not what mergekit writes: a candidate carrying it is caught.
    (ours.output / "config.json").write_text(json.dumps(json.loads((tmp_path / "ft_a" / "config.json").read_text())))
    report = replay(parse_recipe(text), _parents(text), ours.output)
    assert report.mismatched == ["config.json"]


def test_unverified_moe_architectures_are_refused_in_mergekit_layout(moe_models: MoeModels, tmp_path: Path) -> None:
    fam = moe_models("qwen3_moe")
    for name in ("ft_a", "ft_b"):
        shutil.copytree(fam[name], tmp_path / name)
        cfg = json.loads((tmp_path / name / "config.json").read_text())
        cfg |= {"architectures": ["OlmoeForCausalLM"], "model_type": "olmoe"}
        (tmp_path / name / "config.json").write_text(json.dumps(cfg))
    text = moe_recipe("linear", {"base": tmp_path / "ft_a", "ft_a": tmp_path / "ft_a", "ft_b": tmp_path / "ft_b"})
    with pytest.raises(InputError, match=r"OlmoeForCausalLM.*not verified.*Qwen3-MoE.*--layout per-expert"):
        run_merge(parse_recipe(text), _parents(text), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    result = run_merge(parse_recipe(text), _parents(text), tmp_path / "pe", layout="per-expert")
    assert replay(parse_recipe(text), _parents(text), result.output, layout="per-expert").verdict is Verdict.REPRODUCED


def test_recorded_versions_decide_a_mergekit_merges_layout() -> None:
    assert recorded_layout({"versions": {"mergekit": "0.1.5", "transformers": "5.24.0"}}) == "mergekit"
    assert "0.1.4" in recorded_layout({"versions": {"mergekit": "0.1.4", "transformers": "4.57.0"}})
    assert "transformers 4.57.0" in recorded_layout({"versions": {"mergekit": "0.1.5", "transformers": "4.57.0"}})
    assert "records no" in recorded_layout({})
    options = replay_options({"versions": {"mergekit": "0.1.5", "transformers": "5.24.0"}})
    assert options["layout"] == "mergekit" and options["transformers_version"] == "5.24.0"


def test_an_unknown_layout_refuses_moe_parents_only(
    mergekit_moe: MergekitMoe, merge_models: dict[str, Path], tmp_path: Path
) -> None:
    text, merged = mergekit_moe("mixtral", "linear")
    unknown = recorded_layout({"versions": {"mergekit": "0.1.4", "transformers": "5.24.0"}})
    with pytest.raises(InputError, match=r"cannot recompute this mixture-of-experts merge: .*mergekit 0\.1\.4"):
        replay(parse_recipe(text), _parents(text), merged, layout=unknown)
    dense = moe_recipe("linear", merge_models)
    out = run_merge(parse_recipe(dense), _parents(dense), tmp_path / "dense").output
    assert replay(parse_recipe(dense), _parents(dense), out, layout=unknown).verdict is Verdict.REPRODUCED


def test_cli_merge_and_replay_take_the_layout(mergekit_moe: MergekitMoe, tmp_path: Path) -> None:
    from tests.support.cli import run_attest

    text, merged = mergekit_moe("mixtral", "linear")
    cfg = tmp_path / "r.yml"
    cfg.write_text(text)
    code, out, err = run_attest(["merge", cfg, tmp_path / "pe", "--layout", "per-expert"])
    assert code == 0 and "experts per-expert" in out, out + err
    assert run_attest(["replay", cfg, merged])[0] == 0  # default: mergekit's layout
    code, out, _ = run_attest(["replay", cfg, merged, "--layout", "per-expert"])
    assert code == 1 and "block_sparse_moe.experts.0.w1.weight" in out
    assert run_attest(["replay", cfg, tmp_path / "pe", "--layout", "per-expert"])[0] == 0


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ("drop up_proj of expert 3", "expert 3 of model.layers.1.mlp has no up_proj"),
        ("renumber expert 7 as 9", "not numbered 0..7"),
        ("shrink expert 2", "differ in shape"),
        ("add a fused copy", "stored both fused and per expert"),
    ],
)
def test_malformed_expert_sets_are_bad_input(change: str, problem: str, moe_models: MoeModels, tmp_path: Path) -> None:
    fam = moe_models("qwen3_moe")
    for name in ("ft_a", "ft_b"):
        shutil.copytree(fam[name], tmp_path / name)
    tensors = load_file(tmp_path / "ft_b" / "model.safetensors")
    head = "model.layers.1.mlp.experts"
    if change.startswith("drop"):
        del tensors[f"{head}.3.up_proj.weight"]
    elif change.startswith("renumber"):
        for p in ("gate_proj", "up_proj", "down_proj"):
            tensors[f"{head}.9.{p}.weight"] = tensors.pop(f"{head}.7.{p}.weight")
    elif change.startswith("shrink"):
        tensors[f"{head}.2.gate_proj.weight"] = tensors[f"{head}.2.gate_proj.weight"][:-1].clone()
    else:
        tensors[f"{head}.down_proj"] = torch.zeros(8, 64, 32, dtype=torch.bfloat16)
    save_file(tensors, tmp_path / "ft_b" / "model.safetensors", metadata={"format": "pt"})
    text = moe_recipe("linear", {"base": tmp_path / "ft_a", "ft_a": tmp_path / "ft_a", "ft_b": tmp_path / "ft_b"})
    with pytest.raises(InputError, match=problem) as info:
        run_merge(parse_recipe(text), _parents(text), tmp_path / "out")
    assert str(tmp_path / "ft_b") in str(info.value) and not (tmp_path / "out").exists()

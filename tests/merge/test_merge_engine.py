"""The engine's own guarantees: output layout, atomic writes, refusals, sharding, keyed random masks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from attest.errors import InputError
from attest.merge import open_parents, parse_recipe, plan_merge, run_merge
from attest.merge.masks import KeyedMasks
from attest.replay import Verdict, replay
from tests.support.merge_recipes import recipes
from tests.support.mergekit_peer import differing_tensors, load_tensors


def _parents(text: str) -> dict[str, str]:
    return {ref: ref for ref in parse_recipe(text).referenced_models()}


def test_output_has_config_and_recipe_verbatim(merge_models: dict[str, Path], tmp_path: Path) -> None:
    text = recipes(merge_models)["linear"] + "# a comment kept verbatim\n"
    out = run_merge(parse_recipe(text), _parents(text), tmp_path / "m").output
    assert (out / "mergekit_config.yml").read_text() == text
    config = json.loads((out / "config.json").read_text())
    assert config["num_hidden_layers"] == 2 and config["model_type"] == "qwen2"
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".safetensors") == ["model.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_existing_output_is_refused_and_failures_leave_nothing(merge_models: dict[str, Path], tmp_path: Path) -> None:
    text = recipes(merge_models)["linear"]
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    with pytest.raises(InputError, match="not empty"):
        run_merge(parse_recipe(text), _parents(text), tmp_path / "busy")
    broken = text.replace("weight: 0.75", "wait: 0.75")
    with pytest.raises(InputError, match="missing required parameter 'weight'"):
        run_merge(parse_recipe(broken), _parents(broken), tmp_path / "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"]


def test_different_vocabularies_are_refused(merge_models: dict[str, Path], tmp_path: Path) -> None:
    other = shutil.copytree(merge_models["ft_b"], tmp_path / "other")
    config = json.loads((other / "config.json").read_text())
    config["vocab_size"] = 512
    (other / "config.json").write_text(json.dumps(config))
    text = recipes(merge_models)["linear"].replace(str(merge_models["ft_b"]), str(other))
    with pytest.raises(InputError, match="vocabularies differ"):
        run_merge(parse_recipe(text), _parents(text), tmp_path / "out")


def test_sharded_output_has_the_same_tensors(merge_models: dict[str, Path], tmp_path: Path) -> None:
    text = recipes(merge_models)["linear"]
    one = run_merge(parse_recipe(text), _parents(text), tmp_path / "one").output
    many = run_merge(parse_recipe(text), _parents(text), tmp_path / "many", max_shard_bytes=40_000).output
    shards = sorted(p.name for p in many.glob("*.safetensors"))
    assert len(shards) > 1 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    index = json.loads((many / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(load_tensors(one))
    assert differing_tensors(one, many) == []


def test_keyed_masks_depend_only_on_seed_name_and_position() -> None:
    probs = torch.full((1000,), 0.5, dtype=torch.bfloat16)
    a = KeyedMasks(7).bernoulli(probs, "w", 0)
    KeyedMasks(7).bernoulli(probs, "other", 0)  # drawing something else first changes nothing
    assert torch.equal(a, KeyedMasks(7).bernoulli(probs, "w", 0))
    assert not torch.equal(a, KeyedMasks(7).bernoulli(probs, "w", 1))
    assert not torch.equal(a, KeyedMasks(8).bernoulli(probs, "w", 0))
    assert 400 < int(a.sum()) < 600


@pytest.mark.parametrize("name", ["dare_ties", "dare_linear", "della", "della_linear"])
def test_randomized_merge_with_seed_replays_exactly(name: str, merge_models: dict[str, Path], tmp_path: Path) -> None:
    text = recipes(merge_models)["dare_ties"].replace("dare_ties", name)
    recipe = parse_recipe(text)
    with pytest.raises(InputError, match="seed"):
        run_merge(recipe, _parents(text), tmp_path / "noseed")
    result = run_merge(recipe, _parents(text), tmp_path / "out", seed=1234)
    assert result.seed == 1234
    assert replay(recipe, _parents(text), result.output, seed=1234).verdict is Verdict.REPRODUCED
    assert replay(recipe, _parents(text), result.output, seed=1235).verdict is Verdict.NOT_REPRODUCED


def test_cuda_is_refused_clearly_without_a_gpu(merge_models: dict[str, Path], tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    text = recipes(merge_models)["linear"]
    with pytest.raises(InputError, match="no CUDA device"):
        run_merge(parse_recipe(text), _parents(text), tmp_path / "gpu", device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ["linear", "task_arithmetic", "passthrough", "dare_ties"])
def test_cuda_replay_matches_cpu_merge(name: str, merge_models: dict[str, Path], tmp_path: Path) -> None:
    text = recipes(merge_models)[name]
    recipe = parse_recipe(text)
    out = run_merge(recipe, _parents(text), tmp_path / "cpu", seed=5).output
    report = replay(recipe, _parents(text), out, device="cuda", seed=5)
    assert report.verdict in (Verdict.REPRODUCED, Verdict.REPRODUCED_WITHIN_TOLERANCE), report.mismatched


def _stable_reference(t: torch.Tensor, start: int, stop: int, descending: bool) -> torch.Tensor:
    order = torch.argsort(t.abs().reshape(-1).float(), descending=descending, stable=True)
    mask = torch.zeros(t.numel(), dtype=t.dtype)
    mask[order[start:stop]] = 1
    return t * mask.reshape(t.shape)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("n", [7, 1000, 200_000])
def test_stable_tie_order_equals_a_stable_sort(dtype: torch.dtype, n: int) -> None:
    from attest.merge.methods.sparsify import magnitude, magnitude_outliers

    g = torch.Generator().manual_seed(n)
    x = (torch.randn(n, generator=g) * 0.01).to(dtype)
    x[::3] = 0  # many ties, split by every cutoff
    x[1::5] = x[1]
    for density in (0.1, 0.5, 0.9):
        k = max(1, int(density * n))
        assert torch.equal(magnitude(x, density, False, "stable"), _stable_reference(x, 0, k, True))
        bottom = max(0, n - int(density * n) - int(0.05 * n))
        want = _stable_reference(x, bottom, bottom + int(density * n), False)
        assert torch.equal(magnitude_outliers(x, density, 0.05, False, "stable"), want)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("n", [1000, 200_000])
def test_mergekit_tie_order_on_cuda_is_the_cpu_sort(dtype: torch.dtype, n: int) -> None:
    """Regression: on CUDA the mergekit tie order sorted on the GPU, whose sort keeps other equals at the cutoff (an
    H100 replay of real mergekit TIES merges of tiny MoE models: 2,197-5,334 elements, up to 30,246 ulps off)."""
    from attest.merge.methods.sparsify import magnitude, magnitude_outliers, rank_scaled_drop

    g = torch.Generator().manual_seed(n)
    x = (torch.randn(n, generator=g) * 0.01).to(dtype)
    x[::3] = 0
    x[1::5] = x[1]
    for density in (0.1, 0.5, 0.9):
        on_cpu = magnitude(x, density, False, "mergekit")
        assert magnitude(x.cuda(), density, False, "mergekit").device.type == "cuda"
        assert torch.equal(magnitude(x.cuda(), density, False, "mergekit").cpu(), on_cpu)
        outliers = magnitude_outliers(x.cuda(), density, 0.05, False, "mergekit").cpu()
        assert torch.equal(outliers, magnitude_outliers(x, density, 0.05, False, "mergekit"))
        # DELLA's keep probabilities follow the magnitude ranks: equal magnitudes ranked by the CPU sort too.
        della = rank_scaled_drop(x.reshape(-1, 100).cuda(), density, 0.05, False, KeyedMasks(3), "w", 0)
        assert torch.equal(
            della.cpu(), rank_scaled_drop(x.reshape(-1, 100), density, 0.05, False, KeyedMasks(3), "w", 0)
        )


def test_stable_tie_order_merge_replays(merge_models: dict[str, Path], tmp_path: Path) -> None:
    text = recipes(merge_models)["ties"]
    recipe = parse_recipe(text)
    result = run_merge(recipe, _parents(text), tmp_path / "s", tie_order="stable")
    assert result.tie_order == "stable"
    assert replay(recipe, _parents(text), result.output, tie_order="stable").verdict is Verdict.REPRODUCED


def test_engine_parameters_round_trip_to_replay_options(merge_models: dict[str, Path], tmp_path: Path) -> None:
    from attest.merge import replay_options

    text = recipes(merge_models)["dare_ties"]
    recipe = parse_recipe(text)
    result = run_merge(recipe, _parents(text), tmp_path / "out", seed=9)
    options = replay_options(json.loads(json.dumps(result.engine_parameters())))
    assert options == {
        "seed": 9,
        "tie_order": "mergekit",
        "mask_generator": "attest",
        "layout": "per-expert",
        "transformers_version": None,
    }
    assert replay(recipe, _parents(text), result.output, **options).verdict is Verdict.REPRODUCED  # type: ignore[arg-type]
    assert replay_options({"seed": 42}) == {
        "seed": 42,
        "tie_order": "mergekit",
        "mask_generator": "mergekit",
        "layout": replay_options({})["layout"],  # unknown without versions: refused for MoE parents only
        "transformers_version": None,
    }


def test_merge_cli_json(merge_models: dict[str, Path], tmp_path: Path) -> None:
    from attest.signing import generate_key
    from tests.support.cli import run_attest
    from tests.support.json_output import parse_output

    config = tmp_path / "merge.yml"
    config.write_text(recipes(merge_models)["linear"])
    generate_key(tmp_path / "k.key")
    code, out, err = run_attest(["merge", config, tmp_path / "m", "--key", tmp_path / "k.key", "--json"])
    assert code == 0, err
    doc = parse_output(out, "merge-output.schema.json")
    assert doc["output"] == str(tmp_path / "m") and doc["method"] == "linear" and doc["tensors"] > 0
    assert set(doc["parents"]) == set(parse_recipe(config.read_text()).referenced_models())
    from attest.lineage.store import bundle_path, load_bundle

    assert doc["bundle_path"] == str(bundle_path(tmp_path / "m"))
    import hashlib

    assert doc["statement_sha256"] == hashlib.sha256(load_bundle(tmp_path / "m")[0].payload_bytes).hexdigest()


def test_plans_share_equal_parameters_and_keep_distinct_ones(merge_models: dict[str, Path]) -> None:
    """Planned tensors hold one object per distinct parameter value (10^5 tensors of an MoE in the per-expert
    layout resolve to a handful), never one value standing for another that compares equal (-0.0 and 0.0)."""
    a, b, base = merge_models["ft_a"], merge_models["ft_b"], merge_models["base"]
    text = (
        f"merge_method: linear\nmodels:\n  - model: {a}\n    parameters: {{weight: [1.0, 0.5]}}\n"
        f"  - model: {b}\n    parameters: {{weight: -0.0}}\n  - model: {base}\n    parameters: {{weight: 0.0}}\n"
        "parameters: {normalize: false}\n"
    )
    recipe = parse_recipe(text)
    with open_parents(recipe, _parents(text)) as ckpts:
        plan = plan_merge(recipe, ckpts)
    layer = [tp for tp in plan.tensors if ".layers." in tp.name]
    weights = {json.dumps([p["weight"] for p in tp.per_input]) for tp in layer}
    assert len({id(tp.per_input) for tp in layer}) == len(weights) == 2  # the gradient's two layers
    assert len({id(tp.shared) for tp in plan.tensors}) == len({id(tp.models) for tp in plan.tensors}) == 1
    assert all([str(p["weight"]) for p in tp.per_input[1:]] == ["-0.0", "0.0"] for tp in plan.tensors)

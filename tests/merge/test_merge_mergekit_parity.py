"""Our engine against mergekit 0.1.5 itself, on real tiny checkpoints: bit-exact on the CPU, method by method."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from attest.merge import parse_recipe, run_merge
from attest.replay import Verdict, replay
from tests.support.merge_recipes import DETERMINISTIC, recipes
from tests.support.mergekit_peer import differing_tensors, load_tensors

pytestmark = pytest.mark.filterwarnings("ignore")


def _parents(text: str) -> dict[str, str]:
    return {ref: ref for ref in parse_recipe(text).referenced_models()}


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_merge_is_bit_exact_with_mergekit(
    name: str, merge_models: dict[str, Path], mergekit_merged: Callable[[str], Path], tmp_path: Path
) -> None:
    text = recipes(merge_models)[name]
    ours = run_merge(parse_recipe(text), _parents(text), tmp_path / "out")
    theirs = mergekit_merged(name)
    assert differing_tensors(theirs, ours.output) == []
    assert len(load_tensors(ours.output)) == ours.tensor_count


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_replay_of_mergekit_output_is_exact(
    name: str, merge_models: dict[str, Path], mergekit_merged: Callable[[str], Path]
) -> None:
    text = recipes(merge_models)[name]
    report = replay(parse_recipe(text), _parents(text), mergekit_merged(name))
    assert report.verdict is Verdict.REPRODUCED, report.mismatched
    assert report.counts.mismatch == 0 and report.counts.exact == len(report.tensors) > 0


def test_passthrough_frankenmerge_renumbers_layers(
    merge_models: dict[str, Path], mergekit_merged: Callable[[str], Path], tmp_path: Path
) -> None:
    import json

    text = recipes(merge_models)["passthrough"]
    out = run_merge(parse_recipe(text), _parents(text), tmp_path / "frank").output
    config = json.loads((out / "config.json").read_text())
    assert config["num_hidden_layers"] == 7
    assert len(config["layer_types"]) == 7
    tensors = load_tensors(out)
    assert max(int(n.split(".")[2]) for n in tensors if n.startswith("model.layers.")) == 6
    ft4 = load_tensors(merge_models["ft4"])
    # Output layer 3 is layer 1 of the fine-tune.
    assert tensors["model.layers.3.mlp.up_proj.weight"].equal(ft4["model.layers.1.mlp.up_proj.weight"])


def test_dare_ties_with_mergekit_seed_replays_with_mergekit_masks(
    merge_models: dict[str, Path], mergekit_merged: Callable[[str], Path]
) -> None:
    """mergekit --random-seed 42 on the CPU: masks come from one global generator in schedule order. Replaying with
    the same generator and order reproduces every tensor; attest's keyed masks (a different stream) do not."""
    text = recipes(merge_models)["dare_ties"]
    recipe, parents, out = parse_recipe(text), _parents(text), mergekit_merged("dare_ties")
    same = replay(recipe, parents, out, seed=42, mask_generator="mergekit")
    assert same.verdict is Verdict.REPRODUCED
    other_seed = replay(recipe, parents, out, seed=43, mask_generator="mergekit")
    assert other_seed.verdict is Verdict.NOT_REPRODUCED
    keyed = replay(recipe, parents, out, seed=42, mask_generator="attest")
    assert keyed.verdict is Verdict.NOT_REPRODUCED
    unknown = replay(recipe, parents, out)
    assert unknown.verdict is Verdict.CANNOT_REPLAY
    assert "seed" in unknown.notes[-1]


@pytest.mark.parametrize("name", ["ties", "breadcrumbs_ties"])
def test_parallel_sparsification_is_still_bit_exact(
    name: str,
    merge_models: dict[str, Path],
    mergekit_merged: Callable[[str], Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Large tensors sparsify their task vectors on several threads; force that path on the tiny models."""
    from attest.merge.methods import task_arithmetic_core

    monkeypatch.setattr(task_arithmetic_core, "PARALLEL_MIN_ELEMENTS", 0)
    text = recipes(merge_models)[name]
    ours = run_merge(parse_recipe(text), _parents(text), tmp_path / "out")
    assert differing_tensors(mergekit_merged(name), ours.output) == []


@pytest.mark.parametrize("name", ["linear", "task_arithmetic", "passthrough"])
def test_sliced_elementwise_path_is_still_bit_exact(
    name: str,
    merge_models: dict[str, Path],
    mergekit_merged: Callable[[str], Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Large tensors of elementwise methods are computed in flat slices; force that path on the tiny models."""
    from attest.merge import engine

    monkeypatch.setattr(engine, "SLICE_ELEMENTS", 1000)
    text = recipes(merge_models)[name]
    ours = run_merge(parse_recipe(text), _parents(text), tmp_path / "out")
    assert differing_tensors(mergekit_merged(name), ours.output) == []


@pytest.mark.parametrize("name", ["ties", "breadcrumbs_ties", "task_arithmetic"])
def test_row_sliced_consensus_is_still_bit_exact(
    name: str,
    merge_models: dict[str, Path],
    mergekit_merged: Callable[[str], Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After sparsification, task-vector merges combine a block of rows at a time; force that on tiny tensors."""
    from attest.merge.methods import task_arithmetic_core

    monkeypatch.setattr(task_arithmetic_core, "COMBINE_SLICE_ELEMENTS", 100)
    text = recipes(merge_models)[name]
    ours = run_merge(parse_recipe(text), _parents(text), tmp_path / "out")
    assert differing_tensors(mergekit_merged(name), ours.output) == []


def test_row_sliced_dare_still_replays_mergekit(
    merge_models: dict[str, Path], mergekit_merged: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from attest.merge.methods import task_arithmetic_core

    monkeypatch.setattr(task_arithmetic_core, "COMBINE_SLICE_ELEMENTS", 100)
    text = recipes(merge_models)["dare_ties"]
    report = replay(
        parse_recipe(text), _parents(text), mergekit_merged("dare_ties"), seed=42, mask_generator="mergekit"
    )
    assert report.verdict is Verdict.REPRODUCED

"""Replay says no, and names the tensors, when the recipe or the parents are not what made the weights."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from attest.cli import main
from attest.merge import parse_recipe
from attest.replay import TensorStatus, Verdict, replay
from attest.replay.compare import difference
from tests.support.merge_recipes import recipes

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _parents(text: str) -> dict[str, str]:
    return {ref: ref for ref in parse_recipe(text).referenced_models()}


def test_altered_weight_is_a_mismatch_naming_tensors(
    merge_models: dict[str, Path], mergekit_merged: Callable[[str], Path]
) -> None:
    text = recipes(merge_models)["linear"].replace("weight: 0.75", "weight: 0.8")
    report = replay(parse_recipe(text), _parents(text), mergekit_merged("linear"))
    assert report.verdict is Verdict.NOT_REPRODUCED
    assert "model.embed_tokens.weight" in report.mismatched and "lm_head.weight" in report.mismatched
    row = next(r for r in report.tensors if r.name == "model.embed_tokens.weight")
    assert row.status is TensorStatus.MISMATCH and row.differing_elements > 0 and row.max_ulps
    assert "NOT" in report.summary


def test_swapped_parent_is_a_mismatch(merge_models: dict[str, Path], mergekit_merged: Callable[[str], Path]) -> None:
    text = recipes(merge_models)["ties"]
    parents = _parents(text)
    parents[str(merge_models["ft_b"])] = str(merge_models["base"])  # ft_b's folder now holds the base
    report = replay(parse_recipe(text), parents, mergekit_merged("ties"))
    assert report.verdict is Verdict.NOT_REPRODUCED
    assert report.counts.mismatch > 0 and all(r.status is not TensorStatus.MISSING for r in report.tensors)


def test_missing_and_unexpected_tensors(merge_models: dict[str, Path], tmp_path: Path) -> None:
    text = recipes(merge_models)["passthrough"]
    recipe = parse_recipe(text)
    # The 4-layer base itself is not the 7-layer frankenmerge: layers 4-6 are missing.
    report = replay(recipe, _parents(text), merge_models["base4"])
    statuses = {r.status for r in report.tensors}
    assert TensorStatus.MISSING in statuses and report.verdict is Verdict.NOT_REPRODUCED


def test_ulp_distance_counts_elements() -> None:
    a = torch.tensor([1.0, -2.0, 0.0, 3.0], dtype=torch.bfloat16)
    b = a.clone()
    b.view(torch.int16)[0] += 1  # next bf16 above 1.0
    b.view(torch.int16)[1] += 2  # two ulps further from zero
    b[2] = -0.0  # -0 vs +0: zero ulps apart but different bytes
    d = difference(a, b)
    assert d.differing_elements == 3 and d.max_ulps == 2
    c = a.clone()
    c[3] = float("nan")
    assert difference(a, c).max_ulps is None


def test_cli_replay_exit_codes_and_json(
    merge_models: dict[str, Path],
    mergekit_merged: Callable[[str], Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    good = tmp_path / "good.yml"
    good.write_text(recipes(merge_models)["linear"])
    bad = tmp_path / "bad.yml"
    bad.write_text(recipes(merge_models)["linear"].replace("0.75", "0.8"))
    with pytest.raises(SystemExit) as ok:
        main(["replay", str(good), str(mergekit_merged("linear")), "--json"])
    assert ok.value.code == 0
    assert json.loads(capsys.readouterr().out)["verdict"] == "reproduced"
    with pytest.raises(SystemExit) as no:
        main(["replay", str(bad), str(mergekit_merged("linear"))])
    assert no.value.code == 1
    assert "NOT what the recipe produces" in capsys.readouterr().out
    with pytest.raises(SystemExit) as usage:
        main(["replay", str(good), str(tmp_path / "absent")])
    assert usage.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such folder" in err


def test_cli_merge_writes_a_model(merge_models: dict[str, Path], tmp_path: Path) -> None:
    cfg = tmp_path / "m.yml"
    cfg.write_text(recipes(merge_models)["ties"])
    with pytest.raises(SystemExit) as done:
        main(["merge", str(cfg), str(tmp_path / "out")])
    assert done.value.code == 0
    assert (tmp_path / "out" / "model.safetensors").is_file()

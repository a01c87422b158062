"""Recipe parsing, reported ignored keys, parameter precedence, filters and gradients."""

from __future__ import annotations

from pathlib import Path

import pytest

from attest.errors import InputError
from attest.merge.parameters import ParameterSpec, Scope, evaluate_setting, resolve
from attest.statements.recipe import parse_recipe

FLOAT = ParameterSpec("t", float, Scope.SHARED).validate


def test_unknown_keys_are_reported() -> None:
    recipe = parse_recipe("""
merge_method: ties
base_model: b
models:
  - model: a
    parameters: {weight: 1, densty: 0.5}
    weigth: 2
  - model: b
densty: 0.3
""")
    assert recipe.ignored_keys() == ["densty", "models[0].weigth"]
    assert ("models[0].parameters", "densty") in recipe.parameter_names()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("merge_method: linear", "exactly one of"),
        ("- a\n- b", "YAML mapping"),
        (
            "merge_method: linear\nmodels: [{model: a}]\nslices: [{sources: [{model: a, layer_range: [0, 1]}]}]",
            "exactly one of",
        ),
        ("merge_method: linear\nmodels: [{model: a+lora}]", "LoRA"),
        ("merge_method: linear\nmodels: [{model: a}]\ndtype: int4", "unsupported dtype"),
        ("merge_method: [", "not valid YAML"),
    ],
)
def test_bad_recipes_are_refused_in_one_line(text: str, problem: str) -> None:
    with pytest.raises(InputError, match=problem) as info:
        parse_recipe(text, "r.yml")
    assert "\n" not in str(info.value) and str(info.value).startswith("r.yml: ")


def test_gradient_interpolates_like_mergekit() -> None:
    values = [0, 0.5, 0.3, 0.7, 1]
    assert evaluate_setting("x", values, 0.0, FLOAT) == 0.0
    assert evaluate_setting("x", values, 1.0, FLOAT) == 1.0
    t = 1 / 3
    scaled = t * 4
    frac = scaled - int(scaled)
    assert evaluate_setting("x", values, t, FLOAT) == (1 - frac) * 0.5 + frac * 0.3


def test_first_matching_filter_wins_and_precedence_is_source_slice_global() -> None:
    setting = [{"filter": "mlp", "value": 0.1}, {"filter": "self_attn", "value": [0.0, 1.0]}, {"value": 0.9}]
    assert evaluate_setting("model.layers.0.mlp.up_proj.weight", setting, 0.5, FLOAT) == 0.1
    assert evaluate_setting("model.layers.0.self_attn.q_proj.weight", setting, 0.5, FLOAT) == 0.5
    assert evaluate_setting("model.norm.weight", setting, 0.5, FLOAT) == 0.9
    spec = ParameterSpec("weight", float, Scope.INPUT)
    assert resolve(spec, [None, {"weight": 2}, {"weight": 3}], "x", 0) == 2.0
    assert resolve(spec, [{"weight": [{"filter": "nope", "value": 1}]}, {"weight": 3}], "x", 0) == 3.0
    with pytest.raises(InputError, match="missing required parameter"):
        resolve(spec, [None], "x", 0)


def test_one_recipe_carries_text_digest_and_parsed_form(tmp_path: Path) -> None:
    import hashlib

    from attest.statements.recipe import load_recipe

    raw = b"merge_method: linear\r\nmodels:\r\n  - model: a\r\n    parameters: {weight: 1.0}\r\n  - model: b\r\n"
    path = tmp_path / "r.yml"
    path.write_bytes(raw)
    for recording in (False, True):
        recipe = load_recipe(path, recording=recording)
        assert recipe.text == raw.decode() and recipe.sha256 == hashlib.sha256(raw).hexdigest()
        assert recipe.referenced_models() == recipe.model_references() == ["a", "b"]
        assert recipe.external_parameters() == {
            "mergekit_config": {"yaml": raw.decode(), "sha256": recipe.sha256, "parsed": recipe.parsed}
        }
    assert recipe.parsed["models"][0] == {"model": "a", "parameters": {"weight": 1.0}}
    assert recipe.mergekit_config_yml() == raw.decode().replace("\r\n", "\n")  # what mergekit writes (text mode)


def test_recording_accepts_what_mergekit_runs_but_attest_does_not() -> None:
    text = "merge_method: linear\nmodels: [{model: a+lora, parameters: {weight: 1}}, {model: b}]\ndtype: int8\n"
    with pytest.raises(InputError, match="unsupported dtype"):
        parse_recipe(text, "r.yml")
    recorded = parse_recipe(text, "r.yml", recording=True)
    assert recorded.dtype == "int8" and recorded.model_references() == ["a+lora", "b"]
    with pytest.raises(InputError, match="not a valid mergekit config"):
        parse_recipe("- a\n", "r.yml", recording=True)
    with pytest.raises(InputError, match="JSON cannot carry"):
        parse_recipe(
            "merge_method: linear\nmodels: [{model: a}]\nparameters: {weight: .nan}\n", "r.yml", recording=True
        )

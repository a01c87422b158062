"""Review findings on the merge engine and replay: hostile recipes, configs and candidates are bad input (exit 2) or
a `not_reproduced` verdict, never an internal error or a false `reproduced`."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from attest.checkpoint.reader import Checkpoint
from attest.cli import main
from attest.errors import InputError
from attest.lineage.locator import Locator
from attest.merge import parse_recipe, replay_options, run_merge
from attest.merge.parameters import ParameterSpec, Scope, evaluate_setting
from attest.replay import TensorStatus, Verdict, replay
from tests.support.merge_recipes import recipes

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

INT64_MAX = (1 << 63) - 1


def _parents(text: str) -> dict[str, str]:
    return {ref: ref for ref in parse_recipe(text).referenced_models()}


def _exit_code(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return int(exc.value.code or 0)


@pytest.fixture(scope="module")
def ties_merge(merge_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """(recipe text, attest's own merge of it): the candidate the replay tests alter."""
    text = recipes(merge_models)["ties"]
    out = run_merge(parse_recipe(text), _parents(text), tmp_path_factory.mktemp("hard") / "ties").output
    return text, out


def _candidate(ties_merge: tuple[str, Path], tmp_path: Path) -> tuple[str, Path]:
    text, out = ties_merge
    return text, Path(shutil.copytree(out, tmp_path / "cand"))


# Finding 3: replay compares config.json and reports extra weight files.


def test_untouched_candidate_is_reproduced(ties_merge: tuple[str, Path]) -> None:
    text, out = ties_merge
    report = replay(parse_recipe(text), _parents(text), out)
    assert report.verdict is Verdict.REPRODUCED, report.mismatched
    assert all(r.name != "config.json" for r in report.tensors)


def test_rewritten_config_is_not_reproduced(ties_merge: tuple[str, Path], tmp_path: Path) -> None:
    text, cand = _candidate(ties_merge, tmp_path)
    config = json.loads((cand / "config.json").read_text())
    config |= {"num_hidden_layers": 7, "vocab_size": 12345, "model_type": "llama", "architectures": ["Evil"]}
    (cand / "config.json").write_text(json.dumps(config))
    report = replay(parse_recipe(text), _parents(text), cand)
    assert report.verdict is Verdict.NOT_REPRODUCED
    assert report.mismatched == ["config.json"]
    row = next(r for r in report.tensors if r.name == "config.json")
    assert row.status is TensorStatus.MISMATCH and row.detail is not None
    for key in ("architectures", "model_type", "num_hidden_layers", "vocab_size"):
        assert key in row.detail


def test_added_and_removed_config_keys_are_named(ties_merge: tuple[str, Path], tmp_path: Path) -> None:
    text, cand = _candidate(ties_merge, tmp_path)
    config = json.loads((cand / "config.json").read_text())
    config.pop("hidden_act")
    config["auto_map"] = {"AutoModel": "evil.Model"}  # would make a loader run code from the folder
    config["transformers_version"] = "0.0.1"  # rewritten on every save: not compared
    (cand / "config.json").write_text(json.dumps(config))
    report = replay(parse_recipe(text), _parents(text), cand)
    row = next(r for r in report.tensors if r.name == "config.json")
    assert row.detail is not None and "auto_map" in row.detail and "hidden_act" in row.detail
    assert "transformers_version" not in row.detail


def test_config_values_compare_with_their_json_type(ties_merge: tuple[str, Path], tmp_path: Path) -> None:
    text, cand = _candidate(ties_merge, tmp_path)
    config = json.loads((cand / "config.json").read_text())
    config["num_hidden_layers"] = float(config["num_hidden_layers"])  # 2.0 == 2 in Python, not in a loader
    (cand / "config.json").write_text(json.dumps(config))
    assert replay(parse_recipe(text), _parents(text), cand).mismatched == ["config.json"]


def test_candidate_without_config_is_compared_on_tensors(ties_merge: tuple[str, Path], tmp_path: Path) -> None:
    text, cand = _candidate(ties_merge, tmp_path)
    (cand / "config.json").unlink()
    report = replay(parse_recipe(text), _parents(text), cand)
    assert report.verdict is Verdict.REPRODUCED
    assert any("no config.json" in n for n in report.notes)


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt", "sub/model.safetensors", "model.gguf"])
def test_extra_weight_file_is_not_reproduced(name: str, ties_merge: tuple[str, Path], tmp_path: Path) -> None:
    text, cand = _candidate(ties_merge, tmp_path)
    (cand / name).parent.mkdir(parents=True, exist_ok=True)
    if name.endswith(".safetensors"):
        save_file({"x": torch.zeros(2)}, str(cand / name))
    else:
        (cand / name).write_bytes(b"\x80\x04 other weights")
    report = replay(parse_recipe(text), _parents(text), cand)
    assert report.verdict is Verdict.NOT_REPRODUCED
    assert report.mismatched == [name]
    assert next(r for r in report.tensors if r.name == name).status is TensorStatus.UNEXPECTED


def test_cli_replay_prints_config_row(
    ties_merge: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, cand = _candidate(ties_merge, tmp_path)
    config = json.loads((cand / "config.json").read_text())
    config["model_type"] = "llama"
    (cand / "config.json").write_text(json.dumps(config))
    recipe = tmp_path / "r.yml"
    recipe.write_text(text)
    assert _exit_code(["replay", str(recipe), str(cand)]) == 1
    out = capsys.readouterr().out
    assert "config.json" in out and "model_type" in out


def test_mergekit_output_config_is_reproduced(
    merge_models: dict[str, Path], mergekit_merged: Callable[[str], Path]
) -> None:
    text = recipes(merge_models)["breadcrumbs"]
    report = replay(parse_recipe(text), _parents(text), mergekit_merged("breadcrumbs"))
    assert report.verdict is Verdict.REPRODUCED, report.mismatched


# Finding 4: at tolerance 0 any byte difference is a mismatch.


def _flip_a_zero(cand: Path) -> str:
    sd = load_file(cand / "model.safetensors")
    for name, t in sd.items():
        if t.is_floating_point():
            flat = t.clone().reshape(-1)
            zeros = ((flat == 0) & ~torch.signbit(flat)).nonzero()
            if len(zeros):
                flat[zeros[0]] = -0.0
                sd[name] = flat.reshape(t.shape)
                save_file(sd, str(cand / "model.safetensors"), metadata={"format": "pt"})
                return name
    raise AssertionError("no +0 in the merge")


def test_negative_zero_is_a_mismatch_at_tolerance_zero(ties_merge: tuple[str, Path], tmp_path: Path) -> None:
    text, cand = _candidate(ties_merge, tmp_path)
    name = _flip_a_zero(cand)
    report = replay(parse_recipe(text), _parents(text), cand)
    assert report.verdict is Verdict.NOT_REPRODUCED and report.mismatched == [name]
    row = next(r for r in report.tensors if r.name == name)
    assert row.status is TensorStatus.MISMATCH and row.differing_elements == 1 and row.max_ulps == 0
    # With an ulp tolerance, a zero of the other sign is 0 ulps away: within it, and counted.
    loose = replay(parse_recipe(text), _parents(text), cand, tolerance_ulps=1)
    assert loose.verdict is Verdict.REPRODUCED_WITHIN_TOLERANCE


# Finding 5: two layer stacks sharing suffixes are refused.


def _two_stack_model(folder: Path, seed: int) -> Path:
    folder.mkdir(parents=True)
    g = torch.Generator().manual_seed(seed)
    sd = {
        "model.embed_tokens.weight": torch.randn(4, 4, generator=g),
        "model.layers.0.mlp.weight": torch.randn(4, 4, generator=g),
        "vision.layers.0.mlp.weight": torch.randn(4, 4, generator=g),
    }
    save_file(sd, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps({"num_hidden_layers": 1, "vocab_size": 4}))
    return folder


def test_two_layer_stacks_are_refused(tmp_path: Path) -> None:
    a, b = _two_stack_model(tmp_path / "a", 0), _two_stack_model(tmp_path / "b", 1)
    text = f"merge_method: linear\nmodels:\n  - {{model: {a}, parameters: {{weight: 0.5}}}}\n" + (
        f"  - {{model: {b}, parameters: {{weight: 0.5}}}}\n"
    )
    with pytest.raises(InputError, match=r"model\.layers\.N, vision\.layers\.N"):
        run_merge(parse_recipe(text), _parents(text), tmp_path / "out")
    assert not (tmp_path / "out").exists()


# Finding 6: hostile parameter values and seeds.


def _with_params(merge_models: dict[str, Path], method: str, params_a: str) -> str:
    return (
        f"merge_method: {method}\nbase_model: {merge_models['base']}\nmodels:\n"
        f"  - {{model: {merge_models['ft_a']}, parameters: {{{params_a}}}}}\n"
        f"  - {{model: {merge_models['ft_b']}, parameters: {{weight: 0.5, density: 0.5}}}}\n"
    )


@pytest.mark.parametrize(
    ("method", "params", "problem"),
    [
        ("ties", "weight: 0.5, density: .nan", "density: nan is not a finite number"),
        ("ties", "weight: .inf, density: 0.5", "weight: inf is not a finite number"),
        ("ties", "weight: 0.5, density: 1.5", r"density: 1.5 is outside \[0.0, 1.0\]"),
        ("dare_ties", "weight: 0.5, density: -0.5", r"density: -0.5 is outside \[0.0, 1.0\]"),
        ("dare_ties", "weight: 0.5, density: [0.5, .nan]", "density: nan is not a finite number"),
        ("breadcrumbs", "weight: 0.5, density: 0.5, gamma: .nan", "gamma: nan is not a finite number"),
        ("breadcrumbs", "weight: 0.5, density: 0.5, gamma: 2", r"gamma: 2 is outside"),
        ("della", "weight: 0.5, density: 0.5, epsilon: 0.6", r"density 0.5 \+/- epsilon 0.6 must stay inside"),
        ("della", "weight: 0.5, density: 0.5, epsilon: -0.1", r"epsilon: -0.1 is outside"),
    ],
)
def test_hostile_parameter_values_are_refused(
    method: str, params: str, problem: str, merge_models: dict[str, Path], tmp_path: Path
) -> None:
    text = _with_params(merge_models, method, params)
    with pytest.raises(InputError, match=problem):
        run_merge(parse_recipe(text), _parents(text), tmp_path / "out", seed=1)
    assert not (tmp_path / "out").exists()


def test_boundary_parameter_values_still_merge(merge_models: dict[str, Path], tmp_path: Path) -> None:
    text = _with_params(merge_models, "dare_ties", "weight: 0.5, density: 0.0")
    result = run_merge(parse_recipe(text), _parents(text), tmp_path / "out", seed=1)
    assert replay(parse_recipe(text), _parents(text), result.output, seed=1).verdict is Verdict.REPRODUCED


@pytest.mark.parametrize("seed", [1 << 63, -(1 << 63) - 1, 99999999999999999999])
def test_seed_outside_int64_is_refused(seed: int, merge_models: dict[str, Path], tmp_path: Path) -> None:
    text = recipes(merge_models)["dare_ties"]
    with pytest.raises(InputError, match="64-bit"):
        run_merge(parse_recipe(text), _parents(text), tmp_path / "out", seed=seed)
    with pytest.raises(InputError, match="64-bit"):
        replay_options({"engine": "attest-merge/v1", "seed": seed})
    with pytest.raises(InputError, match="64-bit"):
        replay_options({"seed": seed})
    recipe = tmp_path / "r.yml"
    recipe.write_text(text)
    assert _exit_code(["merge", str(recipe), str(tmp_path / "cli"), "--seed", str(seed)]) == 2
    assert _exit_code(["replay", str(recipe), str(tmp_path), "--seed", str(seed)]) == 2
    assert not (tmp_path / "out").exists() and not (tmp_path / "cli").exists()


def test_int64_seed_bounds_are_accepted(merge_models: dict[str, Path], tmp_path: Path) -> None:
    text = recipes(merge_models)["dare_ties"]
    for i, seed in enumerate((INT64_MAX, -(1 << 63))):
        result = run_merge(parse_recipe(text), _parents(text), tmp_path / f"o{i}", seed=seed)
        assert replay_options(result.engine_parameters())["seed"] == seed


# Finding 7: filters must be strings; nesting is bounded.

FLOAT = ParameterSpec("weight", float, Scope.INPUT).validate


def test_non_string_filter_is_refused() -> None:
    with pytest.raises(InputError, match="filter 3 must be a string"):
        evaluate_setting("model.layers.0.mlp.weight", [{"filter": 3, "value": 1}], 0.0, FLOAT)
    # Also when an earlier entry matches: the setting is malformed either way.
    with pytest.raises(InputError, match="must be a string"):
        evaluate_setting("x", [{"value": 1}, {"filter": ["mlp"], "value": 2}], 0.0, FLOAT)


def test_self_referencing_setting_is_refused() -> None:
    loop: dict = {"filter": "*"}
    loop["value"] = loop
    with pytest.raises(InputError, match="nested more than"):
        evaluate_setting("x", loop, 0.0, FLOAT)
    looped: list = []
    looped.append({"value": looped})
    with pytest.raises(InputError, match="nested more than"):
        evaluate_setting("x", looped, 0.0, FLOAT)


def test_cli_merge_with_int_filter_exits_2(merge_models: dict[str, Path], tmp_path: Path) -> None:
    recipe = tmp_path / "r.yml"
    recipe.write_text(
        f"merge_method: linear\nmodels:\n  - {{model: {merge_models['ft_a']}, parameters: "
        f"{{weight: [{{filter: 3, value: 1}}]}}}}\n  - {{model: {merge_models['ft_b']}, parameters: {{weight: 0.5}}}}\n"
    )
    assert _exit_code(["merge", str(recipe), str(tmp_path / "out")]) == 2


# Finding 8: recipe YAML that is too deep, aliases that loop or explode.


def _linear(weight_yaml: str, prefix: str = "") -> str:
    models = f"models:\n  - model: a\n    parameters: {{weight: {weight_yaml}}}\n  - model: b\n"
    return f"{prefix}merge_method: linear\n{models}"


def test_deeply_nested_recipe_is_input_error() -> None:
    with pytest.raises(InputError, match="nested too deeply"):
        parse_recipe(_linear("[" * 50000 + "1" + "]" * 50000), "r.yml")


@pytest.mark.parametrize(
    "text",
    [
        _linear("&a {filter: '*', value: *a}"),
        _linear("&a [{value: *a}]"),
    ],
)
def test_self_referencing_alias_is_input_error(text: str) -> None:
    with pytest.raises(InputError, match="YAML aliases"):
        parse_recipe(text, "r.yml")


def test_billion_laughs_is_input_error() -> None:
    lines = ["l0: &l0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for i in range(1, 10):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]")
    text = _linear("*l9", "x:\n" + "".join(f"  {line}\n" for line in lines))
    with pytest.raises(InputError, match="more than 100000 values"):
        parse_recipe(text, "r.yml")


def test_modest_aliases_still_parse() -> None:
    text = "p: &p {weight: 0.5}\nmerge_method: linear\nmodels:\n  - {model: a, parameters: *p}\n  - {model: b}\n"
    recipe = parse_recipe(text)
    assert recipe.models is not None and recipe.models[0].parameters == {"weight": 0.5}


def test_oversized_and_unconvertible_recipes_are_input_errors() -> None:
    with pytest.raises(InputError, match="larger than"):
        parse_recipe("#" * (1024 * 1024 + 1))
    with pytest.raises(InputError):
        parse_recipe(_linear("1" * 5000))  # an integer too long for Python to convert


def test_cli_deep_yaml_exits_2(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yml"
    recipe.write_text(_linear("[" * 50000 + "1" + "]" * 50000))
    assert _exit_code(["merge", str(recipe), str(tmp_path / "out")]) == 2


# Finding 9: deeply nested or duplicate-key config.json.


def test_deep_candidate_config_is_input_error(ties_merge: tuple[str, Path], tmp_path: Path) -> None:
    text, cand = _candidate(ties_merge, tmp_path)
    (cand / "config.json").write_text('{"a":' + "[" * 100000 + "]" * 100000 + "}")
    with pytest.raises(InputError, match="nested too deeply"):
        Checkpoint(cand)
    recipe = tmp_path / "r.yml"
    recipe.write_text(text)
    assert _exit_code(["replay", str(recipe), str(cand)]) == 2


def test_duplicate_key_config_is_input_error(ties_merge: tuple[str, Path], tmp_path: Path) -> None:
    _, cand = _candidate(ties_merge, tmp_path)
    (cand / "config.json").write_text('{"model_type": "qwen2", "model_type": "llama"}')
    with pytest.raises(InputError, match="duplicate key"):
        Checkpoint(cand)


# Finding 11: DELLA on tensors it cannot rank.


def _model_with(folder: Path, extra: dict[str, torch.Tensor], seed: int) -> Path:
    folder.mkdir(parents=True)
    g = torch.Generator().manual_seed(seed)
    sd = {"model.layers.0.mlp.weight": torch.randn(4, 4, generator=g), **extra}
    save_file(sd, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps({"num_hidden_layers": 1}))
    return folder


@pytest.mark.parametrize(
    ("extra", "problem"),
    [({"scale": torch.tensor(0.5)}, "0-dimensional tensor scale"), ({"col": torch.ones(4, 1)}, "rows of 1")],
)
def test_della_on_unrankable_tensor_is_refused(extra: dict, problem: str, tmp_path: Path) -> None:
    folders = [_model_with(tmp_path / n, {k: v + i for k, v in extra.items()}, i) for i, n in enumerate("bxy")]
    text = f"merge_method: della\nbase_model: {folders[0]}\nmodels:\n" + "".join(
        f"  - {{model: {f}, parameters: {{weight: 0.5, density: 0.5}}}}\n" for f in folders[1:]
    )
    with pytest.raises(InputError, match=problem):
        run_merge(parse_recipe(text), _parents(text), tmp_path / "out", seed=1)
    # At density 1 the tensor is kept as it is (no ranking): nothing to refuse.
    kept = text.replace("density: 0.5", "density: 1.0")
    run_merge(parse_recipe(kept), _parents(kept), tmp_path / "kept", seed=1)


# Finding 12: --parents-dir looks only under the folders given.


def test_parents_dir_is_the_only_place_looked(
    merge_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pdir, cwd = tmp_path / "pdir", tmp_path / "cwd"
    shutil.copytree(merge_models["ft_a"], pdir / "ft_a")
    shutil.copytree(merge_models["ft_b"], cwd / "ft_a")  # a different model with the same name in the CWD
    monkeypatch.chdir(cwd)
    recipe = parse_recipe("merge_method: passthrough\nmodels:\n  - model: ft_a\n")
    assert Locator([pdir]).recipe_models(recipe.referenced_models()) == {"ft_a": pdir / "ft_a"}
    assert Locator([]).recipe_models(recipe.referenced_models()) == {
        "ft_a": Path("ft_a")
    }  # without --parents-dir: the path as written
    org = parse_recipe("merge_method: passthrough\nmodels:\n  - model: org/ft_a\n")
    assert Locator([pdir]).recipe_models(org.referenced_models()) == {"org/ft_a": pdir / "ft_a"}
    with pytest.raises(InputError, match="cannot find a folder"):
        Locator([pdir]).recipe_models(
            parse_recipe("merge_method: passthrough\nmodels:\n  - model: ft_b\n").referenced_models()
        )


@pytest.mark.parametrize("ref", ["../ft_b", "sub/../../ft_b", "ABS"])
def test_parents_dir_refuses_escaping_references(ref: str, merge_models: dict[str, Path], tmp_path: Path) -> None:
    ref = str(merge_models["ft_b"]) if ref == "ABS" else ref
    recipe = parse_recipe(f"merge_method: passthrough\nmodels:\n  - model: {ref}\n")
    with pytest.raises(InputError, match=r"relative name without '\.\.'"):
        Locator([tmp_path]).recipe_models(recipe.referenced_models())
    as_written = parse_recipe(f"merge_method: passthrough\nmodels:\n  - model: {merge_models['ft_b']}\n")
    assert Locator([]).recipe_models(as_written.referenced_models()) == {
        str(merge_models["ft_b"]): merge_models["ft_b"]
    }


def test_parents_dir_help_says_so() -> None:
    from click.testing import CliRunner

    from attest.cli.merge import merge_command

    result = CliRunner().invoke(merge_command, ["--help"])
    assert "only under these folders" in " ".join(result.output.split())


# The sub-byte message of the safetensors reader.


def test_sub_byte_element_count_message(tmp_path: Path) -> None:
    import struct

    from attest.identity.safetensors_reader import read_header

    header = json.dumps({"a": {"dtype": "F4", "shape": [3], "data_offsets": [0, 1]}}).encode()
    path = tmp_path / "m.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0")
    with pytest.raises(InputError, match="element count does not fill whole bytes") as exc:
        read_header(path)
    assert "None" not in str(exc.value)

"""Every command run on a local Ray cluster gives exactly the single-process result: roots, reports, exit codes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from attest.cluster import RayExecutor
from attest.errors import InputError
from attest.executor import InProcess, WorkUnit
from attest.identity import hash_model
from tests.distributed.faults import refuse
from tests.support.cli import run_attest as run_inprocess

pytestmark = pytest.mark.usefixtures("ray_cluster", "small_units")


def _same(args: list[object]) -> tuple[int, str]:
    """Run `attest ARGS` in one process and with --ray; both must exit alike and print the same JSON, and (stderr
    not being a terminal) no progress bar."""
    code, out, _ = run_inprocess(args)
    rcode, rout, rerr = run_inprocess([*args, "--ray", "auto"])
    assert rcode == code, rerr
    assert json.loads(rout) == json.loads(out)
    assert rerr == ""
    return code, out


def test_hash_same_manifest_in_process_in_units_and_on_ray(minilm_dir: Path) -> None:
    one = hash_model(minilm_dir)
    assert hash_model(minilm_dir, executor=InProcess()) == one
    with RayExecutor("auto") as ex:
        assert hash_model(minilm_dir, executor=ex) == one
        assert hash_model(minilm_dir, "blake3", executor=ex) == hash_model(minilm_dir, "blake3")


def test_hash_command(signed_chain: dict[str, Path]) -> None:
    code, out = _same(["hash", signed_chain["merged"], "--json", "--no-cache"])
    assert code == 0 and json.loads(out)["model_root"] == hash_model(signed_chain["merged"]).model_root


def test_verify_replay_command(signed_chain: dict[str, Path]) -> None:
    code, out = _same(["verify", signed_chain["merged"], "--policy", signed_chain["policy"], "--replay", "--json"])
    assert code == 0 and json.loads(out)["verified"] is True


def test_replay_command_reproduced(signed_chain: dict[str, Path]) -> None:
    code, out = _same(["replay", signed_chain["root"] / "merge.yml", signed_chain["merged"], "--json"])
    assert code == 0 and json.loads(out)["verdict"] == "reproduced"


def test_replay_command_not_reproduced(signed_chain: dict[str, Path]) -> None:
    """The candidate is a parent, not the merge: exit 1 and the same mismatch rows either way."""
    code, out = _same(["replay", signed_chain["root"] / "merge.yml", signed_chain["ft_a"], "--json"])
    assert code == 1 and json.loads(out)["verdict"] == "not_reproduced"


def test_detect_command(signed_chain: dict[str, Path]) -> None:
    c = signed_chain
    code, out = _same(
        ["detect", c["merged"], "--candidate", c["ft_a"], "--candidate", c["ft_b"], "--base", c["base"], "--json"]
    )
    assert code == 0 and json.loads(out)["verdict"] in ("pure_merge", "merge_plus_training")


def test_a_units_own_error_comes_back_as_itself() -> None:
    """An attest error raised in a worker (a malformed file it opened) is raised here unchanged, so the CLI exits
    with the same code and one-line message as in one process; it is not retried."""
    units = [WorkUnit("a.safetensors", ("a.safetensors",), 1, 1, 0)]
    with RayExecutor("auto") as ex, pytest.raises(InputError, match=r"^a.safetensors: refused$"):
        ex.map("test", refuse, units)
    with pytest.raises(InputError, match=r"^a.safetensors: refused$"):
        InProcess().map("test", refuse, units)


def test_replay_of_a_mergekit_moe_merge_on_ray(
    mergekit_moe: Callable[[str, str], tuple[str, Path]], tmp_path: Path
) -> None:
    """Regression: a unit's input files were looked up in the parents' stored tensors, which a fused-expert view
    (mergekit's layout) does not have: replay --ray of a real mergekit MoE merge crashed (exit 3). A fused tensor's
    unit reads the files of all its per-expert parts; the report is the single-process one."""
    from attest.merge import parse_recipe
    from attest.replay import Verdict, replay

    text, merged = mergekit_moe("qwen3_moe", "linear")
    recipe = parse_recipe(text)
    parents = {ref: ref for ref in recipe.referenced_models()}
    one = replay(recipe, parents, merged)
    with RayExecutor("auto") as ex:
        assert replay(recipe, parents, merged, executor=ex) == one
    assert one.verdict is Verdict.REPRODUCED and one.layout == "mergekit"

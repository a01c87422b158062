"""`attest verify --replay`: a recorded merge is recomputed from its verified parents and compared per tensor."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from attest.lineage.store import load_bundle, write_bundle
from attest.policy import verify_model
from attest.signing import load_private_key, sign_envelope
from attest.verify import VerifyOptions, build_trust
from tests.support.chain import build_chain
from tests.support.cli import run_attest


def test_replay_reproduces_the_recorded_merge(signed_chain: dict[str, Path]) -> None:
    code, out, err = run_attest(["verify", signed_chain["merged"], "--policy", signed_chain["policy"], "--replay"])
    assert code == 0, out + err
    assert "reproduced" in out and "bit for bit" in out


def test_replay_catches_a_recipe_with_an_altered_weight(signed_chain: dict[str, Path], tmp_path: Path) -> None:
    """The builder signs a statement claiming weights 1.0 : 0.8 over weights actually merged 1.0 : 0.75."""
    dst = tmp_path / "merged"
    shutil.copytree(signed_chain["merged"], dst)
    envs = load_bundle(dst)
    doc = json.loads(envs[0].payload_bytes)
    cfg = doc["predicate"]["buildDefinition"]["externalParameters"]["mergekit_config"]
    assert "weight: 0.75" in cfg["yaml"]
    cfg["yaml"] = cfg["yaml"].replace("weight: 0.75", "weight: 0.8")
    cfg["sha256"] = hashlib.sha256(cfg["yaml"].encode()).hexdigest()
    key = load_private_key(signed_chain["root"] / "builder.key")
    write_bundle(dst, [sign_envelope(json.dumps(doc).encode(), [key]), *envs[1:]])

    trust = build_trust(signed_chain["policy"])
    assert verify_model(dst, trust).verified  # the signatures alone cannot tell
    report = verify_model(dst, trust, VerifyOptions(replay=True))
    assert not report.verified
    mismatch = [p.message for p in report.problems if p.code == "replay_mismatch"]
    assert mismatch and "not_reproduced" in mismatch[0]
    assert "model.layers.0" in mismatch[0] or "lm_head" in mismatch[0] or "embed_tokens" in mismatch[0]


def test_attest_merge_key_then_replay_and_missing_parents(signed_chain: dict[str, Path], tmp_path: Path) -> None:
    """`attest merge --key` signs in one step; the result replays while its parents exist, and fails closed (cannot
    replay) once they are gone."""
    for name in ("ft_a", "ft_b"):
        shutil.copytree(signed_chain[name], tmp_path / name)
    cfg = tmp_path / "merge.yml"
    cfg.write_text(
        "merge_method: linear\n"
        f"models:\n  - model: {tmp_path / 'ft_a'}\n    parameters: {{weight: 1.0}}\n"
        f"  - model: {tmp_path / 'ft_b'}\n    parameters: {{weight: 0.75}}\ndtype: bfloat16\n"
    )
    out = tmp_path / "ours"
    code, stdout, err = run_attest(["merge", cfg, out, "--key", signed_chain["root"] / "builder.key"])
    assert code == 0, stdout + err
    trust = build_trust(signed_chain["policy"])
    report = verify_model(out, trust, VerifyOptions(replay=True))
    assert report.verified, report.problems
    # attest's engine is bit-exact with mergekit: same weights root as the mergekit-made merge of the same parents
    assert report.weights_root == verify_model(signed_chain["merged"], trust).weights_root
    shutil.rmtree(tmp_path / "ft_b")
    report = verify_model(out, trust, VerifyOptions(replay=True))
    assert not report.verified
    msgs = [p.message for p in report.problems if p.code == "replay_mismatch"]
    assert msgs and "cannot_replay" in msgs[0] and "ft_b" in msgs[0]


@pytest.fixture(scope="module")
def moe_chain(
    moe_models: Callable[[str], dict[str, Path]], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """The signed lineage of build_chain over tiny Qwen3.5-MoE models: a real `mergekit-yaml` linear merge (fused
    experts, config.json through transformers) recorded with `attest record merge`."""
    pytest.importorskip("mergekit", reason="mergekit 0.1.5 is a test dependency")
    return build_chain(moe_models("qwen3_5_moe"), tmp_path_factory.mktemp("moe-chain"))


def test_replay_reproduces_a_recorded_mergekit_moe_merge(moe_chain: dict[str, Path]) -> None:
    (env,) = [e for e in load_bundle(moe_chain["merged"]) if b"mergekit_config" in e.payload_bytes]
    internal = json.loads(env.payload_bytes)["predicate"]["buildDefinition"]["internalParameters"]
    assert internal["versions"]["mergekit"] == "0.1.5" and internal["versions"]["transformers"].startswith("5.")
    code, out, err = run_attest(["verify", moe_chain["merged"], "--policy", moe_chain["policy"], "--replay"])
    assert code == 0, out + err
    assert "reproduced" in out and "bit for bit" in out


def test_replay_names_an_expert_changed_after_a_recorded_moe_merge(moe_chain: dict[str, Path], tmp_path: Path) -> None:
    """The builder changes one routed-experts tensor after mergekit ran, then records the merge: the signatures
    hold, the replay names the tensor."""
    dst = tmp_path / "merged"
    shutil.copytree(moe_chain["merged"], dst)
    shutil.rmtree(dst / ".attest")
    tensors = load_file(dst / "model.safetensors")
    name = "model.layers.1.mlp.experts.down_proj"
    tensors[name] = tensors[name].clone()
    tensors[name][6] *= 1.01
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    args = ["record", "merge", "--config", moe_chain["root"] / "merge.yml", "--output", dst]
    args += ["--parent", moe_chain["ft_a"], "--parent", moe_chain["ft_b"], "--key", moe_chain["root"] / "builder.key"]
    assert run_attest(args)[0] == 0
    trust = build_trust(moe_chain["policy"])
    assert verify_model(dst, trust).verified
    report = verify_model(dst, trust, VerifyOptions(replay=True))
    assert not report.verified
    (msg,) = [p.message for p in report.problems if p.code == "replay_mismatch"]
    assert "not_reproduced" in msg and name in msg


def test_attest_merge_key_of_moe_parents_records_its_layout(moe_chain: dict[str, Path], tmp_path: Path) -> None:
    """`attest merge --key` on MoE parents records the expert layout it wrote; verify --replay follows it."""
    cfg = moe_chain["root"] / "merge.yml"
    for layout in ("mergekit", "per-expert"):
        out = tmp_path / layout
        args = ["merge", cfg, out, "--layout", layout, "--key", moe_chain["root"] / "builder.key"]
        code, stdout, err = run_attest(args)
        assert code == 0, stdout + err
        (env,) = [e for e in load_bundle(out) if b"mergekit_config" in e.payload_bytes]
        internal = json.loads(env.payload_bytes)["predicate"]["buildDefinition"]["internalParameters"]
        assert internal["layout"] == layout
        report = verify_model(out, build_trust(moe_chain["policy"]), VerifyOptions(replay=True))
        assert report.verified, report.problems
    merged = verify_model(moe_chain["merged"], build_trust(moe_chain["policy"]))
    assert verify_model(tmp_path / "mergekit", build_trust(moe_chain["policy"])).weights_root == merged.weights_root

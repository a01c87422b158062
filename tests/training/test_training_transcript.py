"""Training transcripts on real tiny models: an honest run replays bit for bit; each classic forgery is caught."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

import attest.record.training as train_module
from attest.identity import hash_model
from attest.lineage.store import load_bundle
from attest.signing.keys import generate_private_key, write_key_pair
from attest.statements.parse import parse_provenance
from attest.training.checkpoint import load_model, load_state, make_optimizer, write_checkpoint
from attest.training.select import challenge_seed, escape_probability, select_segments
from attest.training.transcript import checkpoint_byproduct, transcript_of
from tests.support.builders import make_tiny_model
from tests.support.cli import run_attest
from tests.support.training_helpers import resign, run, training_problems, transcript, verify, write_data, write_policy


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("training")
    key = generate_private_key()
    pub = write_key_pair(root / "prover.key", key)
    base = make_tiny_model(root / "base", seed=0)
    data = write_data(root / "data.jsonl")
    out, ckpt, result = run(root, base, data, key)
    return {
        "policy": write_policy(root / "policy.yaml", pub, [base]),
        "key": key,
        "pubkey": pub,
        "base": base,
        "data": data,
        "out": out,
        "ckpt": ckpt,
        "result": result,
    }


def _lying_run(tmp_path: Path, world: dict[str, Any], monkeypatch: pytest.MonkeyPatch, step_fn: Any) -> Path:
    """A run whose real computation differs from what the transcript records (step_fn wraps the real step)."""
    real = train_module.train_step
    calls = {"n": 0}

    def wrapped(model: Any, opt: Any, samples: list[list[int]], hyper: Any, teacher: Any = None) -> float:
        calls["n"] += 1
        return float(step_fn(real, calls["n"], model, opt, samples, hyper, teacher))

    monkeypatch.setattr(train_module, "train_step", wrapped)
    out, _, _ = run(tmp_path, world["base"], world["data"], world["key"])
    return out


def test_honest_transcript_replays_bit_for_bit(world: dict[str, Any]) -> None:
    report = verify(world["out"], world["policy"], world["ckpt"], world["data"])
    assert report.verified, report.problems
    notes = "\n".join(report.notes)
    assert "3 of 3 segments" in notes
    assert notes.count(": reproduced") == 3
    t = world["result"].transcript
    assert [c.step for c in t.checkpoints] == [0, 2, 4, 6]
    assert len(t.batches) == 6 and all(len(b.indices) == 4 for b in t.batches)
    assert t.checkpoints[0].weights_root == hash_model(world["base"]).weights_root
    assert t.checkpoints[-1].weights_root == hash_model(world["out"]).weights_root


def test_statement_carries_transcript_in_slsa_shape(world: dict[str, Any]) -> None:
    env = load_bundle(world["out"])[0]
    st = parse_provenance(env.payload_bytes)
    assert st.predicate.buildDefinition.buildType == "https://attest.dev/buildtypes/finetune/v1"
    t, hyper = transcript_of(st)
    assert hyper.learning_rate == 1e-3 and hyper.objective == "causal_lm"
    assert st.predicate.runDetails.byproducts == [checkpoint_byproduct(c) for c in t.checkpoints]
    assert [d.annotations["role"] for d in st.dependencies()] == ["base", "dataset"]  # type: ignore[index]


def test_segments_chosen_from_statement_digest(world: dict[str, Any]) -> None:
    report = verify(world["out"], world["policy"], world["ckpt"], world["data"], segments=1)
    assert report.verified, report.problems
    digest = load_bundle(world["out"])[0].payload_digest
    chosen = select_segments(challenge_seed(digest), 3, 1)
    assert f"1 of 3 segments chosen from statement {digest[:16]}" in "\n".join(report.notes)
    assert f"{chosen}" in "\n".join(report.notes)
    assert "probability 0.667" in "\n".join(report.notes)
    assert select_segments(challenge_seed(digest, b"verifier nonce"), 50, 5) != select_segments(
        challenge_seed(digest), 50, 5
    )


def test_escape_probability() -> None:
    assert escape_probability(10, 1, 3) == pytest.approx(0.7)
    assert escape_probability(10, 2, 3) == pytest.approx(56 / 120)
    assert escape_probability(4, 1, 4) == 0.0
    assert escape_probability(4, 0, 2) == 1.0


def test_interpolated_checkpoint_is_caught(world: dict[str, Any], tmp_path: Path) -> None:
    out, ckpt, _ = run(tmp_path, world["base"], world["data"], world["key"])
    a, b = ckpt / "step-00000000", ckpt / "step-00000004"
    model = load_model(b / "model", "float32")
    names = [n for n, _ in model.named_parameters()]
    w0, w4 = load_file(str(a / "model" / "model.safetensors")), load_file(str(b / "model" / "model.safetensors"))
    model.load_state_dict({k: (w0[k].float() + w4[k]) / 2 for k in w4}, strict=False)
    opt = make_optimizer(model, transcript_of(_statement(out))[1])
    load_state(b, opt, names)
    for state in opt.state.values():
        state["exp_avg"].mul_(0.5)
        state["step"].fill_(2.0)
    forged_dir = tmp_path / "forged"
    rec = write_checkpoint(forged_dir / "step-00000002", model, opt, names, 2)
    import shutil

    shutil.rmtree(ckpt / "step-00000002")
    shutil.move(forged_dir / "step-00000002", ckpt / "step-00000002")

    def mutate(doc: dict[str, Any]) -> None:
        transcript(doc)["checkpoints"][1] = rec.model_dump(mode="json")
        doc["predicate"]["runDetails"]["byproducts"][1] = checkpoint_byproduct(rec).model_dump(
            mode="json", exclude_none=True
        )

    resign(out, world["key"], mutate)
    report = verify(out, world["policy"], ckpt, world["data"])
    problems = "\n".join(training_problems(report))
    assert not report.verified
    assert "segment 0 (steps 1-2): mismatch" in problems and "segment 1 (steps 3-4): mismatch" in problems
    assert "segment 2 (steps 5-6): reproduced" in problems


def _statement(out: Path) -> Any:
    return parse_provenance(load_bundle(out)[0].payload_bytes)


def test_skipped_step_is_caught_in_its_segment(
    world: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def skip_third(real: Any, n: int, *args: Any) -> float:
        return 0.0 if n == 3 else real(*args)

    out = _lying_run(tmp_path, world, monkeypatch, skip_third)
    problems = "\n".join(training_problems(verify(out, world["policy"], tmp_path / "out-ckpt", world["data"])))
    assert "segment 1 (steps 3-4): mismatch" in problems
    assert "segment 0 (steps 1-2): reproduced" in problems and "segment 2 (steps 5-6): reproduced" in problems


def test_different_learning_rate_than_recorded_is_caught(
    world: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def triple_lr(real: Any, n: int, model: Any, opt: Any, *rest: Any) -> float:
        for g in opt.param_groups:
            g["lr"] *= 3
        try:
            return float(real(model, opt, *rest))
        finally:
            for g in opt.param_groups:
                g["lr"] /= 3

    out = _lying_run(tmp_path, world, monkeypatch, triple_lr)
    problems = "\n".join(training_problems(verify(out, world["policy"], tmp_path / "out-ckpt", world["data"])))
    assert problems.count(": mismatch") == 3


def test_training_on_other_data_than_committed_is_caught(
    world: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def reversed_samples(real: Any, n: int, model: Any, opt: Any, samples: list[list[int]], *rest: Any) -> float:
        return float(real(model, opt, [s[::-1] for s in samples], *rest))

    out = _lying_run(tmp_path, world, monkeypatch, reversed_samples)
    problems = "\n".join(training_problems(verify(out, world["policy"], tmp_path / "out-ckpt", world["data"])))
    assert problems.count(": mismatch") == 3


def test_altered_data_file_is_caught(world: dict[str, Any], tmp_path: Path) -> None:
    lines = world["data"].read_text().splitlines()
    row = json.loads(lines[0])
    row["input_ids"][0] = (row["input_ids"][0] + 1) % 256
    altered = tmp_path / "data.jsonl"
    altered.write_text("\n".join([json.dumps(row), *lines[1:]]) + "\n")
    report = verify(world["out"], world["policy"], world["ckpt"], altered)
    assert not report.verified
    assert any("no data file given has the recorded sha256" in p for p in training_problems(report))


def test_final_model_not_produced_by_transcript_is_caught(world: dict[str, Any], tmp_path: Path) -> None:
    out, ckpt, _ = run(tmp_path, world["base"], world["data"], world["key"])
    weights = load_file(str(out / "model.safetensors"))
    name = sorted(weights)[0]
    weights[name] = weights[name] + 1e-3
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    resign(out, world["key"], lambda doc: None)
    report = verify(out, world["policy"], ckpt, world["data"])
    assert any("the transcript did not produce this model" in p for p in training_problems(report))


def test_published_config_not_the_trained_one_is_caught(world: dict[str, Any], tmp_path: Path) -> None:
    out, ckpt, _ = run(tmp_path, world["base"], world["data"], world["key"])
    config = json.loads((out / "config.json").read_text())
    config["rope_theta"] = 1.0  # the same weights, published under another architecture setting
    (out / "config.json").write_text(json.dumps(config))
    resign(out, world["key"], lambda doc: None)
    report = verify(out, world["policy"], ckpt, world["data"])
    assert any("config.json is not the one its last checkpoint" in p for p in training_problems(report))


def test_start_checkpoint_not_the_claimed_parent_is_caught(world: dict[str, Any], tmp_path: Path) -> None:
    other = make_tiny_model(tmp_path / "other", seed=11)
    out, ckpt, _ = run(tmp_path, other, world["data"], world["key"])
    base = hash_model(world["base"])

    def claim_base(doc: dict[str, Any]) -> None:
        dep = doc["predicate"]["buildDefinition"]["resolvedDependencies"][0]
        dep["digest"]["sha256"], dep["annotations"]["weights_root"] = base.model_root, base.weights_root
        transcript(doc)["start"] = {"model_root": base.model_root, "weights_root": base.weights_root}

    resign(out, world["key"], claim_base)
    report = verify(out, world["policy"], ckpt, world["data"])
    assert any("first checkpoint's weights are not the recorded start model's" in p for p in training_problems(report))


def test_tampered_checkpoint_file_is_caught(world: dict[str, Any], tmp_path: Path) -> None:
    out, ckpt, _ = run(tmp_path, world["base"], world["data"], world["key"])
    state = ckpt / "step-00000004" / "state" / "state.safetensors"
    tensors = load_file(str(state))
    key = next(k for k in sorted(tensors) if k.endswith(".exp_avg"))
    tensors[key] = tensors[key] * 2
    save_file(tensors, str(state))
    problems = "\n".join(training_problems(verify(out, world["policy"], ckpt, world["data"])))
    assert "checkpoint 4:" in problems and "state_root" in problems


def test_distillation_transcript_replays_and_needs_its_teacher(world: dict[str, Any], tmp_path: Path) -> None:
    teacher = make_tiny_model(tmp_path / "teacher", seed=2)
    out, ckpt, result = run(tmp_path, world["base"], world["data"], world["key"], teacher=teacher, steps=4)
    policy = write_policy(tmp_path / "policy.yaml", world["pubkey"], [world["base"], teacher])
    st = _statement(out)
    assert st.step_kind() == "distill"
    assert [d.annotations["role"] for d in st.dependencies()] == ["student-init", "teacher", "dataset"]  # type: ignore[index]
    assert result.transcript.teacher is not None
    report = verify(out, policy, ckpt, world["data"])
    assert report.verified, report.problems
    moved = tmp_path / "elsewhere"
    teacher.rename(moved)
    report = verify(out, policy, ckpt, world["data"])
    assert any("teacher: no teacher folder" in p for p in training_problems(report))
    assert verify(out, policy, ckpt, world["data"], parents=(tmp_path / "x",)).verified is False
    (tmp_path / "x").mkdir()
    moved.rename(tmp_path / "x" / "teacher")
    assert verify(out, policy, ckpt, world["data"], parents=(tmp_path / "x",)).verified


def test_cli_train_then_verify(world: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "k.key"
    write_key_pair(key, world["key"])
    out, ckpt = tmp_path / "cli-out", tmp_path / "cli-ckpt"
    args = ["train", "sft", "--model", world["base"], "--data", world["data"], "--steps", 3, "--batch-size", 2]
    args += ["--lr", "1e-3", "--seed", 1, "--checkpoint-every", 2, "--checkpoints", ckpt, "--output", out]
    code, stdout, err = run_attest([*args, "--key", key])
    assert code == 0, err
    assert "3 steps, 3 checkpoints" in stdout
    verify_args = ["verify", out, "--policy", world["policy"], "--checkpoints", ckpt, "--data", world["data"]]
    code, stdout, err = run_attest([*verify_args, "--replay-training", 2])
    assert code == 0, stdout + err
    assert "segment 1 (steps 3-3): reproduced" in stdout
    code, stdout, _ = run_attest([*verify_args[:-2], "--replay-training", 1])
    assert code == 1 and "no data file given" in stdout


def test_cli_train_refuses_bad_data(world: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "k.key"
    write_key_pair(key, generate_private_key())
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input_ids": [1, 2, 3]}\n\n{"input_ids": [4, 5]}\n')
    args = ["train", "sft", "--model", world["base"], "--data", bad, "--steps", 1, "--batch-size", 1, "--lr", "1e-3"]
    args += ["--seed", 0, "--checkpoint-every", 1, "--checkpoints", tmp_path / "c", "--output", tmp_path / "o"]
    code, _, err = run_attest([*args, "--key", key])
    assert code == 2 and "line 2 is empty" in err
    assert not (tmp_path / "o").exists()
    bad.write_text('{"input_ids": [1, 999]}\n')
    code, _, err = run_attest([*args, "--key", key])
    assert code == 2 and "outside the vocabulary" in err


def test_torch_settings_restored_after_training(world: dict[str, Any]) -> None:
    assert not torch.are_deterministic_algorithms_enabled()


def _tiny_bert(path: Path, seed: int) -> Path:
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=256, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    BertModel(config).save_pretrained(path, safe_serialization=True)
    return path


def test_encoder_hidden_state_distillation_replays(world: dict[str, Any], tmp_path: Path) -> None:
    from attest.record.recorder import Signing
    from attest.record.training import TrainJob, train

    student, teacher = _tiny_bert(tmp_path / "student", 1), _tiny_bert(tmp_path / "teacher", 2)
    out = tmp_path / "out"
    out.mkdir()
    (out / "README.md").write_text("---\nlicense: mit\n---\n\n# A distilled encoder\n")
    job = TrainJob("distill_hidden_mse", student, world["data"], out, tmp_path / "ckpt", 3, 2, 1e-3, 0, 2, teacher)
    train(job, Signing([world["key"]]))
    assert (out / "README.md").read_text().startswith("---\nlicense: mit")  # the card written beforehand is signed
    assert "README.md" in [f.path for f in hash_model(out).files]
    policy = write_policy(tmp_path / "p.yaml", world["pubkey"], [student, teacher])
    report = verify(out, policy, tmp_path / "ckpt", world["data"])
    assert report.verified, report.problems
    assert "\n".join(report.notes).count(": reproduced") == 2


@pytest.mark.parametrize(
    "text", ['{"format": "x", "format": "y"}', '{"format": 1e400}', '{"format": NaN}', "[" * 100_000]
)
def test_hostile_state_json_is_one_clean_error(tmp_path: Path, text: str) -> None:
    """state.json is read from a hostile checkpoint folder: duplicate keys, overflowing numbers and absurd nesting
    are refused with the file named (regression: it was read with plain json.loads)."""
    from attest.errors import InputError
    from attest.training.checkpoint import STATE_JSON, read_state_document

    (tmp_path / "state").mkdir()
    (tmp_path / "state" / STATE_JSON).write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=re.escape(STATE_JSON)):
        read_state_document(tmp_path)

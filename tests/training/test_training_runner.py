"""Transcripts recorded from a user's own loop (`recording(..., data=...)`) and replayed through the runner protocol
with that loop's own file (examples/own_loop/loop.py), pinned by digest; the verifier's nonce."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from attest.identity import hash_model
from attest.lineage.store import load_bundle
from attest.policy import verify_with_policy
from attest.signing.keys import generate_private_key, write_key_pair
from attest.statements.parse import parse_provenance
from attest.training.select import challenge_seed, select_segments
from attest.training.transcript import EXTERNAL_RUNNER, transcript_of
from attest.trust.trust_set import build_trust
from attest.verify.engine import VerifyOptions
from attest.verify.report import VerifyReport
from tests.support.builders import make_tiny_model
from tests.support.cli import run_attest
from tests.support.training_helpers import training_problems, write_data, write_policy

LOOP = Path(__file__).resolve().parents[2] / "examples" / "own_loop" / "loop.py"


def _load_loop() -> ModuleType:
    spec = importlib.util.spec_from_file_location("own_loop", LOOP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("own-loop")
    key = generate_private_key()
    pub = write_key_pair(root / "prover.key", key)
    base = make_tiny_model(root / "base", seed=0)
    data = write_data(root / "data.jsonl")
    loop = _load_loop()
    losses = loop.train(base, data, root / "out", root / "ckpt", key)
    return {
        "root": root,
        "key": key,
        "base": base,
        "data": data,
        "loop": loop,
        "losses": losses,
        "out": root / "out",
        "ckpt": root / "ckpt",
        "policy": write_policy(root / "policy.yaml", pub, [base]),
    }


def _verify(
    world: dict[str, Any], out: Path, ckpt: Path, runners: tuple[Path, ...], nonce: bytes = b""
) -> VerifyReport:
    options = VerifyOptions(
        replay_training=10,
        checkpoints_dirs=(ckpt,),
        training_data=(world["data"],),
        runners=runners,
        training_nonce=nonce,
    )
    return verify_with_policy(out, build_trust(world["policy"]), options).report


def test_own_loop_transcript_replays_with_its_runner(own: dict[str, Any]) -> None:
    report = _verify(own, own["out"], own["ckpt"], (LOOP,))
    assert report.verified, report.problems
    notes = "\n".join(report.notes)
    assert "3 of 3 segments" in notes and notes.count(": reproduced") == 3
    st = parse_provenance(load_bundle(own["out"])[0].payload_bytes)
    t, hyper = transcript_of(st)
    assert t.runner == EXTERNAL_RUNNER and [c.step for c in t.checkpoints] == [0, 2, 4, 6]
    (runner,) = st.dependencies("runner")
    assert runner.digest == {"sha256": __import__("hashlib").sha256(LOOP.read_bytes()).hexdigest()}
    assert hyper.model_dump()["max_grad_norm"] == 0.5 and hyper.steps == 6 and hyper.batch_size == 4
    assert t.checkpoints[0].weights_root == hash_model(own["base"]).weights_root
    assert t.checkpoints[-1].weights_root == hash_model(own["out"]).weights_root
    assert t.determinism.attn_implementation and len(t.batches) == 6


def test_reference_runner_cannot_stand_in(own: dict[str, Any]) -> None:
    """Without --runner the verifier fails closed: no other code replays a user loop."""
    report = _verify(own, own["out"], own["ckpt"], ())
    assert not report.verified
    assert any("name that file with --runner" in p for p in training_problems(report))


def test_runner_with_another_digest_is_refused_and_never_run(own: dict[str, Any], tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    fake = tmp_path / "loop.py"
    fake.write_text(LOOP.read_text() + f"\nPath({str(marker)!r}).write_text('ran')\n")
    report = _verify(own, own["out"], own["ckpt"], (fake,))
    assert not report.verified and not marker.exists()
    assert any("refused: no --runner has the recorded sha256" in p for p in training_problems(report))


def test_transcript_made_by_another_loop_fails(
    own: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The prover trains without gradient clipping but claims the pinned loop file: every replayed segment differs."""
    loop = own["loop"]
    real = loop.train_step

    def unclipped(model: Any, opt: Any, sched: Any, samples: list[list[int]], hp: dict[str, Any]) -> float:
        return float(real(model, opt, sched, samples, {**hp, "max_grad_norm": 1e9}))

    monkeypatch.setattr(loop, "train_step", unclipped)
    loop.train(own["base"], own["data"], tmp_path / "out", tmp_path / "ckpt", own["key"])
    report = _verify(own, tmp_path / "out", tmp_path / "ckpt", (LOOP,))
    assert not report.verified
    problems = "\n".join(training_problems(report))
    assert problems.count(": mismatch") == 3 and "model: " in problems


def test_failing_runner_cannot_replay(own: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pinned file fails on the verifier's machine (here its `attest` import is shadowed): cannot_replay, with the
    runner's last line of output, and the verification fails."""
    shadow = tmp_path / "shadow" / "attest"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('no attest here')\n")
    monkeypatch.setenv("PYTHONPATH", f"{shadow.parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    report = _verify(own, own["out"], own["ckpt"], (LOOP,))
    assert not report.verified
    problems = "\n".join(training_problems(report))
    assert problems.count("cannot_replay") == 3 and "the runner exited 1: ImportError: no attest here" in problems


def test_nonce_changes_the_choice_and_is_reported(own: dict[str, Any]) -> None:
    digest = load_bundle(own["out"])[0].payload_digest
    picks = {tuple(select_segments(challenge_seed(digest, bytes([n])), 3, 1)) for n in range(16)}
    assert len(picks) > 1  # the nonce, not only the statement, decides which segment is checked
    options = VerifyOptions(
        replay_training=1,
        checkpoints_dirs=(own["ckpt"],),
        training_data=(own["data"],),
        runners=(LOOP,),
        training_nonce=bytes.fromhex("c0ffee"),
    )
    report = verify_with_policy(own["out"], build_trust(own["policy"]), options).report
    assert report.verified, report.problems
    notes = "\n".join(report.notes)
    want = select_segments(challenge_seed(digest, bytes.fromhex("c0ffee")), 3, 1)
    assert "verifier nonce c0ffee" in notes and f": {want}" in notes


def test_cli_runner_and_nonce(own: dict[str, Any]) -> None:
    args = ["verify", own["out"], "--policy", own["policy"], "--replay-training", "1"]
    args += ["--checkpoints", own["ckpt"], "--data", own["data"]]
    code, out, _ = run_attest([*args, "--runner", LOOP, "--nonce", "00ff", "--json"])
    assert code == 0, out
    assert any("verifier nonce 00ff" in n for n in json.loads(out)["notes"])
    code, _, err = run_attest([*args, "--runner", LOOP, "--nonce", "xyz"])
    assert code == 2 and "hex" in err
    code, out, _ = run_attest(args)
    assert code == 1 and "--runner" in out

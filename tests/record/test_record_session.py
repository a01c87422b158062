"""The context manager around a real logit distillation loop (tests/support/builders.py distill): a signed distill
statement naming its teacher; an exception inside the block records nothing; a bad key fails before any training."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from attest.errors import InputError
from attest.identity import hash_model
from attest.lineage.store import load_bundle
from attest.record import recording
from attest.signing import generate_key, load_public_key
from tests.support.builders import distill
from tests.support.record_helpers import verify_chain


def _git_repo(path: Path) -> Path:
    path.mkdir()
    (path / "train.py").write_text("print('train')\n")
    for cmd in (
        ["init", "-q"],
        ["add", "train.py"],
        ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"],
    ):
        subprocess.run(["git", "-C", str(path), *cmd], check=True, capture_output=True)
    (path / "train.py").write_text("print('changed')\n")
    return path


def test_distillation_loop_under_the_context_manager(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    key = tmp_path / "k"
    generate_key(key, "ecdsa-p256")
    data = tmp_path / "tokens.bin"
    data.write_bytes(bytes(range(256)))
    code = _git_repo(tmp_path / "code")
    out = tmp_path / "student"
    with recording(
        "distill",
        out,
        parents=[tiny_models["base"]],
        teacher=tiny_models["ft_a"],
        datasets=[data],
        code=code,
        params={"temperature": 2.0, "steps": 5, "lr": 1e-4},
        seed=3,
        device="cpu",
        dtype="float32",
        key=key,
    ) as rec:
        distill(tiny_models["base"], tiny_models["ft_a"], out, seed=3, steps=5)
    assert rec.result is not None
    (verified,) = verify_chain(out, [load_public_key(tmp_path / "k.pub")])
    st = verified.statement
    assert st.step_kind() == "distill"
    (teacher,) = st.dependencies("teacher")
    assert teacher.digest == {"sha256": hash_model(tiny_models["ft_a"]).model_root}
    assert teacher.uri == tiny_models["ft_a"].resolve().as_uri()
    assert [d.name for d in st.dependencies("student-init")] == ["base"]
    (ds,) = st.dependencies("dataset")
    assert ds.digest == {"sha256": __import__("hashlib").sha256(bytes(range(256))).hexdigest()}
    (src,) = st.dependencies("code")
    assert src.annotations == {"role": "code", "dirty": True} and src.digest and len(src.digest["gitCommit"]) == 40
    internal = st.predicate.buildDefinition.internalParameters or {}
    assert internal["seed"] == 3 and internal["device"] == "cpu" and "torch" in internal["versions"]
    meta = st.predicate.runDetails.metadata
    assert meta and meta.startedOn and meta.finishedOn and meta.startedOn <= meta.finishedOn


def test_exception_records_nothing_and_bad_key_fails_first(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    key = tmp_path / "k"
    generate_key(key)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), recording("finetune", out, parents=[tiny_models["base"]], key=key):
        out.mkdir()
        raise RuntimeError("training diverged")
    assert load_bundle(out) == [] and not (out / ".attest").exists()
    ran = False
    with (
        pytest.raises(InputError, match="no such private key"),
        recording("finetune", out, parents=[tiny_models["base"]], key=tmp_path / "missing"),
    ):
        ran = True
    assert not ran

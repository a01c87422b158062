"""`attest verify` with OpenSSF model-signing signatures, external attestations, and policy-file errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from attest.lineage.store import bundle_path
from attest.policy import verify_model
from attest.verify import build_trust
from attest.verify.engine import VerifyOptions
from tests.support.cli import attest_process

IBM = ("stefanb@us.ibm.com", "https://sigstore.verify.ibm.com/oauth2")


def test_model_sig_elliptic_key_vector_verifies(shared_dir: Path) -> None:
    vec = shared_dir / "vectors/model-signing"
    done = attest_process(
        "verify", vec / "v1.1.0-elliptic-key", "--key", vec / "keys/signing-key-pub.pem", "--ignore", "ignore-me"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "model.sig" in done.stdout


def test_model_sig_sigstore_vector_verifies_offline(shared_dir: Path) -> None:
    vec = shared_dir / "vectors/model-signing/v1.1.0-sigstore"
    trust = build_trust(None, (), IBM[0], IBM[1], shared_dir / "vectors/sigstore/production-trusted_root.json")
    report = verify_model(vec, trust, VerifyOptions(ignore=("ignore-me",)))
    assert report.verified, report.problems
    assert report.lineage is not None and report.lineage.signers == [f"{IBM[0]} (model.sig)"]


def test_model_sig_tampered_file_fails(shared_dir: Path, tmp_path: Path) -> None:
    vec = shared_dir / "vectors/model-signing"
    dst = tmp_path / "m"
    shutil.copytree(vec / "v1.1.0-elliptic-key", dst)
    (dst / "signme-1").chmod(0o644)
    (dst / "signme-1").write_text("tampered")
    done = attest_process("verify", dst, "--key", vec / "keys/signing-key-pub.pem", "--ignore", "ignore-me")
    assert done.returncode == 1
    assert "signme-1" in done.stdout


def test_model_sig_with_untrusted_key_fails(shared_dir: Path, tmp_path: Path) -> None:
    from attest.signing import generate_key

    generate_key(tmp_path / "other", "ecdsa-p256")
    vec = shared_dir / "vectors/model-signing/v1.1.0-elliptic-key"
    done = attest_process("verify", vec, "--key", tmp_path / "other.pub", "--ignore", "ignore-me")
    assert done.returncode == 1 and "model_signing" in done.stdout


def test_external_attestations_folder(signed_chain: dict[str, Path], tmp_path: Path) -> None:
    """Statements kept outside the model folder (--attestations) verify the same way."""
    dst = tmp_path / "merged"
    shutil.copytree(signed_chain["merged"], dst)
    store = tmp_path / "store"
    store.mkdir()
    shutil.move(bundle_path(dst), store / "merged.intoto.jsonl")
    trust = build_trust(signed_chain["policy"])
    assert not verify_model(dst, trust).verified
    report = verify_model(dst, trust, VerifyOptions(attestation_dirs=(store,)))
    assert report.verified, report.problems


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("keys: [", "not valid YAML"),
        ("- a\n- b\n", "YAML mapping"),
        ("version: 1\nkeyz: []\n", "keyz"),
        ("version: 1\ntrusted_roots:\n  - name: x\n    digest: abc\n", "sha256"),
        ("version: 1\nkeys:\n  - name: x\n    public_key: missing.pub\n", "missing.pub"),
    ],
)
def test_bad_policy_is_exit_2(tmp_path: Path, tiny_models: dict[str, Path], text: str, needle: str) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(text)
    done = attest_process("verify", tiny_models["base"], "--policy", policy)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert needle in done.stderr


def test_unsigned_model_is_not_verified(tiny_models: dict[str, Path]) -> None:
    done = attest_process("verify", tiny_models["base"], "--json")
    assert done.returncode == 1
    assert '"no_statement"' in done.stdout


def test_trusted_root_alone_verifies(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    from attest.identity import hash_model

    policy = tmp_path / "p.yaml"
    policy.write_text(
        f"version: 1\ntrusted_roots:\n  - name: base\n    digest: {hash_model(tiny_models['base']).model_root}\n"
    )
    assert attest_process("verify", tiny_models["base"], "--policy", policy).returncode == 0


def test_foreign_model_sig_beside_valid_statements_is_only_noted(
    signed_chain: dict[str, Path], tmp_path: Path, shared_dir: Path
) -> None:
    """model.sig is outside the identity: one that no trusted key made neither helps nor hurts a model whose
    statements verify; the report says so."""
    dst = tmp_path / "merged"
    shutil.copytree(signed_chain["merged"], dst)
    shutil.copy(shared_dir / "vectors/model-signing/v1.1.0-elliptic-key/model.sig", dst / "model.sig")
    report = verify_model(dst, build_trust(signed_chain["policy"]))
    assert report.verified, report.problems
    assert any("model.sig present but not verified" in n for n in report.notes)

"""Regression tests for the findings of the internal security review: each case once fooled or crashed the
verifier; now each gets the right verdict and a clean exit."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from attest.identity import hash_model
from attest.lineage.recorded_identity import IDENTITY_FILE
from attest.lineage.store import attest_dir, bundle_path, load_bundle, write_bundle
from attest.policy import verify_model
from attest.signing import generate_key, load_private_key, sign_envelope
from attest.verify import VerifyOptions, build_trust
from tests.support.cli import attest_process


def _attest(*args: object) -> subprocess.CompletedProcess[str]:
    done = attest_process(*args)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def _copy(src: Path, tmp_path: Path, name: str = "m") -> Path:
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


def _st(path: Path, header: dict, data: bytes) -> None:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


# --- model-signing -----------------------------------------------------------------------------------------------


def test_symlinked_model_sig_is_refused(tmp_path: Path) -> None:
    """A model.sig symlinked to an in-folder file must not hide that file from the check."""
    m = tmp_path / "m"
    m.mkdir()
    (m / "weights.bin").write_bytes(b"\x00" * 16)
    generate_key(tmp_path / "k", "ecdsa-p256")
    assert _attest("sign", m, "--format", "model-signing", "--key", tmp_path / "k").returncode == 0
    sig = (m / "model.sig").read_bytes()
    (m / "model.sig").unlink()
    (m / "chat_template.json").write_bytes(sig)  # unsigned file, also a copy of the signature
    (m / "model.sig").symlink_to("chat_template.json")
    done = _attest("verify", m, "--key", tmp_path / "k.pub")
    assert done.returncode == 1
    done = _attest("verify-model-sig", m, "--key", tmp_path / "k.pub")
    assert done.returncode == 2 and "symlink" in done.stderr


def test_full_disclosure_needs_a_statement_not_just_model_sig(tmp_path: Path) -> None:
    m = tmp_path / "m"
    m.mkdir()
    _st(m / "model.safetensors", {"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}, b"\x01")
    generate_key(tmp_path / "alice", "ecdsa-p256")
    assert _attest("sign", m, "--format", "model-signing", "--key", tmp_path / "alice").returncode == 0
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "version: 1\nkeys:\n  - name: alice\n    public_key: alice.pub\n"
        "rules:\n  required_signers: {signers: [alice]}\n  full_disclosure: true\n"
    )
    report = verify_model(m, build_trust(policy))
    assert report.policy is not None
    rules = {r.rule: r.passed for r in report.policy.rules}
    assert rules == {"required_signers": True, "full_disclosure": False}
    assert not report.verified


# --- hostile files the policy rules read -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("README.md", "---\nlicense: &a [x, x, x]\nb: &b [*a, *a, *a]\n---\nhi\n", "aliases"),
        ("README.md", "---\nlicense: " + "[" * 1500 + "]" * 1500 + "\n---\n", "nested too deeply"),
        ("config.json", "[" * 200_000, None),
    ],
)
def test_hostile_card_and_config_do_not_crash_policy_rules(
    signed_chain: dict[str, Path], tmp_path: Path, name: str, content: str, needle: str | None
) -> None:
    m = _copy(signed_chain["merged"], tmp_path)
    (m / name).write_text(content)
    policy = tmp_path / "p.yaml"
    shutil.copy(signed_chain["root"] / "builder.key.pub", tmp_path / "builder.key.pub")
    policy.write_text(
        "version: 1\nkeys:\n  - name: builder\n    public_key: builder.key.pub\n"
        "rules:\n  licenses: {allow: [mit]}\n  claims_consistent: {card: true}\n"
    )
    done = _attest("verify", m, "--policy", policy)
    assert done.returncode in (1, 2), done.stderr
    if needle:
        assert needle in done.stdout + done.stderr


def test_claims_rule_fails_closed_without_a_card(signed_chain: dict[str, Path], tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    shutil.copy(signed_chain["root"] / "builder.key.pub", tmp_path / "builder.key.pub")
    policy.write_text(
        "version: 1\nkeys:\n  - name: builder\n    public_key: builder.key.pub\n"
        "rules:\n  claims_consistent: {card: true}\n"
    )
    report = verify_model(signed_chain["ft_a"], build_trust(policy))
    assert report.policy is not None and not report.policy.passed


# --- hostile .attest/ contents -----------------------------------------------------------------------------------


def test_recorded_manifest_with_huge_integers_is_ignored(signed_chain: dict[str, Path], tmp_path: Path) -> None:
    m = _copy(signed_chain["merged"], tmp_path)
    doc = json.loads((attest_dir(m) / IDENTITY_FILE).read_text())
    doc["chunk_size"] = 2**60
    (attest_dir(m) / IDENTITY_FILE).write_text(json.dumps(doc))
    (m / "config.json").write_text("{}")
    report = verify_model(m, build_trust(signed_chain["policy"]))
    assert not report.verified and report.problems


def test_recorded_manifest_cannot_steer_the_diff(signed_chain: dict[str, Path], tmp_path: Path) -> None:
    """Entry digests that do not match their own records make the recorded manifest worthless, not misleading."""
    m = _copy(signed_chain["merged"], tmp_path)
    doc = json.loads((attest_dir(m) / IDENTITY_FILE).read_text())
    a, b = doc["tensors"][0], doc["tensors"][1]
    a["digest"], b["digest"] = b["digest"], a["digest"]
    (attest_dir(m) / IDENTITY_FILE).write_text(json.dumps(doc))
    (m / "config.json").write_text("{}")
    report = verify_model(m, build_trust(signed_chain["policy"]))
    assert not report.verified
    assert "content_mismatch" not in {p.code for p in report.problems}


def test_trusted_statement_without_sha256_subject(signed_chain: dict[str, Path], tmp_path: Path) -> None:
    m = _copy(signed_chain["base"], tmp_path)
    stmt = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "dataset.tar", "digest": {"sha512": "ab" * 64}}],
        "predicateType": "https://example.com/scan/v1",
        "predicate": {},
    }
    write_bundle(
        m, [sign_envelope(json.dumps(stmt).encode(), [load_private_key(signed_chain["root"] / "builder.key")])]
    )
    done = _attest("verify", m, "--key", signed_chain["root"] / "builder.key.pub")
    assert done.returncode == 1


def test_many_copies_of_one_statement_are_linear_and_bounded(signed_chain: dict[str, Path], tmp_path: Path) -> None:
    m = _copy(signed_chain["merged"], tmp_path)
    env = load_bundle(m)[0].model_dump(mode="json")
    lines = []
    for i in range(200):
        e = dict(env)
        e["signatures"] = [{"keyid": "", "sig": __import__("base64").b64encode(i.to_bytes(4, "big")).decode()}]
        lines.append(json.dumps(e))
    bundle_path(m).write_text("\n".join(lines) + "\n")
    done = _attest("verify", m, "--policy", signed_chain["policy"])
    assert done.returncode == 2 and "distinct signatures" in done.stderr


# --- identity ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("index", "needle"),
    [
        ({"weight_map": {"a": "model.safetensors"}, "evil": "x"}, "unexpected key"),
        ({"weight_map": {"a": "model.safetensors"}, "metadata": []}, "metadata"),
        ({"weight_map": {}}, "weight_map is empty"),
    ],
)
def test_shard_index_says_nothing_outside_the_roots(tmp_path: Path, index: dict, needle: str) -> None:
    m = tmp_path / "m"
    m.mkdir()
    _st(m / "model.safetensors", {"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}, b"\x01")
    (m / "model.safetensors.index.json").write_text(json.dumps(index))
    done = _attest("hash", m)
    assert done.returncode == 2 and needle in done.stderr


def test_dimensions_beyond_exact_json_integers_are_refused(tmp_path: Path) -> None:
    m = tmp_path / "m"
    m.mkdir()
    _st(m / "model.safetensors", {"a": {"dtype": "U8", "shape": [0, 2**53], "data_offsets": [0, 0]}}, b"")
    done = _attest("hash", m)
    assert done.returncode == 2 and "2^53" in done.stderr


def test_deeply_nested_folder_is_a_clean_error(tmp_path: Path) -> None:
    m = tmp_path / "m"
    m.mkdir()
    _st(m / "model.safetensors", {"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}, b"\x01")
    subprocess.run(["mkdir", "-p", str(m / "/".join(["a"] * 1100))], check=True)
    done = _attest("hash", m, "--no-cache")
    assert done.returncode == 2 and "nested too deeply" in done.stderr
    subprocess.run(["rm", "-rf", str(m)], check=True)  # shutil.rmtree recurses too deep for pytest's cleanup


def test_shared_ancestor_is_hashed_once(signed_chain: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    import attest.lineage.locator as locator

    calls: list[Path] = []
    real = locator.hash_roots  # what the locator hashes a folder with (roots only)

    def counting(path, *a, **k):  # type: ignore[no-untyped-def]
        calls.append(Path(path).resolve())
        return real(path, *a, **k)

    monkeypatch.setattr(locator, "hash_roots", counting)
    report = verify_model(signed_chain["merged"], build_trust(signed_chain["policy"]), VerifyOptions())
    assert report.verified
    assert calls.count(signed_chain["base"].resolve()) == 1
    assert hash_model(signed_chain["base"]).model_root == report.lineage.parents[0].parents[0].digest  # type: ignore[union-attr]

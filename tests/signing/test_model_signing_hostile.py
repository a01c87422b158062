"""Hostile and malformed `model.sig` input: signed statements that lie, bundles that do not parse, odd folders.

Malformed files exit 2; a check that says no exits 1; never a traceback, never a file opened by a signed name."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from attest.errors import InputError
from attest.signing.keys import PrivateKey, PublicKey, load_public_key
from attest.signing.model_sig import (
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    make_key_bundle,
    sign_model_sig,
    verify_model_sig,
    verify_with_any,
)
from tests.support.cli import run_attest


@pytest.fixture
def key(tmp_path: Path) -> tuple[ec.EllipticCurvePrivateKey, Path]:
    k = ec.generate_private_key(ec.SECP256R1())
    pub = tmp_path / "pub.pem"
    pub.write_bytes(
        k.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return k, pub


@pytest.fixture
def model(tmp_path: Path) -> Path:
    m = tmp_path / "model"
    m.mkdir()
    (m / "weights.bin").write_bytes(b"w" * 1000)
    (m / "config.json").write_text("{}")
    return m


def statement(resources: list[dict[str, str]], **overrides: Any) -> dict[str, Any]:
    subject = hashlib.sha256(b"".join(bytes.fromhex(r["digest"]) for r in resources)).hexdigest()
    st: dict[str, Any] = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": "model", "digest": {"sha256": subject}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "serialization": {"method": "files", "hash_type": "sha256", "allow_symlinks": False},
            "resources": resources,
        },
    }
    st.update(overrides)
    return st


def honest_resources(model: Path) -> list[dict[str, str]]:
    return [
        {"name": p.name, "algorithm": "sha256", "digest": hashlib.sha256(p.read_bytes()).hexdigest()}
        for p in sorted(model.iterdir())
        if p.name != "model.sig"
    ]


def write_signed(model: Path, k: ec.EllipticCurvePrivateKey, st: dict[str, Any] | bytes) -> None:
    payload = st if isinstance(st, bytes) else json.dumps(st).encode()
    (model / "model.sig").write_bytes(make_key_bundle(payload, k))


def verify_cli(capsys: pytest.CaptureFixture[str], model: Path, pub: Path, *extra: str) -> tuple[int, str]:
    code, out = run_attest(["verify-model-sig", str(model), "--key", str(pub), *extra]).code_output
    assert "Traceback" not in out
    return code, out


def test_honest_statement_verifies(
    model: Path, key: tuple[ec.EllipticCurvePrivateKey, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    write_signed(model, key[0], statement(honest_resources(model)))
    assert verify_cli(capsys, model, key[1])[0] == 0


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda st: st.update(predicateType="https://model_signing/Digests/v0.1"), "predicate type"),
        (lambda st: st.update(_type="https://in-toto.io/Statement/v0.1"), "statement type"),
        (lambda st: st["subject"][0]["digest"].update(sha256="00" * 32), "subject digest"),
        (lambda st: st["subject"].append(st["subject"][0]), "exactly one subject"),
        (lambda st: st["predicate"]["serialization"].update(method="tensors"), "serialization method"),
        (lambda st: st["predicate"]["serialization"].update(hash_type="md5"), "hash type"),
        (lambda st: st["predicate"]["serialization"].update(allow_symlinks="false"), "malformed"),
        (lambda st: st["predicate"]["resources"][0].update(algorithm="blake3"), "algorithm"),
        (lambda st: st["predicate"].pop("resources"), "malformed"),
    ],
)
def test_lying_signed_statement_fails(
    mutate: Any,
    expected: str,
    model: Path,
    key: tuple[ec.EllipticCurvePrivateKey, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    st = statement(honest_resources(model))
    mutate(st)
    write_signed(model, key[0], st)
    code, out = verify_cli(capsys, model, key[1])
    assert code == 1, out
    assert expected in out and "model.sig" in out


def test_duplicate_resource_and_no_resources(
    model: Path, key: tuple[ec.EllipticCurvePrivateKey, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    res = honest_resources(model)
    write_signed(model, key[0], statement([*res, res[0]]))
    code, out = verify_cli(capsys, model, key[1])
    assert code == 1 and "listed twice" in out
    # ignore_paths ["."] with no resources would make the peer accept any folder: we refuse both halves.
    st = statement([])
    st["predicate"]["serialization"]["ignore_paths"] = ["."]
    write_signed(model, key[0], st)
    code, out = verify_cli(capsys, model, key[1])
    assert code == 1 and "covers no files" in out


def test_dot_and_dotdot_ignore_paths_do_not_hide_files(
    model: Path, key: tuple[ec.EllipticCurvePrivateKey, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    st = statement(honest_resources(model))
    st["predicate"]["serialization"]["ignore_paths"] = [".", "..", "/", "../model"]
    write_signed(model, key[0], st)
    (model / "payload.py").write_text("import os")
    code, out = verify_cli(capsys, model, key[1])
    assert code == 1 and "payload.py" in out


def test_traversal_resource_name_is_never_opened(
    tmp_path: Path, model: Path, key: tuple[ec.EllipticCurvePrivateKey, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"outside")
    res = [
        *honest_resources(model),
        {"name": "../secret", "algorithm": "sha256", "digest": hashlib.sha256(b"outside").hexdigest()},
    ]
    write_signed(model, key[0], statement(res))
    code, out = verify_cli(capsys, model, key[1])
    assert code == 1 and "../secret" in out and "missing" in out


def test_payload_type_checked(
    model: Path, key: tuple[ec.EllipticCurvePrivateKey, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    write_signed(model, key[0], statement(honest_resources(model)))
    sig = model / "model.sig"
    bundle = json.loads(sig.read_text())
    bundle["dsseEnvelope"]["payloadType"] = "text/plain"
    sig.write_text(json.dumps(bundle))
    code, out = verify_cli(capsys, model, key[1])
    assert code == 1, out  # the signature covers the payload type (PAE), so this no longer verifies


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not json",
        b"[]",
        b'{"mediaType": "x"}',
        b"\xff\xfe",
        b'{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json", "mediaType": "x"}',
        b'{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json", "verificationMaterial": {}}',
        b'{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json", "verificationMaterial": {"publicKey": {}},'
        b' "dsseEnvelope": {"payload": "!!", "payloadType": "x", "signatures": [{"sig": "AA=="}]}}',
        b'{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json", "verificationMaterial": {"publicKey": {}},'
        b' "dsseEnvelope": {"payload": "AA==", "payloadType": "x", "signatures": []}}',
        b"[" * 100000,
    ],
)
def test_malformed_bundle_exits_2(
    content: bytes, model: Path, key: tuple[ec.EllipticCurvePrivateKey, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    (model / "model.sig").write_bytes(content)
    code, out = verify_cli(capsys, model, key[1])
    assert code == 2, out
    assert "model.sig" in out


def test_signed_payload_not_json_fails(
    model: Path, key: tuple[ec.EllipticCurvePrivateKey, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    write_signed(model, key[0], b'{"_type": 1, "_type": 2}')
    code, out = verify_cli(capsys, model, key[1])
    assert code == 1 and "duplicate key" in out


def test_symlink_in_folder_fails(
    tmp_path: Path, model: Path, key: tuple[ec.EllipticCurvePrivateKey, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    sign_model_sig(model, key[0])
    (tmp_path / "outside.txt").write_text("x")
    os.symlink(tmp_path / "outside.txt", model / "link.txt")
    code, out = verify_cli(capsys, model, key[1])
    assert code == 1 and "link.txt" in out and "symlink" in out
    code, out = run_attest(
        ["sign", str(model), "--format", "model-signing", "--key", str(tmp_path / "nokey")]
    ).code_output
    assert code == 2


def test_sign_refuses_symlink_and_empty(tmp_path: Path, key: tuple[ec.EllipticCurvePrivateKey, Path]) -> None:
    from attest.errors import InputError

    m = tmp_path / "m"
    m.mkdir()
    with pytest.raises(InputError, match="no files to sign"):
        sign_model_sig(m, key[0])
    (m / "a").write_text("a")
    os.symlink(m / "a", m / "b")
    with pytest.raises(InputError, match="symlink"):
        sign_model_sig(m, key[0])
    assert not (m / "model.sig").exists()


def test_nested_folders_and_ignore_rules(tmp_path: Path, key: tuple[ec.EllipticCurvePrivateKey, Path]) -> None:
    m = tmp_path / "m"
    (m / "a" / "b").mkdir(parents=True)
    (m / ".git").mkdir()
    (m / ".attest").mkdir()
    (m / "a" / "b" / "c.txt").write_text("c")
    (m / "a" / "z.txt").write_text("z")
    (m / "a.txt").write_text("a")
    (m / ".git" / "HEAD").write_text("ref")
    signed = sign_model_sig(m, key[0], ignore=["a/b"])
    assert signed.resources == 2 and "a/b" in signed.ignore_paths
    payload = json.loads(base64.b64decode(json.loads((m / "model.sig").read_text())["dsseEnvelope"]["payload"]))
    assert [r["name"] for r in payload["predicate"]["resources"]] == ["a/z.txt", "a.txt"]  # path-component order
    (m / ".git" / "HEAD").write_text("moved")
    (m / ".attest" / "x.intoto.jsonl").write_text("{}")
    (m / "a" / "b" / "c.txt").write_text("changed but ignored")
    trust = load_public_key(key[1])
    assert verify_model_sig(m, trust).verified
    (m / "a" / "b2").mkdir()
    (m / "a" / "b2" / "d").write_text("d")  # 'a/b' ignores a/b and below, not a/b2
    r = verify_model_sig(m, trust)
    assert not r.verified and [f.path for f in r.findings] == ["a/b2/d"]


def test_usage_errors(
    model: Path, key: tuple[ec.EllipticCurvePrivateKey, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    write_signed(model, key[0], statement(honest_resources(model)))
    for argv in (
        ["verify-model-sig", str(model)],
        ["verify-model-sig", str(model), "--key", str(key[1]), "--identity", "a", "--issuer", "b"],
        ["verify-model-sig", str(model), "--identity", "a"],
        ["verify-model-sig", str(model), "--key", str(model / "config.json")],
        ["verify-model-sig", str(model / "nope"), "--key", str(key[1])],
        ["sign", str(model), "--format", "model-signing", "--key", str(key[1])],  # a public key
    ):
        code, out = run_attest(argv).code_output
        assert code == 2, (argv, out)
        assert "Traceback" not in out


def test_allowed_symlinks_stay_inside(
    tmp_path: Path, model: Path, key: tuple[ec.EllipticCurvePrivateKey, Path]
) -> None:
    """allow_symlinks: true follows a link inside the folder (hashing its target), never one leading out."""
    os.symlink("weights.bin", model / "alias.bin")
    res = honest_resources(model)
    assert [r["name"] for r in res] == ["alias.bin", "config.json", "weights.bin"]
    st = statement(res)
    st["predicate"]["serialization"]["allow_symlinks"] = True
    write_signed(model, key[0], st)
    trust = load_public_key(key[1])
    assert verify_model_sig(model, trust).verified
    (tmp_path / "elsewhere").write_bytes(b"w" * 1000)
    (model / "alias.bin").unlink()
    os.symlink(tmp_path / "elsewhere", model / "alias.bin")
    r = verify_model_sig(model, trust)
    assert not r.verified and [(f.path, f.status) for f in r.findings] == [("alias.bin", "refused")]


def test_fifo_is_refused_not_read(model: Path, key: tuple[ec.EllipticCurvePrivateKey, Path]) -> None:
    sign_model_sig(model, key[0])
    os.mkfifo(model / "pipe")
    r = verify_model_sig(model, load_public_key(key[1]))
    assert not r.verified and [(f.path, f.status) for f in r.findings] == [("pipe", "refused")]


def test_p521_and_ed25519_keys(tmp_path: Path, model: Path) -> None:
    """model-signing keys are EC P-256/P-384/P-521: P-521 signs and verifies, an Ed25519 key is bad input."""
    k = ec.generate_private_key(ec.SECP521R1())
    sign_model_sig(model, k)
    pub = PublicKey.from_crypto(k.public_key(), key_types=("ecdsa-p521",))
    assert verify_model_sig(model, pub).verified
    ed = ed25519.Ed25519PrivateKey.generate()
    with pytest.raises(InputError, match="not an EC P-256, P-384 or P-521 public key"):
        verify_model_sig(model, PublicKey.from_crypto(ed.public_key()))
    with pytest.raises(InputError, match="not an EC P-256, P-384 or P-521 private key"):
        sign_model_sig(model, PrivateKey.from_crypto(ed))


def test_verify_with_any_names_the_trust_that_verified(
    model: Path, key: tuple[ec.EllipticCurvePrivateKey, Path]
) -> None:
    """The verifier's trust set is tried key by key: Ed25519 keys are skipped, a wrong key's problem is kept."""
    sign_model_sig(model, key[0])
    ed = PublicKey.from_crypto(ed25519.Ed25519PrivateKey.generate().public_key())
    other = PublicKey.from_crypto(ec.generate_private_key(ec.SECP256R1()).public_key())
    right = load_public_key(key[1])
    assert verify_with_any(model, [("ed", ed), ("other", other), ("right", right)]) == ("right", [])
    name, failures = verify_with_any(model, [("ed", ed), ("other", other)])
    assert name is None and len(failures) == 1 and "signature does not verify" in failures[0]
    assert verify_with_any(model, [("ed", ed)]) == (None, [])


def test_bundle_json_number_overflowing_to_infinity_is_refused(tmp_path: Path) -> None:
    """A model.sig is hostile JSON: `1e400` must not be read as Infinity (regression: duplicate keys were refused but
    overflowing numbers were not)."""
    from attest.errors import InputError
    from attest.signing.model_sig.bundle import parse_json

    with pytest.raises(InputError, match=r"model\.sig"):
        parse_json(tmp_path / "model.sig", b'{"mediaType": 1e400}', "model.sig")

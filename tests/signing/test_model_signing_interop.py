"""Interop with the model-signing library itself: it verifies what `attest sign` writes, we verify what it signs."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from attest.signing.keys import load_public_key
from attest.signing.model_sig import verify_model_sig
from tests.support.cli import run_attest

model_signing = pytest.importorskip("model_signing", reason="model-signing 1.1.1 (+ pyopenssl) is a test dependency")


def write_key(tmp_path: Path, curve: ec.EllipticCurve, passphrase: bytes | None = None) -> tuple[Path, Path]:
    """A fresh EC key: (PKCS#8 private key PEM, public key PEM)."""
    key = ec.generate_private_key(curve)
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    priv = tmp_path / f"{curve.name}.key.pem"
    pub = tmp_path / f"{curve.name}.pub.pem"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc))
    pub.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return priv, pub


@pytest.fixture
def minilm_copy(minilm_dir: Path, tmp_path: Path) -> Path:
    """A writable copy of the real all-MiniLM-L6-v2 (never write into site-packages)."""
    dst = tmp_path / "all-MiniLM-L6-v2"
    shutil.copytree(minilm_dir, dst, ignore=shutil.ignore_patterns("__pycache__"))
    for p in [dst, *dst.rglob("*")]:
        p.chmod(p.stat().st_mode | stat.S_IWUSR)
    return dst


def peer_verify(model: Path, pub: Path) -> None:
    """model-signing's own verifier, through its public API; raises ValueError on mismatch."""
    model_signing.verifying.Config().use_elliptic_key_verifier(public_key=pub).verify(model, model / "model.sig")


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP384R1()], ids=["p256", "p384"])
def test_attest_sign_verified_by_model_signing(
    curve: ec.EllipticCurve, minilm_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    priv, pub = write_key(tmp_path, curve)
    (minilm_copy / ".gitattributes").write_text("*.safetensors filter=lfs\n")  # ignored on both sides
    code, out = run_attest(
        ["sign", str(minilm_copy), "--format", "model-signing", "--key", str(priv), "--quiet"]
    ).code_output
    assert code == 0, out
    assert (minilm_copy / "model.sig").is_file()
    assert not [p for p in minilm_copy.iterdir() if p.name.endswith(".tmp")]
    peer_verify(minilm_copy, pub)
    code, out = run_attest(["verify-model-sig", str(minilm_copy), "--key", str(pub), "--json"]).code_output
    assert code == 0, out
    assert json.loads(out)["files_checked"] == len([p for p in minilm_copy.rglob("*") if p.is_file()]) - 2

    (minilm_copy / "config.json").write_text("{}")  # both verifiers now refuse it
    with pytest.raises(ValueError, match=r"config\.json"):
        peer_verify(minilm_copy, pub)
    code, out = run_attest(["verify-model-sig", str(minilm_copy), "--key", str(pub)]).code_output
    assert code == 1 and "config.json" in out


def test_attest_sign_with_ignore_and_passphrase(
    minilm_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ATTEST_KEY_PASSPHRASE", raising=False)
    priv, pub = write_key(tmp_path, ec.SECP256R1(), passphrase=b"correct horse")
    (minilm_copy / "scratch").mkdir()
    (minilm_copy / "scratch" / "notes.txt").write_text("not part of the model")
    monkeypatch.setenv("MODEL_KEY_PASS", "correct horse")
    sign = [
        "sign",
        str(minilm_copy),
        "--format",
        "model-signing",
        "--key",
        str(priv),
        "--passphrase-env",
        "MODEL_KEY_PASS",
    ]
    code, out = run_attest([*sign, "--ignore", "scratch", "--quiet"]).code_output
    assert code == 0, out
    (minilm_copy / "scratch" / "notes.txt").write_text("changed after signing: still ignored")
    peer_verify(minilm_copy, pub)  # the recorded ignore_paths carry "scratch" to the peer
    assert verify_model_sig(minilm_copy, load_public_key(pub)).verified

    monkeypatch.setenv("MODEL_KEY_PASS", "wrong")
    code, out = run_attest(sign).code_output
    assert code == 2 and str(priv) in out
    code, out = run_attest(["sign", str(minilm_copy), "--format", "model-signing", "--key", str(priv)]).code_output
    assert code == 2 and "encrypted" in out  # no TTY under pytest: no prompt, a clear error
    monkeypatch.setenv("ATTEST_KEY_PASSPHRASE", "correct horse")  # the variable `attest keygen/record` use
    code, out = run_attest(
        ["sign", str(minilm_copy), "--format", "model-signing", "--key", str(priv), "--quiet"]
    ).code_output
    assert code == 0, out


def test_model_signing_signature_verified_by_attest(
    minilm_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    priv, pub = write_key(tmp_path, ec.SECP256R1())
    sig = minilm_copy / "model.sig"
    model_signing.signing.Config().use_elliptic_key_signer(private_key=priv).set_hashing_config(
        model_signing.hashing.Config().set_ignored_paths(paths=["model.sig"])
    ).sign(minilm_copy, sig)
    code, out = run_attest(["verify-model-sig", str(minilm_copy), "--key", str(pub)]).code_output
    assert code == 0, out

    (tmp_path / "other").mkdir()
    _, other_pub = write_key(tmp_path / "other", ec.SECP256R1())
    code, out = run_attest(["verify-model-sig", str(minilm_copy), "--key", str(other_pub)]).code_output
    assert code == 1 and "key hint names a different key" in out

    weights = minilm_copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    code, out = run_attest(["verify-model-sig", str(minilm_copy), "--key", str(pub)]).code_output
    assert code == 1 and "model.safetensors" in out


def test_model_signing_shards_signature_verified_by_attest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Shard serialization: resources 'path:start:end', shard_size stored as a float by the peer."""
    priv, pub = write_key(tmp_path, ec.SECP384R1())
    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (model / "weights.bin").write_bytes(bytes(range(256)) * 20)  # 5120 bytes: 5 shards of 1024
    (model / "sub" / "a:b.txt").write_text("colon in the name")
    (model / "empty").write_bytes(b"")  # no shards at all
    sig = tmp_path / "shards.sig"
    model_signing.signing.Config().use_elliptic_key_signer(private_key=priv).set_hashing_config(
        model_signing.hashing.Config().use_shard_serialization(shard_size=1024)
    ).sign(model, sig)
    trust = load_public_key(pub)
    r = verify_model_sig(model, trust, signature_path=sig)
    assert r.verified, r.problems
    assert r.serialization is not None and r.serialization.method == "shards"
    assert r.serialization.shard_size == 1024 and r.resources == 6

    data = bytearray((model / "weights.bin").read_bytes())
    data[3000] ^= 0xFF
    (model / "weights.bin").write_bytes(bytes(data))
    (model / "sub" / "a:b.txt").write_text("longer than it was when signed")
    r = verify_model_sig(model, trust, signature_path=sig)
    assert not r.verified
    by_path = {f.path: f.detail for f in r.findings}
    assert "bytes 2048-3072" in by_path["weights.bin"]
    assert "size" in by_path["sub/a:b.txt"]


def test_model_signing_over_a_folder_with_attestations_verifies_in_both(
    minilm_dir: Path, minilm_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`attest record` first, then upstream `model_signing sign` (which covers `.attest/`): both verifiers accept;
    a covered `.attest/` file changed afterwards fails in both (attest checks what the signature covers)."""
    from attest.signing import generate_key

    generate_key(tmp_path / "lab.key")
    code, out = run_attest(
        ["record", "convert", "--parent", f"base={minilm_dir}", "--output", minilm_copy, "--key", tmp_path / "lab.key"]
    ).code_output
    assert code == 0, out
    assert (minilm_copy / ".attest" / "identity.json").is_file()
    priv, pub = write_key(tmp_path, ec.SECP256R1())
    model_signing.signing.Config().use_elliptic_key_signer(private_key=priv).set_hashing_config(
        model_signing.hashing.Config().set_ignored_paths(paths=["model.sig"])
    ).sign(minilm_copy, minilm_copy / "model.sig")
    peer_verify(minilm_copy, pub)
    code, out = run_attest(["verify-model-sig", str(minilm_copy), "--key", str(pub), "--json"]).code_output
    assert code == 0, out
    covered = json.loads(out)
    assert covered["files_checked"] == covered["resources"] and covered["resources"] >= 3
    (minilm_copy / ".attest" / "notes.txt").write_text("written by attest after signing: not covered, not extra\n")
    code, out = run_attest(["verify-model-sig", str(minilm_copy), "--key", str(pub)]).code_output
    assert code == 0, out
    identity = minilm_copy / ".attest" / "identity.json"
    identity.write_text(identity.read_text().replace("{", "{ ", 1))
    with pytest.raises(ValueError, match="identity"):
        peer_verify(minilm_copy, pub)
    code, out = run_attest(["verify-model-sig", str(minilm_copy), "--key", str(pub)]).code_output
    assert code == 1 and ".attest/identity.json" in out and "changed" in out


def test_attest_sign_json_and_default_format(
    minilm_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--format defaults to model-signing (the only format); --json says what was written."""
    from tests.support.json_output import parse_output

    priv, pub = write_key(tmp_path, ec.SECP256R1())
    code, out = run_attest(["sign", str(minilm_copy), "--key", str(priv), "--json"]).code_output
    assert code == 0, out
    doc = parse_output(out, "sign-output.schema.json")
    assert doc["signature"] == str(minilm_copy / "model.sig") and doc["method"] == "key"
    peer_verify(minilm_copy, pub)
    checked = json.loads(run_attest(["verify-model-sig", str(minilm_copy), "--key", str(pub), "--json"]).code_output[1])
    assert (checked["subject_digest"], checked["files_checked"]) == (doc["subject_sha256"], doc["files"])


def _ca_and_leaf(tmp_path: Path, *, leaf_can_sign: bool = True) -> tuple[Path, Path, Path, Path]:
    """A real two-level PKI: a CA certificate, and a leaf certificate for a fresh P-256 key issued by it.
    Returns (leaf key PEM, leaf certificate PEM, CA certificate PEM, a second unrelated key PEM)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("attest test CA"))
        .issuer_name(name("attest test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # keyCertSign, cRLSign
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(name("model publisher"))
        .issuer_name(ca.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if leaf_can_sign:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
    else:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, True, False, False, False, False, False, False), critical=True
        )  # keyEncipherment only
    leaf = builder.sign(ca_key, hashes.SHA256())
    pem = serialization.Encoding.PEM
    paths = (tmp_path / "leaf.key", tmp_path / "leaf.pem", tmp_path / "ca.pem", tmp_path / "other.key")
    paths[0].write_bytes(leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    paths[1].write_bytes(leaf.public_bytes(pem))
    paths[2].write_bytes(ca.public_bytes(pem))
    other = ec.generate_private_key(ec.SECP256R1())
    paths[3].write_bytes(other.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return paths


def test_attest_sign_certificate_mode_verified_by_model_signing(
    minilm_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`attest sign --signing-certificate LEAF --certificate-chain CA` writes what `model_signing sign certificate`
    writes: model-signing's own certificate verifier and `attest verify-model-sig --certificate-chain` accept it."""
    from tests.support.json_output import parse_output

    key, leaf, ca, _ = _ca_and_leaf(tmp_path)
    args = ["sign", str(minilm_copy), "--key", str(key), "--signing-certificate", str(leaf)]
    code, out = run_attest([*args, "--certificate-chain", str(ca), "--json"]).code_output
    assert code == 0, out
    assert parse_output(out, "sign-output.schema.json")["method"] == "certificate"
    model_signing.verifying.Config().use_certificate_verifier(certificate_chain=[ca]).verify(
        minilm_copy, minilm_copy / "model.sig"
    )
    code, out = run_attest(["verify-model-sig", str(minilm_copy), "--certificate-chain", str(ca), "--json"]).code_output
    assert code == 0 and json.loads(out)["kind"] == "certificate", out


@pytest.mark.parametrize("case", ["other key", "cannot sign", "not a certificate"])
def test_attest_sign_certificate_mode_refuses_before_hashing(
    case: str, minilm_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key, leaf, ca, other = _ca_and_leaf(tmp_path, leaf_can_sign=case != "cannot sign")
    if case == "other key":
        key = other
    if case == "not a certificate":
        leaf = ca.with_name("junk.pem")
        leaf.write_text("not a certificate\n")
    code, out = run_attest(
        ["sign", str(minilm_copy), "--key", str(key), "--signing-certificate", str(leaf)]
    ).code_output
    assert code == 2 and not (minilm_copy / "model.sig").exists(), out
    assert {"other key": "not the signing key", "cannot sign": "does not allow signing", "not a certificate": "PEM"}[
        case
    ] in out


def test_attest_sign_sigstore_without_a_token_refuses_cleanly(
    minilm_copy: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offline, no OIDC token, no terminal: one line, exit 2, nothing written (the token is sought before hashing)."""
    monkeypatch.delenv("SIGSTORE_ID_TOKEN", raising=False)
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    code, out = run_attest(["sign", str(minilm_copy), "--sigstore", "--staging"]).code_output
    assert code == 2 and "OIDC identity token" in out, out
    assert not (minilm_copy / "model.sig").exists()
    code, out = run_attest(["sign", str(minilm_copy), "--sigstore", "--key", str(minilm_copy / "x.key")]).code_output
    assert code == 2 and "--sigstore" in out, out


def test_attest_sign_sigstore_builds_the_keyless_signer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The keyless path hands the exact statement bytes to sigstore-python with the token it was given."""
    import attest.signing.sigstore as sigstore_mod
    from attest.signing.model_sig.signers import sigstore_signer

    seen: dict[str, object] = {}

    def fake_sign(payload: bytes, *, staging: bool = False, token: str | None = None) -> str:
        seen.update(payload=payload, staging=staging, token=token)
        return '{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json"}'

    monkeypatch.setattr(sigstore_mod, "sign_sigstore", fake_sign)
    make = sigstore_signer(staging=True, token="tok")
    assert make(b"statement") == b'{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json"}'
    assert seen == {"payload": b"statement", "staging": True, "token": "tok"}


@pytest.mark.skipif(
    not os.environ.get("SIGSTORE_ID_TOKEN"),
    reason="Sigstore keyless signing needs the network (Fulcio, Rekor) and an OIDC token in $SIGSTORE_ID_TOKEN",
)
def test_attest_sign_sigstore_online_verified_by_model_signing(
    minilm_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sigstore.oidc import IdentityToken

    token = IdentityToken(os.environ["SIGSTORE_ID_TOKEN"])
    code, out = run_attest(["sign", str(minilm_copy), "--sigstore", "--staging", "--json"]).code_output
    assert code == 0, out
    model_signing.verifying.Config().use_sigstore_verifier(
        identity=token.identity, oidc_issuer=token.federated_issuer or token.issuer, use_staging=True
    ).verify(minilm_copy, minilm_copy / "model.sig")

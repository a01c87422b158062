"""The OpenSSF model-signing vectors in ../shared: each verifies, and each kind of tampering fails naming the file."""

from __future__ import annotations

import base64
import datetime
import json
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from attest.schema_export import SCHEMA_DIR
from attest.signing.keys import load_public_key
from attest.signing.model_sig import load_certificate_anchors, verify_model_sig
from attest.signing.sigstore import SigstoreTrust
from tests.support.cli import run_attest

IDENTITY = "stefanb@us.ibm.com"
ISSUER = "https://sigstore.verify.ibm.com/oauth2"


def copy_tree(src: Path, dst: Path) -> Path:
    """Copy a (read-only) vector folder and make the copy writable."""
    shutil.copytree(src, dst)
    for p in [dst, *dst.rglob("*")]:
        p.chmod(p.stat().st_mode | stat.S_IWUSR)
    return dst


@pytest.fixture(scope="module")
def vectors(shared_dir: Path) -> Path:
    path = shared_dir / "vectors" / "model-signing"
    if not path.is_dir():
        pytest.skip(f"{path} is absent")
    return path


def trust_args(vectors: Path, shared_dir: Path, name: str) -> list[str]:
    keys = vectors / "keys"
    if "elliptic-key" in name:
        return ["--key", str(keys / "signing-key-pub.pem")]
    if "certificate" in name:
        return ["--certificate-chain", str(keys / "ca-cert.pem"), "--certificate-chain", str(keys / "int-ca-cert.pem")]
    root = shared_dir / "vectors" / "sigstore" / "production-trusted_root.json"
    return ["--identity", IDENTITY, "--issuer", ISSUER, "--trust-root", str(root)]


VECTORS = [
    ("v1.0.0-elliptic-key", []),
    ("v1.1.0-elliptic-key", ["--ignore", "ignore-me"]),
    ("v1.0.0-certificate", []),
    ("v1.1.0-sigstore", []),
]


@pytest.mark.parametrize(("name", "extra"), VECTORS)
def test_vector_verifies(
    name: str, extra: list[str], vectors: Path, shared_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run_attest(
        ["verify-model-sig", str(vectors / name), *trust_args(vectors, shared_dir, name), *extra, "--json"]
    ).code_output
    assert code == 0, out
    result = json.loads(out)
    assert result["verified"] is True and result["problems"] == []
    schema = json.loads((SCHEMA_DIR / "model-sig-verification.schema.json").read_text())
    jsonschema.validate(result, schema)
    assert result["kind"] == name.split("-", 1)[1]


def test_vector_library_results(vectors: Path, shared_dir: Path) -> None:
    keys = vectors / "keys"
    r = verify_model_sig(
        vectors / "v1.1.0-elliptic-key", load_public_key(keys / "signing-key-pub.pem"), ignore=["ignore-me"]
    )
    assert r.verified and r.files_checked == 2 and "ignore-me" in r.ignored
    r = verify_model_sig(vectors / "v1.0.0-certificate", load_certificate_anchors([keys / "ca-cert.pem"]))
    assert r.verified and r.signer is not None and "CN=intermediate-ca" in r.signer  # root alone suffices
    root = shared_dir / "vectors" / "sigstore" / "production-trusted_root.json"
    r = verify_model_sig(vectors / "v1.1.0-sigstore", SigstoreTrust(IDENTITY, ISSUER, root))
    assert r.verified and r.signer is not None and IDENTITY in r.signer
    assert r.subject_digest == "61d4849d9d90076d6215f4d525f13d6574af8e3f67aef3e6f36fc40a14fdd226"


def test_single_file_vector_by_file_path(vectors: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """v1.0.0-elliptic-key signed one file (resource '.'): the file's own path verifies with the sibling model.sig."""
    code, out = run_attest(
        [
            "verify-model-sig",
            str(vectors / "v1.0.0-elliptic-key" / "signme-1"),
            "--key",
            str(vectors / "keys" / "signing-key-pub.pem"),
        ]
    ).code_output
    assert code == 0, out


def test_ignore_me_is_extra_without_any_ignore(
    tmp_path: Path, vectors: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """v1.0.0-certificate lists no ignore_paths: a new ignore-me there is an extra file unless --ignore names it."""
    model = copy_tree(vectors / "v1.0.0-certificate", tmp_path / "m")
    (model / "ignore-me").write_text("x")
    chain = ["--certificate-chain", str(vectors / "keys" / "ca-cert.pem")]
    code, out = run_attest(["verify-model-sig", str(model), *chain]).code_output
    assert code == 1 and "ignore-me" in out
    code, out = run_attest(["verify-model-sig", str(model), *chain, "--ignore", "ignore-me"]).code_output
    assert code == 0, out


def _change_file(model: Path) -> str:
    target = sorted(p for p in model.iterdir() if p.name.startswith("signme"))[-1]
    target.write_bytes(target.read_bytes() + b"!")
    return target.name


def _add_file(model: Path) -> str:
    (model / "added.bin").write_bytes(b"\x00" * 10)
    return "added.bin"


def _remove_file(model: Path) -> str:
    target = sorted(p for p in model.iterdir() if p.name.startswith("signme"))[-1]
    target.unlink()
    return target.name


def _change_signature_byte(model: Path) -> str:
    sig = model / "model.sig"
    bundle = json.loads(sig.read_text())
    raw = bytearray(base64.b64decode(bundle["dsseEnvelope"]["signatures"][0]["sig"]))
    raw[len(raw) // 2] ^= 0x01
    bundle["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(bytes(raw)).decode()
    sig.write_text(json.dumps(bundle))
    return "model.sig"


TAMPERS: dict[str, Callable[[Path], str]] = {
    "changed-file": _change_file,
    "added-file": _add_file,
    "removed-file": _remove_file,
    "signature-byte": _change_signature_byte,
}


@pytest.mark.parametrize("tamper", sorted(TAMPERS))
@pytest.mark.parametrize(("name", "extra"), VECTORS)
def test_vector_tampered_fails(
    name: str,
    extra: list[str],
    tamper: str,
    tmp_path: Path,
    vectors: Path,
    shared_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model = copy_tree(vectors / name, tmp_path / name)
    named = TAMPERS[tamper](model)
    code, out = run_attest(["verify-model-sig", str(model), *trust_args(vectors, shared_dir, name), *extra]).code_output
    assert code == 1, out
    assert named in out
    assert "Traceback" not in out


def _other_key_pem(tmp_path: Path, curve: ec.EllipticCurve) -> Path:
    key = ec.generate_private_key(curve)
    path = tmp_path / "other.pub.pem"
    path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return path


@pytest.mark.parametrize("name", ["v1.0.0-elliptic-key", "v1.1.0-elliptic-key"])
def test_vector_wrong_key_fails(name: str, tmp_path: Path, vectors: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_attest(
        [
            "verify-model-sig",
            str(vectors / name),
            "--key",
            str(_other_key_pem(tmp_path, ec.SECP384R1())),
            "--ignore",
            "ignore-me",
        ]
    ).code_output
    assert code == 1, out
    assert "model.sig" in out and "does not verify" in out


def test_vector_wrong_certificate_root_fails(tmp_path: Path, vectors: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "root-ca")])  # same name, different key
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = tmp_path / "evil-ca.pem"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    code, out = run_attest(
        ["verify-model-sig", str(vectors / "v1.0.0-certificate"), "--certificate-chain", str(pem)]
    ).code_output
    assert code == 1, out
    assert "model.sig" in out and "chain" in out


def test_vector_wrong_identity_fails(vectors: Path, shared_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = shared_dir / "vectors" / "sigstore" / "production-trusted_root.json"
    for identity, issuer in [("mallory@example.com", ISSUER), (IDENTITY, "https://accounts.google.com")]:
        code, out = run_attest(
            [
                "verify-model-sig",
                str(vectors / "v1.1.0-sigstore"),
                "--identity",
                identity,
                "--issuer",
                issuer,
                "--trust-root",
                str(root),
            ]
        ).code_output
        assert code == 1, out
        assert "model.sig" in out


def test_sigstore_vector_rejected_under_staging_root(
    vectors: Path, shared_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = shared_dir / "vectors" / "sigstore" / "staging-trusted_root.json"
    code, out = run_attest(
        [
            "verify-model-sig",
            str(vectors / "v1.1.0-sigstore"),
            "--identity",
            IDENTITY,
            "--issuer",
            ISSUER,
            "--trust-root",
            str(root),
        ]
    ).code_output
    assert code == 1, out


def test_key_given_for_certificate_bundle_fails(vectors: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Trust is what the caller passes: a key that did not sign fails, whatever the bundle carries."""
    code, out = run_attest(
        ["verify-model-sig", str(vectors / "v1.1.0-sigstore"), "--key", str(vectors / "keys" / "signing-key-pub.pem")]
    ).code_output
    assert code == 1, out

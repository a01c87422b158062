"""Key files: PKCS#8 PEM at mode 0600 with PATH.pub, optional passphrase, and one-line errors for bad key files."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from attest.errors import InputError
from attest.signing import KEY_TYPES, generate_key, load_private_key, load_public_key
from attest.signing.keys import READABLE_KEY_TYPES, KeyType


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_generate_and_load(tmp_path: Path, key_type: KeyType) -> None:
    path = tmp_path / "builder.key"
    public = generate_key(path, key_type)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert load_public_key(tmp_path / "builder.key.pub").keyid == public.keyid
    key = load_private_key(path)
    assert key.key_type == key_type and key.public.keyid == public.keyid
    assert public.verify(key.sign(b"x"), b"x") and not public.verify(key.sign(b"x"), b"y")


def test_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "k"
    generate_key(path, passphrase=b"correct horse")
    assert path.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert load_private_key(path, b"correct horse").key_type == "ed25519"
    with pytest.raises(InputError, match="wrong passphrase"):
        load_private_key(path, b"battery staple")
    with pytest.raises(InputError, match="encrypted"):
        load_private_key(path)


def test_bad_key_files(tmp_path: Path) -> None:
    generate_key(tmp_path / "k")
    with pytest.raises(InputError, match="already exists"):
        generate_key(tmp_path / "k")
    with pytest.raises(InputError, match="no such private key"):
        load_private_key(tmp_path / "missing")
    with pytest.raises(InputError, match="not a PEM private key"):
        load_private_key(tmp_path / "k.pub")
    with pytest.raises(InputError, match="not a PEM public key"):
        load_public_key(tmp_path / "k")
    rsa_path = tmp_path / "rsa"
    rsa_path.write_bytes(
        rsa.generate_private_key(65537, 2048).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(InputError, match="unsupported key type"):
        load_private_key(rsa_path)


def test_p521_is_read_only_when_asked(tmp_path: Path) -> None:
    """attest neither makes nor trusts P-521 keys; model-signing may use them, so its commands ask for them."""
    k = ec.generate_private_key(ec.SECP521R1())
    pub = tmp_path / "p521.pub"
    pub.write_bytes(
        k.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    priv = tmp_path / "p521.key"
    priv.write_bytes(
        k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    with pytest.raises(InputError, match="unsupported key type"):
        load_public_key(pub)
    with pytest.raises(InputError, match="unsupported key type"):
        load_private_key(priv)
    public = load_public_key(pub, key_types=READABLE_KEY_TYPES)
    private = load_private_key(priv, key_types=READABLE_KEY_TYPES)
    assert public.key_type == private.key_type == "ecdsa-p521" and public.source == str(pub)
    assert public.verify(private.sign(b"x"), b"x") and not public.verify(private.sign(b"x"), b"y")

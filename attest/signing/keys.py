"""Signing keys: Ed25519 (default), ECDSA P-256 and P-384; P-521 is also read (model-signing keys may use it) but
not generated. Private keys are PKCS#8 PEM (optionally encrypted with a passphrase) at mode 0600; the public key is
SubjectPublicKeyInfo PEM beside it at PATH.pub.

A key's id is the sha256 of its SubjectPublicKeyInfo DER. It is only a hint in envelopes: verification tries every
trusted key, it never picks trust by id.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, Literal, Self, TypeVar

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from attest.atomic import atomic_write_bytes
from attest.bounded import read_bounded
from attest.errors import InputError

KeyType = Literal["ed25519", "ecdsa-p256", "ecdsa-p384", "ecdsa-p521"]
KEY_TYPES: tuple[KeyType, ...] = ("ed25519", "ecdsa-p256", "ecdsa-p384")
"""The types attest makes and trusts (the default of every loader)."""
READABLE_KEY_TYPES: tuple[KeyType, ...] = (*KEY_TYPES, "ecdsa-p521")
"""What a loader reads when the caller asks: model-signing keys may be P-521."""
PASSPHRASE_ENV = "ATTEST_KEY_PASSPHRASE"
MAX_KEY_FILE = 64 * 1024

PrivateKeyTypes = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
PublicKeyTypes = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey

_CURVES: dict[str, tuple[KeyType, hashes.HashAlgorithm]] = {
    "secp256r1": ("ecdsa-p256", hashes.SHA256()),
    "secp384r1": ("ecdsa-p384", hashes.SHA384()),
    "secp521r1": ("ecdsa-p521", hashes.SHA512()),
}
"""The Sigstore / model-signing pairing of curve and ECDSA digest; other curves are refused."""


def _key_type(
    key: PrivateKeyTypes | PublicKeyTypes, path: Path | None, key_types: tuple[KeyType, ...] = KEY_TYPES
) -> KeyType:
    kt: KeyType | None = None
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        kt = "ed25519"
    elif isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) and key.curve.name in _CURVES:
        kt = _CURVES[key.curve.name][0]
    if kt is None or kt not in key_types:
        raise InputError(path, f"unsupported key type (use one of {', '.join(KEY_TYPES)})")
    return kt


KeyObject = TypeVar("KeyObject", bound=PrivateKeyTypes | PublicKeyTypes)


@dataclass(frozen=True)
class _Key(Generic[KeyObject]):
    key: KeyObject
    key_type: KeyType
    source: str | None = field(default=None, compare=False)
    """Where it was read from (a label for messages, never part of the key's identity)."""

    @classmethod
    def from_crypto(cls, key: KeyObject, source: str | None = None, key_types: tuple[KeyType, ...] = KEY_TYPES) -> Self:
        """Wrap a `cryptography` key of one of `key_types` (InputError for any other)."""
        return cls(key, _key_type(key, None, key_types), source)


@dataclass(frozen=True)
class PublicKey(_Key[PublicKeyTypes]):
    """A trusted (or to-be-trusted) verification key."""

    @property
    def spki_der(self) -> bytes:
        return self.key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

    @property
    def pem(self) -> str:
        return self.key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")

    @property
    def keyid(self) -> str:
        """sha256 hex of the SubjectPublicKeyInfo DER: a hint, never a source of trust."""
        return hashlib.sha256(self.spki_der).hexdigest()

    def verify(self, signature: bytes, data: bytes) -> bool:
        """True iff signature is valid for data: raw 64 bytes for Ed25519, DER (r, s) for ECDSA."""
        try:
            if isinstance(self.key, ed25519.Ed25519PublicKey):
                self.key.verify(signature, data)
            else:
                self.key.verify(signature, data, ec.ECDSA(_CURVES[self.key.curve.name][1]))
        except (InvalidSignature, ValueError):
            return False
        return True


@dataclass(frozen=True)
class PrivateKey(_Key[PrivateKeyTypes]):
    """A signing key loaded from PKCS#8 PEM."""

    @property
    def public(self) -> PublicKey:
        return PublicKey(self.key.public_key(), self.key_type)

    def sign(self, data: bytes) -> bytes:
        if isinstance(self.key, ed25519.Ed25519PrivateKey):
            return self.key.sign(data)
        return self.key.sign(data, ec.ECDSA(_CURVES[self.key.curve.name][1]))


def generate_private_key(key_type: KeyType = "ed25519") -> PrivateKey:
    if key_type == "ed25519":
        return PrivateKey(ed25519.Ed25519PrivateKey.generate(), key_type)
    if key_type == "ecdsa-p256":
        return PrivateKey(ec.generate_private_key(ec.SECP256R1()), key_type)
    if key_type == "ecdsa-p384":
        return PrivateKey(ec.generate_private_key(ec.SECP384R1()), key_type)
    raise InputError(None, f"unknown key type {key_type!r} (choose from {', '.join(KEY_TYPES)})")


def public_key_path(path: Path) -> Path:
    return path.with_name(path.name + ".pub")


def write_key_pair(
    path: str | os.PathLike[str], key: PrivateKey, passphrase: bytes | None = None, *, overwrite: bool = False
) -> Path:
    """Write PATH (PKCS#8 PEM, mode 0600 from creation on) and PATH.pub; refuse to clobber unless overwrite."""
    target = Path(path)
    pub = public_key_path(target)
    if not target.parent.is_dir():
        raise InputError(target.parent, "no such folder")
    if not overwrite:
        for p in (target, pub):
            if p.exists():
                raise InputError(p, "already exists (use --force to replace it)")
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    pem = key.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    atomic_write_bytes(target, pem, mode=0o600)
    try:
        atomic_write_bytes(pub, key.public.pem.encode("ascii"), mode=0o644)
    except BaseException:
        with contextlib.suppress(OSError):
            target.unlink()
        raise
    return pub


def generate_key(
    path: str | os.PathLike[str],
    key_type: KeyType = "ed25519",
    passphrase: bytes | None = None,
    *,
    overwrite: bool = False,
) -> PublicKey:
    """Generate a key pair and write it (see write_key_pair); returns the public key."""
    key = generate_private_key(key_type)
    write_key_pair(path, key, passphrase, overwrite=overwrite)
    return key.public


def _read_pem(path: Path, what: str) -> bytes:
    if not path.is_file():
        raise InputError(path, f"no such {what} file")
    return read_bounded(path, MAX_KEY_FILE, f"too large for a {what}")


class EncryptedKeyError(InputError):
    """The private key needs a passphrase that was not given (a CLI may then prompt)."""


def env_passphrase() -> bytes | None:
    value = os.environ.get(PASSPHRASE_ENV)
    return value.encode("utf-8") if value else None


def load_private_key(
    path: str | os.PathLike[str], passphrase: bytes | None = None, *, key_types: tuple[KeyType, ...] = KEY_TYPES
) -> PrivateKey:
    """Load a PKCS#8 (or traditional) PEM private key; an encrypted one needs its passphrase."""
    p = Path(path)
    data = _read_pem(p, "private key")
    try:
        try:
            key = serialization.load_pem_private_key(data, password=passphrase)
        except TypeError:
            if passphrase is None:
                raise EncryptedKeyError(p, f"key is encrypted: give its passphrase (${PASSPHRASE_ENV})") from None
            key = serialization.load_pem_private_key(data, password=None)  # a passphrase for a plain key: unused
    except ValueError as exc:
        if "password" in str(exc).lower() or "decrypt" in str(exc).lower():
            raise InputError(p, "wrong passphrase for this key") from None
        raise InputError(p, "not a PEM private key") from None
    except UnsupportedAlgorithm:
        raise InputError(p, "unsupported key algorithm") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
        raise InputError(p, f"unsupported key type (use one of {', '.join(KEY_TYPES)})")
    return PrivateKey(key, _key_type(key, p, key_types), str(p))


def load_public_key(path: str | os.PathLike[str], *, key_types: tuple[KeyType, ...] = KEY_TYPES) -> PublicKey:
    """Load a SubjectPublicKeyInfo PEM public key (what `attest keygen` writes to PATH.pub)."""
    p = Path(path)
    data = _read_pem(p, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise InputError(p, "not a PEM public key") from None
    if not isinstance(key, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey):
        raise InputError(p, f"unsupported key type (use one of {', '.join(KEY_TYPES)})")
    return PublicKey(key, _key_type(key, p, key_types), str(p))

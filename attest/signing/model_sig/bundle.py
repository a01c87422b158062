"""The `model.sig` container: a Sigstore bundle v0.3 holding one DSSE envelope, read as plain JSON and written in
model-signing's key mode. Nothing read here is trusted: `read_model_sig` only finds out which variant a bundle is."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from attest.bounded import read_bounded
from attest.errors import InputError
from attest.signing.dsse import pae
from attest.signing.keys import READABLE_KEY_TYPES, PrivateKey, PublicKey
from attest.signing.model_sig.results import SignatureKind
from attest.statements.models import PAYLOAD_TYPE
from attest.strict_json import strict_loads

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
SIGNATURE_NAME = "model.sig"
MAX_SIGNATURE_BYTES = 64 * 1024 * 1024
MODEL_SIGNING_KEY_TYPES = ("ecdsa-p256", "ecdsa-p384", "ecdsa-p521")
"""model-signing signs with EC keys only (ECDSA, SHA-256/384/512 by curve)."""


@dataclass
class ModelSigBundle:
    """A parsed, not yet verified `model.sig`."""

    path: Path
    raw: bytes
    kind: SignatureKind
    media_type: str
    payload_type: str
    payload: bytes
    signature: bytes
    material: dict[str, Any]


def default_signature_path(model: Path) -> Path:
    """`model.sig` inside a model folder, or beside a single-file model."""
    return model / SIGNATURE_NAME if model.is_dir() else model.parent / SIGNATURE_NAME


def read_model_sig(path: str | os.PathLike[str]) -> ModelSigBundle:
    """Parse a `model.sig` far enough to know its variant; nothing in it is trusted yet. Malformed -> InputError."""
    p = Path(path)
    if p.is_symlink():
        raise InputError(p, "the signature is a symlink (refused: it could hide the file it points to from the check)")
    raw = read_small(p, MAX_SIGNATURE_BYTES)
    doc = parse_json(p, raw, "signature")
    if not isinstance(doc, dict):
        raise InputError(p, "not a Sigstore bundle (not a JSON object)")
    media_type = doc.get("mediaType")
    if not isinstance(media_type, str) or not media_type.startswith("application/vnd.dev.sigstore.bundle"):
        raise InputError(p, f"not a Sigstore bundle (mediaType {media_type!r})")
    material = doc.get("verificationMaterial")
    envelope = doc.get("dsseEnvelope")
    if not isinstance(material, dict):
        raise InputError(p, "bundle has no verificationMaterial object")
    if not isinstance(envelope, dict):
        raise InputError(p, "bundle holds no DSSE envelope (model-signing signatures always do)")
    payload_type = envelope.get("payloadType")
    signatures = envelope.get("signatures")
    if not isinstance(payload_type, str):
        raise InputError(p, "DSSE envelope has no payloadType string")
    if not isinstance(signatures, list) or len(signatures) != 1 or not isinstance(signatures[0], dict):
        raise InputError(p, "DSSE envelope must hold exactly one signature")
    payload = b64(p, envelope.get("payload"), "DSSE payload")
    signature = b64(p, signatures[0].get("sig"), "DSSE signature")
    if "x509CertificateChain" in material:
        kind: SignatureKind = "certificate"
    elif "certificate" in material or material.get("tlogEntries"):
        kind = "sigstore"
    elif "publicKey" in material:
        kind = "elliptic-key"
    else:
        raise InputError(p, "bundle verificationMaterial names no key, certificate chain or certificate")
    return ModelSigBundle(p, raw, kind, media_type, payload_type, payload, signature, material)


def make_key_bundle(payload: bytes, private_key: PrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    """A model-signing key-mode bundle over `payload`: v0.3, DSSE, `publicKey.hint`, no transparency log entries."""
    key = (
        private_key
        if isinstance(private_key, PrivateKey)
        else PrivateKey.from_crypto(private_key, key_types=READABLE_KEY_TYPES)
    )
    check_key_type(key)
    sig = key.sign(pae(PAYLOAD_TYPE, payload))
    bundle = {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": key_hint(key.public)}, "tlogEntries": []},
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode("ascii"),
            "payloadType": PAYLOAD_TYPE,
            "signatures": [{"sig": base64.b64encode(sig).decode("ascii"), "keyid": ""}],
        },
    }
    return (json.dumps(bundle, indent=2) + "\n").encode("utf-8")


def key_hint(public_key: PublicKey) -> str:
    """model-signing's `publicKey.hint`: sha256 hex of the SPKI PEM. A label for humans, never a trust decision."""
    return hashlib.sha256(public_key.pem.encode("ascii")).hexdigest()


def check_key_type(key: PublicKey | PrivateKey) -> None:
    """model-signing keys are EC P-256, P-384 or P-521: refuse any other key before it is used."""
    if key.key_type in MODEL_SIGNING_KEY_TYPES:
        return
    if isinstance(key, PublicKey):
        raise InputError(key.source, "not an EC P-256, P-384 or P-521 public key (what model-signing uses)")
    raise InputError(key.source, "not an EC P-256, P-384 or P-521 private key (what model-signing accepts)")


def read_small(path: Path, limit: int) -> bytes:
    """Read a whole small input file (a regular file), refusing anything over `limit` bytes."""
    return read_bounded(path, limit, regular=True)


def parse_json(path: Path, data: bytes, what: str) -> Any:
    """Strict JSON: UTF-8, no duplicate keys (two parsers must never see two different documents), no number that
    overflows to Infinity."""
    try:
        return strict_loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InputError(path, f"{what} is not valid JSON ({exc})") from None


def b64(path: Path, value: object, what: str) -> bytes:
    """Protobuf-JSON bytes: standard base64, URL-safe accepted too, padding optional."""
    if not isinstance(value, str) or not value:
        raise InputError(path, f"{what} is missing or not a base64 string")
    std = value.replace("-", "+").replace("_", "/").rstrip("=")
    try:
        return base64.b64decode(std + "=" * (-len(std) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InputError(path, f"{what} is not valid base64") from None

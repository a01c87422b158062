"""The three ways model-signing writes a `model.sig`, as functions from the statement bytes to the bundle bytes: an
EC key (`publicKey.hint`), an EC key with its X.509 certificate chain (`x509CertificateChain`, as `model_signing sign
certificate`), and Sigstore keyless (Fulcio certificate and Rekor entry, as `model_signing sign sigstore`)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from attest.errors import InputError
from attest.signing import sigstore as keyless
from attest.signing.dsse import pae
from attest.signing.keys import PrivateKey
from attest.signing.model_sig.bundle import BUNDLE_MEDIA_TYPE, PAYLOAD_TYPE, check_key_type, make_key_bundle, read_small
from attest.signing.model_sig.signature import _may_sign as may_sign

BundleMaker = Callable[[bytes], bytes]
MAX_CERTIFICATE_FILE = 1024 * 1024


def key_signer(key: PrivateKey) -> BundleMaker:
    check_key_type(key)
    return lambda payload: make_key_bundle(payload, key)


def _certificates(path: Path) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(read_small(path, MAX_CERTIFICATE_FILE))
    except ValueError:
        raise InputError(path, "not a PEM certificate file") from None
    if not certs:
        raise InputError(path, "no certificate in it")
    return certs


def certificate_signer(key: PrivateKey, signing_certificate: Path, chain: Sequence[Path]) -> BundleMaker:
    """Sign with `key`, shipping its certificate and the chain above it (leaf first), so a verifier that trusts the
    chain's root accepts the signature. The certificate must be the key's and allow signing: checked before hashing."""
    check_key_type(key)
    leaf, *rest = _certificates(signing_certificate)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if leaf.public_key().public_bytes(serialization.Encoding.DER, spki) != key.public.spki_der:
        raise InputError(signing_certificate, "the certificate's public key is not the signing key's")
    if not may_sign(leaf):
        raise InputError(signing_certificate, "the certificate does not allow signing (key usage / code signing)")
    certs = [leaf, *rest, *(c for p in chain for c in _certificates(p))]
    raw = [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode("ascii") for c in certs]

    def make(payload: bytes) -> bytes:
        sig = key.sign(pae(PAYLOAD_TYPE, payload))
        bundle = {
            "mediaType": BUNDLE_MEDIA_TYPE,
            "verificationMaterial": {
                "x509CertificateChain": {"certificates": [{"rawBytes": r} for r in raw]},
                "tlogEntries": [],
            },
            "dsseEnvelope": {
                "payload": base64.b64encode(payload).decode("ascii"),
                "payloadType": PAYLOAD_TYPE,
                "signatures": [{"sig": base64.b64encode(sig).decode("ascii"), "keyid": ""}],
            },
        }
        return (json.dumps(bundle, indent=2) + "\n").encode("utf-8")

    return make


def sigstore_signer(*, staging: bool = False, token: str | None = None) -> BundleMaker:
    """Keyless: the OIDC token is obtained now (a clean one-line refusal without one, before any hashing); the
    bundle is made by sigstore-python (network: Fulcio and Rekor)."""
    raw = keyless.identity_token(token, staging=staging)
    return lambda payload: keyless.sign_sigstore(payload, staging=staging, token=raw).encode("utf-8")

"""Signatures: keys (Ed25519, ECDSA P-256/P-384), DSSE envelopes, verification to a statement, Sigstore bundles."""

from attest.signing.dsse import (
    Envelope,
    EnvelopeError,
    Signature,
    SignatureError,
    add_signature,
    pae,
    sign_envelope,
    verify_signatures,
)
from attest.signing.keys import (
    KEY_TYPES,
    KeyType,
    PrivateKey,
    PublicKey,
    generate_key,
    load_private_key,
    load_public_key,
)
from attest.signing.verify import PayloadTypeError, SubjectError, VerifiedStatement, check_subject, verify_envelope

__all__ = [
    "KEY_TYPES",
    "Envelope",
    "EnvelopeError",
    "KeyType",
    "PayloadTypeError",
    "PrivateKey",
    "PublicKey",
    "Signature",
    "SignatureError",
    "SubjectError",
    "VerifiedStatement",
    "add_signature",
    "check_subject",
    "generate_key",
    "load_private_key",
    "load_public_key",
    "pae",
    "sign_envelope",
    "verify_envelope",
    "verify_signatures",
]

"""OpenSSF model-signing (`model.sig`) interop: read, verify and write its signatures, on attest's own DSSE, keys and
folder walk.

A `model.sig` is a Sigstore bundle v0.3 holding one DSSE envelope over an in-toto Statement with predicate type
`https://model_signing/signature/v1.0`: the predicate lists one digest per file (or per file shard) and the subject
digest is SHA-256 over those digests. It comes in three variants: signed by an elliptic-curve key, by a key with an
X.509 certificate chain, or keyless through Sigstore (Fulcio certificate + Rekor entry).

The model-signing library is a peer we test against, not code we reuse. Split by job, as model-signing separates
`_serialization/` and `_signing/`: `bundle` (the container), `statement` (the signed payload), `serialization` (the
folder: ignore paths, scan, file and shard digests), `signature` (the trust variants), `verify` and `sign`.
"""

from attest.signing.model_sig.bundle import (
    BUNDLE_MEDIA_TYPE,
    PAYLOAD_TYPE,
    SIGNATURE_NAME,
    ModelSigBundle,
    check_key_type,
    default_signature_path,
    key_hint,
    make_key_bundle,
    read_model_sig,
)
from attest.signing.model_sig.results import (
    ModelSigFinding,
    ModelSigSerialization,
    ModelSigSigned,
    ModelSigVerification,
)
from attest.signing.model_sig.sign import sign_model_sig
from attest.signing.model_sig.signature import CertificateTrust, Trust, load_certificate_anchors
from attest.signing.model_sig.statement import PREDICATE_TYPE, STATEMENT_TYPE
from attest.signing.model_sig.verify import verify_model_sig, verify_with_any

__all__ = [
    "BUNDLE_MEDIA_TYPE",
    "PAYLOAD_TYPE",
    "PREDICATE_TYPE",
    "SIGNATURE_NAME",
    "STATEMENT_TYPE",
    "CertificateTrust",
    "ModelSigBundle",
    "ModelSigFinding",
    "ModelSigSerialization",
    "ModelSigSigned",
    "ModelSigVerification",
    "Trust",
    "check_key_type",
    "default_signature_path",
    "key_hint",
    "load_certificate_anchors",
    "make_key_bundle",
    "read_model_sig",
    "sign_model_sig",
    "verify_model_sig",
    "verify_with_any",
]

"""Does the bundle's signature verify under what the caller trusts? Three variants: an EC public key, signing
certificates chaining to trust anchors, or a Sigstore keyless identity. Material inside the bundle (an embedded key,
the key hint, a keyid) never selects trust; the hint only explains a failure."""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509 import verification as x509_verification

from attest.errors import InputError
from attest.signing.dsse import pae
from attest.signing.keys import PublicKey
from attest.signing.model_sig.bundle import (
    BUNDLE_MEDIA_TYPE,
    MODEL_SIGNING_KEY_TYPES,
    ModelSigBundle,
    b64,
    key_hint,
    read_small,
)
from attest.signing.sigstore import SigstoreTrust, offline_verifier

MAX_CERTIFICATES_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class CertificateTrust:
    """Trust signing certificates that chain to one of these certificates (all are trust anchors)."""

    anchors: tuple[x509.Certificate, ...]
    source: str = "certificate chain"


Trust = PublicKey | CertificateTrust | SigstoreTrust
"""What a `model.sig` can be checked under: the shared key and Sigstore identity types, or certificate anchors."""


class Rejected(Exception):
    """A signature check that said no; the message is one problem line."""


def load_certificate_anchors(paths: Iterable[str | os.PathLike[str]]) -> CertificateTrust:
    """Read PEM certificates (one or more per file); every one becomes a trust anchor, as model-signing does."""
    anchors: list[x509.Certificate] = []
    names = []
    for path in paths:
        p = Path(path)
        try:
            anchors.extend(x509.load_pem_x509_certificates(read_small(p, MAX_CERTIFICATES_BYTES)))
        except ValueError as exc:
            raise InputError(p, f"not PEM certificates ({exc})") from None
        names.append(str(p))
    if not anchors:
        raise InputError(None, "no certificates given")
    return CertificateTrust(tuple(anchors), ", ".join(names))


def verify_signature(bundle: ModelSigBundle, trust: Trust) -> tuple[str, bytes, str]:
    """Return (payload type, payload, signer) once the signature verifies under `trust`; else raise Rejected."""
    if isinstance(trust, SigstoreTrust):
        return _verify_sigstore(bundle, trust)
    if bundle.media_type != BUNDLE_MEDIA_TYPE:
        raise Rejected(f"bundle media type {bundle.media_type!r} is not {BUNDLE_MEDIA_TYPE!r}")
    if isinstance(trust, PublicKey):
        key = trust
        signer = f"public key {trust.source or 'key ' + trust.keyid[:16]} (hint {key_hint(key)[:16]})"
    else:
        key, signer = _verify_certificate_chain(bundle, trust)
    if not key.verify(bundle.signature, pae(bundle.payload_type, bundle.payload)):
        extra = ""
        if isinstance(trust, PublicKey):  # the hint only explains a failure; it never decides one
            hint = bundle.material.get("publicKey")
            hint = hint.get("hint") if isinstance(hint, dict) else None
            if isinstance(hint, str) and hint and hint != key_hint(trust):
                extra = " (its key hint names a different key)"
        raise Rejected(f"signature does not verify with {signer}{extra}")
    return bundle.payload_type, bundle.payload, signer


def _verify_certificate_chain(bundle: ModelSigBundle, trust: CertificateTrust) -> tuple[PublicKey, str]:
    """Path-validate the bundle's leaf certificate to the caller's anchors (now, not a claimed signing time)."""
    chain = bundle.material.get("x509CertificateChain")
    certs = chain.get("certificates") if isinstance(chain, dict) else None
    if not isinstance(certs, list) or not certs:
        raise Rejected("bundle carries no X.509 certificate chain (not a certificate-signed model.sig)")
    try:
        parsed = [
            x509.load_der_x509_certificate(
                b64(bundle.path, c.get("rawBytes") if isinstance(c, dict) else None, "certificate")
            )
            for c in certs
        ]
    except ValueError as exc:
        raise Rejected(f"bundle holds a malformed certificate ({exc})") from None
    leaf, intermediates = parsed[0], parsed[1:]
    # model-signing's own signing certificates are not WebPKI leaves (the vectors' asserts CA:TRUE), so the leaf's
    # extensions are checked below the way model-signing does; CA certificates keep the WebPKI profile.
    verifier = (
        x509_verification.PolicyBuilder()
        .store(x509_verification.Store(list(trust.anchors)))
        .time(datetime.datetime.now(datetime.UTC))
        .extension_policies(
            ca_policy=x509_verification.ExtensionPolicy.webpki_defaults_ca(),
            ee_policy=x509_verification.ExtensionPolicy.permit_all(),
        )
        .build_client_verifier()
    )
    try:
        verifier.verify(leaf, intermediates)
    except x509_verification.VerificationError as exc:
        raise Rejected(f"signing certificate does not chain to {trust.source}: {exc}") from None
    if not _may_sign(leaf):
        raise Rejected("signing certificate allows neither digitalSignature nor codeSigning")
    try:
        key = PublicKey.from_crypto(leaf.public_key(), key_types=MODEL_SIGNING_KEY_TYPES)  # type: ignore[arg-type]
    except InputError:
        raise Rejected("signing certificate key is not EC P-256, P-384 or P-521") from None
    fingerprint = leaf.fingerprint(hashes.SHA256()).hex()
    return key, f"certificate {leaf.subject.rfc4514_string()} (sha256 {fingerprint[:16]})"


def _may_sign(cert: x509.Certificate) -> bool:
    try:
        if cert.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature:
            return True
    except x509.ExtensionNotFound:
        pass
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        return x509.oid.ExtendedKeyUsageOID.CODE_SIGNING in eku
    except x509.ExtensionNotFound:
        return False


def _verify_sigstore(bundle: ModelSigBundle, trust: SigstoreTrust) -> tuple[str, bytes, str]:
    """Keyless: sigstore-python checks certificate, transparency log, identity policy and DSSE signature, offline.
    A bundle sigstore-python cannot read is a failed check here (model-signing's verdict), not bad input."""
    # sigstore-python is heavy and only the keyless variant needs it: imported on first use.
    from sigstore.errors import VerificationError as SigstoreVerificationError
    from sigstore.models import Bundle, InvalidBundle
    from sigstore.verify.policy import Identity

    try:
        sb = Bundle.from_json(bundle.raw)
    except (InvalidBundle, ValueError, KeyError, TypeError) as exc:
        raise Rejected(f"not a valid Sigstore bundle ({exc})") from None
    verifier = offline_verifier(trust.trusted_root)
    try:
        payload_type, payload = verifier.verify_dsse(sb, Identity(identity=trust.identity, issuer=trust.issuer))
    except SigstoreVerificationError as exc:
        raise Rejected(f"Sigstore verification failed for {trust.identity} / {trust.issuer}: {exc}") from None
    return payload_type, payload, f"{trust.identity} (issuer {trust.issuer}, Sigstore)"

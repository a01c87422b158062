"""Sigstore bundles (keyless signing): signing needs a network and an OIDC identity; verifying a stored bundle works
offline against a trusted root file.

sigstore-python's `verify_dsse` checks the certificate, transparency log entry and signature but not what was
signed: the payload type and subject are checked here.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from attest.errors import InputError, VerificationError
from attest.signing.verify import check_payload_type, check_subject
from attest.statements.models import ProvenanceStatement
from attest.statements.parse import parse_provenance

if TYPE_CHECKING:
    from sigstore.verify import Verifier

TOKEN_ENV = "SIGSTORE_ID_TOKEN"
SIGSTORE_SUFFIX = ".sigstore.json"


class SigstoreError(VerificationError):
    """A Sigstore bundle that does not verify (certificate, identity, log entry or signature)."""


@dataclass(frozen=True)
class SigstoreTrust:
    """A Sigstore keyless identity to trust: certificate SAN and OIDC issuer, under a trusted root file (None: the
    bundled or cached production root, offline)."""

    identity: str
    issuer: str
    trusted_root: Path | None = None


def offline_verifier(trusted_root: Path | None, *, staging: bool = False) -> Verifier:
    """sigstore-python's verifier for a trusted root file, else the production (or staging) root; nothing fetched."""
    from sigstore.errors import Error as SigstoreLibError  # lazy: sigstore-python is slow to import
    from sigstore.models import TrustedRoot
    from sigstore.verify import Verifier

    try:
        if trusted_root is not None:
            return Verifier(trusted_root=TrustedRoot.from_file(str(trusted_root)))
        return Verifier.staging(offline=True) if staging else Verifier.production(offline=True)
    except (SigstoreLibError, ValueError, OSError) as exc:
        raise InputError(trusted_root, f"cannot load the Sigstore trusted root ({str(exc).splitlines()[0]})") from None


def verify_sigstore_bundle(
    bundle_json: bytes, *, identity: str, issuer: str, trusted_root: Path | None = None, staging: bool = False
) -> tuple[str, bytes]:
    """Verify a bundle offline and return (payloadType, payload). Without a trusted_root file, the locally cached
    TUF root of the production (or staging) instance is used; nothing is fetched."""
    from sigstore.errors import Error as SigstoreLibError  # lazy: sigstore-python is slow to import
    from sigstore.models import Bundle
    from sigstore.verify.policy import Identity

    try:
        bundle = Bundle.from_json(bundle_json)
    except (SigstoreLibError, ValueError) as exc:
        raise InputError(None, f"not a valid Sigstore bundle ({str(exc).splitlines()[0]})") from None
    verifier = offline_verifier(trusted_root, staging=staging)
    try:
        return verifier.verify_dsse(bundle, Identity(identity=identity, issuer=issuer))
    except SigstoreLibError as exc:
        raise SigstoreError(f"Sigstore bundle does not verify: {str(exc).splitlines()[0]}") from None


def verify_sigstore_statement(
    bundle_json: bytes,
    *,
    identity: str,
    issuer: str,
    trusted_root: Path | None = None,
    staging: bool = False,
    subject_digest: str | None = None,
) -> ProvenanceStatement:
    """A verified bundle whose payload is an in-toto SLSA Provenance v1 statement (about subject_digest if given)."""
    payload_type, payload = verify_sigstore_bundle(
        bundle_json, identity=identity, issuer=issuer, trusted_root=trusted_root, staging=staging
    )
    check_payload_type(payload_type)
    statement = parse_provenance(payload)
    if subject_digest is not None:
        check_subject(statement, subject_digest)
    return statement


def identity_token(token: str | None = None, *, staging: bool = False, interactive: bool | None = None) -> str:
    """An OIDC token: the one given, else $SIGSTORE_ID_TOKEN, else ambient CI credentials, else (on a terminal)
    the browser flow. Raises InputError when none can be had."""
    if token:
        return token
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV]
    from sigstore.oidc import IdentityError, Issuer, detect_credential  # lazy: sigstore-python is slow to import

    try:
        ambient = detect_credential()
    except IdentityError as exc:
        raise InputError(None, f"Sigstore: ambient OIDC credential detection failed ({exc})") from None
    if ambient:
        return ambient
    if interactive is None:
        interactive = sys.stdin.isatty()
    if not interactive:
        raise InputError(None, f"Sigstore signing needs an OIDC identity token (set ${TOKEN_ENV} or run in CI)")
    from sigstore.models import ClientTrustConfig  # lazy: sigstore-python is slow to import

    config = ClientTrustConfig.staging() if staging else ClientTrustConfig.production()
    return str(Issuer(config.signing_config.get_oidc_url()).identity_token())


def sign_sigstore(payload: bytes, *, staging: bool = False, token: str | None = None) -> str:
    """Keyless signing of exactly these statement bytes: Fulcio certificate, Rekor entry. Returns the bundle JSON."""
    from sigstore.dsse import Statement as SigstoreStatement  # lazy: sigstore-python is slow to import
    from sigstore.errors import Error as SigstoreLibError
    from sigstore.models import ClientTrustConfig
    from sigstore.oidc import IdentityToken
    from sigstore.sign import SigningContext

    raw = identity_token(token, staging=staging)
    try:
        config = ClientTrustConfig.staging() if staging else ClientTrustConfig.production()
        context = SigningContext.from_trust_config(config)
        with context.signer(IdentityToken(raw), cache=False) as signer:
            bundle = signer.sign_dsse(SigstoreStatement(payload))
    except (SigstoreLibError, OSError) as exc:
        raise InputError(None, f"Sigstore signing failed: {str(exc).splitlines()[0]}") from None
    return bundle.to_json()

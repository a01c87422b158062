"""From a signed envelope to a statement the caller may act on: signatures, then payload type, then statement shape,
then (optionally) the subject. Nothing from the payload is looked at before a trusted signature covers it."""

from __future__ import annotations

from dataclasses import dataclass

from attest.errors import VerificationError
from attest.signing.dsse import Envelope, verify_signatures
from attest.signing.keys import PublicKey
from attest.statements.models import PAYLOAD_TYPE, ProvenanceStatement, Statement
from attest.statements.parse import parse_provenance


class PayloadTypeError(VerificationError):
    """A validly signed envelope whose payloadType is not an in-toto statement."""


class SubjectError(VerificationError):
    """A validly signed statement about something else (no subject with the expected sha256 digest)."""


@dataclass(frozen=True)
class VerifiedStatement:
    """A statement whose payload bytes at least `threshold` distinct trusted keys signed."""

    statement: ProvenanceStatement
    signers: list[PublicKey]
    payload_digest: str
    envelope: Envelope


def check_payload_type(payload_type: str) -> None:
    if payload_type != PAYLOAD_TYPE:
        raise PayloadTypeError(f"payloadType is {payload_type!r}, expected {PAYLOAD_TYPE!r}")


def check_subject(statement: Statement, sha256_hex: str) -> None:
    """The statement must name the expected digest (a model root) among its subjects."""
    if sha256_hex not in statement.subject_digests("sha256"):
        names = ", ".join(f"{s.name}={s.digest.get('sha256', '?')[:16]}" for s in statement.subject)
        raise SubjectError(f"statement is about {names}, not {sha256_hex}")


def verify_envelope(
    envelope: Envelope, trusted_keys: list[PublicKey], *, threshold: int = 1, subject_digest: str | None = None
) -> VerifiedStatement:
    """Check signatures (SignatureError), payload type (PayloadTypeError), SLSA Provenance v1 shape
    (StatementError) and, when given, that a subject has sha256 = subject_digest (SubjectError)."""
    signers = verify_signatures(envelope, trusted_keys, threshold)
    check_payload_type(envelope.payloadType)
    statement = parse_provenance(envelope.payload_bytes)
    if subject_digest is not None:
        check_subject(statement, subject_digest)
    return VerifiedStatement(statement, signers, envelope.payload_digest, envelope)

"""DSSE envelopes (https://github.com/secure-systems-lab/dsse, protocol v1): the signature wraps exact payload bytes.

Signatures are over PAE(payloadType, payload). The envelope JSON is not canonical and is not authenticated; only the
payload bytes and payloadType are. Primitives come from `cryptography` (attest.signing.keys); this module only frames.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from attest.errors import InputError, VerificationError
from attest.signing.keys import PrivateKey, PublicKey
from attest.statements.models import PAYLOAD_TYPE
from attest.statements.parse import load_json, to_json_bytes

MAX_SIGNATURES = 64


class EnvelopeError(InputError):
    """An envelope that is not well-formed DSSE JSON (bad base64, missing fields)."""

    def __init__(self, problem: str, path: str | None = None) -> None:
        super().__init__(path, problem)


class SignatureError(VerificationError):
    """No trusted key (or too few distinct trusted keys) produced a valid signature over the envelope's PAE."""


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSEv1 pre-authentication encoding: "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(t), t, len(payload), payload)


def b64decode(value: str, what: str) -> bytes:
    """Standard or URL-safe base64 (DSSE allows both, one alphabet per string), padding required, and the canonical
    encoding of the bytes (zero pad bits): one text per byte string, nothing else tolerated (SPEC.md 3.1)."""
    urlsafe = "-" in value or "_" in value
    if urlsafe and ("+" in value or "/" in value):
        raise EnvelopeError(f"{what} mixes the standard and URL-safe base64 alphabets")
    try:
        raw = base64.b64decode(value.replace("-", "+").replace("_", "/") if urlsafe else value, validate=True)
    except (binascii.Error, ValueError):
        raise EnvelopeError(f"{what} is not valid base64") from None
    canonical = base64.urlsafe_b64encode(raw) if urlsafe else base64.b64encode(raw)
    if canonical.decode("ascii") != value:
        raise EnvelopeError(f"{what} is not the canonical base64 of its bytes (non-zero pad bits)")
    return raw


class Signature(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    keyid: str = Field("", description="Unauthenticated hint: sha256 of the signer's SubjectPublicKeyInfo DER")
    sig: str = Field(description="base64 signature over PAE(payloadType, payload)")

    def sig_bytes(self) -> bytes:
        return b64decode(self.sig, "signature")


class Envelope(BaseModel):
    """A DSSE JSON envelope; `payload` and `sig` stay base64 text exactly as read."""

    model_config = ConfigDict(extra="allow", frozen=True)

    payload: str
    payloadType: str
    signatures: list[Signature] = Field(max_length=MAX_SIGNATURES)

    @property
    def payload_bytes(self) -> bytes:
        return b64decode(self.payload, "payload")

    @property
    def payload_digest(self) -> str:
        """sha256 of the payload bytes: the statement's name in bundles and file names."""
        return hashlib.sha256(self.payload_bytes).hexdigest()

    def pae(self) -> bytes:
        return pae(self.payloadType, self.payload_bytes)

    def to_json(self) -> str:
        """One line of compact JSON (a line of a `.intoto.jsonl` bundle)."""
        return to_json_bytes(self.model_dump(mode="json")).decode("utf-8")

    @classmethod
    def from_json(cls, data: bytes | str) -> Envelope:
        raw = data.encode("utf-8") if isinstance(data, str) else data
        doc = load_json(raw, "envelope")
        try:
            env = cls.model_validate(doc)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(x) for x in first["loc"]) or "document"
            raise EnvelopeError(f"not a DSSE envelope ({where}: {first['msg']})") from None
        env.payload_bytes  # noqa: B018 (decode now: a bad payload is a format error, not a signature failure)
        for s in env.signatures:
            s.sig_bytes()
        return env


def sign_envelope(payload: bytes, keys: list[PrivateKey], payload_type: str = PAYLOAD_TYPE) -> Envelope:
    """Sign exactly these payload bytes with each key (one signature per key, in order)."""
    if not keys:
        raise InputError(None, "no signing key given")
    msg = pae(payload_type, payload)
    return Envelope(
        payload=base64.b64encode(payload).decode("ascii"),
        payloadType=payload_type,
        signatures=[Signature(keyid=k.public.keyid, sig=base64.b64encode(k.sign(msg)).decode("ascii")) for k in keys],
    )


def add_signature(envelope: Envelope, key: PrivateKey) -> Envelope:
    """A countersignature: the same payload bytes, one more signature (a key that already signed is not repeated)."""
    if any(key.public.verify(s.sig_bytes(), envelope.pae()) for s in envelope.signatures):
        return envelope
    sig = Signature(keyid=key.public.keyid, sig=base64.b64encode(key.sign(envelope.pae())).decode("ascii"))
    return envelope.model_copy(update={"signatures": [*envelope.signatures, sig]})


def verify_signatures(envelope: Envelope, trusted_keys: list[PublicKey], threshold: int = 1) -> list[PublicKey]:
    """The distinct trusted keys with a valid signature over the envelope's PAE; SignatureError below threshold.

    Every signature is tried against every trusted key: the keyid only orders the attempts."""
    if threshold < 1:
        raise ValueError("threshold must be at least 1")
    msg = envelope.pae()
    signers: list[PublicKey] = []
    for s in envelope.signatures:
        sig = s.sig_bytes()
        candidates = sorted(trusted_keys, key=lambda k: k.keyid != s.keyid)
        for key in candidates:
            if any(key.spki_der == k.spki_der for k in signers):
                continue
            if key.verify(sig, msg):
                signers.append(key)
                break
    if len(signers) < threshold:
        if not trusted_keys:
            raise SignatureError("no trusted keys given")
        raise SignatureError(
            f"{len(signers)} of {len(envelope.signatures)} signatures verify with a trusted key, {threshold} needed"
        )
    return signers

"""SPEC.md 2.1-2.2, 3.1 and 3.3 from the text: statements, DSSE envelopes under given keys, and bundles."""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

import jsonschema
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from tests.conformance.reference import SCHEMAS, Refusal, bad_input, rejected
from tests.conformance.reference.identity import _Duplicate, _no_duplicates, finite

PAYLOAD_TYPE = "application/vnd.in-toto+json"
SLSA = "https://slsa.dev/provenance/v1"
SLSA_SCHEMA = json.loads((SCHEMAS / "slsa-provenance-statement.schema.json").read_text())
HEX = re.compile(r"^[0-9a-f]+$")


def strict_json(data: bytes, reason: str) -> Any:
    """2.1: UTF-8, no duplicate keys, no NaN/Infinity, bounded."""
    if len(data) > 64 * 1024 * 1024:
        raise bad_input(reason, "too large")
    try:
        return json.loads(
            data.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant, parse_float=finite
        )
    except (UnicodeDecodeError, _Duplicate, ValueError):
        raise bad_input(reason) from None


def _no_constant(name: str) -> Any:
    raise ValueError(name)


def check_statement(payload: bytes) -> dict[str, Any]:
    """A Statement v1 with an SLSA Provenance v1 predicate: the schema, then the rules the schema cannot say."""
    doc = strict_json(payload, "statement-json")
    try:
        jsonschema.validate(doc, SLSA_SCHEMA)
    except jsonschema.ValidationError:
        raise bad_input("statement") from None
    if doc["predicateType"] != SLSA:  # required, no default
        raise bad_input("statement", "predicateType")
    for s in doc["subject"]:
        if not all(isinstance(v, str) and HEX.match(v) for v in s["digest"].values()):
            raise bad_input("statement", "subject digest not lowercase hex")
    return doc


def b64(text: Any) -> bytes:
    """3.1: standard or URL-safe alphabet (not both), padding, no whitespace, the canonical text of its bytes."""
    if not isinstance(text, str):
        raise bad_input("envelope")
    urlsafe = bool(set(text) & set("-_"))
    if urlsafe and set(text) & set("+/"):
        raise bad_input("envelope", "mixed alphabets")
    try:
        raw = base64.b64decode(text.translate(str.maketrans("-_", "+/")), validate=True)
    except (binascii.Error, ValueError):
        raise bad_input("envelope", "not base64") from None
    if (base64.urlsafe_b64encode(raw) if urlsafe else base64.b64encode(raw)).decode() != text:
        raise bad_input("envelope", "not canonical")
    return raw


def pae(payload_type: str, payload: bytes) -> bytes:
    t = payload_type.encode("utf-8")
    return b"DSSEv1 " + str(len(t)).encode() + b" " + t + b" " + str(len(payload)).encode() + b" " + payload


def load_public_key(pem: bytes) -> Any:
    return serialization.load_pem_public_key(pem)


def _verifies(key: Any, sig: bytes, msg: bytes) -> bool:
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(sig, msg)
        elif isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in ("secp256r1", "secp384r1"):
            digest = hashes.SHA256() if key.curve.name == "secp256r1" else hashes.SHA384()
            key.verify(sig, msg, ec.ECDSA(digest))
        else:
            return False
    except (InvalidSignature, ValueError):
        return False
    return True


def parse_envelope(data: bytes) -> tuple[str, bytes, list[bytes]]:
    """Step 1: (payloadType, payload bytes, signatures) of a well-formed envelope."""
    doc = strict_json(data, "envelope")
    if not isinstance(doc, dict) or not isinstance(doc.get("payloadType"), str):
        raise bad_input("envelope")
    sigs = doc.get("signatures")
    if not isinstance(sigs, list) or len(sigs) > 64:
        raise bad_input("envelope")
    if not all(isinstance(s, dict) and isinstance(s.get("keyid", ""), str) for s in sigs):
        raise bad_input("envelope")
    return doc["payloadType"], b64(doc.get("payload")), [b64(s.get("sig")) for s in sigs]


def check_envelope(data: bytes, keys: dict[str, Any], threshold: int = 1, subject: str | None = None) -> list[str]:
    """3.1 steps 1-5 in order; the names of the distinct trusted keys whose signatures verify."""
    payload_type, payload, sigs = parse_envelope(data)
    msg = pae(payload_type, payload)
    signers: list[str] = []
    for sig in sigs:
        for name, key in keys.items():
            if name not in signers and _verifies(key, sig, msg):
                signers.append(name)
                break
    if len(signers) < threshold:
        raise rejected("signature")
    if payload_type != PAYLOAD_TYPE:
        raise rejected("payload-type")
    doc = check_statement(payload)
    if subject is not None and subject not in [s["digest"].get("sha256") for s in doc["subject"]]:
        raise rejected("subject")
    return signers


def check_bundle(data: bytes) -> int:
    """3.3: LF-terminated lines, each a well-formed envelope; the number of envelopes."""
    if not data:
        return 0
    if not data.endswith(b"\n"):
        raise bad_input("bundle-truncated")
    lines = data[:-1].split(b"\n")
    if len(lines) > 100000:
        raise bad_input("bundle-too-long")
    merged: dict[tuple[str, bytes], list[bytes]] = {}
    for line in lines:
        if not line.strip():
            raise bad_input("bundle-empty-line")
        try:
            payload_type, payload, sigs = parse_envelope(line)
        except Refusal:
            raise bad_input("bundle-line") from None
        union = merged.setdefault((payload_type, payload), [])
        union.extend(s for s in sigs if s not in union)
        if len(union) > 64:
            raise bad_input("bundle-signatures-per-statement")
    if sum(len(sigs) for sigs in merged.values()) > 1024:
        raise bad_input("bundle-signatures-total")
    per_subject: dict[str, int] = {}
    for _, payload in merged:
        for digest in dict.fromkeys(_subject_digests(payload)):
            per_subject[digest] = per_subject.get(digest, 0) + 1
            if per_subject[digest] > 16:
                raise bad_input("bundle-statements-per-subject")
    return len(merged)


def _subject_digests(payload: bytes) -> list[str]:
    """sha256 subject digests of a payload that is an in-toto statement; none for anything else."""
    try:
        doc = strict_json(payload, "statement-json")
    except Refusal:
        return []
    subjects = doc.get("subject") if isinstance(doc, dict) else None
    if not isinstance(subjects, list):
        return []
    return [
        s["digest"]["sha256"]
        for s in subjects
        if isinstance(s, dict) and isinstance(s.get("digest"), dict) and isinstance(s["digest"].get("sha256"), str)
    ]

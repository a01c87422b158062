"""Shared by the generators: deterministic bytes, hand-written safetensors files, the test keys and signer, the
statement the envelopes sign, and expectation helpers."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from attest.conformance import Expectation
from attest.signing.dsse import pae
from attest.signing.keys import PrivateKey, PublicKey

ECDSA_CACHE = "keys/ecdsa-signatures.json"
SLSA = "https://slsa.dev/provenance/v1"
IN_TOTO = "https://in-toto.io/Statement/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"

Files = dict[str, bytes]


def stream(seed: str, n: int) -> bytes:
    """n deterministic bytes for a seed (SHA-256 in counter mode)."""
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}:{i}".encode()).digest()
        i += 1
    return bytes(out[:n])


def safetensors(
    tensors: list[tuple[str, str, list[int], bytes]], metadata: dict[str, str] | None = None, order: str = "name"
) -> bytes:
    """A safetensors file written byte by byte: header keys and data in the order given (or sorted by name)."""
    items = sorted(tensors) if order == "name" else list(tensors)
    header: dict[str, Any] = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    data = b""
    for name, dtype, shape, raw in items:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    return raw_safetensors(json.dumps(header, ensure_ascii=False).encode("utf-8"), data)


def raw_safetensors(header: bytes, data: bytes) -> bytes:
    pad = -len(header) % 8
    return struct.pack("<Q", len(header) + pad) + header + b" " * pad + data


KEY_NAMES = ("ed25519", "p256", "p384", "untrusted")


def test_key(name: str) -> PrivateKey:
    """The test keys, derived from fixed strings (so the suite regenerates without stored secrets)."""
    seed = hashlib.sha512(f"attest conformance TEST-ONLY key {name}".encode()).digest()
    if name in ("ed25519", "untrusted"):
        return PrivateKey(ed25519.Ed25519PrivateKey.from_private_bytes(seed[:32]), "ed25519")
    curve: ec.EllipticCurve = ec.SECP256R1() if name == "p256" else ec.SECP384R1()
    order = {
        "p256": 2**256 - 2**224 + 2**192 - 0x4319055258E8617B0C46353D039CDAAE,
        "p384": 2**384 - 0x389CB27E0BC8D220A7E5F24DB74F58851313E695333AD68D,
    }[name]
    scalar = int.from_bytes(seed, "big") % (order - 1) + 1
    return PrivateKey(ec.derive_private_key(scalar, curve), "ecdsa-p256" if name == "p256" else "ecdsa-p384")


class Signer:
    """Signs PAE bytes; ECDSA signatures are looked up before being made, so regenerating changes nothing."""

    def __init__(self, cache: dict[str, str]) -> None:
        self.old = cache
        self.used: dict[str, str] = {}

    def sign(self, name: str, message: bytes) -> str:
        key = test_key(name)
        if key.key_type == "ed25519":
            return base64.b64encode(key.sign(message)).decode()
        slot = f"{name}:{hashlib.sha256(message).hexdigest()}"
        sig = self.used.get(slot) or self.old.get(slot)
        if sig is None or not key.public.verify(base64.b64decode(sig), message):
            sig = base64.b64encode(key.sign(message)).decode()
        self.used[slot] = sig
        return sig


def write_keys(out: Path) -> None:
    keys = out / "keys"
    keys.mkdir(parents=True)
    (keys / "README.md").write_text(
        "# TEST-ONLY KEYS\n\nThese private keys are published on purpose: they sign the conformance vectors and nothing"
        " else.\nThey are derived from fixed strings in scripts/generate_conformance.py. Never trust them for anything"
        " real.\n`untrusted` is the key a verifier is not given (a signature by a stranger).\n"
    )
    for name in KEY_NAMES:
        key = test_key(name)
        pem = key.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        (keys / f"{name}.pem").write_bytes(pem)
        (keys / f"{name}.pub").write_text(key.public.pem)


def public(name: str) -> PublicKey:
    return test_key(name).public


def statement(subject_root: str, **changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "_type": IN_TOTO,
        "subject": [
            {
                "name": "single-file",
                "digest": {"sha256": subject_root},
                "annotations": {"identity": "attest-identity/v1"},
            }
        ],
        "predicateType": SLSA,
        "predicate": {
            "buildDefinition": {
                "buildType": "https://attest.dev/buildtypes/finetune/v1",
                "externalParameters": {"hyperparameters": {"learning_rate": 0.0001, "max_steps": 3}},
                "resolvedDependencies": [
                    {"name": "base", "digest": {"sha256": "ab" * 32}, "annotations": {"role": "base"}}
                ],
            },
            "runDetails": {
                "builder": {"id": "https://attest.dev/builders/attest-record/v1"},
                "metadata": {
                    "invocationId": "urn:uuid:00000000-0000-4000-8000-000000000017",
                    "startedOn": "2026-01-01T00:00:00Z",
                    "finishedOn": "2026-01-01T00:01:00Z",
                },
            },
        },
    }
    doc.update(changes)
    return doc


def compact(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def envelope(
    signer: Signer,
    payload: bytes,
    keys: list[str],
    payload_type: str = PAYLOAD_TYPE,
    signed_type: str | None = None,
    signed_payload: bytes | None = None,
    urlsafe: bool = False,
) -> dict[str, Any]:
    msg = pae(signed_type or payload_type, payload if signed_payload is None else signed_payload)
    enc = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    sigs = []
    for k in keys:
        sig = signer.sign(k, msg)
        sigs.append({"keyid": public(k).keyid, "sig": enc(base64.b64decode(sig)).decode()})
    return {"payload": enc(payload).decode(), "payloadType": payload_type, "signatures": sigs}


def accept(**kw: Any) -> Expectation:
    return Expectation(verdict="accept", exit_code=0, **kw)


def reject(exit_code: int, reason: str, error: str, message: str) -> Expectation:
    return Expectation(verdict="reject", exit_code=exit_code, reason=reason, error=error, message=message)


def write(out: Path, rel: str, data: bytes) -> None:
    p = out / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)

"""The signed payload: an in-toto Statement v1 with the model-signing predicate (`https://model_signing/signature/v1.0`),
checked field by field once its signature verified, and built for signing."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from attest.errors import InputError
from attest.signing.model_sig.bundle import PAYLOAD_TYPE, parse_json
from attest.signing.model_sig.results import ModelSigSerialization, ModelSigVerification

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
HASH_TYPES = ("sha256", "blake2", "blake3")
DIGEST_HEX_LEN = {"sha256": 64, "blake2": 128, "blake3": 64}


class ModelSigResource(BaseModel):
    """One signed file (or shard `path:start:end`) and its digest."""

    model_config = ConfigDict(extra="ignore", strict=True)
    name: str
    algorithm: str
    digest: str


class _Serialization(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    method: str
    hash_type: str
    allow_symlinks: bool = False
    shard_size: int | float | None = None
    ignore_paths: list[str] = Field(default_factory=list)


class _Predicate(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    serialization: _Serialization
    resources: list[ModelSigResource]


class _Subject(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    name: str = ""
    digest: dict[str, str]


class _Statement(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, populate_by_name=True)
    type_: str = Field(alias="_type")
    subject: list[_Subject]
    predicateType: str
    predicate: dict[str, Any]


def check_statement(
    sig_path: Path, payload_type: str, payload: bytes, result: ModelSigVerification
) -> tuple[ModelSigSerialization, list[ModelSigResource]] | None:
    """Checks on the authenticated payload; returns the serialization and resources, or None after a problem."""

    def fail(problem: str) -> None:
        result.problems.append(f"{sig_path}: {problem}")

    if payload_type != PAYLOAD_TYPE:
        fail(f"payload type {payload_type!r} is not {PAYLOAD_TYPE!r}")
        return None
    try:
        doc = parse_json(sig_path, payload, "signed statement")
        st = _Statement.model_validate(doc)
    except InputError as exc:
        fail(exc.problem)
        return None
    except ValidationError as exc:
        fail(f"signed statement is not an in-toto Statement ({_first_error(exc)})")
        return None
    if st.type_ != STATEMENT_TYPE:
        fail(f"statement type {st.type_!r} is not {STATEMENT_TYPE!r}")
        return None
    if st.predicateType != PREDICATE_TYPE:
        fail(f"predicate type {st.predicateType!r} is not {PREDICATE_TYPE!r}")
        return None
    if len(st.subject) != 1 or "sha256" not in st.subject[0].digest:
        fail("statement must have exactly one subject with a sha256 digest")
        return None
    try:
        pred = _Predicate.model_validate(st.predicate)
    except ValidationError as exc:
        fail(f"model-signing predicate is malformed ({_first_error(exc)})")
        return None
    result.model_name = st.subject[0].name
    result.subject_digest = st.subject[0].digest["sha256"]
    s = pred.serialization
    shard_size: int | None = None
    if s.method not in ("files", "shards"):
        fail(f"unknown serialization method {s.method!r}")
        return None
    if s.hash_type not in HASH_TYPES or (s.method == "shards" and s.hash_type == "blake3"):
        fail(f"unsupported hash type {s.hash_type!r} for {s.method} serialization")
        return None
    if s.method == "shards":
        # model-signing stores its predicate as a protobuf Struct, so the shard size arrives as a float (1024.0).
        if s.shard_size is None or s.shard_size != int(s.shard_size) or int(s.shard_size) <= 0:
            fail(f"shards serialization needs a positive integer shard_size, got {s.shard_size!r}")
            return None
        shard_size = int(s.shard_size)
    result.serialization = ModelSigSerialization(
        method=s.method,  # checked above
        hash_type=s.hash_type,
        allow_symlinks=s.allow_symlinks,
        shard_size=shard_size,
        ignore_paths=s.ignore_paths,
    )
    result.resources = len(pred.resources)
    if not pred.resources:
        fail("the signature covers no files")
        return None
    allowed = {s.hash_type} | ({f"{s.hash_type}-sharded-{shard_size}"} if shard_size else set())
    names: set[str] = set()
    for r in pred.resources:
        if r.name in names:
            fail(f"resource {r.name!r} is listed twice")
            return None
        names.add(r.name)
        if r.algorithm not in allowed:
            fail(f"resource {r.name!r} uses algorithm {r.algorithm!r}, the serialization says {s.hash_type!r}")
            return None
        if len(r.digest) != DIGEST_HEX_LEN[s.hash_type] or not _is_hex(r.digest):
            fail(f"resource {r.name!r} has a malformed {s.hash_type} digest")
            return None
    if subject_digest(r.digest for r in pred.resources) != result.subject_digest.lower():
        fail("subject digest does not match the digests of the listed resources")
        return None
    return result.serialization, list(pred.resources)


def subject_digest(resource_digests: Iterable[str]) -> str:
    """SHA-256 over the raw resource digests, in resource order (the statement's subject digest)."""
    h = hashlib.sha256()
    for d in resource_digests:
        h.update(bytes.fromhex(d))
    return h.hexdigest()


def files_statement(model_name: str, resources: list[ModelSigResource], ignore_paths: list[str]) -> bytes:
    """The payload `sign_model_sig` signs: files serialization, SHA-256, no symlinks, as model-signing 1.x writes."""
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": model_name, "digest": {"sha256": subject_digest(r.digest for r in resources)}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "serialization": {
                "method": "files",
                "hash_type": "sha256",
                "allow_symlinks": False,
                "ignore_paths": ignore_paths,
            },
            "resources": [r.model_dump() for r in resources],
        },
    }
    return json.dumps(statement, indent=2, ensure_ascii=False).encode("utf-8")


def _is_hex(s: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in s)


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(x) for x in first["loc"]) or "document"
    return f"{where}: {first['msg']}"

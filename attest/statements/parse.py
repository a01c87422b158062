"""Statement bytes in and out. We sign exactly the bytes `statement_bytes` returns, so this is the only place a
statement is serialised; parsing is strict about JSON (no duplicate keys, no NaN) because the bytes are hostile."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from attest.errors import InputError
from attest.statements.models import SLSA_PROVENANCE_V1, ProvenanceStatement, Statement
from attest.strict_json import strict_loads

M = TypeVar("M", bound=BaseModel)

MAX_STATEMENT_BYTES = 64 * 1024 * 1024


class StatementError(InputError):
    """A payload that is not a well-formed in-toto Statement v1 (or not the predicate the caller asked for)."""

    def __init__(self, problem: str, path: str | None = None) -> None:
        super().__init__(path, problem)


def to_json_bytes(value: Any) -> bytes:
    """Compact UTF-8 JSON; refuses NaN/Infinity, which JSON cannot carry."""
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
    except (ValueError, TypeError) as exc:
        raise StatementError(f"cannot be written as JSON: {exc}") from None


def statement_bytes(statement: Statement) -> bytes:
    """The payload bytes of a statement: compact JSON of the model, None fields left out, integers exact. Dumped in
    python mode so a NaN or a non-JSON value is refused instead of silently becoming null or a string."""
    return to_json_bytes(statement.model_dump(mode="python", by_alias=True, exclude_none=True))


def load_json(data: bytes, what: str = "payload") -> Any:
    """Strict JSON: UTF-8, no duplicate keys, no NaN/Infinity (nor a number so large it overflows to Infinity),
    bounded size."""
    if len(data) > MAX_STATEMENT_BYTES:
        raise StatementError(f"{what} larger than {MAX_STATEMENT_BYTES} bytes")
    try:
        text = data.decode("utf-8")
        return strict_loads(text)
    except UnicodeDecodeError:
        raise StatementError(f"{what} is not UTF-8") from None
    except (ValueError, RecursionError) as exc:
        raise StatementError(f"{what} is not valid JSON ({str(exc).splitlines()[0]})") from None


def _validate(model: type[M], doc: Any, what: str) -> M:
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "document"
        raise StatementError(f"not a valid {what} ({where}: {first['msg']})") from None


def parse_statement(payload: bytes) -> Statement:
    """Any in-toto Statement v1; the predicate is left as a dict."""
    return _validate(Statement, load_json(payload), "in-toto Statement v1")


def parse_provenance(payload: bytes) -> ProvenanceStatement:
    """An in-toto Statement v1 whose predicate is SLSA Provenance v1, validated field by field."""
    doc = load_json(payload)
    if isinstance(doc, dict) and doc.get("predicateType") != SLSA_PROVENANCE_V1:
        raise StatementError(f"predicateType is {doc.get('predicateType')!r}, expected {SLSA_PROVENANCE_V1}")
    return _validate(ProvenanceStatement, doc, "SLSA Provenance v1 statement")

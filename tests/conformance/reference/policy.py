"""Trust policies (SPEC.md 4 step 3 and 7.1) from the text and schemas/trust-policy.schema.json: unknown keys refused at
every level, rules switched on by `true` and off by `false`, root digests normalised."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema

from tests.conformance.reference import SCHEMAS, bad_input
from tests.conformance.reference.identity import _no_duplicates

POLICY_SCHEMA = json.loads((SCHEMAS / "trust-policy.schema.json").read_text())


def _digest(value: str) -> str:
    d = value.removeprefix("sha256:").lower()
    if len(d) != 64 or any(c not in "0123456789abcdef" for c in d):
        raise bad_input("policy", "root digest is not 64 hex digits")
    return d


def check_policy(path: Path) -> tuple[list[str], list[str]]:
    """(key names, allow-listed root digests) of a policy in JSON form."""
    try:
        doc: Any = json.loads(path.read_bytes(), object_pairs_hook=_no_duplicates)
    except ValueError:
        raise bad_input("policy", "not JSON") from None
    if not isinstance(doc, dict):
        raise bad_input("policy", "not a mapping")
    rules = doc.get("rules")
    if isinstance(rules, dict):
        switched = {k: ({} if v is True else v) for k, v in rules.items() if v is not False}
        doc = {**doc, "rules": switched}
    try:
        jsonschema.validate(doc, POLICY_SCHEMA)
    except jsonschema.ValidationError:
        raise bad_input("policy") from None
    roots = [_digest(r["digest"]) for r in doc.get("trusted_roots", [])]
    return [k["name"] for k in doc.get("keys", [])], roots

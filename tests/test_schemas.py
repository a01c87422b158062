"""schemas/ must match the pydantic models exactly: a stale schema fails here."""

from __future__ import annotations

import json

import jsonschema
import pytest

from attest.schema_export import SCHEMA_DIR, registry, render


@pytest.mark.parametrize("name", sorted(registry()))
def test_schema_file_is_current(name: str) -> None:
    path = SCHEMA_DIR / name
    assert path.is_file(), f"{path} missing: run python -m attest.schema_export"
    assert path.read_text() == render(registry()[name], name), f"{path} is stale: run python -m attest.schema_export"


@pytest.mark.parametrize("name", sorted(registry()))
def test_schema_is_valid_json_schema(name: str) -> None:
    jsonschema.Draft202012Validator.check_schema(json.loads((SCHEMA_DIR / name).read_text()))


def test_no_unregistered_schema_files() -> None:
    assert {p.name for p in SCHEMA_DIR.glob("*.json")} == set(registry())

"""A command's `--json` stdout is exactly one JSON document valid under its schema in schemas/."""

from __future__ import annotations

import json
from typing import Any

import jsonschema

from attest.schema_export import SCHEMA_DIR


def parse_output(stdout: str, schema: str) -> dict[str, Any]:
    doc = json.loads(stdout)  # the whole of stdout: no other line may be printed beside the JSON
    jsonschema.Draft202012Validator(json.loads((SCHEMA_DIR / schema).read_text())).validate(doc)
    assert isinstance(doc, dict)
    return doc

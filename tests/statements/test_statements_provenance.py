"""Statements: the exact bytes we sign, strict parsing, and the SLSA Provenance v1 / in-toto v1 shape checked by a
JSON Schema written here from the specs (independent of our pydantic models)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from attest.identity import hash_model
from attest.statements import (
    BUILD_TYPES,
    ProvenanceStatement,
    StatementError,
    parse_provenance,
    parse_statement,
    statement_bytes,
)
from attest.statements.builders import (
    checkpoint_byproduct,
    dataset_dependency,
    model_dependency,
    model_subject,
    now_rfc3339,
    package_versions,
    provenance_statement,
)

DIGEST_SET = {"type": "object", "minProperties": 1, "additionalProperties": {"type": "string"}}
RESOURCE_DESCRIPTOR = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "uri": {"type": "string"},
        "digest": DIGEST_SET,
        "content": {"type": "string"},
        "downloadLocation": {"type": "string"},
        "mediaType": {"type": "string"},
        "annotations": {"type": "object"},
    },
    "anyOf": [{"required": ["uri"]}, {"required": ["digest"]}, {"required": ["content"]}],
}
TIMESTAMP = {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"}
SLSA_V1_STATEMENT = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["_type", "subject", "predicateType", "predicate"],
    "properties": {
        "_type": {"const": "https://in-toto.io/Statement/v1"},
        "subject": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["name", "digest"],
                "properties": {
                    "name": {"type": "string"},
                    "digest": {
                        "type": "object",
                        "required": ["sha256"],
                        "properties": {"sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"}},
                    },
                },
            },
        },
        "predicateType": {"const": "https://slsa.dev/provenance/v1"},
        "predicate": {
            "type": "object",
            "required": ["buildDefinition", "runDetails"],
            "properties": {
                "buildDefinition": {
                    "type": "object",
                    "required": ["buildType", "externalParameters"],
                    "properties": {
                        "buildType": {"type": "string", "format": "uri"},
                        "externalParameters": {"type": "object"},
                        "internalParameters": {"type": "object"},
                        "resolvedDependencies": {"type": "array", "items": RESOURCE_DESCRIPTOR},
                    },
                },
                "runDetails": {
                    "type": "object",
                    "required": ["builder"],
                    "properties": {
                        "builder": {
                            "type": "object",
                            "required": ["id"],
                            "properties": {
                                "id": {"type": "string"},
                                "version": {"type": "object", "additionalProperties": {"type": "string"}},
                            },
                        },
                        "metadata": {
                            "type": "object",
                            "properties": {
                                "invocationId": {"type": "string"},
                                "startedOn": TIMESTAMP,
                                "finishedOn": TIMESTAMP,
                            },
                        },
                        "byproducts": {"type": "array", "items": RESOURCE_DESCRIPTOR},
                    },
                },
            },
        },
    },
}


@pytest.fixture(scope="module")
def statement(tiny_models: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> ProvenanceStatement:
    base = hash_model(tiny_models["base"])
    out = hash_model(tiny_models["ft_a"])
    data = tmp_path_factory.mktemp("data") / "train.jsonl"
    data.write_text('{"text": "hello"}\n')
    return provenance_statement(
        "finetune",
        model_subject("ft_a", out),
        external={"hyperparameters": {"lr": 1e-3, "steps": 1000, "big": 2**60, "name": "ü"}},
        internal={"seed": 1, "versions": package_versions()},
        dependencies=[
            model_dependency("base", "hf://org/base@abc123", base.model_root, base.weights_root, "base"),
            dataset_dependency(data),
        ],
        started_on=now_rfc3339(),
        finished_on=now_rfc3339(),
        byproducts=[checkpoint_byproduct("checkpoint-5", out, 5)],
    )


def test_payload_matches_slsa_v1_shape(statement: ProvenanceStatement) -> None:
    doc = json.loads(statement_bytes(statement))
    jsonschema.Draft202012Validator(SLSA_V1_STATEMENT).validate(doc)
    assert doc["predicate"]["buildDefinition"]["buildType"] == BUILD_TYPES["finetune"]
    assert doc["subject"][0]["annotations"]["weights_root"]


def test_integers_stay_integers_and_bytes_round_trip(statement: ProvenanceStatement) -> None:
    payload = statement_bytes(statement)
    assert b'"steps":1000,' in payload and str(2**60).encode() in payload and b"1000.0" not in payload
    assert "ü".encode() in payload
    back = parse_provenance(payload)
    assert back == statement
    assert statement_bytes(back) == payload
    params = back.predicate.buildDefinition.externalParameters["hyperparameters"]
    assert params["big"] == 2**60 and isinstance(params["steps"], int)


def test_dependencies_by_role(statement: ProvenanceStatement) -> None:
    assert [d.name for d in statement.dependencies("base")] == ["base"]
    (ds,) = statement.dependencies("dataset")
    assert ds.digest and len(ds.digest["sha256"]) == 64
    assert statement.step_kind() == "finetune"


def test_unknown_fields_are_kept(statement: ProvenanceStatement) -> None:
    doc = json.loads(statement_bytes(statement))
    doc["predicate"]["runDetails"]["extension"] = {"x": 1}
    back = parse_provenance(json.dumps(doc).encode())
    assert json.loads(statement_bytes(back))["predicate"]["runDetails"]["extension"] == {"x": 1}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(_type="https://in-toto.io/Statement/v0.1"), "_type"),
        (lambda d: d.pop("_type"), "_type"),  # required on parse, not defaulted (SPEC.md 2.2)
        (lambda d: d.pop("predicateType"), "predicateType"),
        (lambda d: d.update(subject=[]), "subject"),
        (lambda d: d["subject"][0]["digest"].update(sha256="ABC"), "hex"),
        (lambda d: d.update(predicateType="https://example.com/other"), "predicateType"),
        (lambda d: d["predicate"]["buildDefinition"].pop("externalParameters"), "externalParameters"),
        (lambda d: d["predicate"]["runDetails"]["metadata"].update(startedOn="yesterday"), "RFC 3339"),
        (lambda d: d["predicate"]["buildDefinition"]["resolvedDependencies"].append({"name": "x"}), "at least one"),
    ],
)
def test_malformed_statements_are_refused(statement: ProvenanceStatement, mutate: Any, message: str) -> None:
    doc = json.loads(statement_bytes(statement))
    mutate(doc)
    with pytest.raises(StatementError, match=message):
        parse_provenance(json.dumps(doc).encode())


@pytest.mark.parametrize(
    "payload",
    [b'{"_type": 1, "_type": 2}', b'{"x": NaN}', b"\xff\xfe", b"[1, 2", b"[]"],
)
def test_hostile_json_is_refused(payload: bytes) -> None:
    with pytest.raises(StatementError):
        parse_statement(payload)


def test_non_finite_parameters_cannot_be_signed(statement: ProvenanceStatement) -> None:
    nan = provenance_statement(
        "merge",
        statement.subject[0],
        external={"x": float("nan")},
        internal={},
        dependencies=[],
        started_on=now_rfc3339(),
        finished_on=now_rfc3339(),
    )
    with pytest.raises(StatementError, match="JSON"):
        statement_bytes(nan)


def test_payload_validates_against_the_exported_schema(statement: ProvenanceStatement) -> None:
    from attest.schema_export import SCHEMA_DIR

    schema = json.loads((SCHEMA_DIR / "slsa-provenance-statement.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(json.loads(statement_bytes(statement)))


@pytest.mark.parametrize("literal", ["1e400", "-1e400", "1E+999"])
def test_number_overflowing_to_infinity_is_refused(literal: str) -> None:
    """SPEC 2.1 refuses Infinity; `1e400` must not sneak it in through float parsing."""
    from attest.statements.parse import StatementError, load_json

    with pytest.raises(StatementError, match="out of range"):
        load_json(b'{"_type": "x", "n": ' + literal.encode() + b"}")
    assert load_json(b'{"n": 1e300}') == {"n": 1e300}


def test_signed_payload_with_infinity_literal_is_malformed(tmp_path: Path) -> None:
    """A correctly signed envelope whose payload says 1e400 is refused as malformed, never read as +inf."""
    from attest.signing import generate_key, load_private_key, sign_envelope
    from attest.signing.dsse import Envelope, verify_signatures
    from attest.statements.parse import StatementError, parse_statement

    public = generate_key(tmp_path / "k.key")
    payload = (
        b'{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"m","digest":{"sha256":"'
        + b"a" * 64
        + b'"}}],"predicateType":"https://slsa.dev/provenance/v1","predicate":{"x":1e400}}'
    )
    env = Envelope.from_json(sign_envelope(payload, [load_private_key(tmp_path / "k.key")]).to_json())
    assert verify_signatures(env, [public])
    with pytest.raises(StatementError, match="out of range"):
        parse_statement(env.payload_bytes)

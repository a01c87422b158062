"""`attest bom`: a CycloneDX 1.6 ML-BOM, validated offline against the official schema cyclonedx-python-lib ships."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import run_attest


def _validator() -> Any:
    jsonschema = pytest.importorskip("jsonschema")
    referencing = pytest.importorskip("referencing")
    cdx = pytest.importorskip("cyclonedx.schema", reason="cyclonedx-python-lib ships the official schemas")
    res = Path(cdx.__file__).parent / "_res"
    bom = json.loads((res / "bom-1.6.SNAPSHOT.schema.json").read_text())
    resources = []
    for name in ("spdx.SNAPSHOT.schema.json", "jsf-0.82.SNAPSHOT.schema.json"):
        doc = json.loads((res / name).read_text())
        resource = referencing.Resource.from_contents(doc, default_specification=referencing.jsonschema.DRAFT7)
        resources += [(f"http://cyclonedx.org/schema/{name}", resource), (doc["$id"], resource)]
    registry = referencing.Registry().with_resources(resources)
    return jsonschema.Draft7Validator(bom, registry=registry, format_checker=jsonschema.FormatChecker())


def _errors(doc: dict[str, Any]) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in _validator().iter_errors(doc)]


def test_bom_of_a_merge_is_valid_cyclonedx_16(published: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "bom.json"
    code, _, err = run_attest(
        ["bom", published["honest"], "--format", "cyclonedx", "-o", out, "--policy", published["policy"]]
    )
    assert code == 0, err
    doc = json.loads(out.read_text())
    assert _errors(doc) == []
    model = doc["metadata"]["component"]
    assert model["type"] == "machine-learning-model"
    assert model["hashes"][0]["alg"] == "SHA-256" and len(model["hashes"][0]["content"]) == 64
    props = {p["name"]: p["value"] for p in model["properties"]}
    assert "not the hash of any single file" in props["attest:identity-root"]
    assert props["attest:verified"] == "true"
    card = {p["name"]: p["value"] for p in model["modelCard"]["properties"]}
    assert card["attest:step"] == "merge" and card["attest:merge_method"] == "linear"
    assert "weight: 0.75" in card["attest:mergekit_config"]
    ancestors = [a["name"] for a in model["pedigree"]["ancestors"]]
    assert ancestors == ["ft_a", "ft_b"]
    assert model["pedigree"]["ancestors"][0]["pedigree"]["ancestors"][0]["name"].startswith("base")
    assert model["licenses"] == [{"license": {"id": "Apache-2.0"}}]
    names = {c["name"] for c in doc["components"]}
    assert {"ft_a", "ft_b"} <= names
    assert len(doc["formulation"]) == 3  # the merge and both fine-tunes
    refs = {d["ref"] for d in doc["dependencies"]}
    assert model["bom-ref"] in refs


def test_bom_with_datasets_and_without_trust(published: dict[str, Path], tmp_path: Path) -> None:
    code, out, err = run_attest(["bom", published["ft_a"], "--policy", published["policy"]])
    assert code == 0, err
    doc = json.loads(out)
    assert _errors(doc) == []
    data = [c for c in doc["components"] if c["type"] == "data"]
    assert [d["name"] for d in data] == ["sentences.txt"]
    params = doc["metadata"]["component"]["modelCard"]["modelParameters"]
    assert params["datasets"] == [{"ref": data[0]["bom-ref"]}]
    code, out, err = run_attest(["bom", published["ft_a"]])  # no trust: the model is a leaf, still valid
    assert code == 0, err
    doc = json.loads(out)
    assert _errors(doc) == []
    assert "formulation" not in doc


def test_schema_rejects_a_broken_bom(published: dict[str, Path]) -> None:
    """The validator is live: a wrong component type is an error."""
    _, out, _ = run_attest(["bom", published["honest"], "--policy", published["policy"]])
    doc = json.loads(out)
    doc["metadata"]["component"]["type"] = "ml-model"
    assert _errors(doc)

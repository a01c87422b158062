"""Fuzz: the trust-policy loader, and its JSON Schema, on generated hostile policies (hypothesis)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from attest.trust.policy_file import TrustPolicy, load_policy
from tests.support.cli import run_attest
from tests.support.fuzz import (
    HOSTILE_TEXT,
    SCALARS,
    clean_or_input_error,
    fuzz_settings,
    mutated_yaml,
    values,
)

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "schemas" / "trust-policy.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
HEX = st.text(alphabet="0123456789abcdefABCDEF", min_size=63, max_size=65)
RULE_NAMES = ["required_signers", "attested_to_roots", "full_disclosure", "replay_merges", "licenses"]
RULE_NAMES += ["claims_consistent", "licences"]
TOP_KEYS = ["version", "keys", "sigstore_identities", "sigstore_trust_root", "trusted_roots", "name", "rules", "x"]

near = st.one_of(SCALARS, values())
rule_value = st.one_of(
    st.booleans(),
    st.none(),
    st.fixed_dictionaries(
        {},
        optional={
            "signers": st.one_of(st.lists(st.sampled_from(["lab", "", "x"]), max_size=3), near),
            "scope": st.sampled_from(["model", "every_step", "all", 1]),
            "candidates": st.one_of(st.lists(st.text(max_size=8), max_size=3), near),
            "base": st.one_of(st.none(), st.text(max_size=8), near),
            "parents_dirs": st.lists(st.text(max_size=8), max_size=2),
            "device": st.sampled_from(["cpu", "cuda", "tpu"]),
            "allow": st.one_of(
                st.lists(st.sampled_from(["mit", "apache-2.0", "MIT OR x", "", "a b"]), max_size=3), near
            ),
            "card": st.one_of(st.booleans(), st.sampled_from(["yes", 1, 0, None])),
            "extra": near,
        },
    ),
    near,
)
policy_doc = st.fixed_dictionaries(
    {},
    optional={
        "version": st.sampled_from([1, 1.0, 2, True, "1", None]),
        "name": st.one_of(st.text(max_size=10), near),
        "keys": st.one_of(
            st.lists(
                st.fixed_dictionaries(
                    {"name": st.one_of(st.text(max_size=6), near), "public_key": st.text(max_size=12)},
                    optional={"extra": near},
                ),
                max_size=2,
            ),
            near,
        ),
        "sigstore_identities": st.lists(
            st.fixed_dictionaries({"identity": st.text(max_size=8), "issuer": st.text(max_size=8)}), max_size=2
        ),
        "sigstore_trust_root": st.one_of(st.none(), st.sampled_from(["production", "staging", "x.json"]), near),
        "trusted_roots": st.one_of(
            st.lists(
                st.fixed_dictionaries(
                    {"name": st.text(max_size=6), "digest": st.one_of(HEX, HEX.map(lambda h: "sha256:" + h), near)}
                ),
                max_size=2,
            ),
            near,
        ),
        "rules": st.one_of(st.dictionaries(st.sampled_from(RULE_NAMES), rule_value, max_size=4), near),
        "x": near,
    },
)


def _loads(doc: Any) -> bool:
    try:
        TrustPolicy.model_validate(doc)
    except ValueError:  # pydantic's ValidationError
        return False
    return True


@fuzz_settings(200)
@given(policy_doc)
def test_schema_accepts_exactly_what_the_loader_accepts(doc: dict[str, Any]) -> None:
    assert VALIDATOR.is_valid(doc) == _loads(doc), doc


@fuzz_settings(100)
@given(st.one_of(mutated_yaml(policy_doc), mutated_yaml(values(st.sampled_from(TOP_KEYS + RULE_NAMES))), HOSTILE_TEXT))
def test_policy_loader_refuses_cleanly(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    p = tmp_path_factory.mktemp("policy") / "policy.yaml"
    p.write_text(text, encoding="utf-8", errors="surrogatepass")
    clean_or_input_error(lambda: load_policy(p))


@fuzz_settings(10)
@given(mutated_yaml(policy_doc))
def test_verify_with_a_hostile_policy_exits_0_1_or_2(
    tmp_path_factory: pytest.TempPathFactory, tiny_models: dict[str, Path], text: str
) -> None:
    p = tmp_path_factory.mktemp("policy") / "policy.yaml"
    p.write_text(text, encoding="utf-8", errors="surrogatepass")
    code, _, err = run_attest(["verify", str(tiny_models["base"]), "--policy", str(p)])
    assert code in (0, 1, 2), err

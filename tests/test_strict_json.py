"""strict_loads_string_map (attest.strict_json): the document strict_loads gives, or the error it raises, for every
input; a large object of strings is read entry by entry, its names interned and equal values one string."""

from __future__ import annotations

import json
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attest.strict_json import strict_loads, strict_loads_string_map

MEMBER = "weight_map"
CASES = [
    '{"metadata": {"total_size": 4}, "weight_map": {"a": "x.safetensors", "b": "x.safetensors"}}',
    ' \t\n{ "weight_map" : { } , "metadata" : { "total_size" : 1.5e3 } }\r\n',
    "{}",
    '{"weight_map": {}}',
    '{"weight_map": {"a\\u00e9\\n": "s\\"1", "\\ud800": "x"}}',  # escapes, a lone surrogate name
    '{"weight_map": {"a": "x", "a": "y"}}',  # repeated name: strict_loads refuses it
    '{"weight_map": {"a": "x"}, "weight_map": {"b": "y"}}',  # repeated member
    '{"weight_map": {"a": 1, "b": "x"}}',  # a value that is not a string: strict_loads' document
    '{"weight_map": {"a": null}}',
    '{"weight_map": ["a"]}',
    '{"weight_map": "a"}',
    '{"weight_map": {"a": "x"}, "metadata": {"k": NaN}}',
    '{"weight_map": {"a": "x"}, "metadata": {"k": 1e400}}',
    '{"weight_map": {"a": "x"}, "metadata": {"k": {"d": 1, "d": 2}}}',
    '{"weight_map": {"a": "x"}} extra',
    '{"weight_map": {"a": "x"},}',
    '{"weight_map": {"a": "x",}}',
    '{"weight_map": {"a": "x"}',
    '{"weight_map": {"a": "x',
    '{"weight_map": {"a" "x"}}',
    '{"weight_map": {"a": "tab\there"}}',  # a raw control character in a string
    "\ufeff{}",
    "[]",
    '"weight_map"',
    "",
    "{" * 5000 + "}" * 5000,
    '{"metadata": ' + "[" * 100_000 + "]" * 100_000 + "}",
]


def _outcome(fn, text: str) -> tuple[str, object]:  # type: ignore[no-untyped-def]
    try:
        return "ok", fn(text)
    except (ValueError, RecursionError) as exc:
        return type(exc).__name__, str(exc)


@pytest.mark.parametrize("text", CASES)
def test_same_document_or_error_as_strict_loads(text: str) -> None:
    assert _outcome(lambda t: strict_loads_string_map(t, MEMBER), text) == _outcome(strict_loads, text)


def test_names_interned_and_values_shared() -> None:
    weight_map = {f"model.layers.{i}.w": f"model-{i % 3:05d}.safetensors" for i in range(300)}
    text = json.dumps({"metadata": {"total_size": 1}, "weight_map": weight_map}, indent=1)
    doc = strict_loads_string_map(text, MEMBER)
    assert doc == strict_loads(text)
    assert len({id(v) for v in doc[MEMBER].values()}) == 3
    assert all(sys.intern(k) is k for k in doc[MEMBER])
    # A document strict_loads reads but the walk does not (a number among the values) is compacted the same way.
    slow = strict_loads_string_map(text.replace('"model.layers.0.w": "model-00000.safetensors"', '"n": 5'), MEMBER)
    assert slow[MEMBER]["n"] == 5 and len({id(v) for v in slow[MEMBER].values() if isinstance(v, str)}) == 3
    assert all(sys.intern(k) is k for k in slow[MEMBER])


JSON_TEXT = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.text(max_size=6), st.one_of(st.text(max_size=6), JSON_TEXT), max_size=6),
    st.dictionaries(st.sampled_from(["metadata", "x", MEMBER]), JSON_TEXT, max_size=2),
    st.sampled_from([None, 0, 1, 2]),
    st.integers(0, 40),
    st.sampled_from(["", " ", "}", ",", '"', "x", "\ufeff"]),
)
def test_fuzz_same_as_strict_loads(
    weight_map: dict[str, object], other: dict[str, object], indent: int | None, cut: int, junk: str
) -> None:
    text = json.dumps({**other, MEMBER: weight_map}, indent=indent, ensure_ascii=bool(cut % 2))
    for variant in (text, text[: len(text) - cut] + junk, junk + text, text.replace(",", ", ,", 1)):
        assert _outcome(lambda t: strict_loads_string_map(t, MEMBER), variant) == _outcome(strict_loads, variant)

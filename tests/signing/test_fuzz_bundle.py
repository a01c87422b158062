"""Fuzz: the attestation bundle (JSON Lines of DSSE envelopes) and the envelope parser, on generated hostile bytes."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from attest.lineage.store import bundle_path, parse_bundle
from attest.signing.dsse import Envelope
from tests.support.cli import run_attest
from tests.support.fuzz import HOSTILE_TEXT, SCALARS, clean_or_input_error, fuzz_settings, values

b64 = st.one_of(st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode()), HOSTILE_TEXT)
signature = st.fixed_dictionaries({"sig": b64}, optional={"keyid": st.one_of(HOSTILE_TEXT, SCALARS), "x": values()})
envelope = st.fixed_dictionaries(
    {},
    optional={
        "payload": st.one_of(b64, SCALARS),
        "payloadType": st.one_of(st.just("application/vnd.in-toto+json"), HOSTILE_TEXT, SCALARS),
        "signatures": st.one_of(st.lists(st.one_of(signature, values()), max_size=4), SCALARS),
        "extra": values(),
    },
)


@st.composite
def envelope_bytes(draw: st.DrawFn) -> bytes:
    doc = draw(st.one_of(envelope, values()))
    text = json.dumps(doc, allow_nan=True)
    how = draw(st.sampled_from(["as is", "duplicate key", "big number", "nest", "truncate", "bytes"]))
    if how == "duplicate key" and text.startswith("{") and len(text) > 2:
        text = '{"payload": "", ' + text[1:]
    elif how == "big number":
        text = text.replace("null", draw(st.sampled_from(["1e400", "-1e400", "NaN", "Infinity", "9" * 5000])), 1)
    elif how == "nest":
        n = draw(st.integers(1, 5000))
        text = "[" * n + "]" * n
    elif how == "truncate":
        text = text[: draw(st.integers(0, len(text)))]
    elif how == "bytes":
        return draw(st.binary(max_size=200))
    return text.encode("utf-8", "surrogatepass")


@fuzz_settings(100)
@given(envelope_bytes())
def test_envelope_parser_refuses_cleanly(data: bytes) -> None:
    env = clean_or_input_error(lambda: Envelope.from_json(data))
    if env is not None:
        assert isinstance(env.payload_bytes, bytes)


@fuzz_settings(50)
@given(st.lists(envelope_bytes(), max_size=5), st.sampled_from([b"\n", b"\r\n", b"", b"\n\n"]))
def test_bundle_parser_refuses_cleanly(lines: list[bytes], sep: bytes) -> None:
    data = sep.join(lines) + (b"\n" if lines and sep != b"" else b"")
    out = clean_or_input_error(lambda: parse_bundle(data, "fuzz.intoto.jsonl"))
    assert out is None or all(isinstance(e, Envelope) for e in out)


@fuzz_settings(10)
@given(st.lists(envelope_bytes(), min_size=1, max_size=3))
def test_verify_with_a_hostile_bundle_exits_0_1_or_2(
    tmp_path_factory: pytest.TempPathFactory, tiny_models: dict[str, Path], lines: list[bytes]
) -> None:
    import shutil

    folder = tmp_path_factory.mktemp("bundle") / "model"
    shutil.copytree(tiny_models["base"], folder, ignore=shutil.ignore_patterns(".attest"))
    path = bundle_path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\n".join(lines) + b"\n")
    code, _, err = run_attest(["verify", str(folder)])
    assert code in (0, 1, 2), err

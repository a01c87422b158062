"""Fuzz: the safetensors header reader and the folder hash over it, on generated hostile headers and buffers."""

from __future__ import annotations

import json
import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from attest.identity import hash_model
from attest.identity.dtypes import DTYPE_BITS
from attest.identity.safetensors_reader import read_header
from tests.support.cli import run_attest
from tests.support.fuzz import HOSTILE_TEXT, SCALARS, clean_or_input_error, fuzz_settings, values

dims = st.lists(st.one_of(st.integers(0, 6), st.integers(-3, 2**64), SCALARS), max_size=3)
dtype = st.one_of(st.sampled_from(sorted(DTYPE_BITS)), st.sampled_from(["F128", "f32", "", "BOOL"]), SCALARS)


@st.composite
def safetensors_file(draw: st.DrawFn) -> bytes:
    """A file laid out like safetensors: tensors with offsets that mostly fit, sometimes lie; then damage."""
    header: dict[str, object] = {}
    cursor = 0
    for i in range(draw(st.integers(0, 4))):
        shape = draw(st.one_of(st.lists(st.integers(0, 4), max_size=3), dims))
        dt = draw(dtype)
        if all(type(d) is int and 0 <= d <= 4096 for d in shape) and isinstance(dt, str) and dt in DTYPE_BITS:
            size = math.prod(shape) * DTYPE_BITS[dt] // 8  # type: ignore[arg-type]
        else:
            size = draw(st.integers(0, 16))
        size = size if isinstance(size, int) and 0 <= size < 4096 else draw(st.integers(0, 64))
        offsets = draw(
            st.one_of(st.just([cursor, cursor + size]), st.lists(st.integers(-2, 2**64), max_size=3), SCALARS)
        )
        header[draw(st.one_of(st.just(f"t{i}"), HOSTILE_TEXT))] = draw(
            st.one_of(st.just({"dtype": dt, "shape": shape, "data_offsets": offsets}), values())
        )
        cursor += size
    if draw(st.booleans()):
        header["__metadata__"] = draw(st.one_of(st.dictionaries(HOSTILE_TEXT, HOSTILE_TEXT, max_size=3), values()))
    raw = json.dumps(header, allow_nan=True).encode("utf-8", "surrogatepass")
    raw += b" " * draw(st.integers(0, 8))
    buffer = draw(st.binary(min_size=cursor, max_size=cursor)) if cursor < 4096 else b""
    buffer += draw(st.binary(max_size=draw(st.sampled_from([0, 0, 4]))))
    n = draw(st.one_of(st.just(len(raw)), st.integers(0, 2**64 - 1)))
    data = struct.pack("<Q", n) + raw + buffer
    return data[: draw(st.one_of(st.just(len(data)), st.integers(0, len(data))))]


@fuzz_settings(150)
@given(safetensors_file())
def test_header_reader_and_hash_refuse_cleanly(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    folder = tmp_path_factory.mktemp("st")
    (folder / "model.safetensors").write_bytes(data)
    header = clean_or_input_error(lambda: read_header(folder / "model.safetensors"))
    manifest = clean_or_input_error(lambda: hash_model(folder))
    if header is None:
        assert manifest is None  # a header the reader refuses never gets a model root
    elif manifest is not None:
        assert len(manifest.model_root) == 64


@fuzz_settings(15)
@given(safetensors_file())
def test_hash_cli_exits_0_or_2(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    folder = tmp_path_factory.mktemp("st")
    (folder / "model.safetensors").write_bytes(data)
    code, _, err = run_attest(["hash", str(folder)])
    assert code in (0, 2), err

"""SPEC.md section 1.8: recompute the worked example with nothing but hashlib, struct and json, and check that
attest agrees and that SPEC.md prints the same values."""

from __future__ import annotations

import hashlib
import json
import re
import struct
from pathlib import Path

import attest

REPO = Path(__file__).resolve().parents[2]


def _h(*parts: bytes) -> bytes:
    return hashlib.sha256(b"".join(parts)).digest()


def _jcs(obj: object) -> bytes:
    # For records of ASCII strings, integers and lists, RFC 8785 is sorted keys and no whitespace.
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _mth(leaves: list[bytes]) -> bytes:
    if not leaves:
        return _h(b"")
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return _h(b"\x01", _mth(leaves[:k]), _mth(leaves[k:]))


def build_example(folder: Path) -> None:
    """The folder of SPEC.md 1.8, written byte by byte (no safetensors library)."""
    b = struct.pack("<2f", 1.0, 2.0)
    a = bytes([1, 2, 3])
    header = {
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "a": {"dtype": "U8", "shape": [3], "data_offsets": [8, 11]},
    }
    raw = json.dumps(header).encode()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + b + a)
    (folder / "config.json").write_bytes(b"{}")


def expected_values() -> dict[str, str]:
    data_a = _h(b"\x00", bytes([1, 2, 3]))  # one chunk -> the leaf is the data root
    data_b = _h(b"\x00", struct.pack("<2f", 1.0, 2.0))
    rec_a = {"name": "a", "dtype": "U8", "shape": [3], "nbytes": 3, "data": data_a.hex()}
    rec_b = {"name": "b", "dtype": "F32", "shape": [2], "nbytes": 8, "data": data_b.hex()}
    leaf_a, leaf_b = _h(b"\x02", _jcs(rec_a)), _h(b"\x02", _jcs(rec_b))
    weights_root = _mth([leaf_a, leaf_b])
    data_cfg = _h(b"\x00", b"{}")
    leaf_cfg = _h(b"\x03", _jcs({"path": "config.json", "size": 2, "data": data_cfg.hex()}))
    files_root = _mth([leaf_cfg])
    model_rec = {
        "format": "attest-identity/v1",
        "algorithm": "sha256",
        "chunk_size": 1048576,
        "weights_root": weights_root.hex(),
        "files_root": files_root.hex(),
    }
    return {
        "data root of a": data_a.hex(),
        "tensor digest of a": leaf_a.hex(),
        "tensor digest of b": leaf_b.hex(),
        "weights root": weights_root.hex(),
        "file digest of config.json": leaf_cfg.hex(),
        "files root": files_root.hex(),
        "model root": _h(b"\x04", _jcs(model_rec)).hex(),
    }


def test_attest_matches_independent_computation(tmp_path: Path) -> None:
    build_example(tmp_path / "m")
    m = attest.hash_model(tmp_path / "m")
    want = expected_values()
    assert m.tensor("a") is not None and m.tensor("a").data_root == want["data root of a"]  # type: ignore[union-attr]
    assert [t.digest for t in m.tensors] == [want["tensor digest of a"], want["tensor digest of b"]]
    assert m.files[0].digest == want["file digest of config.json"]
    assert m.weights_root == want["weights root"]
    assert m.files_root == want["files root"]
    assert m.model_root == want["model root"]


def test_spec_prints_the_same_values() -> None:
    spec = (REPO / "SPEC.md").read_text()
    for label, value in expected_values().items():
        assert re.search(rf"{re.escape(label)}\s*\|?\s*`{value}`", spec), f"SPEC.md 1.8 lacks {label} = {value}"


def _utf8_jcs(obj: object) -> bytes:
    # SPEC.md 1.8: for these records, RFC 8785 is sorted keys, no whitespace and UTF-8 characters, never \u escapes.
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def test_non_ascii_example_needs_utf8_not_escapes(tmp_path: Path) -> None:
    data = _h(b"\x00", b"\x01").hex()
    record = {"name": "é", "dtype": "U8", "shape": [1], "nbytes": 1, "data": data}
    jcs_digest, escaped_digest = _h(b"\x02", _utf8_jcs(record)).hex(), _h(b"\x02", _jcs(record)).hex()
    assert jcs_digest != escaped_digest and b"\xc3\xa9" in _utf8_jcs(record)
    raw = json.dumps({"é": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}).encode()
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + b"\x01")
    m = attest.hash_model(tmp_path / "m")
    assert m.tensors[0].data_root == data and m.tensors[0].digest == jcs_digest
    spec = (REPO / "SPEC.md").read_text()
    assert f"`{data}`" in spec and f"tensor digest of é (JCS) | `{jcs_digest}`" in spec
    assert f"`{escaped_digest}`" in spec

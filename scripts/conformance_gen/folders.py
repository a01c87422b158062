"""The model folders of the suite: valid ones (their roots are computed) and invalid ones, each breaking one rule
of SPEC.md 1.5/1.6 (name, files, refusal reason, a substring of attest's message)."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from typing import Any

from attest.identity.chunked import CHUNK_SIZE
from scripts.conformance_gen.common import Files, raw_safetensors, safetensors, stream

BASE_TENSORS = [
    ("embed.weight", "F32", [4, 3], struct.pack("<12f", *[i / 8 for i in range(12)])),
    ("layer.0.bias", "F16", [3], stream("bias", 6)),
    ("lm_head.weight", "BF16", [2, 3], stream("head", 12)),
]
CONFIG = b'{"model_type": "conformance"}\n'
DTYPES = {
    "BOOL": ([2], 2),
    "U8": ([2], 2),
    "I8": ([2], 2),
    "F8_E5M2": ([2], 2),
    "F8_E4M3": ([2], 2),
    "F8_E4M3FNUZ": ([2], 2),
    "F8_E5M2FNUZ": ([2], 2),
    "F8_E8M0": ([2], 2),
    "F4": ([4], 2),
    "F6_E2M3": ([4], 3),
    "F6_E3M2": ([4], 3),
    "I16": ([2], 4),
    "U16": ([2], 4),
    "F16": ([2], 4),
    "BF16": ([2], 4),
    "I32": ([2], 8),
    "U32": ([2], 8),
    "F32": ([2], 8),
    "I64": ([2], 16),
    "U64": ([2], 16),
    "F64": ([2], 16),
    "C64": ([2], 16),
}


def single_file() -> Files:
    return {"model.safetensors": safetensors(BASE_TENSORS), "config.json": CONFIG}


def sharded() -> Files:
    index = {
        "metadata": {"total_size": 42},
        "weight_map": {
            "embed.weight": "model-00001-of-00002.safetensors",
            "layer.0.bias": "model-00002-of-00002.safetensors",
            "lm_head.weight": "model-00002-of-00002.safetensors",
        },
    }
    return {
        "model-00001-of-00002.safetensors": safetensors(BASE_TENSORS[:1]),
        "model-00002-of-00002.safetensors": safetensors(BASE_TENSORS[1:]),
        "model.safetensors.index.json": json.dumps(index, indent=2).encode(),
        "config.json": CONFIG,
    }


def metadata_only() -> Files:
    files = single_file()
    files["model.safetensors"] = safetensors(BASE_TENSORS, metadata={"format": "pt", "note": "not in any root"})
    return files


def reordered() -> Files:
    files = single_file()
    files["model.safetensors"] = safetensors(list(reversed(BASE_TENSORS)), order="given")
    return files


def non_ascii() -> Files:
    names = ["层.0.权重", "é", "Z", "x\uff61", "x\U0001f642", "naïve"]
    tensors = [(n, "U8", [2], stream(n, 2)) for n in names]
    return {
        "model.safetensors": safetensors(tensors),
        "词表.txt": "你好\n".encode(),
        "naïve/ß.json": b"{}",
        "config.json": CONFIG,
    }


def json_escapes() -> Files:
    names = ['quote"', "back\\slash", "ctl\u0001", "nl\n", "del\u007f", "ls\u2028", "tab\t"]
    return {"model.safetensors": safetensors([(n, "I8", [1], stream(n, 1)) for n in names]), "config.json": CONFIG}


def zero_size() -> Files:
    tensors = [
        ("empty", "F32", [0], b""),
        ("empty.2d", "BF16", [3, 0], b""),
        ("scalar", "F64", [], struct.pack("<d", 2.5)),
    ]
    return {"model.safetensors": safetensors(tensors), "empty.txt": b"", "config.json": CONFIG}


def every_dtype() -> Files:
    tensors = [(f"t.{d}", d, shape, stream(d, n)) for d, (shape, n) in DTYPES.items()]
    return {"model.safetensors": safetensors(tensors), "config.json": CONFIG}


def multi_chunk() -> Files:
    big = stream("big", 1024) * (CHUNK_SIZE // 1024) + b"\x07"
    return {"model.safetensors": safetensors([("big", "U8", [CHUNK_SIZE + 1], big)]), "config.json": CONFIG}


def exclusions() -> Files:
    files = single_file()
    files.update(
        {
            ".attest/provenance.intoto.jsonl": b"not read by the identity\n",
            ".hg/store": b"x",
            ".svn/entries": b"x",
            "model.sig": b"{}",
            ".cache/huggingface/download/x.lock": b"",
            ".cache/kept.txt": b"hashed: only .cache/huggingface is excluded",
            "sub/.attest/kept.txt": b"hashed: exclusions are top-level names",
            "sub/model.sig": b"hashed too",
            "sub/extra.safetensors": safetensors(BASE_TENSORS[:1]),
        }
    )
    return files


def pickle_only() -> Files:
    return {"pytorch_model.bin": b"PK\x03\x04 opaque bytes, never unpickled", "config.json": CONFIG}


VALID_FOLDERS: list[tuple[str, Callable[[], Files], list[str], str]] = [
    ("single-file", single_file, ["1.3", "1.4"], "one weight file and a config"),
    ("sharded", sharded, ["1.3", "1.5", "1.6"], "single-file's tensors in two shards with an index: same roots"),
    ("metadata-only", metadata_only, ["1.3"], "single-file with a __metadata__ map: same roots"),
    ("reordered", reordered, ["1.3"], "single-file's tensors in reverse data and header order: same roots"),
    ("non-ascii", non_ascii, ["1.3", "1.8"], "non-ASCII names and paths; U+FF61 sorts before U+1F642"),
    ("json-escapes", json_escapes, ["1.3", "1.8"], "names JCS escapes (quote, backslash, control characters)"),
    ("zero-size", zero_size, ["1.2", "1.3"], "zero-element tensors, a scalar and an empty file"),
    ("every-dtype", every_dtype, ["1.6"], "one tensor of every dtype of the table, sub-byte ones included"),
    ("multi-chunk", multi_chunk, ["1.2"], "a tensor of CHUNK_SIZE + 1 bytes: two chunks"),
    ("exclusions", exclusions, ["1.5"], "excluded top-level names next to the same names deeper down"),
    ("pickle-only", pickle_only, ["1.5"], "a PyTorch pickle and no safetensors: the weights root is H('')"),
]


def _entry(dtype: str, shape: Any, offsets: Any) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "data_offsets": offsets}


def _st_header(header: dict[str, Any] | bytes, data: bytes = b"\x01\x02") -> Files:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return {"model.safetensors": raw_safetensors(raw, data), "config.json": CONFIG}


GOOD = {"a": _entry("U8", [2], [0, 2])}


def _with_index(weight_map: Any, extra: dict[str, Any] | None = None, raw: bytes | None = None) -> Files:
    files = sharded()
    doc = {"metadata": {}, "weight_map": weight_map, **(extra or {})}
    files["model.safetensors.index.json"] = raw if raw is not None else json.dumps(doc).encode()
    return files


SHARD_MAP = json.loads(sharded()["model.safetensors.index.json"])["weight_map"]
S1, S2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"

# (name, files, reason, attest message substring)
INVALID_FOLDERS: list[tuple[str, Files, str, str]] = [
    ("st-short-file", {"model.safetensors": b"\x01\x00\x00", "config.json": CONFIG}, "st-short", "truncated"),
    (
        "st-header-too-large",
        {"model.safetensors": struct.pack("<Q", 100_000_001), "config.json": CONFIG},
        "st-header-too-large",
        "exceeds",
    ),
    (
        "st-header-past-end",
        {"model.safetensors": struct.pack("<Q", 64) + b"{}", "config.json": CONFIG},
        "st-header-past-end",
        "runs past the end",
    ),
    ("st-header-not-utf8", _st_header(b'{"\xff": 1}', b""), "st-header-not-utf8", "not valid UTF-8"),
    ("st-header-not-object", _st_header(b"[]", b""), "st-header-not-object", "not a JSON object"),
    ("st-header-not-json", _st_header(b'{"a": ', b""), "st-header-not-json", "not valid JSON"),
    (
        "st-header-1e400",
        _st_header(
            b'{"__metadata__": {"k": "v"}, "a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2], "x": 1e400}}'
        ),
        "st-header-not-json",
        "out of range",
    ),
    (
        "st-header-duplicate-key",
        _st_header(b'{"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}, "a": {}}'),
        "st-header-duplicate-key",
        "duplicate key",
    ),
    (
        "st-metadata-not-strings",
        _st_header({"__metadata__": {"n": 1}, **GOOD}),
        "st-metadata-not-strings",
        "__metadata__ must map strings to strings",
    ),
    (
        "st-metadata-lone-surrogate",
        _st_header(b'{"__metadata__": {"k": "\\ud800"}, "a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}}'),
        "st-metadata-not-unicode",
        "lone surrogate",
    ),
    ("st-empty-name", _st_header({"": _entry("U8", [2], [0, 2])}), "st-empty-name", "empty tensor name"),
    (
        "st-name-lone-surrogate",
        _st_header(b'{"\\udc00": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}}'),
        "st-name-not-unicode",
        "lone surrogate",
    ),
    ("st-entry-not-object", _st_header({"a": [0, 2]}), "st-entry-not-object", "entry is not a JSON object"),
    (
        "st-entry-extra-key",
        _st_header({"a": {**_entry("U8", [2], [0, 2]), "extra": 1}}),
        "st-entry-keys",
        "exactly dtype, shape and data_offsets",
    ),
    ("st-dtype-unknown", _st_header({"a": _entry("F128", [2], [0, 2])}), "st-dtype-unknown", "unknown dtype"),
    ("st-shape-not-list", _st_header({"a": _entry("U8", 2, [0, 2])}), "st-shape-invalid", "shape must be a list"),
    ("st-shape-negative", _st_header({"a": _entry("U8", [-2], [0, 2])}), "st-shape-invalid", "non-negative"),
    ("st-shape-boolean", _st_header({"a": _entry("U8", [True, 2], [0, 2])}), "st-shape-invalid", "non-negative"),
    (
        "st-shape-65-dims",
        _st_header({"a": _entry("U8", [1] * 64 + [2], [0, 2])}),
        "st-shape-too-many-dims",
        "more than the 64 allowed",
    ),
    (
        "st-shape-above-2p53",
        _st_header({"a": _entry("U8", [2**53, 0], [0, 0])}, b""),
        "st-dimension-too-large",
        "above 2^53 - 1",
    ),
    ("st-offsets-not-two", _st_header({"a": _entry("U8", [2], [0, 1, 2])}), "st-offsets-invalid", "two integers"),
    ("st-offsets-reversed", _st_header({"a": _entry("U8", [2], [2, 0])}), "st-offsets-reversed", "begin <= end"),
    (
        "st-offsets-past-buffer",
        _st_header({"a": _entry("U8", [3], [0, 3])}),
        "st-offsets-out-of-bounds",
        "out of bounds",
    ),
    ("st-span-mismatch", _st_header({"a": _entry("U16", [2], [0, 2])}), "st-span-mismatch", "needs 4 bytes"),
    ("st-sub-byte-partial", _st_header({"a": _entry("F4", [3], [0, 2])}), "st-span-not-whole-bytes", "whole bytes"),
    (
        "st-overlap",
        _st_header({"a": _entry("U8", [2], [0, 2]), "b": _entry("U8", [1], [1, 2])}),
        "st-overlap",
        "overlaps",
    ),
    ("st-gap", _st_header({"a": _entry("U8", [1], [1, 2])}), "st-gap", "gap of 1 bytes"),
    ("st-trailing-bytes", _st_header({"a": _entry("U8", [1], [0, 1])}), "st-trailing-bytes", "after the last tensor"),
    (
        "st-same-tensor-two-files",
        {S1: safetensors(BASE_TENSORS[:1]), S2: safetensors(BASE_TENSORS), "config.json": CONFIG},
        "st-duplicate-tensor",
        "is also stored in",
    ),
    (
        "no-weights",
        {"config.json": CONFIG, "sub/model.safetensors": safetensors(BASE_TENSORS)},
        "no-weights",
        "no weights",
    ),
    ("index-not-object", _with_index(None, raw=b"[]"), "index-no-weight-map", "no weight_map"),
    ("index-no-weight-map", _with_index(None, raw=b'{"metadata": {}}'), "index-no-weight-map", "no weight_map"),
    ("index-empty-weight-map", _with_index({}), "index-empty", "weight_map is empty"),
    (
        "index-empty-pickle-folder",
        {**pickle_only(), "model.safetensors.index.json": b'{"weight_map": {}}'},
        "index-empty",
        "weight_map is empty",
    ),
    ("index-unknown-key", _with_index(SHARD_MAP, {"extra": 1}), "index-unknown-key", "unexpected key 'extra'"),
    ("index-metadata-not-object", _with_index(SHARD_MAP, {"metadata": []}), "index-metadata", "metadata is not"),
    (
        "index-metadata-dtype",
        _with_index(SHARD_MAP, {"metadata": {"total_size": 42, "dtype": "float16"}}),
        "index-metadata-key",
        "metadata has key 'dtype'",
    ),
    (
        "index-metadata-total-size-string",
        _with_index(SHARD_MAP, {"metadata": {"total_size": "42"}}),
        "index-metadata-value",
        "'total_size' is not a non-negative integer",
    ),
    (
        "index-metadata-version-number",
        _with_index(SHARD_MAP, {"metadata": {"mergekit_version": 1}}),
        "index-metadata-value",
        "'mergekit_version' is not a string",
    ),
    (
        "index-1e400",
        _with_index(None, raw=b'{"metadata": {"total_size": 1e400}, "weight_map": {}}'),
        "index-not-json",
        "out of range",
    ),
    ("index-not-json", _with_index(None, raw=b'{"weight_map": '), "index-not-json", "not valid JSON"),
    (
        "index-duplicate-key",
        _with_index(None, raw=b'{"weight_map": {"a": "x"}, "weight_map": {}}'),
        "index-not-json",
        "duplicate key",
    ),
    ("index-entry-not-string", _with_index({**SHARD_MAP, "embed.weight": 1}), "index-bad-entry", "not a file name"),
    ("index-absolute", _with_index({**SHARD_MAP, "embed.weight": "/" + S1}), "index-outside", "points outside"),
    ("index-dotdot", _with_index({**SHARD_MAP, "embed.weight": "../" + S1}), "index-outside", "points outside"),
    ("index-backslash", _with_index({**SHARD_MAP, "embed.weight": "sub\\" + S1}), "index-outside", "points outside"),
    (
        "index-missing-shard",
        _with_index({**SHARD_MAP, "embed.weight": "model-00003-of-00003.safetensors"}),
        "index-missing-shard",
        "missing shard",
    ),
    (
        "index-not-a-weight-file",
        _with_index({**SHARD_MAP, "embed.weight": "config.json"}),
        "index-not-weight-file",
        "not a top-level .safetensors file",
    ),
    ("index-misplaced-tensor", _with_index({**SHARD_MAP, "embed.weight": S2}), "index-misplaced", "does not hold it"),
    (
        "index-omits-tensor",
        _with_index({k: v for k, v in SHARD_MAP.items() if k != "layer.0.bias"}),
        "index-omits",
        "which weight_map does not list",
    ),
    (
        "index-uncovered-file",
        {**_with_index({k: v for k, v in SHARD_MAP.items() if v == S2}), S1: safetensors(BASE_TENSORS[:1])},
        "index-uncovered",
        "does not cover",
    ),
]

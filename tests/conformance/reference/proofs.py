"""SPEC.md 1.7 from the text: check a tensor inclusion proof against a trusted root (RFC 9162 section 2.1.3.2)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import rfc8785

from tests.conformance.reference import SCHEMAS, bad_input, rejected
from tests.conformance.reference.identity import CHUNK, _no_duplicates, h, model_root

PROOF_SCHEMA = json.loads((SCHEMAS / "tensor-proof.schema.json").read_text())


def root_from_path(alg: str, leaf: bytes, index: int, size: int, path: list[bytes]) -> bytes:
    """RFC 9162 2.1.3.2 with the 0x01 node hash; the path must have exactly the length (index, size) implies."""
    if index >= size:
        raise rejected("proof-index-outside")
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            raise rejected("proof-path-length", "path longer than the tree is deep")
        if fn % 2 == 1 or fn == sn:
            r = h(alg, b"\x01", p, r)
            while fn % 2 == 0 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = h(alg, b"\x01", r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise rejected("proof-path-length", "path shorter than the tree is deep")
    return r


def check_proof(path: Path, root: str, tree_size: int | None = None) -> str:
    """Which root the proof leads to ("model_root" or "weights_root"), or a Refusal."""
    try:
        doc = json.loads(path.read_bytes(), object_pairs_hook=_no_duplicates)
        jsonschema.validate(doc, PROOF_SCHEMA)
    except (ValueError, jsonschema.ValidationError):
        raise bad_input("proof-schema") from None
    if doc["chunk_size"] != CHUNK:
        raise rejected("proof-chunk-size")
    if tree_size is not None and doc["tree_size"] != tree_size:
        raise rejected("proof-tree-size")
    alg, t = doc["algorithm"], doc["tensor"]
    record = {
        "name": t["name"],
        "dtype": t["dtype"],
        "shape": t["shape"],
        "nbytes": t["nbytes"],
        "data": t["data_root"],
    }
    leaf = h(alg, b"\x02", rfc8785.dumps(record))  # the proof's data_root is the record's "data"
    try:
        audit = [bytes.fromhex(p) for p in doc["path"]]
    except ValueError:
        raise rejected("proof-malformed") from None
    weights = root_from_path(alg, leaf, doc["index"], doc["tree_size"], audit).hex()
    want = root.lower()
    if want == model_root(alg, weights, doc["files_root"]):
        return "model_root"
    if want == weights:
        return "weights_root"
    raise rejected("proof-root-mismatch")

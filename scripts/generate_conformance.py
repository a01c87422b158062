"""Write the conformance vector suite (conformance/): model folders, proofs, envelopes, statements and bundles, each
with its expected outcome in conformance/vectors.json (schema schemas/conformance-vectors.schema.json).

Deterministic: every byte comes from fixed seeds; the test keys are derived from fixed strings; Ed25519 signatures are
deterministic, and ECDSA signatures (random by nature) are kept in conformance/keys/ecdsa-signatures.json and reused
whenever they still verify over the same bytes. Expected roots of the valid folders are attest's; every verdict of an
invalid vector is written here by hand, from SPEC.md. tests/test_conformance.py regenerates into a temporary folder
and fails when the checked-in suite differs.

    python scripts/generate_conformance.py [OUT]    (default: conformance/ of the repository)
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from attest.conformance import Expectation, Roots, Vector, VectorManifest  # noqa: E402
from attest.identity import hash_model, make_proof  # noqa: E402
from attest.identity.chunked import CHUNK_SIZE  # noqa: E402
from attest.signing.dsse import pae  # noqa: E402
from attest.signing.keys import PrivateKey, PublicKey  # noqa: E402

DEFAULT_OUT = REPO / "conformance"
ECDSA_CACHE = "keys/ecdsa-signatures.json"
SLSA = "https://slsa.dev/provenance/v1"
IN_TOTO = "https://in-toto.io/Statement/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"

Files = dict[str, bytes]


def stream(seed: str, n: int) -> bytes:
    """n deterministic bytes for a seed (SHA-256 in counter mode)."""
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}:{i}".encode()).digest()
        i += 1
    return bytes(out[:n])


def safetensors(
    tensors: list[tuple[str, str, list[int], bytes]], metadata: dict[str, str] | None = None, order: str = "name"
) -> bytes:
    """A safetensors file written byte by byte: header keys and data in the order given (or sorted by name)."""
    items = sorted(tensors) if order == "name" else list(tensors)
    header: dict[str, Any] = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    data = b""
    for name, dtype, shape, raw in items:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    return raw_safetensors(json.dumps(header, ensure_ascii=False).encode("utf-8"), data)


def raw_safetensors(header: bytes, data: bytes) -> bytes:
    pad = -len(header) % 8
    return struct.pack("<Q", len(header) + pad) + header + b" " * pad + data


# ---- identity: folders -------------------------------------------------------------------------------------------

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
    ("index-unknown-key", _with_index(SHARD_MAP, {"extra": 1}), "index-unknown-key", "unexpected key 'extra'"),
    ("index-metadata-not-object", _with_index(SHARD_MAP, {"metadata": []}), "index-metadata", "metadata is not"),
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


# ---- keys and signatures -----------------------------------------------------------------------------------------

KEY_NAMES = ("ed25519", "p256", "p384", "untrusted")


def test_key(name: str) -> PrivateKey:
    """The test keys, derived from fixed strings (so the suite regenerates without stored secrets)."""
    seed = hashlib.sha512(f"attest conformance TEST-ONLY key {name}".encode()).digest()
    if name in ("ed25519", "untrusted"):
        return PrivateKey(ed25519.Ed25519PrivateKey.from_private_bytes(seed[:32]), "ed25519")
    curve: ec.EllipticCurve = ec.SECP256R1() if name == "p256" else ec.SECP384R1()
    order = {
        "p256": 2**256 - 2**224 + 2**192 - 0x4319055258E8617B0C46353D039CDAAE,
        "p384": 2**384 - 0x389CB27E0BC8D220A7E5F24DB74F58851313E695333AD68D,
    }[name]
    scalar = int.from_bytes(seed, "big") % (order - 1) + 1
    return PrivateKey(ec.derive_private_key(scalar, curve), "ecdsa-p256" if name == "p256" else "ecdsa-p384")


class Signer:
    """Signs PAE bytes; ECDSA signatures are looked up before being made, so regenerating changes nothing."""

    def __init__(self, cache: dict[str, str]) -> None:
        self.old = cache
        self.used: dict[str, str] = {}

    def sign(self, name: str, message: bytes) -> str:
        key = test_key(name)
        if key.key_type == "ed25519":
            return base64.b64encode(key.sign(message)).decode()
        slot = f"{name}:{hashlib.sha256(message).hexdigest()}"
        sig = self.used.get(slot) or self.old.get(slot)
        if sig is None or not key.public.verify(base64.b64decode(sig), message):
            sig = base64.b64encode(key.sign(message)).decode()
        self.used[slot] = sig
        return sig


def write_keys(out: Path) -> None:
    keys = out / "keys"
    keys.mkdir(parents=True)
    (keys / "README.md").write_text(
        "# TEST-ONLY KEYS\n\nThese private keys are published on purpose: they sign the conformance vectors and nothing"
        " else.\nThey are derived from fixed strings in scripts/generate_conformance.py. Never trust them for anything"
        " real.\n`untrusted` is the key a verifier is not given (a signature by a stranger).\n"
    )
    for name in KEY_NAMES:
        key = test_key(name)
        pem = key.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        (keys / f"{name}.pem").write_bytes(pem)
        (keys / f"{name}.pub").write_text(key.public.pem)


def public(name: str) -> PublicKey:
    return test_key(name).public


# ---- statements, envelopes, bundles ------------------------------------------------------------------------------


def statement(subject_root: str, **changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "_type": IN_TOTO,
        "subject": [
            {
                "name": "single-file",
                "digest": {"sha256": subject_root},
                "annotations": {"identity": "attest-identity/v1"},
            }
        ],
        "predicateType": SLSA,
        "predicate": {
            "buildDefinition": {
                "buildType": "https://attest.dev/buildtypes/finetune/v1",
                "externalParameters": {"hyperparameters": {"learning_rate": 0.0001, "max_steps": 3}},
                "resolvedDependencies": [
                    {"name": "base", "digest": {"sha256": "ab" * 32}, "annotations": {"role": "base"}}
                ],
            },
            "runDetails": {
                "builder": {"id": "https://attest.dev/builders/attest-record/v1"},
                "metadata": {
                    "invocationId": "urn:uuid:00000000-0000-4000-8000-000000000017",
                    "startedOn": "2026-01-01T00:00:00Z",
                    "finishedOn": "2026-01-01T00:01:00Z",
                },
            },
        },
    }
    doc.update(changes)
    return doc


def compact(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def envelope(
    signer: Signer,
    payload: bytes,
    keys: list[str],
    payload_type: str = PAYLOAD_TYPE,
    signed_type: str | None = None,
    signed_payload: bytes | None = None,
    urlsafe: bool = False,
) -> dict[str, Any]:
    msg = pae(signed_type or payload_type, payload if signed_payload is None else signed_payload)
    enc = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    sigs = []
    for k in keys:
        sig = signer.sign(k, msg)
        sigs.append({"keyid": public(k).keyid, "sig": enc(base64.b64decode(sig)).decode()})
    return {"payload": enc(payload).decode(), "payloadType": payload_type, "signatures": sigs}


def accept(**kw: Any) -> Expectation:
    return Expectation(verdict="accept", exit_code=0, **kw)


def reject(exit_code: int, reason: str, error: str, message: str) -> Expectation:
    return Expectation(verdict="reject", exit_code=exit_code, reason=reason, error=error, message=message)


def write(out: Path, rel: str, data: bytes) -> None:
    p = out / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)


def identity_vectors(out: Path) -> tuple[list[Vector], dict[str, dict[str, Roots]]]:
    vectors, roots = [], {}
    for name, build, spec, description in VALID_FOLDERS:
        rel = f"identity/valid/{name}"
        for path, data in build().items():
            write(out, f"{rel}/{path}", data)
        per_alg = {}
        for alg in ("sha256", "blake3"):
            m = hash_model(out / rel, alg)
            per_alg[alg] = Roots(weights_root=m.weights_root, files_root=m.files_root, model_root=m.model_root)
        roots[name] = per_alg
        vectors.append(
            Vector(
                id=f"id-{name}",
                kind="identity",
                path=rel,
                spec=spec,
                description=description,
                expect=accept(roots=per_alg),
            )
        )
    for name, files, reason, message in INVALID_FOLDERS:
        rel = f"identity/invalid/{name}"
        for path, data in files.items():
            write(out, f"{rel}/{path}", data)
        section = "1.5" if name == "no-weights" else "1.6"
        vectors.append(
            Vector(
                id=f"id-{name}",
                kind="identity",
                path=rel,
                spec=[section],
                description=f"refused: {reason}",
                expect=reject(2, reason, "InputError", message),
            )
        )
    return vectors, roots


def proof_vectors(out: Path, roots: dict[str, dict[str, Roots]]) -> list[Vector]:
    vectors: list[Vector] = []
    dtypes = hash_model(out / "identity/valid/every-dtype")
    dtypes_b3 = hash_model(out / "identity/valid/every-dtype", "blake3")
    single = hash_model(out / "identity/valid/single-file")
    multi = hash_model(out / "identity/valid/multi-chunk")
    wide = hash_model(out / "identity/valid/non-ascii")
    base = make_proof(dtypes, "t.F32").model_dump(mode="json")  # index 4 of 22: the left 16-leaf subtree

    def add(
        vid: str, proof: dict[str, Any], root: str, expect: Expectation, description: str, tree_size: int | None = None
    ) -> None:
        rel = f"proofs/{'valid' if expect.verdict == 'accept' else 'invalid'}/{vid}.json"
        write(out, rel, (json.dumps(proof, indent=2, ensure_ascii=False) + "\n").encode())
        spec = ["1.7"] if "2p53" not in vid else ["1.6", "1.7"]
        vectors.append(
            Vector(
                id=f"proof-{vid}",
                kind="proof",
                path=rel,
                spec=spec,
                description=description,
                root=root,
                tree_size=tree_size,
                expect=expect,
            )
        )

    def edited(edit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        doc = json.loads(json.dumps(base))
        edit(doc)
        return doc

    m_root, w_root = dtypes.model_root, dtypes.weights_root
    add("model-root", base, m_root, accept(matched="model_root"), "t.F32 of every-dtype against its model root")
    add("weights-root", base, w_root, accept(matched="weights_root"), "the same proof against the weights root")
    add("trusted-count", base, m_root, accept(matched="model_root"), "with the trusted tensor count 22", 22)
    add(
        "blake3",
        make_proof(dtypes_b3, "t.BF16").model_dump(mode="json"),
        dtypes_b3.model_root,
        accept(matched="model_root"),
        "algorithm blake3 is taken from the proof",
    )
    add(
        "first-of-three",
        make_proof(single, "embed.weight").model_dump(mode="json"),
        single.model_root,
        accept(matched="model_root"),
        "first leaf of single-file's three",
    )
    add(
        "last-of-three",
        make_proof(single, "lm_head.weight").model_dump(mode="json"),
        single.model_root,
        accept(matched="model_root"),
        "last leaf of three (the path skips a level)",
    )
    add(
        "one-tensor-tree",
        make_proof(multi, "big").model_dump(mode="json"),
        multi.weights_root,
        accept(matched="weights_root"),
        "a tree of one leaf: empty path, the leaf is the root",
    )
    add(
        "non-ascii-name",
        make_proof(wide, "x\U0001f642").model_dump(mode="json"),
        wide.model_root,
        accept(matched="model_root"),
        "a non-ASCII tensor name (JCS writes UTF-8)",
    )
    add(
        "other-tree-size",
        edited(lambda d: d.update(tree_size=23)),
        m_root,
        accept(matched="model_root"),
        "tree_size 23 fits the same path: without a trusted count a proof shows inclusion only",
    )
    for vid, edit, description in [
        ("name", lambda d: d["tensor"].update(name="t.F64"), "tensor name changed"),
        ("dtype", lambda d: d["tensor"].update(dtype="I32"), "dtype changed"),
        ("shape", lambda d: d["tensor"].update(shape=[1, 2]), "shape changed"),
        ("nbytes", lambda d: d["tensor"].update(nbytes=9), "nbytes changed"),
        ("data-root", lambda d: d["tensor"].update(data_root="00" * 32), "data root changed"),
        ("path-element", lambda d: d["path"].__setitem__(0, "00" * 32), "an audit path hash changed"),
        ("files-root", lambda d: d.update(files_root="00" * 32), "files_root changed (model root check)"),
        ("index", lambda d: d.update(index=5), "index changed (same path length)"),
        ("path-reversed", lambda d: d["path"].reverse(), "audit path in the wrong order"),
    ]:
        add(
            vid,
            edited(edit),
            m_root,
            reject(1, "proof-root-mismatch", "VerificationError", "does not lead to"),
            description,
        )
    add(
        "files-root-as-root",
        base,
        dtypes.files_root,
        reject(1, "proof-root-mismatch", "VerificationError", "does not lead to"),
        "the files root is neither a model root nor a weights root of the proof",
    )
    add(
        "path-too-long",
        edited(lambda d: d["path"].append("00" * 32)),
        m_root,
        reject(1, "proof-path-length", "VerificationError", "longer than the tree is deep"),
        "one hash more than (index, tree_size) implies",
    )
    add(
        "path-too-short",
        edited(lambda d: d["path"].pop()),
        m_root,
        reject(1, "proof-path-length", "VerificationError", "shorter than the tree is deep"),
        "one hash fewer than (index, tree_size) implies",
    )
    add(
        "index-outside-tree",
        edited(lambda d: d.update(index=22)),
        m_root,
        reject(1, "proof-index-outside", "VerificationError", "outside a tree"),
        "index = tree_size",
    )
    add(
        "chunk-size",
        edited(lambda d: d.update(chunk_size=CHUNK_SIZE * 2)),
        m_root,
        reject(1, "proof-chunk-size", "VerificationError", "chunk size"),
        "chunk_size other than 1048576",
    )
    add(
        "untrusted-count",
        edited(lambda d: d.update(tree_size=23)),
        m_root,
        reject(1, "proof-tree-size", "VerificationError", "trusted count is 22"),
        "tree_size 23 fits the path but the trusted count is 22",
        22,
    )
    add(
        "bad-hex",
        edited(lambda d: d["path"].__setitem__(0, "zz" * 32)),
        m_root,
        reject(1, "proof-malformed", "VerificationError", "malformed proof"),
        "an audit path entry that is not hex",
    )
    for vid, edit, description in [
        ("extra-key", lambda d: d.update(note="x"), "a key the schema does not have"),
        ("negative-index", lambda d: d.update(index=-1), "a negative index"),
        ("zero-tree-size", lambda d: d.update(tree_size=0), "tree_size 0"),
        ("dimension-above-2p53", lambda d: d["tensor"].update(shape=[2**53]), "an integer above 2^53 - 1"),
        ("unknown-algorithm", lambda d: d.update(algorithm="md5"), "an algorithm other than sha256/blake3"),
        ("wrong-type", lambda d: d.update(type="https://attest.dev/tensor-proof/v2"), "another proof type"),
    ]:
        add(vid, edited(edit), m_root, reject(2, "proof-schema", "InputError", "not a valid TensorProof"), description)
    return vectors


def envelope_vectors(out: Path, signer: Signer, subject_root: str) -> list[Vector]:
    vectors: list[Vector] = []
    payload = compact(statement(subject_root))

    def add(
        vid: str,
        env: dict[str, Any] | bytes,
        keys: list[str],
        expect: Expectation,
        description: str,
        threshold: int | None = None,
        subject: str | None = None,
    ) -> None:
        rel = f"envelopes/{'valid' if expect.verdict == 'accept' else 'invalid'}/{vid}.json"
        write(out, rel, env if isinstance(env, bytes) else compact(env) + b"\n")
        vectors.append(
            Vector(
                id=f"env-{vid}",
                kind="envelope",
                path=rel,
                spec=["3.1"],
                description=description,
                keys=keys,
                threshold=threshold,
                subject=subject,
                expect=expect,
            )
        )

    for k in ("ed25519", "p256", "p384"):
        add(k, envelope(signer, payload, [k]), [k], accept(signers=[k]), f"one {k} signature")
    add(
        "all-keys",
        envelope(signer, payload, ["ed25519", "p256"]),
        ["p256", "ed25519", "p384"],
        accept(signers=["ed25519", "p256"]),
        "two of three trusted keys signed; threshold 2",
        threshold=2,
    )
    add(
        "subject",
        envelope(signer, payload, ["ed25519"]),
        ["ed25519"],
        accept(signers=["ed25519"]),
        "the caller's expected model root is a subject",
        subject=subject_root,
    )
    add(
        "urlsafe-base64",
        envelope(signer, compact(statement(subject_root, note="~~~?>")), ["ed25519"], urlsafe=True),
        ["ed25519"],
        accept(signers=["ed25519"]),
        "payload and signature in the URL-safe alphabet",
    )
    wrong_hint = envelope(signer, payload, ["p256"])
    wrong_hint["signatures"][0]["keyid"] = public("ed25519").keyid
    add(
        "keyid-is-a-hint",
        wrong_hint,
        ["ed25519", "p256"],
        accept(signers=["p256"]),
        "the keyid names another trusted key: every key is tried",
    )
    stranger_first = envelope(signer, payload, ["untrusted", "ed25519"])
    add(
        "with-stranger",
        stranger_first,
        ["ed25519"],
        accept(signers=["ed25519"]),
        "an untrusted signature beside a trusted one",
    )
    extra = envelope(signer, payload, ["ed25519"])
    extra["note"] = "unknown envelope fields are ignored"
    add("unknown-field", extra, ["ed25519"], accept(signers=["ed25519"]), "an envelope field DSSE does not define")
    unicode_payload = compact(statement(subject_root, note="模型 naïve"))
    add(
        "non-ascii-payload",
        envelope(signer, unicode_payload, ["p384"]),
        ["p384"],
        accept(signers=["p384"]),
        "PAE counts the payload's bytes, not its characters",
    )

    sig_fail = reject(1, "signature", "SignatureError", "signatures verify with a trusted key")
    add("untrusted-key", envelope(signer, payload, ["untrusted"]), ["ed25519"], sig_fail, "signed by a stranger only")
    add("no-signatures", envelope(signer, payload, []), ["ed25519"], sig_fail, "an empty signature list")
    tampered = envelope(signer, payload, ["ed25519"])
    tampered["payload"] = base64.b64encode(payload.replace(b'max_steps":3', b'max_steps":4')).decode()
    add("tampered-payload", tampered, ["ed25519"], sig_fail, "payload changed after signing")
    add(
        "pae-over-base64",
        envelope(signer, payload, ["ed25519"], signed_payload=base64.b64encode(payload)),
        ["ed25519"],
        sig_fail,
        "signed over the base64 text instead of the payload bytes",
    )
    add(
        "type-changed",
        envelope(signer, payload, ["p256"], payload_type="application/json", signed_type=PAYLOAD_TYPE),
        ["p256"],
        sig_fail,
        "payloadType changed after signing (PAE covers it)",
    )
    twice = envelope(signer, payload, ["ed25519", "ed25519"])
    add(
        "same-key-twice",
        twice,
        ["ed25519", "p256"],
        reject(1, "signature", "SignatureError", "1 of 2 signatures verify"),
        "one key twice is one signer; threshold 2",
        threshold=2,
    )
    swapped = envelope(signer, payload, ["p256"])
    swapped["signatures"][0]["sig"] = envelope(signer, payload, ["p384"])["signatures"][0]["sig"]
    add("ecdsa-curve-swap", swapped, ["p256"], sig_fail, "a P-384 signature presented for the P-256 key")
    add(
        "wrong-payload-type",
        envelope(signer, payload, ["ed25519"], payload_type="application/json"),
        ["ed25519"],
        reject(1, "payload-type", "PayloadTypeError", "payloadType is"),
        "validly signed, but not an in-toto payload",
    )
    add(
        "subject-mismatch",
        envelope(signer, payload, ["ed25519"]),
        ["ed25519"],
        reject(1, "subject", "SubjectError", "not " + "cd" * 32),
        "no subject has the expected root",
        subject="cd" * 32,
    )
    no_type = {k: v for k, v in statement(subject_root).items() if k != "_type"}
    add(
        "statement-without-type",
        envelope(signer, compact(no_type), ["ed25519"]),
        ["ed25519"],
        reject(2, "statement", "StatementError", "_type"),
        "a signed payload without _type is not a Statement v1",
    )
    add(
        "statement-other-predicate",
        envelope(signer, compact(statement(subject_root, predicateType="https://example.com/x")), ["ed25519"]),
        ["ed25519"],
        reject(2, "statement", "StatementError", "predicateType"),
        "not SLSA Provenance v1",
    )

    malformed = "EnvelopeError"
    good = envelope(signer, payload, ["ed25519"])
    b64 = good["payload"]
    for vid, env, message, description in [
        (
            "payload-whitespace",
            {**good, "payload": b64[:8] + "\n" + b64[8:]},
            "not valid base64",
            "a newline in the base64",
        ),
        (
            "payload-no-padding",
            {**good, "payload": b64.rstrip("=") if b64.endswith("=") else b64[:-1]},
            "not valid base64",
            "padding left out",
        ),
        (
            "payload-mixed-alphabet",
            {**good, "payload": b64[:-4] + "-_+/"},
            "mixes",
            "URL-safe and standard in one string",
        ),
        (
            "payload-non-canonical",
            {**good, "payload": base64.b64encode(b"x").decode().replace("A=", "B=")},
            "canonical",
            "non-zero pad bits",
        ),
        ("sig-not-base64", {**good, "signatures": [{"keyid": "", "sig": "!!"}]}, "not valid base64", "signature text"),
        ("missing-payload", {k: v for k, v in good.items() if k != "payload"}, "payload", "no payload field"),
        ("missing-signatures", {k: v for k, v in good.items() if k != "signatures"}, "signatures", "no signatures"),
        ("too-many-signatures", {**good, "signatures": good["signatures"] * 65}, "at most 64", "65 signatures"),
    ]:
        add(vid, env, ["ed25519"], reject(2, "envelope", malformed, message), description)
    add(
        "duplicate-key",
        b'{"payload":"eA==","payload":"'
        + b64.encode()
        + b'","payloadType":"'
        + PAYLOAD_TYPE.encode()
        + b'","signatures":[]}\n',
        ["ed25519"],
        reject(2, "envelope", "StatementError", "duplicate key"),
        "an envelope with a repeated key",
    )
    return vectors


def statement_vectors(out: Path, subject_root: str) -> list[Vector]:
    vectors: list[Vector] = []
    good = statement(subject_root)

    def add(vid: str, data: bytes, expect: Expectation, description: str) -> None:
        rel = f"statements/{'valid' if expect.verdict == 'accept' else 'invalid'}/{vid}.json"
        write(out, rel, data)
        vectors.append(
            Vector(
                id=f"stmt-{vid}",
                kind="statement",
                path=rel,
                spec=["2.1", "2.2"],
                description=description,
                expect=expect,
            )
        )

    add("minimal", compact(good), accept(), "the statement the envelope vectors sign")
    add("unknown-fields", compact({**good, "x-extension": {"kept": True}}), accept(), "unknown fields are ignored")
    add("pretty-printed", json.dumps(good, indent=2).encode(), accept(), "whitespace is allowed in the payload")
    bad = "StatementError"
    for vid, doc, message, description in [
        ("no-type", {k: v for k, v in good.items() if k != "_type"}, "_type", "_type is required"),
        ("old-type", {**good, "_type": "https://in-toto.io/Statement/v0.1"}, "_type", "Statement v0.1"),
        ("empty-subject", {**good, "subject": []}, "subject", "no subject"),
        ("upper-hex", {**good, "subject": [{"name": "m", "digest": {"sha256": "AB" * 32}}]}, "hex", "uppercase hex"),
        ("other-predicate", {**good, "predicateType": "https://example.com/p"}, "predicateType", "not SLSA v1"),
        (
            "no-build-definition",
            {**good, "predicate": {"runDetails": good["predicate"]["runDetails"]}},
            "buildDefinition",
            "predicate without buildDefinition",
        ),
        ("not-an-object", [good], "valid", "a JSON array"),
    ]:
        add(vid, compact(doc), reject(2, "statement", bad, message), description)
    for vid, data, message, description in [
        ("not-utf8", compact(good).replace(b"single-file", b"single-\xff"), "not UTF-8", "invalid UTF-8"),
        (
            "duplicate-key",
            compact(good)[:-1] + b',"_type":"' + IN_TOTO.encode() + b'"}',
            "duplicate key",
            "a repeated key",
        ),
        ("nan", compact(good).replace(b"0.0001", b"NaN"), "not JSON", "NaN"),
        ("infinity", compact(good).replace(b"0.0001", b"-Infinity"), "not JSON", "-Infinity"),
        ("truncated", compact(good)[:-1], "not valid JSON", "cut short"),
    ]:
        add(vid, data, reject(2, "statement-json", bad, message), description)
    return vectors


def bundle_vectors(out: Path, signer: Signer, subject_root: str) -> list[Vector]:
    vectors: list[Vector] = []
    one = compact(envelope(signer, compact(statement(subject_root)), ["ed25519"]))
    two = compact(envelope(signer, compact(statement(subject_root, note="second")), ["p256"]))

    def add(vid: str, data: bytes, expect: Expectation, description: str) -> None:
        rel = f"bundles/{'valid' if expect.verdict == 'accept' else 'invalid'}/{vid}.intoto.jsonl"
        write(out, rel, data)
        vectors.append(
            Vector(id=f"bundle-{vid}", kind="bundle", path=rel, spec=["3.3"], description=description, expect=expect)
        )

    add("two-lines", one + b"\n" + two + b"\n", accept(), "two envelopes, each line ending in LF")
    add("empty-file", b"", accept(), "no envelopes")
    err = "BundleError"
    add("no-final-newline", one + b"\n" + two, reject(2, "bundle-truncated", err, "truncated"), "last line cut")
    add("empty-line", one + b"\n\n" + two + b"\n", reject(2, "bundle-empty-line", err, "empty line"), "a blank line")
    add("crlf", one + b"\r\n", accept(), "a CR before the LF is JSON whitespace: the line is still one envelope")
    add("not-an-envelope", one + b"\n" + b'{"a": 1}\n', reject(2, "bundle-line", err, "line 2"), "a JSON line")
    return vectors


def generate(out: Path, reuse: Path | None = None) -> VectorManifest:
    """Write the whole suite into `out` (emptied first); ECDSA signatures are reused from `reuse`'s cache."""
    cache_file = (reuse or out) / ECDSA_CACHE
    cache = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    write_keys(out)
    signer = Signer(cache)
    identity, roots = identity_vectors(out)
    subject_root = roots["single-file"]["sha256"].model_root
    vectors = [
        *identity,
        *proof_vectors(out, roots),
        *envelope_vectors(out, signer, subject_root),
        *statement_vectors(out, subject_root),
        *bundle_vectors(out, signer, subject_root),
    ]
    (out / ECDSA_CACHE).write_text(json.dumps(dict(sorted(signer.used.items())), indent=2) + "\n")
    manifest = VectorManifest(chunk_size=CHUNK_SIZE, vectors=vectors)
    (out / "vectors.json").write_text(manifest.model_dump_json(indent=2, exclude_none=True) + "\n")
    return manifest


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT
    m = generate(target, reuse=DEFAULT_OUT)
    valid = sum(v.expect.verdict == "accept" for v in m.vectors)
    print(f"{target}: {len(m.vectors)} vectors ({valid} valid, {len(m.vectors) - valid} invalid)")

"""SPEC.md section 1 from the text: data roots, tensor and file records, the three roots, and every refusal of 1.5 and
1.6 (safetensors headers, shard indexes)."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path, PurePosixPath
from typing import Any

import blake3
import rfc8785

from tests.conformance.reference import bad_input

CHUNK = 1048576
MAX_HEADER = 100000000
MAX_INT = 2**53 - 1
MAX_INDEX = 64 * 1024 * 1024
BITS = {
    **dict.fromkeys(["BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ"], 8),
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    **dict.fromkeys(["I16", "U16", "F16", "BF16"], 16),
    **dict.fromkeys(["I32", "U32", "F32"], 32),
    **dict.fromkeys(["I64", "U64", "F64", "C64"], 64),
}
EXCLUDED = {".git", ".hg", ".svn", ".attest", "model.sig", ".cache/huggingface"}
INERT: dict[str, type] = {"total_size": int, "total_parameters": int, "mergekit_version": str}
PICKLES = {".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"}


def h(alg: str, *parts: bytes) -> bytes:
    d = hashlib.sha256() if alg == "sha256" else blake3.blake3()
    for p in parts:
        d.update(p)
    return d.digest()


def mth(alg: str, leaves: list[bytes]) -> bytes:
    if not leaves:
        return h(alg, b"")
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return h(alg, b"\x01", mth(alg, leaves[:k]), mth(alg, leaves[k:]))


def data_root(alg: str, data: bytes) -> str:
    chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)] or [b""]
    return mth(alg, [h(alg, b"\x00", c) for c in chunks]).hex()


def tensor_digest(alg: str, name: str, dtype: str, shape: list[int], nbytes: int, data: str) -> bytes:
    record: dict[str, Any] = {"name": name, "dtype": dtype, "shape": shape, "nbytes": nbytes, "data": data}
    return h(alg, b"\x02", rfc8785.dumps(record))


def model_root(alg: str, weights_root: str, files_root: str) -> str:
    record: dict[str, Any] = {
        "format": "attest-identity/v1",
        "algorithm": alg,
        "chunk_size": CHUNK,
        "weights_root": weights_root,
        "files_root": files_root,
    }
    return h(alg, b"\x04", rfc8785.dumps(record)).hex()


class _Duplicate(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _Duplicate(k)
        out[k] = v
    return out


def finite(text: str) -> float:
    """A number literal that overflows a double (1e400) is refused, not read as Infinity (SPEC.md 2.1)."""
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("out of range")
    return value


def strict(raw: bytes | str) -> Any:
    return json.loads(raw, object_pairs_hook=_no_duplicates, parse_float=finite, parse_constant=_constant)


def _constant(name: str) -> Any:
    raise ValueError(name)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _unicode(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_safetensors(raw: bytes) -> list[tuple[str, str, list[int], bytes]]:
    """(name, dtype, shape, bytes) of every tensor, or a Refusal naming the 1.6 rule broken."""
    if len(raw) < 8:
        raise bad_input("st-short")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > MAX_HEADER:
        raise bad_input("st-header-too-large")
    if 8 + n > len(raw):
        raise bad_input("st-header-past-end")
    try:
        text = raw[8 : 8 + n].decode("utf-8")
    except UnicodeDecodeError:
        raise bad_input("st-header-not-utf8") from None
    if not text.startswith("{"):
        raise bad_input("st-header-not-object")
    try:
        header = strict(text)
    except _Duplicate:
        raise bad_input("st-header-duplicate-key") from None
    except ValueError:
        raise bad_input("st-header-not-json") from None
    if not isinstance(header, dict):
        raise bad_input("st-header-not-object")
    buffer = raw[8 + n :]
    spans = []
    for name, e in header.items():
        if name == "__metadata__":
            if not isinstance(e, dict) or not all(isinstance(v, str) for v in e.values()):
                raise bad_input("st-metadata-not-strings")
            if not all(_unicode(s) for kv in e.items() for s in kv):
                raise bad_input("st-metadata-not-unicode")
            continue
        if name == "":
            raise bad_input("st-empty-name")
        if not _unicode(name):
            raise bad_input("st-name-not-unicode")
        if not isinstance(e, dict):
            raise bad_input("st-entry-not-object")
        if set(e) != {"dtype", "shape", "data_offsets"}:
            raise bad_input("st-entry-keys")
        dtype, shape, offsets = e["dtype"], e["shape"], e["data_offsets"]
        if dtype not in BITS:
            raise bad_input("st-dtype-unknown")
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            raise bad_input("st-shape-invalid")
        if len(shape) > 64:
            raise bad_input("st-shape-too-many-dims")
        if any(d > MAX_INT for d in shape):
            raise bad_input("st-dimension-too-large")
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(o) for o in offsets):
            raise bad_input("st-offsets-invalid")
        begin, end = offsets
        if not 0 <= begin <= end:
            raise bad_input("st-offsets-reversed")
        if end > len(buffer):
            raise bad_input("st-offsets-out-of-bounds")
        numel = 1
        for d in shape:
            numel *= d
        if numel * BITS[dtype] % 8:
            raise bad_input("st-span-not-whole-bytes")
        if numel * BITS[dtype] // 8 != end - begin:
            raise bad_input("st-span-mismatch")
        spans.append((begin, end, name, dtype, shape))
    cursor = 0
    for begin, end, *_ in sorted(spans, key=lambda s: (s[0], s[1])):
        if begin < cursor:
            raise bad_input("st-overlap")
        if begin > cursor:
            raise bad_input("st-gap")
        cursor = end
    if cursor != len(buffer):
        raise bad_input("st-trailing-bytes")
    return [(name, dtype, shape, buffer[b:e]) for b, e, name, dtype, shape in spans]


def _excluded(rel: str) -> bool:
    parts = rel.split("/")
    return any("/".join(parts[: i + 1]) in EXCLUDED for i in range(len(parts)))


def list_folder(root: Path) -> dict[str, bytes]:
    """Relative POSIX path -> bytes of every file the identity covers (exclusions applied, top level only)."""
    if not any(root.iterdir()):
        raise bad_input("empty-folder")
    files: dict[str, bytes] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        prefix = "" if rel_dir == "." else rel_dir + "/"
        dirnames[:] = [d for d in dirnames if not _excluded(prefix + d)]
        for d in dirnames:
            if (Path(dirpath) / d).is_symlink():
                raise bad_input("symlinked-folder")
        for f in filenames:
            rel = prefix + f
            if _excluded(rel):
                continue
            full = Path(dirpath) / f
            if full.is_symlink() and root.resolve() not in full.resolve().parents:
                raise bad_input("symlink-outside")
            files[rel] = full.read_bytes()
    return files


def check_index(raw: bytes, shards: dict[str, list[str]], others: set[str]) -> None:
    """1.6: a shard index says exactly what the weight files hold, and nothing else a loader reads."""
    if len(raw) > MAX_INDEX:
        raise bad_input("index-too-large")
    try:
        doc = strict(raw)
    except ValueError:
        raise bad_input("index-not-json") from None
    wm = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(wm, dict):
        raise bad_input("index-no-weight-map")
    if not wm:
        raise bad_input("index-empty")
    if set(doc) - {"weight_map", "metadata"}:
        raise bad_input("index-unknown-key")
    metadata = doc.get("metadata", {})
    if not isinstance(metadata, dict):
        raise bad_input("index-metadata")
    for key, value in metadata.items():  # only keys no loader reads to decide how weights load
        if key not in INERT:
            raise bad_input("index-metadata-key")
        if (INERT[key] is int and not (_is_int(value) and value >= 0)) or (
            INERT[key] is str and not isinstance(value, str)
        ):
            raise bad_input("index-metadata-value")
    by_shard: dict[str, set[str]] = {}
    for tensor, shard in wm.items():
        if not isinstance(shard, str) or not shard:
            raise bad_input("index-bad-entry")
        if shard.startswith("/") or ".." in shard.split("/") or "\\" in shard:
            raise bad_input("index-outside")
        name = PurePosixPath(shard).as_posix()
        if name not in shards:
            raise bad_input("index-not-weight-file" if name in others else "index-missing-shard")
        by_shard.setdefault(name, set()).add(tensor)
    for shard, names in by_shard.items():
        if names - set(shards[shard]):
            raise bad_input("index-misplaced")
        if set(shards[shard]) - names:
            raise bad_input("index-omits")
    if set(shards) - set(by_shard):
        raise bad_input("index-uncovered")


def roots(folder: Path, alg: str) -> dict[str, str]:
    """weights_root, files_root, model_root of a model folder (SPEC.md 1.2-1.6)."""
    files = list_folder(folder)
    weights = sorted(p for p in files if "/" not in p and p.endswith(".safetensors"))
    indexes = sorted(p for p in files if "/" not in p and p.endswith(".safetensors.index.json"))
    others = sorted(p for p in files if p not in weights and p not in indexes)
    if not weights and not any(PurePosixPath(p).suffix.lower() in PICKLES for p in others):
        raise bad_input("no-weights")
    tensors: dict[str, tuple[str, list[int], bytes]] = {}
    shards: dict[str, list[str]] = {}
    for w in weights:
        parsed = parse_safetensors(files[w])
        shards[w] = [t[0] for t in parsed]
    for w in weights:
        for name, dtype, shape, data in parse_safetensors(files[w]):
            if name in tensors:
                raise bad_input("st-duplicate-tensor")
            tensors[name] = (dtype, shape, data)
    for i in indexes:
        check_index(files[i], shards, set(others))
    leaves = [
        tensor_digest(alg, name, dtype, shape, len(data), data_root(alg, data))
        for name, (dtype, shape, data) in sorted(tensors.items())
    ]
    file_leaves = [
        h(alg, b"\x03", rfc8785.dumps({"path": p, "size": len(files[p]), "data": data_root(alg, files[p])}))
        for p in others
    ]
    w_root, f_root = mth(alg, leaves).hex(), mth(alg, file_leaves).hex()
    return {"weights_root": w_root, "files_root": f_root, "model_root": model_root(alg, w_root, f_root)}

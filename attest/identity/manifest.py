"""The identity manifest: the typed result of hashing a model folder (`attest hash --json`)."""

from __future__ import annotations

import json
import re
from array import array
from collections.abc import Iterator, Sequence
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from attest.identity.header_table import DTYPE_CODES, DTYPE_TAGS
from attest.identity.merkle import (
    TAG_FILE,
    TAG_MODEL,
    TAG_TENSOR,
    Algorithm,
    PackedLeaves,
    hash_record,
    hash_tagged,
)
from attest.packed_rows import PackedRows, json_chunks

IDENTITY_FORMAT: Final = "attest-identity/v1"
MANIFEST_TYPE: Final = "https://attest.dev/identity-manifest/v1"

Hex = str


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorEntry(_Strict):
    name: str
    dtype: str
    shape: list[int]
    nbytes: int = Field(ge=0)
    data_root: Hex = Field(description="Merkle root over the tensor's bytes in 1 MiB chunks")
    digest: Hex = Field(description="Leaf hash of the tensor record: H(0x02 || JCS(record))")
    file: str = Field(description="Shard file holding the tensor (informative: not part of any root)")

    def record(self) -> dict[str, Any]:
        return tensor_record(self.name, self.dtype, self.shape, self.nbytes, self.data_root)

    @classmethod
    def from_validated(
        cls, name: str, dtype: str, shape: list[int], nbytes: int, data_root: Hex, digest: Hex, file: str
    ) -> TensorEntry:
        """What `model_construct` builds (no validation: the values come from a validated header and our own
        hashes), without its per-field alias search: hashing builds one per tensor, 10^5 for a large MoE. Entries
        are frozen, so they share one fields-set. tests/identity/test_identity_roots.py holds it equal to
        model_validate."""
        entry = cls.__new__(cls)
        values = {"name": name, "dtype": dtype, "shape": shape, "nbytes": nbytes}
        values |= {"data_root": data_root, "digest": digest, "file": file}
        object.__setattr__(entry, "__dict__", values)
        object.__setattr__(entry, "__pydantic_fields_set__", _TENSOR_FIELDS)
        object.__setattr__(entry, "__pydantic_extra__", None)
        object.__setattr__(entry, "__pydantic_private__", None)
        return entry


_TENSOR_FIELDS = set(TensorEntry.model_fields)


class TensorEntries(PackedRows[TensorEntry]):
    """A manifest's tensor entries as columns: what `hash_model` returns (a `TensorEntry` is ~0.7 KB, 10^5 of them
    for a large MoE). Per tensor: its name (the string the folder's header tables hold, shared), a dtype code, a
    shape number into the few distinct shapes, 8 bytes of size, a file number, and the data root and the digest as
    32 raw bytes each in two buffers. `TensorEntry` objects are made on access; the JSON form is a list of them,
    exactly as before (`IdentityManifest.tensors` reads either)."""

    __slots__ = (
        "_digests",
        "_dtypes",
        "_file_ids",
        "_files",
        "_names",
        "_nbytes",
        "_numbers",
        "_roots",
        "_shape_ids",
        "_shapes",
    )
    row_model = TensorEntry

    def __init__(self, count: int) -> None:
        """`count` entries, each to be filled once with `set`."""
        self._names: list[str] = [""] * count
        self._dtypes = bytearray(count)
        self._shape_ids = array("I", bytes(4 * count))
        self._nbytes = array("Q", bytes(8 * count))
        self._file_ids = array("I", bytes(4 * count))
        self._roots = bytearray(32 * count)
        self._digests = bytearray(32 * count)
        self._numbers: dict[tuple[int, ...] | str, int] = {}  # each distinct shape or file -> its number
        self._shapes: list[tuple[int, ...]] = []
        self._files: list[str] = []

    def set(
        self,
        i: int,
        name: str,
        dtype: str,
        shape: tuple[int, ...],
        nbytes: int,
        data_root: bytes,
        digest: bytes,
        file: str,
    ) -> None:
        self._names[i] = name
        self._dtypes[i] = DTYPE_CODES[dtype]
        self._shape_ids[i] = self._number(shape, self._shapes)
        self._nbytes[i] = nbytes
        self._file_ids[i] = self._number(file, self._files)
        self._roots[32 * i : 32 * i + 32] = data_root
        self._digests[32 * i : 32 * i + 32] = digest

    def _number(self, value: Any, values: list[Any]) -> int:
        n = self._numbers.get(value)
        if n is None:
            n = self._numbers[value] = len(values)
            values.append(value)
        return n

    def leaves(self) -> PackedLeaves:
        """The entries' digests as raw leaf hashes, in order (the weights root's leaves)."""
        return PackedLeaves(self._digests)

    def names(self) -> list[str]:
        return list(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def row(self, i: int) -> TensorEntry:
        return TensorEntry.from_validated(
            self._names[i],
            DTYPE_TAGS[self._dtypes[i]],
            list(self._shapes[self._shape_ids[i]]),
            self._nbytes[i],
            self._roots[32 * i : 32 * i + 32].hex(),
            self._digests[32 * i : 32 * i + 32].hex(),
            self._files[self._file_ids[i]],
        )

    def held_bytes(self) -> int:
        """Bytes held per entry beyond the (shared) name strings: the columns."""
        columns = (self._dtypes, self._shape_ids, self._nbytes, self._file_ids, self._roots, self._digests)
        return 8 * len(self._names) + sum(len(c) * getattr(c, "itemsize", 1) for c in columns)


Tensors = Annotated[Sequence[TensorEntry], TensorEntries]
"""What `IdentityManifest.tensors` holds: a TensorEntries (hash_model) or a list of TensorEntry (a manifest read
from JSON or built from entries)."""


class FileEntry(_Strict):
    path: str = Field(description="POSIX path relative to the model folder")
    size: int = Field(ge=0)
    data_root: Hex
    digest: Hex = Field(description="Leaf hash of the file record: H(0x03 || JCS(record))")
    kind: Literal["file", "pickle"] = Field(
        description="pickle: a PyTorch pickle hashed as opaque bytes, never unpickled"
    )

    def record(self) -> dict[str, Any]:
        return file_record(self.path, self.size, self.data_root)


class IdentityManifest(_Strict):
    type: Literal["https://attest.dev/identity-manifest/v1"] = MANIFEST_TYPE
    format: Literal["attest-identity/v1"] = IDENTITY_FORMAT
    algorithm: Algorithm
    chunk_size: int
    weights_root: Hex
    files_root: Hex
    model_root: Hex
    tensors: Tensors
    files: list[FileEntry]
    weight_files: list[str] = Field(description="safetensors shards and indexes covered by the weights root")
    excluded: list[str] = Field(description="paths left out of the identity (attest's own, VCS, signatures)")
    notes: list[str] = Field(default_factory=list)

    def tensor(self, name: str) -> TensorEntry | None:
        for t in self.tensors:
            if t.name == name:
                return t
        return None


def manifest_json(manifest: IdentityManifest, indent: int | None = None) -> Iterator[str]:
    """The text of `manifest.model_dump_json(indent=indent)` in pieces, one per tensor entry, so that neither the
    entries nor the whole text are held at once (10^5 tensors: ~70 MB of entries, ~40 MB of text)."""
    return json_chunks(manifest, ["tensors"], indent)


def tensor_record(name: str, dtype: str, shape: list[int], nbytes: int, data_root: Hex) -> dict[str, Any]:
    return {"name": name, "dtype": dtype, "shape": list(shape), "nbytes": nbytes, "data": data_root}


def file_record(path: str, size: int, data_root: Hex) -> dict[str, Any]:
    return {"path": path, "size": size, "data": data_root}


def model_record(algorithm: Algorithm, chunk_size: int, weights_root: Hex, files_root: Hex) -> dict[str, Any]:
    return {
        "format": IDENTITY_FORMAT,
        "algorithm": algorithm,
        "chunk_size": chunk_size,
        "weights_root": weights_root,
        "files_root": files_root,
    }


def tensor_leaf(algorithm: Algorithm, record: dict[str, Any]) -> bytes:
    return hash_record(algorithm, TAG_TENSOR, record)


def tensor_leaf_of(
    algorithm: Algorithm, name: str, dtype: str, shape: Sequence[int], nbytes: int, data_root: Hex
) -> bytes:
    """`tensor_leaf` of `tensor_record(...)` without a generic canonicaliser: the hot path of hashing 10^5 tensors.

    The bytes are RFC 8785's for this record: keys in code-unit order (data, dtype, name, nbytes, shape), integers
    below 2^53 in plain decimal (the reader refuses larger dimensions), strings escaped as ECMAScript's JSON.stringify
    does (quote, backslash, the five short control escapes, other controls as lowercase u00xx escapes, everything
    else literal UTF-8), which is what `json.dumps(ensure_ascii=False)` writes; lone surrogates never reach here (the
    reader refuses them). tests/identity/test_identity_roots.py holds it equal to rfc8785 on hostile names."""
    dims = ",".join(map(str, map(int, shape)))
    text = (
        f'{{"data":{_json_string(data_root)},"dtype":{_json_string(dtype)},'
        f'"name":{_json_string(name)},"nbytes":{int(nbytes)},"shape":[{dims}]}}'
    )
    return hash_tagged(algorithm, TAG_TENSOR, text.encode("utf-8"))


_ESCAPED = re.compile(r'["\\\x00-\x1f]')
"""What `json.dumps(ensure_ascii=False)` escapes: a string without any of these is written as it is, in quotes."""


def _json_string(text: str) -> str:
    return f'"{text}"' if _ESCAPED.search(text) is None else json.dumps(text, ensure_ascii=False)


def file_leaf(algorithm: Algorithm, record: dict[str, Any]) -> bytes:
    return hash_record(algorithm, TAG_FILE, record)


def model_root_of(algorithm: Algorithm, chunk_size: int, weights_root: Hex, files_root: Hex) -> bytes:
    return hash_record(algorithm, TAG_MODEL, model_record(algorithm, chunk_size, weights_root, files_root))

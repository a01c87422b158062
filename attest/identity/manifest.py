"""The identity manifest: the typed result of hashing a model folder (`attest hash --json`)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from attest.identity.merkle import TAG_FILE, TAG_MODEL, TAG_TENSOR, Algorithm, hash_record, hash_tagged

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
    tensors: list[TensorEntry]
    files: list[FileEntry]
    weight_files: list[str] = Field(description="safetensors shards and indexes covered by the weights root")
    excluded: list[str] = Field(description="paths left out of the identity (attest's own, VCS, signatures)")
    notes: list[str] = Field(default_factory=list)

    def tensor(self, name: str) -> TensorEntry | None:
        for t in self.tensors:
            if t.name == name:
                return t
        return None


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

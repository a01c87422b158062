"""Inclusion proofs: show that one tensor (name, dtype, shape, bytes) is part of a model root, without the others.

A proof carries the tensor record, its audit path in the weights tree, and the files root, so a verifier recomputes
the tensor leaf, then the weights root, then the model root.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from attest.errors import InputError, VerificationError
from attest.identity.chunked import CHUNK_SIZE
from attest.identity.manifest import IdentityManifest, TensorEntries, model_root_of, tensor_leaf, tensor_record
from attest.identity.merkle import Algorithm, audit_path, root_from_path

PROOF_TYPE: Final = "https://attest.dev/tensor-proof/v1"


class ProofTensor(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    dtype: str
    shape: list[Annotated[int, Field(ge=0, le=2**53 - 1)]] = Field(max_length=64)
    nbytes: int = Field(ge=0, le=2**53 - 1)
    data_root: str


class TensorProof(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["https://attest.dev/tensor-proof/v1"] = PROOF_TYPE
    algorithm: Algorithm
    chunk_size: int
    tensor: ProofTensor
    index: int = Field(ge=0, le=2**53 - 1, description="Position of the tensor among all tensors sorted by name")
    tree_size: int = Field(ge=1, le=2**53 - 1, description="Number of tensors in the weights tree")
    path: list[str] = Field(description="Audit path (hex), leaf to root, RFC 9162 order")
    weights_root: str
    files_root: str
    model_root: str


def make_proof(manifest: IdentityManifest, name: str) -> TensorProof:
    tensors = manifest.tensors
    leaves: Sequence[bytes]
    if isinstance(tensors, TensorEntries):  # hash_model's columns: no entry objects made
        names, leaves = tensors.names(), tensors.leaves()
    else:
        names, leaves = [t.name for t in tensors], [bytes.fromhex(x.digest) for x in tensors]
    if name not in names:
        raise InputError(None, f"no tensor named {name!r} in the model")
    index = names.index(name)
    t = tensors[index]
    return TensorProof(
        algorithm=manifest.algorithm,
        chunk_size=manifest.chunk_size,
        tensor=ProofTensor(name=t.name, dtype=t.dtype, shape=t.shape, nbytes=t.nbytes, data_root=t.data_root),
        index=index,
        tree_size=len(leaves),
        path=[h.hex() for h in audit_path(manifest.algorithm, leaves, index)],
        weights_root=manifest.weights_root,
        files_root=manifest.files_root,
        model_root=manifest.model_root,
    )


def check_proof(proof: TensorProof, root_hex: str, tree_size: int | None = None) -> str:
    """Check a proof against a trusted root (model root or weights root). Returns which root matched.
    Raises VerificationError when the proof does not lead to that root.

    A root does not commit to its leaf count, and an RFC 9162 path fits trees of neighbouring sizes (and other
    indices), so on its own a proof shows only that the record is a leaf of the trusted tree (SPEC.md 1.7). Given the
    tensor count from a trusted source (`tree_size`), the proof's size must equal it, and then its index is exact."""
    if proof.chunk_size != CHUNK_SIZE:
        raise VerificationError(f"proof uses chunk size {proof.chunk_size}, identity v1 fixes {CHUNK_SIZE}")
    if tree_size is not None and proof.tree_size != tree_size:
        raise VerificationError(f"proof is for a tree of {proof.tree_size} tensors, the trusted count is {tree_size}")
    t = proof.tensor
    leaf = tensor_leaf(proof.algorithm, tensor_record(t.name, t.dtype, t.shape, t.nbytes, t.data_root))
    try:
        path = [bytes.fromhex(p) for p in proof.path]
        weights_root = root_from_path(proof.algorithm, leaf, proof.index, proof.tree_size, path).hex()
    except ValueError as exc:
        raise VerificationError(f"malformed proof: {exc}") from None
    model_root = model_root_of(proof.algorithm, proof.chunk_size, weights_root, proof.files_root).hex()
    want = root_hex.lower()
    if want == model_root:
        return "model_root"
    if want == weights_root:
        return "weights_root"
    raise VerificationError(
        f"proof for tensor {t.name!r} does not lead to root {root_hex} (it leads to model root {model_root})"
    )

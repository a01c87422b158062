"""Checkpoint identity: strict safetensors reading, chunked Merkle trees, manifests and inclusion proofs."""

from attest.identity.diff import ManifestDiff, diff_manifests
from attest.identity.hashing import ModelRoots, hash_model, hash_roots
from attest.identity.manifest import FileEntry, IdentityManifest, TensorEntries, TensorEntry
from attest.identity.proofs import TensorProof, check_proof, make_proof
from attest.identity.safetensors_reader import SafetensorsFile, TensorInfo, read_header

__all__ = [
    "FileEntry",
    "IdentityManifest",
    "ManifestDiff",
    "ModelRoots",
    "SafetensorsFile",
    "TensorEntries",
    "TensorEntry",
    "TensorInfo",
    "TensorProof",
    "check_proof",
    "diff_manifests",
    "hash_model",
    "hash_roots",
    "make_proof",
    "read_header",
]

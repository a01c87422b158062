"""The identity manifest recorded beside the statements (`.attest/identity.json`).

It is not signed and needs no signature: its roots are recomputed from its own tensor and file records, and it is
used only when that recomputation equals a signed subject digest. Then it says exactly which tensors and files a
modified folder changed, added or lost.
"""

from __future__ import annotations

import os
from itertools import chain
from pathlib import Path

from pydantic import ValidationError

from attest.atomic import atomic_write_chunks
from attest.identity import IdentityManifest
from attest.identity.manifest import file_leaf, manifest_json, model_root_of, tensor_leaf
from attest.identity.merkle import root
from attest.lineage.store import attest_dir

IDENTITY_FILE = "identity.json"
MAX_IDENTITY_BYTES = 512 * 1024 * 1024


def recomputed_model_root(m: IdentityManifest) -> str:
    """The model root the manifest's records imply (ignoring the roots it states)."""
    tensors = sorted(m.tensors, key=lambda t: t.name)
    files = sorted(m.files, key=lambda f: f.path)
    weights = root(m.algorithm, [tensor_leaf(m.algorithm, t.record()) for t in tensors]).hex()
    files_root = root(m.algorithm, [file_leaf(m.algorithm, f.record()) for f in files]).hex()
    return model_root_of(m.algorithm, m.chunk_size, weights, files_root).hex()


def write_recorded_manifest(folder: str | os.PathLike[str], manifest: IdentityManifest) -> Path:
    d = attest_dir(folder)
    d.mkdir(exist_ok=True)
    path = d / IDENTITY_FILE
    chunks = manifest_json(manifest)  # entry by entry: the text of 10^5 entries is never held whole
    atomic_write_chunks(path, (c.encode("utf-8") for c in chain(chunks, ["\n"])))
    return path


def load_recorded_manifest(folder: str | os.PathLike[str], signed_root: str) -> IdentityManifest | None:
    path = attest_dir(folder) / IDENTITY_FILE
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_IDENTITY_BYTES:
            return None
        manifest = IdentityManifest.model_validate_json(path.read_bytes())
    except (OSError, ValidationError, ValueError):
        return None
    try:
        if manifest.algorithm != "sha256" or recomputed_model_root(manifest) != signed_root:
            return None
        # The per-entry digests are what a diff compares: each must be the leaf its own record gives.
        for t in manifest.tensors:
            if tensor_leaf("sha256", t.record()).hex() != t.digest:
                return None
        for f in manifest.files:
            if file_leaf("sha256", f.record()).hex() != f.digest:
                return None
    except (ValueError, OverflowError, TypeError):  # e.g. integers canonical JSON cannot carry
        return None
    return manifest

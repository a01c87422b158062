"""Naming an input checkpoint: by its own attestation when it carries one, else by hashing it.

A parent that carries attestations is named by its newest statement's subject (no re-hash of a large parent), and
its whole bundle travels into the child so the chain verifies from the child folder alone. `rehash=True` hashes it
anyway and refuses a folder that no longer matches its attestation.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from attest.errors import InputError
from attest.identity import hash_model
from attest.identity.folder import scan_folder
from attest.lineage.store import bundle_path, head_envelopes, load_bundle, load_sigstore_bundles, statements_about
from attest.signing.dsse import Envelope
from attest.statements.parse import parse_statement

_HF_CACHE = re.compile(r"^models--(?P<org>[^/]+?)--(?P<name>[^/]+)$")


@dataclass(frozen=True)
class ModelRef:
    """An input checkpoint as a statement names it."""

    path: Path
    name: str
    uri: str
    model_root: str
    weights_root: str
    statement: str | None = None
    """sha256 of the parent's own statement payload, when it was named by its attestation."""
    envelopes: list[Envelope] = field(default_factory=list)
    sigstore: dict[str, bytes] = field(default_factory=dict)


def model_uri(path: Path) -> str:
    """`hf://org/name@revision` for a Hugging Face cache snapshot folder, else the folder's file:// URI."""
    real = path.resolve()
    parts = real.parts
    for i in range(len(parts) - 3, -1, -1):
        m = _HF_CACHE.match(parts[i])
        if m and parts[i + 1] == "snapshots":
            return f"hf://{m['org']}/{m['name']}@{parts[i + 2]}"
    return real.as_uri()


def resolve_model(path: str | os.PathLike[str], *, rehash: bool = False) -> ModelRef:
    """Name a model folder for a statement (see module docstring). Raises InputError for a non-model folder."""
    p = Path(path)
    scan_folder(p)  # a non-model folder is refused even when it carries attestations
    envelopes = load_bundle(p)
    sigstore = load_sigstore_bundles(p)
    uri = model_uri(p)
    name = p.resolve().name
    if envelopes and not rehash:
        heads = head_envelopes(envelopes)
        named = _named_by(heads)
        if named is not None:
            env, model_root, weights_root = named
            return ModelRef(p, name, uri, model_root, weights_root, env.payload_digest, envelopes, sigstore)
    manifest = hash_model(p)
    if envelopes:
        own = statements_about(envelopes, manifest.model_root)
        if not own:
            raise InputError(
                bundle_path(p),
                f"no statement in it is about this folder (model root {manifest.model_root}): the folder changed "
                "after it was attested",
            )
        return ModelRef(
            p, name, uri, manifest.model_root, manifest.weights_root, own[0].payload_digest, envelopes, sigstore
        )
    return ModelRef(p, name, uri, manifest.model_root, manifest.weights_root, None, envelopes, sigstore)


def _named_by(heads: list[Envelope]) -> tuple[Envelope, str, str] | None:
    """The single model the bundle's newest statements are about, with its weights root; None if ambiguous."""
    found: dict[str, tuple[Envelope, str]] = {}
    for env in heads:
        for s in parse_statement(env.payload_bytes).subject:
            root = s.digest.get("sha256")
            weights = (s.annotations or {}).get("weights_root")
            if root and isinstance(weights, str):
                found.setdefault(root, (env, weights))
    if len(found) != 1:
        return None
    root, (env, weights) = next(iter(found.items()))
    return env, root, weights

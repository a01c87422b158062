"""Where attestations live: `.attest/` inside the model folder (excluded from the identity), SPEC.md section 3.

`.attest/provenance.intoto.jsonl` holds one DSSE envelope per line: the model's own statement(s) first, then every
ancestor's, so the whole chain verifies from the folder alone. Sigstore bundles sit beside it as
`.attest/*.sigstore.json`. The bundle file is not authenticated as a whole; each envelope is. Writes are atomic.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from attest.atomic import atomic_write_bytes
from attest.bounded import read_bounded
from attest.errors import InputError
from attest.identity.folder import ATTEST_DIR
from attest.signing.dsse import MAX_SIGNATURES, Envelope, Signature
from attest.statements.parse import StatementError, parse_statement

BUNDLE_FILE = "provenance.intoto.jsonl"
SIGSTORE_SUFFIX = ".sigstore.json"
MAX_BUNDLE_BYTES = 256 * 1024 * 1024
MAX_ENVELOPES = 100_000
MAX_SIGSTORE_BYTES = 16 * 1024 * 1024
MAX_BUNDLE_SIGNATURES = 1024
"""Distinct DSSE signatures a verifier checks in all, over every envelope it reads (each one is tried against every
trusted key). A real lineage carries a few per statement; junk signatures are refused, not checked for minutes."""
MAX_STATEMENTS_PER_SUBJECT = 16
"""Distinct statements (payloads) about one model root. Re-recording a step adds one; thousands are junk."""


class BundleError(InputError):
    """A bundle file that is not a sequence of newline-terminated DSSE envelope lines (e.g. a truncated one)."""


def attest_dir(folder: str | os.PathLike[str]) -> Path:
    return Path(folder) / ATTEST_DIR


def bundle_path(folder: str | os.PathLike[str]) -> Path:
    return attest_dir(folder) / BUNDLE_FILE


def parse_bundle(data: bytes, path: str | os.PathLike[str] | None = None) -> list[Envelope]:
    """Every line is one DSSE envelope in JSON and ends with LF; an empty line or a missing final LF is refused."""
    where = str(path) if path is not None else "bundle"
    if not data:
        return []
    if not data.endswith(b"\n"):
        raise BundleError(where, "truncated: the last line does not end with a newline")
    lines = data[:-1].split(b"\n")
    if len(lines) > MAX_ENVELOPES:
        raise BundleError(where, f"more than {MAX_ENVELOPES} envelopes")
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            raise BundleError(where, f"line {n}: empty line")
        try:
            out.append(Envelope.from_json(line))
        except InputError as exc:
            raise BundleError(where, f"line {n}: {exc.problem}") from None
    return out


def load_bundle(folder: str | os.PathLike[str]) -> list[Envelope]:
    """The DSSE envelopes stored in a model folder, in file order ([] when it has none). Nothing is verified here."""
    path = bundle_path(folder)
    if not path.exists():
        return []
    if path.is_symlink() or not path.is_file():
        raise BundleError(path, "not a regular file")
    return parse_bundle(read_bounded(path, MAX_BUNDLE_BYTES, error=BundleError), path)


def sigstore_paths(folder: str | os.PathLike[str]) -> list[Path]:
    d = attest_dir(folder)
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if p.name.endswith(SIGSTORE_SUFFIX) and p.is_file() and not p.is_symlink())


def load_sigstore_bundles(folder: str | os.PathLike[str]) -> dict[str, bytes]:
    """File name -> raw bytes of each `.attest/*.sigstore.json` (unverified)."""
    out = {}
    for p in sigstore_paths(folder):
        out[p.name] = read_bounded(p, MAX_SIGSTORE_BYTES, error=BundleError)
    return out


def sigstore_file_name(payload_digest: str, bundle_json: bytes) -> str:
    """Informative name: the statement's payload sha256, then a short hash of the bundle (one per signer)."""
    return f"{payload_digest}-{hashlib.sha256(bundle_json).hexdigest()[:16]}{SIGSTORE_SUFFIX}"


def merge_envelopes(envelopes: Iterable[Envelope], where: str | Path | None = None) -> list[Envelope]:
    """Envelopes over the same (payloadType, payload) become one with the union of their signatures; first-seen
    order is kept, so a model's own statements stay in front of its ancestors'."""
    first: dict[tuple[str, bytes], Envelope] = {}
    sigs: dict[tuple[str, bytes], list[Signature]] = {}
    seen: dict[tuple[str, bytes], set[bytes]] = {}
    for env in envelopes:  # linear: each signature is decoded once, whatever the number of lines
        key = (env.payloadType, env.payload_bytes)
        if key not in first:
            first[key], sigs[key], seen[key] = env, [], set()
        for sig in env.signatures:
            raw = sig.sig_bytes()
            if raw not in seen[key]:
                seen[key].add(raw)
                sigs[key].append(sig)
        if len(sigs[key]) > MAX_SIGNATURES:
            raise BundleError(where, f"more than {MAX_SIGNATURES} distinct signatures over one statement")
    out = []
    for key, env in first.items():
        out.append(env if len(sigs[key]) == len(env.signatures) else env.model_copy(update={"signatures": sigs[key]}))
    check_bounds(out, where)
    return out


def check_bounds(envelopes: list[Envelope], where: str | Path | None = None) -> None:
    """Refuse merged envelopes that carry more signatures in all, or more statements about one subject, than any
    real lineage (MAX_BUNDLE_SIGNATURES, MAX_STATEMENTS_PER_SUBJECT; SPEC.md 3.3): checking them would cost
    (signatures x trusted keys) public-key operations."""
    total = sum(len(env.signatures) for env in envelopes)
    if total > MAX_BUNDLE_SIGNATURES:
        raise BundleError(where, f"{total} signatures in all, more than the {MAX_BUNDLE_SIGNATURES} allowed")
    per_subject: dict[str, int] = {}
    for env in envelopes:
        try:
            digests = parse_statement(env.payload_bytes).subject_digests("sha256")
        except StatementError:
            continue
        for d in dict.fromkeys(digests):
            per_subject[d] = per_subject.get(d, 0) + 1
            if per_subject[d] > MAX_STATEMENTS_PER_SUBJECT:
                raise BundleError(where, f"more than {MAX_STATEMENTS_PER_SUBJECT} statements about model root {d[:16]}")


def statements_about(envelopes: Iterable[Envelope], model_root: str) -> list[Envelope]:
    """The envelopes whose statement names model_root as a sha256 subject digest (unverified)."""
    out = []
    for env in envelopes:
        try:
            if model_root in parse_statement(env.payload_bytes).subject_digests("sha256"):
                out.append(env)
        except StatementError:
            continue
    return out


def head_envelopes(envelopes: list[Envelope]) -> list[Envelope]:
    """The bundle's newest statements: those whose subject no other statement in the bundle depends on. Used only
    to *name* a parent; trust always comes from verifying signatures."""
    subjects: list[tuple[Envelope, set[str]]] = []
    depended: set[str] = set()
    for env in envelopes:
        try:
            st = parse_statement(env.payload_bytes)
        except StatementError:
            continue
        subjects.append((env, set(st.subject_digests("sha256"))))
        build = (st.predicate or {}).get("buildDefinition")
        deps = build.get("resolvedDependencies") if isinstance(build, dict) else None
        for dep in deps if isinstance(deps, list) else []:
            digest = dep.get("digest") if isinstance(dep, dict) else None
            if isinstance(digest, dict) and isinstance(digest.get("sha256"), str):
                depended.add(digest["sha256"])
    return [env for env, digests in subjects if digests and not digests & depended]


def write_bundle(
    folder: str | os.PathLike[str], envelopes: Iterable[Envelope], sigstore_bundles: dict[str, bytes] | None = None
) -> Path:
    """Replace the folder's bundle with these envelopes (merged), after writing any Sigstore bundles. Each file is
    written atomically; a killed writer leaves the previous bundle or the new one."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "no such model folder")
    merged = merge_envelopes(envelopes, bundle_path(folder))
    d = attest_dir(folder)
    if d.is_symlink() or (d.exists() and not d.is_dir()):
        raise InputError(d, "is not a plain folder (a symlink or a file): refusing to write attestations through it")
    try:
        d.mkdir(exist_ok=True)
    except OSError as exc:
        raise InputError(d, f"cannot create: {exc.strerror or exc}") from None
    for name, data in (sigstore_bundles or {}).items():
        if "/" in name or not name.endswith(SIGSTORE_SUFFIX) or name.startswith("."):
            raise InputError(name, "not a Sigstore bundle file name")
        atomic_write_bytes(d / name, data)
    text = "".join(env.to_json() + "\n" for env in merged)
    target = d / BUNDLE_FILE
    atomic_write_bytes(target, text.encode("utf-8"))
    return target

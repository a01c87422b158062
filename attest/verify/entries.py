"""The statements a verification reads (the folder's bundle, --attestations, Sigstore bundles), each with the
trusted signers whose signatures on it verify; nothing here decides whether the model is verified."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from attest.errors import InputError
from attest.lineage.store import attest_dir, merge_envelopes, parse_bundle
from attest.signing.dsse import Envelope, SignatureError, verify_signatures
from attest.signing.sigstore import SigstoreError, verify_sigstore_bundle
from attest.statements.models import PAYLOAD_TYPE, Statement
from attest.statements.parse import StatementError, parse_statement
from attest.trust.trust_set import TrustSet

MAX_ATTESTATION_FILES = 1000


@dataclass
class Entry:
    """One statement found somewhere (folder bundle, --attestations, a Sigstore bundle)."""

    origin: str
    payload_type: str
    payload: bytes
    payload_digest: str
    statement: Statement | None
    signers: list[str] = field(default_factory=list)
    signature_problem: str | None = None

    @property
    def trusted(self) -> bool:
        return bool(self.signers)

    def subjects(self) -> list[str]:
        return self.statement.subject_digests("sha256") if self.statement else []


def entries_from_envelopes(
    sources: list[tuple[str, list[Envelope]]], trust: TrustSet, where: str
) -> tuple[list[Entry], list[str]]:
    """Every envelope read, merged over all sources at once so the bounds of SPEC.md 3.3 hold for all of them
    together (checking is signatures x trusted keys of public-key work); then each one's signatures checked."""
    origin_of: dict[tuple[str, str], str] = {}
    everything: list[Envelope] = []
    for origin, envs in sources:
        for n, env in enumerate(envs, 1):
            origin_of.setdefault((env.payloadType, env.payload), f"{origin} envelope {n}")
        everything += envs
    entries, malformed = [], []
    for env in merge_envelopes(everything, where):
        where_env = origin_of.get((env.payloadType, env.payload), "an envelope")
        try:
            statement: Statement | None = parse_statement(env.payload_bytes)
        except StatementError as exc:
            malformed.append(f"{where_env}: {exc.problem}")
            statement = None
        entry = Entry(where_env, env.payloadType, env.payload_bytes, env.payload_digest, statement)
        if env.payloadType != PAYLOAD_TYPE:
            entry.signature_problem = f"payloadType {env.payloadType!r} is not an in-toto statement"
        else:
            try:
                entry.signers = [trust.key_name(k) for k in verify_signatures(env, [k.key for k in trust.keys])]
            except SignatureError as exc:
                hinted = {s.keyid for s in env.signatures} & {k.key.keyid for k in trust.keys}
                entry.signature_problem = (
                    "a signature names a trusted key but does not verify (tampered?)" if hinted else str(exc)
                )
        entries.append(entry)
    return entries, malformed


def entries_from_sigstore(bundles: dict[str, bytes], trust: TrustSet) -> list[Entry]:
    out = []
    for name, data in bundles.items():
        entry: Entry | None = None
        problems = []
        for ident in trust.identities:
            try:
                ptype, payload = verify_sigstore_bundle(
                    data,
                    identity=ident.identity,
                    issuer=ident.issuer,
                    trusted_root=trust.sigstore_trust_root,
                    staging=trust.staging,
                )
            except SigstoreError as exc:
                problems.append(str(exc))
                continue
            try:
                statement: Statement | None = parse_statement(payload)
            except StatementError:
                statement = None
            entry = Entry(name, ptype, payload, hashlib.sha256(payload).hexdigest(), statement, [ident.name])
            if ptype != PAYLOAD_TYPE:
                entry.signers, entry.signature_problem = [], f"payloadType {ptype!r} is not an in-toto statement"
            break
        if entry is None:
            reason = problems[0] if problems else "no trusted Sigstore identity given"
            out.append(Entry(name, "", b"", "", None, [], reason))
        else:
            out.append(entry)
    return out


def extra_envelopes(path: Path) -> list[tuple[str, list[Envelope]]]:
    """--attestations: a folder of *.intoto.jsonl files (or a model folder's .attest/), or one such file."""
    files: list[Path]
    if path.is_file():
        files = [path]
    elif path.is_dir():
        inner = attest_dir(path) if attest_dir(path).is_dir() else path
        files = sorted(p for p in inner.iterdir() if p.name.endswith(".jsonl") and p.is_file())[:MAX_ATTESTATION_FILES]
    else:
        raise InputError(path, "no such attestations file or folder")
    out = []
    for f in files:
        try:
            data = f.read_bytes()
        except OSError as exc:
            raise InputError(f, f"cannot read: {exc.strerror or exc}") from None
        out.append((str(f), parse_bundle(data, f)))
    return out


def index_by_subject(entries: list[Entry]) -> dict[str, list[Entry]]:
    out: dict[str, list[Entry]] = {}
    for e in entries:
        for d in dict.fromkeys(e.subjects()):
            out.setdefault(d, []).append(e)
    return out


def reachable(start: str, by_subject: dict[str, list[Entry]]) -> set[str]:
    """Digests reachable from start through any statement, trusted or not: what is not reachable is unrelated."""
    seen, todo = {start}, [start]
    while todo:
        for e in by_subject.get(todo.pop(), []):
            for d in dependency_digests(e):
                if d not in seen:
                    seen.add(d)
                    todo.append(d)
    return seen


def dependency_digests(e: Entry) -> list[str]:
    pred = e.statement.predicate if e.statement else None
    build = pred.get("buildDefinition") if isinstance(pred, dict) else None
    deps = build.get("resolvedDependencies") if isinstance(build, dict) else None
    out = []
    for d in deps if isinstance(deps, list) else []:
        digest = d.get("digest") if isinstance(d, dict) else None
        if isinstance(digest, dict) and isinstance(digest.get("sha256"), str):
            out.append(digest["sha256"])
    return out

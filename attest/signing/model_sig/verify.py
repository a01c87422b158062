"""Check a model folder (or single file) against its `model.sig`: signature first, then the signed statement, then
every file re-hashed from disk. Paths named in the signature are never opened: the folder is walked and its relative
names compared with the signed ones."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from attest.errors import AttestError, InputError
from attest.signing.keys import PublicKey
from attest.signing.model_sig.bundle import (
    MODEL_SIGNING_KEY_TYPES,
    check_key_type,
    default_signature_path,
    read_model_sig,
)
from attest.signing.model_sig.results import ModelSigFinding, ModelSigSerialization, ModelSigVerification, Status
from attest.signing.model_sig.serialization import (
    BytesCallback,
    HashJob,
    drop_uncovered_own_files,
    hash_many,
    ignore_rules,
    is_ignored,
    scan_model,
    shard_spans,
    signed_file,
    verify_ignores,
)
from attest.signing.model_sig.signature import Rejected, Trust, verify_signature
from attest.signing.model_sig.statement import ModelSigResource, check_statement


def verify_model_sig(
    model_path: str | os.PathLike[str],
    trust: Trust,
    *,
    signature_path: str | os.PathLike[str] | None = None,
    ignore: Sequence[str] = (),
    on_total: BytesCallback | None = None,
    on_bytes: BytesCallback | None = None,
) -> ModelSigVerification:
    """Check a model folder (or single file) against its `model.sig` under the given trust.

    Signature first: nothing in the payload is looked at until it verifies. Then payload type, statement and
    predicate types, the subject digest over the resources, and finally every file re-hashed from disk. Unreadable
    or malformed input (a key model-signing cannot use included) raises InputError; a check that fails is a problem
    in the result (verified False).
    """
    if isinstance(trust, PublicKey):
        check_key_type(trust)
    model = Path(model_path)
    if not model.exists():
        raise InputError(model, "no such file or folder")
    sig_path = Path(signature_path) if signature_path is not None else default_signature_path(model)
    bundle = read_model_sig(sig_path)
    result = ModelSigVerification(verified=False, model=str(model), signature=str(sig_path), kind=bundle.kind)

    try:
        payload_type, payload, result.signer = verify_signature(bundle, trust)
    except Rejected as exc:
        result.problems.append(f"{sig_path}: {exc}")
        return result

    statement = check_statement(sig_path, payload_type, payload, result)
    if statement is None:
        return result
    serialization_, resources = statement
    _check_files(model, sig_path, serialization_, resources, ignore, result, on_total, on_bytes)
    result.verified = not result.problems
    return result


def verify_with_any(
    model_path: str | os.PathLike[str], trusts: Sequence[tuple[str, Trust]], *, ignore: Sequence[str] = ()
) -> tuple[str | None, list[str]]:
    """Try each named trust in turn: (the first name it verifies under, []) or (None, every problem found).
    Keys model-signing cannot use (Ed25519) are skipped, not errors: a trust set may hold them for other checks."""
    failures: list[str] = []
    for name, trust in trusts:
        if isinstance(trust, PublicKey) and trust.key_type not in MODEL_SIGNING_KEY_TYPES:
            continue
        try:
            result = verify_model_sig(model_path, trust, ignore=ignore)
        except AttestError as exc:
            failures.append(str(exc))
            continue
        if result.verified:
            return name, []
        failures.extend(result.problems)
    return None, failures


def _check_files(
    model: Path,
    sig_path: Path,
    s: ModelSigSerialization,
    resources: list[ModelSigResource],
    ignore: Sequence[str],
    result: ModelSigVerification,
    on_total: BytesCallback | None,
    on_bytes: BytesCallback | None,
) -> None:
    """Re-hash the folder and name every file that is changed, missing or extra.

    A file the signature lists is checked whatever attest alone would leave out: `.attest/` is skipped only for
    files the signature does not cover (model-signing run over a folder that already held attestations covers them,
    and its own verifier checks them). What model-signing itself leaves out (its ignore paths) stays out."""
    rules = ignore_rules(model, verify_ignores(model, sig_path, ignore, s.ignore_paths))
    peer_rules = ignore_rules(model, verify_ignores(model, sig_path, ignore, s.ignore_paths, attest_dir=False))
    result.ignored = ["/".join(r) for r in rules]
    scan = scan_model(model, peer_rules, s.allow_symlinks)
    drop_uncovered_own_files(model, scan, {signed_file(r.name, s.method) for r in resources})
    names = [r.name for r in resources]
    if names == ["."] and model.is_dir():
        # Signed as a single file (the resource is '.'): the folder must hold that one file and nothing else.
        if len(scan.files) == 1 and not scan.refused:
            only = next(iter(scan.files))
            result.notes.append(f"the signature covers a single file; checked {only} against it")
            scan.files = {".": scan.files[only]}
            scan.sizes = {".": scan.sizes[only]}
            shown = {".": only}
        else:
            held = sorted(scan.files) + sorted(scan.refused)
            listed = ", ".join(str(model / rel) for rel in held[:5]) + (" …" if len(held) > 5 else "")
            result.problems.append(
                f"{sig_path}: signs the single file {model / (result.model_name or '?')} (its subject name), but "
                f"{model} holds {len(held)} files{': ' + listed if held else ''}"
            )
            return
    else:
        shown = {}

    def where(rel: str) -> str:
        rel = shown.get(rel, rel)
        return str(model) if rel == "." else str(model / rel)

    def finding(rel: str, status: Status, detail: str) -> None:
        result.findings.append(ModelSigFinding(path=shown.get(rel, rel), status=status, detail=detail))
        result.problems.append(f"{where(rel)}: {detail}")

    for rel, why in sorted(scan.refused.items()):
        finding(rel, "refused", why)

    if s.method == "files":
        expected = {r.name: r.digest.lower() for r in resources}
        present = [rel for rel in sorted(scan.files) if rel in expected]
        jobs: list[HashJob] = [(rel, scan.files[rel], 0, None) for rel in present]
        if on_total is not None:
            on_total(sum(scan.sizes[rel] for rel in present))
        digests = hash_many(jobs, s.hash_type, on_bytes)
        result.files_checked = len(present)
        for rel in present:
            got = digests[(rel, 0)]
            if isinstance(got, OSError):
                finding(rel, "refused", f"cannot be read ({got.strerror or got})")
            elif got != expected[rel]:
                finding(rel, "changed", f"changed ({s.hash_type} signed {expected[rel][:16]}…, now {got[:16]}…)")
        signed_files = set(expected)
    else:
        assert s.shard_size is not None
        by_file: dict[str, dict[tuple[int, int], str]] = {}
        for r in resources:
            # a shard name is "path:start:end"; the path may itself contain ':'
            head, _, end_txt = r.name.rpartition(":")
            file_name, _, start_txt = head.rpartition(":")
            if not (file_name and start_txt.isdigit() and end_txt.isdigit()):
                result.problems.append(f"{sig_path}: shard resource {r.name!r} is not 'path:start:end'")
                return
            span = (int(start_txt), int(end_txt))
            by_file.setdefault(file_name, {})[span] = r.digest.lower()
        present = [rel for rel in sorted(scan.files) if rel in by_file]
        jobs = []
        for rel in present:
            spans = shard_spans(scan.sizes[rel], s.shard_size)
            if set(spans) != set(by_file[rel]):
                signed_size = max(e for _, e in by_file[rel])
                finding(rel, "changed", f"changed (size {scan.sizes[rel]} bytes, signed {signed_size})")
                continue
            jobs.extend((rel, scan.files[rel], a, b) for a, b in spans)
        if on_total is not None:
            on_total(sum(b - a for _, _, a, b in jobs if b is not None))
        digests = hash_many(jobs, s.hash_type, on_bytes)
        result.files_checked = len({rel for rel, *_ in jobs})
        bad: dict[str, list[str]] = {}
        for rel, _, a, b in jobs:
            got = digests[(rel, a)]
            if isinstance(got, OSError):
                bad.setdefault(rel, []).append(f"unreadable {a}-{b}")
            elif b is not None and got != by_file[rel][(a, b)]:
                bad.setdefault(rel, []).append(f"bytes {a}-{b}")
        for rel, spans_bad in sorted(bad.items()):
            finding(rel, "changed", f"changed ({', '.join(spans_bad[:4])}{' …' if len(spans_bad) > 4 else ''})")
        signed_files = set(by_file)
        empty_extra = [rel for rel in scan.files if rel not in by_file and scan.sizes[rel] == 0]
        if empty_extra:
            result.notes.append(
                f"empty files have no shards and cannot be signed in shards serialization: {', '.join(empty_extra)}"
            )
            for rel in empty_extra:
                del scan.files[rel]

    for rel in sorted(signed_files - set(scan.files) - set(scan.refused)):
        parts = PurePosixPath(rel).parts
        if is_ignored(parts, peer_rules):
            finding(rel, "missing", "signed, but excluded by an ignore path")
        else:
            finding(rel, "missing", "missing (signed, not in the folder)")
    for rel in sorted(set(scan.files) - signed_files):
        finding(rel, "extra", "extra file (not covered by the signature)")

"""`attest verify`: folder -> identity -> statements about it -> signatures against trust -> parents, recursively.

Each step is a function of the previous step's value. The folder is always re-hashed from its bytes (never from a
cache), nothing is written into it, and nothing inside it is trusted for being there: a statement counts only when
a key or Sigstore identity from the trust set signed it, and a lineage ends only at a statement-less digest the
policy allow-lists.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from attest.executor import Executor
from attest.identity import IdentityManifest, diff_manifests
from attest.lineage.locator import Locator
from attest.lineage.recorded_identity import load_recorded_manifest
from attest.lineage.store import (
    bundle_path,
    load_bundle,
    load_sigstore_bundles,
)
from attest.signing.model_sig import Trust, verify_with_any
from attest.signing.sigstore import SigstoreTrust
from attest.statements.models import (
    ROLES,
    SLSA_PROVENANCE_V1,
    STEP_OF_BUILD_TYPE,
)
from attest.statements.parse import StatementError, parse_provenance
from attest.statements.recipe_parents import recipe_parent_problems
from attest.trust.trust_set import TrustSet
from attest.verify.entries import (
    Entry,
    dependency_digests,
    entries_from_envelopes,
    entries_from_sigstore,
    extra_envelopes,
    index_by_subject,
    reachable,
)
from attest.verify.lineage import StepRecord, VerifiedLineage
from attest.verify.report import LineageNode, Problem, ProblemCode, VerifyReport

Callback = Callable[[int], None]


@dataclass
class VerifyOptions:
    attestation_dirs: tuple[Path, ...] = ()
    parents_dirs: tuple[Path, ...] = ()
    ignore: tuple[str, ...] = ()
    on_total: Callback | None = None
    on_bytes: Callback | None = None
    # What the caller runs on top of the verified lineage (attest.policy.verify_with_policy), not verify itself:
    evaluate_policy: bool = True
    on_step: Callable[[str], None] | None = None  # progress of the procurement rules (replay, detect)
    replay: bool = False  # recompute every recorded merge whose folder and parents are at hand
    device: str = "cpu"
    replay_training: int | None = None  # re-execute this many segments of the model's training transcript
    checkpoints_dirs: tuple[Path, ...] = ()  # where the transcript's checkpoints are (attest.training)
    training_data: tuple[Path, ...] = ()  # candidate data files, bound by their recorded sha256
    executor: Executor | None = None  # where hashing and replay run (attest.executor; None: in this process)
    training_nonce: bytes = b""  # verifier nonce mixed into the segment choice (SPEC.md 8.5)
    runners: tuple[Path, ...] = ()  # runner files the verifier trusts, used only at their recorded sha256 (8.8)


class _Walk:
    def __init__(self, trust: TrustSet, entries: list[Entry], locator: Locator) -> None:
        self.trust = trust
        self.locator = locator
        self.problems: list[Problem] = []
        self.notes: list[str] = []
        self.visited: set[str] = set()
        self.by_subject = index_by_subject(entries)
        self.done: dict[str, LineageNode] = {}  # a shared ancestor is walked once, however many paths reach it

    def problem(self, code: ProblemCode, message: str, subject: str | None = None) -> None:
        p = Problem(code=code, message=message, subject=subject)
        if p not in self.problems:
            self.problems.append(p)

    def about(self, digest: str) -> list[Entry]:
        return self.by_subject.get(digest, [])

    def node(self, digest: str, name: str, role: str | None, path: tuple[str, ...]) -> LineageNode:
        if digest in self.done:  # the report is a DAG: a model reached again is a reference to its first entry
            return self.done[digest].model_copy(update={"role": role, "parents": [], "ref": True})
        node = self._walk_node(digest, name, role, path)
        self.done[digest] = node
        return node

    def _walk_node(self, digest: str, name: str, role: str | None, path: tuple[str, ...]) -> LineageNode:
        self.visited.add(digest)
        found = self.about(digest)
        trusted = [e for e in found if e.trusted]
        node = LineageNode(name=name, digest=digest, role=role, verdict="unattested")
        if not trusted:
            if digest in self.trust.roots:
                node.name = f"{name} ({self.trust.roots[digest]})" if name != self.trust.roots[digest] else name
                node.verdict = "trusted_root"
                return node
            if found:
                reasons = "; ".join(sorted({e.signature_problem or "no trusted signature" for e in found}))
                self.problem(
                    "untrusted_signer", f"statement about {name} is not signed by a trusted signer: {reasons}", digest
                )
            elif role is not None:
                self.problem(
                    "unattested_parent",
                    f"parent {name} ({role}, {digest[:16]}) has no statement and is not a trusted root; "
                    "if it is an official release, allow-list it: --trusted-root "
                    f"{shlex.quote(f'{name}=sha256:{digest}')} or a policy `trusted_roots:` entry "
                    f"(name: {name}, digest: sha256:{digest})",
                    digest,
                )
            return node

        provenance = []
        for e in trusted:
            if e.statement is not None and e.statement.predicateType != SLSA_PROVENANCE_V1:
                self.problem(
                    "unknown_predicate",
                    f"statement about {name} has predicate type "
                    f"{e.statement.predicateType!r}, which attest does not understand",
                    digest,
                )
                continue
            try:
                provenance.append((e, parse_provenance(e.payload)))
            except StatementError as exc:
                self.problem("malformed_envelope", f"statement about {name} ({e.origin}): {exc.problem}", digest)
        if not provenance:
            node.verdict = "failed"
            return node
        definitions = {_canonical(p.predicate.buildDefinition.model_dump(mode="json")) for _, p in provenance}
        if len(definitions) > 1:
            self.problem(
                "conflicting_statements",
                f"{len(definitions)} trusted statements about {name} disagree on how it was built",
                digest,
            )
            node.verdict = "failed"
            return node
        statement = provenance[0][1]
        node.signers = sorted({s for e, _ in provenance for s in e.signers})
        node.step = STEP_OF_BUILD_TYPE.get(statement.predicate.buildDefinition.buildType)
        if node.step is None:
            self.notes.append(f"{name}: unrecognised buildType {statement.predicate.buildDefinition.buildType}")
        node.verdict = "verified"
        if node.step == "merge":
            for line in recipe_parent_problems(statement):
                self.problem("recipe_parents", f"{name}: {line}", digest)
                node.verdict = "failed"
        for dep in statement.predicate.buildDefinition.resolvedDependencies or []:
            annotations = dep.annotations or {}
            dep_role = annotations.get("role")
            if dep_role not in ROLES:
                continue
            dep_digest = dep.sha256
            dep_name = dep.name or dep.uri or "(unnamed parent)"
            if not dep_digest:
                self.problem("malformed_envelope", f"{name}: parent {dep_name} has no sha256 digest", digest)
                node.verdict = "failed"
                continue
            if dep_digest in path or dep_digest == digest:
                self.problem("cycle", f"lineage of {name} leads back to {dep_name} ({dep_digest[:16]})", dep_digest)
                node.verdict = "failed"
                continue
            child = self.node(dep_digest, dep_name, str(dep_role), (*path, digest))
            self._rehash_local(child, dep.uri, dep_name)
            node.parents.append(child)
        return node

    def _rehash_local(self, node: LineageNode, uri: str | None, name: str) -> None:
        """The first local folder the locator names for this parent must re-hash to the digest its child names."""
        for c in self.locator.candidates(name, uri):
            if c.is_dir():
                found = self.locator.roots(c)[0]  # a shared ancestor is hashed once, however many paths reach it
                node.rehashed = True
                if found != node.digest:
                    self.problem(
                        "parent_mismatch",
                        f"local parent {c} has model root {found[:16]}, its child names {node.digest[:16]}",
                        node.digest,
                    )
                    node.verdict = "failed"
                return


def _canonical(doc: Any) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def verify_lineage(
    folder: str | os.PathLike[str],
    trust: TrustSet,
    options: VerifyOptions | None = None,
    locator: Locator | None = None,
) -> VerifiedLineage:
    """Verify a model folder and its lineage, keeping the statements it rests on. Raises InputError for unreadable
    or malformed input. Stops at the verified lineage: replay and the policy's rules run on top of it
    (attest.policy.verify_with_policy). Local parents are found (and each hashed once) by the locator, by default
    one over options.parents_dirs; the lineage keeps it for what runs on top."""
    options = options or VerifyOptions()
    locator = locator if locator is not None else Locator(options.parents_dirs, options.executor)
    folder = Path(folder)
    require_weights = not (folder / "model.sig").is_file()
    identity = locator.identity(  # roots only: the manifest is built only to explain a mismatch
        folder,
        require_weights=require_weights,
        ignore=options.ignore,
        on_total=options.on_total,
        on_bytes=options.on_bytes,
    )
    sources = [("folder bundle", load_bundle(folder))]
    sources += [x for d in options.attestation_dirs for x in extra_envelopes(d)]
    where = str(bundle_path(folder)) + (" and --attestations" if options.attestation_dirs else "")
    entries, malformed = entries_from_envelopes(sources, trust, where)
    entries += entries_from_sigstore(load_sigstore_bundles(folder), trust)

    walk = _Walk(trust, entries, locator)
    for m in malformed:
        walk.problem("malformed_envelope", m)
    if trust.empty:
        walk.notes.append("no trusted keys, identities or roots given (--key, --identity/--issuer, --policy)")

    root_digest = identity.model_root
    lineage = walk.node(root_digest, folder.name, None, ())
    file_signer, file_failure = _model_signing(walk, folder, trust, options)
    if lineage.verdict == "unattested" and not walk.about(root_digest):
        if file_signer is not None and not entries:
            lineage.verdict, lineage.signers, lineage.step = "verified", [file_signer], None
        else:
            manifest = partial(locator.manifest, folder, require_weights=require_weights, ignore=options.ignore)
            _explain_missing(walk, folder, root_digest, manifest, entries)
    if file_failure is not None:
        if lineage.verdict in ("verified", "trusted_root"):
            # The statements already bind every byte (model.sig is outside the identity): a stray or foreign
            # model.sig neither helps nor hurts.
            walk.notes.append(f"model.sig present but not verified under the trusted signers ({file_failure})")
        else:
            walk.problem("model_signing", f"model.sig does not verify: {file_failure}")
    related = reachable(root_digest, walk.by_subject) | walk.visited
    for e in entries:
        subjects = e.subjects()
        if subjects and not set(subjects) & related:
            walk.problem(
                "unrelated_statement",
                f"{e.origin} is about another model "
                f"({', '.join(s[:16] for s in subjects)}), not this one or its ancestors",
                subjects[0],
            )
    if lineage.verdict == "unattested" and not any(p.code == "content_mismatch" for p in walk.problems):
        if not any(p.subject == root_digest for p in walk.problems):
            walk.problem("no_statement", f"no statement names this model (model root {root_digest})", root_digest)
    report = VerifyReport(
        verified=not walk.problems and lineage.verdict in ("verified", "trusted_root"),
        model=str(folder),
        model_root=root_digest,
        weights_root=identity.weights_root,
        problems=walk.problems,
        lineage=lineage,
        notes=walk.notes + identity.notes,
    )
    trusted_statements: dict[str, set[str]] = {}
    for e in entries:
        if e.trusted:
            for d in e.subjects():
                trusted_statements.setdefault(d, set()).add(e.payload_digest)
    result = VerifiedLineage(report, _step_records(entries), folder, locator, trusted_statements)
    return result


def _step_records(entries: list[Entry]) -> dict[str, StepRecord]:
    out: dict[str, StepRecord] = {}
    for e in entries:
        if e.statement is None or e.statement.predicateType != SLSA_PROVENANCE_V1:
            continue
        try:
            prov = parse_provenance(e.payload)
        except StatementError:
            continue
        for digest in prov.subject_digests("sha256"):
            cur = out.get(digest)
            if cur is None or (e.trusted and not cur.trusted):
                out[digest] = StepRecord(digest, prov, list(e.signers), e.trusted, e.payload_digest)
            elif e.trusted and cur.trusted and cur.statement == prov:
                out[digest] = StepRecord(digest, prov, sorted({*cur.signers, *e.signers}), True, e.payload_digest)
    return out


def _explain_missing(
    walk: _Walk, folder: Path, model_root: str, manifest_of: Callable[[], IdentityManifest], entries: list[Entry]
) -> None:
    """No statement names the folder as it is: if the folder's own statements name another root, the content changed
    after signing. Name what changed from the recorded manifest, when it is authentic (the folder's manifest is
    built for that by hashing it again: the first pass kept only its roots)."""
    own = [e for e in entries if e.origin.startswith("folder bundle") and e.trusted and e.statement and e.subjects()]
    depended = {d for e in own for d in dependency_digests(e)}
    heads = [e for e in own if not set(e.subjects()) & depended]
    if not heads:
        return
    signed = heads[0].subjects()[0]
    recorded = load_recorded_manifest(folder, signed)
    if recorded is None:
        walk.problem(
            "no_statement",
            f"no statement names this model (model root {model_root}); the folder's statements name "
            f"{signed[:16]}: its content changed after signing, or the statements belong to another model",
            model_root,
        )
        return
    walk.visited.update(s for e in own for s in e.subjects())
    manifest = manifest_of()
    if manifest.model_root != model_root:
        walk.problem("content_mismatch", f"folder content changed while it was being verified ({folder})", model_root)
        return
    lines = diff_manifests(recorded, manifest).lines()
    shown = "; ".join(lines[:20]) + (f"; and {len(lines) - 20} more" if len(lines) > 20 else "")
    walk.problem(
        "content_mismatch",
        f"folder content (model root {model_root[:16]}) is not what was signed ({signed[:16]}): {shown}",
        model_root,
    )


def _model_signing(walk: _Walk, folder: Path, trust: TrustSet, options: VerifyOptions) -> tuple[str | None, str | None]:
    """An OpenSSF model-signing `model.sig` is a file-level signature. Returns (signer, None) when it verifies under
    a trusted key or identity, (None, reason) when it does not, (None, None) when there is none."""
    sig = folder / "model.sig"
    if sig.is_symlink():
        return None, "model.sig is a symlink (refused: it could hide the file it points to from the check)"
    if not sig.is_file():
        return None, None

    trusts: list[tuple[str, Trust]] = [(k.name, k.key) for k in trust.keys]
    trusts += [(i.name, SigstoreTrust(i.identity, i.issuer, trust.sigstore_trust_root)) for i in trust.identities]
    name, failures = verify_with_any(folder, trusts, ignore=list(options.ignore))
    if name is not None:
        walk.notes.append(f"model.sig: OpenSSF model-signing file-level signature verified ({name})")
        return f"{name} (model.sig)", None
    return None, failures[0] if failures else "no trusted elliptic-curve key or Sigstore identity to check it with"

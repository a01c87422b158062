"""Procurement rules over a verified lineage (SPEC.md section 7.1): each rule a verdict plus its evidence.

Every rule fails closed: when the evidence it needs cannot be produced (a parent folder not available for replay,
a candidate folder missing, detect refusing its input), the rule fails and says why, never passes by default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from attest.errors import AttestError
from attest.identity import hash_model
from attest.policy.licenses import licenses_rule
from attest.policy.model_card import check_card, read_card, step_from_statement
from attest.statements.models import ROLES
from attest.trust.policy_file import (
    ClaimsConsistent,
    FullDisclosure,
    ReplayMerges,
    RequiredSigners,
    TrainingReplayed,
)
from attest.verify.lineage import StepRecord, VerifiedLineage, head_step, nodes
from attest.verify.report import LineageNode, PolicyResult, RuleResult

if TYPE_CHECKING:
    from attest.forensics import DetectReport
    from attest.trust.trust_set import TrustSet
    from attest.verify.engine import VerifyOptions

WEIGHT_CHANGING_STEPS = ("finetune", "distill", "quantize", "merge")


@dataclass
class _Context:
    lineage: VerifiedLineage
    trust: TrustSet
    options: VerifyOptions
    hashed: dict[Path, str] = field(default_factory=dict)
    detect_result: tuple[DetectReport | None, list[str], dict[str, str]] | None = None

    @property
    def root(self) -> LineageNode:
        assert self.lineage.report.lineage is not None
        return self.lineage.report.lineage

    @property
    def base(self) -> Path:
        return self.trust.policy_dir or Path(".")

    def say(self, msg: str) -> None:
        if self.options.on_step is not None:
            self.options.on_step(msg)

    def path(self, p: str) -> Path:
        q = Path(p)
        return q if q.is_absolute() else self.base / q

    def root_of(self, folder: Path) -> str | None:
        """Model root of a local folder (hashed once, never from a cache); None when it is not a model folder."""
        key = folder.resolve()
        if key not in self.hashed:
            try:
                self.hashed[key] = hash_model(folder, "sha256", use_cache=False).model_root
            except AttestError:
                self.hashed[key] = ""
        return self.hashed[key] or None

    def trusted_step(self, digest: str) -> StepRecord | None:
        rec = self.lineage.steps.get(digest)
        return rec if rec is not None and rec.trusted else None


def _short(d: str) -> str:
    return f"sha256:{d[:16]}…"


# --- rules ----------------------------------------------------------------------------------------------------------


def _required_signers(ctx: _Context, rule: RequiredSigners) -> RuleResult:
    known = {k.name for k in ctx.trust.keys} | {i.name for i in ctx.trust.identities}
    title = f"signed by {', '.join(rule.signers)} ({'every step' if rule.scope == 'every_step' else 'the model'})"
    result = RuleResult(rule="required_signers", title=title, passed=True)
    for s in rule.signers:
        if s not in known:
            result.passed = False
            result.evidence.append(f"signer {s!r} is not defined in the policy's keys or sigstore_identities")
    checked = [ctx.root] if rule.scope == "model" else [n for n in nodes(ctx.root) if n.verdict != "trusted_root"]
    for n in checked:
        bare = {x.removesuffix(" (model.sig)") for x in n.signers}
        missing = [s for s in rule.signers if s not in bare]
        what = f"{n.name} ({n.step or 'no statement'})"
        if missing:
            result.passed = False
            has = ", ".join(n.signers) or "nobody trusted"
            result.evidence.append(f"{what}: signed by {has}; missing {', '.join(missing)}")
        else:
            result.evidence.append(f"{what}: signed by {', '.join(n.signers)}")
    return result


def _attested_to_roots(ctx: _Context) -> RuleResult:
    result = RuleResult(
        rule="attested_to_roots", title="every ancestor attested back to an allow-listed root", passed=True
    )
    if not ctx.trust.roots:
        result.passed = False
        result.evidence.append("the policy allow-lists no root digests (trusted_roots)")
    for n in nodes(ctx.root):
        if n.verdict == "trusted_root":
            result.evidence.append(f"{n.name} ({_short(n.digest)}) is an allow-listed root")
        elif n.verdict in ("unattested", "failed"):
            result.passed = False
            result.evidence.append(
                f"{n.name} ({_short(n.digest)}) is {n.verdict}: neither a trusted statement nor an allow-listed root"
            )
        elif not n.parents:
            result.passed = False
            result.evidence.append(f"{n.name} ({_short(n.digest)}) names no parent and is not an allow-listed root")
        else:
            result.evidence.append(f"{n.name} ({n.step}) attested by {', '.join(n.signers)}")
    return result


BASE_LABEL = "base"
"""detect's label for the base's implied weight; a candidate's label is its absolute path, so never this."""


def _candidate_folders(ctx: _Context, rule: FullDisclosure) -> list[Path]:
    return [ctx.path(c).absolute() for c in rule.candidates]


def _detect(ctx: _Context, rule: FullDisclosure) -> tuple[DetectReport | None, list[str], dict[str, str]]:
    """Run forensics once against the rule's candidates; (report or None, evidence if it could not run, label->root).

    Participants are identified by model root: each label detect reports (a candidate's absolute path, or
    BASE_LABEL) maps to the root of the folder it stands for, and a label that is not exactly one participant
    fails closed, so a candidate folder named `base` can never borrow the base's root."""
    if ctx.detect_result is not None:
        return ctx.detect_result
    labels: dict[str, str] = {}
    problems: list[str] = []
    folders = _candidate_folders(ctx, rule)
    for f in folders:
        root = ctx.root_of(f) if f.is_dir() else None
        if root is None:
            problems.append(f"candidate {f} is not a readable model folder: detect cannot run (fails closed)")
        elif str(f) in labels:
            problems.append(f"candidate {f} is given twice: detect cannot tell its participants apart (fails closed)")
        else:
            labels[str(f)] = root
    base = ctx.path(rule.base).absolute() if rule.base else None
    if base is not None:
        root = ctx.root_of(base) if base.is_dir() else None
        if root is None:
            problems.append(f"base {base} is not a readable model folder: detect cannot run (fails closed)")
        else:
            labels[BASE_LABEL] = root
    report = None
    if not problems:
        try:
            from attest.forensics import detect  # lazy: forensics loads torch and numpy
        except ImportError as exc:  # torch or the forensics package missing
            problems.append(f"requires attest detect, which is unavailable here ({exc}): fails closed")
        else:
            ctx.say(f"detect: fitting {ctx.lineage.folder.name} against {len(folders)} candidates")
            try:
                report = detect(ctx.lineage.folder, list(folders), base)
            except AttestError as exc:
                problems.append(f"detect could not run: {exc} (fails closed)")
            except Exception as exc:  # a forensics bug must not pass the rule
                problems.append(f"detect could not run ({type(exc).__name__}: {exc}): fails closed")
    if report is not None:
        named = [c.candidate for c in report.coefficients]
        unknown = sorted({n for n in named if n not in labels} | {n for n in named if named.count(n) > 1})
        if report.derived_from is not None and report.derived_from not in labels:
            unknown.append(report.derived_from)
        if unknown:
            problems.append(f"detect reported participants it was not given, or twice: {unknown} (fails closed)")
            report = None
    ctx.detect_result = (report, problems, labels)
    return ctx.detect_result


def _display_names(ctx: _Context, rule: FullDisclosure) -> dict[str, str]:
    """detect's labels (absolute candidate paths, BASE_LABEL) -> the folder names a reader recognises."""
    out = {str(f): Path(c).name or c for f, c in zip(_candidate_folders(ctx, rule), rule.candidates, strict=True)}
    if rule.base:
        out[BASE_LABEL] = f"{Path(rule.base).name} (base)"
    return out


def _full_disclosure(ctx: _Context, rule: FullDisclosure) -> RuleResult:
    result = RuleResult(
        rule="full_disclosure",
        title="full disclosure: every parent attested"
        + (
            f"; no undisclosed contributor among {len(rule.candidates)} candidates (attest detect)"
            if rule.candidates
            else ""
        ),
        passed=True,
    )
    root = ctx.root
    if root.verdict in ("unattested", "failed") or (
        root.verdict == "verified" and ctx.trusted_step(root.digest) is None
    ):
        # A file-level signature (model.sig) says who published the bytes, not how they were made.
        result.passed = False
        result.evidence.append(f"no trusted statement discloses how {root.name} was made")
    for n in nodes(root):
        if n is not root and n.verdict in ("unattested", "failed"):
            result.passed = False
            result.evidence.append(f"parent {n.name} ({n.role}, {_short(n.digest)}) is {n.verdict}")
    if result.passed:
        result.evidence.append("every parent in the lineage has a trusted statement or is an allow-listed root")
    if not rule.candidates:
        return result
    ancestors = {n.digest for n in nodes(root) if n is not root}
    report, problems, labels = _detect(ctx, rule)
    if report is None:
        result.passed = False
        result.evidence.extend(problems)
        return result
    name_of = _display_names(ctx, rule)
    hint = "; ".join(f"{h.method}: {h.evidence}" for h in report.hints)
    said = f"detect verdict {report.verdict}: {report.reason}" + (f" ({hint})" if hint else "")
    for full, short in sorted(name_of.items(), key=lambda kv: -len(kv[0])):
        if full != BASE_LABEL:
            said = said.replace(full, short)
    result.evidence.append(said)
    if report.non_finite:
        result.evidence.append(f"detect left {len(report.non_finite)} tensors with NaN/Inf values out of the fit")
    if report.verdict in ("pure_merge", "merge_plus_training"):
        for c in report.coefficients:
            if not c.significant:
                continue
            digest = labels.get(c.candidate)
            shown = name_of.get(c.candidate, c.candidate)
            ci = f" [{c.ci_low:.4f}, {c.ci_high:.4f}]" if c.ci_low is not None and c.ci_high is not None else ""
            if digest is not None and digest not in ancestors:
                result.passed = False
                result.evidence.append(
                    f"undisclosed contributor: {shown} ({_short(digest)}) enters with coefficient {c.value:.4f}{ci}, "
                    "but no statement in the lineage names it"
                )
            else:
                result.evidence.append(f"{shown}: coefficient {c.value:.4f}{ci}, disclosed in the lineage")
    elif report.verdict == "derived_not_merge" and report.derived_from:
        digest = labels.get(report.derived_from)
        shown = name_of.get(report.derived_from, report.derived_from)
        if digest is not None and digest not in ancestors:
            result.passed = False
            result.evidence.append(f"derived from {shown} ({_short(digest)}), which the lineage does not name")
    return result


def _locate(ctx: _Context, digest: str, name: str, uri: str | None, extra_dirs: list[Path]) -> Path | None:
    """A local folder whose model root is `digest`: the recorded file URI, then NAME under the parents dirs."""
    if digest == ctx.lineage.report.model_root:
        return ctx.lineage.folder
    candidates: list[Path] = []
    if uri:
        parsed = urlparse(uri)
        if parsed.scheme == "file":
            candidates.append(Path(unquote(parsed.path)))
    for d in [*extra_dirs, *ctx.options.parents_dirs]:
        candidates.append(d / Path(name).name)
    for c in candidates:
        if c.is_dir() and ctx.root_of(c) == digest:
            return c
    return None


def _uri_index(ctx: _Context) -> dict[str, tuple[str, str | None]]:
    """digest -> (name, uri) from every dependency of every statement in the lineage."""
    out: dict[str, tuple[str, str | None]] = {}
    for rec in ctx.lineage.steps.values():
        if not rec.trusted:  # only what a trusted signer said may steer which folders are hashed
            continue
        for dep in rec.statement.dependencies():
            d = dep.sha256
            if d and dep.role in ROLES:
                out.setdefault(d, (dep.name or d[:16], dep.uri))
    return out


def _replay_merges(ctx: _Context, rule: ReplayMerges) -> RuleResult:
    """Each merge is replayed by attest.replay.step (recipe from the trusted statement, parents bound by digest
    to local folders that re-hash to it); anything it cannot do is a failure with its reason."""
    result = RuleResult(rule="replay_merges", title="every merge replayed and reproduced", passed=True)
    merges = [n for n in nodes(ctx.root) if n.step == "merge"]
    if not merges:
        result.evidence.append("no merge step in the lineage")
        return result
    try:
        from attest.replay.step import replay_statement  # lazy: the replay wing loads torch
    except ImportError as exc:
        result.passed = False
        result.evidence.append(f"replay unavailable ({exc}): fails closed")
        return result
    extra = [ctx.path(d) for d in rule.parents_dirs]
    index = _uri_index(ctx)
    for n in merges:
        rec = ctx.trusted_step(n.digest)
        if rec is None:
            result.passed = False
            result.evidence.append(f"{n.name}: no trusted statement to replay (fails closed)")
            continue
        name, uri = index.get(n.digest, (n.name, None))
        candidate = _locate(ctx, n.digest, name, uri, extra)
        local: dict[str, Path] = {}
        for d in rec.statement.dependencies():
            digest = d.sha256
            if digest and d.role in ROLES:
                found = _locate(ctx, digest, d.name or digest[:16], d.uri, extra)
                if found is not None:
                    local[digest] = found
        if candidate is None:
            result.passed = False
            result.evidence.append(
                f"{n.name}: replay unavailable: no local folder re-hashes to the merged model's digest (fails closed)"
            )
            continue
        ctx.say(f"replay: recomputing merge {n.name} on {rule.device}")
        try:
            outcome = replay_statement(candidate, rec.statement, local, device=rule.device)
        except Exception as exc:  # a replay engine bug must not pass, nor hide the other rules' verdicts
            result.passed = False
            result.evidence.append(f"{n.name}: replay unavailable ({type(exc).__name__}: {exc}): fails closed")
            continue
        if not outcome.ok:
            result.passed = False
            why = "replay unavailable: " if outcome.verdict == "cannot_replay" else ""
            shown = f"; mismatched: {', '.join(outcome.mismatched[:5])}" if outcome.mismatched else ""
            result.evidence.append(f"{n.name}: {outcome.verdict}: {why}{outcome.summary}{shown} (fails closed)")
        else:
            result.evidence.append(f"{n.name}: {outcome.verdict}: {outcome.summary}")
    return result


def _claims_consistent(ctx: _Context, rule: ClaimsConsistent, disclosure: FullDisclosure | None) -> RuleResult:
    result = RuleResult(rule="claims_consistent", title="claims consistent with the evidence", passed=True)
    report = ctx.lineage.report
    for n in nodes(ctx.root):
        rec = ctx.trusted_step(n.digest)
        if rec is None or n.step is None:
            continue
        subject = next((s for s in rec.statement.subject if s.digest.get("sha256") == n.digest), None)
        own = (subject.annotations or {}).get("weights_root") if subject else None
        if n.digest == report.model_root and own is not None and own != report.weights_root:
            result.passed = False
            result.evidence.append(f"{n.name}: statement's weights_root {own[:16]} is not the folder's")
        if n.step not in WEIGHT_CHANGING_STEPS:
            continue
        same = [
            d.name or "?"
            for d in rec.statement.dependencies()
            if d.role in ROLES and (d.annotations or {}).get("weights_root") == own
        ]
        if own is None:
            result.passed = False
            result.evidence.append(f"{n.name}: the {n.step} statement gives no weights_root to compare")
        elif same:
            result.passed = False
            result.evidence.append(
                f"{n.name}: claimed {n.step} left the weights unchanged (weights root equals {', '.join(same)}'s)"
            )
        else:
            result.evidence.append(
                f"{n.name}: claimed {n.step} changed the weights (weights root differs from parents)"
            )
    root_rec = ctx.trusted_step(report.model_root)
    if disclosure is not None and disclosure.candidates and root_rec is not None:
        det, _, _ = _detect(ctx, disclosure)
        if det is not None and ctx.root.step in ("finetune", "distill") and det.verdict == "pure_merge":
            result.passed = False
            names = _display_names(ctx, disclosure)
            coefs = ", ".join(
                f"{names.get(c.candidate, c.candidate)} {c.value:.4f}" for c in det.coefficients if c.significant
            )
            result.evidence.append(
                f"{ctx.root.name}: claimed {ctx.root.step}, but detect finds a pure merge with no training ({coefs})"
            )
        elif det is not None and ctx.root.step == "merge" and det.verdict in ("not_derived", "derived_not_merge"):
            result.passed = False
            result.evidence.append(f"{ctx.root.name}: claimed merge, but detect says {det.verdict}: {det.reason}")
    if rule.card:
        try:
            card = read_card(ctx.lineage.folder)
        except AttestError as exc:
            card = None
            result.passed = False
            result.evidence.append(f"model card unreadable: {exc}")
        if card is None:
            result.passed = False  # fails closed: a card was required and there is none to check
            result.evidence.append("no model card (README.md) to check")
        else:
            trusted = {d: r for d, r in ctx.lineage.steps.items() if r.trusted}
            head, current = head_step(trusted, report.model_root)
            if head is not None and not current:
                result.evidence.append("the folder changed after signing: card checked against its signed statement")
            findings = check_card(card, step_from_statement(head) if head else None)
            for f in findings:
                result.passed = False
                result.evidence.append(f"model card: {f}")
            if not findings:
                result.evidence.append("model card agrees with the statements")
    return result


def replay_lineage(
    lineage: VerifiedLineage, trust: TrustSet, options: VerifyOptions, parents_dirs: list[Path], device: str
) -> RuleResult:
    """`attest verify --replay`: the replay_merges rule, with the command line's parent folders and device."""
    rule = ReplayMerges.model_validate({"parents_dirs": [str(p.resolve()) for p in parents_dirs], "device": device})
    return _replay_merges(_Context(lineage, trust, options, dict(lineage.hashed)), rule)


def _training_replayed(ctx: _Context, rule: TrainingReplayed) -> RuleResult:
    """Each training transcript's chain checked and `segments` segments re-executed (attest.training); the command
    line's --checkpoints, --data and --parents-dir are searched after the policy's folders."""
    from attest.policy.training_replay import evidence, replay_lineage_training
    from attest.training.replay import TrainingInputs

    o = ctx.options
    inputs = TrainingInputs(
        [ctx.path(p) for p in rule.checkpoints_dirs] + list(o.checkpoints_dirs),
        [ctx.path(p) for p in rule.data] + list(o.training_data),
        [ctx.path(p) for p in rule.parents_dirs] + list(o.parents_dirs),
    )
    ctx.say(f"training replay: {rule.segments} segment(s) per transcript")
    reports, why = replay_lineage_training(ctx.lineage, rule.segments, inputs, rule.scope, tuple(rule.kinds))
    passed, lines = evidence(reports, why, rule.segments)
    title = f"training transcripts checked, {rule.segments} segment(s) each replayed bit for bit"
    return RuleResult(rule="training_replayed", title=title, passed=passed, evidence=lines)


def evaluate_rules(lineage: VerifiedLineage, trust: TrustSet, options: VerifyOptions) -> PolicyResult:
    """Evaluate the policy's rules in a fixed order; the policy passes when every rule does."""
    assert trust.policy is not None and trust.policy.rules is not None
    rules = trust.policy.rules
    ctx = _Context(lineage, trust, options, dict(lineage.hashed))
    out: list[RuleResult] = []
    if lineage.report.lineage is None:
        out.append(RuleResult(rule="lineage", title="a lineage to evaluate", passed=False, evidence=["none"]))
    else:
        if rules.required_signers is not None:
            out.append(_required_signers(ctx, rules.required_signers))
        if rules.attested_to_roots is not None:
            out.append(_attested_to_roots(ctx))
        if rules.full_disclosure is not None:
            out.append(_full_disclosure(ctx, rules.full_disclosure))
        if rules.replay_merges is not None:
            out.append(_replay_merges(ctx, rules.replay_merges))
        if rules.licenses is not None:
            out.append(licenses_rule(ctx.lineage.folder, rules.licenses))
        if rules.claims_consistent is not None:
            out.append(_claims_consistent(ctx, rules.claims_consistent, rules.full_disclosure))
        if rules.training_replayed is not None:
            out.append(_training_replayed(ctx, rules.training_replayed))
    where = str(trust.policy_path) if trust.policy_path else "policy"
    return PolicyResult(policy=where, name=trust.policy.name, passed=all(r.passed for r in out), rules=out)

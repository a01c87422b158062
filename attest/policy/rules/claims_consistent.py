"""claims_consistent: what the statements, the card and (with candidates) detect say about how the model was made
agree."""

from __future__ import annotations

from typing import TYPE_CHECKING

from attest.errors import AttestError
from attest.policy.model_card import check_card, read_card, step_from_statement
from attest.policy.rules.base import Rule, RuleContext, RuleResult, nodes
from attest.policy.rules.evidence import WEIGHT_CHANGING_STEPS, detect_once, display_names
from attest.statements.models import ROLES
from attest.trust.policy_file import ClaimsConsistent, FullDisclosure
from attest.verify.lineage import head_step

if TYPE_CHECKING:
    from attest.forensics.report import DetectReport

TRAINING_PARENT_ROLES = ("parent", "student-init", "base")
"""Dependencies a fine-tune/distillation starts from (a teacher is not one)."""


class ClaimsConsistentRule(Rule[ClaimsConsistent], name="claims_consistent"):
    def evaluate(self, ctx: RuleContext) -> RuleResult:
        rule, disclosure = self.config, self.rules.full_disclosure if self.rules is not None else None
        result = self.result("claims consistent with the evidence")
        report = ctx.lineage.report
        for n in nodes(ctx.root):
            rec = ctx.trusted_step(n.digest)
            if rec is None or n.step is None:
                continue
            subject = next((s for s in rec.statement.subject if s.digest.get("sha256") == n.digest), None)
            own = (subject.annotations or {}).get("weights_root") if subject else None
            if n.digest == report.model_root and own is not None and own != report.weights_root:
                result.fail(f"{n.name}: statement's weights_root {own[:16]} is not the folder's")
            if n.step not in WEIGHT_CHANGING_STEPS:
                continue
            same = [
                d.name or "?"
                for d in rec.statement.dependencies()
                if d.role in ROLES and (d.annotations or {}).get("weights_root") == own
            ]
            if own is None:
                result.fail(f"{n.name}: the {n.step} statement gives no weights_root to compare")
            elif same:
                result.fail(
                    f"{n.name}: claimed {n.step} left the weights unchanged (weights root equals {', '.join(same)}'s)"
                )
            else:
                result.evidence.append(
                    f"{n.name}: claimed {n.step} changed the weights (weights root differs from parents)"
                )
        root_rec = ctx.trusted_step(report.model_root)
        if disclosure is not None and disclosure.candidates and root_rec is not None:
            det, _, labels = detect_once(ctx, disclosure)
            if det is not None and ctx.root.step in ("finetune", "distill"):
                _training_claim(ctx, det, labels, disclosure, result)
            elif det is not None and ctx.root.step == "merge" and det.verdict in NOT_SHOWN_MERGE:
                result.fail(f"{ctx.root.name}: claimed merge, but detect says {det.verdict}: {det.reason}")
        if rule.card:
            try:
                card = read_card(ctx.lineage.folder)
            except AttestError as exc:
                card = None
                result.fail(f"model card unreadable: {exc}")
            if card is None:
                result.fail("no model card (README.md) to check")  # fails closed: a card was required
            else:
                trusted = {d: r for d, r in ctx.lineage.steps.items() if r.trusted}
                head, current = head_step(trusted, report.model_root)
                if head is not None and not current:
                    result.evidence.append(
                        "the folder changed after signing: card checked against its signed statement"
                    )
                findings = check_card(card, step_from_statement(head) if head else None)
                for f in findings:
                    result.fail(f"model card: {f}")
                if not findings:
                    result.evidence.append("model card agrees with the statements")
        return result


NOT_SHOWN_MERGE = ("not_derived", "derived_not_merge", "undetermined")
"""Detect verdicts under which a claimed merge fails: the weights are not shown to be a merge of the candidates."""


def _training_claim(
    ctx: RuleContext, det: DetectReport, labels: dict[str, str], disclosure: FullDisclosure, result: RuleResult
) -> None:
    """A claimed fine-tune/distillation (SPEC.md §6.7, the same evidence as `detect --claim`): it must descend from
    each claimed parent that detect fitted, must have changed the weights, and when its parent is a recorded merge
    must start from that merge."""
    from attest.forensics.claims import descends_from, merge_start  # lazy: attest.forensics loads torch

    node = ctx.root
    names = display_names(ctx, disclosure)
    by_root = {root: label for label, root in labels.items()}
    if det.verdict == "pure_merge":
        result.passed = False
        coefs = ", ".join(
            f"{names.get(c.candidate, c.candidate)} {c.value:.4f}" for c in det.coefficients if c.significant
        )
        result.evidence.append(
            f"{node.name}: claimed {node.step}, but detect finds a pure merge with no training ({coefs})"
        )
    for parent in node.parents:
        if parent.role not in TRAINING_PARENT_ROLES:
            continue
        label = by_root.get(parent.digest)
        if label is None:
            result.evidence.append(
                f"{node.name}: descent from {parent.name} not tested: it is not among full_disclosure's candidates/base"
            )
            continue
        ok, why = descends_from(det, label)
        if ok is False:
            result.passed = False
        result.evidence.append(
            f"{node.name}: claimed {node.step} of {parent.name}: {why.replace(label, names.get(label, label))}"
        )
        if parent.step == "merge" and det.verdict != "pure_merge":
            ok2, why2 = merge_start(det, node.step or "step")
            if not ok2:
                result.passed = False
            result.evidence.append(f"{node.name}: {why2}")

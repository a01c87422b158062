"""full_disclosure: every parent attested, and (with candidates) no undisclosed contributor that attest detect
finds."""

from __future__ import annotations

from dataclasses import dataclass

from attest.policy.procurement import BASE_LABEL, _Context, _detect, _display_names, _short
from attest.policy.rules.base import register
from attest.trust.policy_file import FullDisclosure, ProcurementRules
from attest.verify.lineage import nodes
from attest.verify.report import RuleResult


@register("full_disclosure")
@dataclass(frozen=True)
class FullDisclosureRule:
    config: FullDisclosure

    @classmethod
    def from_rules(cls, rules: ProcurementRules) -> FullDisclosureRule | None:
        return None if rules.full_disclosure is None else cls(rules.full_disclosure)

    def evaluate(self, ctx: _Context) -> RuleResult:
        rule = self.config
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
                        f"undisclosed contributor: {shown} ({_short(digest)}) "
                        f"enters with coefficient {c.value:.4f}{ci}, "
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

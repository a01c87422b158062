"""full_disclosure: every parent attested, and (with candidates) no undisclosed contributor that attest detect
finds."""

from __future__ import annotations

from attest.policy.rules.base import Rule, RuleContext, RuleResult, nodes, short_digest
from attest.policy.rules.evidence import BASE_LABEL, detect_once, display_names
from attest.trust.policy_file import FullDisclosure


class FullDisclosureRule(Rule[FullDisclosure], name="full_disclosure"):
    def evaluate(self, ctx: RuleContext) -> RuleResult:
        rule = self.config
        among = f"; no undisclosed contributor among {len(rule.candidates)} candidates (attest detect)"
        result = self.result("full disclosure: every parent attested" + (among if rule.candidates else ""))
        root = ctx.root
        if root.verdict in ("unattested", "failed") or (
            root.verdict == "verified" and ctx.trusted_step(root.digest) is None
        ):
            # A file-level signature (model.sig) says who published the bytes, not how they were made.
            result.fail(f"no trusted statement discloses how {root.name} was made")
        for n in nodes(root):
            if n is not root and n.verdict in ("unattested", "failed"):
                result.fail(f"parent {n.name} ({n.role}, {short_digest(n.digest)}) is {n.verdict}")
        if result.passed:
            result.evidence.append("every parent in the lineage has a trusted statement or is an allow-listed root")
        if not rule.candidates:
            return result
        ancestors = {n.digest for n in nodes(root) if n is not root}
        report, problems, labels = detect_once(ctx, rule)
        if report is None:
            result.passed = False
            result.evidence.extend(problems)
            return result
        name_of = display_names(ctx, rule)
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
                    result.fail(
                        f"undisclosed contributor: {shown} ({short_digest(digest)}) "
                        f"enters with coefficient {c.value:.4f}{ci}, "
                        "but no statement in the lineage names it"
                    )
                else:
                    result.evidence.append(f"{shown}: coefficient {c.value:.4f}{ci}, disclosed in the lineage")
        elif report.verdict == "undetermined":
            # Without a base, a near-even merge followed by training and a sibling fine-tune read alike: it passes
            # only when every candidate that takes part is in the lineage, which makes both readings disclosed.
            hidden = [
                name_of.get(c.candidate, c.candidate)
                for c in report.coefficients
                if c.significant and labels.get(c.candidate) not in ancestors
            ]
            if hidden:
                result.fail(f"detect cannot tell a merge of the candidates from a fine-tune of their base (verdict "
                            f"undetermined, above), and {', '.join(hidden)} is not in the lineage; give "
                            "full_disclosure the candidates' base")  # fmt: skip
            else:
                result.evidence.append("undetermined, but every candidate that takes part is in the lineage")
        elif report.verdict == "derived_not_merge" and report.derived_from:
            digest = labels.get(report.derived_from)
            shown = name_of.get(report.derived_from, report.derived_from)
            if digest is not None and digest not in ancestors:
                result.fail(f"derived from {shown} ({short_digest(digest)}), which the lineage does not name")
        return result

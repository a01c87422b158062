"""attested_to_roots: every ancestor has a trusted statement or is an allow-listed root."""

from __future__ import annotations

from dataclasses import dataclass

from attest.policy.procurement import _Context, _short
from attest.policy.rules.base import register
from attest.trust.policy_file import AttestedToRoots, ProcurementRules
from attest.verify.lineage import nodes
from attest.verify.report import RuleResult


@register("attested_to_roots")
@dataclass(frozen=True)
class AttestedToRootsRule:
    config: AttestedToRoots

    @classmethod
    def from_rules(cls, rules: ProcurementRules) -> AttestedToRootsRule | None:
        return None if rules.attested_to_roots is None else cls(rules.attested_to_roots)

    def evaluate(self, ctx: _Context) -> RuleResult:
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
                    f"{n.name} ({_short(n.digest)}) is {n.verdict}: "
                    "neither a trusted statement nor an allow-listed root"
                )
            elif not n.parents:
                result.passed = False
                result.evidence.append(f"{n.name} ({_short(n.digest)}) names no parent and is not an allow-listed root")
            else:
                result.evidence.append(f"{n.name} ({n.step}) attested by {', '.join(n.signers)}")
        return result

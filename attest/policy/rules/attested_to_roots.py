"""attested_to_roots: every ancestor has a trusted statement or is an allow-listed root."""

from __future__ import annotations

from attest.policy.rules.base import Rule, RuleContext, RuleResult, nodes, short_digest
from attest.trust.policy_file import AttestedToRoots


class AttestedToRootsRule(Rule[AttestedToRoots], name="attested_to_roots"):
    def evaluate(self, ctx: RuleContext) -> RuleResult:
        result = self.result("every ancestor attested back to an allow-listed root")
        if not ctx.trust.roots:
            result.fail("the policy allow-lists no root digests (trusted_roots)")
        for n in nodes(ctx.root):
            if n.verdict == "trusted_root":
                result.evidence.append(f"{n.name} ({short_digest(n.digest)}) is an allow-listed root")
            elif n.verdict in ("unattested", "failed"):
                result.fail(
                    f"{n.name} ({short_digest(n.digest)}) is {n.verdict}: "
                    "neither a trusted statement nor an allow-listed root"
                )
            elif not n.parents:
                result.fail(f"{n.name} ({short_digest(n.digest)}) names no parent and is not an allow-listed root")
            else:
                result.evidence.append(f"{n.name} ({n.step}) attested by {', '.join(n.signers)}")
        return result

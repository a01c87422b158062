"""required_signers: the named signers signed the model, or every step of its lineage."""

from __future__ import annotations

from attest.policy.rules.base import Rule, RuleContext, RuleResult, nodes
from attest.trust.policy_file import RequiredSigners


class RequiredSignersRule(Rule[RequiredSigners], name="required_signers"):
    def evaluate(self, ctx: RuleContext) -> RuleResult:
        rule = self.config
        known = {k.name for k in ctx.trust.keys} | {i.name for i in ctx.trust.identities}
        result = self.result(
            f"signed by {', '.join(rule.signers)} ({'every step' if rule.scope == 'every_step' else 'the model'})"
        )
        for s in rule.signers:
            if s not in known:
                result.fail(f"signer {s!r} is not defined in the policy's keys or sigstore_identities")
        checked = [ctx.root] if rule.scope == "model" else [n for n in nodes(ctx.root) if n.verdict != "trusted_root"]
        for n in checked:
            bare = {x.removesuffix(" (model.sig)") for x in n.signers}
            missing = [s for s in rule.signers if s not in bare]
            what = f"{n.name} ({n.step or 'no statement'})"
            if missing:
                result.fail(
                    f"{what}: signed by {', '.join(n.signers) or 'nobody trusted'}; missing {', '.join(missing)}"
                )
            else:
                result.evidence.append(f"{what}: signed by {', '.join(n.signers)}")
        return result

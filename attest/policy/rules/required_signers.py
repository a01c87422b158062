"""required_signers: the named signers signed the model, or every step of its lineage."""

from __future__ import annotations

from dataclasses import dataclass

from attest.policy.procurement import _Context
from attest.policy.rules.base import register
from attest.trust.policy_file import ProcurementRules, RequiredSigners
from attest.verify.lineage import nodes
from attest.verify.report import RuleResult


@register("required_signers")
@dataclass(frozen=True)
class RequiredSignersRule:
    config: RequiredSigners

    @classmethod
    def from_rules(cls, rules: ProcurementRules) -> RequiredSignersRule | None:
        return None if rules.required_signers is None else cls(rules.required_signers)

    def evaluate(self, ctx: _Context) -> RuleResult:
        rule = self.config
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

"""licenses: every license the card or config.json declares is on the allow-list (attest.policy.licenses)."""

from __future__ import annotations

from dataclasses import dataclass

from attest.policy.licenses import licenses_rule
from attest.policy.procurement import _Context
from attest.policy.rules.base import register
from attest.trust.policy_file import Licenses, ProcurementRules
from attest.verify.report import RuleResult


@register("licenses")
@dataclass(frozen=True)
class LicensesRule:
    config: Licenses

    @classmethod
    def from_rules(cls, rules: ProcurementRules) -> LicensesRule | None:
        return None if rules.licenses is None else cls(rules.licenses)

    def evaluate(self, ctx: _Context) -> RuleResult:
        return licenses_rule(ctx.lineage.folder, self.config)

"""licenses: every license the card or config.json declares is on the allow-list (attest.policy.licenses)."""

from __future__ import annotations

from attest.policy.licenses import licenses_rule
from attest.policy.rules.base import Rule, RuleContext, RuleResult
from attest.trust.policy_file import Licenses


class LicensesRule(Rule[Licenses], name="licenses"):
    def evaluate(self, ctx: RuleContext) -> RuleResult:
        return licenses_rule(ctx.lineage.folder, self.config)

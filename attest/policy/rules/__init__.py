"""Procurement rules (SPEC.md section 7.1), one module each, composed into one policy verdict.

Like sigstore-python's `VerificationPolicy` / `AllOf`, each rule is an object with `evaluate(context)`; the policy
passes when every configured rule does. Rules run in the fixed order of ORDER, so evidence reads the same each run.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from attest.policy.procurement import _Context
from attest.policy.rules import (
    attested_to_roots,
    claims_consistent,
    full_disclosure,
    licenses,
    replay_merges,
    required_signers,
    training_replayed,
)
from attest.policy.rules.base import REGISTRY, Rule, register
from attest.policy.rules.replay_merges import ReplayMergesRule
from attest.trust.policy_file import ReplayMerges
from attest.verify.lineage import VerifiedLineage
from attest.verify.report import PolicyResult, RuleResult

if TYPE_CHECKING:
    from attest.trust.policy_file import ProcurementRules
    from attest.trust.trust_set import TrustSet
    from attest.verify.engine import VerifyOptions

ORDER = (
    required_signers.__name__,
    attested_to_roots.__name__,
    full_disclosure.__name__,
    replay_merges.__name__,
    licenses.__name__,
    claims_consistent.__name__,
    training_replayed.__name__,
)
"""Evaluation order: the rule modules, by name (each registers under its module's last name component)."""


def configured_rules(rules: ProcurementRules) -> list[Rule]:
    """The rules the policy configures, in evaluation order."""
    out = []
    for module in ORDER:
        rule = REGISTRY[module.rsplit(".", 1)[-1]].from_rules(rules)
        if rule is not None:
            out.append(rule)
    return out


class AllOf:
    """Every rule must pass; each is evaluated (none short-circuits) so that the report shows all the evidence."""

    def __init__(self, rules: list[Rule]) -> None:
        self.rules = rules

    def evaluate(self, ctx: _Context) -> list[RuleResult]:
        return [r.evaluate(ctx) for r in self.rules]


def evaluate_rules(lineage: VerifiedLineage, trust: TrustSet, options: VerifyOptions) -> PolicyResult:
    """Evaluate the policy's rules in a fixed order; the policy passes when every rule does."""
    assert trust.policy is not None and trust.policy.rules is not None
    ctx = _Context(lineage, trust, options, dict(lineage.hashed))
    out: list[RuleResult] = []
    if lineage.report.lineage is None:
        out.append(RuleResult(rule="lineage", title="a lineage to evaluate", passed=False, evidence=["none"]))
    else:
        out = AllOf(configured_rules(trust.policy.rules)).evaluate(ctx)
    where = str(trust.policy_path) if trust.policy_path else "policy"
    return PolicyResult(policy=where, name=trust.policy.name, passed=all(r.passed for r in out), rules=out)


def replay_lineage(
    lineage: VerifiedLineage, trust: TrustSet, options: VerifyOptions, parents_dirs: list[Path], device: str
) -> RuleResult:
    """`attest verify --replay`: the replay_merges rule, with the command line's parent folders and device."""
    rule = ReplayMerges.model_validate({"parents_dirs": [str(p.resolve()) for p in parents_dirs], "device": device})
    return ReplayMergesRule(rule).evaluate(_Context(lineage, trust, options, dict(lineage.hashed)))


__all__ = ["ORDER", "REGISTRY", "AllOf", "Rule", "configured_rules", "evaluate_rules", "register", "replay_lineage"]

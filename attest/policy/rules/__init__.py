"""Procurement rules (SPEC.md section 7.1), one module each, composed into one policy verdict.

Like sigstore-python's `VerificationPolicy` / `AllOf`, each rule is an object with `evaluate(context)`; the policy
passes when every configured rule does. Rules run in the fixed order of ORDER, so evidence reads the same each run.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from attest.policy.rules import (
    attested_to_roots,
    claims_consistent,
    full_disclosure,
    licenses,
    replay_merges,
    required_signers,
    training_replayed,
)
from attest.policy.rules.base import REGISTRY, Rule, RuleContext
from attest.policy.rules.replay_merges import ReplayMergesRule
from attest.trust.policy_file import ReplayMerges
from attest.verify.lineage import VerifiedLineage
from attest.verify.report import PolicyResult, RuleResult

if TYPE_CHECKING:
    from attest.trust.policy_file import ProcurementRules
    from attest.trust.trust_set import TrustSet
    from attest.verify.engine import VerifyOptions

ORDER = tuple(
    m.__name__.rsplit(".", 1)[-1]
    for m in (
        required_signers,
        attested_to_roots,
        full_disclosure,
        replay_merges,
        licenses,
        claims_consistent,
        training_replayed,
    )
)
"""Evaluation order: the rules' policy field names (each module defines the rule of its own name)."""


def configured_rules(rules: ProcurementRules) -> list[Rule[Any]]:
    """The rules the policy configures, in evaluation order."""
    return [rule for name in ORDER if (rule := REGISTRY[name].from_rules(rules)) is not None]


class AllOf:
    """Every rule must pass; each is evaluated (none short-circuits) so that the report shows all the evidence."""

    def __init__(self, rules: list[Rule[Any]]) -> None:
        self.rules = rules

    def evaluate(self, ctx: RuleContext) -> list[RuleResult]:
        return [r.evaluate(ctx) for r in self.rules]


def evaluate_rules(lineage: VerifiedLineage, trust: TrustSet, options: VerifyOptions) -> PolicyResult:
    """Evaluate the policy's rules in a fixed order; the policy passes when every rule does."""
    assert trust.policy is not None and trust.policy.rules is not None
    out: list[RuleResult] = []
    if lineage.report.lineage is None:
        out.append(RuleResult(rule="lineage", title="a lineage to evaluate", passed=False, evidence=["none"]))
    else:
        out = AllOf(configured_rules(trust.policy.rules)).evaluate(RuleContext(lineage, trust, options))
    where = str(trust.policy_path) if trust.policy_path else "policy"
    return PolicyResult(policy=where, name=trust.policy.name, passed=all(r.passed for r in out), rules=out)


def replay_lineage(
    lineage: VerifiedLineage, trust: TrustSet, options: VerifyOptions, parents_dirs: list[Path], device: str
) -> RuleResult:
    """`attest verify --replay`: the replay_merges rule, with the command line's parent folders and device."""
    rule = ReplayMerges.model_validate({"parents_dirs": [str(p.resolve()) for p in parents_dirs], "device": device})
    return ReplayMergesRule(rule).evaluate(RuleContext(lineage, trust, options))


__all__ = ["ORDER", "REGISTRY", "AllOf", "Rule", "RuleContext", "configured_rules", "evaluate_rules", "replay_lineage"]

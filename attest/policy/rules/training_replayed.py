"""training_replayed: each training transcript's chain checked and `segments` segments re-executed (attest.training)."""

from __future__ import annotations

from dataclasses import dataclass

from attest.policy.procurement import _Context
from attest.policy.rules.base import register
from attest.trust.policy_file import ProcurementRules, TrainingReplayed
from attest.verify.report import RuleResult


@register("training_replayed")
@dataclass(frozen=True)
class TrainingReplayedRule:
    config: TrainingReplayed

    @classmethod
    def from_rules(cls, rules: ProcurementRules) -> TrainingReplayedRule | None:
        return None if rules.training_replayed is None else cls(rules.training_replayed)

    def evaluate(self, ctx: _Context) -> RuleResult:
        """The command line's --checkpoints, --data and --parents-dir are searched after the policy's folders."""
        from attest.policy.training_replay import evidence, replay_lineage_training  # lazy: training loads torch
        from attest.training.replay import TrainingInputs

        rule = self.config
        o = ctx.options
        inputs = TrainingInputs(
            [ctx.path(p) for p in rule.checkpoints_dirs] + list(o.checkpoints_dirs),
            [ctx.path(p) for p in rule.data] + list(o.training_data),
            [ctx.path(p) for p in rule.parents_dirs] + list(o.parents_dirs),
        )
        ctx.say(f"training replay: {rule.segments} segment(s) per transcript")
        reports, why = replay_lineage_training(ctx.lineage, rule.segments, inputs, rule.scope, tuple(rule.kinds))
        passed, lines = evidence(reports, why, rule.segments)
        title = f"training transcripts checked, {rule.segments} segment(s) each replayed bit for bit"
        return RuleResult(rule="training_replayed", title=title, passed=passed, evidence=lines)

"""training_replayed: each training transcript's chain checked and `segments` segments re-executed (attest.training)."""

from __future__ import annotations

from attest.policy.rules.base import Rule, RuleContext, RuleResult
from attest.trust.policy_file import TrainingReplayed


class TrainingReplayedRule(Rule[TrainingReplayed], name="training_replayed"):
    def evaluate(self, ctx: RuleContext) -> RuleResult:
        """The command line's --checkpoints, --data and --parents-dir are searched after the policy's folders."""
        from attest.policy.training_replay import evidence, replay_lineage_training, training_inputs  # lazy: torch

        rule = self.config
        inputs = training_inputs(
            ctx.options,
            ctx.locator,
            [ctx.path(p) for p in rule.checkpoints_dirs],
            [ctx.path(p) for p in rule.data],
            [ctx.path(p) for p in rule.parents_dirs],
        )
        ctx.say(f"training replay: {rule.segments} segment(s) per transcript")
        reports, why = replay_lineage_training(ctx.lineage, rule.segments, inputs, rule.scope, tuple(rule.kinds))
        passed, lines = evidence(reports, why, rule.segments)
        title = f"training transcripts checked, {rule.segments} segment(s) each replayed bit for bit"
        return RuleResult(rule=self.name, title=title, passed=passed, evidence=lines)

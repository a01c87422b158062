"""training_replayed: each training transcript's chain checked and `segments` segments re-executed (attest.training)."""

from __future__ import annotations

from attest.policy.rules.base import Rule, RuleContext, RuleResult
from attest.trust.policy_file import TrainingReplayed


class TrainingReplayedRule(Rule[TrainingReplayed], name="training_replayed"):
    def evaluate(self, ctx: RuleContext) -> RuleResult:
        """The command line's --checkpoints, --data and --parents-dir are searched after the policy's folders."""
        from attest.policy.training_replay import evidence, replay_lineage_training  # lazy: training loads torch
        from attest.training.replay import TrainingInputs  # lazy: as above

        rule = self.config
        o = ctx.options
        inputs = TrainingInputs(
            [ctx.path(p) for p in rule.checkpoints_dirs] + list(o.checkpoints_dirs),
            [ctx.path(p) for p in rule.data] + list(o.training_data),
            [ctx.path(p) for p in rule.parents_dirs] + list(o.parents_dirs),
            locator=ctx.locator,
        )
        ctx.say(f"training replay: {rule.segments} segment(s) per transcript")
        reports, why = replay_lineage_training(ctx.lineage, rule.segments, inputs, rule.scope, tuple(rule.kinds))
        passed, lines = evidence(reports, why, rule.segments)
        title = f"training transcripts checked, {rule.segments} segment(s) each replayed bit for bit"
        return RuleResult(rule=self.name, title=title, passed=passed, evidence=lines)

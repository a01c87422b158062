"""replay_merges: every merge of the lineage recomputed from its trusted statement and reproduced."""

from __future__ import annotations

from pathlib import Path

from attest.executor import ClusterError
from attest.policy.rules.base import Rule, RuleContext, RuleResult, nodes
from attest.policy.rules.evidence import locate, uri_index
from attest.statements.models import ROLES
from attest.trust.policy_file import ReplayMerges


class ReplayMergesRule(Rule[ReplayMerges], name="replay_merges"):
    def evaluate(self, ctx: RuleContext) -> RuleResult:
        """Each merge is replayed by attest.replay.step (recipe from the trusted statement, parents bound by digest
        to local folders that re-hash to it); anything it cannot do is a failure with its reason."""
        rule = self.config
        result = self.result("every merge replayed and reproduced")
        merges = [n for n in nodes(ctx.root) if n.step == "merge"]
        if not merges:
            result.evidence.append("no merge step in the lineage")
            return result
        try:
            from attest.replay.step import replay_statement  # lazy: the replay wing loads torch
        except ImportError as exc:
            result.fail(f"replay unavailable ({exc}): fails closed")
            return result
        extra = [ctx.path(d) for d in rule.parents_dirs]
        index = uri_index(ctx)
        for n in merges:
            rec = ctx.trusted_step(n.digest)
            if rec is None:
                result.fail(f"{n.name}: no trusted statement to replay (fails closed)")
                continue
            name, uri = index.get(n.digest, (n.name, None))
            candidate = locate(ctx, n.digest, name, uri, extra)
            local: dict[str, Path] = {}
            for d in rec.statement.dependencies():
                digest = d.sha256
                if digest and d.role in ROLES:
                    found = locate(ctx, digest, d.name or digest[:16], d.uri, extra)
                    if found is not None:
                        local[digest] = found
            if candidate is None:
                result.fail(
                    f"{n.name}: replay unavailable: "
                    "no local folder re-hashes to the merged model's digest (fails closed)"
                )
                continue
            ctx.say(f"replay: recomputing merge {n.name} on {rule.device}")
            try:
                outcome = replay_statement(
                    candidate, rec.statement, local, device=rule.device, executor=ctx.options.executor
                )
            except ClusterError:  # the cluster failed, not the replay: no verdict at all (exit 2)
                raise
            except Exception as exc:  # a replay engine bug must not pass, nor hide the other rules' verdicts
                result.fail(f"{n.name}: replay unavailable ({type(exc).__name__}: {exc}): fails closed")
                continue
            if not outcome.ok:
                result.passed = False
                why = "replay unavailable: " if outcome.verdict == "cannot_replay" else ""
                shown = f"; mismatched: {', '.join(outcome.mismatched[:5])}" if outcome.mismatched else ""
                result.evidence.append(f"{n.name}: {outcome.verdict}: {why}{outcome.summary}{shown} (fails closed)")
            else:
                result.evidence.append(f"{n.name}: {outcome.verdict}: {outcome.summary}")
        return result

"""The whole `attest verify`: verify the lineage, then replay its merges (`--replay`), then the policy's rules.

Verification stops at the verified lineage (attest.verify); everything that judges it sits here, on top, so that
verify never depends on the layers that read its result.
"""

from __future__ import annotations

import os

from attest.policy.rules import evaluate_rules, replay_lineage
from attest.trust.trust_set import TrustSet
from attest.verify.engine import VerifyOptions, verify_lineage
from attest.verify.lineage import VerifiedLineage
from attest.verify.report import Problem, VerifyReport


def verify_with_policy(
    folder: str | os.PathLike[str], trust: TrustSet, options: VerifyOptions | None = None
) -> VerifiedLineage:
    """verify_lineage, then (options.replay) every merge recomputed, (options.replay_training) training segments
    re-executed, then (options.evaluate_policy) the policy's
    procurement rules when it has any; each can only turn a verified report into a failed one."""
    options = options or VerifyOptions()
    result = verify_lineage(folder, trust, options)
    report = result.report
    if options.replay and report.lineage is not None and report.lineage.verdict == "verified":
        outcome = replay_lineage(result, trust, options, list(options.parents_dirs), options.device)
        if outcome.passed:
            report.notes.extend(f"replay: {line}" for line in outcome.evidence)
        else:
            for line in outcome.evidence:
                report.problems.append(Problem(code="replay_mismatch", message=f"replay: {line}"))
            report.verified = False
    if options.replay_training is not None:
        from attest.policy.training_replay import replay_training_option  # lazy: attest.training loads torch

        passed, lines = replay_training_option(result, options.replay_training, options)
        if passed:
            report.notes.extend(f"training replay: {line}" for line in lines)
        else:
            report.problems += [Problem(code="training_mismatch", message=f"training replay: {x}") for x in lines]
            report.verified = False
    if options.evaluate_policy and trust.policy is not None and trust.policy.rules is not None:
        report.policy = evaluate_rules(result, trust, options)
        report.verified = report.verified and report.policy.passed
    return result


def verify_model(folder: str | os.PathLike[str], trust: TrustSet, options: VerifyOptions | None = None) -> VerifyReport:
    """Verify a model folder and its lineage under the trust set and its policy. Raises InputError for unreadable or
    malformed input."""
    return verify_with_policy(folder, trust, options).report

"""Training replay inside `attest verify`: which statements of a verified lineage to check, the `--replay-training`
option's notes and problems, and the `training_replayed` procurement rule's verdict. Results are kept on the
lineage so the option and the rule never replay the same segments twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from attest.training.replay import TrainingInputs, TrainingReplayReport, verify_training

if TYPE_CHECKING:
    from attest.lineage.locator import Locator
    from attest.verify.engine import VerifyOptions
    from attest.verify.lineage import StepRecord, VerifiedLineage

TRAINING_STEPS = ("finetune", "distill")


def _in_scope(
    lineage: VerifiedLineage, scope: str, kinds: tuple[str, ...] = TRAINING_STEPS
) -> tuple[list[StepRecord], list[str]]:
    """Trusted training statements to check, and why the scope cannot be met (fails closed)."""
    report = lineage.report
    own = lineage.steps.get(report.model_root)
    if scope == "model":
        if own is None or not own.trusted:
            return [], ["the model has no trusted statement"]
        if own.statement.step_kind() not in kinds:
            return [], [f"the model's own step is {own.statement.step_kind()}, not one of {', '.join(kinds)}"]
        return [own], []
    out, seen, todo = [], set(), [report.lineage] if report.lineage is not None else []
    while todo:  # the verified tree, each digest once
        node = todo.pop()
        if node.digest in seen:
            continue
        seen.add(node.digest)
        todo += node.parents
        rec = lineage.steps.get(node.digest)
        if rec is not None and rec.trusted and rec.statement.step_kind() in kinds:
            out.append(rec)
    return out, []


def replay_lineage_training(
    lineage: VerifiedLineage,
    segments: int,
    inputs: TrainingInputs,
    scope: str = "model",
    kinds: tuple[str, ...] = TRAINING_STEPS,
) -> tuple[list[TrainingReplayReport], list[str]]:
    """Check each in-scope statement's transcript, replaying `segments` segments of each."""
    records, why = _in_scope(lineage, scope, kinds)
    out = []
    for rec in records:
        key = (rec.payload_digest, segments, repr(inputs))
        cached = lineage.training.get(key)
        if cached is None:
            own = rec.digest == lineage.report.model_root
            weights = (
                lineage.report.weights_root
                if own
                else (rec.statement.subject[0].annotations or {}).get("weights_root", "")
            )
            folder = lineage.folder if own else None
            cached = verify_training(rec.statement, rec.payload_digest, weights, segments, inputs, folder)
            lineage.training[key] = cached
        out.append(cached)
    return out, why


def evidence(reports: list[TrainingReplayReport], why: list[str], segments: int) -> tuple[bool, list[str]]:
    lines = list(why)
    for r in reports:
        lines += r.summary()
        if r.passed and len(r.selected) < min(segments, r.segments_total):
            lines.append(f"{r.model}: fewer segments replayed than required")
    passed = not why and all(r.passed and len(r.selected) >= min(segments, r.segments_total) for r in reports)
    if not reports and not why:
        lines.append("no trusted training step of the covered kinds in the lineage")
    return passed, lines


def training_inputs(
    options: VerifyOptions,
    locator: Locator,
    checkpoints: Sequence[Path] = (),
    data: Sequence[Path] = (),
    parents: Sequence[Path] = (),
) -> TrainingInputs:
    """The folders and files to search (the given ones first, then the command line's), the verifier's nonce and
    the runner files it trusts."""
    return TrainingInputs(
        [*checkpoints, *options.checkpoints_dirs],
        [*data, *options.training_data],
        [*parents, *options.parents_dirs],
        options.device,
        nonce=options.training_nonce,
        runners=list(options.runners),
        locator=locator,
    )


def replay_training_option(lineage: VerifiedLineage, segments: int, options: VerifyOptions) -> tuple[bool, list[str]]:
    """`attest verify --replay-training N`: the model's own training statement."""
    reports, why = replay_lineage_training(lineage, segments, training_inputs(options, lineage.locator), "model")
    return evidence(reports, why, segments)

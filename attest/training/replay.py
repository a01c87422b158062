"""Verify a training transcript: the chain checks (chain.py), then re-execute N segments chosen from the signed
statement's digest (select.py) with the reference loop and compare each segment's end checkpoint bit for bit.

A replayed segment starts from its recorded start checkpoint (weights, optimizer moments, RNG state), runs the
recorded batches with the recorded hyperparameters, writes the result with the same writer as training (into a
temporary folder, never into a model or checkpoint folder) and compares checkpoint roots.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from attest.errors import AttestError
from attest.identity import diff_manifests, hash_model
from attest.lineage.locator import Locator
from attest.statements.builders import package_versions
from attest.statements.models import ProvenanceStatement
from attest.training.chain import Chain, check_files, check_statement
from attest.training.checkpoint import (
    load_model,
    load_state,
    make_optimizer,
    optimizer_settings,
    read_state_document,
    write_checkpoint,
)
from attest.training.loop import deterministic, train_step
from attest.training.select import challenge_seed, escape_probability, select_segments
from attest.training.transcript import (
    CAUSAL_OBJECTIVES,
    TrainingHyperparameters,
    TrainingTranscript,
    TranscriptError,
    checkpoint_dir_name,
    transcript_of,
)


class SegmentResult(BaseModel):
    model_config = ConfigDict(extra="forbid")
    index: int = Field(description="0-based segment number: from checkpoint `index` to checkpoint `index + 1`")
    start_step: int
    end_step: int
    verdict: Literal["reproduced", "mismatch", "cannot_replay"]
    detail: list[str] = Field(default_factory=list)


class TrainingReplayReport(BaseModel):
    """The outcome of checking one statement's training transcript (SPEC.md section 8.5)."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(description="The statement's subject name")
    subject: str = Field(description="sha256 model root the statement is about")
    statement: str = Field(description="sha256 of the signed statement payload (the challenge's input)")
    challenge: str = Field(description="hex seed the segments were chosen from")
    segments_total: int
    requested: int
    selected: list[int] = Field(default_factory=list)
    chain_problems: list[str] = Field(default_factory=list)
    segments: list[SegmentResult] = Field(default_factory=list)
    escape_probability: float = Field(
        description="P(a transcript with one fabricated segment passes the checks made): C(S-1, N) / C(S, N)"
    )
    notes: list[str] = Field(default_factory=list)
    passed: bool

    def summary(self) -> list[str]:
        """Evidence lines for reports and policy rules."""
        if self.chain_problems:
            return [f"{self.model}: transcript chain broken: {p}" for p in self.chain_problems]
        lines = [
            f"{self.model}: {len(self.selected)} of {self.segments_total} segments chosen from statement "
            f"{self.statement[:16]}… (challenge {self.challenge[:16]}…): {self.selected}"
        ]
        for s in self.segments:
            extra = f" ({'; '.join(s.detail)})" if s.detail else ""
            lines.append(f"{self.model}: segment {s.index} (steps {s.start_step + 1}-{s.end_step}): {s.verdict}{extra}")
        lines.append(
            f"{self.model}: a transcript with 1 fabricated segment of {self.segments_total} escapes these checks with "
            f"probability {self.escape_probability:.3g} (f of S: C(S-f, N) / C(S, N))"
        )
        return lines + [f"{self.model}: note: {n}" for n in self.notes]


@dataclass
class TrainingInputs:
    checkpoints_dirs: list[Path]
    data_files: list[Path]
    parents_dirs: list[Path] = field(default_factory=list)
    device: str = "cpu"
    nonce: bytes = b""
    locator: Locator = field(default_factory=Locator, repr=False, compare=False)
    """Finds the teacher (and hashes each folder once): the verified lineage's, when run inside `attest verify`."""


def _teacher_folder(statement: ProvenanceStatement, transcript: TrainingTranscript, inputs: TrainingInputs) -> Path:
    assert transcript.teacher is not None
    dep = statement.dependencies("teacher")[0]
    found = inputs.locator.find(transcript.teacher.model_root, dep.name, dep.uri, inputs.parents_dirs)
    if found is not None:
        return found
    raise LookupError(f"no teacher folder re-hashes to {transcript.teacher.model_root[:16]}… (give --parents-dir)")


def _mismatch_detail(replayed: Path, recorded: Path) -> list[str]:
    out = []
    for part in ("model", "state"):
        diff = diff_manifests(
            hash_model(recorded / part, "sha256", use_cache=False),
            hash_model(replayed / part, "sha256", use_cache=False),
        )
        names = [*diff.changed_tensors, *diff.changed_files, *diff.missing_tensors, *diff.added_tensors]
        if names:
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            out.append(f"{part}: {shown} differ")
    return out or ["the checkpoint roots differ"]


def replay_segment(
    index: int,
    transcript: TrainingTranscript,
    hyper: TrainingHyperparameters,
    chain: Chain,
    teacher: Any | None,
) -> SegmentResult:
    a, b = transcript.checkpoints[index], transcript.checkpoints[index + 1]
    result = SegmentResult(index=index, start_step=a.step, end_step=b.step, verdict="cannot_replay")
    assert chain.data is not None and chain.vocab_size is not None
    start, end = chain.folders[a.step], chain.folders[b.step]
    with deterministic(transcript.determinism):
        causal = hyper.objective in CAUSAL_OBJECTIVES
        model = load_model(start / "model", "float32", causal).train()
        names = [n for n, _ in model.named_parameters()]
        doc = read_state_document(start)
        optimizer = make_optimizer(model, hyper)
        if doc.get("parameters") != names or doc.get("param_groups") != optimizer_settings(optimizer):
            result.verdict = "mismatch"
            result.detail.append("the start checkpoint's optimizer settings are not the recorded hyperparameters")
            return result
        load_state(start, optimizer, names)
        for batch in transcript.batches[a.step : b.step]:
            samples = [ids for _, ids in chain.data.batch(batch.indices, chain.vocab_size)]
            train_step(model, optimizer, samples, hyper, teacher)
        with tempfile.TemporaryDirectory(prefix="attest-replay-") as tmp:
            target = Path(tmp) / checkpoint_dir_name(b.step)
            got = write_checkpoint(target, model, optimizer, names, b.step)
            if (got.weights_root, got.state_root) == (b.weights_root, b.state_root):
                result.verdict = "reproduced"
                if got.model_root != b.model_root:
                    result.detail.append("weights and state identical; the config files differ")
            else:
                result.verdict = "mismatch"
                result.detail = _mismatch_detail(target, end)
    return result


def verify_training(
    statement: ProvenanceStatement,
    payload_digest: str,
    weights_root: str,
    segments: int,
    inputs: TrainingInputs,
    model: Path | None = None,
) -> TrainingReplayReport:
    """Check one statement's transcript against the files and replay `segments` segments (all when more). `model` is
    the verified model folder (its config.json and, for text data, its tokenizer.json are checked and used)."""
    tokenizer = model / "tokenizer.json" if model is not None else None
    subject = statement.subject[0]
    seed = challenge_seed(payload_digest, inputs.nonce)
    report = TrainingReplayReport(
        model=subject.name,
        subject=subject.digest.get("sha256", ""),
        statement=payload_digest,
        challenge=seed.hex(),
        segments_total=0,
        requested=segments,
        escape_probability=1.0,
        passed=False,
    )
    try:
        transcript, hyper = transcript_of(statement)
    except TranscriptError as exc:
        report.chain_problems.append(str(exc))
        return report
    total = len(transcript.checkpoints) - 1
    report.segments_total = total
    report.chain_problems += check_statement(statement, transcript, hyper, weights_root)
    if inputs.device != "cpu":
        report.chain_problems.append(
            f"replay on {inputs.device} is not supported: the transcript's determinism settings are CPU-only"
        )
    if report.chain_problems:
        return report
    chain = check_files(transcript, inputs.checkpoints_dirs, inputs.data_files, subject.name, tokenizer, model)
    report.chain_problems += chain.problems
    if report.chain_problems:
        return report
    here = package_versions()
    for pkg in ("torch", "transformers"):
        if transcript.versions.get(pkg) != here.get(pkg):
            report.notes.append(
                f"recorded with {pkg} {transcript.versions.get(pkg)}, replayed with {here.get(pkg)}: bit-exact "
                "replay is promised only on the same software"
            )
    report.selected = select_segments(seed, total, segments)
    report.escape_probability = escape_probability(total, 1, len(report.selected))
    teacher = None
    try:
        if transcript.teacher is not None:
            folder = _teacher_folder(statement, transcript, inputs)
            with deterministic(transcript.determinism):
                teacher = load_model(folder, "float32", hyper.objective in CAUSAL_OBJECTIVES).eval()
    except (LookupError, AttestError) as exc:
        report.chain_problems.append(f"teacher: {exc}")
        return report
    for j in report.selected:
        try:
            report.segments.append(replay_segment(j, transcript, hyper, chain, teacher))
        except Exception as exc:  # a hostile checkpoint or an engine bug must not pass
            report.segments.append(
                SegmentResult(
                    index=j,
                    start_step=transcript.checkpoints[j].step,
                    end_step=transcript.checkpoints[j + 1].step,
                    verdict="cannot_replay",
                    detail=[f"{type(exc).__name__}: {exc}"],
                )
            )
    report.passed = bool(report.segments) and all(s.verdict == "reproduced" for s in report.segments)
    return report

"""Verify a training transcript: the chain checks (chain.py), then re-execute N segments chosen from the signed
statement's digest (select.py) with the reference loop and compare each segment's end checkpoint bit for bit.

A replayed segment starts from its recorded start checkpoint (weights, optimizer moments, RNG state), runs the
recorded batches with the recorded hyperparameters, writes the result with the same writer as training (into a
temporary folder, never into a model or checkpoint folder) and compares checkpoint roots.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
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
from attest.training.runner import RunnerBatch, RunnerRequest, pinned_copy, run_runner
from attest.training.select import challenge_seed, escape_probability, select_segments
from attest.training.transcript import (
    CAUSAL_OBJECTIVES,
    EXTERNAL_RUNNER,
    AnyHyperparameters,
    CheckpointRecord,
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
    nonce: str = Field(default="", description="hex verifier nonce mixed into the challenge (empty: none)")
    runner: str = Field(default="", description="The runner that replayed: the reference URI or `sha256:<hex>`")
    segments_total: int
    requested: int
    selected: list[int] = Field(default_factory=list)
    chain_problems: list[str] = Field(default_factory=list)
    cannot_replay: list[str] = Field(
        default_factory=list, description="Why no segment could be replayed (a missing teacher, a refused runner)"
    )
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
        nonce = f" and verifier nonce {self.nonce[:16]}" if self.nonce else " (no verifier nonce)"
        lines = [
            f"{self.model}: {len(self.selected)} of {self.segments_total} segments chosen from statement "
            f"{self.statement[:16]}…{nonce} (challenge {self.challenge[:16]}…): {self.selected}"
        ]
        lines += [f"{self.model}: cannot replay: {x}" for x in self.cannot_replay]
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
    runners: list[Path] = field(default_factory=list)


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


def _compare(result: SegmentResult, got: CheckpointRecord, want: CheckpointRecord, replayed: Path, end: Path) -> None:
    if (got.weights_root, got.state_root) == (want.weights_root, want.state_root):
        result.verdict = "reproduced"
        if got.model_root != want.model_root:
            result.detail.append("weights and state identical; the config files differ")
    else:
        result.verdict = "mismatch"
        result.detail = _mismatch_detail(replayed, end)


def replay_external(
    index: int,
    transcript: TrainingTranscript,
    hyper: AnyHyperparameters,
    chain: Chain,
    runner: Path,
    teacher: Path | None,
) -> SegmentResult:
    """Hand segment `index` to the pinned runner (runner.py) and compare the checkpoint it writes."""
    a, b = transcript.checkpoints[index], transcript.checkpoints[index + 1]
    result = SegmentResult(index=index, start_step=a.step, end_step=b.step, verdict="cannot_replay")
    assert chain.data is not None and chain.vocab_size is not None
    with tempfile.TemporaryDirectory(prefix="attest-runner-") as tmp:
        output = Path(tmp) / checkpoint_dir_name(b.step)
        request = RunnerRequest(
            segment=index,
            start_step=a.step,
            end_step=b.step,
            start_checkpoint=str(chain.folders[a.step].resolve()),
            output=str(output),
            teacher=str(teacher.resolve()) if teacher is not None else None,
            hyperparameters=hyper.model_dump(mode="json", exclude_none=True),
            determinism=transcript.determinism,
            dataset=transcript.dataset,
            batches=[
                RunnerBatch(
                    step=c.step,
                    indices=c.indices,
                    input_ids=[ids for _, ids in chain.data.batch(c.indices, chain.vocab_size)],
                )
                for c in transcript.batches[a.step : b.step]
            ],
        )
        got = run_runner(runner, request, Path(tmp))
        _compare(result, got, b, output, chain.folders[b.step])
    return result


def replay_segment(
    index: int,
    transcript: TrainingTranscript,
    hyper: TrainingHyperparameters,
    chain: Chain,
    teacher: Any | None,
) -> SegmentResult:
    """Re-execute segment `index` with the reference step (loop.py) and compare its end checkpoint."""
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
            _compare(result, got, b, target, end)
    return result


def _segment_replayer(
    statement: ProvenanceStatement,
    transcript: TrainingTranscript,
    hyper: AnyHyperparameters,
    chain: Chain,
    inputs: TrainingInputs,
    work: Path,
) -> Callable[[int], SegmentResult]:
    """segment index -> its result, with the teacher found and (external runner) the runner pinned into `work`;
    LookupError / InputError when either is missing or refused."""
    teacher = None
    if transcript.teacher is not None:
        try:
            teacher = _teacher_folder(statement, transcript, inputs)
        except LookupError as exc:
            raise LookupError(f"teacher: {exc}") from None
    if transcript.runner == EXTERNAL_RUNNER:
        assert transcript.runner_sha256 is not None
        runner = pinned_copy(inputs.runners, transcript.runner_sha256, work)
        return lambda j: replay_external(j, transcript, hyper, chain, runner, teacher)
    assert isinstance(hyper, TrainingHyperparameters)
    model = None
    if teacher is not None:
        with deterministic(transcript.determinism):
            model = load_model(teacher, "float32", hyper.objective in CAUSAL_OBJECTIVES).eval()
    return lambda j: replay_segment(j, transcript, hyper, chain, model)


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
        nonce=inputs.nonce.hex(),
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
    tmp = tempfile.TemporaryDirectory(prefix="attest-pinned-runner-")
    try:
        replay = _segment_replayer(statement, transcript, hyper, chain, inputs, Path(tmp.name))
    except (LookupError, AttestError) as exc:
        tmp.cleanup()
        report.cannot_replay.append(str(exc))
        return report
    report.runner = transcript.runner if transcript.runner_sha256 is None else f"sha256:{transcript.runner_sha256}"
    with tmp:
        for j in report.selected:
            try:
                report.segments.append(replay(j))
            except Exception as exc:  # a hostile checkpoint, a failing runner or an engine bug must not pass
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

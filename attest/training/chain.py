"""The transcript's chain (SPEC.md section 8.4): the statement agrees with its transcript, the first checkpoint is the
recorded start model, the last is the model, every checkpoint folder re-hashes to its recorded root, and every batch
commitment recomputes from the data file. Everything here is hashing; nothing trains.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from attest.errors import AttestError
from attest.statements.models import ProvenanceStatement
from attest.training.checkpoint import checkpoint_record
from attest.training.data import DataFile, batch_root, checkpoint_root
from attest.training.transcript import (
    DISTILL_OBJECTIVES,
    REFERENCE_RUNNER,
    RUNNER_ROLE,
    AnyHyperparameters,
    CheckpointRecord,
    ModelPin,
    TrainingHyperparameters,
    TrainingTranscript,
    checkpoint_byproduct,
    checkpoint_dir_name,
    checkpoint_steps,
)

CONFIG = "config.json"
MAX_CONFIG_BYTES = 16 * 1024**2
OBJECTIVES_OF_KIND = {"finetune": ("causal_lm",), "distill": DISTILL_OBJECTIVES}
START_ROLE = {"finetune": "base", "distill": "student-init"}


@dataclass
class Chain:
    """What the chain checks established: problems (empty = sound), the checkpoint folders and the data file."""

    problems: list[str] = field(default_factory=list)
    folders: dict[int, Path] = field(default_factory=dict)
    data: DataFile | None = None
    vocab_size: int | None = None


def _pin_matches(dep_digest: str | None, dep_weights: object, pin: ModelPin) -> bool:
    return dep_digest == pin.model_root and dep_weights == pin.weights_root


def _check_kind(statement: ProvenanceStatement, transcript: TrainingTranscript, hyper: AnyHyperparameters) -> list[str]:
    """The step kind fits the objective (reference) or the teacher (external); an external runner is a dependency."""
    kind = statement.step_kind()
    if kind not in OBJECTIVES_OF_KIND:
        return [f"a {kind} statement cannot carry a training transcript"]
    if isinstance(hyper, TrainingHyperparameters):
        ok = hyper.objective in OBJECTIVES_OF_KIND[kind]
        reference_only = transcript.determinism.deterministic_algorithms and (
            transcript.determinism.attn_implementation == "eager"
        )
        if ok and not reference_only:
            return ["the reference runner replays only deterministic, eager-attention transcripts"]
        return [] if ok else [f"a {kind} statement cannot carry a {hyper.objective} transcript"]
    out = []
    if (kind == "distill") != (transcript.teacher is not None):
        out.append("an external-runner transcript names a teacher exactly when the step is a distillation")
    runners = statement.dependencies(RUNNER_ROLE)
    if len(runners) != 1 or (runners[0].digest or {}).get("sha256") != transcript.runner_sha256:
        out.append("the transcript's runner is not the statement's one `runner` dependency (by sha256)")
    return out


def check_statement(
    statement: ProvenanceStatement, transcript: TrainingTranscript, hyper: AnyHyperparameters, weights_root: str
) -> list[str]:
    """The statement's own fields against its transcript, and the transcript's internal consistency."""
    out = _check_kind(statement, transcript, hyper)
    if out:
        return out
    kind = statement.step_kind() or ""
    for role, pin in ((START_ROLE[kind], transcript.start), ("teacher", transcript.teacher)):
        deps = statement.dependencies(role)
        if pin is None:
            if deps:
                out.append("the statement names a teacher the transcript does not")
            continue
        if len(deps) != 1 or not _pin_matches(
            (deps[0].digest or {}).get("sha256"), (deps[0].annotations or {}).get("weights_root"), pin
        ):
            out.append(f"the transcript's {role} model is not the statement's {role} dependency")
    if (kind == "distill") != (transcript.teacher is not None):
        out.append("a distillation transcript needs a teacher (and only distillation has one)")
    if not any((d.digest or {}).get("sha256") == transcript.dataset.sha256 for d in statement.dependencies("dataset")):
        out.append("the transcript's data file is not a dataset dependency of the statement")
    want = checkpoint_steps(hyper.steps, hyper.checkpoint_every)
    got = [c.step for c in transcript.checkpoints]
    if got != want:
        out.append(
            f"checkpoint steps {got[:8]} are not the recorded schedule {want[:8]} (every {hyper.checkpoint_every})"
        )
    if [b.step for b in transcript.batches] != list(range(1, hyper.steps + 1)):
        out.append(f"the transcript does not commit to exactly one batch for each of the {hyper.steps} steps")
    exact = transcript.runner == REFERENCE_RUNNER  # a user's loop may end an epoch with a shorter batch
    for b in transcript.batches:
        size_ok = len(b.indices) == hyper.batch_size if exact else 1 <= len(b.indices) <= hyper.batch_size
        if not size_ok or not all(0 <= i < transcript.dataset.records for i in b.indices):
            size = f"{hyper.batch_size}" if exact else f"1 to {hyper.batch_size}"
            out.append(f"step {b.step}: the batch is not {size} record indices of the data file")
            break
    if transcript.checkpoints[0].weights_root != transcript.start.weights_root:
        out.append("the first checkpoint's weights are not the recorded start model's")
    subject_weights = (statement.subject[0].annotations or {}).get("weights_root")
    if transcript.checkpoints[-1].weights_root != weights_root or subject_weights != weights_root:
        out.append("the model's weights are not the last checkpoint's: the transcript did not produce this model")
    for c in transcript.checkpoints:
        if c.root != checkpoint_root(c.step, c.model_root, c.weights_root, c.state_root):
            out.append(f"checkpoint {c.step}: its root does not recompute from its fields")
    recorded = [
        b
        for b in (statement.predicate.runDetails.byproducts or [])
        if (b.annotations or {}).get("role") == "checkpoint"
    ]
    if recorded != [checkpoint_byproduct(c) for c in transcript.checkpoints]:
        out.append("the statement's checkpoint byproducts differ from the transcript's checkpoints")
    return out


def locate_checkpoint(rec: CheckpointRecord, dirs: list[Path], model_name: str) -> tuple[Path | None, str | None]:
    """The first folder DIR/step-N or DIR/<model name>/step-N that re-hashes to the record, else why not."""
    why = None
    for d in dirs:
        for folder in (d / checkpoint_dir_name(rec.step), d / model_name / checkpoint_dir_name(rec.step)):
            if not folder.is_dir():
                continue
            try:
                got = checkpoint_record(folder, rec.step)
            except AttestError as exc:
                why = f"{folder}: {exc}"
                continue
            if got == rec:
                return folder, None
            parts = [p for p in ("weights_root", "state_root", "model_root") if getattr(got, p) != getattr(rec, p)]
            why = f"{folder} does not re-hash to the recorded checkpoint ({', '.join(parts)} differ)"
    return None, why or f"no folder {checkpoint_dir_name(rec.step)} under {', '.join(map(str, dirs)) or '(none given)'}"


def _vocab_size(folder: Path) -> int | None:
    try:
        value = json.loads((folder / "model" / "config.json").read_text(encoding="utf-8")).get("vocab_size")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and value > 0 else None


def _config_bytes(folder: Path) -> bytes | None:
    try:
        with (folder / CONFIG).open("rb") as fh:
            return fh.read(MAX_CONFIG_BYTES + 1)
    except OSError:
        return None


def check_configs(transcript: TrainingTranscript, folders: dict[int, Path], model: Path | None) -> list[str]:
    """Every checkpoint after the first, and the model itself, carries the config the last checkpoint was saved
    with: a segment is replayed with its start checkpoint's config, so none may change between segments, and the
    published config must be the one the weights were trained under."""
    last = folders.get(transcript.checkpoints[-1].step)
    want = _config_bytes(last / "model") if last is not None else None
    out = []
    for rec in transcript.checkpoints[1:-1]:
        folder = folders.get(rec.step)
        if folder is not None and _config_bytes(folder / "model") != want:
            out.append(f"checkpoint {rec.step}: its config.json differs from the last checkpoint's")
    if model is not None and _config_bytes(model) != want:
        out.append("the model's config.json is not the one its last checkpoint was trained under")
    return out


def check_files(
    transcript: TrainingTranscript,
    checkpoints_dirs: list[Path],
    data_files: list[Path],
    model_name: str,
    tokenizer: Path | None,
    model: Path | None = None,
) -> Chain:
    """Re-hash every checkpoint folder, compare configs, find the data file by its sha256, recompute every batch
    commitment. `model` is the verified model folder (None for an ancestor that is not at hand)."""
    chain = Chain()
    for rec in transcript.checkpoints:
        folder, why = locate_checkpoint(rec, checkpoints_dirs, model_name)
        if folder is None:
            chain.problems.append(f"checkpoint {rec.step}: {why}")
        else:
            chain.folders[rec.step] = folder
    if chain.problems:
        return chain
    chain.problems += check_configs(transcript, chain.folders, model)
    pin = transcript.dataset
    for path in data_files:
        try:
            data = DataFile(path, tokenizer if pin.field == "text" else None)
        except AttestError as exc:
            chain.problems.append(f"data file {exc}")
            continue
        if data.sha256 == pin.sha256:
            chain.data = data
            break
    if chain.data is None:
        chain.problems.append(f"no data file given has the recorded sha256 {pin.sha256[:16]}…")
        return chain
    if chain.data.tokenizer_sha256 != pin.tokenizer_sha256:
        chain.problems.append("the tokenizer is not the recorded one")
        return chain
    first = chain.folders.get(0)
    chain.vocab_size = _vocab_size(first) if first is not None else None
    if chain.vocab_size is None:
        chain.problems.append("no vocabulary size: the first checkpoint's config.json is missing or has none")
        return chain
    for b in transcript.batches:
        try:
            got = batch_root(chain.data.batch(b.indices, chain.vocab_size))
        except AttestError as exc:
            chain.problems.append(f"step {b.step}: {exc}")
            break
        if got != b.root:
            chain.problems.append(f"step {b.step}: the batch commitment does not recompute from the data file")
    return chain

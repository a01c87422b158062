"""`attest train sft|distill`: run a reference loop, write checkpoints every K steps and the output model, and sign
a finetune/distill statement that carries the training transcript (SPEC.md section 8).

The key is loaded and every input hashed before the first step, so a bad key or input costs no training run. The
output folder and each checkpoint are written to a temporary sibling and renamed into place.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from attest.atomic import atomic_folder
from attest.errors import InputError
from attest.identity import hash_model
from attest.record.recorder import RecordResult, Signing, internal_parameters, record_step
from attest.record.refs import ModelRef, resolve_model
from attest.statements.builders import dataset_dependency, now_rfc3339, package_versions
from attest.statements.models import StepKind
from attest.training.checkpoint import load_model, make_optimizer, write_checkpoint
from attest.training.data import DataFile, batch_root
from attest.training.loop import data_order, deterministic, train_step
from attest.training.transcript import (
    CAUSAL_OBJECTIVES,
    DISTILL_OBJECTIVES,
    BatchCommitment,
    CheckpointRecord,
    DatasetPin,
    Determinism,
    ModelPin,
    Objective,
    TrainingHyperparameters,
    TrainingTranscript,
    checkpoint_byproduct,
    checkpoint_dir_name,
    checkpoint_steps,
)

CARD = "README.md"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json")
TRANSCRIPT_VERSIONS = ("python", "torch", "transformers", "safetensors", "tokenizers", "attest")


@dataclass(frozen=True)
class TrainJob:
    objective: Objective
    model: Path
    data: Path
    output: Path
    checkpoints: Path
    steps: int
    batch_size: int
    learning_rate: float
    seed: int
    checkpoint_every: int
    teacher: Path | None = None
    temperature: float | None = None
    weight_decay: float = 0.0
    threads: int = 1


@dataclass(frozen=True)
class TrainResult:
    record: RecordResult
    transcript: TrainingTranscript
    losses: list[float]


def _empty_or_absent(path: Path, what: str, allow: tuple[str, ...] = ()) -> None:
    if path.exists() and (not path.is_dir() or any(p.name not in allow for p in path.iterdir())):
        more = f" or hold only {', '.join(allow)}" if allow else ""
        raise InputError(path, f"the {what} must not exist yet (or be an empty folder{more})")


def _pin(ref: ModelRef) -> ModelPin:
    return ModelPin(model_root=ref.model_root, weights_root=ref.weights_root)


def _write_output(output: Path, model: object, start: Path) -> None:
    with atomic_folder(output) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)  # type: ignore[attr-defined]
        if (output / CARD).is_file():  # a card written beforehand (`attest card OUT --step ...`) is signed with it
            shutil.copyfile(output / CARD, tmp / CARD)
            (output / CARD).unlink()
        for name in TOKENIZER_FILES:
            if (start / name).is_file():
                shutil.copyfile(start / name, tmp / name)


def train(job: TrainJob, signing: Signing) -> TrainResult:
    """Run the job (see module docstring); returns the signed record and the transcript."""
    signing = signing.prepared()
    started = now_rfc3339()
    _empty_or_absent(job.output, "output folder", (CARD,))
    _empty_or_absent(job.checkpoints, "checkpoints folder")
    if (job.objective in DISTILL_OBJECTIVES) != (job.teacher is not None):
        raise InputError(None, "distill needs --teacher (and sft takes none)")
    causal = job.objective in CAUSAL_OBJECTIVES
    hyper = TrainingHyperparameters(
        objective=job.objective,
        learning_rate=job.learning_rate,
        steps=job.steps,
        batch_size=job.batch_size,
        checkpoint_every=job.checkpoint_every,
        seed=job.seed,
        weight_decay=job.weight_decay,
        temperature=job.temperature if job.objective == "distill_kl" else None,
    )
    start_ref = resolve_model(job.model)
    teacher_ref = resolve_model(job.teacher) if job.teacher is not None else None
    tokenizer = job.model / "tokenizer.json"
    data = DataFile(job.data, tokenizer if tokenizer.is_file() else None)
    det = Determinism(num_threads=job.threads)
    checkpoints: list[CheckpointRecord] = []
    batches: list[BatchCommitment] = []
    losses: list[float] = []
    with deterministic(det):
        model = load_model(job.model, "auto", causal)
        vocab = int(model.config.vocab_size)
        for i in range(len(data)):  # every record is checked before the first step, not when its batch comes
            data.input_ids(i, vocab)
        teacher = None
        if teacher_ref is not None and job.teacher is not None:
            teacher = load_model(job.teacher, torch.float32, causal).eval()
            if int(teacher.config.vocab_size) != vocab:
                raise InputError(job.teacher, f"teacher vocabulary {teacher.config.vocab_size} != student's {vocab}")
        names = [n for n, _ in model.named_parameters()]
        torch.manual_seed(job.seed)
        opt0 = make_optimizer(model, hyper)
        first = write_checkpoint(job.checkpoints / checkpoint_dir_name(0), model, opt0, names, 0, job.model)
        if first.weights_root != start_ref.weights_root:
            raise InputError(job.model, "the start model changed while it was read")
        checkpoints.append(first)
        model.to(torch.float32).train()
        optimizer = make_optimizer(model, hyper)
        ckpt_steps = set(checkpoint_steps(job.steps, job.checkpoint_every))
        for step, indices in enumerate(data_order(len(data), job.steps, job.batch_size, job.seed), start=1):
            samples = data.batch(indices, vocab)
            batches.append(BatchCommitment(step=step, indices=indices, root=batch_root(samples)))
            losses.append(train_step(model, optimizer, [ids for _, ids in samples], hyper, teacher))
            if step in ckpt_steps:
                target = job.checkpoints / checkpoint_dir_name(step)
                checkpoints.append(write_checkpoint(target, model, optimizer, names, step))
        _write_output(job.output, model, job.model)
    final = hash_model(job.output, "sha256", use_cache=False)
    if final.weights_root != checkpoints[-1].weights_root:
        raise RuntimeError("the output's weights differ from the last checkpoint's")
    dataset = dataset_dependency(job.data)
    if (dataset.digest or {}).get("sha256") != data.sha256:
        raise InputError(job.data, "the data file changed during training")
    versions = package_versions()
    transcript = TrainingTranscript(
        start=_pin(start_ref),
        teacher=_pin(teacher_ref) if teacher_ref is not None else None,
        dataset=DatasetPin(
            sha256=data.sha256,
            size=data.size,
            records=len(data),
            field=data.field,
            tokenizer_sha256=data.tokenizer_sha256,
        ),
        determinism=det,
        versions={k: versions[k] for k in TRANSCRIPT_VERSIONS if k in versions},
        checkpoints=checkpoints,
        batches=batches,
    )
    kind: StepKind = "distill" if job.objective in DISTILL_OBJECTIVES else "finetune"
    inputs = [("student-init" if kind == "distill" else "base", start_ref)]
    if teacher_ref is not None:
        inputs.append(("teacher", teacher_ref))
    record = record_step(
        kind,
        job.output,
        inputs,
        signing,
        external={
            "hyperparameters": hyper.model_dump(mode="json", exclude_none=True),
            "training_transcript": transcript.model_dump(mode="json", exclude_none=True),
        },
        internal=internal_parameters(job.seed, "cpu", "float32", {"determinism": det.model_dump(mode="json")}),
        extra_dependencies=[dataset],
        byproducts=[checkpoint_byproduct(c) for c in checkpoints],
        started_on=started,
    )
    return TrainResult(record, transcript, losses)

"""Recording a training transcript from a user's own loop (SPEC.md section 8.7): checkpoint 0 when training begins,
a commitment to the exact samples of every optimizer step, a checkpoint (weights, optimizer and RNG state, never a
pickle) every K steps and at the end. Used by `attest.record.recording(..., data=...)` and `AttestCallback`; the
transcript names the external runner (`external/v1`) whose file digest the statement pins, so a verifier can replay
segments with that code (attest.training.runner).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from attest.errors import InputError
from attest.statements.builders import package_versions
from attest.training.checkpoint import optimizer_names, write_checkpoint
from attest.training.data import DataFile, batch_root
from attest.training.transcript import (
    EXTERNAL_RUNNER,
    BatchCommitment,
    CheckpointRecord,
    DatasetPin,
    Determinism,
    LoopHyperparameters,
    ModelPin,
    TrainingTranscript,
    checkpoint_dir_name,
)

TRANSCRIPT_VERSIONS = ("python", "torch", "transformers", "safetensors", "tokenizers", "attest")


def observed_determinism(model: Any) -> Determinism:
    """The settings the loop runs under, read from torch and the model; refuses what a CPU replay cannot match."""
    params = list(model.parameters())
    if any(p.device.type != "cpu" for p in params):
        raise InputError(None, "a training transcript is recorded from a CPU run only (no GPU tolerance is measured)")
    if any(p.is_floating_point() and p.dtype != torch.float32 for p in params):
        raise InputError(
            None, "a training transcript is recorded from float32 training only (load the model in float32)"
        )
    attn = getattr(getattr(model, "config", None), "_attn_implementation", None) or "eager"
    return Determinism(
        num_threads=torch.get_num_threads(),
        deterministic_algorithms=torch.are_deterministic_algorithms_enabled(),
        attn_implementation=str(attn),
    )


class TranscriptRecorder:
    """The transcript of one run: call begin() before the first step, add each step's samples with batch() (more
    than once for micro-batches), end_step() after the optimizer step, and finish() after the last."""

    def __init__(
        self,
        data: Path,
        checkpoints: Path,
        checkpoint_every: int,
        start: tuple[Path, ModelPin],
        runner_sha256: str,
        teacher: ModelPin | None = None,
        tokenizer: Path | None = None,
    ) -> None:
        if checkpoint_every < 1:
            raise InputError(None, "checkpoint_every must be at least 1")
        if checkpoints.exists() and (not checkpoints.is_dir() or any(checkpoints.iterdir())):
            raise InputError(checkpoints, "the checkpoints folder must not exist yet (or be empty)")
        self.data = DataFile(data, tokenizer if tokenizer is not None and tokenizer.is_file() else None)
        self.checkpoints_dir, self.every = checkpoints, checkpoint_every
        self.start_folder, self.start = start
        self.teacher, self.runner_sha256 = teacher, runner_sha256
        self.checkpoints: list[CheckpointRecord] = []
        self.batches: list[BatchCommitment] = []
        self.pending: list[int] = []
        self.step = 0
        self.names: list[str] = []
        self.vocab_size = 0
        self.determinism: Determinism | None = None

    def begin(self, model: Any, optimizer: torch.optim.Optimizer) -> None:
        """Checkpoint 0: the start model's files byte for byte, the fresh optimizer state, the RNG state now."""
        if self.checkpoints:
            raise RuntimeError("TranscriptRecorder.begin() called twice")
        self.determinism = observed_determinism(model)
        self.vocab_size = int(model.config.vocab_size)
        self.names = optimizer_names(model, optimizer)
        self._write(model, optimizer, copy_from=self.start_folder)
        if self.checkpoints[0].weights_root != self.start.weights_root:
            raise InputError(self.start_folder, "the start model changed since it was hashed")

    def batch(self, indices: list[int]) -> list[list[int]]:
        """Commit samples (0-based data-file line numbers, in order) to the current step; returns their token ids."""
        if self.determinism is None:
            raise RuntimeError("TranscriptRecorder.batch() before begin()")
        ids = [self.data.input_ids(int(i), self.vocab_size) for i in indices]
        self.pending += [int(i) for i in indices]
        return ids

    def end_step(self, model: Any, optimizer: torch.optim.Optimizer, write: bool = True) -> bool:
        """Close the step's batch; with `write`, write the checkpoint now when one is due. Returns whether one is."""
        if not self.pending:
            raise InputError(None, f"step {self.step + 1} consumed no committed samples (call batch() first)")
        samples = [(i, self.data.input_ids(i, self.vocab_size)) for i in self.pending]
        self.step += 1
        self.batches.append(BatchCommitment(step=self.step, indices=self.pending, root=batch_root(samples)))
        self.pending = []
        due = self.step % self.every == 0
        if due and write:
            self.write(model, optimizer)
        return due

    def write(self, model: Any, optimizer: torch.optim.Optimizer) -> None:
        """The checkpoint at the current step (the RNG state is taken now), unless it is written already."""
        if self.checkpoints and self.checkpoints[-1].step == self.step:
            return
        if optimizer_names(model, optimizer) != self.names:
            raise InputError(None, "the optimizer's parameters changed during training")
        self._write(model, optimizer)

    def _write(self, model: Any, optimizer: torch.optim.Optimizer, copy_from: Path | None = None) -> None:
        target = self.checkpoints_dir / checkpoint_dir_name(self.step)
        self.checkpoints.append(write_checkpoint(target, model, optimizer, self.names, self.step, copy_from))

    def finish(
        self, model: Any, optimizer: torch.optim.Optimizer, params: dict[str, Any]
    ) -> tuple[TrainingTranscript, dict[str, Any]]:
        """The last checkpoint (at the last step) and the transcript with its hyperparameters (`params` plus the
        schedule attest checks: steps, batch_size, checkpoint_every)."""
        if self.pending:
            raise InputError(None, "samples were committed to a step that never ended (call end_step())")
        if self.step == 0 or self.determinism is None:
            raise InputError(None, "no training step was recorded")
        self.write(model, optimizer)
        schedule = {
            "steps": self.step,
            "batch_size": max(len(b.indices) for b in self.batches),
            "checkpoint_every": self.every,
        }
        clash = [k for k, v in schedule.items() if k in params and params[k] != v]
        if clash:
            raise InputError(None, f"hyperparameter {clash[0]!r} is {params[clash[0]]!r}, but the run had {schedule}")
        hyper = LoopHyperparameters.model_validate({**params, **schedule}).model_dump(mode="json", exclude_none=True)
        versions = package_versions()
        d = self.data
        transcript = TrainingTranscript(
            runner=EXTERNAL_RUNNER,
            runner_sha256=self.runner_sha256,
            start=self.start,
            teacher=self.teacher,
            dataset=DatasetPin(
                sha256=d.sha256, size=d.size, records=len(d), field=d.field, tokenizer_sha256=d.tokenizer_sha256
            ),
            determinism=self.determinism,
            versions={k: versions[k] for k in TRANSCRIPT_VERSIONS if k in versions},
            checkpoints=self.checkpoints,
            batches=self.batches,
        )
        return transcript, hyper

"""The training transcript (SPEC.md section 8): what a finetune/distill statement commits to so that a verifier can
re-execute sampled segments of the run and compare bit for bit.

It rides in the SLSA predicate's `externalParameters.training_transcript` beside `externalParameters.hyperparameters`
(validated as TrainingHyperparameters when a transcript is present); the checkpoints are repeated as `byproducts`
for SLSA readers. The buildType stays `.../finetune/v1` / `.../distill/v1`: the field is additive, the meaning of the
existing fields is unchanged.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from attest.statements.models import ProvenanceStatement, ResourceDescriptor

TRANSCRIPT_FORMAT: Final = "attest-training-transcript/v1"
CHECKPOINT_FORMAT = "attest-training-checkpoint/v1"
STATE_FORMAT = "attest-training-state/v1"
REFERENCE_RUNNER: Final = "https://attest.dev/runners/reference/v1"
EXTERNAL_RUNNER: Final = "https://attest.dev/runners/external/v1"
RUNNER_ROLE = "runner"
MAX_STEPS = 1_000_000
MAX_BATCH = 65_536

Hex = str
Objective = Literal["causal_lm", "distill_kl", "distill_hidden_mse"]
CAUSAL_OBJECTIVES = ("causal_lm", "distill_kl")
DISTILL_OBJECTIVES = ("distill_kl", "distill_hidden_mse")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainingHyperparameters(_Strict):
    """externalParameters.hyperparameters of a step with a transcript: everything the reference loop reads."""

    objective: Objective
    learning_rate: float = Field(gt=0)
    steps: int = Field(ge=1, le=MAX_STEPS)
    batch_size: int = Field(ge=1, le=MAX_BATCH)
    checkpoint_every: int = Field(ge=1)
    seed: int
    optimizer: Literal["adamw"] = "adamw"
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    weight_decay: float = 0.01
    lr_scheduler_type: Literal["constant"] = "constant"
    temperature: float | None = Field(default=None, gt=0, description="distill_kl only")
    pad_token_id: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _temperature(self) -> TrainingHyperparameters:
        if (self.objective == "distill_kl") != (self.temperature is not None):
            raise ValueError("temperature is required for distill_kl and only for it")
        return self


class LoopHyperparameters(BaseModel):
    """externalParameters.hyperparameters of a transcript recorded from a user's own loop (runner `external/v1`):
    the schedule attest checks, plus the loop's own settings (any other JSON keys), handed to the runner verbatim."""

    model_config = ConfigDict(extra="allow", frozen=True)
    steps: int = Field(ge=1, le=MAX_STEPS)
    batch_size: int = Field(ge=1, le=MAX_BATCH, description="The most samples one optimizer step consumes")
    checkpoint_every: int = Field(ge=1)
    seed: int | None = None


AnyHyperparameters = TrainingHyperparameters | LoopHyperparameters


class ModelPin(_Strict):
    """A model named by its roots (attest-identity/v1, sha256)."""

    model_root: Hex
    weights_root: Hex


class DatasetPin(_Strict):
    sha256: Hex = Field(description="SHA-256 of the data file's bytes")
    size: int = Field(ge=0)
    records: int = Field(ge=1, description="Number of JSON lines")
    field: Literal["input_ids", "text"]
    tokenizer_sha256: Hex | None = Field(
        default=None, description="SHA-256 of tokenizer.json (text records only; the output folder carries it)"
    )


class Determinism(_Strict):
    """The settings the run was made under (the reference runner needs deterministic algorithms and eager attention;
    a user's loop records what it had, and its runner applies the same)."""

    device: Literal["cpu"] = "cpu"
    compute_dtype: Literal["float32"] = "float32"
    num_threads: int = Field(ge=1, le=1024)
    deterministic_algorithms: bool = True
    attn_implementation: str = Field(default="eager", min_length=1, max_length=64)


class CheckpointRecord(_Strict):
    """One checkpoint; `root` = H(0x05 || JCS({format, step, model_root, weights_root, state_root}))."""

    step: int = Field(ge=0)
    model_root: Hex = Field(description="Model root of the checkpoint's model/ folder (config + weights)")
    weights_root: Hex
    state_root: Hex = Field(description="Model root of the checkpoint's state/ folder (optimizer + RNG)")
    root: Hex


class BatchCommitment(_Strict):
    """The exact batch of one step; `root` = MTH over H(0x06 || JCS({index, input_ids})) in batch order."""

    step: int = Field(ge=1)
    indices: list[int]
    root: Hex


class TrainingTranscript(_Strict):
    format: Literal["attest-training-transcript/v1"] = TRANSCRIPT_FORMAT
    runner: Literal["https://attest.dev/runners/reference/v1", "https://attest.dev/runners/external/v1"] = Field(
        default=REFERENCE_RUNNER, description="The training code that replays a segment"
    )
    runner_sha256: Hex | None = Field(
        default=None,
        pattern="^[0-9a-f]{64}$",
        description="external/v1 only: SHA-256 of the runner file, also a `runner` dependency of the statement",
    )
    start: ModelPin = Field(description="The student-init (distill) / base (finetune) model")
    teacher: ModelPin | None = None
    dataset: DatasetPin
    determinism: Determinism
    versions: dict[str, str] = Field(description="python, torch, transformers, safetensors, attest")
    checkpoints: list[CheckpointRecord] = Field(min_length=2)
    batches: list[BatchCommitment] = Field(min_length=1)

    @model_validator(mode="after")
    def _runner_digest(self) -> TrainingTranscript:
        if (self.runner == EXTERNAL_RUNNER) != (self.runner_sha256 is not None):
            raise ValueError("runner_sha256 is required for the external runner and only for it")
        return self


class TranscriptError(ValueError):
    """A statement whose transcript is absent or malformed."""


def transcript_of(statement: ProvenanceStatement) -> tuple[TrainingTranscript, AnyHyperparameters]:
    """The transcript and hyperparameters of a statement (TrainingHyperparameters for the reference runner,
    LoopHyperparameters for an external one); TranscriptError when absent or malformed."""
    ext: dict[str, Any] = statement.predicate.buildDefinition.externalParameters
    if "training_transcript" not in ext:
        raise TranscriptError("the statement carries no training transcript")
    try:
        transcript = TrainingTranscript.model_validate(ext["training_transcript"])
        model = TrainingHyperparameters if transcript.runner == REFERENCE_RUNNER else LoopHyperparameters
        hyper: AnyHyperparameters = model.model_validate(ext.get("hyperparameters"))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "transcript"
        raise TranscriptError(f"malformed training transcript ({where}: {first['msg']})") from None
    return transcript, hyper


def checkpoint_steps(steps: int, every: int) -> list[int]:
    """0, K, 2K, ..., and the last step (a shorter last segment when K does not divide the step count)."""
    out = list(range(0, steps, every))
    return [*out, steps]


def checkpoint_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def checkpoint_byproduct(rec: CheckpointRecord) -> ResourceDescriptor:
    """The checkpoint as an SLSA byproduct (a copy of the transcript's record for SLSA readers)."""
    return ResourceDescriptor(
        name=checkpoint_dir_name(rec.step),
        digest={"sha256": rec.model_root},
        annotations={
            "role": "checkpoint",
            "weights_root": rec.weights_root,
            "step": rec.step,
            "state_root": rec.state_root,
            "checkpoint_root": rec.root,
        },
    )

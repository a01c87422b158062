"""A `transformers.TrainerCallback` that records a Trainer run as a signed finetune (or distill) statement.

Optional: importing this module imports transformers; nothing else in attest does. The callback starts a
RecordingSession when training begins (hashing the parents, loading the key), notes every saved checkpoint, and at the
end saves the final model into `output` (unless save_model=False, then call `finish()` after saving it yourself) and
signs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from attest.record.recorder import RecordResult
from attest.record.session import RecordingSession
from attest.statements.models import StepKind

HYPERPARAMETERS = (
    "learning_rate",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "weight_decay",
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
    "max_grad_norm",
    "warmup_steps",
    "warmup_ratio",
    "lr_scheduler_type",
    "optim",
    "bf16",
    "fp16",
    "seed",
    "data_seed",
)


def trainer_hyperparameters(args: TrainingArguments) -> dict[str, Any]:
    """The TrainingArguments that change the numbers, as JSON values (enums become their string value)."""
    out: dict[str, Any] = {}
    for name in HYPERPARAMETERS:
        value = getattr(args, name, None)
        if value is None:
            continue
        value = getattr(value, "value", value)
        out[name] = value if isinstance(value, bool | int | float | str) else str(value)
    return out


class AttestCallback(TrainerCallback):
    """Record the run into `output`/.attest/ (see module docstring). Options are RecordingSession's."""

    def __init__(
        self,
        output: str | os.PathLike[str],
        *,
        kind: StepKind = "finetune",
        save_model: bool = True,
        record_checkpoints: bool = True,
        **options: Any,
    ) -> None:
        self.output = Path(output)
        self.kind = kind
        self.save_model = save_model
        self.record_checkpoints = record_checkpoints
        self.options = options
        self.session: RecordingSession | None = None
        self.result: RecordResult | None = None

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        params = {**trainer_hyperparameters(args), **self.options.pop("params", {})}
        model = kwargs.get("model")
        dtype = str(next(model.parameters()).dtype).removeprefix("torch.") if model is not None else None
        self.options.setdefault("seed", args.seed)
        self.options.setdefault("device", str(args.device))
        self.options.setdefault("dtype", dtype)
        self.session = RecordingSession(self.kind, self.output, params=params, **self.options).start()
        self.session.internal["trainer"] = "transformers.Trainer"

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if self.session is None or not self.record_checkpoints:
            return
        ckpt = Path(args.output_dir or ".") / f"checkpoint-{state.global_step}"
        if ckpt.is_dir():
            self.session.checkpoint(ckpt, step=state.global_step)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.session is None:
            return
        self.session.internal["global_step"] = state.global_step
        if not self.save_model:
            return
        model = kwargs.get("model")
        if model is None:
            raise RuntimeError("AttestCallback: the Trainer passed no model to save")
        self.output.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(self.output, safe_serialization=True)
        processing_class = kwargs.get("processing_class")
        if processing_class is not None:
            processing_class.save_pretrained(self.output)
        self.finish()

    def finish(self) -> RecordResult:
        """Sign the run now (call it yourself after saving when save_model=False)."""
        if self.session is None:
            raise RuntimeError("AttestCallback.finish() before training began")
        self.result = self.session.finish()
        return self.result

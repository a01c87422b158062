"""A `transformers.TrainerCallback` that records a Trainer run as a signed finetune (or distill) statement.

Optional: importing this module imports transformers; nothing else in attest does. The callback starts a
RecordingSession when training begins (hashing the parents, loading the key), notes every saved checkpoint, and at the
end saves the final model into `output` (unless save_model=False, then call `finish()` after saving it yourself) and
signs.

With `data=`, `checkpoints=`, `checkpoint_every=` and `runner=` it records a training transcript (SPEC.md 8.7):
give the Trainer `callback.train_dataset` (the data file's lines, as `input_ids`) and `callback.data_collator`
(right-padding, labels -100 on padding; or wrap your own with `collator=`), so the callback sees which lines each
optimizer step consumed. Checkpoints (never the Trainer's pickles) are written in the SPEC 8.2 format when the next
step begins (so the RNG state is the one that step starts from) and at the end.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from attest.record.recorder import RecordResult
from attest.record.session import RecordingSession
from attest.statements.models import StepKind
from attest.training.data import DataFile
from attest.training.loop import collate

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
    "dataloader_drop_last",
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


class _Lines(torch.utils.data.Dataset[dict[str, list[int]]]):
    """The data file's lines as `{"input_ids": ids}`; every read is noted, in order, for the collator."""

    def __init__(self, data: DataFile) -> None:
        self.data, self.read = data, list[int]()

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        self.read.append(int(index))
        return {"input_ids": self.data.input_ids(int(index), 1 << 62)}


class _NotingCollator:
    """Collates a micro-batch and queues the data-file lines it holds (fetches happen in the order steps use them)."""

    def __init__(self, lines: _Lines, inner: Callable[[list[dict[str, Any]]], Any] | None, pad: int) -> None:
        self.lines, self.inner, self.pad = lines, inner, pad
        self.queue: list[list[int]] = []

    def __call__(self, features: list[dict[str, Any]]) -> Any:
        if len(self.lines.read) != len(features):
            raise RuntimeError("AttestCallback: the collator got other samples than train_dataset handed out")
        self.queue.append(list(self.lines.read))
        self.lines.read.clear()
        if self.inner is not None:
            return self.inner(features)
        ids, mask, labels = collate([list(f["input_ids"]) for f in features], self.pad)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class AttestCallback(TrainerCallback):
    """Record the run into `output`/.attest/ (see module docstring). Options are RecordingSession's."""

    def __init__(
        self,
        output: str | os.PathLike[str],
        *,
        kind: StepKind = "finetune",
        save_model: bool = True,
        record_checkpoints: bool = True,
        collator: Callable[[list[dict[str, Any]]], Any] | None = None,
        pad_token_id: int = 0,
        **options: Any,
    ) -> None:
        self.output = Path(output)
        self.collator: _NotingCollator | None = None
        if options.get("data") is not None:
            model = Path(next(iter(options.get("parents", ())), "."))
            tokenizer = model / "tokenizer.json"
            lines = _Lines(DataFile(Path(options["data"]), tokenizer if tokenizer.is_file() else None))
            self.collator = _NotingCollator(lines, collator, pad_token_id)
        self._substeps = 0
        self._due = False
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
        if self.collator is not None:
            params.setdefault("pad_token_id", self.collator.pad)
        model = kwargs.get("model")
        dtype = str(next(model.parameters()).dtype).removeprefix("torch.") if model is not None else None
        self.options.setdefault("seed", args.seed)
        self.options.setdefault("device", str(args.device))
        self.options.setdefault("dtype", dtype)
        if self.collator is not None and (args.dataloader_num_workers != 0 or args.world_size != 1):
            raise ValueError("AttestCallback: a transcript needs dataloader_num_workers=0 and a single process")
        self.session = RecordingSession(self.kind, self.output, params=params, **self.options).start()
        self.session.internal["trainer"] = "transformers.Trainer"

    @property
    def train_dataset(self) -> _Lines:
        """The Trainer's train_dataset when recording a transcript: the data file's lines."""
        if self.collator is None:
            raise RuntimeError("AttestCallback: train_dataset exists only with data=")
        return self.collator.lines

    @property
    def data_collator(self) -> _NotingCollator:
        """The Trainer's data_collator when recording a transcript."""
        if self.collator is None:
            raise RuntimeError("AttestCallback: data_collator exists only with data=")
        return self.collator

    def _write_due(self, kwargs: dict[str, Any]) -> None:
        assert self.session is not None
        model, optimizer = kwargs["model"], getattr(kwargs["optimizer"], "optimizer", kwargs["optimizer"])
        if not self.session.began_training:
            self.session.begin_training(model, optimizer)  # checkpoint 0, with the RNG the first step starts from
        elif self._due:
            self._recorder_write(model, optimizer)
        self._due = False

    def _recorder_write(self, model: Any, optimizer: Any) -> None:
        assert self.session is not None and self.session.transcript is not None
        self.session.transcript.write(model, optimizer)

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.session is not None and self.collator is not None:
            self._write_due(kwargs)

    def on_substep_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._substeps += 1

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if self.session is None or self.collator is None or self.session.transcript is None:
            return
        used, self.collator.queue = self.collator.queue[: self._substeps + 1], self.collator.queue[self._substeps + 1 :]
        self._substeps = 0
        self.session.batch([i for micro in used for i in micro])
        optimizer = getattr(kwargs["optimizer"], "optimizer", kwargs["optimizer"])
        self._due = self.session.transcript.end_step(kwargs["model"], optimizer, write=False)

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if self.session is None or not self.record_checkpoints or self.collator is not None:
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

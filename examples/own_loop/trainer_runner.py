"""The runner (SPEC.md section 8.8) for transcripts that `attest.record.hf.AttestCallback` recorded from a
`transformers.Trainer` causal-LM run: it replays a segment with the Trainer itself (same TrainingArguments, same
optimizer, schedule, clipping and loss code), fed the committed samples in order.

    attest verify OUT --trusted-key K.pub --replay-training 2 --checkpoints CKPT --data train.jsonl \
        --runner examples/own_loop/trainer_runner.py

Record with `AttestCallback(..., runner="examples/own_loop/trainer_runner.py")` so the statement pins this file.
The Trainer draws one seed from the torch CPU generator when an epoch's random sampler starts; a recorded
checkpoint's RNG state is the one its next step started from, so inside a segment this runner makes the same draw
before each step that began an epoch in the recorded run (epoch length from the data file's record count).
Limits (it exits 1 and says so): every step of the segment must hold per_device_train_batch_size x
gradient_accumulation_steps samples (a short batch at an epoch's end is not replayed), on the CPU, one process.
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
import transformers

from attest.training.checkpoint import load_state, optimizer_names, write_checkpoint
from attest.training.loop import collate
from attest.training.runner import RunnerRequest, read_request

ARGUMENTS = (
    "learning_rate",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "weight_decay",
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
    "max_grad_norm",
    "warmup_steps",
    "lr_scheduler_type",
    "optim",
    "seed",
)


class _Samples(torch.utils.data.Dataset[dict[str, list[int]]]):
    def __init__(self, samples: list[list[int]]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        return {"input_ids": self.samples[index]}


class _InOrder(transformers.Trainer):
    def _get_train_sampler(self, *args: Any, **kwargs: Any) -> torch.utils.data.Sampler[int]:
        return torch.utils.data.SequentialSampler(self.train_dataset)  # type: ignore[arg-type]


class _Segment(transformers.TrainerCallback):
    """Load the start state when training begins, position the schedule, stop after the segment's steps."""

    def __init__(self, request: RunnerRequest) -> None:
        self.request, self.done, self.rng = request, 0, torch.get_rng_state()
        hp = request.hyperparameters
        batches, rest = divmod(request.dataset.records, hp["per_device_train_batch_size"])
        batches += 0 if hp.get("dataloader_drop_last") else int(rest > 0)
        self.steps_per_epoch = max(1, -(-batches // hp["gradient_accumulation_steps"]))
        self.model: Any = None
        self.optimizer: Any = None
        self.names: list[str] = []

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.model, self.optimizer = kw["model"], getattr(kw["optimizer"], "optimizer", kw["optimizer"])
        self.names = optimizer_names(self.model, self.optimizer)
        load_state(Path(self.request.start_checkpoint), self.optimizer, self.names)
        self.rng = torch.get_rng_state()
        with warnings.catch_warnings():  # the schedule is stepped to the start step before any optimizer step
            warnings.simplefilter("ignore")
            for _ in range(self.request.start_step):
                kw["lr_scheduler"].step()

    def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.done == 0:
            torch.set_rng_state(self.rng)  # the RNG the recorded step started from
        elif (self.request.start_step + self.done) % self.steps_per_epoch == 0:
            torch.empty((), dtype=torch.int64).random_()  # the recorded run's new-epoch sampler seed

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.done += 1
        if self.done == len(self.request.batches):
            control.should_training_stop = True


def replay(request_path: str) -> None:
    req = read_request(request_path)
    hp = req.hyperparameters
    per_step = hp["per_device_train_batch_size"] * hp["gradient_accumulation_steps"]
    if any(len(b.input_ids) != per_step for b in req.batches):
        sys.exit(f"trainer_runner: a step of this segment does not hold {per_step} samples (not replayed)")
    torch.use_deterministic_algorithms(req.determinism.deterministic_algorithms)
    torch.set_num_threads(req.determinism.num_threads)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        Path(req.start_checkpoint) / "model",
        dtype=torch.float32,
        attn_implementation=req.determinism.attn_implementation,
        local_files_only=True,
        use_safetensors=True,
    )
    pad = hp.get("pad_token_id", 0)

    def collator(features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        ids, mask, labels = collate([f["input_ids"] for f in features], pad)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    segment = _Segment(req)
    with tempfile.TemporaryDirectory() as tmp:
        args = transformers.TrainingArguments(
            output_dir=tmp,
            **{k: hp[k] for k in ARGUMENTS if k in hp},
            save_strategy="no",
            logging_strategy="no",
            report_to=[],
            use_cpu=True,
            disable_tqdm=True,
        )
        samples = [ids for b in req.batches for ids in b.input_ids]
        trainer = _InOrder(
            model=model, args=args, train_dataset=_Samples(samples), data_collator=collator, callbacks=[segment]
        )
        trainer.train()
    if segment.done != len(req.batches):
        sys.exit(f"trainer_runner: ran {segment.done} of {len(req.batches)} steps")
    write_checkpoint(Path(req.output), segment.model, segment.optimizer, segment.names, req.end_step)


if __name__ == "__main__":
    replay(sys.argv[1])

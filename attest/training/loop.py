"""The reference training loops: causal-LM cross-entropy and logit distillation (KL to the teacher), AdamW, constant
learning rate, float32 on the CPU under deterministic settings. The same functions train and replay a segment, so a
replay re-executes exactly the recorded computation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from attest.training.transcript import Determinism, TrainingHyperparameters

IGNORE_INDEX = -100


@contextlib.contextmanager
def deterministic(settings: Determinism) -> Iterator[None]:
    """Deterministic algorithms and a fixed intra-op thread count for the block; the previous settings after it."""
    was_det = torch.are_deterministic_algorithms_enabled()
    was_threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(settings.deterministic_algorithms)
    torch.set_num_threads(settings.num_threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was_det)
        torch.set_num_threads(was_threads)


def collate(samples: list[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad to the longest sample: (input_ids, attention_mask, labels with IGNORE_INDEX on padding)."""
    width = max(len(s) for s in samples)
    ids = torch.full((len(samples), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(samples), width), dtype=torch.long)
    for row, s in enumerate(samples):
        ids[row, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[row, : len(s)] = 1
    labels = ids.masked_fill(mask == 0, IGNORE_INDEX)
    return ids, mask, labels


def distill_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor, t: float
) -> torch.Tensor:
    """T^2 * mean over real tokens of KL(softmax(teacher/T) || softmax(student/T))."""
    s = torch.log_softmax(student_logits.float() / t, dim=-1)
    q = torch.log_softmax(teacher_logits.float() / t, dim=-1)
    kl = torch.nn.functional.kl_div(s, q, log_target=True, reduction="none").sum(-1)
    weights = mask.to(kl.dtype)
    return (kl * weights).sum() / weights.sum() * (t * t)


def hidden_mse_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens and hidden units of (student - teacher)^2 on the last hidden states."""
    weights = mask.to(student.dtype).unsqueeze(-1)
    return (((student - teacher.to(student.dtype)) ** 2) * weights).sum() / (weights.sum() * student.shape[-1])


def train_step(
    model: Any,
    optimizer: torch.optim.Optimizer,
    samples: list[list[int]],
    hyper: TrainingHyperparameters,
    teacher: Any | None = None,
) -> float:
    """One optimizer step on one batch; returns the loss."""
    ids, mask, labels = collate(samples, hyper.pad_token_id)
    if hyper.objective == "causal_lm":
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    elif hyper.objective == "distill_kl":
        if teacher is None or hyper.temperature is None:
            raise ValueError("distillation needs a teacher and a temperature")
        with torch.no_grad():
            teacher_logits = teacher(input_ids=ids, attention_mask=mask).logits
        logits = model(input_ids=ids, attention_mask=mask).logits
        loss = distill_loss(logits, teacher_logits, mask, hyper.temperature)
    else:
        if teacher is None:
            raise ValueError("distillation needs a teacher")
        with torch.no_grad():
            teacher_hidden = teacher(input_ids=ids, attention_mask=mask).last_hidden_state
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
        loss = hidden_mse_loss(hidden, teacher_hidden, mask)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def data_order(records: int, steps: int, batch_size: int, seed: int) -> list[list[int]]:
    """The reference loop's batches: a seeded permutation of the records per epoch, read in order. (Informative: a
    verifier checks the recorded indices, not how they were chosen.)"""
    g = torch.Generator().manual_seed(seed)
    stream: list[int] = []
    out = []
    for _ in range(steps):
        while len(stream) < batch_size:
            stream += torch.randperm(records, generator=g).tolist()
        out.append(stream[:batch_size])
        del stream[:batch_size]
    return out

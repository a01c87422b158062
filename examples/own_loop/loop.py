"""A user's own training loop, recorded with `attest.record.recording(...)`, and the runner that replays it.

This one file is the training code the statement pins (a `runner` dependency, by SHA-256): the loop below trains with
its own recipe (AdamW, linear warmup then linear decay, gradient clipping), which attest's reference step does not
implement, and `replay()` is the runner protocol of SPEC.md section 8.8, which re-runs a segment with the same
`train_step`. A verifier who trusts this file names it:

    attest verify OUT --trusted-key prover.pub --replay-training 2 --checkpoints CKPT --data train.jsonl \
        --runner examples/own_loop/loop.py [--nonce HEX]

    python examples/own_loop/loop.py train --model BASE --data train.jsonl --output OUT --checkpoints CKPT --key KEY
    python examples/own_loop/loop.py REQUEST.json        # what attest runs (a copy of this file, digest-checked)
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM

from attest.record import recording
from attest.training.checkpoint import load_state, optimizer_names, write_checkpoint
from attest.training.runner import read_request

HYPERPARAMETERS = {
    "learning_rate": 2e-3,
    "weight_decay": 0.01,
    "warmup_steps": 2,
    "max_grad_norm": 0.5,
    "pad_token_id": 0,
    "schedule_steps": 8,
}


def make_optimizer(model: Any, hp: dict[str, Any]) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW and a linear warmup / linear decay schedule over `schedule_steps`."""
    opt = torch.optim.AdamW(model.parameters(), lr=hp["learning_rate"], weight_decay=hp["weight_decay"])
    warm, total = hp["warmup_steps"], hp["schedule_steps"]

    def factor(step: int) -> float:
        return (step + 1) / warm if step < warm else max(0.0, (total - step) / max(1, total - warm))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def train_step(
    model: Any, opt: torch.optim.Optimizer, sched: Any, samples: list[list[int]], hp: dict[str, Any]
) -> float:
    """Right-pad, causal-LM loss, clip, AdamW step, schedule step."""
    width = max(len(s) for s in samples)
    ids = torch.full((len(samples), width), hp["pad_token_id"], dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, s in enumerate(samples):
        ids[row, : len(s)] = torch.tensor(s)
        mask[row, : len(s)] = 1
    loss = model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), hp["max_grad_norm"])
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach())


def train(
    model_dir: Path,
    data: Path,
    output: Path,
    checkpoints: Path,
    key: Any,
    steps: int = 6,
    batch: int = 4,
    seed: int = 3,
) -> list[float]:
    """The user's loop: its own data order and recipe, every step's samples committed, a checkpoint every 2 steps."""
    hp = {**HYPERPARAMETERS, "seed": seed}
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).train()
    opt, sched = make_optimizer(model, hp)
    losses = []
    with recording(
        "finetune",
        output,
        parents=[model_dir],
        key=key,
        data=data,
        checkpoints=checkpoints,
        checkpoint_every=2,
        runner=Path(__file__),
        params=hp,
        seed=seed,
    ) as rec:
        rec.begin_training(model, opt)
        records = sum(1 for _ in data.open("rb"))
        order = torch.randperm(records, generator=torch.Generator().manual_seed(seed)).tolist()
        for step in range(steps):
            indices = [order[(step * batch + i) % records] for i in range(batch)]
            losses.append(train_step(model, opt, sched, rec.batch(indices), hp))
            rec.end_step(model, opt)
        model.save_pretrained(output)
    return losses


def replay(request_path: str) -> None:
    """The runner protocol: load the start checkpoint (weights, AdamW moments, RNG state), position the schedule,
    run the committed batches with train_step, write the end checkpoint into the request's output folder."""
    req = read_request(request_path)
    hp = req.hyperparameters
    torch.use_deterministic_algorithms(req.determinism.deterministic_algorithms)
    torch.set_num_threads(req.determinism.num_threads)
    start = Path(req.start_checkpoint)
    model = AutoModelForCausalLM.from_pretrained(
        start / "model",
        dtype=torch.float32,
        attn_implementation=req.determinism.attn_implementation,
        local_files_only=True,
        use_safetensors=True,
    ).train()
    opt, sched = make_optimizer(model, hp)
    names = optimizer_names(model, opt)
    load_state(start, opt, names)
    with warnings.catch_warnings():  # stepping the schedule to the start step before any optimizer step
        warnings.simplefilter("ignore")
        for _ in range(req.start_step):
            sched.step()
    for batch in req.batches:
        train_step(model, opt, sched, batch.input_ids, hp)
    write_checkpoint(Path(req.output), model, opt, names, req.end_step)


def main(argv: list[str]) -> int:
    if argv[:1] != ["train"]:
        replay(argv[0])
        return 0
    p = argparse.ArgumentParser(prog="loop.py train")
    for name in ("model", "data", "output", "checkpoints", "key"):
        p.add_argument(f"--{name}", type=Path, required=True)
    a = p.parse_args(argv[1:])
    losses = train(a.model, a.data, a.output, a.checkpoints, a.key)
    print(f"trained {a.output}: loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""`attest train sft|distill`: attest's reference training loops, recorded with a replayable transcript."""

from __future__ import annotations

from pathlib import Path

import click

from attest.cli.options import PathType, choice_option
from attest.cli.output import stdout
from attest.cli.record import load_cli_key
from attest.errors import InputError
from attest.record.recorder import Signing


@click.command("train")
@click.argument("objective", type=click.Choice(["sft", "distill"]))
@click.option("--model", required=True, type=PathType, help="Start model folder (config.json + safetensors).")
@click.option("--teacher", type=PathType, help="Teacher model folder (distill).")
@click.option("--data", required=True, type=PathType, help="JSON lines with input_ids (or text + tokenizer.json).")
@click.option("--steps", required=True, type=click.IntRange(1), help="Optimizer steps.")
@click.option("--batch-size", required=True, type=click.IntRange(1), help="Samples per step.")
@click.option("--lr", required=True, type=click.FloatRange(min=0, min_open=True), help="AdamW learning rate.")
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), help="Distillation temperature (kl).")
@choice_option(
    "--loss",
    ["kl", "hidden-mse"],
    "kl",
    "distill: KL to the teacher's logits (causal LMs), or MSE to its last hidden states (encoders).",
)
@click.option("--weight-decay", default=0.0, show_default=True, type=click.FloatRange(min=0), help="AdamW decay.")
@click.option("--seed", required=True, type=int, help="Seed of the data order and the RNG.")
@click.option("--checkpoint-every", required=True, type=click.IntRange(1), help="K: a checkpoint every K steps.")
@click.option("--checkpoints", required=True, type=PathType, help="Folder the checkpoints are written into.")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1, 1024), help="CPU threads.")
@click.option("--output", required=True, type=PathType, help="Output model folder (written, then signed).")
@click.option("--key", "keys", multiple=True, required=True, type=PathType, help="Signing key (repeatable).")
def train_command(
    objective: str,
    model: Path,
    teacher: Path | None,
    data: Path,
    steps: int,
    batch_size: int,
    lr: float,
    temperature: float | None,
    loss: str,
    weight_decay: float,
    seed: int,
    checkpoint_every: int,
    checkpoints: Path,
    threads: int,
    output: Path,
    keys: tuple[Path, ...],
) -> int:
    """Train OUTPUT from --model on --data on the CPU, deterministically, writing a checkpoint (weights, optimizer
    and RNG state) every K steps, and sign a finetune (sft) or distill statement carrying the transcript that
    `attest verify --replay-training N` checks."""
    from attest.record.training import TrainJob, train  # lazy: training loads torch and transformers

    if objective == "distill" and (teacher is None or (loss == "kl") != (temperature is not None)):
        raise InputError(None, "distill needs --teacher, and --temperature exactly with --loss kl")
    if objective == "sft" and (teacher is not None or temperature is not None):
        raise InputError(None, "sft takes no --teacher or --temperature")
    job = TrainJob(
        objective=("distill_kl" if loss == "kl" else "distill_hidden_mse") if objective == "distill" else "causal_lm",
        model=model,
        data=data,
        output=output,
        checkpoints=checkpoints,
        steps=steps,
        batch_size=batch_size,
        learning_rate=lr,
        seed=seed,
        checkpoint_every=checkpoint_every,
        teacher=teacher,
        temperature=temperature,
        weight_decay=weight_decay,
        threads=threads,
    )
    result = train(job, Signing([load_cli_key(k) for k in keys]))
    t = result.transcript
    stdout.print(f"trained {output}: {steps} steps, {len(t.checkpoints)} checkpoints in {checkpoints}")
    stdout.print(f"loss: first {result.losses[0]:.4f}, last {result.losses[-1]:.4f}")
    stdout.print(f"model root:   {result.record.manifest.model_root}")
    stdout.print(f"statement:    {result.record.bundle_path}")
    return 0


COMMANDS = [train_command]

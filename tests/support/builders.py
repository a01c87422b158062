"""Real tiny checkpoints for tests: transformers configs, random init with a fixed seed, real optimizer steps.

Nothing here downloads anything. Every model is a real `transformers` model saved with `save_pretrained`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, PretrainedConfig, Qwen2Config

VOCAB = 256


def tiny_config(
    arch: str = "qwen2", hidden: int = 64, layers: int = 2, vocab: int = VOCAB
) -> Qwen2Config | LlamaConfig:
    common = dict(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=False,
    )
    if arch == "qwen2":
        return Qwen2Config(**common)
    if arch == "llama":
        return LlamaConfig(**common)
    raise ValueError(arch)


def make_tiny_model(
    out: Path,
    seed: int = 0,
    arch: str = "qwen2",
    hidden: int = 64,
    layers: int = 2,
    dtype: torch.dtype = torch.bfloat16,
) -> Path:
    """Randomly initialise a tiny causal LM with a fixed seed and save it (safetensors + config.json)."""
    return save_random_model(tiny_config(arch, hidden, layers), out, seed, dtype)


def save_random_model(config: PretrainedConfig, out: Path, seed: int, dtype: torch.dtype = torch.bfloat16) -> Path:
    """A causal LM of `config`, randomly initialised with a fixed seed, saved with save_pretrained."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.to(dtype)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    return out


def token_batches(seed: int, steps: int, batch: int = 4, seq: int = 32, vocab: int = VOCAB) -> list[torch.Tensor]:
    """A synthetic token stream with structure (a noisy arithmetic progression) so training has a signal."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        start = torch.randint(0, vocab, (batch, 1), generator=g)
        stride = torch.randint(1, 7, (batch, 1), generator=g)
        seqs = (start + stride * torch.arange(seq)) % vocab
        noise = torch.rand(batch, seq, generator=g) < 0.05
        seqs = torch.where(noise, torch.randint(0, vocab, (batch, seq), generator=g), seqs)
        out.append(seqs)
    return out


def finetune(
    src: Path, out: Path, seed: int, steps: int = 5, lr: float = 1e-3, save_dtype: torch.dtype = torch.bfloat16
) -> Path:
    """A real fine-tune: float32 master weights, AdamW, `steps` steps on synthetic tokens, saved in save_dtype."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    for ids in token_batches(seed, steps):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.to(save_dtype)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    return out


def distill(
    student: Path,
    teacher: Path,
    out: Path,
    seed: int,
    steps: int = 5,
    lr: float = 1e-4,
    temperature: float = 2.0,
    save_dtype: torch.dtype = torch.bfloat16,
) -> Path:
    """A real logit distillation loop: KL(student || teacher) on synthetic tokens."""
    torch.manual_seed(seed)
    s = AutoModelForCausalLM.from_pretrained(student, dtype=torch.float32)
    t = AutoModelForCausalLM.from_pretrained(teacher, dtype=torch.float32)
    t.eval()
    opt = torch.optim.AdamW(s.parameters(), lr=lr)
    for ids in token_batches(seed + 1000, steps):
        with torch.no_grad():
            tl = t(input_ids=ids).logits / temperature
        sl = s(input_ids=ids).logits / temperature
        loss = torch.nn.functional.kl_div(
            torch.log_softmax(sl, -1), torch.log_softmax(tl, -1), log_target=True, reduction="batchmean"
        )
        loss.backward()
        opt.step()
        opt.zero_grad()
    s.to(save_dtype)
    out.mkdir(parents=True, exist_ok=True)
    s.save_pretrained(out, safe_serialization=True)
    return out


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def make_hf_cache(src: Path, cache: Path, repo_id: str, commit: str = "c0ffee" + "0" * 34) -> Path:
    """`src` laid out as huggingface_hub lays out a download in the cache HF_HUB_CACHE=`cache`: content-addressed
    blobs, `snapshots/COMMIT/<file>` symlinks to `../../blobs/<sha256>`, and `refs/main`. Returns the snapshot."""
    import hashlib
    import os

    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True)
    for f in sorted(p for p in src.rglob("*") if p.is_file()):
        data = f.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / f.relative_to(src)
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snapshot

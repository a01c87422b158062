"""Tiny real mixture-of-experts checkpoints: Qwen3.5-MoE, Qwen3-MoE and Mixtral from transformers configs.

Random init with a fixed seed, then real AdamW steps (tests/support/builders.py finetune), saved with transformers'
save_pretrained, which stores routed experts one tensor per expert (`mlp.experts.E.gate_proj.weight`, Mixtral's
`block_sparse_moe.experts.E.w1.weight`).
"""

from __future__ import annotations

from pathlib import Path

from transformers import MixtralConfig, PretrainedConfig, Qwen3MoeConfig
from transformers.models.qwen3_5_moe import Qwen3_5MoeTextConfig

from tests.support.builders import VOCAB, finetune, save_random_model

MOE_ARCHS = ("qwen3_5_moe", "qwen3_moe", "mixtral")
_COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    tie_word_embeddings=False,
    num_experts_per_tok=2,
)


def moe_config(arch: str) -> PretrainedConfig:
    """A tiny config of `arch` (hidden 64, 8 experts; Qwen3.5: 4 layers, 3 linear-attention and 1 full)."""
    if arch == "qwen3_5_moe":
        return Qwen3_5MoeTextConfig(
            **_COMMON,
            num_hidden_layers=4,
            head_dim=16,
            num_experts=8,
            moe_intermediate_size=32,
            shared_expert_intermediate_size=32,
            linear_num_key_heads=2,
            linear_num_value_heads=4,
            linear_key_head_dim=16,
            linear_value_head_dim=16,
        )
    if arch == "qwen3_moe":
        return Qwen3MoeConfig(
            **_COMMON, num_hidden_layers=2, head_dim=16, num_experts=8, moe_intermediate_size=32, intermediate_size=64
        )
    if arch == "mixtral":
        return MixtralConfig(**_COMMON, num_hidden_layers=2, num_local_experts=8, intermediate_size=32)
    raise ValueError(arch)


def moe_family(arch: str, root: Path, seed: int = 0, steps: int = 3) -> dict[str, Path]:
    """A random-init base of `arch` and two real fine-tunes of it: {"base", "ft_a", "ft_b"}."""
    base = save_random_model(moe_config(arch), root / f"{arch}_base", seed)
    ft_a = finetune(base, root / f"{arch}_ft_a", seed=seed + 1, steps=steps, lr=1e-3)
    ft_b = finetune(base, root / f"{arch}_ft_b", seed=seed + 2, steps=steps, lr=1e-3)
    return {"base": base, "ft_a": ft_a, "ft_b": ft_b}

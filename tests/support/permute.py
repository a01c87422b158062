"""Function-preserving permutations of a dense decoder checkpoint (Qwen2 / Llama / Qwen3 naming).

`permute_model` writes a copy of a model folder whose weights are permuted so that the network computes the same
function (logits equal up to float reassociation): the residual stream (every tensor with a hidden-size axis), the
MLP units of every layer (gate/up rows with the down columns), the KV groups of every layer (k/v head blocks with the
query heads that read them and their o_proj columns) and the query heads inside each group. RMSNorm is elementwise
with a per-dimension weight, so it commutes with a residual permutation; RoPE acts inside a head, so whole heads move
and a head's own dimensions never do. Used by the forensics tests and the scenario battery (benchmarks/).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


@dataclass
class Permutations:
    """What was applied: new index i holds old index perm[i]."""

    residual: list[int] | None = None
    mlp: dict[int, list[int]] = field(default_factory=dict)
    kv_groups: dict[int, list[int]] = field(default_factory=dict)
    query_heads: dict[int, list[int]] = field(default_factory=dict)


def _randperm(n: int, on: bool, g: torch.Generator) -> torch.Tensor:
    """A random permutation of n that moves something (n > 1), or the identity when `on` is false."""
    if not on or n < 2:
        return torch.arange(n)
    while True:
        p = torch.randperm(n, generator=g)
        if bool((p != torch.arange(n)).any()):
            return p


def _blocks(perm: torch.Tensor, size: int) -> torch.Tensor:
    """Permutation of heads -> permutation of their rows (each head `size` rows)."""
    return (perm.unsqueeze(1) * size + torch.arange(size)).reshape(-1)


def permute_model(
    src: Path,
    dst: Path,
    seed: int,
    *,
    residual: bool = True,
    mlp: bool = True,
    heads: bool = True,
) -> Permutations:
    """Write `src` permuted into `dst` (other files copied); returns the permutations applied."""
    cfg = json.loads((src / "config.json").read_text())
    hidden, n_heads = cfg["hidden_size"], cfg["num_attention_heads"]
    n_kv = cfg.get("num_key_value_heads") or n_heads
    head_dim = cfg.get("head_dim") or hidden // n_heads
    rep = n_heads // n_kv
    g = torch.Generator().manual_seed(seed)
    out = Permutations()
    pi_h = _randperm(hidden, residual, g)
    if residual:
        out.residual = pi_h.tolist()
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.safetensors", "*.safetensors.index.json", ".attest"))
    for f in sorted(src.glob("*.safetensors")):
        tensors = load_file(f)
        for name in list(tensors):
            tensors[name] = _apply(name, tensors[name], pi_h, cfg, out, g, (mlp, heads), (n_kv, rep, head_dim))
        save_file(tensors, dst / f.name, metadata={"format": "pt"})
    for f in src.glob("*.safetensors.index.json"):
        shutil.copy(f, dst / f.name)
    return out


def _apply(
    name: str,
    t: torch.Tensor,
    pi_h: torch.Tensor,
    cfg: dict[str, object],
    out: Permutations,
    g: torch.Generator,
    which: tuple[bool, bool],
    shape: tuple[int, int, int],
) -> torch.Tensor:
    do_mlp, do_heads = which
    n_kv, rep, head_dim = shape
    parts = name.split(".")
    if name.endswith(("embed_tokens.weight", "lm_head.weight")):
        return t[:, pi_h].contiguous()
    if name.endswith("norm.weight") and not name.endswith(("q_norm.weight", "k_norm.weight")):
        return t[pi_h].contiguous()
    if "layers" not in parts:
        return t
    layer = int(parts[parts.index("layers") + 1])
    if ".mlp." in name:
        if layer not in out.mlp:
            inter = int(cfg["intermediate_size"])  # type: ignore[call-overload]
            out.mlp[layer] = _randperm(inter, do_mlp, g).tolist()
        pi_i = torch.tensor(out.mlp[layer])
        if name.endswith(("gate_proj.weight", "up_proj.weight")):
            return t[pi_i][:, pi_h].contiguous()
        if name.endswith("down_proj.weight"):
            return t[pi_h][:, pi_i].contiguous()
        if name.endswith(("gate_proj.bias", "up_proj.bias")):
            return t[pi_i].contiguous()
        if name.endswith("down_proj.bias"):
            return t[pi_h].contiguous()
        return t
    if ".self_attn." in name:
        if layer not in out.kv_groups:
            out.kv_groups[layer] = _randperm(n_kv, do_heads, g).tolist()
            q = []
            for grp in out.kv_groups[layer]:  # the query heads of each KV group travel with it, shuffled inside it
                inner = _randperm(rep, do_heads, g)
                q.extend((grp * rep + inner).tolist())
            out.query_heads[layer] = q
        kv_rows = _blocks(torch.tensor(out.kv_groups[layer]), head_dim)
        q_rows = _blocks(torch.tensor(out.query_heads[layer]), head_dim)
        if name.endswith("q_proj.weight"):
            return t[q_rows][:, pi_h].contiguous()
        if name.endswith("q_proj.bias"):
            return t[q_rows].contiguous()
        if name.endswith(("k_proj.weight", "v_proj.weight")):
            return t[kv_rows][:, pi_h].contiguous()
        if name.endswith(("k_proj.bias", "v_proj.bias")):
            return t[kv_rows].contiguous()
        if name.endswith("o_proj.weight"):
            return t[pi_h][:, q_rows].contiguous()
        if name.endswith("o_proj.bias"):
            return t[pi_h].contiguous()
    return t

"""A checkpoint with Qwen3.5-397B-A17B's tensor names, count and sharding, every size dimension divided by 32.

From the published model description (Qwen3.5-397B-A17B model card, as quoted by SGLang's deployment guide and
others; found with the docs/pages search, December 2026): 60 layers in 15 x (3 x (Gated DeltaNet -> MoE) ->
1 x (Gated Attention -> MoE)); hidden 4096; 512 routed experts (10 routed + 1 shared active), expert intermediate
1024; gated attention 32 query heads, 2 KV heads, head dim 256; Gated DeltaNet 64 value heads, 16 query/key heads,
head dim 128; vocabulary 248,320. Counts (layers, experts, heads) are kept; sizes (hidden, intermediate, head dims,
vocabulary) are divided by 32, so the tensor count and names are the release's text model (per-expert storage,
`model.layers.*`) at 1/1000 of its bytes. Not modelled: the release's vision tower and MTP head (its multimodal
checkpoint prefixes the text weights with `model.language_model.`), so this is ~93,000 tensors where the release has
somewhat more. Tensor names and shapes come from transformers' own `Qwen3_5MoeForCausalLM` (built on the meta
device), routed experts expanded per expert as Hugging Face checkpoints store them.

Parents are base + independent deltas (bf16): real-looking fine-tunes for merge, replay and detect. Shards are
~7.6 MB (1/100 of the full-scale bytes), so the full scale has ~100 shards with a `model.safetensors.index.json`.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

SCALE = 32
LAYERS = 60
FULL_EXPERTS = 512
SHARD_BYTES = 7_600_000


def text_config(experts: int = FULL_EXPERTS) -> dict[str, object]:
    return {
        "vocab_size": 248_320 // SCALE,
        "hidden_size": 4096 // SCALE,
        "num_hidden_layers": LAYERS,
        "layer_types": (["linear_attention"] * 3 + ["full_attention"]) * (LAYERS // 4),
        "num_experts": experts,
        "num_experts_per_tok": min(10, experts),
        "moe_intermediate_size": 1024 // SCALE,
        "shared_expert_intermediate_size": 1024 // SCALE,
        "num_attention_heads": 32,
        "num_key_value_heads": 2,
        "head_dim": 256 // SCALE,
        "linear_num_key_heads": 16,
        "linear_num_value_heads": 64,
        "linear_key_head_dim": 128 // SCALE,
        "linear_value_head_dim": 128 // SCALE,
        "linear_conv_kernel_dim": 4,
        "max_position_embeddings": 4096,
        "tie_word_embeddings": False,
    }


def layout(experts: int = FULL_EXPERTS) -> tuple[list[tuple[str, tuple[int, ...]]], object]:
    """(name, shape) in checkpoint order, and the transformers config."""
    import torch
    from transformers.models.qwen3_5_moe import Qwen3_5MoeForCausalLM, Qwen3_5MoeTextConfig

    cfg = Qwen3_5MoeTextConfig(**text_config(experts))
    cfg.architectures = ["Qwen3_5MoeForCausalLM"]
    with torch.device("meta"):
        model = Qwen3_5MoeForCausalLM(cfg)
    out: list[tuple[str, tuple[int, ...]]] = []
    for name, p in model.state_dict().items():
        shape = tuple(p.shape)
        if name.endswith("mlp.experts.gate_up_proj"):
            prefix = name[: -len(".gate_up_proj")]
            e, two_i, h = shape
            for x in range(e):
                out.append((f"{prefix}.{x}.gate_proj.weight", (two_i // 2, h)))
                out.append((f"{prefix}.{x}.up_proj.weight", (two_i // 2, h)))
        elif name.endswith("mlp.experts.down_proj"):
            prefix = name[: -len(".down_proj")]
            e, h, i = shape
            out.extend((f"{prefix}.{x}.down_proj.weight", (h, i)) for x in range(e))
        else:
            out.append((name, shape))
    return sorted(out, key=lambda t: _order(t[0])), cfg


def _order(name: str) -> tuple[int, str]:
    parts = name.split(".")
    layer = int(parts[2]) if len(parts) > 2 and parts[1] == "layers" and parts[2].isdigit() else -1
    return (layer, name)


def _bf16(x: np.ndarray) -> bytes:
    u = x.astype(np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16).tobytes()


def write_model(folder: Path, tensors: list[tuple[str, tuple[int, ...]]], cfg: object, which: int) -> int:
    """Write parent `which` (1 or 2): base (seed 0) + its own delta, bf16, sharded with an index. Returns bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    shards: list[list[tuple[str, tuple[int, ...], int]]] = [[]]
    size = 0
    for name, shape in tensors:
        n = int(np.prod(shape)) if shape else 1
        if size and size + 2 * n > SHARD_BYTES:
            shards.append([])
            size = 0
        shards[-1].append((name, shape, n))
        size += 2 * n
    total = 0
    weight_map: dict[str, str] = {}
    for si, shard in enumerate(shards):
        fname = f"model-{si + 1:05d}-of-{len(shards):05d}.safetensors"
        count = sum(n for _, _, n in shard)
        base = np.random.default_rng([0, si]).standard_normal(count, dtype=np.float32) * 0.02
        delta = np.random.default_rng([which, si]).standard_normal(count, dtype=np.float32) * 0.002
        data = _bf16(base + delta)
        header: dict[str, object] = {"__metadata__": {"format": "pt"}}
        off = 0
        for name, shape, n in shard:
            header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + 2 * n]}
            off += 2 * n
            weight_map[name] = fname
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        with open(folder / fname, "wb") as fh:
            fh.write(struct.pack("<Q", len(raw)) + raw + data)
        total += len(data)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))
    cfg.save_pretrained(folder)  # type: ignore[attr-defined]
    return total


def generate(root: Path, experts: int) -> tuple[Path, Path, int]:
    """Parents A and B under root (reused when present). Returns (A, B, tensor count)."""
    tensors, cfg = layout(experts)
    a, b = root / "parent_a", root / "parent_b"
    for which, folder in ((1, a), (2, b)):
        if not (folder / "model.safetensors.index.json").is_file():
            write_model(folder, tensors, cfg, which)
    return a, b, len(tensors)

"""Run mergekit 0.1.5 itself (the peer our engine must match) and compare checkpoints tensor by tensor."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file


def run_mergekit(config_text: str, out: Path, seed: int | None = None) -> Path:
    """mergekit's own Python API on the CPU, offline, on local folders."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    config = MergeConfiguration.model_validate(yaml.safe_load(config_text))
    options = MergeOptions(allow_crimes=True, quiet=True, random_seed=seed, copy_tokenizer=False, lazy_unpickle=False)
    try:
        run_merge(config, str(out), options=options, config_source=config_text)
    except Exception as exc:
        # mergekit 0.1.5 + transformers 5: a frankenmerge's config fails validation (layer_types keeps the source
        # count) after every tensor has been written; the tensors are what we compare.
        if "layer_types" not in str(exc):
            raise
    return out


def load_tensors(folder: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def differing_tensors(a: Path, b: Path) -> list[str]:
    """Names whose dtype, shape or bytes differ (or that exist on one side only)."""
    ta, tb = load_tensors(a), load_tensors(b)
    bad = sorted(set(ta) ^ set(tb))
    for name in sorted(set(ta) & set(tb)):
        x, y = ta[name], tb[name]
        if (
            x.dtype != y.dtype
            or x.shape != y.shape
            or not torch.equal(x.view(torch.uint8) if x.dim() else x, y.view(torch.uint8) if y.dim() else y)
        ):
            bad.append(name)
    return bad

"""config.json as mergekit 0.1.5 writes it: the donor's config loaded into transformers' config class and saved.

mergekit loads the base model's config with `AutoConfig.from_pretrained` (config.json parsing only), sets
`torch_dtype` to the recipe's dtype and saves it with `save_pretrained`. transformers then renames settings
(`torch_dtype` -> `dtype`, `rope_theta` -> `rope_parameters`, Qwen3-MoE's `num_experts` -> `num_local_experts`),
fills in defaults the parents' file did not have, and stamps its own version. We do the same steps with the
built-in config class for the model type: no code from the model folder runs (no trust_remote_code).
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping
from typing import Any

from attest.errors import InputError


def installed_transformers() -> str | None:
    try:
        return importlib.metadata.version("transformers")
    except importlib.metadata.PackageNotFoundError:
        return None


def mergekit_config_json(config: Mapping[str, Any], dtype: str | None) -> str:
    """The bytes of the config.json mergekit writes for a merge whose donor config (layer count already set) is
    `config`. The result depends on the installed transformers version, as mergekit's does."""
    try:
        from transformers import CONFIG_MAPPING  # lazy: only MoE merges in mergekit's layout need transformers
    except ImportError:
        raise InputError(
            None, "writing config.json as mergekit does needs transformers 5 (pip install transformers)"
        ) from None
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        raise InputError(None, f"config.json: model_type {model_type!r} is not a transformers built-in config")
    try:
        cfg = CONFIG_MAPPING[model_type].from_dict(dict(config))
        if dtype:
            cfg.dtype = dtype  # mergekit assigns `torch_dtype`, which transformers 5 stores as `dtype`
        if cfg._get_generation_parameters():
            raise ValueError("generation parameters in the model config (save_pretrained refuses them)")
        if hasattr(cfg, "validate"):
            cfg.validate()
        return str(cfg.to_json_string(use_diff=True))
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise InputError(None, f"config.json: transformers cannot save it ({str(exc).splitlines()[0]})") from None

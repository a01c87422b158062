"""safetensors dtype tags as torch dtypes, for the readers that compute in torch (merge, replay, training).

Kept apart from attest.checkpoint.reader so that reading tensors as numpy arrays (detect, diff) never imports torch:
importing it takes 1.5-3.5 s, more than detect's whole pass over a 1 GB model.
"""

from __future__ import annotations

from pathlib import Path

import torch

from attest.errors import InputError

TORCH_DTYPES: dict[str, torch.dtype] = {
    "BF16": torch.bfloat16,
    "F16": torch.float16,
    "F32": torch.float32,
    "F64": torch.float64,
    "I8": torch.int8,
    "U8": torch.uint8,
    "I16": torch.int16,
    "I32": torch.int32,
    "I64": torch.int64,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
SAFETENSORS_TAGS = {v: k for k, v in TORCH_DTYPES.items()}


def torch_dtype(tag: str, where: Path) -> torch.dtype:
    try:
        return TORCH_DTYPES[tag]
    except KeyError:
        raise InputError(where, f"tensors of dtype {tag} cannot be merged") from None

"""Where randomized methods (DARE, DELLA) get their keep/drop masks.

`KeyedMasks` (attest's engine): each (seed, tensor name, input position) gets its own generator stream, seeded by a
hash of the key, always drawn on the CPU. A mask therefore does not depend on the device, the order tensors are
computed in, or what else was merged: a replay is exact anywhere. `MergekitGlobalMasks` reproduces how mergekit
0.1.5 draws (one global CPU generator seeded with `--random-seed`, consumed in its schedule order); it can only match
a mergekit merge that ran on the CPU with that seed, replayed in the same order.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Protocol

import torch

from attest.errors import InputError

MASK_DOMAIN = b"attest-merge-mask/v1"
SEED_MIN, SEED_MAX = -(1 << 63), (1 << 63) - 1
"""Seeds are signed 64-bit integers (the key below packs them as int64)."""


def check_seed(seed: object) -> int:
    """The seed, when it is an int64; else InputError."""
    if not isinstance(seed, int) or isinstance(seed, bool) or not SEED_MIN <= seed <= SEED_MAX:
        raise InputError(None, f"seed {seed!r} is not a 64-bit signed integer ({SEED_MIN} to {SEED_MAX})")
    return seed


def stream_key(seed: int, tensor_name: str, position: int) -> int:
    """63-bit generator seed for one mask: SHA-256 over domain, seed, input position and the tensor name."""
    h = hashlib.sha256()
    h.update(MASK_DOMAIN)
    h.update(struct.pack("<qI", seed, position))
    h.update(tensor_name.encode("utf-8"))
    return int.from_bytes(h.digest()[:8], "little") & ((1 << 63) - 1)


class MaskSource(Protocol):
    def bernoulli(self, probs: torch.Tensor, tensor_name: str, position: int) -> torch.Tensor:
        """A 0/1 tensor shaped and typed like `probs`: 1 with probability probs[i]."""
        ...


class KeyedMasks:
    """Masks keyed by (seed, tensor name, input position): the same bits on any device and in any order."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def bernoulli(self, probs: torch.Tensor, tensor_name: str, position: int) -> torch.Tensor:
        gen = torch.Generator(device="cpu").manual_seed(stream_key(self.seed, tensor_name, position))
        uniform = torch.rand(probs.shape, generator=gen, dtype=torch.float32)
        keep = uniform < probs.to(device="cpu", dtype=torch.float32)
        return keep.to(device=probs.device, dtype=probs.dtype)


class MergekitGlobalMasks:
    """mergekit's draw: torch.bernoulli on one CPU generator seeded with the recipe's seed, in call order."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.generator = torch.Generator(device="cpu").manual_seed(seed)

    def bernoulli(self, probs: torch.Tensor, tensor_name: str, position: int) -> torch.Tensor:
        if probs.device.type != "cpu":
            raise ValueError("mergekit-compatible masks can only be drawn on the CPU")
        return torch.bernoulli(probs, generator=self.generator)

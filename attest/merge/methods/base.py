"""What a merge method is: its parameters, the inputs it accepts, and a function of one tensor group."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from attest.merge.masks import MaskSource
from attest.merge.parameters import ParameterSpec

_SCRATCH = threading.local()
TensorCheck = Callable[[str, tuple[int, ...], dict[str, Any], list[dict[str, Any]]], str | None]


def scratch(tag: str, numel: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A reusable flat buffer (per thread, tag, dtype and device): fresh allocations of large tensors cost page
    faults that dominate memory-bound kernels. Contents are garbage; the caller overwrites them."""
    pool: dict[tuple[str, torch.dtype, torch.device], torch.Tensor] = _SCRATCH.__dict__.setdefault("pool", {})
    key = (tag, dtype, device)
    buf = pool.get(key)
    if buf is None or buf.numel() < numel:
        buf = pool[key] = torch.empty(numel, dtype=dtype, device=device)
    return buf[:numel]


@dataclass
class TensorGroup:
    """The inputs of one output tensor, already cast to the working dtype and on the compute device."""

    name: str
    tensors: list[torch.Tensor]  # in the recipe's model order
    base_index: int | None
    shared: dict[str, Any]
    per_input: list[dict[str, Any]]  # aligned with tensors
    masks: MaskSource | None = None
    tie_order: str = "mergekit"  # how magnitude cutoffs break ties (see methods/sparsify.py)

    @property
    def base(self) -> torch.Tensor:
        assert self.base_index is not None
        return self.tensors[self.base_index]

    def non_base(self) -> list[tuple[int, torch.Tensor, dict[str, Any]]]:
        """(position among non-base inputs, tensor, parameters), in model order."""
        pairs = zip(self.tensors, self.per_input, strict=True)
        rows = [(t, p) for i, (t, p) in enumerate(pairs) if i != self.base_index]
        return [(pos, t, p) for pos, (t, p) in enumerate(rows)]


@dataclass(frozen=True)
class MergeMethod:
    name: str
    merge: Callable[[TensorGroup], torch.Tensor]
    parameters: tuple[ParameterSpec, ...] = ()
    base: str = "ignored"  # required | optional | ignored
    min_inputs: int = 1
    max_inputs: int | None = None
    min_non_base: int | None = None
    max_non_base: int | None = None
    randomized: bool = False
    elementwise: bool = False  # output element i depends only on input elements i: safe to compute in slices
    notes: tuple[str, ...] = field(default=())
    check_tensor: TensorCheck | None = None
    """Planning-time check of one output tensor (name, shape, shared and per-input parameters): None when the
    method can merge it, else the problem (refused as bad input before anything is computed)."""

    def check_inputs(self, count: int, has_base: bool, where: str) -> str | None:
        """None when `count` inputs (one of them the base if has_base) suit this method, else the problem."""
        uses_base = has_base and self.base != "ignored"
        if self.base == "required" and not has_base:
            return f"{self.name} needs a base_model ({where})"
        if count < self.min_inputs or (self.max_inputs is not None and count > self.max_inputs):
            if self.max_inputs == self.min_inputs:
                want = f"exactly {self.min_inputs}"
            elif self.max_inputs is not None:
                want = f"{self.min_inputs} to {self.max_inputs}"
            else:
                want = f"at least {self.min_inputs}"
            return f"{self.name} takes {want} input models, got {count} ({where})"
        non_base = count - int(uses_base)
        if self.min_non_base is not None and non_base < self.min_non_base:
            return f"{self.name} needs at least {self.min_non_base} models besides the base, got {non_base} ({where})"
        if self.max_non_base is not None and non_base > self.max_non_base:
            return f"{self.name} takes at most {self.max_non_base} models besides the base, got {non_base} ({where})"
        return None

"""linear: a weighted average accumulated in float32 in the recipe's model order, then cast back."""

from __future__ import annotations

import torch

from attest.merge.methods.base import MergeMethod, TensorGroup, scratch
from attest.merge.parameters import ParameterSpec, Scope


def merge_linear(group: TensorGroup) -> torch.Tensor:
    first = group.tensors[0]
    if not first.is_floating_point():
        raise TypeError("linear merging needs floating-point tensors")
    acc_dtype = torch.float64 if first.dtype == torch.float64 else torch.float32
    # Weights become a float32 tensor first: a weight of 0.8 is float32(0.8) in every product and in the sum.
    weights = torch.tensor([p["weight"] for p in group.per_input], dtype=acc_dtype, device=first.device)
    acc = scratch("linear.acc", first.numel(), acc_dtype, first.device).view(first.shape).zero_()
    for tensor, w in zip(group.tensors, weights.unbind(0), strict=True):
        if tensor.dtype != acc_dtype:
            # Widening bf16/f16 to float32 is exact: converting first (into a reused buffer) gives the same bits
            # as addcmul's mixed-dtype path, several times faster.
            wide = scratch("linear.wide", tensor.numel(), acc_dtype, first.device).view(first.shape)
            tensor = wide.copy_(tensor)
        acc.addcmul_(tensor, w)
    if group.shared["normalize"]:
        acc.div_(weights.sum())
    return acc.to(first.dtype)


LINEAR = MergeMethod(
    name="linear",
    merge=merge_linear,
    parameters=(
        ParameterSpec("weight", float, Scope.INPUT),
        ParameterSpec("normalize", bool, Scope.SHARED, True),
    ),
    elementwise=True,
)

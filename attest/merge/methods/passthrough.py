"""passthrough: copy the single input (optionally scaled); with slices it stacks layers into a frankenmerge."""

from __future__ import annotations

import torch

from attest.merge.methods.base import MergeMethod, TensorGroup
from attest.merge.parameters import ParameterSpec, Scope


def merge_passthrough(group: TensorGroup) -> torch.Tensor:
    scale = group.per_input[0]["scale"]
    tensor = group.tensors[0]
    return tensor if scale is None else tensor * scale


PASSTHROUGH = MergeMethod(
    name="passthrough",
    merge=merge_passthrough,
    parameters=(ParameterSpec("scale", float | None, Scope.INPUT, None),),
    max_inputs=1,
    elementwise=True,
)

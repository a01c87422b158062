"""nuslerp: spherical interpolation between two models (or their task vectors when a base is given), computed in
the input dtype, t = w1 / (w0 + w1) (0.5 when the weights sum to ~0); flattened by default, else per row/column."""

from __future__ import annotations

import torch

from attest.merge.methods.base import MergeMethod, TensorGroup
from attest.merge.parameters import ParameterSpec, Scope

EPS = 1e-8
NORM_EPS = 1e-7


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / torch.norm(x, dim=-1, keepdim=True).clamp(min=NORM_EPS)


def nuslerp_tensors(t: float, v0: torch.Tensor, v1: torch.Tensor, dim: int, flatten: bool) -> torch.Tensor:
    shape = v0.shape
    if flatten:
        v0, v1 = v0.reshape(-1), v1.reshape(-1)
    elif dim != -1:
        v0, v1 = v0.transpose(dim, -1), v1.transpose(dim, -1)
    cos_theta = torch.sum(_unit(v0) * _unit(v1), dim=-1, keepdim=True).clamp(-1, 1)
    colinear = (1 - cos_theta.square()) <= EPS**2
    theta = torch.acos(torch.where(colinear, 0, cos_theta))
    sin_theta = torch.sin(theta)
    result = (torch.sin((1 - t) * theta) * v0 + torch.sin(t * theta) * v1) / sin_theta
    result = torch.where(colinear, (1 - t) * v0 + t * v1, result)
    if dim != -1 and not flatten:
        result = result.transpose(dim, -1)
    return result.reshape(shape)


def merge_nuslerp(group: TensorGroup) -> torch.Tensor:
    rows = group.non_base()
    if len(rows) != 2:
        raise ValueError("nuslerp needs exactly two models besides the base")
    (_, x0, p0), (_, x1, p1) = rows
    total = p0["weight"] + p1["weight"]
    t = 0.5 if abs(total) < 1e-6 else p1["weight"] / total
    dim = 0 if group.shared["nuslerp_row_wise"] else -1
    flatten = group.shared["nuslerp_flatten"]
    if group.base_index is None:
        return nuslerp_tensors(t, x0, x1, dim, flatten)
    base = group.base
    return base + nuslerp_tensors(t, x0 - base, x1 - base, dim, flatten)


NUSLERP = MergeMethod(
    name="nuslerp",
    merge=merge_nuslerp,
    parameters=(
        ParameterSpec("weight", float, Scope.NON_BASE),
        ParameterSpec("nuslerp_row_wise", bool, Scope.SHARED, False),
        ParameterSpec("nuslerp_flatten", bool, Scope.SHARED, True),
    ),
    base="optional",
    min_non_base=2,
    max_non_base=2,
)

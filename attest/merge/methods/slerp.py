"""slerp: spherical interpolation from the base (t=0) to the one other model (t=1), in float32.

Norms and the dot product are taken over 2^20-element chunks (a norm of chunk norms; a sum of chunk sums), as
mergekit 0.1.5 does, because the chunking decides the last bits of the result.
"""

from __future__ import annotations

import torch

from attest.merge.methods.base import MergeMethod, TensorGroup
from attest.merge.parameters import ParameterSpec, Scope

CHUNK_ELEMENTS = 1024 * 1024
DOT_THRESHOLD = 0.9995
EPS = 1e-8


def slerp_tensors(t: float, v0: torch.Tensor, v1: torch.Tensor) -> torch.Tensor:
    work = torch.float64 if v0.dtype == torch.float64 else torch.float32
    a = v0.reshape(1, -1)
    b = v1.reshape(1, -1)
    tt = torch.tensor([[t]], dtype=work, device=v0.device)
    n = a.shape[1]
    if n == 0:
        return ((1 - tt) * a + tt * b).reshape(v0.shape).to(v0.dtype)
    spans = [(s, min(n, s + CHUNK_ELEMENTS)) for s in range(0, n, CHUNK_ELEMENTS)]
    norms_a = [torch.linalg.vector_norm(a[:, s:e].to(work), dim=1, keepdim=True) for s, e in spans]
    norms_b = [torch.linalg.vector_norm(b[:, s:e].to(work), dim=1, keepdim=True) for s, e in spans]
    norm_a = torch.linalg.vector_norm(torch.stack(norms_a), dim=0)
    norm_b = torch.linalg.vector_norm(torch.stack(norms_b), dim=0)
    norm_a = torch.where(norm_a > EPS, norm_a, 1)
    norm_b = torch.where(norm_b > EPS, norm_b, 1)
    dots = [((a[:, s:e].to(work) / norm_a) * (b[:, s:e].to(work) / norm_b)).sum(dim=1, keepdim=True) for s, e in spans]
    dot = torch.stack(dots).sum(dim=0).clamp(-1, 1)
    nearly_parallel = dot.abs() > DOT_THRESHOLD
    theta = torch.acos(torch.where(nearly_parallel, 0, dot))
    sin_theta = torch.sin(theta)
    coef_a = torch.where(nearly_parallel, 1 - tt, torch.sin((1 - tt) * theta) / sin_theta)
    coef_b = torch.where(nearly_parallel, tt, torch.sin(tt * theta) / sin_theta)
    out = torch.empty_like(a)
    for s, e in spans:
        out[:, s:e] = coef_a * a[:, s:e].to(work) + coef_b * b[:, s:e].to(work)
    return out.reshape(v0.shape)


def merge_slerp(group: TensorGroup) -> torch.Tensor:
    if group.base_index is None or len(group.tensors) != 2:
        raise ValueError("slerp needs a base and exactly one other model")
    if not group.tensors[0].is_floating_point():
        raise TypeError("slerp needs floating-point tensors")
    other = group.tensors[1 - group.base_index]
    return slerp_tensors(group.shared["t"], group.base, other)


SLERP = MergeMethod(
    name="slerp",
    merge=merge_slerp,
    parameters=(ParameterSpec("t", float, Scope.SHARED),),
    base="required",
    min_inputs=2,
    max_inputs=2,
)

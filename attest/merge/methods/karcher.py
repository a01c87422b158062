"""karcher: the weighted Riemannian (Karcher) mean of the inputs' directions on the unit sphere, by fixed-point
iteration (max_iter, tol), rescaled by the mean of their norms; equal weights, in the input dtype (norms float32)."""

from __future__ import annotations

import torch

from attest.merge.methods.base import MergeMethod, TensorGroup
from attest.merge.parameters import ParameterSpec, Scope


def karcher_mean(tensors: list[torch.Tensor], alphas: list[float], max_iter: int, tol: float) -> torch.Tensor:
    if len(tensors) == 1:
        return tensors[0]
    work = torch.float64 if tensors[0].dtype == torch.float64 else torch.float32
    norms = [torch.linalg.vector_norm(t.to(work)) for t in tensors]
    units = [
        torch.zeros_like(t) if n.item() == 0.0 else (t / n).to(t.dtype) for t, n in zip(tensors, norms, strict=True)
    ]
    valid = [i for i, n in enumerate(norms) if n.item() > tol]
    if not valid:
        return sum((t * 0 for t in tensors), torch.zeros_like(tensors[0]))
    alpha_sum = sum(alphas[i] for i in valid)
    weights = [alphas[i] / alpha_sum for i in valid]
    dirs = [units[i] for i in valid]
    mean = torch.zeros_like(dirs[0])
    for a, u in zip(weights, dirs, strict=True):
        mean += a * u
    mean_norm = torch.linalg.vector_norm(mean.to(work))
    mean = dirs[0].clone() if mean_norm.item() < tol else (mean / mean_norm).to(mean.dtype)
    for _ in range(max_iter):
        tangent = torch.zeros_like(mean)
        for a, u in zip(weights, dirs, strict=True):
            dot = torch.clamp(torch.dot(mean.flatten(), u.flatten()), -1.0, 1.0)
            theta = torch.arccos(dot)
            if theta.item() < tol:
                continue
            tangent += a * (theta / torch.sin(theta)) * (u - dot * mean)
        tangent_norm = torch.linalg.vector_norm(tangent.to(work))
        if tangent_norm.item() < tol:
            break
        mean = (torch.cos(tangent_norm) * mean + torch.sin(tangent_norm) * (tangent / tangent_norm)).to(mean.dtype)
        unit_norm = torch.linalg.vector_norm(mean.to(work))
        if unit_norm.item() > tol:
            mean = (mean / unit_norm).to(mean.dtype)
    scale = sum((a * n for a, n in zip(alphas, norms, strict=True)), torch.zeros((), dtype=work, device=mean.device))
    return scale * mean


def merge_karcher(group: TensorGroup) -> torch.Tensor:
    n = len(group.tensors)
    if n == 1:
        return group.tensors[0]
    return karcher_mean(group.tensors, [1.0 / n] * n, group.shared["max_iter"], group.shared["tol"])


KARCHER = MergeMethod(
    name="karcher",
    merge=merge_karcher,
    parameters=(ParameterSpec("max_iter", int, Scope.SHARED, 10), ParameterSpec("tol", float, Scope.SHARED, 1e-5)),
)

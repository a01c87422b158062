"""model_stock: move from the base toward the average of the fine-tunes by t = k cos / (1 + (k - 1) cos), where cos is
the mean pairwise cosine of their task vectors (per tensor, or per row with filter_wise); in the input dtype."""

from __future__ import annotations

import torch

from attest.merge.methods.base import MergeMethod, TensorGroup
from attest.merge.parameters import ParameterSpec, Scope


def merge_model_stock(group: TensorGroup) -> torch.Tensor:
    w0 = group.base
    ws = [t for _, t, _ in group.non_base()]
    shape = w0.shape
    if group.shared["filter_wise"]:
        if w0.dim() == 1:
            w0 = w0.unsqueeze(0)
            ws = [w.unsqueeze(0) for w in ws]
    else:
        w0 = w0.reshape(-1)
        ws = [w.reshape(-1) for w in ws]
    offsets = [w - w0 for w in ws]
    cosines = []
    for i, a in enumerate(offsets):
        for b in offsets[i + 1 :]:
            norms = torch.norm(a, dim=-1) * torch.norm(b, dim=-1)
            cosines.append(((a * b).sum(dim=-1) / norms.clamp(min=1e-6)).clamp(-1, 1))
    cos = torch.stack(cosines).mean(dim=0).unsqueeze(-1)
    k = len(ws)
    denominator = 1 + (k - 1) * cos
    singular = denominator.abs() < 1e-6
    safe = torch.where(singular, torch.ones_like(denominator), denominator)
    t = torch.where(singular, torch.zeros_like(cos), (k * cos) / safe)
    average = sum(ws) / k
    return (t * average + (1 - t) * w0).reshape(shape)


MODEL_STOCK = MergeMethod(
    name="model_stock",
    merge=merge_model_stock,
    parameters=(ParameterSpec("filter_wise", bool, Scope.SHARED, False),),
    base="required",
    min_inputs=3,
)

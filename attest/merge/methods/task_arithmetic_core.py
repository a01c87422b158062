"""Generalized task arithmetic, the shared core of task_arithmetic, ties, dare_*, breadcrumbs* and della*.

In the input dtype (no upcast), as mergekit 0.1.5: delta_i = x_i - base; optionally sparsify each delta; multiply
by its weight (the weights rounded to the input dtype); with sign consensus keep only entries whose sign agrees with
sign(sum_i delta_i) (zero counts positive); sum; divide by the summed weights of the kept entries when normalize;
multiply by lambda; add to the base.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import torch

from attest.merge.methods import sparsify
from attest.merge.methods.base import MergeMethod, TensorGroup
from attest.merge.parameters import ParameterSpec, Scope

Sparsifier = Callable[[torch.Tensor, dict, TensorGroup, int], torch.Tensor]


def merge_task_vectors(group: TensorGroup, *, sign_consensus: bool, sparsifier: Sparsifier | None) -> torch.Tensor:
    base = group.base
    rows = group.non_base()
    if not rows:
        return base
    shared = group.shared
    deltas = base.new_empty((len(rows), *base.shape))

    inference = torch.is_inference_mode_enabled()  # thread-local: worker threads must enter it themselves

    def fill(pos: int, tensor: torch.Tensor, params: dict) -> None:
        with torch.inference_mode(inference):
            delta = tensor - base
            if sparsifier is not None:
                delta = sparsifier(delta, params | shared, group, pos)
            deltas[pos] = delta

    n = base.numel()
    if sparsifier in PARALLEL_SAFE and len(rows) > 1 and PARALLEL_MIN_ELEMENTS <= n <= PARALLEL_MAX_ELEMENTS:
        # Sorting is single-threaded in torch; sparsify the task vectors side by side (results do not depend on it).
        with ThreadPoolExecutor(max_workers=min(len(rows), os.cpu_count() or 1)) as pool:
            for f in [pool.submit(fill, pos, t, p) for pos, t, p in rows]:
                f.result()
    else:
        for pos, tensor, params in rows:
            fill(pos, tensor, params)
    weights = torch.tensor([p["weight"] for _, _, p in rows], dtype=deltas.dtype, device=deltas.device)
    while weights.dim() < deltas.dim():
        weights.unsqueeze_(-1)
    if base.dim() == 0 or base.shape[0] <= 1 or base.numel() <= COMBINE_SLICE_ELEMENTS:
        return _combine(deltas, base, weights, sign_consensus, shared)
    # Everything after sparsification is elementwise (the consensus sums run over the model axis only): do it a
    # block of rows at a time, the same bits with far less scratch memory.
    out = torch.empty_like(base)
    rows_per_slice = max(1, COMBINE_SLICE_ELEMENTS // max(1, base[0].numel()))
    for r in range(0, base.shape[0], rows_per_slice):
        sl = slice(r, r + rows_per_slice)
        out[sl] = _combine(deltas[:, sl], base[sl], weights, sign_consensus, shared)
    return out


def _combine(
    deltas: torch.Tensor, base: torch.Tensor, weights: torch.Tensor, sign_consensus: bool, shared: dict
) -> torch.Tensor:
    deltas = deltas * weights
    if sign_consensus:
        majority = (deltas.sum(dim=0) >= 0).to(deltas.dtype) * 2 - 1
        agree = deltas.sign() == majority
        mixed = (deltas * agree).sum(dim=0)
        divisor = (weights * agree).sum(dim=0)
        divisor[divisor == 0] = 1
    else:
        mixed = deltas.sum(dim=0)
        divisor = weights.sum(dim=0)
        divisor[divisor.abs() < 1e-8] = 1
    if shared["normalize"]:
        mixed /= divisor
    if shared["lambda"] != 1:
        mixed *= shared["lambda"]
    return (base + mixed).to(base.dtype)


def _magnitude(delta: torch.Tensor, p: dict, group: TensorGroup, pos: int) -> torch.Tensor:
    return sparsify.magnitude(delta, p["density"], p["rescale"], group.tie_order)


def _outliers(delta: torch.Tensor, p: dict, group: TensorGroup, pos: int) -> torch.Tensor:
    return sparsify.magnitude_outliers(delta, p["density"], p["gamma"], p["rescale"], group.tie_order)


def _random(delta: torch.Tensor, p: dict, group: TensorGroup, pos: int) -> torch.Tensor:
    if group.masks is None:
        raise ValueError("a randomized method needs a mask source (a seed)")
    return sparsify.random_drop(delta, p["density"], p["rescale"], group.masks, group.name, pos)


def _rank_scaled(delta: torch.Tensor, p: dict, group: TensorGroup, pos: int) -> torch.Tensor:
    if group.masks is None:
        raise ValueError("a randomized method needs a mask source (a seed)")
    return sparsify.rank_scaled_drop(delta, p["density"], p["epsilon"], p["rescale"], group.masks, group.name, pos)


PARALLEL_SAFE = (_magnitude, _outliers)  # deterministic: may run concurrently; random draws keep their order
PARALLEL_MIN_ELEMENTS = 1 << 20
COMBINE_SLICE_ELEMENTS = 1 << 20
PARALLEL_MAX_ELEMENTS = 1 << 23  # a sort holds ~24 bytes per element: bigger tensors sort one at a time

SPARSIFIERS: dict[str, tuple[Sparsifier, tuple[ParameterSpec, ...]]] = {
    "magnitude": (_magnitude, ()),
    "magnitude_outliers": (_outliers, (ParameterSpec("gamma", float, Scope.NON_BASE, 0.01, 0.0, 1.0),)),
    "random": (_random, ()),
    "della_magprune": (_rank_scaled, (ParameterSpec("epsilon", float, Scope.NON_BASE, 0.15, 0.0, 1.0),)),
}


def _check_della(name: str, shape: tuple[int, ...], shared: dict, per_input: list[dict]) -> str | None:
    """What mergekit's DELLA would fail on, refused before anything is computed."""
    for p in per_input:
        density = p.get("density")
        if density is None or not 0 < density < 1:
            continue  # density >= 1 keeps the task vector, <= 0 drops it: epsilon and the ranks are not used
        epsilon = p["epsilon"]
        if density + epsilon >= 1 or density - epsilon <= 0:
            return f"della: density {density} +/- epsilon {epsilon} must stay inside (0, 1) (tensor {name})"
        if len(shape) == 0:
            return f"della cannot rank the elements of the 0-dimensional tensor {name} (mergekit 0.1.5 fails too)"
        row = shape[0] if len(shape) == 1 else shape[1]
        if row < 2 and math.prod(shape) > 0:
            return (
                f"della ranks magnitudes along rows of at least 2 elements; tensor {name} of shape {list(shape)} "
                "has rows of 1 (mergekit 0.1.5 fails too)"
            )
    return None


def task_arithmetic_method(
    name: str, *, sign_consensus: bool, sparsification: str | None, normalize: bool, rescale: bool
) -> MergeMethod:
    """A MergeMethod of the family, with mergekit 0.1.5's parameter set and defaults for it."""
    sparsifier, extra = SPARSIFIERS[sparsification] if sparsification else (None, ())
    params = (
        ParameterSpec("int8_mask", bool, Scope.SHARED, False),
        ParameterSpec("normalize", bool, Scope.SHARED, normalize),
        ParameterSpec("rescale", bool, Scope.SHARED, rescale),
        ParameterSpec("lambda", float, Scope.SHARED, 1.0),
        ParameterSpec("weight", float, Scope.NON_BASE),
        ParameterSpec("density", float, Scope.NON_BASE, 1.0, 0.0, 1.0),
        *extra,
    )
    return MergeMethod(
        name=name,
        merge=partial(merge_task_vectors, sign_consensus=sign_consensus, sparsifier=sparsifier),
        parameters=params,
        base="required",
        randomized=sparsification in ("random", "della_magprune"),
        elementwise=sparsification is None,
        check_tensor=_check_della if sparsification == "della_magprune" else None,
    )

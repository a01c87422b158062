"""Sparsification of task vectors: magnitude (TIES), magnitude with outliers (breadcrumbs), random (DARE), and
rank-scaled random (DELLA), with optional L1 rescaling, in the input dtype like mergekit 0.1.5.

Which of several equal magnitudes at a cutoff is kept (the tie order) is either:
- "mergekit": torch's default (unstable) CPU sort, exactly as mergekit 0.1.5 runs it on the CPU (its default).
  Deterministic, so results are bit-exact with mergekit's; O(n log n). The sort runs on the CPU whatever the
  compute device: CUDA's sort orders equal magnitudes differently (measured on an H100: thousands of elements kept
  instead of their equals in a tiny TIES merge), and only the mask goes to the device.
- "stable": lower flat index first among equals (what a stable sort gives), found in linear time with a histogram
  (16-bit dtypes) or selection (others); the same on every device.
"""

from __future__ import annotations

import torch

from attest.merge.masks import MaskSource

RESCALE_EPS = 1e-7
TIE_ORDERS = ("mergekit", "stable")


def rescale_masked(tensor: torch.Tensor, mask: torch.Tensor, rescale: bool) -> torch.Tensor:
    """tensor * mask, scaled by |tensor|_1 / |masked|_1 when rescale is set (sums in the tensor's dtype)."""
    masked = tensor * mask
    if not rescale:
        return masked
    before = tensor.abs().sum()
    after = masked.abs().sum()
    if before < RESCALE_EPS or after < RESCALE_EPS:
        return masked
    return masked * (before / after)


def _float_magnitude(tensor: torch.Tensor) -> torch.Tensor:
    w = tensor.abs().reshape(-1)
    return w.float() if w.dtype in (torch.bfloat16, torch.float16) else w


def _ascending_rank_range(keys: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Boolean mask of the elements at positions [start, stop) when sorting `keys` by (key, index): a stable sort,
    without sorting. Integer keys in [0, 2^16) use a histogram; other keys use two selections."""
    n = keys.numel()
    mask = torch.zeros(n, dtype=torch.bool, device=keys.device)
    if stop <= start:
        return mask
    if keys.dtype == torch.int32:
        counts = torch.bincount(keys, minlength=1 << 16)
        below = torch.cumsum(counts, 0) - counts  # elements with a smaller key
        lo = int(torch.searchsorted(below + counts, start, right=True))
        hi = int(torch.searchsorted(below + counts, stop - 1, right=True))
        lo_val, hi_val = torch.tensor(lo, device=keys.device), torch.tensor(hi, device=keys.device)
        below_lo, below_hi = int(below[lo]), int(below[hi])
    else:
        lo_val = torch.kthvalue(keys.cpu(), start + 1).values.to(keys.device)
        hi_val = torch.kthvalue(keys.cpu(), stop).values.to(keys.device)
        below_lo, below_hi = int((keys < lo_val).sum()), int((keys < hi_val).sum())
    if bool(lo_val == hi_val):
        eq = torch.nonzero(keys == lo_val).flatten()
        mask[eq[start - below_lo : stop - below_lo]] = True
        return mask
    mask = (keys > lo_val) & (keys < hi_val)
    mask[torch.nonzero(keys == lo_val).flatten()[start - below_lo :]] = True
    mask[torch.nonzero(keys == hi_val).flatten()[: stop - below_hi]] = True
    return mask


def _magnitude_keys(tensor: torch.Tensor, descending: bool) -> torch.Tensor:
    """Keys whose ascending order is the order of |x| (reversed when descending)."""
    if tensor.dtype in (torch.bfloat16, torch.float16):
        bits = tensor.abs().reshape(-1).view(torch.int16).to(torch.int32)  # |x| >= 0: bit order is value order
        return (1 << 16) - 1 - bits if descending else bits
    w = tensor.abs().reshape(-1)
    return -w if descending else w


def _cpu_sorted_mask(tensor: torch.Tensor, start: int, stop: int, descending: bool) -> torch.Tensor:
    """Mask of positions [start, stop) of torch's default CPU sort of |x| (mergekit's tie order), on x's device."""
    order = torch.sort(_float_magnitude(tensor.cpu()), descending=descending).indices[start:stop]
    mask = torch.zeros(tensor.numel(), dtype=tensor.dtype)
    mask[order] = 1
    return mask.to(tensor.device)


def magnitude(tensor: torch.Tensor, density: float, rescale: bool, tie_order: str = "mergekit") -> torch.Tensor:
    """Keep the k = max(1, int(density * n)) largest |x|."""
    if density >= 1:
        return tensor
    n = tensor.numel()
    if density <= 0 or n == 0:
        return torch.zeros_like(tensor)
    k = max(1, int(density * n))
    if tie_order == "stable":
        mask = _ascending_rank_range(_magnitude_keys(tensor, descending=True), 0, k).to(tensor.dtype)
    else:
        mask = _cpu_sorted_mask(tensor, 0, k, descending=True)
    return rescale_masked(tensor, mask.reshape(tensor.shape), rescale)


def magnitude_outliers(
    tensor: torch.Tensor, density: float, gamma: float, rescale: bool, tie_order: str = "mergekit"
) -> torch.Tensor:
    """Drop the gamma share of largest |x| and the smallest ones, keeping int(density * n)."""
    if density >= 1:
        return tensor
    n = tensor.numel()
    target = int(density * n)
    n_top = int(gamma * n)
    n_bottom = max(0, n - target - n_top)
    stop = min(n, n_bottom + target)
    if tie_order == "stable":
        mask = _ascending_rank_range(_magnitude_keys(tensor, descending=False), n_bottom, stop).to(tensor.dtype)
    else:
        mask = _cpu_sorted_mask(tensor, n_bottom, stop, descending=False)
    return rescale_masked(tensor, mask.reshape(tensor.shape), rescale)


def _work_dtype(tensor: torch.Tensor) -> torch.dtype:
    return torch.float32 if tensor.dtype == torch.float16 else tensor.dtype


def random_drop(
    tensor: torch.Tensor, density: float, rescale: bool, masks: MaskSource, name: str, position: int
) -> torch.Tensor:
    """DARE: keep each element with probability `density`, then (optionally) restore the L1 norm."""
    if density >= 1:
        return tensor
    work = _work_dtype(tensor) if tensor.device.type == "cpu" else tensor.dtype
    probs = torch.full_like(tensor, density, dtype=work)
    mask = masks.bernoulli(probs, name, position)
    return rescale_masked(tensor.to(work), mask, rescale).to(tensor.dtype)


def rank_scaled_drop(
    tensor: torch.Tensor, density: float, epsilon: float, rescale: bool, masks: MaskSource, name: str, position: int
) -> torch.Tensor:
    """DELLA MagPrune: keep probability grows linearly with the magnitude rank in each row, in
    [density - epsilon, density + epsilon]."""
    if density >= 1:
        return tensor
    if density <= 0:
        return torch.zeros_like(tensor)
    if density + epsilon >= 1 or density - epsilon <= 0:
        raise ValueError("epsilon must keep density +/- epsilon inside (0, 1)")
    shape = tensor.shape
    work = _work_dtype(tensor) if tensor.device.type == "cpu" else tensor.dtype
    rows = tensor.unsqueeze(0) if tensor.dim() < 2 else tensor
    # Ranked by torch's CPU sort on every device, like the magnitude cutoffs: equal magnitudes get the ranks the
    # CPU gives them (mergekit's on the CPU), where CUDA's sort would give them others.
    order = torch.argsort(rows.abs().cpu(), dim=1, descending=False)
    ranks = order.argsort(dim=1).to(tensor.device, work) + 1
    lo = ranks.min(dim=1, keepdim=True).values
    hi = ranks.max(dim=1, keepdim=True).values
    rank_norm = ((ranks - lo) / (hi - lo)).clamp(0, 1)
    probs = (density - epsilon) + rank_norm * 2 * epsilon
    mask = masks.bernoulli(probs, name, position).to(work)
    return rescale_masked(rows.to(work), mask, rescale).to(tensor.dtype).reshape(shape)

"""Per-tensor comparison of a recomputed tensor with a published one, in units in the last place (ulps) of the
storage dtype. Floats are mapped to integers whose order is the float order (+0 and -0 both 0), so the ulp
distance between two finite values is the difference of their integers."""

from __future__ import annotations

from dataclasses import dataclass

import torch

CHUNK_ELEMENTS = 1 << 22  # bounds the int64 scratch to 32 MiB per side
_INT_VIEW = {
    torch.bfloat16: torch.int16,
    torch.float16: torch.int16,
    torch.float32: torch.int32,
    torch.float64: torch.int64,
}


@dataclass(frozen=True)
class Difference:
    differing_elements: int
    max_ulps: int | None  # None when a NaN/inf is involved or the dtype is not a float type
    nan_mismatch: bool = False


def _ordered(bits: torch.Tensor, width: int) -> torch.Tensor:
    v = bits.to(torch.int64)
    magnitude = v & ((1 << (width - 1)) - 1)
    return torch.where(v < 0, -magnitude, magnitude)


def byte_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.numel() == 0:
        return True
    return torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))


def difference(expected: torch.Tensor, actual: torch.Tensor) -> Difference:
    """How far apart two tensors of the same dtype and shape are, chunk by chunk."""
    e = expected.reshape(-1)
    a = actual.reshape(-1)
    int_dtype = _INT_VIEW.get(e.dtype)
    differing = 0
    max_ulps: int | None = 0
    nan_mismatch = False
    for start in range(0, e.numel(), CHUNK_ELEMENTS):
        ec, ac = e[start : start + CHUNK_ELEMENTS], a[start : start + CHUNK_ELEMENTS]
        if int_dtype is None:
            ne = ec != ac
            differing += int(ne.sum())
            max_ulps = None
            continue
        eb, ab = ec.view(int_dtype), ac.view(int_dtype)
        ne = eb != ab
        count = int(ne.sum())
        if not count:
            continue
        differing += count
        if bool((~torch.isfinite(ec[ne])).any() or (~torch.isfinite(ac[ne])).any()):
            nan_mismatch = True
            max_ulps = None
            continue
        width = int_dtype.itemsize * 8
        ulps = int((_ordered(eb[ne], width) - _ordered(ab[ne], width)).abs().max())
        if max_ulps is not None:
            max_ulps = max(max_ulps, ulps)
    return Difference(differing, max_ulps, nan_mismatch)

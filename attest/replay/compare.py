"""Per-tensor comparison of a recomputed tensor with a published one, in units in the last place (ulps) of the
storage dtype. Floats are mapped to integers whose order is the float order (+0 and -0 both 0), so the ulp
distance between two finite values is the difference of their integers."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from attest.checkpoint.reader import Checkpoint
from attest.checkpoint.torch_dtypes import SAFETENSORS_TAGS
from attest.merge.engine import MergedTensor
from attest.replay.report import TensorComparison, TensorStatus

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


def difference(expected: torch.Tensor, actual: torch.Tensor, so_far: Difference | None = None) -> Difference:
    """How far apart two tensors of the same dtype and shape are, chunk by chunk; with `so_far`, those of the
    pieces before them (one tensor compared slice by slice) are counted in."""
    e = expected.reshape(-1)
    a = actual.reshape(-1)
    int_dtype = _INT_VIEW.get(e.dtype)
    differing = 0 if so_far is None else so_far.differing_elements
    max_ulps: int | None = 0 if so_far is None else so_far.max_ulps
    nan_mismatch = False if so_far is None else so_far.nan_mismatch
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


def tensor_row(name: str, expected: MergedTensor, cand: Checkpoint, tolerance: int) -> TensorComparison:
    """The report row of one recomputed tensor against the candidate's."""
    if name not in cand:
        return TensorComparison(
            name=name, status=TensorStatus.MISSING, detail="the recipe produces this tensor; the candidate lacks it"
        )
    return _compare(name, expected, cand, tolerance)


def _compare(name: str, expected: MergedTensor, ckpt: Checkpoint, tolerance: int) -> TensorComparison:
    tag = SAFETENSORS_TAGS.get(expected.dtype, str(expected.dtype))
    row = TensorComparison(name=name, status=TensorStatus.EXACT, dtype=tag, shape=list(expected.shape))
    info = ckpt.info(name)
    if info.dtype != tag or tuple(info.shape) != tuple(expected.shape):
        row.status = TensorStatus.MISMATCH
        row.detail = f"candidate is {info.dtype} {list(info.shape)}, the recipe gives {tag} {list(expected.shape)}"
        return row
    diff: Difference | None = None  # None while every piece is byte-equal
    start = 0
    for piece in expected.pieces:  # each against the same elements of the candidate, its pages released after
        piece = piece.to("cpu").reshape(-1)
        stop = start + piece.numel()
        actual = ckpt.flat_range(name, start, stop)
        try:
            if not byte_equal(piece, actual):
                diff = difference(piece, actual, diff)
        finally:
            del actual
            ckpt.release_flat(name, start, stop)
        start = stop
    if diff is None:
        return row
    numel = math.prod(expected.shape)
    row.differing_elements = diff.differing_elements
    row.max_ulps = diff.max_ulps
    # At tolerance 0 any byte difference is a mismatch, a zero of the other sign (0 ulps apart) included.
    if tolerance > 0 and diff.max_ulps is not None and diff.max_ulps <= tolerance:
        row.status = TensorStatus.WITHIN_TOLERANCE
        row.detail = f"{diff.differing_elements} of {numel} elements differ by at most {diff.max_ulps} ulp"
    else:
        row.status = TensorStatus.MISMATCH
        if diff.nan_mismatch:
            how = "a NaN/inf differs"
        elif diff.max_ulps == 0:
            how = "the bytes differ: zeros of the other sign"
        elif diff.max_ulps is None:
            how = "the values differ"
        else:
            how = f"up to {diff.max_ulps} ulps"
        row.detail = f"{diff.differing_elements} of {numel} elements differ ({how})"
    return row

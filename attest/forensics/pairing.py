"""Pairing tensors across model folders for the fit, and the storage-precision facts the fit needs.

Forensics reads the model, every candidate and the base in one pass through `attest.checkpoint` (tensor by tensor,
zero-copy over read-only mappings, pages released once a tensor is done), so resident memory is the largest tensor
times the number of inputs, plus fixed-size chunk buffers.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from attest.checkpoint.reader import ARRAY_DTYPES, TensorTable
from attest.errors import InputError
from attest.identity.safetensors_reader import TensorInfo

FLOAT_DTYPES = ARRAY_DTYPES
"""Storage dtypes the fit and the residual test understand, as `TensorTable.array` reads them (BF16 as uint16 bit
patterns); others are compared byte for byte only."""

PRECISION_BITS: dict[str, int] = {"BF16": 8, "F16": 11, "F32": 24, "F64": 53}
"""Significand bits (with the implicit one): a value x is stored with ulp 2^(floor(log2|x|) + 1 - bits)."""

MIN_EXPONENT: dict[str, int] = {"BF16": -126, "F16": -14, "F32": -126, "F64": -1022}
"""Smallest normal exponent: below it the ulp stops shrinking (subnormals)."""

MAX_FINITE: dict[str, float] = {
    tag: (2.0 - 2.0 ** (1 - bits)) * 2.0 ** (1 - MIN_EXPONENT[tag]) for tag, bits in PRECISION_BITS.items()
}
"""Largest finite value: a recipe rounding past it is stored as an infinity."""

_LAYER = re.compile(r"^(?P<prefix>(?:.*?\.)?)(?P<index>\d+)\.(?P<suffix>.+)$")


class LayerKey(NamedTuple):
    """`model.layers.7.mlp.up_proj.weight` -> prefix `model.layers.`, index 7, suffix `mlp.up_proj.weight`. A named
    tuple: made ~10^5 times per detect, three times faster than a frozen dataclass."""

    prefix: str
    index: int  # type: ignore[assignment]  # the field deliberately shadows tuple.index
    suffix: str


def layer_of(name: str) -> LayerKey | None:
    """The first numeric path component of a tensor name is its layer (mergekit and HF naming)."""
    m = _LAYER.match(name)
    if m is None:
        return None
    return LayerKey(m["prefix"], int(m["index"]), m["suffix"])


@dataclass
class Pairing:
    """Which tensors are fitted (same name, shape and a float dtype in every input) and which are not."""

    fitted: list[str]
    unpaired_model: list[str]  # model tensors missing from some input (passthrough candidates for renumbering)
    skipped: list[str]  # present everywhere but not a float dtype: compared byte for byte only


def pair(model: TensorTable, candidates: Sequence[TensorTable], base: TensorTable | None) -> Pairing:
    """Pair tensors by name; a shape mismatch is bad input (these are not versions of one architecture)."""
    others = [*candidates, *([base] if base is not None else [])]
    fitted: list[str] = []
    unpaired: list[str] = []
    skipped: list[str] = []
    shared_any = False
    for name in sorted(model.where, key=lambda n: (model.info(n).begin, n)):
        info = model.info(name)
        present = [o for o in others if name in o.where]
        if present:
            shared_any = True
        for o in present:
            oi = o.info(name)
            if oi.shape != info.shape:
                raise InputError(
                    o.folder,
                    f"tensor {name!r} has shape {list(oi.shape)} but the model {model.folder} has {list(info.shape)}",
                )
        if len(present) < len(others):
            unpaired.append(name)
        elif info.dtype in FLOAT_DTYPES and all(o.info(name).dtype in FLOAT_DTYPES for o in others):
            (fitted if _numel(info) > 0 else skipped).append(name)
        else:
            skipped.append(name)
    if not shared_any:
        raise InputError(model.folder, "shares no tensor names with the candidates: nothing to compare")
    return Pairing(fitted, unpaired, skipped)


def _numel(info: TensorInfo) -> int:
    n = 1
    for d in info.shape:
        n *= d
    return n


def chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))

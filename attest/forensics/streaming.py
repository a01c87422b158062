"""Streaming tensor pairing across model folders, through the identity reader.

Forensics reads the model, every candidate and the base in one pass: tensor by tensor, each file mapped read-only
by `SafetensorsFile`, each tensor wrapped zero-copy with `torch.frombuffer` and its pages released once the tensor
is done. Resident memory is therefore the largest tensor times the number of inputs, plus fixed-size chunk buffers.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import blake3
import torch

from attest.errors import InputError
from attest.identity.folder import scan_folder
from attest.identity.safetensors_reader import SafetensorsFile, TensorInfo

FLOAT_DTYPES: dict[str, torch.dtype] = {
    "BF16": torch.bfloat16,
    "F16": torch.float16,
    "F32": torch.float32,
    "F64": torch.float64,
}
"""Storage dtypes the fit and the residual test understand (others are compared byte for byte only)."""

PRECISION_BITS: dict[str, int] = {"BF16": 8, "F16": 11, "F32": 24, "F64": 53}
"""Significand bits (with the implicit one): a value x is stored with ulp 2^(floor(log2|x|) + 1 - bits)."""

MIN_EXPONENT: dict[str, int] = {"BF16": -126, "F16": -14, "F32": -126, "F64": -1022}
"""Smallest normal exponent: below it the ulp stops shrinking (subnormals)."""

_LAYER = re.compile(r"^(?P<prefix>(?:.*\.)?)(?P<index>\d+)\.(?P<suffix>.+)$")


@dataclass(frozen=True)
class LayerKey:
    """`model.layers.7.mlp.up_proj.weight` -> prefix `model.layers.`, index 7, suffix `mlp.up_proj.weight`."""

    prefix: str
    index: int
    suffix: str


def layer_of(name: str) -> LayerKey | None:
    """The first numeric path component of a tensor name is its layer (mergekit and HF naming)."""
    m = _LAYER.match(name)
    if m is None:
        return None
    return LayerKey(m["prefix"], int(m["index"]), m["suffix"])


@dataclass
class Source:
    """One opened model folder: its weight files and where each tensor lives."""

    label: str
    root: Path
    files: list[SafetensorsFile] = field(default_factory=list)
    where: dict[str, tuple[SafetensorsFile, TensorInfo]] = field(default_factory=dict)

    def info(self, name: str) -> TensorInfo:
        return self.where[name][1]

    def tensor(self, name: str) -> torch.Tensor:
        """A flat, zero-copy tensor over the mapped bytes (read-only: never write into it)."""
        fh, info = self.where[name]
        dtype = FLOAT_DTYPES[info.dtype]
        view = fh.view(name)
        if len(view) == 0:
            return torch.empty(0, dtype=dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the mapping is read-only; we never write to it
            return torch.frombuffer(view, dtype=dtype)

    def raw_digest(self, name: str) -> bytes:
        """blake3 of dtype, shape and bytes: equality of whole tensors for passthrough layer mapping."""
        fh, info = self.where[name]
        h = blake3.blake3(f"{info.dtype}|{list(info.shape)}|".encode())
        h.update(fh.view(name))
        return h.digest()

    def release(self, name: str) -> None:
        fh, _ = self.where[name]
        fh.release(name)

    def close(self) -> None:
        for fh in self.files:
            fh.close()


def open_source(path: Path, label: str) -> Source:
    """Scan and open a folder; refuse one without safetensors weights (pickles are never unpickled)."""
    scan = scan_folder(path)
    if not scan.weight_files:
        raise InputError(path, "no safetensors weight files (PyTorch pickles are never unpickled)")
    src = Source(label=label, root=Path(path))
    try:
        for rel in sorted(scan.headers):
            fh = SafetensorsFile(scan.real_paths[rel])
            src.files.append(fh)
            for info in fh.tensors:
                src.where[info.name] = (fh, info)
    except BaseException:
        src.close()
        raise
    return src


@dataclass
class Pairing:
    """Which tensors are fitted (same name, shape and a float dtype in every input) and which are not."""

    fitted: list[str]
    unpaired_model: list[str]  # model tensors missing from some input (passthrough candidates for renumbering)
    skipped: list[str]  # present everywhere but not a float dtype: compared byte for byte only


def pair(model: Source, candidates: list[Source], base: Source | None) -> Pairing:
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
                    o.root,
                    f"tensor {name!r} has shape {list(oi.shape)} but the model {model.root} has {list(info.shape)}",
                )
        if len(present) < len(others):
            unpaired.append(name)
        elif info.dtype in FLOAT_DTYPES and all(o.info(name).dtype in FLOAT_DTYPES for o in others):
            (fitted if _numel(info) > 0 else skipped).append(name)
        else:
            skipped.append(name)
    if not shared_any:
        raise InputError(model.root, "shares no tensor names with the candidates: nothing to compare")
    return Pairing(fitted, unpaired, skipped)


def _numel(info: TensorInfo) -> int:
    n = 1
    for d in info.shape:
        n *= d
    return n


def chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))

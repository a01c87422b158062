"""Streaming safetensors output: headers are fixed up front from the plan, tensor bytes are appended as they are
computed (a tensor merged slice by slice, a slice at a time), so at most one output tensor is in memory. Shards
split at 5e9 bytes like mergekit."""

from __future__ import annotations

import json
import os
import struct
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch

from attest.checkpoint.torch_dtypes import SAFETENSORS_TAGS

MAX_SHARD_BYTES = 5_000_000_000


@dataclass(frozen=True, slots=True)
class OutputTensor:
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        n = self.dtype.itemsize
        for d in self.shape:
            n *= d
        return n


def _shards(tensors: Sequence[OutputTensor], max_bytes: int) -> list[list[OutputTensor]]:
    shards: list[list[OutputTensor]] = [[]]
    size = 0
    for t in tensors:
        if shards[-1] and size + t.nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += t.nbytes
    return shards


def _header(shard: list[OutputTensor]) -> bytes:
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for t in shard:
        header[t.name] = {
            "dtype": SAFETENSORS_TAGS[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + t.nbytes],
        }
        offset += t.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


class ShardedWriter:
    """Write tensors, in the planned order, into `folder` (a temporary folder the caller renames into place)."""

    def __init__(self, folder: Path, tensors: Sequence[OutputTensor], max_shard_bytes: int = MAX_SHARD_BYTES) -> None:
        self.folder = folder
        self.shards = _shards(tensors, max_shard_bytes)
        n = len(self.shards)
        self.file_names = (
            ["model.safetensors"] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        )
        self._queue = [t for shard in self.shards for t in shard]  # the planned order
        self._shard_of = array("I", [i for i, shard in enumerate(self.shards) for _ in shard])
        self._next = 0
        self._fh: BinaryIO | None = None
        self._shard = -1

    def write(self, name: str, tensor: torch.Tensor) -> None:
        self.write_pieces(name, tensor.dtype, tuple(tensor.shape), [tensor])

    def write_pieces(
        self, name: str, dtype: torch.dtype, shape: tuple[int, ...], pieces: Iterable[torch.Tensor]
    ) -> None:
        """Write one tensor given as pieces whose elements, in order, are its elements in row-major order (a tensor
        merged slice by slice is written as it is computed: only one slice is held)."""
        shard, planned = self._shard_of[self._next], self._queue[self._next]
        if name != planned.name or dtype != planned.dtype or tuple(shape) != planned.shape:
            raise RuntimeError(f"writer expected {planned} but got {name} {dtype} {tuple(shape)}")
        if shard != self._shard:
            self._close_file()
            self._fh = open(self.folder / self.file_names[shard], "wb")
            self._fh.write(_header(self.shards[shard]))
            self._shard = shard
        assert self._fh is not None
        written = 0
        for piece in pieces:
            if piece.dtype != dtype:
                raise RuntimeError(f"writer expected {dtype} pieces of {name} but got {piece.dtype}")
            if piece.numel():
                data = piece.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
                self._fh.write(data.data)
                written += data.nbytes
        if written != planned.nbytes:
            raise RuntimeError(f"writer expected {planned.nbytes} bytes of {name} but got {written}")
        self._next += 1

    def _close_file(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None

    def finish(self) -> None:
        if self._next != len(self._queue):
            raise RuntimeError(f"only {self._next} of {len(self._queue)} planned tensors were written")
        self._close_file()
        if len(self.shards) > 1:
            weight_map = {t.name: self.file_names[i] for i, shard in enumerate(self.shards) for t in shard}
            total = sum(t.nbytes for shard in self.shards for t in shard)
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            (self.folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")

    def abort(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

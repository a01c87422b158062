"""The one reader of a model folder's tensors, for merge, replay and forensics, on top of the identity reader.

The folder is scanned and every header validated once, by `attest.identity.folder.scan_folder` (the same rules
and bounds as the identity root); each weight file is then mapped read-only by `SafetensorsFile` with the header
the scan validated, after checking that the opened file is the one that was scanned. Tensors are zero-copy views
of the mapping and each tensor's pages can be released once used, so resident memory follows the tensor in hand.
"""

from __future__ import annotations

import functools
import os
import warnings
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import blake3
import numpy as np

from attest.errors import InputError
from attest.identity.dtypes import DTYPE_BITS
from attest.identity.folder import file_key, scan_folder
from attest.identity.safetensors_reader import SafetensorsFile, TensorInfo
from attest.strict_json import strict_loads

if TYPE_CHECKING:
    import torch

ARRAY_DTYPES: dict[str, np.dtype[Any]] = {
    "BF16": np.dtype(np.uint16),
    "F16": np.dtype(np.float16),
    "F32": np.dtype(np.float32),
    "F64": np.dtype(np.float64),
}
"""The floating dtypes `TensorTable.array` reads, as numpy dtypes. numpy has no bfloat16: a BF16 tensor is read as
its bit patterns (uint16), which is how detect's compiled sweeps take it; no other stored dtype maps to uint16."""


def as_float32(a: np.ndarray) -> np.ndarray:
    """A stored array's values as float32: bf16 bit patterns shifted into a float32's high half (exact), float16
    and float32 converted (exact; float64 rounds)."""
    if a.dtype == np.uint16:
        return (a.astype(np.uint32) << 16).view(np.float32)
    return a.astype(np.float32, copy=False)


def as_float64(a: np.ndarray) -> np.ndarray:
    """A stored array's values as float64 (exact from every type of ARRAY_DTYPES)."""
    return as_float32(a).astype(np.float64) if a.dtype == np.uint16 else a.astype(np.float64)


MAX_CONFIG_BYTES = 16 * 1024 * 1024

_quiet = [False]
"""Views over the read-only file mapping are read-only by design. torch warns about that once per process, so only
the first view is made under catch_warnings (one per view cost ~10 us, a tenth of detect's per-tensor time)."""


_THREADED_DIGEST = 1 << 22
"""Tensors of at least this many bytes are digested on blake3's own threads (a 32 MB tensor: 9.7 -> 6.7 ms)."""


SAMPLE_BYTES = 4096
"""Bytes read at each of the three places `sample_digest` reads."""
_SAMPLE_CONTEXT = "attest 2026-12 sampled tensor bytes v1"
"""blake3 key-derivation context of `sample_digest`: a different function from `raw_digest`'s plain blake3, so a
sample digest never equals a raw digest."""


@functools.lru_cache(maxsize=1024)
def _digest_prefix(dtype: str, shape: tuple[int, ...]) -> bytes:
    """What raw_digest hashes before the bytes (`BF16|[512, 64]|`), once per dtype and shape: routed experts share a
    handful of shapes, and formatting it cost ~1 us for each of the 10^5 tensors of a large MoE."""
    return f"{dtype}|{list(shape)}|".encode()


def raw_digest_of(info: TensorInfo, data: Any) -> bytes:
    """blake3 of `DTYPE|[shape]|` then the tensor's bytes (`data`: a buffer), on blake3's own threads for large
    tensors (the same digest either way)."""
    threads = blake3.blake3.AUTO if info.nbytes >= _THREADED_DIGEST else 1
    h = blake3.blake3(_digest_prefix(info.dtype, tuple(info.shape)), max_threads=threads)
    h.update(data)
    return h.digest()


def sampled_digest(info: TensorInfo, read: Callable[[int, int], bytes]) -> bytes:
    """blake3, keyed apart from raw_digest, of a tensor's dtype, shape, size and its first, middle and last
    SAMPLE_BYTES (`read(begin, end)`: bytes of the tensor's data)."""
    h = blake3.blake3(derive_key_context=_SAMPLE_CONTEXT)
    h.update(_digest_prefix(info.dtype, tuple(info.shape)))
    h.update(info.nbytes.to_bytes(8, "little"))
    for at in (0, (info.nbytes - SAMPLE_BYTES) // 2, info.nbytes - SAMPLE_BYTES):
        h.update(read(max(at, 0), min(at + SAMPLE_BYTES, info.nbytes)))
    return h.digest()


def torch_dtype(tag: str, where: Path) -> torch.dtype:
    """attest.checkpoint.torch_dtypes.torch_dtype, imported on first use (torch only where a caller computes in it)."""
    from attest.checkpoint.torch_dtypes import torch_dtype as of

    return of(tag, where)


class IndexedTensors(Mapping[str, tuple[SafetensorsFile, TensorInfo]]):
    """name -> (open file, entry), the names being a dict's keys (`_index`, in its order) and each entry made on
    access from what the dict's value points at: nothing else is held per tensor."""

    __slots__ = ("_index",)
    _index: dict[str, Any]

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)


class StoredTensors(IndexedTensors):
    """name -> (open file, entry) of a folder's stored tensors, over the folder scan's name index (one dict probe)
    and the files' header columns: the entry is made on access, nothing else is held per tensor."""

    __slots__ = ("_files", "_starts")

    def __init__(self, index: dict[str, int], starts: list[int], files: list[SafetensorsFile]) -> None:
        self._index = index
        self._starts = starts
        self._files = files

    def __getitem__(self, name: str) -> tuple[SafetensorsFile, TensorInfo]:
        return self.at(self._index[name])

    def at(self, position: int) -> tuple[SafetensorsFile, TensorInfo]:
        """(file, entry) of the tensor at a position of the name index."""
        k = bisect_right(self._starts, position) - 1
        f = self._files[k]
        return f, f.header.tensors.info(position - self._starts[k])

    def position_of(self, name: str) -> int:
        """The position of a stored tensor (KeyError for a name not stored)."""
        return self._index[name]

    def position(self, name: str) -> int | None:
        """The tensor's position in the folder's name index (None when absent): a stable small handle."""
        return self._index.get(name)

    def positions(self, names: Iterable[str]) -> array[int]:
        """The positions of these stored tensors, in order (KeyError for a name not stored)."""
        return array("I", map(self._index.__getitem__, names))

    def span(self, position: int) -> tuple[SafetensorsFile, int, int]:
        """(file, begin, end) of the tensor at a position: its bytes, without making its entry."""
        k = bisect_right(self._starts, position) - 1
        f = self._files[k]
        i = position - self._starts[k]
        offsets = f.header.tensors.offsets
        return f, offsets[i], offsets[i + 1]

    def get(self, name: str, default: None = None) -> tuple[SafetensorsFile, TensorInfo] | None:  # type: ignore[override]
        return self[name] if name in self._index else default


def _stored_sample(fh: SafetensorsFile, info: TensorInfo) -> bytes:
    """`sampled_digest` of a stored tensor, its pages read with pread."""
    return sampled_digest(info, lambda b, e: fh.read_at(info.begin + b, info.begin + e))


class TensorTable:
    """Tensors by name, each a range of bytes in a mapped file: the stored tensors of a folder, or a view of them."""

    def __init__(self, folder: Path, label: str, where: Mapping[str, tuple[SafetensorsFile, TensorInfo]]) -> None:
        self.folder = folder
        self.label = label
        self.where = where

    @property
    def names(self) -> list[str]:
        return list(self.where)

    def __contains__(self, name: str) -> bool:
        return name in self.where

    def info(self, name: str) -> TensorInfo:
        entry = self.where.get(name)
        if entry is None:
            raise InputError(self.folder, f"no tensor named {name!r}")
        return entry[1]

    def dtype(self, name: str) -> torch.dtype:
        return torch_dtype(self.info(name).dtype, self.folder)

    def files_of(self, name: str) -> list[str]:
        """The resolved paths of the files holding a tensor's bytes (where a work unit reading it should run)."""
        entry = self.where.get(name)
        return [str(Path(entry[0].path).resolve())] if entry is not None else []

    def array(self, name: str) -> np.ndarray:
        """A flat, read-only numpy array over the mapped bytes (no copy) of a floating tensor (ARRAY_DTYPES: BF16 as
        its uint16 bit patterns). What detect reads: no torch."""
        dtype = ARRAY_DTYPES.get(self.info(name).dtype)
        if dtype is None:
            raise InputError(self.folder, f"{name}: tensors of dtype {self.info(name).dtype} are not floating weights")
        return self._view(name, dtype)

    def bits(self, name: str) -> np.ndarray | None:
        """A flat, read-only view of the stored elements as unsigned integers of their width (any whole-byte dtype:
        FP8, integers, floats), for moving elements without reading their values; None for sub-byte dtypes."""
        width = DTYPE_BITS.get(self.info(name).dtype, 0)
        return self._view(name, np.dtype(f"<u{width // 8}")) if width in (8, 16, 32, 64) else None

    def _view(self, name: str, dtype: np.dtype[Any]) -> np.ndarray:
        fh, info = self.where[name]
        return np.frombuffer(fh.view_of(info), dtype=dtype)

    def array_range(self, name: str, start: int, stop: int) -> np.ndarray:
        """Elements [start, stop) of `array(name)` (no copy)."""
        return self.array(name)[start:stop]

    def flat(self, name: str) -> torch.Tensor:
        """A flat, read-only tensor over the mapped bytes (no copy). Callers must not write into it."""
        import torch

        fh, info = self.where[name]
        dtype = torch_dtype(info.dtype, self.folder)
        view = fh.view_of(info)
        if len(view) == 0:
            return torch.empty(0, dtype=dtype)
        if _quiet[0]:
            return torch.frombuffer(view, dtype=dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            out = torch.frombuffer(view, dtype=dtype)
        _quiet[0] = True
        return out

    def flat_range(self, name: str, start: int, stop: int) -> torch.Tensor:
        """Elements [start, stop) of the tensor, flat and read-only over the mapped bytes (no copy): a slice of a
        tensor too large to hold whole in its working dtype."""
        return self.flat(name)[start:stop]

    def release_flat(self, name: str, start: int, stop: int) -> None:
        """`release` for elements [start, stop) of a tensor (a slice read with flat_range)."""
        fh, info = self.where[name]
        size = DTYPE_BITS[info.dtype] // 8
        fh.release_range(info.begin + start * size, info.begin + stop * size)

    def load(self, name: str) -> torch.Tensor:
        """The tensor in its shape, read-only over the mapped bytes (no copy)."""
        import torch

        info = self.info(name)
        if info.nbytes == 0:
            return torch.empty(info.shape, dtype=torch_dtype(info.dtype, self.folder))
        return self.flat(name).reshape(info.shape)

    def raw_digest(self, name: str) -> bytes:
        """`raw_digest_of` a stored tensor: equality of whole tensors (passthrough layers, copied experts)."""
        fh, info = self.where[name]
        return raw_digest_of(info, fh.view_of(info))

    def sample_digest(self, name: str) -> bytes:
        """`sampled_digest` of a stored tensor, its pages read with pread: tensors with equal bytes have equal
        samples, so tensors whose samples differ cannot be copies of each other and need no raw digest
        (attest.forensics.digests.confirm_copies)."""
        return _stored_sample(*self.where[name])

    def copy_digest(self, name: str, sampled_above: int) -> bytes:
        """`raw_digest`, or `sample_digest` for a tensor of more than `sampled_above` bytes, with one lookup of the
        tensor (detect's pass digests every tensor of every model: 10^5 per model for a large MoE)."""
        fh, info = self.where[name]
        return raw_digest_of(info, fh.view_of(info)) if info.nbytes <= sampled_above else _stored_sample(fh, info)

    def release(self, name: str) -> None:
        """Drop this tensor's pages from our resident memory once it has been used."""
        fh, info = self.where[name]
        fh.release_of(info)

    def release_many(self, names: list[str]) -> None:
        """`release` for many tensors: their byte ranges merged per file, one system call per run of adjacent ranges
        (a block of routed experts is usually one run)."""
        spans: dict[int, tuple[SafetensorsFile, list[tuple[int, int]]]] = {}
        for name in names:
            fh, info = self.where[name]
            spans.setdefault(id(fh), (fh, []))[1].append((info.begin, info.end))
        for fh, ranges in spans.values():
            ranges.sort()
            start, end = ranges[0]
            for b, e in ranges[1:]:
                if b > end:
                    fh.release_range(start, end)
                    start = b
                end = max(end, e)
            fh.release_range(start, end)


class Checkpoint(TensorTable):
    """A model folder: its stored tensors by name and (unless `with_config=False`) its config.json."""

    def __init__(self, folder: str | os.PathLike[str], *, label: str | None = None, with_config: bool = True) -> None:
        root = Path(folder)
        super().__init__(root, label if label is not None else str(folder), {})
        scan = scan_folder(root)
        if not scan.weight_files:
            raise InputError(root, "no safetensors weight files (PyTorch pickles are never unpickled)")
        self.pickle_files: list[str] = list(scan.pickle_files)  # relative POSIX paths; never loaded
        self.other_files: list[str] = list(scan.other_files)
        self.files: list[SafetensorsFile] = []
        try:
            for rel_path in scan.weight_files:
                rel = rel_path.as_posix()
                f = SafetensorsFile(scan.real_paths[rel], scan.headers[rel])
                self.files.append(f)
                if file_key(f.stat) != scan.stats[rel]:
                    raise InputError(root / rel, "file changed after the folder was scanned")
            self.where = StoredTensors(scan.index, scan.starts, self.files)
            self.config: dict[str, Any] = self._read_config() if with_config else {}
        except BaseException:
            self.close()
            raise

    @property
    def has_config(self) -> bool:
        return (self.folder / "config.json").is_file()

    def _read_config(self) -> dict[str, Any]:
        path = self.folder / "config.json"
        if not path.is_file():
            return {}
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise InputError(path, f"larger than {MAX_CONFIG_BYTES} bytes")
        try:
            data = strict_loads(path.read_bytes())
        except (ValueError, UnicodeDecodeError) as exc:
            raise InputError(path, f"not valid JSON ({exc})") from None
        except RecursionError:
            raise InputError(path, "not valid JSON (nested too deeply)") from None
        if not isinstance(data, dict):
            raise InputError(path, "config.json is not a JSON object")
        return data

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for f in self.files:
            f.close()
        self.files = []

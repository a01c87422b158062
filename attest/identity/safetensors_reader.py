"""A strict safetensors reader over mmap.

Every number in a safetensors header comes from a possibly hostile file: the header length, the JSON itself, each
tensor's dtype, shape and data_offsets. This reader checks all of them before any tensor byte is touched, and hands
out zero-copy memoryviews of the mapped file. It never interprets bytes as code.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any

from attest.errors import InputError
from attest.identity.dtypes import DTYPE_BITS, expected_nbytes
from attest.identity.header_table import HeaderEntries, TensorInfo
from attest.strict_json import reject_duplicate_keys, strict_loads

FAULT_AROUND_BYTES = 2 * 1024 * 1024
"""A page fault on a file mapping can map the cached pages around it, up to the 2 MiB page-table block (fault-around,
large page-cache folios; measured: touching one 4 KiB tensor mapped 512 KiB)."""
MAX_HEADER_BYTES = 100_000_000
"""Headers larger than this are refused (the safetensors library uses the same bound)."""
MAX_JSON_INT = 2**53 - 1
MAX_TENSORS = 262_144
"""Tensors per folder (all weight files together), SPEC.md 1.6. The largest public checkpoints hold about 10^5
(a 61-layer, 384-expert MoE with per-block scales); far more is a header built to make hashing slow and large."""


_MADVISE = hasattr(mmap.mmap, "madvise") and hasattr(mmap, "MADV_DONTNEED")


class _TooManyTensors(Exception):
    """Raised from inside the JSON parser, so that a header with too many entries is never built in memory."""


class TensorCountError(InputError):
    """A header that holds more tensors than the caller's budget."""


@dataclass(frozen=True)
class SafetensorsHeader:
    path: Path
    file_size: int
    data_start: int
    tensors: HeaderEntries  # in data-offset order; TensorInfo made on access
    metadata: dict[str, str]

    def by_name(self) -> dict[str, TensorInfo]:
        return {t.name: t for t in self.tensors}


_DTYPES = {d: d for d in DTYPE_BITS}
"""Each dtype tag as one shared string: 10^5 tensor entries hold a reference, not a copy each."""


_Entry = tuple[int, int, str, str, tuple[int, ...]]
"""(begin, end, name, dtype, shape) of a checked entry, offsets absolute."""
_SPAN = itemgetter(0, 1)


def read_header(path: str | os.PathLike[str], max_tensors: int = MAX_TENSORS) -> SafetensorsHeader:
    """Read and validate the header of one safetensors file (at most `max_tensors` tensors). Reads at most
    8 + MAX_HEADER_BYTES bytes."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < 8:
                raise InputError(p, f"truncated safetensors file ({size} bytes, shorter than the 8-byte header length)")
            (n,) = struct.unpack("<Q", fh.read(8))
            if n > MAX_HEADER_BYTES:
                raise InputError(p, f"safetensors header of {n} bytes exceeds the {MAX_HEADER_BYTES}-byte limit")
            if 8 + n > size:
                raise InputError(p, f"safetensors header length {n} runs past the end of the {size}-byte file")
            raw = fh.read(n)
    except OSError as exc:
        raise InputError(p, f"cannot read: {exc.strerror or exc}") from None
    if len(raw) != n:
        raise InputError(p, "file shrank while being read")
    return parse_header(p, raw, size, max_tensors)


def _bounded_loads(text: str, max_objects: int) -> Any:
    """strict_loads that stops as soon as the document holds more than `max_objects` JSON objects."""
    count = 0

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal count
        count += 1
        if count > max_objects:
            raise _TooManyTensors
        return reject_duplicate_keys(pairs)

    return strict_loads(text, object_pairs_hook=hook)


def parse_header(p: Path, raw: bytes, size: int, max_tensors: int = MAX_TENSORS) -> SafetensorsHeader:
    """Validate a raw header (the N bytes after the length prefix) against a file of `size` bytes."""
    n = len(raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(p, "safetensors header is not valid UTF-8") from None
    if not text.startswith("{"):
        raise InputError(p, "safetensors header is not a JSON object")
    try:
        header = _bounded_loads(text, max_tensors + 2)  # each tensor entry, __metadata__, the header itself
    except _TooManyTensors:
        raise TensorCountError(p, f"safetensors header holds more than the {max_tensors} tensors allowed") from None
    except (ValueError, RecursionError) as exc:
        raise InputError(p, f"safetensors header is not valid JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(header, dict):
        raise InputError(p, "safetensors header is not a JSON object")

    data_start = 8 + n
    buffer_len = size - data_start
    metadata: dict[str, str] = {}
    tensors: list[_Entry] = []
    shapes: dict[tuple[int, ...], tuple[int, ...]] = {}  # one tuple per distinct shape (experts share theirs)
    for name, entry in header.items():
        if name == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                raise InputError(p, "__metadata__ must map strings to strings")
            if not all(_is_unicode(s) for kv in entry.items() for s in kv):
                raise InputError(p, "__metadata__ holds a string that is not valid Unicode (a lone surrogate)")
            metadata = dict(entry)
            continue
        tensors.append(_parse_entry(p, name, entry, data_start, buffer_len, shapes))
    if len(tensors) > max_tensors:
        raise TensorCountError(p, f"safetensors header holds more than the {max_tensors} tensors allowed")

    del header
    tensors.sort(key=_SPAN)  # stable: entries at the same offsets (empty tensors) keep the header's order
    cursor = data_start
    for begin, end, name, _, _ in tensors:
        if begin < cursor:
            raise InputError(
                p, f"tensor {name!r} overlaps the previous tensor (data_offsets start {begin - data_start})"
            )
        if begin > cursor:
            raise InputError(p, f"gap of {begin - cursor} bytes before tensor {name!r} in the data buffer")
        cursor = end
    if cursor != size:
        raise InputError(p, f"{size - cursor} bytes after the last tensor are not covered by any tensor")
    return SafetensorsHeader(p, size, data_start, HeaderEntries(tensors, size), metadata)


def _is_unicode(text: str) -> bool:
    """JSON escapes can spell lone surrogates (\\ud800), which no UTF-8 string holds and no record can encode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _parse_entry(
    p: Path, name: str, entry: Any, data_start: int, buffer_len: int, shapes: dict[tuple[int, ...], tuple[int, ...]]
) -> _Entry:
    if not name:
        raise InputError(p, "empty tensor name in safetensors header")
    if not name.isascii() and not _is_unicode(name):
        raise InputError(p, f"tensor name {name!r} is not valid Unicode (a lone surrogate)")
    if not isinstance(entry, dict):
        raise InputError(p, f"tensor {name!r}: entry is not a JSON object")
    if len(entry) != 3 or "dtype" not in entry or "shape" not in entry or "data_offsets" not in entry:
        raise InputError(p, f"tensor {name!r}: entry must have exactly dtype, shape and data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise InputError(p, f"tensor {name!r}: unknown dtype {dtype!r}")
    # json gives exact ints and bools only, so `type(d) is int` is an integer that is not a bool.
    if type(shape) is not list or not all(type(d) is int and d >= 0 for d in shape):
        raise InputError(p, f"tensor {name!r}: shape must be a list of non-negative integers")
    if len(shape) > 64:
        raise InputError(p, f"tensor {name!r}: {len(shape)} dimensions is more than the 64 allowed")
    if shape and max(shape) > MAX_JSON_INT:
        # Canonical JSON (RFC 8785) writes numbers as doubles: larger integers would collide in tensor records.
        raise InputError(p, f"tensor {name!r}: a dimension above 2^53 - 1 cannot be part of an identity record")
    if not (type(offsets) is list and len(offsets) == 2 and type(offsets[0]) is int and type(offsets[1]) is int):
        raise InputError(p, f"tensor {name!r}: data_offsets must be two integers")
    begin, end = offsets
    if not 0 <= begin <= end:
        raise InputError(p, f"tensor {name!r}: data_offsets [{begin}, {end}] are not 0 <= begin <= end")
    if end > buffer_len:
        raise InputError(
            p,
            f"tensor {name!r}: data_offsets [{begin}, {end}] out of bounds of the {buffer_len}-byte data buffer"
            " (truncated file?)",
        )
    want = expected_nbytes(dtype, shape)
    if want is None:
        raise InputError(p, f"tensor {name!r}: shape {shape} x {dtype}: the element count does not fill whole bytes")
    if want != end - begin:
        raise InputError(
            p, f"tensor {name!r}: shape {shape} x {dtype} needs {want} bytes but data_offsets span {end - begin}"
        )
    dims = tuple(shape)
    return (data_start + begin, data_start + end, name, _DTYPES[dtype], shapes.setdefault(dims, dims))


class SafetensorsFile:
    """A validated safetensors file, mapped read-only. Use as a context manager."""

    def __init__(self, path: str | os.PathLike[str], header: SafetensorsHeader | None = None) -> None:
        """`header`: the one a folder scan already validated for this file (it is not parsed twice)."""
        self.header = header if header is not None else read_header(path)
        self.path = Path(path)
        try:
            self._fh = open(self.path, "rb")
        except OSError as exc:
            raise InputError(self.path, f"cannot read: {exc.strerror or exc}") from None
        st = os.fstat(self._fh.fileno())
        self.stat = st
        """What the opened file is (a caller that scanned the folder checks it is the file it scanned)."""
        if st.st_size != self.header.file_size:
            self._fh.close()
            raise InputError(self.path, "file changed size while being opened")
        self._map: mmap.mmap | None = None
        if st.st_size > 0:
            self._map = mmap.mmap(self._fh.fileno(), 0, access=mmap.ACCESS_READ)
        self._by_name: dict[str, TensorInfo] | None = (
            None  # built on first lookup by name (a folder reader has its own)
        )

    def __enter__(self) -> SafetensorsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:
                # A caller still holds a view; the mapping goes away with the last reference.
                pass
            self._map = None
        self._fh.close()

    @property
    def tensors(self) -> HeaderEntries:
        return self.header.tensors

    def info(self, name: str) -> TensorInfo:
        if self._by_name is None:
            self._by_name = self.header.by_name()
        try:
            return self._by_name[name]
        except KeyError:
            raise InputError(self.path, f"no tensor named {name!r}") from None

    def view(self, name: str) -> memoryview:
        """Zero-copy bytes of one tensor."""
        return self.view_of(self.info(name))

    def view_of(self, t: TensorInfo) -> memoryview:
        """Zero-copy bytes of a range of this file's data buffer (a tensor of its header, or a slice of one)."""
        if self._map is None or t.nbytes == 0:
            return memoryview(b"")
        return memoryview(self._map)[t.begin : t.end]

    def view_range(self, begin: int, end: int) -> memoryview:
        """Zero-copy bytes [begin, end) of the file (consecutive tensors read as one); the range must be within it."""
        if self._map is None or end <= begin:
            return memoryview(b"")
        if begin < 0 or end > len(self._map):
            raise ValueError(f"range [{begin}, {end}) outside {self.path}")
        return memoryview(self._map)[begin:end]

    def read_at(self, begin: int, end: int) -> bytes:
        """Bytes [begin, end) of the file, read with pread rather than through the mapping: a few pages of many
        tensors sampled ahead of a pass do not become resident memory of this process. Within the file only."""
        if not 0 <= begin <= end <= self.header.file_size:
            raise ValueError(f"range [{begin}, {end}) outside {self.path}")
        out = os.pread(self._fh.fileno(), end - begin, begin)
        if len(out) != end - begin:
            raise InputError(self.path, "file shrank while being read")
        return out

    def release(self, name: str) -> None:
        self.release_of(self.info(name))

    def release_of(self, t: TensorInfo) -> None:
        """Tell the kernel we are done with a tensor's pages, so resident memory tracks the tensor in hand."""
        self.release_range(t.begin, t.end)

    def release_range(self, begin: int, end: int) -> None:
        """release_of for a byte range of the file (many small tensors read together: one system call)."""
        if self._map is None or end <= begin:
            return
        # From the start of the fault-around block: touching a tensor maps cached pages around the fault, earlier
        # (already released) small tensors included, which would otherwise stay resident for good and make memory
        # grow with the model. Dropping pages a caller still reads is harmless: they are file-backed and fault in.
        start = (begin // FAULT_AROUND_BYTES) * FAULT_AROUND_BYTES
        if _MADVISE:
            self._map.madvise(mmap.MADV_DONTNEED, start, end - start)

    def __iter__(self) -> Iterator[TensorInfo]:
        return iter(self.header.tensors)

"""One weight file's validated header entries held as columns, so that memory does not grow by objects per tensor.

A header of 10^5 entries held as one `TensorInfo` each (a slotted object, two offset integers) costs about 130 bytes
per tensor beyond its name, in every open folder. Here the entries of one file are its names (one string each, the
only object per tensor), the data offsets as one integer array (validated entries are contiguous, so entry i spans
offsets[i]..offsets[i + 1]), a dtype code per entry and a shape number into the file's few distinct shapes (experts
share theirs). `TensorInfo` objects are made on access. Names are interned (`sys.intern`): the same tensor name in a
model, its parents and a candidate is one string.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterator, Sequence
from typing import NamedTuple, overload

from attest.identity.dtypes import DTYPE_BITS

DTYPE_TAGS: tuple[str, ...] = tuple(sorted(DTYPE_BITS))
DTYPE_CODES = {d: i for i, d in enumerate(DTYPE_TAGS)}


class TensorInfo(NamedTuple):
    """One tensor entry of a validated header. Offsets are absolute positions in the file. A named tuple: made on
    access from the header columns, several times faster than a frozen dataclass."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


class HeaderEntries(Sequence[TensorInfo]):
    """A file's validated entries in data-offset order: per tensor its name, 8 bytes of offset, a dtype code and a
    shape number."""

    __slots__ = ("_dtypes", "_shape_ids", "_shapes", "names", "offsets")

    def __init__(self, entries: Sequence[tuple[int, int, str, str, tuple[int, ...]]], data_end: int) -> None:
        """`entries`: (begin, end, name, dtype, shape) in data-offset order, contiguous (each begins where the
        previous ends; the caller has checked it), the last ending at `data_end`."""
        self.names: list[str] = [sys.intern(e[2]) for e in entries]
        self.offsets = array("Q", [e[0] for e in entries])  # entry i spans offsets[i]..offsets[i + 1]
        self.offsets.append(data_end)
        self._dtypes = bytes([DTYPE_CODES[e[3]] for e in entries])
        shape_ids: dict[tuple[int, ...], int] = {}
        self._shape_ids = array("I", [shape_ids.setdefault(e[4], len(shape_ids)) for e in entries])
        self._shapes: tuple[tuple[int, ...], ...] = tuple(shape_ids)

    def __len__(self) -> int:
        return len(self.names)

    def begin(self, i: int) -> int:
        return self.offsets[i]

    def end(self, i: int) -> int:
        return self.offsets[i + 1]

    def dtype(self, i: int) -> str:
        return DTYPE_TAGS[self._dtypes[i]]

    def shape(self, i: int) -> tuple[int, ...]:
        return self._shapes[self._shape_ids[i]]

    def info(self, i: int) -> TensorInfo:
        """Entry i (0 <= i < len): what `self[i]` gives, without the index checks."""
        return TensorInfo(
            self.names[i],
            DTYPE_TAGS[self._dtypes[i]],
            self._shapes[self._shape_ids[i]],
            self.offsets[i],
            self.offsets[i + 1],
        )

    @overload
    def __getitem__(self, i: int) -> TensorInfo: ...
    @overload
    def __getitem__(self, i: slice) -> list[TensorInfo]: ...
    def __getitem__(self, i: int | slice) -> TensorInfo | list[TensorInfo]:
        if isinstance(i, slice):
            return [self.info(j) for j in range(*i.indices(len(self)))]
        n = len(self.names)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("tensor index out of range")
        return self.info(i)

    def __iter__(self) -> Iterator[TensorInfo]:
        names, dtypes, shape_ids, shapes, offsets = (
            self.names,
            self._dtypes,
            self._shape_ids,
            self._shapes,
            self.offsets,
        )
        for i, name in enumerate(names):
            yield TensorInfo(name, DTYPE_TAGS[dtypes[i]], shapes[shape_ids[i]], offsets[i], offsets[i + 1])

    def held_bytes(self) -> int:
        """Bytes of the columns beyond the name strings (the list of them, offsets, dtype codes, shape numbers)."""
        return (
            8 * len(self.names)
            + self.offsets.itemsize * len(self.offsets)
            + len(self._dtypes)
            + (self._shape_ids.itemsize * len(self._shape_ids))
        )

"""Merkle trees with domain separation (RFC 9162 shape).

Every leaf hash starts with a one-byte tag saying what it is, and every inner node with 0x01, so no leaf of one kind
can be passed off as an inner node or as a leaf of another kind:

    0x00  data chunk       H(0x00 || chunk bytes)
    0x01  inner node       H(0x01 || left || right)
    0x02  tensor record    H(0x02 || JCS(record))
    0x03  file record      H(0x03 || JCS(record))
    0x04  model record     H(0x04 || JCS(record))

A tree over n leaf hashes splits at the largest power of two below n, as RFC 9162 section 2.1.1 does; a tree of one
leaf is that leaf hash; a tree of no leaves is H("").
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol, overload

import blake3
import rfc8785

Algorithm = Literal["sha256", "blake3"]
ALGORITHMS: tuple[Algorithm, ...] = ("sha256", "blake3")

TAG_CHUNK = b"\x00"
TAG_NODE = b"\x01"
TAG_TENSOR = b"\x02"
TAG_FILE = b"\x03"
TAG_MODEL = b"\x04"


class Hasher(Protocol):
    def update(self, data: Any, /) -> Any: ...
    def digest(self) -> bytes: ...


def new_hasher(algorithm: Algorithm) -> Hasher:
    if algorithm == "sha256":
        return hashlib.sha256()
    if algorithm == "blake3":
        return blake3.blake3()
    raise ValueError(f"unknown hash algorithm {algorithm!r}")


def hash_tagged(algorithm: Algorithm, tag: bytes, *parts: bytes | memoryview) -> bytes:
    if algorithm == "sha256" and len(parts) == 1 and len(parts[0]) <= 4096:  # records: the per-tensor hot path
        return hashlib.sha256(tag + parts[0]).digest()
    h = new_hasher(algorithm)
    h.update(tag)
    for part in parts:
        h.update(part)
    return h.digest()


def hash_record(algorithm: Algorithm, tag: bytes, record: dict[str, Any]) -> bytes:
    """Leaf hash of a structured record: the tag, then the record as RFC 8785 canonical JSON."""
    return hash_tagged(algorithm, tag, rfc8785.dumps(record))


def _split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


class PackedLeaves(Sequence[bytes]):
    """Leaf hashes of 32 bytes packed in one buffer (not a bytes object each: 10^5 tensors), read as a sequence of
    bytes (root's and audit_path's input)."""

    __slots__ = ("_buf",)

    def __init__(self, buf: bytes | bytearray) -> None:
        self._buf = buf

    def __len__(self) -> int:
        return len(self._buf) // 32

    @overload
    def __getitem__(self, i: int) -> bytes: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[bytes]: ...
    def __getitem__(self, i: int | slice) -> bytes | Sequence[bytes]:
        if isinstance(i, slice):
            start, stop, step = i.indices(len(self))
            if step == 1:
                return PackedLeaves(self._buf[32 * start : 32 * max(start, stop)])
            return [self[j] for j in range(start, stop, step)]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return bytes(self._buf[32 * i : 32 * i + 32])


def root(algorithm: Algorithm, leaves: Sequence[bytes]) -> bytes:
    """Merkle tree hash over leaf hashes (iterative, O(n) hashes, O(log n) stack)."""
    if not leaves:
        return new_hasher(algorithm).digest()
    if len(leaves) == 1:  # most tensors of an MoE checkpoint are one chunk
        return leaves[0]
    node: Callable[[bytes, bytes], bytes] = lambda a, b: hash_tagged(algorithm, TAG_NODE, a, b)  # noqa: E731

    def mth(lo: int, hi: int) -> bytes:
        n = hi - lo
        if n == 1:
            return leaves[lo]
        k = _split(n)
        return node(mth(lo, lo + k), mth(lo + k, hi))

    return mth(0, len(leaves))


def audit_path(algorithm: Algorithm, leaves: Sequence[bytes], index: int) -> list[bytes]:
    """Sibling hashes from leaf `index` up to the root (RFC 9162 section 2.1.3.1 PATH)."""
    if not 0 <= index < len(leaves):
        raise IndexError(index)

    def path(m: int, lo: int, hi: int) -> list[bytes]:
        n = hi - lo
        if n == 1:
            return []
        k = _split(n)
        if m < k:
            return [*path(m, lo, lo + k), root(algorithm, leaves[lo + k : hi])]
        return [*path(m - k, lo + k, hi), root(algorithm, leaves[lo : lo + k])]

    return path(index, 0, len(leaves))


def root_from_path(algorithm: Algorithm, leaf: bytes, index: int, tree_size: int, path: Sequence[bytes]) -> bytes:
    """Recompute the root from a leaf and its audit path (RFC 9162 section 2.1.3.2). Raises ValueError if the path
    does not have the length the tree size implies."""
    if not 0 <= index < tree_size:
        raise ValueError(f"leaf index {index} outside a tree of {tree_size} leaves")
    fn, sn = index, tree_size - 1
    r = leaf
    for p in path:
        if sn == 0:
            raise ValueError("audit path is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = hash_tagged(algorithm, TAG_NODE, p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = hash_tagged(algorithm, TAG_NODE, r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ValueError("audit path is shorter than the tree is deep")
    return r

"""Chunked, parallel data roots for byte spans of files.

A span (a tensor's bytes, or a whole file) is cut into CHUNK_SIZE-byte chunks; each chunk is a Merkle leaf
H(0x00 || chunk) and the span's data root is the Merkle tree over those leaves. An empty span is one empty chunk.
Work is cut into units of about UNIT_BYTES that each map just their window of the file, so one large tensor is
hashed on every core and resident memory stays near min(workers x UNIT_BYTES, MAPPED_BUDGET) whatever the model
size.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from attest.errors import InputError
from attest.identity.merkle import TAG_CHUNK, Algorithm, hash_tagged, new_hasher, root

CHUNK_SIZE = 1 << 20
"""Fixed by the identity format (SPEC.md): changing it changes every root."""

UNIT_BYTES = 32 << 20
"""Largest unit of work (one mapped window of one file)."""

MAPPED_BUDGET = 192 << 20
"""Most file bytes mapped at once over all workers: resident memory must not grow with the core count either
(16 workers x 32 MiB would be half a gigabyte), so units shrink on machines with many cores."""

QUEUED_PER_WORKER = 8
"""Units handed to the pool ahead of the one being collected. A queued unit holds no memory (it maps its window
only while it runs), and a deep queue keeps every worker busy when the collecting thread is slow to be scheduled
on a loaded machine."""


@dataclass(frozen=True, slots=True)
class Span:
    path: Path
    offset: int
    length: int

    @property
    def n_chunks(self) -> int:
        return max(1, -(-self.length // CHUNK_SIZE))


@dataclass(frozen=True, slots=True)
class _Piece:
    span: int  # index into the spans list
    first: int  # first chunk index in the span
    last: int  # one past the last chunk


def _plan(spans: Sequence[Span], unit_chunks: int) -> list[list[_Piece]]:
    """Group chunks into units that stay within one file and cover about UNIT_BYTES each."""
    units: list[list[_Piece]] = []
    current: list[_Piece] = []
    current_chunks = 0
    current_path: Path | None = None
    for i, s in enumerate(spans):
        first = 0
        n_chunks = s.n_chunks
        while first < n_chunks:
            if current and (current_chunks >= unit_chunks or current_path != s.path):
                units.append(current)
                current, current_chunks = [], 0
            take = min(n_chunks - first, unit_chunks - current_chunks)
            current.append(_Piece(i, first, first + take))
            current_chunks += take
            current_path = s.path
            first += take
    if current:
        units.append(current)
    return units


def _hash_unit(algorithm: Algorithm, spans: Sequence[Span], unit: list[_Piece]) -> list[list[bytes]]:
    path = spans[unit[0].span].path
    starts = [spans[p.span].offset + p.first * CHUNK_SIZE for p in unit]
    ends = [min(spans[p.span].offset + p.last * CHUNK_SIZE, spans[p.span].offset + spans[p.span].length) for p in unit]
    lo, hi = min(starts), max(ends)
    out: list[list[bytes]] = []
    if hi == lo:  # only empty spans
        return [[hash_tagged(algorithm, TAG_CHUNK)] for _ in unit]
    base = (lo // mmap.ALLOCATIONGRANULARITY) * mmap.ALLOCATIONGRANULARITY
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if hi > size:
                raise InputError(path, f"file is shorter ({size} bytes) than its header says ({hi} bytes)")
            with mmap.mmap(fh.fileno(), hi - base, access=mmap.ACCESS_READ, offset=base) as window:
                if hasattr(window, "madvise") and hasattr(mmap, "MADV_SEQUENTIAL"):
                    window.madvise(mmap.MADV_SEQUENTIAL)
                view = memoryview(window)
                try:
                    for p in unit:
                        s = spans[p.span]
                        leaves = []
                        for c in range(p.first, p.last):
                            a = s.offset + c * CHUNK_SIZE - base
                            b = min(a + CHUNK_SIZE, s.offset + s.length - base)
                            h = new_hasher(algorithm)
                            h.update(TAG_CHUNK)
                            if b > a:
                                h.update(view[a:b])
                            leaves.append(h.digest())
                        out.append(leaves)
                finally:
                    view.release()
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from None
    return out


def data_roots(
    algorithm: Algorithm,
    spans: Sequence[Span],
    workers: int | None = None,
    on_bytes: Callable[[int], None] | None = None,
    keep_leaves: bool = False,
) -> tuple[list[bytes], list[list[bytes]] | None]:
    """Data root of every span (and, with keep_leaves, every span's chunk leaves)."""
    workers = workers or os.cpu_count() or 1
    unit_chunks = max(1, min(UNIT_BYTES, MAPPED_BUDGET // workers) // CHUNK_SIZE)
    units = _plan(spans, unit_chunks)
    leaves: list[list[bytes]] = [[] for _ in spans]
    roots: list[bytes] = [b""] * len(spans)
    if not units:
        return [], ([] if keep_leaves else None)

    def collect(unit: list[_Piece], result: list[list[bytes]]) -> None:
        # Units are collected in plan order, so a span is complete when its last chunk arrives: its root is taken
        # then and its leaves dropped, keeping memory independent of the model size.
        for p, ls in zip(unit, result, strict=True):
            leaves[p.span].extend(ls)
            if p.last == spans[p.span].n_chunks:
                roots[p.span] = root(algorithm, leaves[p.span])
                if not keep_leaves:
                    leaves[p.span] = []
            if on_bytes is not None:
                s = spans[p.span]
                done = min(p.last * CHUNK_SIZE, s.length) - min(p.first * CHUNK_SIZE, s.length)
                on_bytes(done)

    if workers == 1 or len(units) == 1:
        for unit in units:
            collect(unit, _hash_unit(algorithm, spans, unit))
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="attest-hash") as pool:
            window: list[tuple[list[_Piece], Future[list[list[bytes]]]]] = []
            for unit in units:
                window.append((unit, pool.submit(_hash_unit, algorithm, spans, unit)))
                if len(window) >= QUEUED_PER_WORKER * workers:
                    u, f = window.pop(0)
                    collect(u, f.result())
            for u, f in window:
                collect(u, f.result())
    return roots, (leaves if keep_leaves else None)

"""What detect takes from each paired tensor: its fit (or the inputs holding NaN/Inf) and the byte digests of the
model's and each candidate's copy, as rows of columns (attest.forensics.fit_table, attest.forensics.digests). The
single-process pass and the work units (forensics/units.py) both call fit_evidence, so a cluster run accumulates
exactly what one process does (a tensor's fit does not depend on which tensors share its block,
attest.forensics.fit)."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from attest.checkpoint.reader import TensorTable
from attest.forensics.digests import DIGEST_BYTES, copy_digest
from attest.forensics.fit import CHUNK_ELEMENTS, FitTable, fit_block, fit_large, submit, workers
from attest.forensics.kernels import Piece
from attest.forensics.report import NonFinite

Done = Callable[[list[str]], None]
"""Called with the names of each finished block once their evidence is taken (the caller releases their pages)."""


@dataclass
class PassEvidence:
    """The evidence of tensors `fits.names`, row i for the i-th name."""

    fits: FitTable  # a row that is not finite: some input holds NaN/Inf (or weights too large for a float64 Gram)
    digests: np.ndarray  # (N, 1 + k, DIGEST_BYTES) uint8: the raw digests of the model's, then each candidate's copy
    non_finite: list[tuple[int, NonFinite]]  # (row, an input holding NaN/Inf there), in row order
    notes: list[tuple[int, str]]  # (row, note)

    @classmethod
    def empty(cls, names: Sequence[str], k: int, with_base: bool) -> PassEvidence:
        """Rows for `names`, to be filled by `put`."""
        return cls(FitTable.empty(names, k, with_base), np.zeros((len(names), 1 + k, DIGEST_BYTES), np.uint8), [], [])

    def put(self, rows: Sequence[int], block: PassEvidence) -> None:
        """A block's evidence into these rows (its tensors' positions here)."""
        self.fits.put(rows, block.fits)
        self.digests[np.asarray(rows, dtype=np.intp)] = block.digests
        self.non_finite.extend((rows[r], x) for r, x in block.non_finite)
        self.notes.extend((rows[r], x) for r, x in block.notes)

    def in_order(self) -> tuple[list[NonFinite], list[str]]:
        """The non-finite inputs and the notes in row order (blocks finish in any order)."""
        return [x for _, x in sorted(self.non_finite, key=lambda rx: rx[0])], [
            x for _, x in sorted(self.notes, key=lambda rx: rx[0])
        ]


def fit_evidence(
    names: Sequence[str],
    msrc: TensorTable,
    csrc: Sequence[TensorTable],
    bsrc: TensorTable | None,
    done: Done | None = None,
) -> PassEvidence:
    """Evidence of every paired tensor in `names`, a row each in that order. Tensors of one size and stored dtype up
    to CHUNK_ELEMENTS are fitted together, as many per block as fit in CHUNK_ELEMENTS, blocks spread over the pool; a
    larger tensor is fitted alone, its chunks spread over the pool. A block starts as soon as it is full (pending
    tensors are only positions: their pages are read when the block runs), the rest at the end; each block's rows
    go to their tensors' positions as it finishes, so nothing is held per tensor but its row."""
    sources = [msrc, *csrc, *([bsrc] if bsrc is not None else [])]
    k, with_base = len(csrc), bsrc is not None
    out = PassEvidence.empty(names, k, with_base)
    pending: dict[tuple[int, str], list[int]] = {}
    running: deque[tuple[list[int], Future[PassEvidence]]] = deque()

    def collect(rows: list[int], ev: PassEvidence) -> None:
        out.put(rows, ev)
        if done is not None:
            done([names[i] for i in rows])

    def start(rows: list[int]) -> None:
        # Views are made here, in the calling thread, while the pool fits the blocks before; at most two blocks per
        # worker are resident at a time.
        block = [(names[i], tuple(s.array(names[i]) for s in sources)) for i in rows]
        running.append((rows, submit(lambda: _block_evidence(block, sources, k, with_base))))
        while len(running) > 2 * workers():
            collect(*_result(running.popleft()))

    for i, name in enumerate(names):
        info = msrc.info(name)
        n = math.prod(info.shape)
        if n > CHUNK_ELEMENTS:
            piece = tuple(s.array(name) for s in sources)
            collect([i], _evidence(fit_large(name, info.dtype, piece, k, with_base), [piece], sources, k))
            continue
        group = pending.setdefault((n, info.dtype), [])
        group.append(i)
        if len(group) * n > CHUNK_ELEMENTS - n:  # full: one more would not fit
            start(pending.pop((n, info.dtype)))
    for group in pending.values():
        start(group)
    while running:
        collect(*_result(running.popleft()))
    return out


def _result(job: tuple[list[int], Future[PassEvidence]]) -> tuple[list[int], PassEvidence]:
    return job[0], job[1].result()


def _block_evidence(
    block: list[tuple[str, Piece]], sources: list[TensorTable], k: int, with_base: bool
) -> PassEvidence:
    dtype = sources[0].info(block[0][0]).dtype
    fits = fit_block([n for n, _ in block], dtype, [p for _, p in block], k, with_base)
    return _evidence(fits, [p for _, p in block], sources, k)


def _evidence(fits: FitTable, pieces: list[Piece], sources: list[TensorTable], k: int) -> PassEvidence:
    """Fitted tensors' evidence, their copies digested (copy_digest; the caller releases the pages)."""
    bad: list[tuple[int, NonFinite]] = []
    notes: list[tuple[int, str]] = []
    for r in np.flatnonzero(~fits.finite).tolist():
        # a NaN/Inf element makes the float64 Gram non-finite: counted only then (a slow pass). NaN/Inf says nothing
        # about mixing weights and would poison every sum: a fact, not a fit
        found = non_finite(fits.names[r], sources, list(pieces[r]))
        bad.extend((r, x) for x in found)
        if not found:
            notes.append((r, f"{fits.names[r]}: finite weights too large for a float64 Gram matrix, not fitted"))
    raw = b"".join(copy_digest(s, name) for name in fits.names for s in sources[: 1 + k])
    digests = np.frombuffer(raw, dtype=np.uint8).reshape(len(fits), 1 + k, DIGEST_BYTES)
    return PassEvidence(fits, digests, bad, notes)


def non_finite(name: str, sources: Sequence[TensorTable], tensors: list[np.ndarray]) -> list[NonFinite]:
    """Each input's NaN/Inf elements in this tensor (arrays as `TensorTable.array` reads them)."""
    out = []
    for src, t in zip(sources, tensors, strict=True):
        count = non_finite_count(t)
        if count:
            out.append(NonFinite(model=src.label, tensor=name, count=count))
    return out


def non_finite_count(a: np.ndarray) -> int:
    """NaN and Inf elements of a stored array, a chunk at a time (bounded scratch): a bf16 bit pattern is not finite
    when its exponent bits are all ones."""
    count = 0
    for s in range(0, a.size, CHUNK_ELEMENTS):
        part = a[s : s + CHUNK_ELEMENTS]
        if part.dtype == np.uint16:
            count += int(np.count_nonzero((part & 0x7F80) == 0x7F80))
        else:
            count += part.size - int(np.count_nonzero(np.isfinite(part)))
    return count

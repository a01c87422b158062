"""What detect takes from each tensor: its fit (or the inputs holding NaN/Inf) and the byte digests of the model's and
each candidate's copy. The single-process pass and the work units (forensics/units.py) both call fit_evidence, so a
cluster run accumulates exactly what one process does (a tensor's fit does not depend on which tensors share its
block, attest.forensics.fit)."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import torch

from attest.checkpoint.reader import TensorTable
from attest.forensics.fit import CHUNK_ELEMENTS, TensorFit, fit_block, fit_large, submit, workers
from attest.forensics.kernels import Piece
from attest.forensics.report import NonFinite

Done = Callable[[list[str]], None]
"""Called with the names of each finished block once their evidence is taken (the caller releases their pages)."""


@dataclass
class TensorEvidence:
    name: str
    fit: TensorFit | None  # None when some input holds non-finite values
    non_finite: list[NonFinite]
    model_digest: bytes
    candidate_digests: list[bytes]
    notes: list[str]

    def add_to(
        self,
        fits: list[TensorFit],
        non_finite: list[NonFinite],
        notes: list[str],
        mdig: dict[str, bytes],
        cdig: list[dict[str, bytes]],
    ) -> None:
        """Collect this tensor's evidence as detect's pass does (one place for the in-process and unit paths)."""
        if self.fit is None:
            non_finite.extend(self.non_finite)
        else:
            fits.append(self.fit)
        notes.extend(self.notes)
        mdig[self.name] = self.model_digest
        for ci, digest in enumerate(self.candidate_digests):
            cdig[ci][self.name] = digest


Block = list[tuple[str, Piece]]


def fit_evidence(
    names: Sequence[str],
    msrc: TensorTable,
    csrc: Sequence[TensorTable],
    bsrc: TensorTable | None,
    done: Done | None = None,
) -> list[TensorEvidence]:
    """Evidence of every paired tensor in `names`, in that order. Tensors of one size and stored dtype up to
    CHUNK_ELEMENTS are fitted together, as many per block as fit in CHUNK_ELEMENTS, blocks spread over the pool; a
    larger tensor is fitted alone, its chunks spread over the pool. A block starts as soon as it is full (pending
    tensors are only names: their pages are read when the block runs), the rest at the end."""
    sources = [msrc, *csrc, *([bsrc] if bsrc is not None else [])]
    k, with_base = len(csrc), bsrc is not None
    out: dict[str, TensorEvidence] = {}
    pending: dict[tuple[int, str], list[str]] = {}
    running: deque[Future[list[TensorEvidence]]] = deque()

    def collect(evs: list[TensorEvidence]) -> None:
        for ev in evs:
            out[ev.name] = ev
        if done is not None:
            done([ev.name for ev in evs])

    def start(group: list[str]) -> None:
        # Views are made here, in the calling thread (the reader's first view silences a warning: not thread-safe),
        # while the pool fits the blocks before; at most two blocks per worker are resident at a time.
        block = [(n, tuple(s.flat(n) for s in sources)) for n in group]
        running.append(submit(lambda: _block_evidence(block, sources, k, with_base)))
        while len(running) > 2 * workers():
            collect(running.popleft().result())

    for name in names:
        info = msrc.info(name)
        n = math.prod(info.shape)
        if n > CHUNK_ELEMENTS:
            piece = tuple(s.flat(name) for s in sources)
            fit = fit_large(name, info.dtype, piece, k, with_base)
            collect([_evidence(name, fit, piece, sources, k)])
            continue
        group = pending.setdefault((n, info.dtype), [])
        group.append(name)
        if len(group) * n > CHUNK_ELEMENTS - n:  # full: one more would not fit
            start(pending.pop((n, info.dtype)))
    for group in pending.values():
        start(group)
    while running:
        collect(running.popleft().result())
    return [out[n] for n in names]


def _block_evidence(block: Block, sources: list[TensorTable], k: int, with_base: bool) -> list[TensorEvidence]:
    dtype = sources[0].info(block[0][0]).dtype
    fits = fit_block([n for n, _ in block], dtype, [p for _, p in block], k, with_base)
    return [_evidence(name, fit, piece, sources, k) for (name, piece), fit in zip(block, fits, strict=True)]


def _evidence(name: str, fit: TensorFit, piece: Piece, sources: list[TensorTable], k: int) -> TensorEvidence:
    """One fitted tensor's evidence, its copies digested (the caller releases the pages)."""
    kept: TensorFit | None = fit
    bad: list[NonFinite] = []
    notes: list[str] = []
    if not fit.finite:
        # a NaN/Inf element makes the float64 Gram non-finite: counted only then (a slow pass). NaN/Inf says nothing
        # about mixing weights and would poison every sum: a fact, not a fit
        kept = None
        bad = non_finite(name, sources, list(piece))
        if not bad:
            notes.append(f"{name}: finite weights too large for a float64 Gram matrix, not fitted")
    digests = [s.raw_digest(name) for s in sources[: 1 + k]]
    return TensorEvidence(name, kept, bad, digests[0], digests[1:], notes)


def non_finite(name: str, sources: Sequence[TensorTable], tensors: list[torch.Tensor]) -> list[NonFinite]:
    out = []
    for src, t in zip(sources, tensors, strict=True):
        count = int(t.numel() - torch.isfinite(t).sum().item())
        if count:
            out.append(NonFinite(model=src.label, tensor=name, count=count))
    return out

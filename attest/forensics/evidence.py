"""What detect takes from one tensor: its fit (or the inputs holding NaN/Inf) and the byte digests of the model's and
each candidate's copy. The single-process pass and the work units (forensics/units.py) both call tensor_evidence,
so a cluster run accumulates exactly what one process does."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from attest.checkpoint.reader import TensorTable
from attest.forensics.fit import TensorFit, fit_tensor
from attest.forensics.report import NonFinite


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


def tensor_evidence(
    name: str, msrc: TensorTable, csrc: Sequence[TensorTable], bsrc: TensorTable | None
) -> TensorEvidence:
    """Fit one paired tensor and digest its copies (the caller releases the pages)."""
    m = msrc.flat(name)
    ps = [c.flat(name) for c in csrc]
    b = bsrc.flat(name) if bsrc is not None else None
    sources = [msrc, *csrc, *([bsrc] if bsrc is not None else [])]
    fit: TensorFit | None = fit_tensor(name, msrc.info(name).dtype, m, ps, b)
    bad: list[NonFinite] = []
    notes: list[str] = []
    if fit is not None and not fit.finite:
        # a NaN/Inf element makes the float64 Gram non-finite: counted only then (a slow pass). NaN/Inf says nothing
        # about mixing weights and would poison every sum: a fact, not a fit
        fit = None
        bad = non_finite(name, sources, [m, *ps, *([b] if b is not None else [])])
        if not bad:
            notes.append(f"{name}: finite weights too large for a float64 Gram matrix, not fitted")
    return TensorEvidence(name, fit, bad, msrc.raw_digest(name), [c.raw_digest(name) for c in csrc], notes)


def non_finite(name: str, sources: Sequence[TensorTable], tensors: list[torch.Tensor]) -> list[NonFinite]:
    out = []
    for src, t in zip(sources, tensors, strict=True):
        count = int(t.numel() - torch.isfinite(t).sum().item())
        if count:
            out.append(NonFinite(model=src.label, tensor=name, count=count))
    return out

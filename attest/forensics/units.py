"""detect's per-tensor pass as work units on an Executor (attest.executor). Each unit re-opens the model, the
candidates and the base where it runs and calls forensics.evidence.fit_evidence on its tensors (or digests the
tensors the fit does not use); only fits (Gram sums, coefficients, residual counts) and digests come back, and the
driver assembles them in the single-process order, so the report is the same."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from attest.checkpoint.canonical import CanonicalView
from attest.checkpoint.reader import Checkpoint, TensorTable
from attest.executor import Executor, WorkUnit, group_by_file
from attest.forensics.digests import DIGEST_BYTES, NameIndex, copy_digest
from attest.forensics.evidence import PassEvidence, fit_evidence
from attest.forensics.fit import CHUNK_ELEMENTS, FitTable
from attest.forensics.report import NonFinite
from attest.unit_cache import UnitCodec

DetectArgs = tuple[list[tuple[str, str]], int, list[str], list[tuple[int, str]]]
"""([(folder, label)] of the model, the candidates, then the base), candidate count, names to fit, (source, name)
pairs to digest only."""
UnitResult = tuple[PassEvidence, list[tuple[int, str, bytes]]]


def detect_group(args: DetectArgs) -> UnitResult:
    """Evidence of the paired tensors `fitted` and the digests of `digests`, from the unit's own opened files."""
    sources, k, fitted, digests = args
    opened: list[Checkpoint] = []
    try:
        for folder, label in sources:
            opened.append(Checkpoint(folder, label=label, with_config=False))
        views = [CanonicalView(s) for s in opened]
        bview = views[1 + k] if len(views) > 1 + k else None
        digested = []

        def release(names: list[str]) -> None:
            for v in views:
                v.release_many(names)

        evidence = fit_evidence(fitted, views[0], views[1 : 1 + k], bview, release)
        for si, name in digests:
            digested.append((si, name, copy_digest(views[si], name)))
            views[si].release(name)
        return evidence, digested
    finally:
        for s in opened:
            s.close()


def _file(table: TensorTable, name: str) -> str:
    return str(Path(table.where[name][0].path).resolve())


def detect_units(
    executor: Executor, fitted: list[str], fitted_index: NameIndex, sources: list[CanonicalView], k: int
) -> tuple[PassEvidence, list[dict[str, bytes]]]:
    """The evidence of the paired tensors `fitted` (a row each, in that order) and the digests of the model's and
    each candidate's other tensors: what detect's single pass collects."""
    folders = [(str(Path(s.folder).resolve()), s.label) for s in sources]
    msrc = sources[0]

    def nbytes(name: str) -> int:
        return sum(s.info(name).nbytes for s in sources)

    fit_groups = group_by_file((n, _file(msrc, n), nbytes(n)) for n in fitted)
    rest = []
    for si, s in enumerate(sources[: 1 + k]):
        names = list(s.where)
        rest += [(si, n) for n, p in zip(names, fitted_index.positions(names).tolist(), strict=True) if p < 0]
    digest_groups = group_by_file(((si, n), _file(sources[si], n), sources[si].info(n).nbytes) for si, n in rest)
    work = 8 * CHUNK_ELEMENTS * (k + 3)  # the float64 chunk buffers of one fit
    units: list[WorkUnit[DetectArgs]] = []
    for file, names in fit_groups:
        others = {_file(s, n) for s in sources[1:] for n in names}
        units.append(
            WorkUnit(
                (folders, k, names, []),
                (file, *sorted(others - {file})),
                sum(map(nbytes, names)),
                len(names),
                max(map(nbytes, names)) + work,
            )
        )
    for file, items in digest_groups:
        size = [sources[si].info(n).nbytes for si, n in items]
        units.append(WorkUnit((folders, k, [], items), (file,), sum(size), len(items), max(size)))

    out = PassEvidence.empty(fitted, k, len(sources) > 1 + k)
    digests: list[dict[str, bytes]] = [{} for _ in range(1 + k)]
    for unit, (ev, digested) in zip(units, executor.map("fitting", detect_group, units), strict=True):
        out.put(fitted_index.positions(unit.args[2]).tolist(), ev)
        for si, name, d in digested:
            digests[si][name] = d
    # the other tensors' digests in the single pass's order (each model's own order)
    return out, [{name: digests[si][name] for s, name in rest if s == si} for si in range(1 + k)]


def _array(a: np.ndarray) -> dict[str, object]:
    return {"dtype": str(a.dtype), "shape": list(a.shape), "values": a.ravel().tolist()}


def _unarray(d: dict[str, Any], like: np.ndarray) -> np.ndarray:
    """An array from its cache form, checked to have the dtype and shape of `like` (else ValueError: a miss)."""
    dtype = np.dtype(d["dtype"])
    if dtype != like.dtype or list(d["shape"]) != list(like.shape):
        raise ValueError(f"unexpected array {dtype} {d['shape']}")
    return np.asarray(d["values"], dtype=dtype).reshape(like.shape)


_COLUMNS = [f.name for f in fields(FitTable) if f.name not in ("names", "candidates")]


def _encode_fits(fits: FitTable) -> dict[str, object]:
    columns = {c: _array(getattr(fits, c)) for c in _COLUMNS}
    return {"names": list(fits.names), "candidates": fits.candidates, "with_base": fits.with_base, **columns}


def _decode_fits(d: dict[str, Any]) -> FitTable:
    """A FitTable from its cache form; every column checked against the shape and dtype it must have."""
    names, k = [str(n) for n in d["names"]], int(d["candidates"])
    like = FitTable.empty(names, k, bool(d["with_base"]))
    columns: dict[str, Any] = {c: _unarray(d[c], getattr(like, c)) for c in _COLUMNS}
    return replace(like, **columns)


def _encode_result(result: UnitResult) -> object:
    ev, digested = result
    return {
        "fits": _encode_fits(ev.fits),
        "digests": [row.tobytes().hex() for row in ev.digests],
        "non_finite": [[r, n.model_dump(mode="json")] for r, n in ev.non_finite],
        "notes": [[r, n] for r, n in ev.notes],
        "digests_only": [[si, name, d.hex()] for si, name, d in digested],
    }


def _decode_result(stored: Any) -> UnitResult:
    fits = _decode_fits(stored["fits"])
    k = fits.candidates
    raw = b"".join(bytes.fromhex(h) for h in stored["digests"])
    digests = np.frombuffer(raw, dtype=np.uint8).reshape(len(fits), 1 + k, DIGEST_BYTES).copy()
    ev = PassEvidence(
        fits,
        digests,
        [(int(r), NonFinite.model_validate(n)) for r, n in stored["non_finite"]],
        [(int(r), str(n)) for r, n in stored["notes"]],
    )
    return ev, [(int(si), str(name), bytes.fromhex(d)) for si, name, d in stored["digests_only"]]


DETECT_CODEC: UnitCodec[DetectArgs, UnitResult] = UnitCodec(lambda args: args, _encode_result, _decode_result)
"""detect_group's results in the unit cache (attest.unit_cache): the fits' columns (dtype, shape, values; floats
round-trip exactly through JSON), non-finite counts, notes and hex digests."""

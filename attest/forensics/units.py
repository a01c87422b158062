"""detect's per-tensor pass as work units on an Executor (attest.executor). Each unit re-opens the model, the
candidates and the base where it runs and calls forensics.evidence.fit_evidence on its tensors (or digests the
tensors the fit does not use); only fits (Gram sums, coefficients, residual counts) and digests come back, and the
driver assembles them in the single-process order, so the report is the same."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from attest.checkpoint.canonical import CanonicalView
from attest.checkpoint.reader import Checkpoint, TensorTable
from attest.executor import Executor, WorkUnit, group_by_file
from attest.forensics.evidence import TensorEvidence, fit_evidence
from attest.forensics.fit import CHUNK_ELEMENTS, TensorFit, single_threaded_ops
from attest.forensics.report import NonFinite
from attest.unit_cache import UnitCodec

DetectArgs = tuple[list[tuple[str, str]], int, list[str], list[tuple[int, str]]]
"""([(folder, label)] of the model, the candidates, then the base), candidate count, names to fit, (source, name)
pairs to digest only."""
UnitResult = tuple[list[TensorEvidence], list[tuple[int, str, bytes]]]


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

        with single_threaded_ops():
            evidence = fit_evidence(fitted, views[0], views[1 : 1 + k], bview, release)
            for si, name in digests:
                digested.append((si, name, views[si].raw_digest(name)))
                views[si].release(name)
        return evidence, digested
    finally:
        for s in opened:
            s.close()


def _file(table: TensorTable, name: str) -> str:
    return str(Path(table.where[name][0].path).resolve())


def detect_units(
    executor: Executor, fitted: list[str], sources: list[CanonicalView], k: int
) -> tuple[list[TensorFit], list[NonFinite], dict[str, bytes], list[dict[str, bytes]], list[str]]:
    """fits, non-finite inputs, the model's and each candidate's digests and notes: what detect's single pass
    collects, in its order."""
    folders = [(str(Path(s.folder).resolve()), s.label) for s in sources]
    msrc = sources[0]

    def nbytes(name: str) -> int:
        return sum(s.info(name).nbytes for s in sources)

    fit_groups = group_by_file((n, _file(msrc, n), nbytes(n)) for n in fitted)
    paired = set(fitted)
    rest = [(si, n) for si, s in enumerate(sources[: 1 + k]) for n in s.where if n not in paired]
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

    evidence: dict[str, TensorEvidence] = {}
    digests: dict[tuple[int, str], bytes] = {}
    for evs, digested in executor.map("fitting", detect_group, units):
        evidence.update((e.name, e) for e in evs)
        digests.update(((si, n), d) for si, n, d in digested)
    fits: list[TensorFit] = []
    non_finite: list[NonFinite] = []
    notes: list[str] = []
    mdig: dict[str, bytes] = {}
    cdig: list[dict[str, bytes]] = [{} for _ in range(k)]
    for name in fitted:
        evidence[name].add_to(fits, non_finite, notes, mdig, cdig)
    for si, name in rest:
        (mdig if si == 0 else cdig[si - 1])[name] = digests[(si, name)]
    return fits, non_finite, mdig, cdig, notes


def _array(a: np.ndarray) -> dict[str, object]:
    return {"dtype": str(a.dtype), "shape": list(a.shape), "values": a.ravel().tolist()}


def _unarray(d: dict[str, Any]) -> np.ndarray:
    dtype = np.dtype(d["dtype"])
    if dtype not in (np.dtype(np.float64), np.dtype(np.int64)):
        raise ValueError(f"unexpected array dtype {dtype}")
    return np.asarray(d["values"], dtype=dtype).reshape(d["shape"])


def _encode_fit(fit: TensorFit) -> dict[str, object]:
    out: dict[str, object] = {}
    for f in fields(fit):
        v = getattr(fit, f.name)
        out[f.name] = _array(v) if isinstance(v, np.ndarray) else v.item() if isinstance(v, np.generic) else v
    return out


_SCALARS: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "float": (float, int), "bool": (bool,)}


def _decode_fit(d: dict[str, Any]) -> TensorFit:
    """A TensorFit from its cache form; every field checked against its declared type (else ValueError: a miss)."""
    values: dict[str, Any] = {}
    for f in fields(TensorFit):
        v, kind = d[f.name], str(f.type)
        if kind.startswith("np.ndarray"):
            values[f.name] = None if v is None and kind.endswith("| None") else _unarray(v)
        elif isinstance(v, _SCALARS[kind]):
            values[f.name] = v
        else:
            raise ValueError(f"field {f.name}: not a {kind}")
    return TensorFit(**values)


def _encode_result(result: UnitResult) -> object:
    evidence, digested = result
    return {
        "evidence": [
            {
                "name": e.name,
                "fit": None if e.fit is None else _encode_fit(e.fit),
                "non_finite": [n.model_dump(mode="json") for n in e.non_finite],
                "model_digest": e.model_digest.hex(),
                "candidate_digests": [c.hex() for c in e.candidate_digests],
                "notes": e.notes,
            }
            for e in evidence
        ],
        "digests": [[si, name, d.hex()] for si, name, d in digested],
    }


def _decode_result(stored: Any) -> UnitResult:
    evidence = [
        TensorEvidence(
            str(e["name"]),
            None if e["fit"] is None else _decode_fit(e["fit"]),
            [NonFinite.model_validate(n) for n in e["non_finite"]],
            bytes.fromhex(e["model_digest"]),
            [bytes.fromhex(c) for c in e["candidate_digests"]],
            [str(n) for n in e["notes"]],
        )
        for e in stored["evidence"]
    ]
    return evidence, [(int(si), str(name), bytes.fromhex(d)) for si, name, d in stored["digests"]]


DETECT_CODEC: UnitCodec[DetectArgs, UnitResult] = UnitCodec(lambda args: args, _encode_result, _decode_result)
"""detect_group's results in the unit cache (attest.unit_cache): fits with their arrays (dtype, shape, values;
floats round-trip exactly through JSON), non-finite counts and hex digests."""

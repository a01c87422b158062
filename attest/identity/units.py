"""Data roots of a folder's spans computed as work units on an Executor (attest.executor): one unit per file, or
per UNIT_BYTES of a large file. Each unit opens its own file where it runs and returns only its spans' data roots;
the manifest is then built from them exactly as from the single-process path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from attest.errors import InputError
from attest.executor import UNIT_TENSORS, Executor, WorkUnit, group_by_file
from attest.identity.chunked import UNIT_BYTES as WINDOW_BYTES
from attest.identity.chunked import Span, data_roots
from attest.identity.merkle import Algorithm

HashArgs = tuple[Algorithm, str, tuple[int, int], list[tuple[int, int]]]
"""(algorithm, file, (size, mtime ns) when the folder was listed, [(offset, length)] of its spans)."""


def hash_spans(args: HashArgs) -> list[bytes]:
    """Data roots of spans of one file (runs on a worker: the file must still be the one the folder scan listed)."""
    algorithm, path, (size, mtime_ns), spans = args
    p = Path(path)
    try:
        st = p.stat()
    except OSError as exc:
        raise InputError(p, f"cannot stat: {exc.strerror or exc}") from None
    if (st.st_size, st.st_mtime_ns) != (size, mtime_ns):
        raise InputError(p, "file changed while it was being hashed (or differs on the node that read it)")
    roots, _ = data_roots(algorithm, [Span(p, offset, length) for offset, length in spans], workers=1)
    return roots


def unit_roots(
    executor: Executor,
    algorithm: Algorithm,
    spans: list[Span],
    keys: dict[Path, list[int]],
    on_done: Callable[[list[int], list[bytes]], None] | None = None,
) -> list[bytes]:
    """Data root of every span, computed unit by unit on `executor`. on_done(span indexes, roots) as units finish."""
    groups = group_by_file(((i, str(s.path), s.length) for i, s in enumerate(spans)), None, UNIT_TENSORS)
    units: list[WorkUnit[HashArgs]] = []
    for file, idx in groups:
        key = keys[Path(file)]
        nbytes = sum(spans[i].length for i in idx)
        args: HashArgs = (algorithm, file, (key[2], key[3]), [(spans[i].offset, spans[i].length) for i in idx])
        units.append(WorkUnit(args, (file,), nbytes, len(idx), min(nbytes, WINDOW_BYTES)))

    def done(u: int, roots: list[bytes]) -> None:
        if on_done is not None:
            on_done(groups[u][1], roots)

    results = executor.map("hashing", hash_spans, units, done)
    out: list[bytes] = [b""] * len(spans)
    for (_, idx), roots in zip(groups, results, strict=True):
        for i, r in zip(idx, roots, strict=True):
            out[i] = r
    return out

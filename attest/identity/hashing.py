"""hash_model: folder -> identity manifest (weights root, files root, model root)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from attest.errors import InputError
from attest.executor import Executor
from attest.identity.cache import RootCache
from attest.identity.chunked import CHUNK_SIZE, Span, data_roots
from attest.identity.folder import FolderScan, file_key, scan_folder
from attest.identity.manifest import (
    FileEntry,
    IdentityManifest,
    TensorEntry,
    file_leaf,
    file_record,
    model_root_of,
    tensor_leaf_of,
)
from attest.identity.merkle import ALGORITHMS, Algorithm, root
from attest.identity.units import unit_roots

ProgressStart = Callable[[int], None]
ProgressAdvance = Callable[[int], None]


def hash_model(
    path: str | os.PathLike[str],
    algorithm: Algorithm = "sha256",
    *,
    use_cache: bool = False,
    ignore: list[str] | None = None,
    require_weights: bool = True,
    workers: int | None = None,
    on_total: ProgressStart | None = None,
    on_bytes: ProgressAdvance | None = None,
    executor: Executor | None = None,
) -> IdentityManifest:
    """Hash a model folder. With use_cache, data roots of files unchanged since the last cached run are reused
    (never use it for verification). With an executor (attest.executor), the spans are hashed as its work units,
    near their files; the roots are the same."""
    if algorithm not in ALGORITHMS:
        raise InputError(None, f"unknown hash algorithm {algorithm!r} (choose from {', '.join(ALGORITHMS)})")
    scan = scan_folder(path, ignore=ignore, require_weights=require_weights)
    return hash_scan(
        scan,
        algorithm,
        use_cache=use_cache,
        workers=workers,
        on_total=on_total,
        on_bytes=on_bytes,
        executor=executor,
    )


def hash_scan(
    scan: FolderScan,
    algorithm: Algorithm,
    *,
    use_cache: bool = False,
    workers: int | None = None,
    on_total: ProgressStart | None = None,
    on_bytes: ProgressAdvance | None = None,
    executor: Executor | None = None,
) -> IdentityManifest:
    tensor_jobs: list[tuple[str, str, tuple[int, ...], str, Span]] = []  # (name, dtype, shape, file, span)
    for rel, header in scan.headers.items():
        real = scan.real_paths[rel]
        for t in header.tensors:
            tensor_jobs.append((t.name, t.dtype, t.shape, rel, Span(real, t.begin, t.nbytes)))
    file_jobs: list[tuple[str, Span]] = []
    for rel in scan.other_files:
        file_jobs.append((rel, Span(scan.real_paths[rel], 0, scan.stats[rel][2])))

    spans = [j[4] for j in tensor_jobs] + [j[1] for j in file_jobs]
    roots_hex = _roots_for(scan, algorithm, spans, use_cache, workers, on_total, on_bytes, executor)
    del spans

    tensors: list[TensorEntry] = []
    for (name, dtype, shape, rel, span), data_hex in zip(tensor_jobs, roots_hex, strict=False):
        # Built from validated header values: no re-validation of 10^5 entries one by one.
        digest = tensor_leaf_of(algorithm, name, dtype, shape, span.length, data_hex).hex()
        tensors.append(TensorEntry.from_validated(name, dtype, list(shape), span.length, data_hex, digest, rel))
    n_tensors = len(tensor_jobs)
    del tensor_jobs
    tensors.sort(key=lambda e: e.name)
    pickles = set(scan.pickle_files)
    files: list[FileEntry] = []
    for (rel, span), data_hex in zip(file_jobs, roots_hex[n_tensors:], strict=True):
        rec = file_record(rel, span.length, data_hex)
        files.append(
            FileEntry(
                path=rel,
                size=span.length,
                data_root=data_hex,
                digest=file_leaf(algorithm, rec).hex(),
                kind="pickle" if rel in pickles else "file",
            )
        )
    files.sort(key=lambda e: e.path)

    weights_root = root(algorithm, [bytes.fromhex(t.digest) for t in tensors]).hex()
    files_root = root(algorithm, [bytes.fromhex(f.digest) for f in files]).hex()
    model_root = model_root_of(algorithm, CHUNK_SIZE, weights_root, files_root).hex()
    notes = [f"{p}: PyTorch pickle hashed as opaque bytes, never unpickled" for p in sorted(pickles)]
    return IdentityManifest(
        algorithm=algorithm,
        chunk_size=CHUNK_SIZE,
        weights_root=weights_root,
        files_root=files_root,
        model_root=model_root,
        tensors=tensors,
        files=files,
        weight_files=sorted([p.as_posix() for p in scan.weight_files] + scan.index_files),
        excluded=sorted(scan.excluded),
        notes=notes,
    )


def _roots_for(
    scan: FolderScan,
    algorithm: Algorithm,
    spans: list[Span],
    use_cache: bool,
    workers: int | None,
    on_total: ProgressStart | None,
    on_bytes: ProgressAdvance | None,
    executor: Executor | None = None,
) -> list[str]:
    """Data roots of the spans, reusing cached ones for files whose stat (taken when the folder was listed) matches
    the cache. New entries are saved only after every file is shown unchanged since that listing."""
    cache = RootCache(scan.root, algorithm) if use_cache else None
    started_ns = time.time_ns()
    keys = {scan.real_paths[rel]: list(key) for rel, key in scan.stats.items()}
    result: list[str | None] = [None] * len(spans)
    todo: list[int] = []
    for i, s in enumerate(spans):
        hit = cache.lookup(s.path, keys[s.path], s.offset, s.length) if cache else None
        if hit is not None:
            result[i] = hit
        else:
            todo.append(i)
    if executor is not None:

        def finished(idx: list[int], roots: list[bytes]) -> None:
            for i, r in zip(idx, roots, strict=True):
                result[todo[i]] = r.hex()

        try:
            computed = unit_roots(executor, algorithm, [spans[i] for i in todo], keys, finished)
        except Exception:
            if cache is not None:  # keep what finished before the failure: a rerun redoes only the rest
                _store(cache, spans, result, keys, started_ns)
            raise
    else:
        if on_total is not None:
            on_total(sum(spans[i].length for i in todo))
        computed, _ = data_roots(algorithm, [spans[i] for i in todo], workers=workers, on_bytes=on_bytes)
    for i, digest in zip(todo, computed, strict=True):
        result[i] = digest.hex()
    roots = [r for r in result if r is not None]
    _check_unchanged(scan)
    if cache is not None:
        for s, hex_root in zip(spans, roots, strict=True):
            cache.store(s.path, keys[s.path], s.offset, s.length, hex_root, started_ns)
        cache.save()
    return roots


def _store(
    cache: RootCache, spans: list[Span], result: list[str | None], keys: dict[Path, list[int]], started_ns: int
) -> None:
    """Cache the roots known so far of files shown unchanged since the listing."""
    for s, hex_root in zip(spans, result, strict=True):
        if hex_root is not None and _unchanged(s.path, keys[s.path]):
            cache.store(s.path, keys[s.path], s.offset, s.length, hex_root, started_ns)
    cache.save()


def _unchanged(real: Path, key: list[int]) -> bool:
    try:
        return list(file_key(real.stat())) == key
    except OSError:
        return False


def _check_unchanged(scan: FolderScan) -> None:
    """A file modified or replaced while we listed, validated and hashed it would give a root of nothing that ever
    existed (a header of one file over the bytes of another): refuse it."""
    for rel, key in scan.stats.items():
        try:
            now = file_key(scan.real_paths[rel].stat())
        except OSError as exc:
            raise InputError(Path(scan.root) / rel, f"cannot stat: {exc.strerror or exc}") from None
        if now != key:
            raise InputError(Path(scan.root) / rel, "file changed while it was being hashed")

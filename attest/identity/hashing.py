"""hash_model: folder -> identity manifest (weights root, files root, model root)."""

from __future__ import annotations

import os
import time
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import Literal

from attest.errors import InputError
from attest.executor import Executor
from attest.identity.cache import RootCache
from attest.identity.chunked import CHUNK_SIZE, Span, data_roots
from attest.identity.folder import FolderScan, file_key, scan_folder
from attest.identity.header_table import HeaderEntries
from attest.identity.manifest import (
    FileEntry,
    IdentityManifest,
    TensorEntries,
    file_leaf,
    file_record,
    model_root_of,
    tensor_leaf_of,
)
from attest.identity.merkle import ALGORITHMS, Algorithm, PackedLeaves, root
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
    scan = _scan(path, algorithm, ignore, require_weights)
    return hash_scan(
        scan,
        algorithm,
        use_cache=use_cache,
        workers=workers,
        on_total=on_total,
        on_bytes=on_bytes,
        executor=executor,
    )


def _scan(
    path: str | os.PathLike[str], algorithm: Algorithm, ignore: list[str] | None, require_weights: bool
) -> FolderScan:
    """The folder's listing, after checking the algorithm name (before any file is read)."""
    if algorithm not in ALGORITHMS:
        raise InputError(None, f"unknown hash algorithm {algorithm!r} (choose from {', '.join(ALGORITHMS)})")
    return scan_folder(path, ignore=ignore, require_weights=require_weights)


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
    # Entries are written straight into their place in name order (a manifest's order): nothing per tensor is
    # held twice, and no TensorEntry object is made (~0.7 KB each).
    index = scan.index
    rank = array("I", bytes(4 * len(index)))  # scan position -> place in name order
    for place, name in enumerate(sorted(index)):  # code points
        rank[index[name]] = place
    tensors = TensorEntries(len(index))
    files: list[FileEntry] = []
    pickles = set(scan.pickle_files)
    at = 0
    for rel, table, roots_hex in _roots_by_file(scan, algorithm, use_cache, workers, on_total, on_bytes, executor):
        if table is None:
            for path, data_hex in zip(scan.other_files, roots_hex, strict=True):
                size = scan.stats[path][2]
                digest = file_leaf(algorithm, file_record(path, size, data_hex)).hex()
                kind: Literal["file", "pickle"] = "pickle" if path in pickles else "file"
                files.append(FileEntry(path=path, size=size, data_root=data_hex, digest=digest, kind=kind))
            continue
        for i, data_hex in enumerate(roots_hex):
            name, dtype, shape = table.names[i], table.dtype(i), table.shape(i)
            nbytes = table.end(i) - table.begin(i)
            leaf = tensor_leaf_of(algorithm, name, dtype, shape, nbytes, data_hex)
            tensors.set(rank[at + i], name, dtype, shape, nbytes, bytes.fromhex(data_hex), leaf, rel)
        at += len(table)
    del rank
    files.sort(key=attrgetter("path"))
    weights_root = root(algorithm, tensors.leaves()).hex()
    files_root = root(algorithm, [bytes.fromhex(f.digest) for f in files]).hex()
    model_root = model_root_of(algorithm, CHUNK_SIZE, weights_root, files_root).hex()
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
        notes=_notes(scan),
    )


def _notes(scan: FolderScan) -> list[str]:
    return [f"{p}: PyTorch pickle hashed as opaque bytes, never unpickled" for p in sorted(scan.pickle_files)]


@dataclass(frozen=True)
class ModelRoots:
    """A model folder's roots without its manifest: what verification compares (hash_roots)."""

    algorithm: Algorithm
    weights_root: str
    files_root: str
    model_root: str
    tensors: int
    notes: list[str]


def hash_roots(
    path: str | os.PathLike[str],
    algorithm: Algorithm = "sha256",
    *,
    ignore: list[str] | None = None,
    require_weights: bool = True,
    workers: int | None = None,
    on_total: ProgressStart | None = None,
    on_bytes: ProgressAdvance | None = None,
    executor: Executor | None = None,
) -> ModelRoots:
    """The roots hash_model gives (never from the cache), holding 32 bytes per tensor leaf instead of a manifest
    entry (~0.7 KB each): memory does not grow with the tensor count beyond the folder's header columns."""
    scan = _scan(path, algorithm, ignore, require_weights)
    leaves = bytearray()  # tensor leaves in scan.index order, 32 bytes each
    file_leaves: list[tuple[str, bytes]] = []
    for _, table, roots_hex in _roots_by_file(scan, algorithm, False, workers, on_total, on_bytes, executor):
        if table is None:
            for p, data_hex in zip(scan.other_files, roots_hex, strict=True):
                file_leaves.append((p, file_leaf(algorithm, file_record(p, scan.stats[p][2], data_hex))))
            continue
        for i, data_hex in enumerate(roots_hex):
            nbytes = table.end(i) - table.begin(i)
            leaves += tensor_leaf_of(algorithm, table.names[i], table.dtype(i), table.shape(i), nbytes, data_hex)
    index = scan.index
    ordered = bytearray()
    for name in sorted(index):  # the manifest's order (code points)
        at = 32 * index[name]
        ordered += leaves[at : at + 32]
    del leaves
    weights_root = root(algorithm, PackedLeaves(ordered)).hex()
    files_root = root(algorithm, [leaf for _, leaf in sorted(file_leaves)]).hex()
    model_root = model_root_of(algorithm, CHUNK_SIZE, weights_root, files_root).hex()
    return ModelRoots(algorithm, weights_root, files_root, model_root, len(index), _notes(scan))


def _roots_by_file(
    scan: FolderScan,
    algorithm: Algorithm,
    use_cache: bool,
    workers: int | None,
    on_total: ProgressStart | None,
    on_bytes: ProgressAdvance | None,
    executor: Executor | None,
) -> Iterator[tuple[str, HeaderEntries | None, list[str]]]:
    """(weight file, its entries, the data root of each entry) for each weight file in scan order, then ("", None,
    the data roots of scan.other_files). Without a cache or an executor, one weight file's spans and roots are held
    at a time (the spans of 10^5 tensors and the hashing bookkeeping would cost ~0.4 KB each). Every file is checked
    unchanged since the listing before the last item is given: a caller must consume them all before trusting any."""
    file_spans = [Span(scan.real_paths[rel], 0, scan.stats[rel][2]) for rel in scan.other_files]
    if use_cache or executor is not None:  # one call: the cache and the executor's units see every span
        spans = [s for rel, h in scan.headers.items() for s in _spans(scan, rel, h.tensors)]
        roots_hex = _roots_for(scan, algorithm, spans + file_spans, use_cache, workers, on_total, on_bytes, executor)
        del spans
        at = 0
        for rel, h in scan.headers.items():
            yield rel, h.tensors, roots_hex[at : at + len(h.tensors)]
            at += len(h.tensors)
        yield "", None, roots_hex[at:]
        return
    if on_total is not None:
        on_total(sum(h.file_size - h.data_start for h in scan.headers.values()) + sum(s.length for s in file_spans))
    for rel, h in scan.headers.items():
        computed, _ = data_roots(algorithm, _spans(scan, rel, h.tensors), workers=workers, on_bytes=on_bytes)
        yield rel, h.tensors, [r.hex() for r in computed]
    computed, _ = data_roots(algorithm, file_spans, workers=workers, on_bytes=on_bytes)
    _check_unchanged(scan)
    yield "", None, [r.hex() for r in computed]


def _spans(scan: FolderScan, rel: str, table: HeaderEntries) -> list[Span]:
    real = scan.real_paths[rel]
    return [Span(real, table.begin(i), table.end(i) - table.begin(i)) for i in range(len(table))]


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

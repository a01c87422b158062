"""Finished work units kept across runs, so a rerun after a failure (a node that disappeared, a killed run) redoes only
the units that did not finish.

A unit's key is the SHA-256 of a canonical JSON object naming everything its result depends on: the unit function,
its arguments (folders, tensor names, recipe, options), attest's and torch's versions, and the state of every file it
reads (resolved path, device, inode, size, mtime and ctime in nanoseconds: the rule `hash`'s root cache uses, and
git's index). A file touched in any way moves its ctime, so a changed input never meets an old entry; a file whose
timestamps are within RACY_NS of the run's start is not cached (its timestamps cannot yet show a later change).
Entries are written by the driver as each unit's result comes back (atomically, 0600 in a 0700 folder), read bounded
and validated; an entry that is unreadable, malformed or not for this key is a miss, never an error.

Who can write the cache folder can change what `replay` and `detect` print, like anyone who can write the user's
installed code: a cache is a speed-up for the owner of the files, not evidence, so `attest verify` never uses one.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from attest.atomic import atomic_write_text
from attest.bounded import read_bounded
from attest.errors import InputError
from attest.executor import Executor, WorkUnit
from attest.identity.cache import RACY_NS, cache_dir
from attest.identity.folder import file_key

UNIT_CACHE_VERSION = 1
MAX_ENTRY_BYTES = 256 * 1024 * 1024
"""An entry holds one unit's rows or fits (at most UNIT_TENSORS tensors): far below this."""

A = TypeVar("A")
R = TypeVar("R")


class UnitEntry(BaseModel):
    """One cached unit result: the file `units-v1/<key[:2]>/<key>.json` under attest's cache folder."""

    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")

    version: int
    key: str
    function: str
    result: Any


class UnitCodec(Generic[A, R]):
    """How one command's units enter the key (`args`: JSON-ready arguments) and how results are stored (`encode`,
    `decode`: JSON-ready values, round-tripping exactly)."""

    def __init__(self, args: Callable[[A], object], encode: Callable[[R], object], decode: Callable[[Any], R]) -> None:
        self.args, self.encode, self.decode = args, encode, decode


class UnitCache:
    """The entries of one run: `hits` units came from the cache, `computed` were run."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = (root if root is not None else cache_dir()) / f"units-v{UNIT_CACHE_VERSION}"
        self.hits = 0
        self.computed = 0

    def key(self, fn: Callable[..., Any], args: object, files: Sequence[str], started_ns: int) -> str | None:
        """The unit's key, or None when one of its files cannot be stat'ed or is racily new."""
        states = []
        for f in sorted(set(files)):
            try:
                real = Path(f).resolve()
                st = file_key(real.stat())
            except OSError:
                return None
            if max(st[3], st[4]) >= started_ns - RACY_NS:
                return None
            states.append([str(real), *st])
        material = {
            "version": UNIT_CACHE_VERSION,
            "function": f"{fn.__module__}.{fn.__qualname__}",
            "args": args,
            "files": states,
            "attest": _attest_version(),
            "libraries": _library_versions(),
        }
        text = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def load(self, key: str, fn: Callable[..., Any]) -> object | None:
        """The stored result for `key`, or None (absent, unreadable, too large, malformed, another key)."""
        try:
            entry = UnitEntry.model_validate_json(read_bounded(self._path(key), MAX_ENTRY_BYTES, regular=True))
        except (InputError, ValidationError, ValueError):
            return None
        if (entry.version, entry.key, entry.function) != (UNIT_CACHE_VERSION, key, _name(fn)):
            return None
        return entry.result

    def store(self, key: str, fn: Callable[..., Any], result: object, key_now: str | None) -> None:
        """Write an entry if the unit's files are still as they were when the key was taken (`key_now` is the key
        re-taken after the unit ran); failing to write a cache is not an error."""
        if key_now != key:
            return
        entry = UnitEntry(version=UNIT_CACHE_VERSION, key=key, function=_name(fn), result=result)
        path = self._path(key)
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            atomic_write_text(path, entry.model_dump_json())
            os.chmod(path, 0o600)
        except OSError:
            pass


def _name(fn: Callable[..., Any]) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


@functools.cache
def _attest_version() -> str:
    """attest's version and a digest of its source: a development checkout changes code without a new version."""
    from attest import __version__

    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(f"{path.relative_to(package).as_posix()}\0{path.stat().st_size}\0".encode())
        digest.update(path.read_bytes())
    return f"{__version__}+{digest.hexdigest()[:16]}"


COMPUTE_LIBRARIES = ("torch", "numpy", "numba", "llvmlite")
"""The installed distributions whose arithmetic a cached result depends on (merge and replay compute in torch,
detect in numpy and numba)."""


@functools.cache
def _library_versions() -> dict[str, str]:
    """Their versions from the installed metadata, once per process (~7 ms, for every unit's key): no import
    (importing torch took 1.5-3.5 s, more than a cached detect unit saves)."""
    out = {}
    for name in COMPUTE_LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


class CachingExecutor:
    """An Executor that takes the results of cached units from `cache` and runs the rest on `inner`, storing each
    computed unit's result as it comes back (a run that fails half-way keeps what finished). Only functions with a
    codec are cached; others (hash's spans, which have their own root cache) pass through."""

    def __init__(
        self, inner: Executor, cache: UnitCache, codecs: Mapping[Callable[..., Any], UnitCodec[Any, Any]]
    ) -> None:
        self.inner, self.cache, self.codecs = inner, cache, dict(codecs)

    def map(
        self,
        label: str,
        fn: Callable[[A], R],
        units: Sequence[WorkUnit[A]],
        on_done: Callable[[int, R], None] | None = None,
    ) -> list[R]:
        codec: UnitCodec[A, R] | None = self.codecs.get(fn)
        if codec is None:
            return self.inner.map(label, fn, units, on_done)
        cache = self.cache
        started_ns = time.time_ns()
        keys = [cache.key(fn, codec.args(u.args), u.files, started_ns) for u in units]
        results: list[R | None] = [None] * len(units)
        todo: list[int] = []
        for i, key in enumerate(keys):
            stored = cache.load(key, fn) if key is not None else None
            decoded = _decode(codec, stored) if stored is not None else None
            if decoded is None:
                todo.append(i)
                continue
            results[i] = decoded[0]
            cache.hits += 1
            if on_done is not None:
                on_done(i, decoded[0])

        def done(j: int, result: R) -> None:
            i = todo[j]
            cache.computed += 1
            key = keys[i]
            if key is not None:
                now = cache.key(fn, codec.args(units[i].args), units[i].files, started_ns)
                cache.store(key, fn, codec.encode(result), now)
            if on_done is not None:
                on_done(i, result)

        computed = self.inner.map(label, fn, [units[i] for i in todo], done) if todo else []
        for i, result in zip(todo, computed, strict=True):
            results[i] = result
        out = [r for r in results if r is not None]
        if len(out) != len(units):
            raise RuntimeError(f"{label}: {len(units) - len(out)} units neither cached nor computed")
        return out


def _decode(codec: UnitCodec[A, R], stored: object) -> tuple[R] | None:
    """The decoded result in a 1-tuple (a result may itself be falsy), or None when it does not decode."""
    try:
        return (codec.decode(stored),)
    except (ValidationError, ValueError, TypeError, KeyError, IndexError):
        return None

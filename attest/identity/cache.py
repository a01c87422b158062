"""Incremental re-hashing: remember data roots of files that have not changed since they were last hashed.

A file counts as unchanged when its device, inode, size, mtime and ctime (all in nanoseconds) match. The cache lives
in the user's cache folder, never in the model folder, and `attest verify` never reads it: a cache is a speed-up for
the person who owns the files, not evidence.

File timestamps are coarse (a kernel tick, or a whole second on some filesystems), so a file rewritten with the same
size right after it was hashed can keep its old key. As git does with "racily clean" index entries, a file whose
mtime or ctime is less than RACY_NS before the moment its hashing began is not cached: any later change to it is
then bound to move its timestamps.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from pydantic import BaseModel, ValidationError

from attest.atomic import atomic_write_text
from attest.identity.chunked import CHUNK_SIZE

CACHE_VERSION = 1
RACY_NS = 2_000_000_000
"""Timestamp granularity we allow for (FAT's is 2 s; ext4's is a kernel tick)."""


def cache_dir() -> Path:
    base = os.environ.get("ATTEST_CACHE_DIR")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "attest"


class _FileCache(BaseModel):
    key: list[int]
    roots: dict[str, str]  # "offset:length" -> data root hex


class _FolderCache(BaseModel):
    version: int
    algorithm: str
    chunk_size: int
    files: dict[str, _FileCache]  # resolved path -> entry


class RootCache:
    """Per-folder cache of span data roots, keyed on the stat of the file that holds them."""

    def __init__(self, folder: Path, algorithm: str) -> None:
        digest = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:32]
        self.path = cache_dir() / f"identity-v{CACHE_VERSION}" / f"{digest}-{algorithm}.json"
        self.algorithm = algorithm
        self._data = _FolderCache(version=CACHE_VERSION, algorithm=algorithm, chunk_size=CHUNK_SIZE, files={})
        try:
            if self.path.stat().st_size < 256 * 1024 * 1024:
                loaded = _FolderCache.model_validate_json(self.path.read_bytes())
                if (loaded.version, loaded.algorithm, loaded.chunk_size) == (CACHE_VERSION, algorithm, CHUNK_SIZE):
                    self._data = loaded
        except (OSError, ValidationError, ValueError):
            pass
        self._fresh: dict[str, _FileCache] = {}

    def lookup(self, real: Path, key: list[int], offset: int, length: int) -> str | None:
        """The cached root of a span of `real`, if the file's stat `key` (see folder.file_key) is unchanged."""
        entry = self._data.files.get(str(real))
        if entry is None or entry.key != key:
            return None
        return entry.roots.get(f"{offset}:{length}")

    def store(self, real: Path, key: list[int], offset: int, length: int, root_hex: str, started_ns: int) -> None:
        """Remember a span's root, hashed from a file whose stat was `key` when hashing began at `started_ns`
        (time.time_ns()). Racily clean files are skipped."""
        if max(key[3], key[4]) >= started_ns - RACY_NS:
            return
        entry = self._fresh.setdefault(str(real), _FileCache(key=key, roots={}))
        entry.roots[f"{offset}:{length}"] = root_hex

    def save(self) -> None:
        """Write the entries of this run (atomically); failures to write a cache are not errors."""
        data = _FolderCache(version=CACHE_VERSION, algorithm=self.algorithm, chunk_size=CHUNK_SIZE, files=self._fresh)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path, data.model_dump_json())
        except OSError:
            pass

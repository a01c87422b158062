"""The folder side of model-signing: which files a signature covers (ignore paths, symlink rules) and their digests
(whole files or fixed-size shards, streamed in 1 MiB reads), as model-signing's `_serialization` does.

Unlike attest's identity scan, nothing here raises on a hostile entry: a symlink, special file or unreadable file is
*refused* and reported by name, so the verifier can list every difference at once.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import cast

from attest.errors import InputError
from attest.identity.folder import ATTEST_DIR, walk_folder
from attest.identity.merkle import ALGORITHMS, Algorithm, Hasher, new_hasher
from attest.signing.model_sig.bundle import SIGNATURE_NAME

GIT_PATHS = (".git", ".gitattributes", ".github", ".gitignore")
"""model-signing ignores these on both sides by default; so do we, or a peer-made signature would not verify."""
DEFAULT_IGNORES = (*GIT_PATHS, ATTEST_DIR, SIGNATURE_NAME)
"""Left out on both sides: git files, attest's own folder (attestations written after signing), the signature."""
READ_CHUNK = 1024 * 1024

BytesCallback = Callable[[int], None]
IgnoreRules = list[tuple[str, ...]]


@dataclass
class ModelSigScan:
    """The files of a model folder (or the single file) a signature could cover."""

    files: dict[str, Path] = field(default_factory=dict)  # relative POSIX name -> path to open
    sizes: dict[str, int] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)  # relative name -> why


def ignore_rules(root: Path, entries: Iterable[str]) -> IgnoreRules:
    """Normalise ignore paths to relative part tuples. Absolute paths outside, `..`, and `.` (everything) drop out."""
    rules: set[tuple[str, ...]] = set()
    for entry in entries:
        p = PurePosixPath(str(entry).replace("\\", "/"))
        if p.is_absolute():
            try:
                p = PurePosixPath(Path(str(p)).resolve().relative_to(root.resolve()).as_posix())
            except (ValueError, OSError):
                continue
        parts = tuple(x for x in p.parts if x != ".")
        if not parts or ".." in parts:
            continue
        rules.add(parts)
    return sorted(rules)


def is_ignored(parts: tuple[str, ...], rules: IgnoreRules) -> bool:
    return any(parts[: len(rule)] == rule for rule in rules)


def scan_model(model: Path, rules: IgnoreRules, allow_symlinks: bool) -> ModelSigScan:
    """Every regular file under `model` that no rule ignores. Symlinks only when allowed and inside the folder."""
    found = ModelSigScan()
    if not model.is_dir():
        st = model.lstat()
        if stat.S_ISLNK(st.st_mode) and not allow_symlinks:
            found.refused["."] = "is a symlink and the signature does not allow symlinks"
        elif not model.is_file():
            found.refused["."] = "not a regular file"
        else:
            found.files["."] = model.resolve()
            found.sizes["."] = model.stat().st_size
        return found
    real_root = model.resolve()
    for dirpath, dirnames, filenames in walk_folder(model):
        rel_dir = Path(dirpath).relative_to(model)
        keep = []
        for name in sorted(dirnames):
            rel = (rel_dir / name).as_posix()
            if is_ignored(PurePosixPath(rel).parts, rules):
                continue
            if (Path(dirpath) / name).is_symlink():
                found.refused[rel] = "is a symlinked folder (not followed)"
            else:
                keep.append(name)
        dirnames[:] = keep
        for name in sorted(filenames):
            rel = (rel_dir / name).as_posix()
            if not is_ignored(PurePosixPath(rel).parts, rules):
                _add_file(found, rel, Path(dirpath) / name, real_root, allow_symlinks)
    return found


def _add_file(found: ModelSigScan, rel: str, full: Path, real_root: Path, allow_symlinks: bool) -> None:
    try:
        st = full.lstat()
        if stat.S_ISLNK(st.st_mode):
            if not allow_symlinks:
                found.refused[rel] = "is a symlink and the signature does not allow symlinks"
                return
            target = full.resolve(strict=True)
            if not target.is_relative_to(real_root):
                found.refused[rel] = "is a symlink leading outside the model folder"
                return
            full, st = target, target.stat()
    except (OSError, RuntimeError) as exc:
        found.refused[rel] = f"cannot be read ({getattr(exc, 'strerror', None) or exc})"
        return
    if not stat.S_ISREG(st.st_mode):
        found.refused[rel] = "is not a regular file (device, socket or pipe)"
        return
    found.files[rel] = full
    found.sizes[rel] = st.st_size


def hash_file(
    path: Path,
    hash_type: str = "sha256",
    start: int = 0,
    end: int | None = None,
    on_bytes: BytesCallback | None = None,
) -> str:
    """Digest of bytes [start, end) of a file, read 1 MiB at a time into one reused buffer (bounded memory)."""
    h = _hasher(hash_type)
    buf = bytearray(READ_CHUNK)
    view = memoryview(buf)
    # No following a symlink swapped in after the scan, no blocking on a pipe swapped in: regular files only.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{path} is not a regular file")
    with open(fd, "rb", buffering=0) as fh:
        if start:
            fh.seek(start)
        left = end - start if end is not None else None
        while left is None or left > 0:
            want = READ_CHUNK if left is None else min(READ_CHUNK, left)
            n = fh.readinto(view[:want])
            if not n:
                break
            h.update(view[:n])
            if left is not None:
                left -= n
            if on_bytes is not None:
                on_bytes(n)
    return h.digest().hex()


def _hasher(hash_type: str) -> Hasher:
    """sha256 and blake3 are the identity layer's hashers; model-signing's "blake2" is BLAKE2b-512."""
    if hash_type == "blake2":
        return hashlib.blake2b()
    if hash_type not in ALGORITHMS:
        raise ValueError(hash_type)
    return new_hasher(cast(Algorithm, hash_type))


def shard_spans(size: int, shard_size: int) -> list[tuple[int, int]]:
    """model-signing cuts a file into [k*shard_size, min((k+1)*shard_size, size)); an empty file has no shards."""
    return [(s, min(s + shard_size, size)) for s in range(0, size, shard_size)]


HashJob = tuple[str, Path, int, int | None]
"""(name, path, start, end): one file or shard to hash."""


def hash_many(
    jobs: list[HashJob], hash_type: str, on_bytes: BytesCallback | None
) -> dict[tuple[str, int], str | OSError]:
    """Hash (name, path, start, end) jobs on a few threads (hashlib releases the GIL on large updates)."""
    out: dict[tuple[str, int], str | OSError] = {}
    workers = max(1, min(8, os.cpu_count() or 1, len(jobs)))
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(hash_file, p, hash_type, s, e, on_bytes): (n, s) for n, p, s, e in jobs}
        for fut in concurrent.futures.as_completed(futures):
            try:
                out[futures[fut]] = fut.result()
            except OSError as exc:
                out[futures[fut]] = exc
    return out


def scan_for_signing(model: Path, sig_path: Path, ignore: Iterable[str]) -> tuple[ModelSigScan, IgnoreRules]:
    """The files `sign_model_sig` covers: all but the default ignores, `ignore` and the signature file itself.
    Anything the verifier would refuse (symlinks, special files) is refused here before signing."""
    entries = [*DEFAULT_IGNORES, *ignore]
    try:
        entries.append(sig_path.resolve().relative_to(model.resolve()).as_posix())
    except (ValueError, OSError):
        pass
    rules = ignore_rules(model, entries)
    found = scan_model(model, rules, allow_symlinks=False)
    for rel, why in sorted(found.refused.items()):
        raise InputError(model / rel, why)
    if not found.files:
        raise InputError(model, "no files to sign (all ignored or the folder is empty)")
    return found, rules


def verify_ignores(
    model: Path, sig_path: Path, user: Iterable[str], signed: Iterable[str], *, attest_dir: bool = True
) -> list[str]:
    """What verification leaves out: the signer's ignore_paths, the caller's, git files, attest's folder (unless
    attest_dir is False: what model-signing itself leaves out), the signature itself. Signed resources under one
    of model-signing's ignore paths are reported missing (as model-signing does)."""
    entries = [*GIT_PATHS, *([ATTEST_DIR] if attest_dir else []), SIGNATURE_NAME, *signed, *user]
    if model.is_dir():
        # The signature's own path as written (never resolved: a symlinked model.sig would hide its target).
        try:
            entries.append(sig_path.absolute().relative_to(model.absolute()).as_posix())
        except ValueError:
            pass
    return entries


def signed_file(resource_name: str, method: str) -> str:
    """The file a resource covers: its name in files serialization, the `path` of `path:start:end` in shards."""
    return resource_name if method == "files" else resource_name.rpartition(":")[0].rpartition(":")[0]


def drop_uncovered_own_files(model: Path, found: ModelSigScan, covered: set[str]) -> None:
    """Forget files under attest's own folder that the signature does not cover (written after signing)."""
    own = ignore_rules(model, [ATTEST_DIR])
    for entries in (found.files, found.refused):
        for rel in [r for r in entries if r not in covered and is_ignored(PurePosixPath(r).parts, own)]:
            del entries[rel]

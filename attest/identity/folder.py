"""What a model folder contains, decided before any byte is hashed.

The scan classifies every file as a safetensors weight file, a shard index, an opaque PyTorch pickle, an ordinary
file, or excluded (attest's own files, VCS folders, signatures). It refuses what a hostile folder can use against a
verifier: symlinks that leave the folder, special files, index entries that point outside it.
"""

from __future__ import annotations

import json
import os
import stat
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from attest.bounded import read_bounded
from attest.errors import InputError
from attest.identity.safetensors_reader import MAX_TENSORS, SafetensorsHeader, TensorCountError, read_header
from attest.strict_json import strict_loads_string_map

ATTEST_DIR = ".attest"
"""attest's own folder inside a model folder (attestations); excluded from the identity."""

EXCLUDED_DIRS = frozenset({".git", ".hg", ".svn", ATTEST_DIR})
EXCLUDED_PATHS = frozenset({"model.sig", ".cache/huggingface"})
"""Relative POSIX paths excluded with everything below them: signatures and download caches are not content."""

PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"})
MAX_INDEX_BYTES = 64 * 1024 * 1024
INDEX_KEYS = frozenset({"weight_map", "metadata"})
INERT_INDEX_METADATA = {"total_size": int, "total_parameters": int, "mergekit_version": str}
"""The only `metadata` keys a shard index may carry (SPEC.md 1.6): sizes and a producer tag that no loader reads to
decide how the weights are loaded. Anything else (transformers reads `dtype`) would sit outside the roots."""


@dataclass
class FolderScan:
    root: Path
    weight_files: list[Path] = field(default_factory=list)  # top-level *.safetensors, relative
    headers: dict[str, SafetensorsHeader] = field(default_factory=dict)  # by relative POSIX path
    index_files: list[str] = field(default_factory=list)
    other_files: list[str] = field(default_factory=list)  # relative POSIX paths, includes pickles
    pickle_files: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    real_paths: dict[str, Path] = field(default_factory=dict)  # relative POSIX path -> resolved file
    # relative POSIX path -> (device, inode, size, mtime ns, ctime ns) when listed, to notice files that change
    # while they are read
    stats: dict[str, tuple[int, int, int, int, int]] = field(default_factory=dict)
    # every tensor name of the weight files -> its position counting through `headers` in order (one dict slot
    # and one integer per tensor); `starts[k]` is the position of the first entry of the k-th header
    index: dict[str, int] = field(default_factory=dict)
    starts: list[int] = field(default_factory=list)

    def locate(self, position: int) -> tuple[int, int]:
        """(k, i): entry i of the k-th header, for a position of `index`."""
        k = bisect_right(self.starts, position) - 1
        return k, position - self.starts[k]


def file_key(st: os.stat_result) -> tuple[int, int, int, int, int]:
    """What changes when a file is modified or replaced."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _is_excluded(rel: str) -> bool:
    parts = PurePosixPath(rel).parts
    if parts and parts[0] in EXCLUDED_DIRS:
        return True
    return any("/".join(parts[: i + 1]) in EXCLUDED_PATHS for i in range(len(parts)))


def _is_pickle(rel: str) -> bool:
    return PurePosixPath(rel).suffix.lower() in PICKLE_SUFFIXES


def _admitted(
    scan: FolderScan, dirpath: str, names: list[str], ignored: set[str], shown_suffix: str
) -> Iterator[tuple[str, str, Path]]:
    """(name, relative path, full path) of each entry of `dirpath` in sorted order, its name checked; excluded and
    ignored entries are noted in scan.excluded (with `shown_suffix`) and skipped."""
    rel_dir = Path(dirpath).relative_to(scan.root)
    for name in sorted(names):
        rel = (rel_dir / name).as_posix()
        full = Path(dirpath) / name
        _check_name(full, rel)
        if _is_excluded(rel) or rel in ignored:
            scan.excluded.append(rel + shown_suffix)
            continue
        yield name, rel, full


def scan_folder(
    path: str | os.PathLike[str], ignore: list[str] | None = None, *, require_weights: bool = True
) -> FolderScan:
    """List and classify a model folder; validate every safetensors header and shard index."""
    root = Path(path)
    if not root.exists():
        raise InputError(root, "no such folder")
    if not root.is_dir():
        raise InputError(root, "not a folder")
    real_root = root.resolve()
    ignored = {PurePosixPath(i).as_posix().strip("/") for i in ignore or []}
    scan = FolderScan(root=root)
    any_entry = False

    for dirpath, dirnames, filenames in walk_folder(root):
        any_entry = any_entry or bool(dirnames or filenames)
        keep: list[str] = []
        for d, rel, full in _admitted(scan, dirpath, dirnames, ignored, "/"):
            if full.is_symlink():
                _check_link(full, real_root, rel)
                raise InputError(full, "symlinked folder inside the model folder is not supported")
            keep.append(d)
        dirnames[:] = keep
        for name, rel, full in _admitted(scan, dirpath, filenames, ignored, ""):
            real = _check_link(full, real_root, rel) if full.is_symlink() else full
            try:
                st = real.stat()
            except OSError as exc:
                raise InputError(full, f"cannot stat: {exc.strerror or exc}") from None
            if not stat.S_ISREG(st.st_mode):
                raise InputError(full, "not a regular file (device, socket or pipe)")
            scan.stats[rel] = file_key(st)
            scan.real_paths[rel] = real
            top_level = "/" not in rel
            if top_level and name.endswith(".safetensors"):
                scan.weight_files.append(Path(rel))
            elif top_level and name.endswith(".safetensors.index.json"):
                scan.index_files.append(rel)
            else:
                scan.other_files.append(rel)
                if _is_pickle(rel):
                    scan.pickle_files.append(rel)

    if not any_entry:
        raise InputError(root, "empty folder")
    if require_weights and not scan.weight_files and not scan.pickle_files:
        raise InputError(root, "no weights: no *.safetensors or PyTorch pickle files at the top level")
    indexes = {index: _read_index(scan, index) for index in scan.index_files}
    budget = MAX_TENSORS  # per folder, not per file: three shards must not hold three times the cap
    for rel_path in scan.weight_files:
        rel = rel_path.as_posix()
        try:
            scan.headers[rel] = read_header(scan.real_paths[rel], budget)
        except TensorCountError:
            raise InputError(
                root / rel, f"the folder's weight files hold more than the {MAX_TENSORS} tensors allowed per folder"
            ) from None
        budget -= len(scan.headers[rel].tensors)
    _check_duplicates(scan)
    for index in scan.index_files:
        _check_index(scan, index, indexes.pop(index))
    return scan


def _check_name(full: Path, rel: str) -> None:
    """Paths enter file records as JSON strings: a name that is not UTF-8 has no canonical encoding."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(full).decode("utf-8", "backslashreplace")
        raise InputError(shown, "file name is not valid UTF-8") from None


def walk_folder(root: Path) -> Iterator[tuple[str, list[str], list[str]]]:
    """os.walk recurses once per folder level: a hostile folder nested thousands deep must fail cleanly."""
    try:
        yield from os.walk(root, followlinks=False, onerror=_walk_error)
    except RecursionError:
        raise InputError(root, "folder nested too deeply") from None


def _walk_error(exc: OSError) -> None:
    raise InputError(exc.filename, f"cannot list: {exc.strerror or exc}")


def _check_link(full: Path, real_root: Path, rel: str) -> Path:
    try:
        target = full.resolve(strict=True)
    except (OSError, RuntimeError):
        raise InputError(full, "broken or looping symlink") from None
    if target != real_root and real_root not in target.parents and not _is_hf_blob(target, real_root):
        raise InputError(full, f"symlink leads outside the model folder (to {target})")
    return target


def _is_hf_blob(target: Path, real_root: Path) -> bool:
    """A Hugging Face cache snapshot (`models--org--name/snapshots/REV/`) links each file to `../../blobs/HASH` of
    the same repo: that target, and only that one, belongs to the folder."""
    repo = real_root.parent.parent
    return (
        real_root.parent.name == "snapshots"
        and repo.name.startswith("models--")
        and target.parent == repo / "blobs"
        and target.is_file()
    )


def _check_duplicates(scan: FolderScan) -> None:
    """Build the folder's name index; a name stored twice is refused."""
    index: dict[str, int] = {}
    starts: list[int] = []
    for header in scan.headers.values():
        names = header.tensors.names
        starts.append(len(index))
        index.update(zip(names, range(len(index), len(index) + len(names)), strict=True))
        if len(index) != starts[-1] + len(names):
            _refuse_duplicate(scan)
    scan.index, scan.starts = index, starts


def _refuse_duplicate(scan: FolderScan) -> None:
    """The error for the first name stored twice (in file order, then entry order)."""
    seen: dict[str, str] = {}
    for rel, header in scan.headers.items():
        for name in header.tensors.names:
            if name in seen:
                raise InputError(scan.root / rel, f"tensor {name!r} is also stored in {seen[name]}")
            seen[name] = rel
    raise AssertionError("a duplicate name was counted but not found")


def _check_index_metadata(path: Path, metadata: object) -> None:
    if not isinstance(metadata, dict):
        raise InputError(path, "shard index metadata is not an object")
    for key, value in metadata.items():
        kind = INERT_INDEX_METADATA.get(key)
        if kind is None:
            raise InputError(
                path,
                f"shard index metadata has key {key!r}, which a loader may read and the roots do not cover (only "
                f"{', '.join(sorted(INERT_INDEX_METADATA))} are allowed)",
            )
        if kind is int and not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
            raise InputError(path, f"shard index metadata {key!r} is not a non-negative integer")
        if kind is str and not isinstance(value, str):
            raise InputError(path, f"shard index metadata {key!r} is not a string")


def _read_index(scan: FolderScan, index: str) -> object:
    """The parsed shard index, or the InputError that reading it raised (raised later, in the order of checks).

    Read before the headers, so that its text does not stack on the folder's header tables; the weight_map is
    parsed entry by entry (strict_loads_string_map: no parser bookkeeping per entry), its names interned (the
    headers' names are then the same strings) and one string per distinct shard."""
    path = scan.root / index
    try:
        raw = read_bounded(
            scan.real_paths[index], MAX_INDEX_BYTES, f"shard index larger than {MAX_INDEX_BYTES} bytes", shown=path
        )
        try:
            # What json.loads does with bytes, done here so that the bytes are freed before the parse.
            text = raw.decode(json.detect_encoding(raw), "surrogatepass")
            del raw
            return strict_loads_string_map(text, "weight_map")
        except (ValueError, RecursionError) as exc:
            raise InputError(path, f"shard index is not valid JSON ({str(exc).splitlines()[0]})") from None
    except InputError as exc:
        return exc


def _check_index(scan: FolderScan, index: str, data: object) -> None:
    path = scan.root / index
    if isinstance(data, InputError):
        raise data
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(data, dict) or not isinstance(weight_map, dict):
        raise InputError(path, "shard index has no weight_map object")
    if not weight_map:
        # An index outside the roots that covers nothing would say nothing the weights root fixes.
        raise InputError(path, "shard index weight_map is empty (it must cover the folder's weight files)")
    # The index is left out of the roots (re-sharding must not change them), so it may say nothing a loader reads
    # beyond what the weights root already fixes: only weight_map (checked below to match the shards exactly) and
    # an informative metadata object.
    unknown = sorted(set(data) - INDEX_KEYS)
    if unknown:
        raise InputError(path, f"shard index has unexpected key {unknown[0]!r} (only weight_map and metadata)")
    _check_index_metadata(path, data.get("metadata", {}))
    checked: dict[str, str] = {}  # shard as written -> its checked name: ~100 shards for 10^5 entries
    for tensor, shard in weight_map.items():
        if not (isinstance(shard, str) and shard in checked):
            checked[shard] = _index_shard(scan, path, tensor, shard)
    if not _index_matches(scan, weight_map, checked):
        _refuse_index(scan, path, weight_map, checked)
    unlisted = sorted(set(scan.headers) - set(checked.values()))
    if unlisted:
        # A loader that follows the index would not read this file, yet its tensors are in the weights root.
        raise InputError(
            path, f"weight_map does not cover {unlisted[0]}; hash with --ignore {unlisted[0]} if no loader reads it"
        )


def _index_matches(scan: FolderScan, weight_map: dict[str, str], checked: dict[str, str]) -> bool:
    """Whether weight_map lists every tensor of the shards it names, each in the shard that holds it (through the
    folder's name index: no set of names per shard)."""
    rels = list(scan.headers)
    listed = [0] * len(rels)
    index, starts = scan.index, scan.starts
    number = {shard: rels.index(name) for shard, name in checked.items()}
    for tensor, shard in weight_map.items():
        position = index.get(tensor)
        if position is None:
            return False
        k = number[shard]
        if not starts[k] <= position < (starts[k + 1] if k + 1 < len(starts) else len(index)):
            return False
        listed[k] += 1
    return all(listed[number[s]] == len(scan.headers[n].tensors) for s, n in checked.items())


def _refuse_index(scan: FolderScan, path: Path, weight_map: dict[str, str], checked: dict[str, str]) -> None:
    """The error for a weight_map that does not match the shards: the first shard (in weight_map order) that lacks
    a tensor listed for it, or holds one not listed, naming the first such tensor in sorted order."""
    by_shard: dict[str, set[str]] = {}
    for tensor, shard in weight_map.items():
        by_shard.setdefault(checked[shard], set()).add(tensor)
    for shard, names in by_shard.items():
        present = set(scan.headers[shard].tensors.names)
        missing = sorted(names - present)
        if missing:
            raise InputError(path, f"weight_map puts {missing[0]!r} in {shard}, which does not hold it")
        extra = sorted(present - names)
        if extra:
            raise InputError(path, f"{shard} holds {extra[0]!r}, which weight_map does not list")
    raise AssertionError("weight_map was found not to match, but no difference was found")


def _index_shard(scan: FolderScan, path: Path, tensor: str, shard: object) -> str:
    """The weight file a weight_map entry names, as a scanned top-level safetensors file."""
    if not isinstance(shard, str) or not shard:
        raise InputError(path, f"weight_map entry for {tensor!r} is not a file name")
    pure = PurePosixPath(shard)
    if pure.is_absolute() or ".." in pure.parts or "\\" in shard:
        raise InputError(path, f"weight_map entry for {tensor!r} points outside the folder: {shard!r}")
    name = pure.as_posix()
    if name not in scan.headers:
        if name in scan.real_paths:
            raise InputError(path, f"weight_map names {shard!r}, which is not a top-level .safetensors file")
        raise InputError(path, f"weight_map names a missing shard {shard!r}")
    return name

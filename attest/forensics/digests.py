"""The raw tensor digests detect compares byte for byte (identical copies, passthrough layers, copied experts), held
as one fixed-width array over the paired tensors instead of a dict of bytes per model: at 10^5 tensors three such
dicts held ~0.3 KB per tensor at detect's peak, the array and its name index ~0.1 KB."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from itertools import compress

import numpy as np

from attest.checkpoint.reader import TensorTable

DIGEST_BYTES = 32
"""blake3's digest (attest.checkpoint.reader.TensorTable.raw_digest)."""

SAMPLED_ABOVE = 64 * 1024
"""Tensors larger than this are sampled in the pass (copy_digest); smaller ones are digested whole, which costs about
what sampling would."""


def copy_digest(table: TensorTable, name: str) -> bytes:
    """What detect's pass records of a tensor for byte equality: its raw digest, or for a tensor over SAMPLED_ABOVE
    bytes its sample digest (a few pages: digesting every tensor of every model whole cost a fifth of detect's time,
    and a plain merge shares no tensor with its candidates). `confirm_copies` digests whole those a tensor on the
    other side shares."""
    return table.copy_digest(name, SAMPLED_ABOVE)


def confirm_copies(model: DigestMap, candidates: Sequence[DigestMap], tables: Sequence[TensorTable]) -> int:
    """After the pass: every large tensor whose sample digest the other side (the model for a candidate, a candidate
    for the model) shares, compared by 8-byte prefixes, gets its raw digest, read again from `tables` (the model's,
    then each candidate's). Equal bytes give equal samples, a sample digest equals no raw digest (a keyed blake3),
    and a sample left in place shares no prefix with the other side: every model-vs-candidate comparison of the maps
    then says what comparing raw digests would. Returns how many tensors were digested whole."""
    mine = model.prefixes()
    theirs = [c.prefixes() for c in candidates]
    hits = [np.isin(mine, np.concatenate(theirs)) if theirs else np.zeros(len(mine), dtype=bool)]
    hits += [np.isin(t, mine) for t in theirs]
    whole = 0
    for dmap, table, hit in zip([model, *candidates], tables, hits, strict=True):
        if not hit.any():
            continue
        for name in list(compress(dmap, hit.tolist())):
            if table.info(name).nbytes > SAMPLED_ABOVE:
                dmap.replace(name, table.raw_digest(name))
                whole += 1
    return whole


class NameIndex:
    """The positions of names in a list, found by their hash (12 bytes per name; a set or dict of 10^5 names holds
    ~50 B per name beside the strings, which stay in the list)."""

    __slots__ = ("_hashes", "_names", "_order")

    def __init__(self, names: Sequence[str]) -> None:
        hashes = np.fromiter(map(hash, names), dtype=np.int64, count=len(names))
        self._order = np.argsort(hashes, kind="stable").astype(np.int32)
        self._hashes = hashes[self._order]
        self._names = names

    def position(self, name: str) -> int | None:
        """Where `name` is in the list (None when absent)."""
        h = hash(name)
        i = int(np.searchsorted(self._hashes, h))
        while i < len(self._hashes) and self._hashes[i] == h:
            p = int(self._order[i])
            if self._names[p] == name:
                return p
            i += 1
        return None

    def positions(self, names: Sequence[str]) -> np.ndarray:
        """`position` of each name (-1 when absent), hashed and searched as arrays (a name at a time costs ~3 us)."""
        hashes = np.fromiter(map(hash, names), dtype=np.int64, count=len(names))
        at = np.minimum(np.searchsorted(self._hashes, hashes), max(len(self._hashes) - 1, 0))
        out = np.full(len(names), -1, dtype=np.int64)
        if not len(self._hashes):
            return out
        for i in np.flatnonzero(self._hashes[at] == hashes).tolist():
            p = int(self._order[at[i]])
            found = p if self._names[p] == names[i] else self.position(names[i])  # a hash shared by two names
            out[i] = -1 if found is None else found
        return out

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.position(name) is not None


class DigestMap(Mapping[str, bytes]):
    """One model's digests by tensor name: the paired tensors' from a column of detect's digest array (in the pass's
    order), then the others' (tensors the fit does not use: passthrough layers, unpaired names) from a dict. Iterates
    in that order, as the dict it replaces did."""

    __slots__ = ("_column", "_index", "_names", "_rest")

    def __init__(self, names: Sequence[str], index: NameIndex, column: np.ndarray, rest: dict[str, bytes]) -> None:
        """`column[i]`: the DIGEST_BYTES of names[i]; `index`: names' NameIndex; `rest`: every other tensor."""
        self._names, self._index, self._column, self._rest = names, index, column, rest

    def __getitem__(self, name: str) -> bytes:
        got = self._rest.get(name)
        if got is not None:
            return got
        p = self._index.position(name)
        if p is None:
            raise KeyError(name)
        return self._column[p].tobytes()

    def __iter__(self) -> Iterator[str]:
        yield from self._names
        yield from self._rest

    def __len__(self) -> int:
        return len(self._names) + len(self._rest)

    def items(self) -> Iterator[tuple[str, bytes]]:  # type: ignore[override]
        """(name, digest) in order, without a lookup per name."""
        for name, digest in zip(self._names, self._column, strict=True):
            yield name, digest.tobytes()
        yield from self._rest.items()

    def replace(self, name: str, digest: bytes) -> None:
        """Set a tensor's digest (confirm_copies: a sample digest by the raw one)."""
        if name in self._rest:
            self._rest[name] = digest
            return
        p = self._index.position(name)
        if p is None:
            raise KeyError(name)
        self._column[p] = np.frombuffer(digest, dtype=np.uint8)

    def values(self) -> Iterator[bytes]:  # type: ignore[override]
        for _, digest in self.items():
            yield digest

    def prefixes(self) -> np.ndarray:
        """The first 8 bytes of each digest as one uint64, in iteration order: a compact key for set operations."""
        head = np.ascontiguousarray(self._column[:, :8]).view(np.uint64).reshape(-1)
        rest = np.frombuffer(b"".join(d[:8] for d in self._rest.values()), dtype=np.uint64)
        return np.concatenate([head, rest])

    def same_as(self, other: DigestMap) -> bool:
        """The same tensors with the same bytes (dict equality), the paired part compared as arrays."""
        if self._names is not other._names:
            return dict(self.items()) == dict(other.items())
        return self._rest == other._rest and np.array_equal(self._column, other._column)


def shared_digests(model: Mapping[str, bytes], others: Sequence[Mapping[str, bytes]]) -> set[bytes]:
    """The model's digests that some other map holds too (copied tensors). DigestMaps are compared by their first 8
    bytes as arrays first, so only those that can match become bytes: a set of every candidate digest held ~0.2 KB
    per tensor at 10^5 tensors, and a plain merge shares none. Other mappings are intersected as sets."""
    maps = [o for o in others if isinstance(o, DigestMap)]
    if not isinstance(model, DigestMap) or len(maps) != len(others):
        return set(model.values()) & {d for o in others for d in o.values()}
    mine = model.prefixes()
    theirs = [o.prefixes() for o in maps]
    hit = np.isin(mine, np.concatenate(theirs)) if theirs else np.zeros(len(mine), dtype=bool)
    if not hit.any():
        return set()
    keys = mine[hit]
    found: set[bytes] = set()
    for other, prefixes in zip(maps, theirs, strict=True):
        found.update(d for d, h in zip(other.values(), np.isin(prefixes, keys), strict=True) if h)
    return {d for d, h in zip(model.values(), hit, strict=True) if h and d in found}

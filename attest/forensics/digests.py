"""The raw tensor digests detect compares byte for byte (identical copies, passthrough layers, copied experts), held
as one fixed-width array over the paired tensors instead of a dict of bytes per model: at 10^5 tensors three such
dicts held ~0.3 KB per tensor at detect's peak, the array and its name index ~0.1 KB."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import blake3
import numpy as np

from attest.checkpoint.reader import TensorTable

DIGEST_BYTES = 32
"""blake3's digest (attest.checkpoint.reader.TensorTable.raw_digest)."""

SAMPLED_ABOVE = 64 * 1024
"""Tensors larger than this are sampled before the pass (DigestPlan); smaller ones are digested whole in it, which
costs about what sampling would."""


_PLACEHOLDER_CONTEXT = ("attest 2026-12 detect placeholder v1 model", "attest 2026-12 detect placeholder v1 candidate")


class DigestPlan:
    """Which tensors detect digests whole. The digests serve one purpose: finding model tensors that are byte copies
    of candidate tensors (identical models, passthrough layers, copied experts). Digesting every tensor of every
    model costs a fifth of detect's time; a model tensor can only be a copy of a candidate tensor with the same
    sampled bytes (TensorTable.sample_digest), so only tensors whose sample some tensor on the other side shares are
    digested whole, and every other large tensor stands in the digest maps under a placeholder (`digest`) that equals
    no raw digest and nothing on the other side. Every comparison of a model digest with a candidate digest
    therefore says what comparing raw digests would."""

    __slots__ = ("whole",)

    def __init__(self, whole: Sequence[frozenset[str]]) -> None:
        """`whole[si]`: the large tensors of source si (the model, then each candidate) to digest whole."""
        self.whole = list(whole)

    @classmethod
    def for_sources(cls, model: TensorTable, candidates: Sequence[TensorTable]) -> DigestPlan:
        """Sample every large tensor of the model and the candidates (a few pages each, with pread) and keep those
        whose sample (its first 8 bytes: a shared prefix only costs a whole digest) the other side has."""
        names = [t.larger_than(SAMPLED_ABOVE) for t in (model, *candidates)]
        keys = [
            np.frombuffer(b"".join(t.sample_digest(n)[:8] for n in ns), dtype=np.uint64)
            for t, ns in zip((model, *candidates), names, strict=True)
        ]
        theirs = np.concatenate(keys[1:]) if len(keys) > 1 else np.zeros(0, np.uint64)
        hit = [np.isin(keys[0], theirs)] + [np.isin(k, keys[0]) for k in keys[1:]]
        return cls(
            [frozenset(n for n, h in zip(ns, hs.tolist(), strict=True) if h) for ns, hs in zip(names, hit, strict=True)]
        )

    def restricted(self, names: Sequence[tuple[int, str]]) -> DigestPlan:
        """The plan for these (source, name) pairs only (what a work unit needs)."""
        return DigestPlan([frozenset(n for si, n in names if si == s and n in w) for s, w in enumerate(self.whole)])

    def digest(self, si: int, table: TensorTable, name: str) -> bytes:
        """Source si's digest of a tensor: raw unless it is large and cannot be a copy, then a placeholder keyed by
        the side (model or candidate), so that no model placeholder equals a candidate's whatever the bytes (a work
        unit whose files differed from the driver's could not turn two different tensors into a copy)."""
        if name in self.whole[si] or table.info(name).nbytes <= SAMPLED_ABOVE:
            return table.raw_digest(name)
        h = blake3.blake3(derive_key_context=_PLACEHOLDER_CONTEXT[min(si, 1)])
        h.update(table.sample_digest(name))
        return h.digest()


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

"""The layout-canonical view of a checkpoint's tensors (SPEC.md §1.10).

Routed experts of a mixture-of-experts model are stored either per expert (`P.{e}.gate_proj.weight`, `up_proj`,
`down_proj`: the Hugging Face checkpoints) or fused (`P.gate_up_proj` [E, 2I, H] holding expert e's gate_proj rows
then its up_proj rows, `P.down_proj` [E, H, I]: what mergekit 0.1.5 writes under transformers 5). Both hold the same
numbers in the same row-major order, so each per-expert tensor is one contiguous byte range of the fused tensor: the
view maps it as such (no copy) and everything that compares weights (detect, diff) compares canonical tensors. The
identity root stays over the stored tensors.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from attest.checkpoint.reader import IndexedTensors, TensorTable
from attest.errors import InputError
from attest.identity.dtypes import DTYPE_BITS
from attest.identity.safetensors_reader import SafetensorsFile, TensorInfo

FUSED = re.compile(r"^(?P<prefix>(?:.*\.)?experts)\.(?P<kind>gate_up_proj|down_proj)$")
MIXTRAL = re.compile(r"^(?P<prefix>(?:.*\.)?)block_sparse_moe\.(?P<rest>.+)$")
_MIXTRAL_PROJ = re.compile(r"^experts\.(?P<expert>\d+)\.(?P<w>w1|w2|w3)\.weight$")
_MIXTRAL_NAMES = {"w1": "gate_proj", "w3": "up_proj", "w2": "down_proj"}
PER_EXPERT = re.compile(
    r"^(?P<prefix>(?:.*\.)?experts)\.(?P<expert>\d+)\.(?P<proj>gate_proj|up_proj|down_proj)\.weight$"
)


def canonical_name(name: str) -> str:
    """Mixtral's `P.block_sparse_moe.experts.E.w1/w3/w2.weight` (and router `P.block_sparse_moe.gate.weight`) under
    the names mergekit and transformers 5 give them: `P.mlp.experts.E.gate_proj/up_proj/down_proj.weight`,
    `P.mlp.gate.weight` (same shapes, same bytes); every other name unchanged."""
    m = MIXTRAL.match(name)
    if m is None:
        return name
    rest = m["rest"]
    e = _MIXTRAL_PROJ.match(rest)
    if e is not None:
        rest = f"experts.{e['expert']}.{_MIXTRAL_NAMES[e['w']]}.weight"
    return f"{m['prefix']}mlp.{rest}"


@dataclass(frozen=True)
class Relayout:
    """One stored fused tensor and the canonical per-expert tensors it holds, in byte order."""

    stored: str
    canonical: tuple[str, ...]


class ExpertKey(NamedTuple):
    """`model.layers.3.mlp.experts.5.up_proj.weight` -> prefix `model.layers.3.mlp.experts`, expert 5, `up_proj`."""

    prefix: str
    expert: int
    proj: str

    @property
    def expert_name(self) -> str:
        return f"{self.prefix}.{self.expert}"


def expert_of(name: str) -> ExpertKey | None:
    """The routed expert a canonical tensor belongs to, if any."""
    m = PER_EXPERT.match(name)
    return ExpertKey(m["prefix"], int(m["expert"]), m["proj"]) if m else None


class _Pieces(NamedTuple):
    """A fused stored tensor read as per-expert pieces of one shape, each `size` bytes after the one before."""

    stored: str
    file: SafetensorsFile
    dtype: str
    shape: tuple[int, ...]
    begin: int
    size: int


_PIECE = 1 << 32
"""A piece's code in the name index: fused tensor number * _PIECE + its piece number."""


class CanonicalTensors(IndexedTensors):
    """name -> (open file, entry) of a table's canonical tensors, each entry made on access: a stored tensor under
    its canonical name, a fused tensor's pieces at their byte ranges. It holds a name -> stored name (or piece code)
    dict; a dict of made entries held ~0.35 KB per tensor and view (10^5 tensors for a large MoE)."""

    __slots__ = ("_pieces", "_stored")

    def __init__(
        self,
        stored: Mapping[str, tuple[SafetensorsFile, TensorInfo]],
        index: dict[str, str | int],
        pieces: list[_Pieces],
    ) -> None:
        self._stored, self._index, self._pieces = stored, index, pieces

    def __getitem__(self, name: str) -> tuple[SafetensorsFile, TensorInfo]:
        at = self._index[name]
        if isinstance(at, str):
            return self._stored[at]
        g, i = divmod(at, _PIECE)
        p = self._pieces[g]
        start = p.begin + i * p.size
        return p.file, TensorInfo(name, p.dtype, p.shape, start, start + p.size)

    def stored_name(self, name: str) -> str:
        """The stored tensor holding a canonical tensor's bytes (KeyError for a name not here)."""
        at = self._index[name]
        return at if isinstance(at, str) else self._pieces[at // _PIECE].stored


class StoredNames(Mapping[str, str]):
    """Canonical name -> the stored tensor holding its bytes (itself when the view reads it as stored)."""

    __slots__ = ("_where",)

    def __init__(self, where: Mapping[str, tuple[SafetensorsFile, TensorInfo]]) -> None:
        self._where = where

    def __getitem__(self, name: str) -> str:
        if isinstance(self._where, CanonicalTensors):
            return self._where.stored_name(name)
        if name not in self._where:
            raise KeyError(name)
        return name

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


class CanonicalView(TensorTable):
    """The canonical tensors of a table: per-expert names, fused experts mapped onto byte ranges of the stored ones.
    A table with neither fused experts nor Mixtral names is its own canonical view: its tensors are not copied."""

    def __init__(self, table: TensorTable) -> None:
        super().__init__(table.folder, table.label, table.where)
        self.relayouts: list[Relayout] = []
        self.notes: list[str] = []
        self.renamed = 0  # Mixtral block_sparse_moe tensors read under their mlp names
        fused = _fused_groups(table)
        per_expert: set[str] = set()
        renames = False
        for n in table.where:
            canon = canonical_name(n)
            renames = renames or canon != n
            if m := PER_EXPERT.match(canon):
                per_expert.add(m["prefix"])
        both = sorted(set(fused) & per_expert)
        if both:
            raise InputError(
                table.folder, f"{both[0]} is stored both fused and per expert: two copies of the same experts"
            )
        for prefix, group in sorted(fused.items()):
            if not group:
                self.notes.append(f"{prefix}: fused expert tensors of an unrecognised shape are compared as stored")
        if renames or any(fused.values()):
            self.where = self._index(table, fused)
        self.stored_of = StoredNames(self.where)

    def _index(self, table: TensorTable, fused: dict[str, dict[str, _Pieces]]) -> CanonicalTensors:
        index: dict[str, str | int] = {}
        pieces: list[_Pieces] = []
        for name in table.where:
            m = FUSED.match(name)
            if m is None or not fused.get(m["prefix"]):  # read as stored: a group that could not be relaid out too
                canon = canonical_name(name)
                if canon != name and canon in table.where:
                    raise InputError(table.folder, f"{name} and {canon} are two copies of the same tensor")
                if canon != name:
                    self.renamed += 1
                index[canon] = name
                continue
            p = fused[m["prefix"]][m["kind"]]
            g = len(pieces)
            pieces.append(p)
            names = _piece_names(m["prefix"], m["kind"], table.where[name][1].shape[0])
            index.update((n, g * _PIECE + i) for i, n in enumerate(names))
            self.relayouts.append(Relayout(name, tuple(names)))
        return CanonicalTensors(table.where, index, pieces)

    @property
    def fused(self) -> bool:
        return bool(self.relayouts)

    @property
    def layout(self) -> str:
        """How the stored tensors were read ('' when as stored)."""
        parts = []
        if self.relayouts:
            n = sum(len(r.canonical) for r in self.relayouts)
            parts.append(f"{len(self.relayouts)} fused expert tensors read as {n} per-expert tensors")
        if self.renamed:
            parts.append(f"{self.renamed} Mixtral block_sparse_moe tensors read under their mlp names")
        return "; ".join(parts)


def canonical_view(table: TensorTable) -> CanonicalView:
    return CanonicalView(table)


def _piece_names(prefix: str, kind: str, experts: int) -> list[str]:
    """The canonical tensors of a fused tensor in byte order: each expert's gate then up rows, or its down rows."""
    projs = ("gate_proj", "up_proj") if kind == "gate_up_proj" else ("down_proj",)
    return [f"{prefix}.{x}.{proj}.weight" for x in range(experts) for proj in projs]


def _fused_groups(table: TensorTable) -> dict[str, dict[str, _Pieces]]:
    """prefix -> {"gate_up_proj": its pieces, "down_proj": ...}; {} when the pair's shapes do not fit."""
    found: dict[str, dict[str, tuple[SafetensorsFile, TensorInfo]]] = {}
    for name in table.where:
        m = FUSED.match(name)
        if m is not None:
            found.setdefault(m["prefix"], {})[m["kind"]] = table.where[name]
    out: dict[str, dict[str, _Pieces]] = {}
    for prefix, kinds in found.items():
        out[prefix] = {}
        if set(kinds) != {"gate_up_proj", "down_proj"}:
            continue
        (gu_file, gu), (down_file, down) = kinds["gate_up_proj"], kinds["down_proj"]
        if gu.dtype != down.dtype or len(gu.shape) != 3 or len(down.shape) != 3 or DTYPE_BITS[gu.dtype] % 8:
            continue
        e, two_i, h = gu.shape
        inter = down.shape[2]
        if down.shape[:2] != (e, h) or two_i != 2 * inter:
            continue
        rows = inter * h * (DTYPE_BITS[gu.dtype] // 8)  # bytes of one [I, H] (or [H, I]) matrix
        out[prefix] = {
            "gate_up_proj": _Pieces(gu.name, gu_file, gu.dtype, (inter, h), gu.begin, rows),
            "down_proj": _Pieces(down.name, down_file, down.dtype, (h, inter), down.begin, rows),
        }
    return out

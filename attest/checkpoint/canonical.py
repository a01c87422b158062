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
from dataclasses import dataclass
from typing import NamedTuple

from attest.checkpoint.reader import TensorTable
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


class CanonicalView(TensorTable):
    """The canonical tensors of a table: per-expert names, fused experts mapped onto byte ranges of the stored ones."""

    where: dict[str, tuple[SafetensorsFile, TensorInfo]]

    def __init__(self, table: TensorTable) -> None:
        super().__init__(table.folder, table.label, {})
        self.relayouts: list[Relayout] = []
        self.notes: list[str] = []
        self.stored_of: dict[str, str] = {}
        self.renamed = 0  # Mixtral block_sparse_moe tensors read under their mlp names
        fused = _fused_groups(table)
        per_expert = {m["prefix"] for n in table.where if (m := PER_EXPERT.match(canonical_name(n)))}
        both = sorted(set(fused) & per_expert)
        if both:
            raise InputError(
                table.folder, f"{both[0]} is stored both fused and per expert: two copies of the same experts"
            )
        for name, entry in table.where.items():
            m = FUSED.match(name)
            if m is None or m["prefix"] not in fused:
                canon = canonical_name(name)
                if canon != name and canon in table.where:
                    raise InputError(table.folder, f"{name} and {canon} are two copies of the same tensor")
                if canon != name:
                    self.renamed += 1
                self.where[canon] = entry
                self.stored_of[canon] = name
                continue
            pieces = fused[m["prefix"]].get(m["kind"])
            if pieces is None:  # the group could not be relaid out: keep the stored tensors, say why once
                self.where[name] = entry
                self.stored_of[name] = name
                continue
            for info in pieces:
                self.where[info.name] = (entry[0], info)
                self.stored_of[info.name] = name
            self.relayouts.append(Relayout(name, tuple(p.name for p in pieces)))
        for prefix, group in sorted(fused.items()):
            if not group:
                self.notes.append(f"{prefix}: fused expert tensors of an unrecognised shape are compared as stored")

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


def _fused_groups(table: TensorTable) -> dict[str, dict[str, list[TensorInfo]]]:
    """prefix -> {"gate_up_proj": its canonical pieces, "down_proj": ...}; {} when the pair's shapes do not fit."""
    found: dict[str, dict[str, tuple[SafetensorsFile, TensorInfo]]] = {}
    for name, entry in table.where.items():
        m = FUSED.match(name)
        if m is not None:
            found.setdefault(m["prefix"], {})[m["kind"]] = entry
    out: dict[str, dict[str, list[TensorInfo]]] = {}
    for prefix, kinds in found.items():
        out[prefix] = {}
        if set(kinds) != {"gate_up_proj", "down_proj"}:
            continue
        gu, down = kinds["gate_up_proj"][1], kinds["down_proj"][1]
        if gu.dtype != down.dtype or len(gu.shape) != 3 or len(down.shape) != 3 or DTYPE_BITS[gu.dtype] % 8:
            continue
        e, two_i, h = gu.shape
        inter = down.shape[2]
        if down.shape[:2] != (e, h) or two_i != 2 * inter:
            continue
        size = DTYPE_BITS[gu.dtype] // 8
        rows = inter * h * size  # bytes of one [I, H] (or [H, I]) matrix
        gate_up: list[TensorInfo] = []
        downs: list[TensorInfo] = []
        for x in range(e):
            start = gu.begin + 2 * x * rows
            gate_up.append(TensorInfo(f"{prefix}.{x}.gate_proj.weight", gu.dtype, (inter, h), start, start + rows))
            gate_up.append(
                TensorInfo(f"{prefix}.{x}.up_proj.weight", gu.dtype, (inter, h), start + rows, start + 2 * rows)
            )
            start = down.begin + x * rows
            downs.append(TensorInfo(f"{prefix}.{x}.down_proj.weight", down.dtype, (h, inter), start, start + rows))
        out[prefix] = {"gate_up_proj": gate_up, "down_proj": downs}
    return out

"""Mixture-of-experts tensor layouts: the per-expert tensors checkpoints store, and the fused tensors mergekit writes.

Hugging Face checkpoints store each routed expert's projections as tensors of their own
(`mlp.experts.E.gate_proj.weight`, Mixtral's `block_sparse_moe.experts.E.w1.weight`). transformers 5 loads them
into fused parameters through its checkpoint conversion mapping, and mergekit 0.1.5 (which only runs under
transformers 5) merges and writes those fused parameters: `mlp.experts.gate_up_proj` [E, 2I, H] (expert e's gate
rows, then its up rows) and `mlp.experts.down_proj` [E, H, I]. A fused tensor is merged as one tensor, so methods
that look at a whole tensor (TIES's top-k, SLERP's angle) see all experts at once.

`FusedExpertView` presents a checkpoint in that layout without copying it: a fused tensor is assembled from the
stored per-expert tensors when it is loaded, so memory stays bound by the largest (fused) tensor. The mapping is
declared here per architecture (SPEC.md section 5.5), checked against real mergekit 0.1.5 merges.
"""

from __future__ import annotations

import re
from array import array
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Any

import torch

from attest.checkpoint.reader import Checkpoint, StoredTensors
from attest.errors import InputError
from attest.identity.safetensors_reader import TensorInfo

LAYOUTS = ("mergekit", "per-expert")
"""mergekit: the fused layout mergekit 0.1.5 writes under transformers 5; per-expert: the tensors as stored."""
MERGEKIT_FUSED_VERSIONS = ("0.1.5",)
"""mergekit versions whose MoE output layout is known (they write through transformers 5's fused parameters)."""
PER_EXPERT_RE = re.compile(r"^(?P<head>.+)\.experts\.(?P<expert>\d+)\.(?P<proj>[A-Za-z0-9_]+)\.weight$")
FUSED_RE = re.compile(r"\.experts\.(gate_up_proj|down_proj)$")


@dataclass(frozen=True)
class MoeArchitecture:
    """How one architecture's stored experts become mergekit's fused tensors."""

    name: str
    architectures: tuple[str, ...]
    model_types: tuple[str, ...]
    gate: str
    up: str
    down: str
    renames: tuple[tuple[str, str], ...] = ()  # (stored substring, written substring), applied to every name


MOE_ARCHITECTURES = (
    MoeArchitecture("Qwen3-MoE", ("Qwen3MoeForCausalLM",), ("qwen3_moe",), "gate_proj", "up_proj", "down_proj"),
    MoeArchitecture(
        "Qwen3.5-MoE (text)", ("Qwen3_5MoeForCausalLM",), ("qwen3_5_moe_text",), "gate_proj", "up_proj", "down_proj"
    ),
    MoeArchitecture(
        "Mixtral", ("MixtralForCausalLM",), ("mixtral",), "w1", "w3", "w2", renames=((".block_sparse_moe.", ".mlp."),)
    ),
)
SUPPORTED_NAMES = ", ".join(f"{a.name} ({a.architectures[0]})" for a in MOE_ARCHITECTURES)


def is_moe(ckpt: Checkpoint) -> bool:
    """Whether the checkpoint holds routed experts, per expert or fused."""
    return any(PER_EXPERT_RE.match(n) or FUSED_RE.search(n) for n in ckpt.names)


def moe_architecture(ckpt: Checkpoint) -> MoeArchitecture:
    """The declared architecture of an MoE checkpoint; InputError when its fused layout is not known here."""
    archs = ckpt.config.get("architectures")
    arch = archs[0] if isinstance(archs, list) and len(archs) == 1 and isinstance(archs[0], str) else None
    model_type = ckpt.config.get("model_type")
    for a in MOE_ARCHITECTURES:
        if arch in a.architectures and model_type in a.model_types:
            return a
    raise InputError(
        ckpt.folder,
        f"a mixture-of-experts model ({arch or 'no architecture'}, model_type {model_type!r}) whose expert layout "
        f"in mergekit's output attest has not verified (supported: {SUPPORTED_NAMES}); merge or replay it with "
        "--layout per-expert",
    )


@dataclass
class _Fused:
    """A fused tensor: the stored per-expert tensors concatenated along dim 0, expert by expert, held as their
    positions in the wrapped checkpoint's name index (4 bytes each, not a list of names per expert)."""

    info: TensorInfo
    parts: Sequence[int]  # positions (StoredTensors.position), expert-major


@dataclass
class _Plan:
    fused: dict[str, _Fused] = field(default_factory=dict)
    alias: dict[str, str] = field(default_factory=dict)  # written name -> stored name
    order: list[str] = field(default_factory=list)


def _fused_name(head: str, which: str, arch: MoeArchitecture) -> str:
    return _renamed(f"{head}.experts.{which}", arch)


def _renamed(name: str, arch: MoeArchitecture) -> str:
    for old, new in arch.renames:
        name = name.replace(old, new)
    return name


def _plan(ckpt: Checkpoint, arch: MoeArchitecture) -> _Plan:
    where = ckpt.where
    if not isinstance(where, StoredTensors):
        raise TypeError("the fused expert view reads a folder's stored tensors")
    # (head, which) -> {2 x expert + the projection's rank: position}: one dict slot per stored expert tensor (its
    # position is the int the name index already holds), not a dict per expert
    groups: dict[tuple[str, str], dict[int, int]] = {}
    rank = {arch.gate: 0, arch.up: 1, arch.down: 0}
    plan = _Plan()
    for name in where:
        m = PER_EXPERT_RE.match(name)
        if m is None or m.group("proj") not in rank:
            written = _renamed(name, arch)
            if written in plan.alias:
                raise InputError(ckpt.folder, f"tensors {plan.alias[written]!r} and {name!r} both read as {written!r}")
            plan.alias[written] = name
            plan.order.append(written)
            continue
        proj = m.group("proj")
        which = "down_proj" if proj == arch.down else "gate_up_proj"
        slots = groups.setdefault((m.group("head"), which), {})
        slots[2 * int(m.group("expert")) + rank[proj]] = where.position_of(name)
    for (head, which), slots in sorted(groups.items()):
        name = _fused_name(head, which, arch)
        if name in plan.alias:
            raise InputError(ckpt.folder, f"{name!r} is stored both fused and per expert")
        count = len({slot >> 1 for slot in slots})
        if any(slot >> 1 >= count for slot in slots):
            raise InputError(ckpt.folder, f"the experts of {head} are not numbered 0..{count - 1}")
        projs = [arch.down] if which == "down_proj" else [arch.gate, arch.up]
        k = len(projs)  # each expert's k parts, in turn
        if len(slots) != k * count:
            for e in range(count):
                missing = [p for r, p in enumerate(projs) if 2 * e + r not in slots]
                if missing:
                    raise InputError(ckpt.folder, f"expert {e} of {head} has no {', '.join(missing)} tensor")
        positions = array("I", [slots[2 * e + r] for e in range(count) for r in range(k)])
        infos = [where.at(p)[1] for p in positions]
        if len({(i.dtype, i.shape[1:]) for i in infos}) != 1 or any(len(i.shape) != 2 for i in infos):
            raise InputError(ckpt.folder, f"the experts of {head} ({which}) differ in dtype or shape")
        rows = sum(i.shape[0] for i in infos[:k])
        if any(sum(i.shape[0] for i in infos[j : j + k]) != rows for j in range(0, len(infos), k)):
            raise InputError(ckpt.folder, f"the experts of {head} ({which}) differ in shape")
        shape = (count, rows, infos[0].shape[1])
        nbytes = sum(i.nbytes for i in infos)
        plan.fused[name] = _Fused(TensorInfo(name, infos[0].dtype, shape, 0, nbytes), positions)
        plan.order.append(name)
    return plan


class FusedExpertView(Checkpoint):
    """A checkpoint read in mergekit's fused expert layout: fused tensors are assembled on load from the stored
    per-expert tensors; other tensors pass through (renamed where the architecture renames them). A view: the
    wrapped checkpoint owns the files and is closed by whoever opened it."""

    def __init__(self, inner: Checkpoint, arch: MoeArchitecture) -> None:  # no super().__init__: nothing to open
        self.inner = inner
        self.arch = arch
        self.folder = inner.folder
        self.config = inner.config
        self.pickle_files = inner.pickle_files
        self.other_files = inner.other_files
        self.label = inner.label
        self.files = []  # the wrapped checkpoint owns the files
        self._plan = _plan(inner, arch)
        where = inner.where
        if not isinstance(where, StoredTensors):
            raise TypeError("the fused expert view reads a folder's stored tensors")
        self._where = where
        self._last_runs: tuple[str, tuple[list[tuple[Any, int, int]], list[int]]] | None = None

    @property
    def names(self) -> list[str]:
        return list(self._plan.order)

    def __contains__(self, name: str) -> bool:
        return name in self._plan.fused or name in self._plan.alias

    def info(self, name: str) -> TensorInfo:
        if name in self._plan.fused:
            return self._plan.fused[name].info
        if name in self._plan.alias:
            return self.inner.info(self._plan.alias[name])
        raise InputError(self.folder, f"no tensor named {name!r}")

    def load(self, name: str) -> torch.Tensor:
        """A fused tensor is a new [E, rows, cols] tensor (torch.stack of each expert's parts concatenated along
        dim 0); every other tensor is the wrapped checkpoint's zero-copy view."""
        fused = self._plan.fused.get(name)
        if fused is None:
            return self.inner.load(self._plan.alias.get(name, name))
        dtype = self.dtype(name)
        if fused.info.nbytes == 0:
            return torch.empty(fused.info.shape, dtype=dtype)
        return torch.frombuffer(self._read(name, fused, 0, fused.info.nbytes), dtype=dtype).reshape(fused.info.shape)

    def flat_range(self, name: str, start: int, stop: int) -> torch.Tensor:
        """Elements [start, stop) of a fused tensor, flat: a new tensor of those bytes only (a slice of a fused
        tensor is read without assembling the rest); other tensors: the wrapped checkpoint's zero-copy view."""
        fused = self._plan.fused.get(name)
        if fused is None:
            return self.inner.flat_range(self._plan.alias.get(name, name), start, stop)
        dtype = self.dtype(name)
        if stop <= start:
            return torch.empty(0, dtype=dtype)
        return torch.frombuffer(self._read(name, fused, start * dtype.itemsize, stop * dtype.itemsize), dtype=dtype)

    def release_flat(self, name: str, start: int, stop: int) -> None:
        if name in self._plan.alias:  # a fused tensor's pages are released as they are copied
            self.inner.release_flat(self._plan.alias[name], start, stop)

    def _runs(self, name: str, fused: _Fused) -> tuple[list[tuple[Any, int, int]], list[int]]:
        """The fused tensor's bytes as runs (file, begin, end) of parts that follow each other in one file (read as
        one: 10^5 small experts, one memcpy and one system call per run instead of per part), with the offset of
        each run in the fused tensor. The last tensor's are kept: its slices are read one after another."""
        if self._last_runs is not None and self._last_runs[0] == name:
            return self._last_runs[1]
        runs: list[tuple[Any, int, int]] = []
        span_of = self._where.span
        for position in fused.parts:
            fh, begin, end = span_of(position)
            if runs and runs[-1][0] is fh and runs[-1][2] == begin:
                runs[-1] = (fh, runs[-1][1], end)
            else:
                runs.append((fh, begin, end))
        offsets = list(accumulate((end - begin for _, begin, end in runs), initial=0))
        if offsets[-1] != fused.info.nbytes:
            raise InputError(self.folder, f"the experts of {name} do not add up to its {fused.info.nbytes} bytes")
        self._last_runs = (name, (runs, offsets))
        return runs, offsets

    def _read(self, name: str, fused: _Fused, begin: int, end: int) -> bytearray:
        """Bytes [begin, end) of a fused tensor (row-major [E, rows, cols], each part a block of whole rows of one
        dtype: the parts' bytes in order), copied from the mapped files, whose pages are then released."""
        runs, offsets = self._runs(name, fused)
        buf = bytearray(end - begin)
        dst = memoryview(buf)
        k = bisect_right(offsets, begin) - 1
        pos = begin
        while pos < end:
            fh, first, last = runs[k]
            lo = first + pos - offsets[k]
            hi = min(last, first + end - offsets[k])
            dst[pos - begin : pos - begin + hi - lo] = fh.view_range(lo, hi)
            fh.release_range(lo, hi)
            pos += hi - lo
            k += 1
        dst.release()
        return buf

    def files_of(self, name: str) -> list[str]:
        """A fused tensor is read from the files of all its per-expert parts."""
        fused = self._plan.fused.get(name)
        if fused is None:
            return self.inner.files_of(self._plan.alias.get(name, name))
        span = self._where.span
        return sorted({str(Path(fh.path).resolve()) for fh in {span(p)[0] for p in fused.parts}})

    def release(self, name: str) -> None:
        if name in self._plan.alias:
            self.inner.release(self._plan.alias[name])


def fused_views(ckpts: Mapping[str, Checkpoint], layout: str) -> dict[str, Checkpoint]:
    """Each parent as the merge reads it in `layout` (LAYOUTS, or the reason the layout is unknown: refused for MoE
    parents). Dense parents are unchanged either way."""
    out: dict[str, Checkpoint] = {}
    for ref, ckpt in ckpts.items():
        if not is_moe(ckpt):
            out[ref] = ckpt
        elif layout not in LAYOUTS:
            raise InputError(None, f"cannot recompute this mixture-of-experts merge: {layout}")
        elif layout == "per-expert":
            fused = [n for n in ckpt.names if FUSED_RE.search(n)]
            if fused:
                raise InputError(
                    ckpt.folder, f"stores its experts fused ({fused[0]}); --layout per-expert needs per-expert parents"
                )
            out[ref] = ckpt
        else:
            out[ref] = FusedExpertView(ckpt, moe_architecture(ckpt))
    return out


def recorded_layout(internal: Mapping[str, object]) -> str:
    """The expert layout of a merge made by mergekit, from the versions its statement records: a LAYOUTS value,
    or the reason it cannot be known (fused_views turns that into a refusal for MoE parents only)."""
    versions = internal.get("versions")
    versions = versions if isinstance(versions, dict) else {}
    mergekit, transformers = versions.get("mergekit"), versions.get("transformers")
    if not isinstance(mergekit, str) or not isinstance(transformers, str):
        return "the statement records no mergekit and transformers versions, and the expert layout depends on them"
    if mergekit not in MERGEKIT_FUSED_VERSIONS:
        return f"the expert layout mergekit {mergekit} writes is not known to attest (known: 0.1.5)"
    if transformers.split(".")[0] != "5":
        return f"mergekit {mergekit} runs under transformers 5, but the statement records transformers {transformers}"
    return "mergekit"

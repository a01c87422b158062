"""The streaming executor: one output tensor at a time, inputs read from mapped files and released after use.

Memory stays a small multiple of the largest tensor (its inputs in the working dtype, the float32 accumulator,
the result), independent of model size. The same `compute_tensors` drives `merge` (write) and replay (compare).
"""

from __future__ import annotations

import collections
import contextlib
import json
import math
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from attest.atomic import atomic_folder
from attest.checkpoint.reader import Checkpoint
from attest.errors import InputError
from attest.merge.hf_config import mergekit_config_json
from attest.merge.masks import KeyedMasks, MaskSource, MergekitGlobalMasks, check_seed
from attest.merge.methods import TensorGroup
from attest.merge.methods.sparsify import TIE_ORDERS
from attest.merge.moe_layout import LAYOUTS, fused_views, is_moe, recorded_layout
from attest.merge.planner import MergePlan, TensorPlan, plan_merge
from attest.merge.writer import OutputTensor, ShardedWriter
from attest.statements.recipe import MergeRecipe

TOKENIZER_FILES = (
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer.model",
    "added_tokens.json",
    "merges.txt",
    "vocab.json",
    "chat_template.jinja",
    "generation_config.json",
)
RNG_MODES = ("attest", "mergekit")
ENGINE_ID = "attest-merge/v1"
SLICE_ELEMENTS = 1 << 20
"""Elementwise methods run over flat slices of this many elements (4 MiB in float32), read, merged and written or
compared one at a time: the same bits, and working memory bound by a slice, not by the largest tensor."""


@dataclass
class MergeResult:
    """What a merge did: enough for a merge statement (recipe, parents, seed, device) to be recorded later."""

    output: Path
    recipe: MergeRecipe
    parents: dict[str, Path]
    method: str
    seed: int | None
    device: str
    tie_order: str
    tensor_count: int
    num_layers: int
    notes: list[str] = field(default_factory=list)
    layout: str | None = None  # the expert layout written (LAYOUTS); None for a dense model

    def engine_parameters(self) -> dict[str, object]:
        """What a merge statement's internalParameters must carry for an exact replay (see replay_options)."""
        out: dict[str, object] = {"engine": ENGINE_ID, "device": self.device, "tie_order": self.tie_order}
        if self.seed is not None:
            out |= {"seed": self.seed, "mask_generator": "attest"}
        if self.layout is not None:
            out["layout"] = self.layout
        return out


def replay_options(internal: Mapping[str, object]) -> dict[str, object]:
    """Keyword arguments for attest.replay.replay() from a statement's internalParameters. A merge not made by
    attest's engine is taken to be mergekit's: its tie order, its global generator when a seed is recorded, and the
    expert layout of the mergekit and transformers versions recorded (attest merges record theirs; before layouts
    were recorded attest wrote experts as stored)."""
    seed = internal.get("seed")
    seed = seed if isinstance(seed, int) and not isinstance(seed, bool) else None
    if seed is not None:
        check_seed(seed)
    versions = internal.get("versions")
    transformers = versions.get("transformers") if isinstance(versions, dict) else None
    recorded = {"transformers_version": transformers if isinstance(transformers, str) else None}
    if internal.get("engine") == ENGINE_ID:
        return {
            "seed": seed,
            "tie_order": internal.get("tie_order", "mergekit"),
            "mask_generator": internal.get("mask_generator", "attest"),
            "layout": internal.get("layout", "per-expert"),
            **recorded,
        }
    layout = recorded_layout(internal)
    return {"seed": seed, "tie_order": "mergekit", "mask_generator": "mergekit", "layout": layout, **recorded}


def check_device(device: str) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(None, "--device cuda was asked for but no CUDA device is available")
    if dev.type not in ("cpu", "cuda"):
        raise InputError(None, f"unsupported device {device!r} (cpu or cuda)")
    return dev


def check_tie_order(tie_order: str) -> None:
    if tie_order not in TIE_ORDERS:
        raise InputError(None, f"unknown tie order {tie_order!r} ({', '.join(TIE_ORDERS)})")


def mask_source(plan: MergePlan, seed: int | None, rng: str) -> MaskSource | None:
    if not plan.method.randomized:
        return None
    if seed is None:
        raise InputError(None, f"{plan.method.name} draws random masks: give a --seed to make it reproducible")
    check_seed(seed)
    if rng == "mergekit":
        return MergekitGlobalMasks(seed)
    if rng != "attest":
        raise InputError(None, f"unknown mask generator {rng!r} ({', '.join(RNG_MODES)})")
    return KeyedMasks(seed)


@contextlib.contextmanager
def open_parents(
    recipe: MergeRecipe, parents: Mapping[str, str | os.PathLike[str]], layout: str = "mergekit"
) -> Iterator[dict[str, Checkpoint]]:
    """Open every model the recipe names, from the folder `parents` maps it to, read in the expert `layout`."""
    opened: dict[str, Checkpoint] = {}
    try:
        for ref in recipe.referenced_models():
            if ref not in parents:
                raise InputError(None, f"no folder given for model {ref!r}")
            opened[ref] = Checkpoint(parents[ref])
        yield fused_views(opened, layout)
    finally:
        for c in opened.values():
            c.close()


@dataclass
class MergedTensor:
    """One merged tensor in its output dtype, as flat pieces in order: one piece, or (an elementwise method over a
    tensor of more than SLICE_ELEMENTS elements) slice by slice, each computed from the same slice of every input
    when it is asked for, so that neither the inputs nor the result are ever held whole (a layer's fused experts
    of a 397B MoE are ~8 GiB in float32). A piece is valid until the next is asked for; pieces are read once."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    pieces: Iterator[torch.Tensor]


def sliced(plan: MergePlan, tp: TensorPlan) -> bool:
    """Whether compute_tensors computes this tensor slice by slice."""
    return tp.dtype.is_floating_point and plan.method.elementwise and math.prod(tp.shape) > SLICE_ELEMENTS


def compute_tensors(
    plan: MergePlan,
    ckpts: Mapping[str, Checkpoint],
    device: torch.device,
    masks: MaskSource | None = None,
    order: list[TensorPlan] | None = None,
    tie_order: str = "mergekit",
) -> Iterator[tuple[TensorPlan, MergedTensor]]:
    """Yield (plan, merged tensor) for each planned tensor, streaming: a tensor's pieces must be consumed before
    the next tensor is asked for (what is left of them is computed then, and dropped)."""
    run = _Compute(plan, ckpts, device, masks, tie_order)
    for tp in order if order is not None else plan.tensors:
        merged = run.merged(tp)
        yield tp, merged
        collections.deque(merged.pieces, maxlen=0)  # pieces a consumer left (the candidate lacks the tensor): computed
        for m, src in zip(tp.models, tp.sources, strict=True):
            ckpts[m].release(src)


@dataclass(frozen=True)
class _Compute:
    plan: MergePlan
    ckpts: Mapping[str, Checkpoint]
    device: torch.device
    masks: MaskSource | None
    tie_order: str

    def merged(self, tp: TensorPlan) -> MergedTensor:
        if sliced(self.plan, tp):
            return MergedTensor(tp.shape, tp.out_dtype, self._slices(tp))
        result = self._whole(tp)
        return MergedTensor(tuple(result.shape), result.dtype, iter([result.reshape(-1)]))

    def _merge(self, tp: TensorPlan, inputs: list[torch.Tensor]) -> torch.Tensor:
        group = TensorGroup(tp.name, inputs, tp.base_index, tp.shared, tp.per_input, self.masks, self.tie_order)
        return self.plan.method.merge(group).to(tp.out_dtype)

    def _whole(self, tp: TensorPlan) -> torch.Tensor:
        raw = [self.ckpts[m].load(src) for m, src in zip(tp.models, tp.sources, strict=True)]
        inputs = [t.to(device=self.device, dtype=tp.dtype) for t in raw]
        if not tp.dtype.is_floating_point:
            if any(not torch.equal(inputs[0], x) for x in inputs[1:]):
                raise InputError(None, f"non-floating tensor {tp.name} differs between inputs; cannot merge it")
            result = inputs[0].clone()
        else:
            result = self._merge(tp, inputs)
        if result.data_ptr() in {t.data_ptr() for t in raw}:
            result = result.clone()  # never hand out a view of a parent's mapped file
        return result

    def _slices(self, tp: TensorPlan) -> Iterator[torch.Tensor]:
        """The merged tensor, SLICE_ELEMENTS flat elements at a time (an elementwise method: the same bits as
        merging it whole). Each input slice is read on its own (a fused expert tensor: only those experts' bytes)
        and its pages released once its piece has been used."""
        inputs = [(self.ckpts[m], src) for m, src in zip(tp.models, tp.sources, strict=True)]
        total = math.prod(tp.shape)
        for start in range(0, total, SLICE_ELEMENTS):
            stop = min(total, start + SLICE_ELEMENTS)
            part = [c.flat_range(src, start, stop).to(device=self.device, dtype=tp.dtype) for c, src in inputs]
            piece = self._merge(tp, part)
            del part
            yield piece
            del piece
            for c, src in inputs:
                c.release_flat(src, start, stop)


def merge_layout(ckpts: Mapping[str, Checkpoint], layout: str) -> str | None:
    """The expert layout a merge of these parents writes: None when no parent has experts."""
    return layout if any(is_moe(c) for c in ckpts.values()) else None


def output_config_text(plan: MergePlan, ckpts: Mapping[str, Checkpoint], layout: str | None) -> str:
    """config.json as the merge writes it: in mergekit's layout, rewritten through transformers as mergekit does."""
    config = output_config(plan, ckpts)
    if layout == "mergekit":
        return mergekit_config_json(config, plan.recipe.out_dtype or plan.recipe.dtype)
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


def output_config(plan: MergePlan, ckpts: Mapping[str, Checkpoint]) -> dict:
    """The config.json a merge writes, before any rewrite (replay compares a candidate's with it)."""
    config = dict(ckpts[plan.donor].config)
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        if key in config:
            config[key] = plan.num_layers
    # Per-layer settings (transformers 5 checks layer_types against num_hidden_layers) follow the source layers.
    if isinstance(config.get("layer_types"), list):
        types = []
        for model, index in plan.layer_origins:
            src = ckpts[model].config.get("layer_types")
            if not isinstance(src, list) or index >= len(src):
                break
            types.append(src[index])
        else:
            config["layer_types"] = types
    out = plan.recipe.out_dtype or plan.recipe.dtype
    if out:
        for key in ("torch_dtype", "dtype"):
            if key in config:
                config[key] = out
    return config


def run_merge(
    recipe: MergeRecipe,
    parents: Mapping[str, str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    device: str = "cpu",
    seed: int | None = None,
    max_shard_bytes: int | None = None,
    tie_order: str = "mergekit",
    layout: str = "mergekit",
) -> MergeResult:
    """Merge into `out` (which must not exist, or be empty). Written in a temporary folder, renamed at the end.

    tie_order: how TIES/breadcrumbs cutoffs break ties between equal magnitudes: "mergekit" (bit-exact with
    mergekit 0.1.5 on the CPU; ranked by the CPU sort on every device) or "stable" (lower index first; linear
    time; the same on every device).
    layout: for mixture-of-experts models, "mergekit" (fused experts and config.json as mergekit 0.1.5 writes them)
    or "per-expert" (the experts as the parents store them); see attest.merge.moe_layout."""
    if layout not in LAYOUTS:
        raise InputError(None, f"unknown expert layout {layout!r} ({', '.join(LAYOUTS)})")
    target = Path(out)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise InputError(target, "output folder exists and is not empty")
    dev = check_device(device)
    check_tie_order(tie_order)
    with atomic_folder(target) as tmp:
        with open_parents(recipe, parents, layout) as ckpts:
            plan = plan_merge(recipe, ckpts)
            written_layout = merge_layout(ckpts, layout)
            masks = mask_source(plan, seed, "attest")
            entries = [OutputTensor(tp.name, tp.out_dtype, tp.shape) for tp in plan.tensors]
            writer = ShardedWriter(tmp, entries, *(() if max_shard_bytes is None else (max_shard_bytes,)))
            try:
                with torch.inference_mode():
                    for tp, merged in compute_tensors(plan, ckpts, dev, masks, tie_order=tie_order):
                        writer.write_pieces(tp.name, merged.dtype, merged.shape, merged.pieces)
                writer.finish()
            finally:
                writer.abort()
            (tmp / "config.json").write_text(output_config_text(plan, ckpts, written_layout), encoding="utf-8")
            (tmp / "mergekit_config.yml").write_text(recipe.mergekit_config_yml(), encoding="utf-8")
            donor = Path(parents[plan.donor])
            for name in TOKENIZER_FILES:
                if (donor / name).is_file():
                    shutil.copyfile(donor / name, tmp / name)
    return MergeResult(
        output=target,
        recipe=recipe,
        parents={k: Path(v) for k, v in parents.items()},
        method=plan.method.name,
        seed=seed if plan.method.randomized else None,
        device=device,
        tie_order=tie_order,
        tensor_count=len(plan.tensors),
        num_layers=plan.num_layers,
        notes=plan.notes,
        layout=written_layout,
    )

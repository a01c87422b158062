"""From a recipe and its parent checkpoints to a plan: each output tensor, its inputs and resolved parameters.

The plan follows mergekit 0.1.5's planner: a `models:` recipe is one output slice over all layers (the base model
appended as an input when it is not listed); a `slices:` recipe stacks layer ranges and renumbers them in output
order. Non-layer tensors before the layers (embeddings) take their inputs from the first slice, those after (final
norm, lm_head) from the last. Gradients are evaluated at t = i/(n-1) over the n layers of a slice (t = 1 for a
one-layer slice); non-layer tensors take t = 0.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from attest.checkpoint.reader import Checkpoint
from attest.errors import InputError
from attest.merge.methods import MergeMethod, get_method
from attest.merge.parameters import Scope, Settings, resolve
from attest.statements.recipe import InputSlice, MergeRecipe, OutputSlice

LAYER_RE = re.compile(r"^(?P<prefix>(?:.*\.)?(?:layers|layer|h|blocks))\.(?P<index>\d+)\.(?P<rest>.+)$")
LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers")
PRE_LAYER_MARKERS = ("embed", "wte", "wpe")
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32, "float64": torch.float64}


@dataclass(slots=True)
class TensorPlan:
    """One output tensor: where its inputs come from and the parameters the method sees for it. Equal parameter
    dicts and model lists are one object shared by every plan that has them (_Shared): read-only."""

    name: str
    models: list[str]  # recipe model references, in the order the method sees them
    sources: list[str]  # the tensor name read from each model
    base_index: int | None
    shared: dict[str, Any]
    per_input: list[dict[str, Any]]
    dtype: torch.dtype  # what the method computes in and returns (before out_dtype)
    out_dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def schedule_label(self) -> str:
        """mergekit orders its work by the largest input tensor name; replaying its random draws needs that order."""
        return max(self.sources)


@dataclass
class MergePlan:
    recipe: MergeRecipe
    method: MergeMethod
    tensors: list[TensorPlan]
    num_layers: int
    donor: str  # the model whose config.json the output starts from
    layer_origins: list[tuple[str, int]] = field(default_factory=list)  # output layer -> (model, source layer)
    notes: list[str] = field(default_factory=list)


class _Shared:
    """One object for equal values: 10^5 planned tensors (an MoE in the per-expert layout) resolve to a handful of
    distinct parameter dicts and model lists, ~1 KB per tensor when each has its own. Values are keyed by type and
    repr, so 1, 1.0 and True, or 0.0 and -0.0, stay distinct; anything else is kept as it is."""

    def __init__(self) -> None:
        self._seen: dict[object, Any] = {}

    def __call__(self, value: Any) -> Any:
        try:
            key = self._key(value)
        except TypeError:
            return value
        return self._seen.setdefault(key, value)

    def _key(self, value: Any) -> object:
        if isinstance(value, dict):
            return dict, tuple((self._key(k), self._key(v)) for k, v in value.items())
        if isinstance(value, list):
            return list, tuple(map(self._key, value))
        if value is None or isinstance(value, str | int | float):  # bool is an int
            return type(value), repr(value)
        raise TypeError(type(value))


def layer_count(ckpt: Checkpoint) -> int:
    for key in LAYER_COUNT_KEYS:
        value = ckpt.config.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    indices = [int(m.group("index")) for n in ckpt.names if (m := LAYER_RE.match(n))]
    return max(indices) + 1 if indices else 0


def _check_one_layer_stack(ckpt: Checkpoint) -> None:
    """Layer tensors are matched across models by their name after the layer number: two stacks (say a text and
    a vision tower) with the same suffixes would collapse into one. Refused rather than guessed."""
    prefixes = sorted({m.group("prefix") for n in ckpt.names if (m := LAYER_RE.match(n))})
    if len(prefixes) > 1:
        shown = ", ".join(f"{p}.N" for p in prefixes[:4]) + (", ..." if len(prefixes) > 4 else "")
        raise InputError(
            ckpt.folder,
            f"more than one stack of numbered layers ({shown}); merging models with several layer stacks is not "
            "supported",
        )


def _layer_tensors(ckpt: Checkpoint) -> dict[int, dict[str, str]]:
    """layer index -> (rest-of-name -> full tensor name), for every layer of a checkpoint, in one pass over the
    names (not one pass per layer: 60 layers x 10^5 tensors of an MoE)."""
    out: dict[int, dict[str, str]] = {}
    for n in ckpt.names:
        m = LAYER_RE.match(n)
        if m:
            out.setdefault(int(m.group("index")), {})[m.group("rest")] = n
    return out


def _output_layer_name(template: str, index: int, rest: str) -> str:
    m = LAYER_RE.match(template)
    assert m is not None
    return f"{m.group('prefix')}.{index}.{rest}"


def _normalized_slices(recipe: MergeRecipe, ckpts: Mapping[str, Checkpoint]) -> list[OutputSlice]:
    if recipe.slices:
        return recipe.slices
    sources = []
    counts = set()
    names = [m.model for m in recipe.models or []]
    for m in recipe.models or []:
        n = layer_count(ckpts[m.model])
        counts.add(n)
        sources.append(InputSlice(model=m.model, layer_range=(0, n), parameters=m.parameters))
    if recipe.base_model and recipe.base_model not in names:
        n = layer_count(ckpts[recipe.base_model])
        counts.add(n)
        sources.append(InputSlice(model=recipe.base_model, layer_range=(0, n)))
    if len(counts) > 1:
        raise InputError(None, f"the models have different layer counts {sorted(counts)}; use slices: to align them")
    return [OutputSlice(sources=sources)]


class _Resolver:
    """Parameter resolution for one output slice (precedence: source > slice > global)."""

    def __init__(self, recipe: MergeRecipe, method: MergeMethod, out_slice: OutputSlice) -> None:
        self.recipe = recipe
        self.method = method
        self.slice = out_slice
        self.base = out_slice.base_model or recipe.base_model

    def scopes(self, model: str | None) -> list[Settings]:
        out: list[Settings] = []
        if model is not None:
            out += [s.parameters for s in self.slice.sources if s.model == model]
        return [*out, self.slice.parameters, self.recipe.parameters]

    def resolve(self, out_name: str, models: list[str], sources: list[str], t: float) -> tuple[dict, list[dict]]:
        shared_scopes = self.scopes(None)
        shared = {
            p.name: resolve(p, shared_scopes, out_name, t) for p in self.method.parameters if p.scope == Scope.SHARED
        }
        per_input = []
        for model, src in zip(models, sources, strict=True):
            scopes = self.scopes(model)
            per_input.append(
                {
                    p.name: resolve(p, scopes, src, t)
                    for p in self.method.parameters
                    if p.scope == Scope.INPUT or (p.scope == Scope.NON_BASE and model != self.base)
                }
            )
        return shared, per_input


def _check_vocabularies(recipe: MergeRecipe, ckpts: Mapping[str, Checkpoint]) -> None:
    sizes = {name: c.config.get("vocab_size") for name, c in ckpts.items() if c.config.get("vocab_size") is not None}
    if len(set(sizes.values())) > 1:
        detail = ", ".join(f"{k}: {v}" for k, v in sizes.items())
        raise InputError(None, f"the models' vocabularies differ ({detail}); tokenizer merging is not supported")
    if recipe.tokenizer_source not in (None, "base") or recipe.tokenizer is not None:
        raise InputError(None, "tokenizer_source / tokenizer settings (vocabulary merging) are not supported")


def plan_merge(recipe: MergeRecipe, ckpts: Mapping[str, Checkpoint]) -> MergePlan:
    """Plan every output tensor. `ckpts` maps each model reference of the recipe to its opened folder."""
    method = get_method(recipe.merge_method)
    missing = [m for m in recipe.referenced_models() if m not in ckpts]
    if missing:
        raise InputError(None, f"no folder for model(s) {', '.join(missing)}")
    _check_vocabularies(recipe, ckpts)
    notes = [f"`{k}` is not a mergekit setting: mergekit ignores it" for k in recipe.ignored_keys()]
    known = {p.name for p in method.parameters}
    notes += [
        f"parameter `{n}` ({where}) is not used by {method.name}: mergekit ignores it"
        for where, n in recipe.parameter_names()
        if n not in known
    ]
    if recipe.tokenizer_source == "base":
        notes.append("tokenizer_source: base with identical vocabularies: the embeddings are merged as they are")
    work_dtype = DTYPES[recipe.dtype] if recipe.dtype else None
    out_dtype = DTYPES[recipe.out_dtype] if recipe.out_dtype else None

    for ref in recipe.referenced_models():
        _check_one_layer_stack(ckpts[ref])
    slices = _normalized_slices(recipe, ckpts)
    for i, s in enumerate(slices):
        models = [src.model for src in s.sources]
        if len(set(models)) != len(models):
            raise InputError(None, f"slices[{i}] names the same model twice")
        base = s.base_model or recipe.base_model
        problem = method.check_inputs(len(models), base is not None and base in models, f"slices[{i}]")
        if problem:
            raise InputError(None, problem)
        if base is not None and method.base != "ignored" and base not in models:
            raise InputError(None, f"base model {base} is not among the inputs of slices[{i}]")
        lengths = {src.layer_range[1] - src.layer_range[0] for src in s.sources}
        if len(lengths) != 1:
            raise InputError(None, f"slices[{i}]: every source must span the same number of layers")
        for src in s.sources:
            if src.layer_range[1] > layer_count(ckpts[src.model]):
                raise InputError(
                    None,
                    f"slices[{i}]: layer_range {list(src.layer_range)} is beyond the "
                    f"{layer_count(ckpts[src.model])} layers of {src.model}",
                )

    first_model = ckpts[slices[0].sources[0].model]
    non_layer = [n for n in first_model.names if not LAYER_RE.match(n)]
    pre = [n for n in non_layer if any(k in n for k in PRE_LAYER_MARKERS)]
    post = [n for n in non_layer if n not in pre]
    template = next((n for n in first_model.names if LAYER_RE.match(n)), None)
    plans: list[TensorPlan] = []

    shared_value = _Shared()

    def add(out_name: str, s: OutputSlice, sources: list[str], t: float) -> None:
        models: list[str] = shared_value([src.model for src in s.sources])
        present = [src in ckpts[m] for m, src in zip(models, sources, strict=True)]
        if not any(present):
            return
        if not all(present):
            absent = [m for m, p in zip(models, present, strict=True) if not p]
            raise InputError(None, f"tensor {sources[0]} is missing from {', '.join(absent)}")
        resolver = _Resolver(recipe, method, s)
        shared, per_input = resolver.resolve(out_name, models, sources, t)
        base_index = models.index(resolver.base) if resolver.base in models and method.base != "ignored" else None
        infos = [ckpts[m].info(src) for m, src in zip(models, sources, strict=True)]
        shapes = {i.shape for i in infos}
        if len(shapes) != 1:
            raise InputError(None, f"tensor {out_name}: shapes differ between inputs {sorted(shapes)}")
        if method.check_tensor is not None:
            problem = method.check_tensor(out_name, tuple(infos[0].shape), shared, per_input)
            if problem:
                raise InputError(None, problem)
        dtypes = [ckpts[m].dtype(src) for m, src in zip(models, sources, strict=True)]
        if work_dtype is not None:
            dtype = work_dtype
        else:
            dtype = dtypes[0]
            for d in dtypes[1:]:
                dtype = torch.promote_types(dtype, d)
        plans.append(
            TensorPlan(
                out_name,
                models,
                sources,
                base_index,
                shared_value(shared),
                shared_value(per_input),
                dtype,
                out_dtype if out_dtype is not None and dtype.is_floating_point else dtype,
                infos[0].shape,
            )
        )

    for name in pre:
        add(name, slices[0], [name] * len(slices[0].sources), 0.0)
    out_layer = 0
    origins: list[tuple[str, int]] = []
    layers = {ref: _layer_tensors(ckpts[ref]) for ref in recipe.referenced_models()}
    for s in slices:
        n = s.sources[0].layer_range[1] - s.sources[0].layer_range[0]
        for offset in range(n):
            t = offset / (n - 1) if n > 1 else 1.0
            per_source = [layers[src.model].get(src.layer_range[0] + offset, {}) for src in s.sources]
            rests = sorted(per_source[0])
            for j, layer in enumerate(per_source[1:], 1):
                if sorted(layer) != rests:
                    raise InputError(
                        None,
                        f"layer {s.sources[j].layer_range[0] + offset} of {s.sources[j].model} "
                        "has different tensors from the other inputs",
                    )
            assert template is not None
            for rest in rests:
                add(_output_layer_name(template, out_layer, rest), s, [layer[rest] for layer in per_source], t)
            origins.append((s.sources[0].model, s.sources[0].layer_range[0] + offset))
            out_layer += 1
    for name in post:
        add(name, slices[-1], [name] * len(slices[-1].sources), 0.0)
    donor = recipe.base_model or recipe.referenced_models()[0]
    return MergePlan(recipe, method, plans, out_layer, donor, origins, notes)

"""Replay as work units on an Executor (attest.executor): the planned tensors cut into groups by the candidate's
shard; each unit re-opens the parents and the candidate where it runs, re-plans the merge from the headers (cheap,
deterministic), recomputes its tensors and returns their comparison rows. Keyed masks depend on (seed, tensor name)
only, so any split gives the same bits; mergekit's global generator draws in schedule order, so such a replay is one
unit."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from attest.checkpoint.reader import Checkpoint, TensorTable
from attest.executor import Executor, WorkUnit, group_by_file
from attest.merge.engine import SLICE_ELEMENTS, check_device, compute_tensors, mask_source, open_parents, sliced
from attest.merge.planner import MergePlan, TensorPlan, plan_merge
from attest.replay.compare import tensor_row
from attest.replay.report import TensorComparison
from attest.statements.recipe import MergeRecipe
from attest.unit_cache import UnitCodec


@dataclass(frozen=True)
class ReplayJob:
    """What every unit needs to recompute its tensors (paths absolute: units run on other machines)."""

    recipe: MergeRecipe
    parents: Mapping[str, str | os.PathLike[str]]
    candidate: str | os.PathLike[str]
    device: str
    seed: int | None
    mask_generator: str
    tolerance: int
    tie_order: str
    layout: str


def replay_group(args: tuple[ReplayJob, list[str]]) -> list[TensorComparison]:
    """Recompute these planned tensors (in this order) and compare each with the candidate's."""
    job, names = args
    dev = check_device(job.device)
    with open_parents(job.recipe, job.parents, job.layout) as ckpts, Checkpoint(job.candidate) as cand:
        plan = plan_merge(job.recipe, ckpts)
        by_name = {tp.name: tp for tp in plan.tensors}
        order = [by_name[n] for n in names]
        masks = mask_source(plan, job.seed, job.mask_generator)
        rows = []
        with torch.inference_mode():
            for tp, merged in compute_tensors(plan, ckpts, dev, masks, order, job.tie_order):
                rows.append(tensor_row(tp.name, merged, cand, job.tolerance))
    return rows


def _file(table: TensorTable, name: str) -> str | None:
    files = table.files_of(name)
    return files[0] if files else None


def _memory(plan: MergePlan, tp: TensorPlan) -> int:
    """Inputs in the working dtype, the float32 accumulator and the result: the engine's peak for one tensor (for
    one slice of a tensor merged slice by slice)."""
    elements = SLICE_ELEMENTS if sliced(plan, tp) else math.prod(tp.shape)
    return elements * 4 * (len(tp.models) + 3)


def replay_units(
    executor: Executor,
    job: ReplayJob,
    plan: MergePlan,
    ckpts: Mapping[str, TensorTable],
    cand: Checkpoint,
    order: list[TensorPlan] | None,
) -> list[TensorComparison]:
    """The rows of every planned tensor, computed as units on `executor`."""
    job = ReplayJob(
        **{
            **job.__dict__,
            "parents": {k: str(Path(v).resolve()) for k, v in job.parents.items()},
            "candidate": str(Path(job.candidate).resolve()),
        }
    )
    tensors = order if order is not None else plan.tensors
    plans = {tp.name: tp for tp in tensors}

    def nbytes(tp: TensorPlan) -> int:
        return sum(ckpts[m].info(s).nbytes for m, s in zip(tp.models, tp.sources, strict=True))

    if order is not None:  # mergekit's global generator: one unit, in schedule order
        groups = [(_file(cand, tensors[0].name) or "", [tp.name for tp in tensors])] if tensors else []
    else:
        items = ((tp.name, _file(cand, tp.name) or "", nbytes(tp)) for tp in tensors)
        groups = group_by_file(items)
    units = []
    for file, names in groups:
        group = [plans[n] for n in names]
        inputs = {f for tp in group for m, s in zip(tp.models, tp.sources, strict=True) for f in ckpts[m].files_of(s)}
        files = tuple(([file] if file else []) + sorted(inputs - {file}))
        memory = max((_memory(plan, tp) for tp in group), default=0)
        units.append(WorkUnit((job, names), files, sum(map(nbytes, group)), len(names), memory))
    return [row for rows in executor.map("replaying", replay_group, units) for row in rows]


def _job_args(args: tuple[ReplayJob, list[str]]) -> object:
    job, names = args
    parents = {k: str(v) for k, v in job.parents.items()}
    recipe = job.recipe.model_dump(mode="json")
    fields = {**job.__dict__, "recipe": recipe, "parents": parents, "candidate": str(job.candidate)}
    return {"job": fields, "names": names}


REPLAY_CODEC: UnitCodec[tuple[ReplayJob, list[str]], list[TensorComparison]] = UnitCodec(
    _job_args,
    lambda rows: [r.model_dump(mode="json") for r in rows],
    lambda stored: [TensorComparison.model_validate(r) for r in stored],
)
"""replay_group's comparison rows in the unit cache (attest.unit_cache); the key covers the whole job (recipe, parents,
candidate, device, seed, tolerance, layout) and the names."""

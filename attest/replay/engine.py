"""Replay a merge: recompute every tensor from the recipe and the parents, compare with a candidate folder.

Streaming, one tensor at a time, like the merge itself. On the CPU our engine is deterministic, so anything but
byte equality is a mismatch (default tolerance 0 ulps). On CUDA, reductions may round differently, so the default
tolerance is 1 ulp of the storage dtype, and the report says how many elements used it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import PurePosixPath

import torch

from attest.checkpoint.reader import Checkpoint
from attest.errors import InputError
from attest.executor import Executor
from attest.merge.engine import (
    check_device,
    check_tie_order,
    compute_tensors,
    mask_source,
    merge_layout,
    open_parents,
    output_config_text,
)
from attest.merge.hf_config import installed_transformers
from attest.merge.planner import plan_merge
from attest.replay.compare import tensor_row
from attest.replay.report import ReplayCounts, ReplayReport, TensorComparison, TensorStatus, Verdict
from attest.replay.units import ReplayJob, replay_units
from attest.statements.recipe import MergeRecipe

DEFAULT_TOLERANCE_ULPS = {"cpu": 0, "cuda": 1}
SORTING_METHODS = ("ties", "breadcrumbs", "breadcrumbs_ties")
CONFIG_ROW = "config.json"
"""The report row for the candidate's config.json, when it differs from what the merge writes."""
CONFIG_KEYS_NOT_COMPARED = frozenset({"transformers_version", "_name_or_path"})
EXTRA_WEIGHT_SUFFIXES = frozenset({".safetensors", ".gguf", ".h5", ".msgpack", ".onnx", ".npz", ".npy"})
"""Besides PyTorch pickles: weight formats a loader could read from a folder (nested or not indexed)."""


def _json_text(value: object) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _comparable_config(config: Mapping[str, object]) -> dict[str, object]:
    """Without what a transformers version rewrites on save and what does not change how weights are read."""
    out = {k: v for k, v in config.items() if k not in CONFIG_KEYS_NOT_COMPARED}
    if "torch_dtype" in out and "dtype" not in out:  # transformers 5 writes the same setting as `dtype`
        out["dtype"] = out.pop("torch_dtype")
    return out


def _compare_config(expected: Mapping[str, object], cand: Checkpoint) -> TensorComparison | None:
    """config.json decides how the weights are read (architecture, layer count, vocabulary): the candidate's must
    be the one the merge writes. None when it is (or when the candidate has none: there is nothing to load it by)."""
    if not cand.has_config:
        return None
    expected, actual = _comparable_config(expected), _comparable_config(cand.config)
    keys = sorted(
        k
        for k in set(expected) | set(actual)
        if k not in expected or k not in actual or _json_text(expected[k]) != _json_text(actual[k])
    )
    if not keys:
        return None
    shown = ", ".join(keys[:12]) + (f" and {len(keys) - 12} more" if len(keys) > 12 else "")
    return TensorComparison(
        name=CONFIG_ROW,
        status=TensorStatus.MISMATCH,
        detail=f"config.json differs from what the merge writes in: {shown}",
    )


def _extra_weight_files(cand: Checkpoint) -> list[TensorComparison]:
    """Weight files beside the safetensors the merge writes (PyTorch pickles, nested or foreign formats): a loader
    may pick them up instead, and replay does not recompute them."""
    rows = []
    for rel in sorted(set(cand.pickle_files) | set(cand.other_files)):
        suffix = PurePosixPath(rel).suffix.lower()
        if rel in cand.pickle_files or suffix in EXTRA_WEIGHT_SUFFIXES:
            rows.append(
                TensorComparison(
                    name=rel,
                    status=TensorStatus.UNEXPECTED,
                    detail="a weight file the merge does not write (replay compares the top-level safetensors only)",
                )
            )
    return rows


def _summary(verdict: Verdict, counts: ReplayCounts, total: int) -> str:
    if verdict is Verdict.REPRODUCED:
        return f"The published weights are exactly what the recipe produces ({total} tensors, bit for bit)."
    if verdict is Verdict.REPRODUCED_WITHIN_TOLERANCE:
        return (
            f"The published weights are what the recipe produces up to rounding: {counts.exact} tensors exact, "
            f"{counts.within_tolerance} within the ulp tolerance."
        )
    if verdict is Verdict.CANNOT_REPLAY:
        return "The recipe cannot be replayed exactly (see notes); nothing is claimed about these weights."
    return (
        f"The published weights are NOT what the recipe produces: {counts.mismatch} of {total} tensors and files "
        "differ."
    )


def replay(
    recipe: MergeRecipe,
    parents: Mapping[str, str | os.PathLike[str]],
    candidate: str | os.PathLike[str],
    *,
    device: str = "cpu",
    seed: int | None = None,
    mask_generator: str = "attest",
    tolerance_ulps: int | None = None,
    tie_order: str = "mergekit",
    layout: str = "mergekit",
    transformers_version: str | None = None,
    executor: Executor | None = None,
) -> ReplayReport:
    """Recompute the merge `recipe` from `parents` (model reference -> folder) and compare with `candidate`.

    mask_generator: "attest" for merges made by attest (keyed masks, any device); "mergekit" to replay a DARE/DELLA
    merge made by mergekit 0.1.5 on the CPU with `--random-seed seed`. tie_order: as the merge used it (mergekit's
    own merges: "mergekit"). layout: the expert layout of a mixture-of-experts merge (attest.merge.moe_layout;
    replay_options gives the recorded one). transformers_version: the one the merge recorded, for a note when
    mergekit's config.json rewrite runs under another version here. executor: recompute the tensors as its work
    units (attest.executor), near their files; the report is the same.
    """
    dev = check_device(device)
    check_tie_order(tie_order)
    tolerance = DEFAULT_TOLERANCE_ULPS[dev.type] if tolerance_ulps is None else tolerance_ulps
    if tolerance < 0:
        raise InputError(None, "the ulp tolerance must be >= 0")
    rows: list[TensorComparison] = []
    base = dict(
        candidate=str(candidate),
        merge_method=recipe.merge_method,
        device=str(dev),
        tolerance_ulps=tolerance,
        tie_order=tie_order,
    )
    with open_parents(recipe, parents, layout) as ckpts, Checkpoint(candidate) as cand:
        plan = plan_merge(recipe, ckpts)
        notes = list(plan.notes)
        written_layout = merge_layout(ckpts, layout)
        if written_layout is not None:
            base |= dict(layout=written_layout)
            here = installed_transformers()
            if written_layout == "mergekit" and transformers_version and here != transformers_version:
                notes.append(
                    f"config.json rewritten like mergekit with transformers {here} installed here; the merge "
                    f"recorded transformers {transformers_version}, whose defaults may differ"
                )
        if plan.method.randomized:
            base |= dict(mask_generator=mask_generator, seed=seed)
            if seed is None:
                notes.append(
                    f"{plan.method.name} draws random masks and no seed is known: its output cannot be "
                    "recomputed. (A mergekit merge made without --random-seed can never be replayed.)"
                )
                return ReplayReport(
                    verdict=Verdict.CANNOT_REPLAY,
                    summary=_summary(Verdict.CANNOT_REPLAY, ReplayCounts(), 0),
                    counts=ReplayCounts(),
                    tensors=[],
                    notes=notes,
                    **base,
                )
            if mask_generator == "mergekit":
                if dev.type != "cpu":
                    raise InputError(None, "mergekit's random masks can only be replayed on the CPU")
                notes.append(
                    "masks drawn like mergekit 0.1.5 (global CPU generator, its schedule order): this "
                    "matches a mergekit merge run on the CPU with the same --random-seed, never a GPU one"
                )
        masks = mask_source(plan, seed, mask_generator)
        order = sorted(plan.tensors, key=lambda tp: tp.schedule_label) if mask_generator == "mergekit" else None
        planned = {tp.name for tp in plan.tensors}
        with torch.inference_mode():
            if dev.type == "cuda" and tie_order == "mergekit" and plan.method.name in SORTING_METHODS:
                notes.append(
                    f"{plan.method.name}'s magnitude cutoffs ranked by torch's CPU sort, as mergekit ranks them on "
                    "the CPU; the rest computed on CUDA"
                )
            if executor is None:
                for tp, merged in compute_tensors(plan, ckpts, dev, masks, order, tie_order):
                    rows.append(tensor_row(tp.name, merged, cand, tolerance))
            else:
                job = ReplayJob(
                    recipe, parents, candidate, str(dev), seed, mask_generator, tolerance, tie_order, layout
                )
                rows += replay_units(executor, job, plan, ckpts, cand, order)
        for name in cand.names:
            if name not in planned:
                rows.append(
                    TensorComparison(
                        name=name,
                        status=TensorStatus.UNEXPECTED,
                        detail="the candidate has this tensor; the recipe does not produce it",
                    )
                )
        config_row = _compare_config(json.loads(output_config_text(plan, ckpts, written_layout)), cand)
        if config_row is not None:
            rows.append(config_row)
        elif not cand.has_config:
            notes.append("the candidate has no config.json: only its tensors were compared")
        rows += _extra_weight_files(cand)
    rows.sort(key=lambda r: r.name)
    counts = ReplayCounts(
        exact=sum(r.status is TensorStatus.EXACT for r in rows),
        within_tolerance=sum(r.status is TensorStatus.WITHIN_TOLERANCE for r in rows),
    )
    counts.mismatch = len(rows) - counts.exact - counts.within_tolerance
    if counts.mismatch:
        verdict = Verdict.NOT_REPRODUCED
    elif counts.within_tolerance:
        verdict = Verdict.REPRODUCED_WITHIN_TOLERANCE
    else:
        verdict = Verdict.REPRODUCED
    mismatched = [r.name for r in rows if r.status not in (TensorStatus.EXACT, TensorStatus.WITHIN_TOLERANCE)]
    return ReplayReport(
        verdict=verdict,
        summary=_summary(verdict, counts, len(rows)),
        counts=counts,
        mismatched=mismatched,
        tensors=rows,
        notes=notes,
        **base,
    )
